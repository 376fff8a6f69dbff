/**
 * hold= with the qemu backend and the real test guest under TCG: the guest
 * serves port 80 behind a user-networking hostfwd port, and hold=H:80 is
 * relayed through that port (QemuBackend.hostPort). The first connection
 * boots it and gets the page; a direct connection to the hostfwd port keeps
 * it up (QemuBackend.connections, from QEMU's sockets in /proc).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { countMatches, freePort, run, startCli, tempDir, type CliProcess } from "../../support/index.js";
import { getStatus } from "../../support/http.js";
import { killQemus, testGuest } from "./fixtures.js";

describe("qemu backend: hold=8080:80 through the hostfwd port", { timeout: 600_000 }, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess;
  let hold: number;
  let fwd: number;
  let http: number;
  const TTL = 2;

  before(async () => {
    const guest = await testGuest();
    dir = await tempDir("jitsu-qemu-hold-");
    const dns = await freePort();
    hold = await freePort();
    fwd = await freePort();
    http = await freePort();
    cli = startCli([
      ...["-x", "qemu", "-l", String(dns), "-f", "0.0.0.0", "-d", "0", "--state-dir", dir.path],
      ...["--stop-on-exit", "--start-timeout", "240", "-t", String(TTL), "--reaper-interval", "0.25"],
      ...["--http", `127.0.0.1:${http}`],
      `dns=q.jitsu.test,ip=127.0.0.1,name=q,kernel=${guest.kernel},initrd=${guest.initrd},hostfwd=tcp:127.0.0.1:${fwd}-:80,hold=${hold}:80,ready=http://127.0.0.1:${fwd}/`,
    ]);
    await cli.waitFor(/Holding connections on 127\.0\.0\.1:\d+ for VM 'q' \(to its port 80\)/);
  });
  after(async () => {
    await cli?.stop();
    killQemus(join(dir.path, "qemu", "q", "qemu.pid"));
    await dir?.remove();
  });

  it("the first connection boots the guest and gets its page", async () => {
    const curl = await run(
      "curl",
      ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "240", `http://127.0.0.1:${hold}/`],
      250_000,
    );
    assert.equal(curl.code, 0, curl.stderr);
    assert.equal(curl.stdout, "200");
    assert.equal(countMatches(cli.output(), /Starting VM 'q'/), 1);
  });

  it("a connection straight to the hostfwd port keeps the guest up past 2 x TTL", async () => {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port: fwd }, () => resolve(s));
      s.once("error", reject);
    });
    socket.on("error", () => undefined);
    // 3 x TTL after the curl's connection closed, with this one open: still running.
    const end = Date.now() + 3 * TTL * 1000;
    while (Date.now() < end) {
      assert.equal((await getStatus(http)).get("q")!.state, "ready");
      await new Promise((r) => setTimeout(r, 250));
    }
    socket.destroy();
    const t0 = Date.now();
    while ((await getStatus(http)).get("q")!.state === "ready") {
      assert.ok(Date.now() - t0 < 20_000, "still up 20 s after the close");
      await new Promise((r) => setTimeout(r, 100));
    }
  });
});
