/**
 * The qemu backend with the real test guest under TCG (scripts/build-test-guest.sh),
 * one QEMU at a time and as few boots as the behaviour allows: first through
 * the backend itself, then through the built CLI with `dig`. Every QEMU is
 * reached only through hostfwd on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { BackendEvent, VmBackend, VmRef } from "../../../src/backends/contract.js";
import { qemuBackend } from "../../../src/backends/qemu/index.js";
import { systemClock } from "../../../src/clock/index.js";
import { buildVmSpec, parseConfigString, type VmSpec } from "../../../src/config/index.js";
import { BackendError } from "../../../src/errors/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { freePort, run, startCli, tempDir, type CliProcess } from "../../support/index.js";
import { httpStatus, killQemus, qemuPids, testGuest, waitHttp, waitUntil, type Guest } from "./fixtures.js";

/** A cold boot under TCG on a busy 2-core machine can take half a minute. */
const BOOT_MS = 180_000;

function vmSpec(config: string): VmSpec {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", {
    backendKeys: qemuBackend.keys,
    backendName: "qemu",
  });
}

function pidOf(pidFile: string): number {
  const pids = qemuPids(pidFile);
  assert.equal(pids.length, 1, `expected exactly one QEMU for ${pidFile}, found ${pids.length}`);
  return pids[0]!;
}

