/**
 * contrib/systemd: `systemd-analyze verify --man=no` passes for the service,
 * each backend's drop-in on top of it, and the socket units. Verify complains
 * that ExecStart's /usr/local/bin/jitsu is not installed on this machine, so
 * the units are verified from a temp dir where that path is replaced by an
 * executable that runs the built CLI; every line verify prints (unknown keys
 * and bad values are warnings with exit code 0) fails the test.
 */
import assert from "node:assert/strict";
import { chmod, copyFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { CLI, run, tempDir } from "../support/index.js";

const CONTRIB = fileURLToPath(new URL("../../../contrib/systemd/", import.meta.url));

describe("contrib/systemd units", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let jitsu: string;

  before(async () => {
    dir = await tempDir("jitsu-unit-");
    jitsu = join(dir.path, "jitsu");
    await writeFile(jitsu, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`);
    await chmod(jitsu, 0o755);
  });
  after(async () => dir.remove());

  /** Copies the units (and `dropIn`) into a fresh folder with ExecStart's program replaced; verify's output. */
  async function verify(dropIn?: string, edit: (unit: string) => string = (u) => u) {
    const at = join(dir.path, `units-${dropIn ?? "base"}-${Math.random().toString(36).slice(2)}`);
    await mkdir(at);
    const service = (await readFile(join(CONTRIB, "jitsu.service"), "utf8")).replaceAll(
      "/usr/local/bin/jitsu",
      jitsu,
    );
    await writeFile(join(at, "jitsu.service"), edit(service));
    for (const socket of ["jitsu.socket", "jitsu-http.socket"])
      await copyFile(join(CONTRIB, socket), join(at, socket));
    if (dropIn !== undefined) {
      await mkdir(join(at, "jitsu.service.d"));
      await copyFile(join(CONTRIB, "backends", dropIn), join(at, "jitsu.service.d", dropIn));
    }
    const units = ["jitsu.service", "jitsu.socket", "jitsu-http.socket"].map((u) => join(at, u));
    return run("systemd-analyze", ["verify", "--man=no", ...units], 60_000);
  }

  it("the service and both sockets verify without a single complaint", async () => {
    const res = await verify();
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stderr + res.stdout, "");
  });

  it("as shipped, the only complaint is the program not installed here", async () => {
    const units = ["jitsu.service", "jitsu.socket", "jitsu-http.socket"].map((u) => join(CONTRIB, u));
    const res = await run("systemd-analyze", ["verify", "--man=no", ...units], 60_000);
    assert.equal(
      res.stderr.trim(),
      "jitsu.service: Command /usr/local/bin/jitsu is not executable: No such file or directory",
    );
  });

  it("each backend's drop-in verifies on top of the service", async () => {
    const dropIns = (await readdir(join(CONTRIB, "backends"))).filter((f) => f.endsWith(".conf")).sort();
    assert.deepEqual(dropIns, ["docker.conf", "libvirt.conf", "process.conf", "qemu.conf", "xen.conf"]);
    for (const dropIn of dropIns) {
      const res = await verify(dropIn);
      assert.equal(res.stderr + res.stdout, "", `${dropIn}: ${res.stderr}`);
    }
  });

  it("the check can fail: a mistyped setting is reported", async () => {
    const res = await verify(undefined, (u) => u.replace("Type=notify", "Type=notifyy"));
    assert.match(res.stderr, /Failed to parse service type, ignoring: notifyy/);
  });

  it("the unit is what jitsu expects: notify, main-only notifications, watchdog, reload by SIGHUP", async () => {
    const unit = await readFile(join(CONTRIB, "jitsu.service"), "utf8");
    for (const line of [
      "Type=notify",
      "NotifyAccess=main",
      "ExecReload=/bin/kill -HUP $MAINPID",
      "KillMode=mixed",
    ])
      assert.ok(unit.split("\n").includes(line), `jitsu.service lacks ${line}`);
    assert.match(unit, /^WatchdogSec=\d+$/m);
    // ExecStart's options are jitsu's own.
    const execStart = /^ExecStart=\S+ (.*)$/m.exec(unit)![1]!.split(" ");
    const help = await run(process.execPath, [CLI, "--help"]);
    for (const opt of execStart.filter((a) => a.startsWith("--"))) assert.ok(help.stdout.includes(opt), opt);
    const socket = await readFile(join(CONTRIB, "jitsu.socket"), "utf8");
    assert.match(socket, /^ListenDatagram=/m);
    assert.match(socket, /^ListenStream=/m);
  });
});
