/**
 * XAPI failing under a running jitsu -x xapi (issue 16): the XenAPI double
 * runs as a child process (test/doubles/xapi-server.ts's main, with a
 * --state file so that its VMs' power states survive a restart), hit with
 * real signals, and the built CLI is queried with dig:
 * - hung (SIGSTOP): a ready VM answered from memory, a cold query SERVFAIL
 *   by --start-timeout naming the backend, the URI and the VM; SIGCONT: the
 *   next query starts it, without restarting jitsu;
 * - killed (SIGKILL) while VM.start is in flight, after the VM's domain is
 *   up: the query SERVFAILs by --start-timeout naming backend, URI and VM,
 *   the ready VM is answered throughout, a cold query while it is down
 *   SERVFAILs too; a new double (same database: uuids and opaque references
 *   kept, as xapi's are) serves the next query without restarting jitsu, and
 *   the VM the dead one started is adopted (no second VM.start).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { answered, freePort, startCli, tempDir, timedDig, type CliProcess } from "../../support/index.js";

const DOUBLE = fileURLToPath(new URL("../../doubles/xapi-server.js", import.meta.url));
const TIMEOUT_S = 3;

describe("the XenAPI double hung or killed under jitsu -x xapi (real signals)", { timeout: 120_000 }, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess | undefined;
  let xapi: ChildProcess | undefined;
  let xapiOut = "";
  let xport = 0;
  let port = 0;

  async function startXapi(): Promise<void> {
    xapiOut = "";
    const child = spawn(
      process.execPath,
      [
        DOUBLE,
        ...["--port", String(xport), "--user", "root:secret", "--state", join(dir.path, "xapi.json")],
        ...[
          "--vm",
          "www:Running",
          "--vm",
          "cold",
          "--vm",
          "cold2",
          "--vm",
          "cold3",
          "--hold",
          "VM.start:1500",
        ],
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    child.stdout!.on("data", (b: Buffer) => (xapiOut += b.toString()));
    xapi = child;
    const t0 = Date.now();
    while (!xapiOut.includes("listening on")) {
      if (child.exitCode !== null || Date.now() - t0 > 10_000)
        throw new Error(`the XAPI double did not start: ${xapiOut}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  before(async () => {
    dir = await tempDir();
    xport = await freePort();
    port = await freePort();
    await startXapi();
    cli = startCli([
      ...["-x", "xapi", "-c", `http://root:secret@127.0.0.1:${xport}/`, "-l", String(port), "-f", "0.0.0.0"],
      ...["-t", "600", "-d", "0", "--start-timeout", String(TIMEOUT_S), "--state-dir", dir.path],
      "dns=www.jitsu.test,name=www,ip=10.0.0.1",
      "dns=cold.jitsu.test,name=cold,ip=10.0.0.2",
      "dns=cold2.jitsu.test,name=cold2,ip=10.0.0.3",
      "dns=cold3.jitsu.test,name=cold3,ip=10.0.0.4",
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
  });

  after(async () => {
    xapi?.kill("SIGCONT");
    await cli?.stop();
    if (xapi !== undefined && xapi.exitCode === null && xapi.signalCode === null) {
      const gone = new Promise((r) => xapi!.once("exit", r));
      xapi.kill("SIGKILL");
      await gone;
    }
    await dir?.remove();
  });

  it("hung: the ready VM answered from memory, a cold query SERVFAIL by the timeout naming backend, URI and VM; SIGCONT recovers", async () => {
    assert.equal((await timedDig(port, "www.jitsu.test")).data, "10.0.0.1");
    xapi!.kill("SIGSTOP");
    try {
      const warm = await timedDig(port, "www.jitsu.test");
      assert.equal(warm.data, "10.0.0.1");
      assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
      const cold = await timedDig(port, "cold.jitsu.test");
      assert.equal(cold.status, "SERVFAIL");
      assert.ok(cold.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${cold.ms} ms`);
      const line = cli!
        .output()
        .split("\n")
        .find((l) => l.includes("VM 'cold' could not be started"));
      assert.ok(line !== undefined);
      assert.match(line, /xapi backend at http:\/\/root:\*\*\*@127\.0\.0\.1:\d+/);
      assert.doesNotMatch(line, /secret/);
    } finally {
      xapi!.kill("SIGCONT");
    }
    const back = await answered(port, "cold.jitsu.test", 15_000);
    assert.equal(back.data, "10.0.0.2");
    assert.ok(back.tries <= 3, `answered after ${back.tries} queries`);
  });

  it("killed mid-VM.start: SERVFAIL by the timeout naming backend, URI and VM; a new XAPI adopts the started VM; the ready VM answered throughout", async () => {
    const www = await timedDig(port, "www.jitsu.test");
    assert.equal(www.data, "10.0.0.1");
    const pending = timedDig(port, "cold2.jitsu.test");
    // The double has started cold2's domain and holds VM.start's answer: kill it now.
    const t0 = Date.now();
    while (!xapiOut.includes("VM cold2: Halted -> Running")) {
      if (Date.now() - t0 > 10_000) throw new Error(`VM.start never arrived: ${xapiOut}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const dead = new Promise((r) => xapi!.once("exit", r));
    xapi!.kill("SIGKILL");
    await dead;
    const failed = await pending;
    assert.equal(failed.status, "SERVFAIL");
    assert.ok(failed.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${failed.ms} ms`);
    await new Promise((r) => setTimeout(r, 300));
    const line = cli!
      .output()
      .split("\n")
      .find((l) => l.includes("VM 'cold2' could not be started"));
    assert.ok(line !== undefined, cli!.output().split("\n").slice(-8).join("\n"));
    assert.match(line, /xapi backend at http:\/\/root:\*\*\*@127\.0\.0\.1:\d+/);

    // XAPI down: the ready VM still answered from memory, a cold one SERVFAIL by the timeout.
    for (let i = 0; i < 3; i++) {
      const warm = await timedDig(port, "www.jitsu.test");
      assert.equal(warm.data, "10.0.0.1");
      assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
    }
    const down = await timedDig(port, "cold3.jitsu.test");
    assert.equal(down.status, "SERVFAIL");
    assert.ok(down.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${down.ms} ms`);

    await startXapi();
    assert.match(xapiOut, /VM cold2 uuid=\S+ Running/);
    const back = await answered(port, "cold2.jitsu.test", 10_000);
    assert.equal(back.data, "10.0.0.3");
    assert.ok(back.tries <= 3, `answered after ${back.tries} queries`);
    // Adopted: the new XAPI was never asked to start it again.
    await new Promise((r) => setTimeout(r, 100));
    assert.doesNotMatch(xapiOut, /call VM\.start/);
    assert.equal((await timedDig(port, "www.jitsu.test")).data, "10.0.0.1");
    const cold3 = await answered(port, "cold3.jitsu.test", 10_000);
    assert.equal(cold3.data, "10.0.0.4");
    assert.equal((await timedDig(port, "www.jitsu.test")).data, "10.0.0.1");
  });
});
