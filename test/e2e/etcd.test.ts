/**
 * Two jitsu instances sharing state through a real etcd (--etcd), in front of
 * one real Podman service (-x docker: every instance sees the same
 * containers), queried with dig: one start for queries to both; queries to one
 * instance keep the VM up for the other's reaper; silence stops it once; the
 * reaper's instance and the start lock holder SIGKILLed; counts kept when
 * every instance restarts; etcd down for 20 s; one member of three killed.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { EtcdCluster } from "../support/etcd.js";
import {
  countMatches,
  dig,
  freePort,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";
import { getMetrics, getStatus, httpCall } from "../support/http.js";
import { IMAGE, PodmanService } from "../support/podman.js";

const TTL = 2;

interface Instance {
  cli: CliProcess;
  dns: number;
  http: number;
}

describe("two jitsu instances with --etcd (real etcd, real Podman)", { timeout: 600_000 }, () => {
  let podman: PodmanService;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const clis: CliProcess[] = [];
  const clusters: EtcdCluster[] = [];

  before(async () => {
    dir = await tempDir("jitsu-etcd-e2e-");
    podman = await PodmanService.start();
  });

  after(async () => {
    for (const c of clis) await c.stop("SIGKILL").catch(() => undefined);
    for (const c of clusters) await c.destroy();
    await podman?.destroy();
    await dir?.remove();
  });

  /** A container `name` serving HTTP on a free port (created, not started). */
  async function container(name: string): Promise<number> {
    const port = await freePort();
    const r = await podman.podman([
      ...["create", "--name", name, "--network", "host", IMAGE],
      ...["httpd", "-f", "-p", `127.0.0.1:${port}`, "-h", "/www"],
    ]);
    assert.equal(r.code, 0, r.stderr);
    return port;
  }

  /** The container's per-boot token: its start time ("" when it never ran). */
  async function bootToken(name: string): Promise<string> {
    const r = await podman.podman(["inspect", "--format", "{{.State.StartedAt}} {{.State.Status}}", name]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim();
  }

  async function instance(
    etcd: EtcdCluster,
    vm: string,
    extra: string[] = [],
    ports?: { dns: number; http: number },
  ): Promise<Instance> {
    const dns = ports?.dns ?? (await freePort());
    const http = ports?.http ?? (await freePort());
    const cli = startCli([
      ...["-x", "docker", "-c", podman.uri, "-l", String(dns), "-f", "0.0.0.0", "-t", String(TTL)],
      ...["-d", "0", "--state-dir", dir.path, "--http", `127.0.0.1:${http}`, "--etcd", etcd.endpoints],
      ...["--start-timeout", "20", ...extra, vm],
    ]);
    clis.push(cli);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
    await cli.waitFor(/Serving \/status/, 10_000);
    return { cli, dns, http };
  }

  function starts(...xs: Instance[]): number {
    return xs.reduce((n, x) => n + countMatches(x.cli.output(), /Starting VM 'web'/), 0);
  }

  function stops(...xs: Instance[]): number {
    return xs.reduce((n, x) => n + countMatches(x.cli.output(), /Stopping VM 'web'/), 0);
  }

  /** The elected reaper first (only one instance has said so yet). */
  function reaperOf(a: Instance, b: Instance): [Instance, Instance] {
    return /now runs the idle reaper/.test(a.cli.output()) ? [a, b] : [b, a];
  }

  it("starts a VM once, keeps it while one instance is queried, stops it once, takes over reaping and keeps counts", async () => {
    const etcd = await EtcdCluster.start(1);
    clusters.push(etcd);
    const port = await container("web");
    const vm = `dns=web.jitsu.test,name=web,ip=127.0.0.1,ready=tcp:127.0.0.1:${port}`;
    const a = await instance(etcd, vm);
    const b = await instance(etcd, vm);
    await waitFor(() => /now runs the idle reaper/.test(a.cli.output() + b.cli.output()), 15_000, "a reaper");
    // /status "shared" and the jitsu_etcd_* gauges: both connected, exactly one the reaper.
    const views = await Promise.all([a, b].map((x) => shared(x)));
    for (const v of views) {
      assert.equal(v.store, "etcd");
      assert.deepEqual(v.endpoints, etcd.endpoints.split(","));
      assert.equal(v.prefix, "/jitsu/");
      assert.equal(v.connected, true);
    }
    assert.equal(views.filter((v) => v.reaper).length, 1, JSON.stringify(views));
    assert.notEqual(views[0]!.instance, views[1]!.instance);
    const gauges = await Promise.all([a, b].map((x) => getMetrics(x.http)));
    assert.deepEqual(
      gauges.map((m) => [m.get("jitsu_etcd_connected"), m.get("jitsu_etcd_reaper")]),
      views.map((v) => [1, v.reaper ? 1 : 0]),
    );

    // Both at once, cold: one start, both answered.
    const [ra, rb] = await Promise.all([dig(a.dns, ["web.jitsu.test"]), dig(b.dns, ["web.jitsu.test"])]);
    assert.equal(ra.status, "NOERROR", ra.raw);
    assert.equal(rb.status, "NOERROR", rb.raw);
    assert.equal(ra.answers[0]?.data, "127.0.0.1");
    assert.equal(rb.answers[0]?.data, "127.0.0.1");
    assert.equal(starts(a, b), 1, a.cli.output() + b.cli.output());
    const token = await bootToken("web");
    assert.match(token, /running$/);

    // Queries to B only for 4 x TTL, whichever instance reaps: never stopped.
    const until = Date.now() + 4 * TTL * 1000 + 6000;
    while (Date.now() < until) {
      const r = await dig(b.dns, ["web.jitsu.test"]);
      assert.equal(r.status, "NOERROR");
      await new Promise((res) => setTimeout(res, 700));
    }
    assert.equal(await bootToken("web"), token);
    assert.equal(stops(a, b), 0, a.cli.output() + b.cli.output());

    // Silence: stopped 2 x TTL later (plus the 5 s reaper pass), once.
    const quiet = Date.now();
    await waitFor(
      async () => (await bootToken("web")).endsWith("exited"),
      2 * TTL * 1000 + 15_000,
      "the idle stop",
    );
    assert.ok(Date.now() - quiet >= 2 * TTL * 1000 - 1000, `stopped after ${Date.now() - quiet} ms`);
    await new Promise((res) => setTimeout(res, 3000));
    assert.equal(stops(a, b), 1, a.cli.output() + b.cli.output());

    // The reaper's instance SIGKILLed: the other takes over within 10 s, and reaps.
    const [reaper, other] = reaperOf(a, b);
    const killedAt = Date.now();
    await reaper.cli.stop("SIGKILL");
    assert.doesNotMatch(other.cli.output(), /now runs the idle reaper/);
    await other.cli.waitFor(/now runs the idle reaper/, 10_000);
    const takeoverMs = Date.now() - killedAt;
    assert.ok(takeoverMs <= 10_000, `took over after ${takeoverMs} ms`);
    const r = await dig(other.dns, ["web.jitsu.test"]);
    assert.equal(r.status, "NOERROR");
    await waitFor(
      async () => (await bootToken("web")).endsWith("exited"),
      2 * TTL * 1000 + 15_000,
      "the survivor's idle stop",
    );
    const requestsBefore = (await getStatus(other.http)).get("web")!.totalRequests;
    assert.ok(requestsBefore >= 10, `requests: ${requestsBefore}`);

    // Every instance restarted: counts and last requests kept.
    await new Promise((res) => setTimeout(res, 1500)); // one publish interval
    await other.cli.stop("SIGTERM");
    const a2 = await instance(etcd, vm);
    const b2 = await instance(etcd, vm);
    for (const x of [a2, b2]) {
      const s = (await getStatus(x.http)).get("web")!;
      assert.ok(s.totalRequests >= requestsBefore, `${s.totalRequests} < ${requestsBefore}`);
      assert.equal(s.totalStarts, 2);
      assert.notEqual(s.lastRequest, null);
    }
    process.stdout.write(`# reaper takeover after SIGKILL: ${takeoverMs} ms\n`);
    await a2.cli.stop("SIGTERM");
    await b2.cli.stop("SIGTERM");
  });

  it("a start lock holder SIGKILLed, one etcd member of three killed, etcd down for 20 s", async () => {
    const etcd = await EtcdCluster.start(3);
    clusters.push(etcd);
    const port = await container("slow");
    const coldPort = await container("cold");
    const warmPort = await container("warm");
    const vms = [
      `dns=slow.jitsu.test,name=slow,ip=127.0.0.1,ready=tcp:127.0.0.1:${port},response_delay=4`,
      `dns=cold.jitsu.test,name=cold,ip=127.0.0.1,ready=tcp:127.0.0.1:${coldPort}`,
      `dns=warm.jitsu.test,name=warm,ip=127.0.0.1,ready=tcp:127.0.0.1:${warmPort}`,
    ];
    const extra = ["--start-timeout", "8"];
    const a = await startPair(etcd, vms, extra);
    const b = await startPair(etcd, vms, extra);

    // A holds the lock and is in its 4 s response delay when it is SIGKILLed; B, waiting, finishes.
    const fromA = dig(a.dns, ["slow.jitsu.test"]);
    await a.cli.waitFor(/Starting VM 'slow'/, 10_000);
    const began = Date.now();
    const fromB = dig(b.dns, ["slow.jitsu.test"]);
    await b.cli.waitFor(/VM 'slow' is being started by another jitsu/, 5000);
    await a.cli.stop("SIGKILL");
    const rb = await fromB;
    assert.equal(rb.status, "NOERROR", rb.raw + b.cli.output());
    const lockTakeoverMs = Date.now() - began;
    // From here on B is queried every 700 ms (2 x TTL is 4 s) until the outage: the VM stays in use.
    // (The query to A, which died before answering, times out meanwhile.)
    const keep = keepQuerying(b, "slow.jitsu.test");
    await fromA.catch(() => undefined);
    assert.match(b.cli.output(), /VM 'slow' is already running; adopting it/);
    const token = await bootToken("slow");
    assert.match(token, /running$/);
    assert.equal(countMatches(b.cli.output(), /Starting VM 'slow'/), 0);

    // One member of three killed: nothing visible to clients (every query answered, a cold
    // start done, the reaper still elected), then the member back.
    await etcd.kill(0);
    const warm = await dig(b.dns, ["warm.jitsu.test"]);
    assert.equal(warm.status, "NOERROR", warm.raw + b.cli.output());
    assert.match(await bootToken("warm"), /running$/);
    const keepWarm = keepQuerying(b, "warm.jitsu.test");
    await new Promise((res) => setTimeout(res, 4000));
    etcd.startMember(0);
    await etcd.waitHealthy();
    await new Promise((res) => setTimeout(res, 2000));
    for (const k of [keep, keepWarm]) {
      const kept = await k.stop();
      assert.deepEqual(kept.failures, [], b.cli.output());
      assert.ok(kept.answered >= 3, `answered ${kept.answered}`);
    }
    assert.equal(await bootToken("slow"), token);
    assert.doesNotMatch(b.cli.output(), /etcd is unreachable/);
    assert.equal(countMatches(b.cli.output(), /Stopping VM 'slow'/), 0, b.cli.output());

    // etcd down for 20 s: the ready VM answered, the cold one SERVFAIL after --start-timeout,
    // nothing stopped (the VM is idle far past 2 x TTL meanwhile); all back after.
    await etcd.killAll();
    const down = Date.now();
    assert.equal((await dig(b.dns, ["slow.jitsu.test"])).status, "NOERROR");
    const cold = await dig(b.dns, ["cold.jitsu.test"]);
    assert.equal(cold.status, "SERVFAIL", cold.raw);
    assert.equal(await bootToken("cold"), "0001-01-01 00:00:00 +0000 UTC created");
    await b.cli.waitFor(/etcd is unreachable/, 10_000);
    const lost = await shared(b);
    assert.equal(lost.connected, false);
    assert.equal(lost.reaper, false);
    assert.equal((await getMetrics(b.http)).get("jitsu_etcd_connected"), 0);
    while (Date.now() - down < 20_000) await new Promise((res) => setTimeout(res, 500));
    assert.equal((await dig(b.dns, ["slow.jitsu.test"])).status, "NOERROR");
    assert.equal(await bootToken("slow"), token);
    assert.equal(await bootToken("warm").then((t) => t.endsWith("running")), true);
    assert.equal(countMatches(b.cli.output(), /Stopping VM/), 0, b.cli.output());
    assert.equal(countMatches(b.cli.output(), /etcd is unreachable/), 1, b.cli.output());
    etcd.startAll();
    await etcd.waitHealthy();
    await b.cli.waitFor(/etcd is reachable again/, 20_000);
    assert.equal(countMatches(b.cli.output(), /etcd is reachable again/), 1, b.cli.output());
    // Recovered: the idle VMs are stopped by the reaper (B, the only instance left), once each.
    await waitFor(
      async () =>
        (await bootToken("slow")).endsWith("exited") && (await bootToken("warm")).endsWith("exited"),
      30_000,
      "the stops after recovery",
    );
    assert.equal(countMatches(b.cli.output(), /Stopping VM 'slow'/), 1, b.cli.output());
    assert.equal(countMatches(b.cli.output(), /Stopping VM 'warm'/), 1, b.cli.output());
    process.stdout.write(
      `# start lock takeover after SIGKILL: query answered by the other after ${lockTakeoverMs} ms\n`,
    );
    await b.cli.stop("SIGTERM");
  });

  /** /status "shared" of an instance. */
  async function shared(x: Instance): Promise<{
    store: string;
    endpoints: string[];
    prefix: string;
    instance: string;
    connected: boolean;
    reaper: boolean;
    lastAnswer: string;
  }> {
    const res = await httpCall(x.http, "GET", "/status");
    assert.equal(res.status, 200, res.body);
    return (JSON.parse(res.body) as { shared: Awaited<ReturnType<typeof shared>> }).shared;
  }

  /** Queries `name` at `x` every 700 ms until stopped: how many were answered, and the others. */
  function keepQuerying(
    x: Instance,
    name: string,
  ): { stop(): Promise<{ answered: number; failures: string[] }> } {
    let stopped = false;
    let answered = 0;
    const failures: string[] = [];
    const loop = (async () => {
      while (!stopped) {
        const r = await dig(x.dns, [name]);
        if (r.status === "NOERROR") answered++;
        else failures.push(`${new Date().toISOString()} ${r.status}`);
        await new Promise((res) => setTimeout(res, 700));
      }
    })();
    return {
      async stop() {
        stopped = true;
        await loop;
        return { answered, failures };
      },
    };
  }

  async function startPair(etcd: EtcdCluster, vms: string[], extra: string[]): Promise<Instance> {
    const dns = await freePort();
    const http = await freePort();
    const cli = startCli([
      ...["-x", "docker", "-c", podman.uri, "-l", String(dns), "-f", "0.0.0.0", "-t", String(TTL)],
      ...["-d", "0", "--state-dir", dir.path, "--http", `127.0.0.1:${http}`, "--etcd", etcd.endpoints],
      ...extra,
      ...vms,
    ]);
    clis.push(cli);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
    await cli.waitFor(/Serving \/status/, 10_000);
    return { cli, dns, http };
  }
});
