/**
 * connect=: VMs on two hosts, each a real private libvirtd (test driver,
 * test:///<node.xml>: each VM lives on one daemon), and the built CLI queried
 * with dig:
 * - both hosts serve their VMs, /status shows each VM's host and both
 *   connections up, /metrics one jitsu_backend_connection_up per host;
 * - host B SIGKILLed: only its VMs fail (a cold one SERVFAIL by
 *   --start-timeout, the log naming the VM and B's URI; a ready one still
 *   answered from memory), A's VMs are unaffected, and B shows down;
 * - B restarted: its VMs are served again without restarting jitsu;
 * - jitsu started while B is down: it starts, A's VMs run, B's SERVFAIL,
 *   and once B runs they are served;
 * - a reload that adds B's first VM opens B; one that removes it closes B.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { PrivateLibvirtd } from "../../doubles/libvirtd.js";
import { httpCall, parsePrometheus } from "../../support/http.js";
import {
  answered,
  freePort,
  startCli,
  tempDir,
  timedDig,
  waitFor,
  type CliProcess,
} from "../../support/index.js";

const TIMEOUT_S = 3;

function domain(name: string, n: number, runstate: 1 | 5): string {
  return `
  <domain type='test'>
    <name>${name}</name><uuid>0badc0de-0000-4000-8000-0000000000${String(n).padStart(2, "0")}</uuid>
    <memory>65536</memory><os><type>hvm</type></os>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>${runstate}</test:runstate>
  </domain>`;
}

/** A: 'awarm' running, 'acold' shut off. B: 'bwarm' running, 'bcold' shut off. */
const NODE_A = `<node>${domain("awarm", 1, 1)}${domain("acold", 2, 5)}\n</node>\n`;
const NODE_B = `<node>${domain("bwarm", 3, 1)}${domain("bcold", 4, 5)}\n</node>\n`;

interface HostBody {
  backend: string;
  uri: string;
  default: boolean;
  state: string;
  since: string;
  lastError: string | null;
  vms: number;
}

interface StatusBody {
  vms: { label: string; state: string; host: string | null }[];
  hosts: HostBody[];
}

async function status(port: number): Promise<StatusBody> {
  const res = await httpCall(port, "GET", "/status");
  assert.equal(res.status, 200, res.body);
  return JSON.parse(res.body) as StatusBody;
}

async function hostState(port: number, uri: string): Promise<string | undefined> {
  return (await status(port)).hosts.find((h) => h.uri === uri)?.state;
}