describe("qemu backend: lifecycle of the real guest", { timeout: 600_000 }, () => {
  let guest: Guest;
  let dir: { path: string; remove(): Promise<void> };
  let port: number;
  let pidFile: string;
  let specText: string;
  let spec: VmSpec;
  let backend: VmBackend;
  let ref: VmRef;
  const events: BackendEvent[] = [];

  before(async () => {
    guest = await testGuest();
    dir = await tempDir("jitsu-qemu-");
    port = await freePort();
    pidFile = join(dir.path, "qemu", "lc", "qemu.pid");
    specText = `dns=lc.test,ip=10.0.2.15,name=lc,kernel=${guest.kernel},initrd=${guest.initrd},hostfwd=tcp:127.0.0.1:${port}-:80`;
    spec = vmSpec(specText);
  });
  after(async () => {
    await backend?.close();
    killQemus(pidFile);
    await dir?.remove();
  });

  const newBackend = (): VmBackend => {
    const b = qemuBackend.create({
      connect: "",
      stateDir: dir.path,
      settings: {},
      log: silentLogger(),
      clock: systemClock,
    });
    b.onEvent?.((e) => events.push(e));
    return b;
  };

  it("a QEMU that cannot start (bad kernel, hostfwd port taken) is a clear error with QEMU's own words", async () => {
    const bogus = join(dir.path, "bogus-kernel");
    writeFileSync(bogus, "this is not a kernel");
    const b = newBackend();
    const r = await b.resolve(vmSpec(`dns=bad.test,ip=10.0.0.9,name=bad,kernel=${bogus}`));
    await assert.rejects(b.start(r), (e: unknown) => {
      assert.ok(e instanceof BackendError, String(e));
      assert.match(
        e.message,
        /^qemu VM 'bad': QEMU exited at start-up \(exit code 1\) \(.*invalid kernel header\)$/,
      );
      return true;
    });
    // A hostfwd port that is taken: QEMU says so, and so does the error.
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const takenPort = (taken.address() as AddressInfo).port;
    const r2 = await b.resolve(
      vmSpec(
        `dns=busy.test,ip=10.0.0.8,name=busy,kernel=${guest.kernel},initrd=${guest.initrd},hostfwd=tcp:127.0.0.1:${takenPort}-:80`,
      ),
    );
    await assert.rejects(b.start(r2), (e: unknown) => {
      assert.ok(e instanceof BackendError, String(e));
      assert.match(
        e.message,
        /^qemu VM 'busy': QEMU exited at start-up .*Could not set up host forwarding rule/,
      );
      return true;
    });
    taken.close();
    assert.equal(await b.state(r2), "off");
    await b.close();
  });

  it("start boots the guest, which then serves HTTP through hostfwd", { timeout: BOOT_MS }, async () => {
    backend = newBackend();
    ref = await backend.resolve(spec);
    assert.equal(await backend.state(ref), "off");
    await backend.start(ref);
    assert.equal(await backend.state(ref), "running");
    await waitHttp(port, BOOT_MS);
    pidOf(pidFile);
  });

  it("pause stops the guest (HTTP stalls), unpause lets it run on", async () => {
    const pid = pidOf(pidFile);
    await backend.stop(ref, "pause");
    assert.equal(await backend.state(ref), "paused");
    assert.equal(await httpStatus(port, 1000), null);
    const t0 = Date.now();
    await backend.unpause(ref);
    assert.equal(await backend.state(ref), "running");
    await waitHttp(port, 10_000);
    assert.ok(Date.now() - t0 < 5000, `HTTP took ${Date.now() - t0} ms after unpause`);
    assert.equal(pidOf(pidFile), pid);
  });

  it("save writes the memory to a file and ends QEMU; after a restart, resume loads it and the guest serves again", async () => {
    const image = join(dir.path, "qemu", "lc", "memory.img");
    await backend.stop(ref, "save");
    assert.deepEqual(qemuPids(pidFile), []);
    assert.ok(existsSync(image));
    assert.equal(await backend.state(ref), "suspended");
    // A restarted jitsu finds the saved VM by its image alone.
    await backend.close();
    backend = newBackend();
    ref = await backend.resolve(spec);
    assert.equal(await backend.state(ref), "suspended");
    const t0 = Date.now();
    await backend.resume(ref);
    await waitHttp(port, 30_000);
    const took = Date.now() - t0;
    assert.equal(await backend.state(ref), "running");
    assert.equal(existsSync(image), false, "the image is dropped once resumed");
    assert.ok(took < 20_000, `resume + HTTP took ${took} ms`);
    // Restored, not rebooted: the new QEMU's console (a fresh file) never saw /init's boot line.
    const consoleText = readFileSync(join(dir.path, "qemu", "lc", "console.log"), "utf8");
    assert.doesNotMatch(consoleText, /jitsu-test-guest: up/);
    pidOf(pidFile);
  });

  it("a new backend (jitsu restarted) re-adopts the running QEMU and controls it", async () => {
    const pid = pidOf(pidFile);
    await backend.close();
    assert.equal(pidOf(pidFile), pid, "closing the backend leaves the VM running");
    backend = newBackend();
    ref = await backend.resolve(spec);
    assert.equal(await backend.state(ref), "running");
    await backend.stop(ref, "pause");
    assert.equal(await backend.state(ref), "paused");
    await backend.unpause(ref);
    await waitHttp(port, 10_000);
    assert.equal(pidOf(pidFile), pid, "no second QEMU");

    // A QEMU started by a jitsu from before the supervisor: only QEMU's own qemu.pid, no process.json.
    const processFile = join(dir.path, "qemu", "lc", "process.json");
    const record = JSON.parse(readFileSync(processFile, "utf8")) as { pid: number; cmdline: string[] };
    assert.equal(record.pid, pid);
    assert.equal(record.cmdline[record.cmdline.indexOf("-pidfile") + 1], pidFile);
    await backend.close();
    rmSync(processFile);
    backend = newBackend();
    ref = await backend.resolve(spec);
    assert.equal(await backend.state(ref), "running", "re-adopted by its -pidfile");
    assert.equal(pidOf(pidFile), pid, "no second QEMU");
    assert.deepEqual(JSON.parse(readFileSync(processFile, "utf8")), record, "and process.json written again");
  });

  it("standby=true: after a save a QEMU waits (-incoming defer), survives a restart, and resumes the VM", async () => {
    const standbySpec = vmSpec(`${specText},standby=true`);
    const before = pidOf(pidFile);
    await backend.close();
    backend = newBackend();
    ref = await backend.resolve(standbySpec);
    await backend.stop(ref, "save");
    assert.equal(await backend.state(ref), "suspended");
    const standby = pidOf(pidFile);
    assert.notEqual(standby, before);
    assert.match(readFileSync(`/proc/${standby}/cmdline`, "utf8"), /-incoming\0defer\0/);
    assert.equal(await httpStatus(port, 1000), null, "a standby QEMU runs no guest");
    // jitsu restarts: the standby is re-adopted as what it is, a suspended VM.
    await backend.close();
    backend = newBackend();
    ref = await backend.resolve(standbySpec);
    assert.equal(await backend.state(ref), "suspended");
    await backend.resume(ref);
    await waitHttp(port, 30_000);
    assert.equal(pidOf(pidFile), standby, "the standby QEMU became the VM");
    assert.equal(await backend.state(ref), "running");
  });

  it("a QEMU that dies behind our back is noticed (event and state)", async () => {
    // Save and resume through this backend, so the QEMU (the standby it starts) is its child and its exit status is known.
    await backend.stop(ref, "suspend");
    await backend.resume(ref);
    await waitHttp(port, 30_000);
    const pid = pidOf(pidFile);
    events.length = 0;
    process.kill(pid, "SIGKILL");
    await waitUntil("the crash is reported", () => events.length > 0, 10_000);
    assert.equal(events[0]!.state, "crashed");
    assert.equal(events[0]!.vm.label, "lc");
    assert.match(events[0]!.reason ?? "", /SIGKILL/);
    assert.equal(await backend.state(ref), "crashed");
    assert.equal(existsSync(pidFile), false);
    assert.equal(existsSync(join(dir.path, "qemu", "lc", "process.json")), false);
  });
});

