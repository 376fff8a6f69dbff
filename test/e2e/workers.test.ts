/**
 * --workers N through the built CLI: DNS served by node:cluster workers on one
 * shared UDP + TCP port, VMs (process backend) owned by the primary; real dig,
 * a local upstream for forwarding, the --http endpoint, SIGHUP, SIGKILL of a
 * worker, SIGTERM.
 */
import assert from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";
import { getMetrics, getStatus } from "../support/http.js";
import {
  CLI,
  alive,
  childPids,
  countMatches,
  dig,
  digSource,
  freePort,
  localArgs,
  queryMany,
  run,
  startCli,
  tempDir,
  type CliProcess,
  yamlHeader,
  killVmGroups,
  yamlVm,
} from "../support/index.js";

/** The pids of a primary's DNS workers, from /proc (its children running the worker entry). */
function workerPids(primary: number): number[] {
  return childPids(primary).filter((pid) => {
    try {
      // Workers set their process title (cluster/worker-main.ts).
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "jitsu-worker";
    } catch {
      return false;
    }
  });
}

/**
 * A VM whose program is a script whose interpreter does not exist: start-up
 * finds the script (a missing program would be refused there), every start fails.
 */
const badVm = (script: string): string =>
  `  - name: bad\n    dns: bad.jitsu.test\n    ip: 127.0.0.9\n    exec: ${script}\n`;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("--workers 3 (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let upstream: TestUpstream;
  let cli: CliProcess;
  let dns: number;
  let http: number;
  let file: string;
  let badScript: string;
  /** A queries for www.jitsu.test sent so far (each must be counted once). */
  let wwwQueries = 0;
  /** Queries forwarded to the upstream so far. */
  let forwarded = 0;

  const header = (): string =>
    yamlHeader({
      backend: "process",
      forwarder: "127.0.0.1",
      port: upstream.port,
      listen: dns,
      ttl: 1,
      delay: 0,
      workers: 3,
      http: `127.0.0.1:${http}`,
      "stop-on-exit": true,
      "state-dir": dir.path,
    });

  before(async () => {
    dir = await tempDir("jitsu-workers-");
    upstream = await startUpstream("192.0.2.7");
    dns = await freePort();
    http = await freePort();
    file = join(dir.path, "jitsu.yaml");
    badScript = join(dir.path, "bad-vm");
    await writeFile(badScript, "#!/nonexistent/jitsu-test-interpreter\n", { mode: 0o755 });
    await writeFile(file, header() + yamlVm("www", "127.0.0.1") + badVm(badScript));
    // workers: 3 comes from the file, as any long option may.
    cli = startCli(["--config", file]);
    await cli.waitFor(/Serving \/status/, 30_000);
  });

  after(async () => {
    await cli.stop("SIGKILL");
    killVmGroups(cli.output());
    await upstream.close();
    await dir.remove();
  });

  it("starts 3 workers, then logs the line clients wait for", () => {
    const out = cli.output();
    assert.match(out, new RegExp(`Starting server on 127\\.0\\.0\\.1:${dns}\\.\\.\\.`));
    assert.match(out, /Serving DNS with 3 workers/);
    assert.equal(countMatches(out, /Starting server on/), 1);
    assert.equal(workerPids(cli.child.pid!).length, 3);
  });

  it("starts a cold VM exactly once for 50 concurrent queries spread over the workers", async () => {
    const answers = await queryMany(dns, "www.jitsu.test", 50);
    wwwQueries += 50;
    assert.equal(answers.filter((a) => a === "127.0.0.1").length, 50, answers.join(" "));
    // The answers can be read before the log lines written ahead of them (another pipe).
    await cli.waitFor(/VM 'www' is ready after/, 5000);
    assert.equal(countMatches(cli.output(), /Starting VM 'www'/), 1, cli.output());
  });

  it("answers a ready VM over UDP and TCP", async () => {
    const udp = await dig(dns, ["www.jitsu.test", "A"]);
    const tcp = await dig(dns, ["+tcp", "WWW.jitsu.test", "A"]);
    wwwQueries += 2;
    assert.equal(udp.status, "NOERROR");
    assert.ok(udp.flags.includes("aa"));
    assert.deepEqual(
      udp.answers.map((a) => [a.name, a.ttl, a.data]),
      [["www.jitsu.test.", 1, "127.0.0.1"]],
    );
    assert.deepEqual(
      tcp.answers.map((a) => [a.name, a.data]),
      [["WWW.jitsu.test.", "127.0.0.1"]],
    );
  });

  it("forwards other names to the upstream, from each worker's own pool of random-port sockets", async () => {
    const res = await dig(dns, ["example.com", "A"]);
    forwarded++;
    assert.equal(res.status, "NOERROR");
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["192.0.2.7"],
    );
    // 20 names at once, over the workers: every one answered, sent upstream from sockets drawn
    // at random from the workers' pools (each worker's own, not one socket node:cluster would
    // share for every port-0 bind): 20 draws among 64 sockets give about 17 ports, under 10 has
    // odds below 1e-6.
    const names = Array.from({ length: 20 }, (_, i) => `n${i}.example.com`);
    const answers = await Promise.all(names.map((name, k) => dig(dns, [...digSource(k), name, "A"])));
    forwarded += names.length;
    for (const a of answers) assert.deepEqual([a.status, a.answers[0]?.data], ["NOERROR", "192.0.2.7"]);
    const ports = new Set(
      upstream.received
        .filter((r) => names.includes(r.packet.questions?.[0]?.name ?? ""))
        .map((r) => r.srcPort),
    );
    assert.ok(ports.size >= 10, `source ports: ${[...ports].join(" ")}`);
  });

  it("a VM that cannot start: SERVFAIL, and the worker's warning carries the primary's reason", async () => {
    const res = await dig(dns, ["bad.jitsu.test", "A"]);
    assert.equal(res.status, "SERVFAIL");
    await cli.waitFor(/VM 'bad' could not be started: /, 10_000);
    const reason = /VM 'bad' could not be started: (.*?); next try/.exec(cli.output())![1]!;
    // Logged by the worker that got the query, with the same text as a single process logs.
    await cli.waitFor(/SERVFAIL for 'bad\.jitsu\.test' \(A\): VM 'bad' is not ready: /, 10_000);
    assert.ok(
      cli.output().includes(`SERVFAIL for 'bad.jitsu.test' (A): VM 'bad' is not ready: ${reason}`),
      cli.output(),
    );
  });

  it("/status counts every request the workers answered; /metrics sums the workers' counters", async () => {
    const status = await getStatus(http);
    assert.equal(status.get("www")?.totalRequests, wwwQueries);
    const m = await getMetrics(http);
    // Each counted once, by the worker that answered it.
    assert.equal(m.get('jitsu_dns_queries_total{type="A"}'), wwwQueries + forwarded + 1);
    assert.equal(m.get('jitsu_dns_answers_total{result="NOERROR"}'), wwwQueries);
    assert.equal(m.get('jitsu_dns_answers_total{result="SERVFAIL"}'), 1);
    assert.equal(m.get('jitsu_dns_answers_total{result="forwarded"}'), forwarded);
    assert.equal(m.get("jitsu_dns_forwarded_total"), forwarded);
    assert.equal(m.get("jitsu_dns_forward_latency_seconds_count"), forwarded);
    assert.equal(m.get('jitsu_dns_forward_latency_seconds_bucket{le="+Inf"}'), forwarded);
    assert.equal(m.get("jitsu_dns_tcp_connections_total"), 1);
    const perWorker = ["1", "2", "3"].map((w) => m.get(`jitsu_dns_worker_answers_total{worker="${w}"}`) ?? 0);
    assert.equal(
      perWorker.reduce((a, b) => a + b, 0),
      wwwQueries + forwarded + 1,
    );
    assert.ok(perWorker.filter((n) => n > 0).length >= 2, `answers per worker: ${perWorker.join(", ")}`);
  });

  it("keeps a VM queried through the workers running, and stops it 2 x TTL after the last query", async () => {
    const stopsBefore = countMatches(cli.output(), /Stopping VM 'www'/);
    // Bounded: 7 s of queries, at most 40, crossing at least one reaper pass (every 5 s).
    const until = Date.now() + 7000;
    for (let i = 0; i < 40 && Date.now() < until; i++) {
      const res = await dig(dns, ["www.jitsu.test", "A"]);
      wwwQueries++;
      assert.equal(res.answers[0]?.data, "127.0.0.1");
      await sleep(300);
    }
    const last = Date.now();
    assert.equal(countMatches(cli.output(), /Stopping VM 'www'/), stopsBefore, cli.output());
    await cli.waitFor(/Stopping VM 'www' \(destroy\) after \d+ s idle/, 20_000);
    assert.ok(Date.now() - last >= 2000, "stopped before 2 x TTL");
    await cli.waitFor(/VM 'www' stopped/, 10_000);
    const status = await getStatus(http);
    assert.equal(status.get("www")?.state, "off");
    assert.equal(status.get("www")?.totalRequests, wwwQueries);
  });

  it("SIGHUP reloads --config and every worker serves the new name", async () => {
    await writeFile(
      file,
      header() + yamlVm("www", "127.0.0.1") + badVm(badScript) + yamlVm("fresh", "127.0.0.2"),
    );
    cli.child.kill("SIGHUP");
    await cli.waitFor(/Reloaded '.*jitsu\.yaml': 3 VMs/, 20_000);
    // A worker still on the old zone would forward the name (the upstream says 192.0.2.7).
    for (let i = 0; i < 9; i++) {
      const res = await dig(dns, ["fresh.jitsu.test", "A"]);
      assert.equal(res.status, "NOERROR");
      assert.deepEqual(
        res.answers.map((a) => a.data),
        ["127.0.0.2"],
      );
    }
    await cli.waitFor(/VM 'fresh' is ready after/, 5000);
    assert.equal(countMatches(cli.output(), /Starting VM 'fresh'/), 1);
  });

  it("replaces a worker killed with SIGKILL, and DNS keeps answering", async () => {
    const before = workerPids(cli.child.pid!);
    assert.equal(before.length, 3);
    // Signals are for the primary: a worker ignores them (Ctrl-C signals the whole group).
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.kill(before[1]!, signal);
    const victim = before[0]!;
    process.kill(victim, "SIGKILL");
    await cli.waitFor(new RegExp(`DNS worker \\d \\(pid ${victim}\\) exited with signal SIGKILL`), 10_000);
    await cli.waitFor(/DNS worker \d replaced \(pid \d+\)/, 20_000);
    for (let i = 0; i < 6; i++) {
      const res = await dig(dns, ["fresh.jitsu.test", "A"]);
      assert.equal(res.answers[0]?.data, "127.0.0.2");
    }
    const now = workerPids(cli.child.pid!);
    assert.equal(now.length, 3);
    assert.ok(!now.includes(victim));
    assert.ok(now.includes(before[1]!), "a worker sent SIGINT, SIGTERM and SIGHUP still runs");
  });

  it("SIGTERM closes the workers, stops the VMs and exits 0 with no process left", async () => {
    const workers = workerPids(cli.child.pid!);
    const vms = [...cli.output().matchAll(/Started process (\d+) for VM/g)].map((m) => Number(m[1]));
    assert.equal(workers.length, 3);
    assert.ok(vms.length >= 1);
    const code = await cli.stop("SIGTERM");
    assert.equal(code, 0, cli.output());
    assert.match(cli.output(), /SIGTERM: shutting down/);
    // The primary waited for its workers; --stop-on-exit stopped the running VM.
    for (const pid of workers) assert.equal(alive(pid), false, `worker ${pid} still runs`);
    await sleep(200);
    for (const pid of vms) assert.equal(alive(pid), false, `VM ${pid} still runs`);
  });
});

