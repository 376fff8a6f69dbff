/**
 * The qemu driver with a real tiny guest (TCG, no KVM), through the built CLI
 * and dig: dig -> the domain boots -> the answer comes once the guest serves
 * HTTP through a hostfwd on 127.0.0.1 -> idle -> suspended (paused in memory)
 * -> dig -> resumed -> HTTP again. One boot.
 *
 * libvirtd runs unprivileged in a temp dir (see test/doubles/libvirtd.ts), so this is
 * qemu:///session: qemu runs as `nobody` with user networking; the guest's
 * NIC and its hostfwd come from <qemu:commandline>, since libvirt 9.0's user
 * interfaces have no port forwarding without passt.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { dig, freePort, run, startCli, tempDir, type CliProcess } from "../../support/index.js";
import { LibvirtBackend } from "../../../src/backends/libvirt/backend.js";
import { parseLibvirtUri } from "../../../src/backends/libvirt/uri.js";
import { systemClock } from "../../../src/clock/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { PrivateLibvirtd, guestDomainXml } from "../../doubles/libvirtd.js";
import { buildGuest, spec } from "./fixtures.js";
import { httpGet } from "../../support/http.js";

describe("jitsu -x libvirt with the qemu driver and a real guest", { timeout: 300_000 }, () => {
  const daemon = new PrivateLibvirtd();
  let cli: CliProcess | undefined;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let uri = "";
  let dns = 0;
  let http = 0;

  before(async () => {
    const guest = buildGuest();
    dir = await tempDir();
    await daemon.start();
    for (const f of ["vmlinuz", "initrd.gz"]) daemon.writeFile(f, readFileSync(join(guest, f)));
    http = await freePort();
    dns = await freePort();
    uri = daemon.uri("qemu:///session");
    daemon.virsh(uri, `define ${daemon.writeFile("guest.xml", guestDomainXml("guest", daemon.dir, http))}`);
    cli = startCli([
      "-x",
      "libvirt",
      "-c",
      uri,
      "-l",
      String(dns),
      "-f",
      "0.0.0.0",
      "-t",
      "3",
      "-d",
      "0",
      "-m",
      "suspend",
      "--start-timeout",
      "120",
      "--state-dir",
      dir.path,
      `dns=guest.jitsu.test,name=guest,ip=127.0.0.1,ready=http://127.0.0.1:${http}/`,
    ]);
    // "Starting server on ..." or, once it listens, the stats table
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+|\n\s*\+-+\+/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    try {
      daemon.virsh(uri, "destroy guest");
    } catch {
      // not running
    }
    await daemon.destroy();
    await dir?.remove();
  });

  const state = (): string => daemon.virsh(uri, "domstate guest");

  it("boots the guest on a query and answers once it serves HTTP", async () => {
    assert.equal(state(), "shut off");
    await assert.rejects(httpGet(http));
    // The first boot may take a while on a loaded machine: one query, waiting up to two minutes.
    const res = await run(
      "dig",
      ["@127.0.0.1", "-p", String(dns), "+time=120", "+tries=1", "guest.jitsu.test", "A"],
      150_000,
    );
    assert.match(res.stdout, /status: NOERROR/, res.stdout);
    assert.match(res.stdout, /^guest\.jitsu\.test\.\s+3\s+IN\s+A\s+127\.0\.0\.1$/m, res.stdout);
    assert.equal(state(), "running");
    assert.match(await httpGet(http), /jitsu test guest/);
  });

  it("suspends the idle guest, then resumes it on the next query and serves HTTP again", async () => {
    const deadline = Date.now() + 30_000;
    while (state() !== "paused") {
      assert.ok(Date.now() < deadline, "the idle guest was not suspended in 30 s");
      await new Promise((r) => setTimeout(r, 250));
    }
    await assert.rejects(httpGet(http, 1000), "no HTTP while paused");
    const began = Date.now();
    const res = await dig(dns, ["guest.jitsu.test", "A"]);
    assert.equal(res.status, "NOERROR", res.raw);
    assert.equal(state(), "running");
    assert.match(await httpGet(http), /jitsu test guest/);
    assert.ok(Date.now() - began < 10_000, `resume took ${Date.now() - began} ms`);
    assert.match(cli!.output(), /Unpausing VM 'guest'/);
  });

  it("saves the guest to disk and restores it (managed save), then shuts it down with ACPI", async () => {
    await cli!.stop(); // from here on the backend alone drives the guest
    const b = new LibvirtBackend(parseLibvirtUri(uri), { log: silentLogger(), clock: systemClock });
    try {
      await b.connect();
      const vm = await b.resolve(spec("dns=guest.jitsu.test,name=guest,ip=127.0.0.1"));
      if ((await b.state(vm)) === "paused") await b.unpause(vm);
      assert.equal(await b.state(vm), "running");
      const boots = (): number =>
        (readFileSync(join(daemon.dir, "guest-console.log"), "utf8").match(/jitsu-test-guest: up/g) ?? [])
          .length;
      const bootsBefore = boots();
      assert.equal(bootsBefore, 1, "the console log shows the one boot");

      await b.stop(vm, "save");
      assert.equal(await b.state(vm), "suspended");
      assert.equal(state(), "shut off");
      await assert.rejects(httpGet(http, 1000));
      await b.resume(vm);
      assert.equal(await b.state(vm), "running");
      assert.match(await httpGet(http, 5000), /jitsu test guest/);
      assert.equal(boots(), bootsBefore, "restored from memory, not booted again");

      const began = Date.now();
      await b.stop(vm, "shutdown"); // the guest's acpid powers it off; stop() waits for shut off
      assert.equal(await b.state(vm), "off");
      assert.ok(Date.now() - began < 60_000);
    } finally {
      await b.close();
    }
  });
});
