/**
 * connect=: VMs on two XenAPI hosts, each a XenAPI double in a child process
 * (test/doubles/xapi-server.ts's main, with a --state file so that its VMs
 * survive a restart), and the built CLI queried with dig: host B SIGKILLed
 * fails only B's VMs (a cold one SERVFAIL by --start-timeout naming the VM and
 * B's URL, its ready one answered from memory), A's VMs are unaffected, and
 * B's VMs are served again once a new B runs, without restarting jitsu.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { httpCall } from "../../support/http.js";
import {
  answered,
  freePort,
  startCli,
  tempDir,
  timedDig,
  waitFor,
  type CliProcess,
} from "../../support/index.js";

const DOUBLE = fileURLToPath(new URL("../../doubles/xapi-server.js", import.meta.url));
const TIMEOUT_S = 3;

interface Double {
  child: ChildProcess;
  out: () => string;
}

describe("connect=: VMs on two XAPI hosts (two XenAPI doubles, real signals)", { timeout: 120_000 }, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess | undefined;
  const doubles: Double[] = [];
  let portA = 0;
  let portB = 0;
  let port = 0;
  let http = 0;

  async function startDouble(xport: number, name: string, vms: readonly string[]): Promise<Double> {
    let out = "";
    const child = spawn(
      process.execPath,
      [
        DOUBLE,
        ...["--port", String(xport), "--user", "root:secret", "--state", join(dir.path, `${name}.json`)],
        ...vms.flatMap((v) => ["--vm", v]),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    const t0 = Date.now();
    while (!out.includes("listening on")) {
      if (child.exitCode !== null || Date.now() - t0 > 10_000)
        throw new Error(`the XAPI double did not start: ${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const d = { child, out: () => out };
    doubles.push(d);
    return d;
  }

  async function kill(d: Double): Promise<void> {
    if (d.child.exitCode !== null || d.child.signalCode !== null) return;
    const gone = new Promise((r) => d.child.once("exit", r));
    d.child.kill("SIGKILL");
    await gone;
  }

  const urlA = (): string => `http://root:secret@127.0.0.1:${portA}/`;
  const urlB = (): string => `http://root:secret@127.0.0.1:${portB}/`;

  before(async () => {
    dir = await tempDir();
    portA = await freePort();
    portB = await freePort();
    port = await freePort();
    http = await freePort();
    await startDouble(portA, "a", ["awarm:Running", "acold"]);
    await startDouble(portB, "b", ["bwarm:Running", "bcold"]);
    cli = startCli([
      ...["-x", "xapi", "-c", urlA(), "-l", String(port), "-f", "0.0.0.0", "--http", `127.0.0.1:${http}`],
      ...["-t", "600", "-d", "0", "--start-timeout", String(TIMEOUT_S), "--state-dir", dir.path],
      "dns=awarm.jitsu.test,name=awarm,ip=10.0.0.1",
      "dns=acold.jitsu.test,name=acold,ip=10.0.0.2",
      `dns=bwarm.jitsu.test,name=bwarm,ip=10.0.1.1,connect=${urlB()}`,
      `dns=bcold.jitsu.test,name=bcold,ip=10.0.1.2,connect=${urlB()}`,
    ]);
    await cli.waitFor(/Serving \/status/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    for (const d of doubles) await kill(d);
    await dir?.remove();
  });

  async function hosts(): Promise<{ uri: string; state: string; default: boolean; vms: number }[]> {
    const res = await httpCall(http, "GET", "/status");
    assert.equal(res.status, 200);
    return (
      JSON.parse(res.body) as { hosts: { uri: string; state: string; default: boolean; vms: number }[] }
    ).hosts;
  }

  it("one connection per host, each shown with its VMs, passwords hidden", async () => {
    assert.equal((await timedDig(port, "awarm.jitsu.test")).data, "10.0.0.1");
    assert.equal((await timedDig(port, "bwarm.jitsu.test")).data, "10.0.1.1");
    const shown = await hosts();
    assert.deepEqual(
      shown.map((h) => [h.uri, h.default, h.state, h.vms]),
      [
        [`http://root:***@127.0.0.1:${portA}/`, true, "up", 2],
        [`http://root:***@127.0.0.1:${portB}/`, false, "up", 2],
      ],
    );
    const body = (await httpCall(http, "GET", "/status")).body;
    assert.doesNotMatch(body, /secret/);
    const vms = (JSON.parse(body) as { vms: { label: string; host: string }[] }).vms;
    assert.equal(vms.find((v) => v.label === "bcold")?.host, `http://root:***@127.0.0.1:${portB}/`);
    assert.equal(vms.find((v) => v.label === "acold")?.host, `http://root:***@127.0.0.1:${portA}/`);
  });

  it("B killed: only B's VMs fail; a new B serves them again without restarting jitsu", async () => {
    await kill(doubles[1]!);
    const warm = await timedDig(port, "bwarm.jitsu.test");
    assert.equal(warm.data, "10.0.1.1", "B's ready VM answered from memory");
    const cold = await timedDig(port, "bcold.jitsu.test");
    assert.equal(cold.status, "SERVFAIL");
    assert.ok(cold.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${cold.ms} ms`);
    const line = cli!
      .output()
      .split("\n")
      .find((l) => l.includes("VM 'bcold' could not be started"));
    assert.ok(line !== undefined, cli!.output().slice(-3000));
    assert.ok(line.includes(`127.0.0.1:${portB}`), line);
    assert.doesNotMatch(line, /secret/);
    // A is not affected.
    assert.equal((await timedDig(port, "acold.jitsu.test")).data, "10.0.0.2");
    await waitFor(
      async () => (await hosts()).find((h) => h.uri.includes(`:${portB}/`))?.state === "down",
      10_000,
      "host B shown down",
    );
    assert.equal((await hosts()).find((h) => h.default)?.state, "up");

    await startDouble(portB, "b", ["bwarm:Running", "bcold"]);
    const back = await answered(port, "bcold.jitsu.test", 15_000);
    assert.equal(back.data, "10.0.1.2");
    await waitFor(
      async () => (await hosts()).find((h) => h.uri.includes(`:${portB}/`))?.state === "up",
      10_000,
      "host B shown up",
    );
    assert.equal(cli!.child.exitCode, null);
  });
});
