/**
 * The --http endpoint over real HTTP on loopback, in front of the real
 * Summoner (with the summoner tests' in-memory backend and a manual clock) and
 * a real DnsCounters.
 */
import { strict as assert } from "node:assert";
import { request } from "node:http";
import { after, before, describe, it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { DnsCounters, REFUSED } from "../../src/dns/index.js";
import { parseHttpAddress } from "../../src/cli/options.js";
import { JitsuMetrics, StatusServer } from "../../src/http/index.js";
import { silentLogger } from "../../src/log/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { parsePrometheus } from "../support/http.js";
import { TestBackend, deferred, spec } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, method, path, headers, agent: false, timeout: 10_000 },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("HTTP timeout")));
    req.on("error", reject);
    req.end();
  });
}

describe("StatusServer with a token", () => {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const counters = new DnsCounters();
  let summoner: Summoner;
  let server: StatusServer;
  let port: number;

  before(async () => {
    summoner = await Summoner.create(
      summonerOptions({
        backend,
        specs: [
          spec("name=www,dns=www.example.org,dns=example.org,ip=10.0.0.1"),
          spec("name=db,dns=db.example.org,ip=10.0.0.2,ip=2001:db8::2"),
        ],
        clock,
      }),
    );
    const metrics = new JitsuMetrics({ summoner, counters, clock, processMetrics: false });
    server = new StatusServer({
      summoner,
      metrics,
      log: silentLogger(),
      token: "s3cret-token",
      version: "9.9.9",
    });
    await server.listen("127.0.0.1", 0);
    port = server.address().port;
  });

  after(async () => {
    await server.close();
    await summoner.close();
  });

  it("GET /status lists every VM with the stats-table fields", async () => {
    await summoner.request("db");
    const res = await call(port, "GET", "/status");
    assert.equal(res.status, 200);
    assert.match(String(res.headers["content-type"]), /^application\/json/);
    const body = JSON.parse(res.body) as { version: string; vms: Record<string, unknown>[] };
    assert.equal(body.version, "9.9.9");
    assert.deepEqual(
      body.vms.map((v) => v.label),
      ["www", "db"],
    );
    const db = body.vms[1]!;
    for (const key of [
      "uuid",
      "name",
      "state",
      "responseDelay",
      "useSynjitsu",
      "startedAt",
      "totalStarts",
      "stopMode",
      "dns",
      "ips",
      "ttl",
      "totalRequests",
      "lastRequest",
    ]) {
      assert.ok(key in db, `status lacks ${key}`);
    }
    assert.equal(db.state, "ready");
    assert.deepEqual(db.ips, ["10.0.0.2", "2001:db8::2"]);
    assert.equal(db.totalRequests, 1);
    assert.equal(db.totalStarts, 1);
    assert.equal(db.ttl, 60);
    assert.equal(db.lastRequest, new Date(clock.now()).toISOString());
    assert.equal(body.vms[0]!.state, "off");
    assert.equal(body.vms[0]!.startedAt, null);
  });

  it("GET /healthz is ok; HEAD works; other methods and paths are refused with JSON", async () => {
    assert.deepEqual(JSON.parse((await call(port, "GET", "/healthz")).body), { status: "ok" });
    const head = await call(port, "HEAD", "/status");
    assert.equal(head.status, 200);
    assert.equal(head.body, "");
    const post = await call(port, "POST", "/status");
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, "GET, HEAD");
    const get = await call(port, "GET", "/vms/www/start");
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, "POST");
    const missing = await call(port, "GET", "/nope");
    assert.equal(missing.status, 404);
    assert.match((JSON.parse(missing.body) as { error: string }).error, /no such endpoint/);
  });

  it("admin endpoints refuse a missing or wrong token and do nothing", async () => {
    const none = await call(port, "POST", "/vms/www/start");
    assert.equal(none.status, 401);
    assert.match(String(none.headers["www-authenticate"]), /^Bearer/);
    assert.match((JSON.parse(none.body) as { error: string }).error, /missing bearer token/);
    for (const auth of [
      "Bearer wrong",
      "Bearer s3cret-token-and-more",
      "Bearer s3cret-toke",
      "Bearer S3CRET-TOKEN",
    ]) {
      const res = await call(port, "POST", "/vms/www/start", { authorization: auth });
      assert.equal(res.status, 403, auth);
      assert.deepEqual(JSON.parse(res.body), { error: "wrong token" });
    }
    const basic = await call(port, "POST", "/vms/www/start", { authorization: "Basic czNjcmV0LXRva2Vu" });
    assert.equal(basic.status, 401);
    assert.ok(!backend.ops().includes("start:www"), "nothing was started");
  });

  it("with the token: start and stop by name or DNS name; 404 for an unknown VM", async () => {
    const auth = { authorization: "Bearer s3cret-token" };
    const started = await call(port, "POST", "/vms/www/start", auth);
    assert.equal(started.status, 200, started.body);
    assert.deepEqual(JSON.parse(started.body), { vm: "www", state: "ready" });
    assert.equal(backend.states.get("www"), "running");
    const stopped = await call(port, "POST", "/vms/example.org/stop", auth);
    assert.deepEqual(JSON.parse(stopped.body), { vm: "www", state: "off" });
    assert.equal(backend.states.get("www"), "off");
    const unknown = await call(port, "POST", "/vms/nope/start", auth);
    assert.equal(unknown.status, 404);
    assert.match((JSON.parse(unknown.body) as { error: string }).error, /no VM 'nope'/);
  });

  it("GET /metrics is Prometheus text with DNS counters, summons, durations and stops", async () => {
    counters.countType(1); // A
    counters.countType(1);
    counters.countType(28); // AAAA
    counters.countRcode(0); // NOERROR
    counters.countForwarded();
    counters.malformed += 2;
    counters.forwarded += 1;
    counters.forwardFailures += 1;
    counters.observeForwardLatency(0.003);
    // A start that takes 2 s in the backend, then is ready at once.
    const gate = deferred();
    backend.hold.start = () => gate.promise;
    const pending = summoner.request("www");
    await clock.advance(2000);
    gate.resolve();
    await pending;
    delete backend.hold.start;

    const res = await call(port, "GET", "/metrics");
    assert.equal(res.status, 200);
    assert.match(String(res.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    const m = parsePrometheus(res.body);
    assert.equal(m.get('jitsu_dns_queries_total{type="A"}'), 2);
    assert.equal(m.get('jitsu_dns_queries_total{type="AAAA"}'), 1);
    assert.equal(m.get('jitsu_dns_answers_total{result="NOERROR"}'), 1);
    assert.equal(m.get('jitsu_dns_answers_total{result="forwarded"}'), 1);
    assert.equal(m.get("jitsu_dns_malformed_total"), 2);
    assert.equal(m.get("jitsu_dns_forward_failures_total"), 1);
    assert.equal(m.get("jitsu_dns_forward_latency_seconds_count"), 1);
    assert.equal(m.get('jitsu_dns_forward_latency_seconds_bucket{le="0.0025"}'), 0);
    assert.equal(m.get('jitsu_dns_forward_latency_seconds_bucket{le="0.005"}'), 1);
    // www: started over HTTP (instantly), then by a query (2 s in the backend).
    assert.equal(m.get('jitsu_vm_summons_total{vm="www",result="ready"}'), 2);
    assert.equal(m.get('jitsu_vm_start_duration_seconds_count{vm="www"}'), 2);
    assert.equal(m.get('jitsu_vm_start_duration_seconds_bucket{le="1",vm="www"}'), 1);
    assert.equal(m.get('jitsu_vm_start_duration_seconds_bucket{le="2.5",vm="www"}'), 2);
    assert.equal(m.get('jitsu_vm_ready_duration_seconds_sum{vm="www"}'), 2);
    assert.equal(m.get('jitsu_vm_stops_total{vm="www",mode="destroy"}'), 1);
    assert.equal(m.get('jitsu_vm_state{vm="www",state="ready"}'), 1);
    assert.equal(m.get('jitsu_vm_state{vm="www",state="off"}'), 0);
    assert.equal(m.get('jitsu_vm_requests_total{vm="www"}'), 1);
    assert.equal(m.get('jitsu_vm_starts_total{vm="www"}'), 2);
    assert.equal(m.get('jitsu_vm_last_request_timestamp_seconds{vm="www"}'), clock.now() / 1000 - 2);
  });

  it("a start that fails is counted as a failed summon", async () => {
    await summoner.stopVm("www");
    backend.hold.start = () => Promise.reject(new Error("no more memory"));
    await assert.rejects(Promise.resolve(summoner.request("www")), /no more memory/);
    delete backend.hold.start;
    const m = parsePrometheus((await call(port, "GET", "/metrics")).body);
    assert.equal(m.get('jitsu_vm_summons_total{vm="www",result="failed"}'), 1);
    assert.equal(m.get('jitsu_vm_summons_total{vm="www",result="ready"}'), 2);
    assert.equal(m.get('jitsu_vm_stops_total{vm="www",mode="destroy"}'), 2);
    assert.equal(m.get('jitsu_vm_state{vm="www",state="failed"}'), 1);
    const status = JSON.parse((await call(port, "GET", "/status")).body) as { vms: { lastError: string }[] };
    assert.match(status.vms[0]!.lastError, /no more memory/);
  });
});