describe("--workers errors (e2e)", () => {
  it("rejects --workers 0 and --workers x with one line naming the option", async () => {
    for (const value of ["0", "x"]) {
      const res = await run(process.execPath, [CLI, "--workers", value, "-f", "0.0.0.0"]);
      assert.equal(res.code, 2, res.stderr);
      assert.equal(
        res.stderr,
        `jitsu: option '--workers': expected a whole number of worker processes from 1 to 64, got '${value}'\n`,
      );
    }
  });

  it("exits 1 naming the address when the workers cannot bind it", async () => {
    const dir = await tempDir("jitsu-workers-busy-");
    const port = await freePort();
    const blocker: Socket = createSocket("udp4");
    await new Promise<void>((resolve) => blocker.bind(port, "127.0.0.1", () => resolve()));
    const cli = startCli([
      ...localArgs(port, dir.path),
      "--workers",
      "2",
      "dns=www.jitsu.test,ip=127.0.0.1,exec=sleep 60",
    ]);
    try {
      const code = await new Promise<number | null>((resolve) => cli.child.once("exit", (c) => resolve(c)));
      assert.equal(code, 1, cli.output());
      assert.match(
        cli.output(),
        new RegExp(
          `jitsu: cannot listen on UDP 127\\.0\\.0\\.1:${port}: the port is already in use \\(EADDRINUSE\\)`,
        ),
      );
      assert.doesNotMatch(cli.output(), /Starting server on/);
    } finally {
      await cli.stop("SIGKILL");
      blocker.close();
      await dir.remove();
    }
  });
});