/** dig with a long enough wait for a cold boot; the answer's A records and how long it took. */
async function digA(
  port: number,
  name: string,
): Promise<{ status: string; addresses: string[]; ms: number }> {
  const t0 = Date.now();
  const res = await run(
    "dig",
    [`@127.0.0.1`, "-p", String(port), "+time=200", "+tries=1", "+short", name],
    BOOT_MS + 30_000,
  );
  const ms = Date.now() - t0;
  const lines = res.stdout
    .trim()
    .split("\n")
    .filter((l) => l !== "");
  return {
    status: res.code === 0 && lines.length > 0 ? "NOERROR" : `no answer (${res.stdout.trim()})`,
    addresses: lines,
    ms,
  };
}

describe("qemu backend through the CLI with dig", { timeout: 900_000 }, () => {
  let guest: Guest;
  let dir: { path: string; remove(): Promise<void> };
  let http: number;
  let pidFile: string;
  let image: string;
  let consoleLog: string;
  let cli: CliProcess | undefined;

  before(async () => {
    guest = await testGuest();
    dir = await tempDir("jitsu-qemu-cli-");
    http = await freePort();
    pidFile = join(dir.path, "qemu", "web", "qemu.pid");
    image = join(dir.path, "qemu", "web", "memory.img");
    consoleLog = join(dir.path, "qemu", "web", "console.log");
  });
  after(async () => {
    await cli?.stop("SIGKILL");
    killQemus(pidFile);
    await dir?.remove();
  });

  const jitsu = async (mode: string): Promise<{ cli: CliProcess; dns: number }> => {
    const dns = await freePort();
    const c = startCli([
      "-x",
      "qemu",
      "-l",
      String(dns),
      "-f",
      "0.0.0.0",
      "-t",
      "1",
      "-d",
      "0",
      "-m",
      mode,
      "--start-timeout",
      String(BOOT_MS / 1000),
      "--state-dir",
      dir.path,
      `dns=web.jitsu.test,ip=10.0.2.15,name=web,kernel=${guest.kernel},initrd=${guest.initrd},hostfwd=tcp:127.0.0.1:${http}-:80,ready=http://127.0.0.1:${http}/`,
    ]);
    cli = c;
    await c.waitFor(/Starting server/, 30_000);
    return { cli: c, dns };
  };

  /** dig; the answer must come only once the guest serves HTTP. */
  const summon = async (dns: number): Promise<number> => {
    const answer = await digA(dns, "web.jitsu.test");
    assert.equal(answer.status, "NOERROR", cli?.output());
    assert.deepEqual(answer.addresses, ["10.0.2.15"]);
    // jitsu's probe saw 200 already; a TCG guest on a loaded machine may take seconds to answer again.
    assert.equal(await httpStatus(http, 8000), 200, "answered before the guest served HTTP");
    return answer.ms;
  };

  const idleStop = async (c: CliProcess, mode: string): Promise<void> => {
    await c.waitFor(new RegExp(`VM 'web' stopped \\(${mode}\\)`), 60_000);
  };

  it("-m pause: boot on the first query (answered once HTTP works), pause when idle, unpause on the next", async () => {
    const { cli: c, dns } = await jitsu("pause");
    await summon(dns);
    const pid = pidOf(pidFile);
    await idleStop(c, "pause");
    assert.equal(await httpStatus(http, 1000), null, "a paused guest does not answer");
    const ms = await summon(dns);
    assert.ok(ms < 5000, `the answer from paused took ${ms} ms`);
    assert.equal(pidOf(pidFile), pid);
  });

  it("jitsu killed while the VM runs: the next jitsu re-adopts it (no second QEMU); -m suspend saves and restores it", async () => {
    const pid = pidOf(pidFile);
    await cli!.stop("SIGKILL");
    assert.equal(pidOf(pidFile), pid, "the VM outlives jitsu");
    const { cli: c, dns } = await jitsu("suspend");
    await c.waitFor(new RegExp(`Re-adopted QEMU \\(pid ${pid}\\)`), 30_000);
    const ms = await summon(dns);
    assert.ok(ms < 5000, `the answer for a re-adopted VM took ${ms} ms`);
    assert.deepEqual(qemuPids(pidFile), [pid], "no second QEMU");
    await idleStop(c, "suspend");
    assert.deepEqual(qemuPids(pidFile), []);
    assert.ok(existsSync(image), "the memory was saved");
    await summon(dns);
    assert.notEqual(pidOf(pidFile), pid);
    assert.equal(existsSync(image), false);
    assert.match(c.output(), /Resumed VM 'web' from its saved memory/);
  });

  it("-m shutdown: the guest powers itself off on the ACPI button; a query boots it again", async () => {
    await cli!.stop("SIGTERM");
    const pid = pidOf(pidFile);
    const { cli: c, dns } = await jitsu("shutdown");
    await c.waitFor(new RegExp(`Re-adopted QEMU \\(pid ${pid}\\)`), 30_000);
    await summon(dns);
    await idleStop(c, "shutdown");
    assert.deepEqual(qemuPids(pidFile), []);
    assert.match(readFileSync(consoleLog, "utf8"), /power button, powering off/);
    await summon(dns);
    assert.notEqual(pidOf(pidFile), pid);
  });

  it("-m destroy: QEMU is ended at once; a query boots it again", async () => {
    await cli!.stop("SIGTERM");
    const pid = pidOf(pidFile);
    const { cli: c, dns } = await jitsu("destroy");
    await c.waitFor(new RegExp(`Re-adopted QEMU \\(pid ${pid}\\)`), 30_000);
    await summon(dns);
    await idleStop(c, "destroy");
    assert.deepEqual(qemuPids(pidFile), []);
    await summon(dns);
    assert.notEqual(pidOf(pidFile), pid);
    await cli!.stop("SIGTERM");
  });
});