describe("StatusServer without a token", () => {
  it("refuses admin endpoints as disabled, and /healthz says when shutting down", async (t) => {
    const clock = new ManualClock();
    const backend = new TestBackend();
    const summoner = await Summoner.create(
      summonerOptions({
        backend,
        specs: [spec("name=www,dns=www.example.org,ip=10.0.0.1")],
        clock,
      }),
    );
    t.after(() => summoner.close());
    const metrics = new JitsuMetrics({ summoner, counters: null, clock, processMetrics: false });
    const server = new StatusServer({ summoner, metrics, log: silentLogger() });
    await server.listen("127.0.0.1", 0);
    t.after(() => server.close());
    const port = server.address().port;
    for (const auth of [{}, { authorization: "Bearer anything" }] as Record<string, string>[]) {
      const res = await call(port, "POST", "/vms/www/start", auth);
      assert.equal(res.status, 403);
      assert.match(
        (JSON.parse(res.body) as { error: string }).error,
        /disabled; start jitsu with --http-token/,
      );
    }
    assert.ok(!backend.ops().includes("start:www"));
    server.markShuttingDown();
    const health = await call(port, "GET", "/healthz");
    assert.equal(health.status, 503);
  });
});

describe("StatusServer and admission control", () => {
  it("shows the limits, the queue, VMs up and evictions in /status and /metrics, and refusals by reason", async (t) => {
    const clock = new ManualClock();
    const backend = new TestBackend();
    const counters = new DnsCounters();
    const summoner = await Summoner.create(
      summonerOptions({
        backend,
        specs: [1, 2, 3].map((i) => spec(`name=v${i},dns=v${i}.example.org,ip=10.0.0.${i}`)),
        clock,
        ttlSeconds: 1,
        maxStarting: 1,
        maxRunning: 2,
        summonRate: 5,
      }),
    );
    t.after(() => summoner.close());
    const metrics = new JitsuMetrics({ summoner, counters, clock, processMetrics: false });
    const server = new StatusServer({ summoner, metrics, log: silentLogger() });
    await server.listen("127.0.0.1", 0);
    t.after(() => server.close());
    const port = server.address().port;
    const read = async () => ({
      status: (JSON.parse((await call(port, "GET", "/status")).body) as { admission: unknown }).admission,
      metrics: parsePrometheus((await call(port, "GET", "/metrics")).body),
    });

    const gate = deferred();
    backend.hold.start = () => gate.promise;
    const v1 = summoner.request("v1");
    const v2 = summoner.request("v2");
    counters.countRefused(REFUSED["summon-rate"]);
    await clock.advance(0);
    let now = await read();
    assert.deepEqual(now.status, {
      maxStarting: 1,
      maxRunning: 2,
      summonRate: 5,
      starting: 1,
      up: 1,
      queued: ["v2"],
      evictions: 0,
      refused: 0,
    });
    assert.equal(now.metrics.get("jitsu_summons_queued"), 1);
    assert.equal(now.metrics.get("jitsu_summons_starting"), 1);
    assert.equal(now.metrics.get("jitsu_vms_up"), 1);
    assert.equal(now.metrics.get("jitsu_evictions_total"), 0);
    assert.equal(now.metrics.get('jitsu_dns_refused_total{reason="summon-rate"}'), 1);

    gate.resolve();
    delete backend.hold.start;
    await Promise.all([v1, v2]);
    await clock.advance(1500); // both past their TTL of 1 s: v3 evicts the least recently queried
    await summoner.request("v3");
    now = await read();
    assert.equal(now.metrics.get("jitsu_evictions_total"), 1);
    assert.equal(now.metrics.get("jitsu_vms_up"), 2);
    assert.equal(now.metrics.get("jitsu_summons_queued"), 0);
    assert.equal((now.status as { evictions: number }).evictions, 1);
  });
});

describe("parseHttpAddress", () => {
  it("takes ADDR:PORT and [v6]:PORT; anything else names --http", () => {
    assert.deepEqual(parseHttpAddress("127.0.0.1:9053"), { host: "127.0.0.1", port: 9053 });
    assert.deepEqual(parseHttpAddress("[::1]:0"), { host: "::1", port: 0 });
    for (const bad of ["127.0.0.1", "localhost:80", "::1:80", "127.0.0.1:99999", "[::1]"]) {
      assert.throws(() => parseHttpAddress(bad), /option '--http'/, bad);
    }
  });
});
