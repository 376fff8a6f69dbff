/**
 * XAPI failing under a running jitsu -x xapi (issue 16): the XenAPI double
 * runs as a child process (test/doubles/xapi-server.ts's main, with a
 * --state file so that its VMs' power states survive a restart), hit with
 * real signals, and the built CLI is queried with dig:
 * - hung (SIGSTOP): a ready VM answered from memory, a cold query SERVFAIL
 *   by --start-timeout naming the backend, the URI and the VM; SIGCONT: the
 *   next query starts it, without restarting jitsu;
 * (SIGKILL mid-call and recovery with a restarted double: not yet; the
 * double's VM references change across a restart, see the issue 16 notes.)
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { dig, freePort, startCli, tempDir, type CliProcess } from "../../support/index.js";

const DOUBLE = fileURLToPath(new URL("../../doubles/xapi-server.js", import.meta.url));
const TIMEOUT_S = 3;

async function timedDig(port: number, name: string): Promise<{ status: string; data: string; ms: number }> {
  const t0 = Date.now();
  const a = await dig(port, [name, "A"]);
  return { status: a.status, data: a.answers[0]?.data ?? "", ms: Date.now() - t0 };
}

async function answered(
  port: number,
  name: string,
  withinMs: number,
): Promise<{ tries: number; data: string }> {
  const deadline = Date.now() + withinMs;
  for (let tries = 1; ; tries++) {
    const a = await timedDig(port, name);
    if (a.status === "NOERROR") return { tries, data: a.data };
    if (Date.now() > deadline) throw new Error(`${name} still answers ${a.status} after ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

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
        ...["--vm", "www:Running", "--vm", "cold", "--vm", "cold2", "--delay", "VM.start:1500"],
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
});