describe("connect=: VMs on two libvirt hosts (two real libvirtd)", { timeout: 240_000 }, () => {
  const a = new PrivateLibvirtd();
  const b = new PrivateLibvirtd();
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let uriA = "";
  let uriB = "";
  const clis: CliProcess[] = [];

  before(async () => {
    dir = await tempDir();
    await Promise.all([a.start(), b.start()]);
    uriA = a.uri(`test://${a.writeFile("node.xml", NODE_A)}`);
    uriB = b.uri(`test://${b.writeFile("node.xml", NODE_B)}`);
  });

  after(async () => {
    for (const cli of clis) await cli.stop();
    await a.destroy();
    await b.destroy();
    await dir?.remove();
  });

  async function jitsu(extra: readonly string[]): Promise<{ cli: CliProcess; port: number; http: number }> {
    const port = await freePort();
    const http = await freePort();
    const cli = startCli([
      ...["-x", "libvirt", "-c", uriA, "-l", String(port), "-f", "0.0.0.0", "--http", `127.0.0.1:${http}`],
      ...["-t", "600", "-d", "0", "--start-timeout", String(TIMEOUT_S), "--state-dir", dir.path],
      ...extra,
    ]);
    clis.push(cli);
    await cli.waitFor(/Serving \/status/, 30_000);
    return { cli, port, http };
  }

  const vmsOnBoth = (): string[] => [
    "dns=awarm.jitsu.test,name=awarm,ip=10.0.0.1",
    "dns=acold.jitsu.test,name=acold,ip=10.0.0.2",
    `dns=bwarm.jitsu.test,name=bwarm,ip=10.0.1.1,connect=${uriB}`,
    `dns=bcold.jitsu.test,name=bcold,ip=10.0.1.2,connect=${uriB}`,
  ];

  it("serves both hosts; B killed fails only B's VMs; B restarted recovers without restarting jitsu", async () => {
    const { cli, port, http } = await jitsu(vmsOnBoth());
    assert.equal((await timedDig(port, "awarm.jitsu.test")).data, "10.0.0.1");
    assert.equal((await timedDig(port, "bwarm.jitsu.test")).data, "10.0.1.1");

    const up = await status(http);
    const byLabel = new Map(up.vms.map((v) => [v.label, v]));
    assert.equal(byLabel.get("awarm")?.host, uriA);
    assert.equal(byLabel.get("bcold")?.host, uriB);
    assert.deepEqual(
      up.hosts.map((h) => [h.uri, h.default, h.state, h.vms]),
      [
        [uriA, true, "up", 2],
        [uriB, false, "up", 2],
      ],
    );
    const metrics = parsePrometheus((await httpCall(http, "GET", "/metrics")).body);
    assert.equal(metrics.get(`jitsu_backend_connection_up{backend="libvirt",uri="${uriA}"}`), 1);
    assert.equal(metrics.get(`jitsu_backend_connection_up{backend="libvirt",uri="${uriB}"}`), 1);

    await b.kill();
    // B's ready VM: answered from memory while its last known state holds.
    const warm = await timedDig(port, "bwarm.jitsu.test");
    assert.equal(warm.data, "10.0.1.1");
    assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
    // B's cold VM: SERVFAIL within the start timeout, the log naming the VM and B's URI.
    const cold = await timedDig(port, "bcold.jitsu.test");
    assert.equal(cold.status, "SERVFAIL");
    assert.ok(cold.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${cold.ms} ms`);
    const line = cli
      .output()
      .split("\n")
      .find((l) => l.includes("VM 'bcold' could not be started"));
    assert.ok(line !== undefined, cli.output().slice(-3000));
    assert.ok(line.includes(uriB), line);
    assert.ok(!line.includes(uriA), `names B, not A: ${line}`);
    // A is not affected: its cold VM starts, its warm one answers.
    assert.equal((await timedDig(port, "acold.jitsu.test")).data, "10.0.0.2");
    assert.equal((await timedDig(port, "awarm.jitsu.test")).data, "10.0.0.1");
    await waitFor(async () => (await hostState(http, uriB)) === "down", 10_000, "host B shown down");
    const downBody = await status(http);
    const hostB = downBody.hosts.find((h) => h.uri === uriB)!;
    assert.ok(hostB.lastError !== null && hostB.lastError.length > 0);
    assert.equal(downBody.hosts.find((h) => h.uri === uriA)?.state, "up");
    const downMetrics = parsePrometheus((await httpCall(http, "GET", "/metrics")).body);
    assert.equal(downMetrics.get(`jitsu_backend_connection_up{backend="libvirt",uri="${uriB}"}`), 0);
    assert.equal(downMetrics.get(`jitsu_backend_connection_up{backend="libvirt",uri="${uriA}"}`), 1);

    await b.start();
    const back = await answered(port, "bcold.jitsu.test", 20_000);
    assert.equal(back.data, "10.0.1.2");
    await waitFor(async () => (await hostState(http, uriB)) === "up", 10_000, "host B shown up");
    assert.equal(cli.child.exitCode, null, "jitsu kept running");
  });

  it("starts while B is down: A's VMs run, B's SERVFAIL, then are served once B runs", async () => {
    await b.kill();
    const { cli, port, http } = await jitsu(vmsOnBoth());
    assert.match(cli.output(), /VM 'bcold' lives on test\+unix:\S+, which cannot be reached/);
    assert.equal((await timedDig(port, "acold.jitsu.test")).data, "10.0.0.2");
    const cold = await timedDig(port, "bwarm.jitsu.test");
    assert.equal(cold.status, "SERVFAIL");
    assert.ok(cold.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${cold.ms} ms`);
    const line = cli
      .output()
      .split("\n")
      .find((l) => l.includes("VM 'bwarm' could not be started"));
    assert.ok(line?.includes(uriB), line);
    assert.equal(await hostState(http, uriB), "down");
    await b.start();
    // Found running on B (adopted), without restarting jitsu.
    const back = await answered(port, "bwarm.jitsu.test", 20_000);
    assert.equal(back.data, "10.0.1.1");
    await waitFor(async () => (await hostState(http, uriB)) === "up", 10_000, "host B shown up");
  });

  it("a reload that adds B's first VM opens B; one that removes it closes B", async () => {
    const file = join(dir.path, "jitsu.yaml");
    const vmA = "  - name: awarm\n    dns: awarm.jitsu.test\n    ip: 10.0.0.1\n";
    const vmB = `  - name: bwarm\n    dns: bwarm.jitsu.test\n    ip: 10.0.1.1\n    connect: "${uriB}"\n`;
    writeFileSync(file, `vms:\n${vmA}`);
    const { cli, port, http } = await jitsu(["--config", file]);
    assert.deepEqual(
      (await status(http)).hosts.map((h) => h.uri),
      [uriA],
    );
    writeFileSync(file, `vms:\n${vmA}${vmB}`);
    cli.child.kill("SIGHUP");
    await cli.waitFor(/Reloaded '.*': 2 VMs/, 10_000);
    assert.deepEqual(
      (await status(http)).hosts.map((h) => [h.uri, h.state]),
      [
        [uriA, "up"],
        [uriB, "up"],
      ],
    );
    assert.equal((await timedDig(port, "bwarm.jitsu.test")).data, "10.0.1.1");
    writeFileSync(file, `vms:\n${vmA}`);
    cli.child.kill("SIGHUP");
    await cli.waitFor(/Reloaded '.*': 1 VM\b/, 10_000);
    assert.deepEqual(
      (await status(http)).hosts.map((h) => h.uri),
      [uriA],
    );
    assert.match(
      cli.output(),
      /closing the connection to test\+unix:\S+ \(no configured VM lives there now\)/,
    );
  });

  it("connect= on a host jitsu check cannot reach is named with its VM", async () => {
    const { run, CLI } = await import("../../support/index.js");
    const bad = `test+unix:///default?socket=${join(dir.path, "nothing-here.sock")}`;
    const res = await run(process.execPath, [
      CLI,
      "check",
      ...["-x", "libvirt", "-c", uriA, "-l", "0", "-f", "0.0.0.0", "--state-dir", dir.path],
      "dns=awarm.jitsu.test,name=awarm,ip=10.0.0.1",
      `dns=far.jitsu.test,name=far,ip=10.0.2.1,connect=${bad}`,
      `dns=bwarm.jitsu.test,name=bwarm,ip=10.0.1.1,connect=${uriB}`,
      `dns=nope.jitsu.test,name=nope,ip=10.0.1.9,connect=${uriB}`,
    ]);
    const out = res.stdout + res.stderr;
    assert.equal(res.code, 1, out);
    assert.match(
      out,
      /cannot reach the libvirt backend at test\+unix:\/\/\/default\S* \(connect= of VM 'far'\)/,
    );
    assert.match(out, /VM 'nope'.*no such domain/);
    assert.doesNotMatch(out, /VM 'bwarm'/);
  });
});
