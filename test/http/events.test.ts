/**
 * GET /events over real HTTP on loopback, read by a plain HTTP client (no
 * EventSource), in front of the real Summoner (the summoner tests' in-memory
 * backend, a manual clock): the events of a summon, an admin stop, an idle
 * stop, a crash and an eviction in order; Last-Event-ID; the keep-alive
 * comment; a client that does not read is dropped; the stream limit.
 */
import { strict as assert } from "node:assert";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { DnsCounters } from "../../src/dns/index.js";
import { EventBus } from "../../src/events/index.js";
import { JitsuMetrics, StatsHistory, StatusServer } from "../../src/http/index.js";
import { silentLogger } from "../../src/log/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { TestBackend, deferred, spec } from "../doubles/test-backend.js";
import { httpCall } from "../support/http.js";
import { waitFor } from "../support/index.js";
import { describeEvents, openEvents, type SseClient } from "../support/sse.js";
import { summonerOptions } from "../support/summoner.js";

const TOKEN = "events-token";
const auth = { authorization: `Bearer ${TOKEN}` };

describe("GET /events", () => {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const counters = new DnsCounters();
  const bus = new EventBus(() => clock.now());
  let summoner: Summoner;
  let server: StatusServer;
  let history: StatsHistory;
  let port: number;
  const clients: SseClient[] = [];

  before(async () => {
    summoner = await Summoner.create(
      summonerOptions({
        backend,
        clock,
        events: bus,
        maxRunning: 2,
        specs: [
          spec("name=www,dns=www.example.org,ip=10.0.0.1"),
          spec("name=db,dns=db.example.org,ip=10.0.0.2"),
          spec("name=ci,dns=ci.example.org,ip=10.0.0.3"),
        ],
      }),
    );
    history = new StatsHistory({ bus, counters, summoner, clock });
    server = new StatusServer({
      summoner,
      metrics: new JitsuMetrics({ summoner, counters, clock, processMetrics: false }),
      log: silentLogger(),
      token: TOKEN,
      events: bus,
      history,
      counters,
      eventStream: { maxClients: 3, maxBufferBytes: 64 * 1024, keepAliveMs: 200 },
    });
    await server.listen("127.0.0.1", 0);
    port = server.address().port;
  });

  after(async () => {
    for (const c of clients) c.close();
    history.close();
    await server.close();
    await summoner.close();
  });

  async function open(headers: Record<string, string> = {}, path = "/events"): Promise<SseClient> {
    const c = await openEvents(port, { headers, path });
    clients.push(c);
    return c;
  }

  it("streams a summon and an admin stop, in order, as JSON objects with a type, id and time", async () => {
    const sse = await open();
    assert.equal(sse.status, 200);
    assert.match(String(sse.headers["content-type"]), /^text\/event-stream/);
    assert.equal(sse.headers["cache-control"], "no-store");
    await waitFor(() => server.eventClients === 1, 2000, "the stream to be open");

    // A summon whose backend start is held: "starting" is seen before "ready".
    const held = deferred();
    backend.hold.start = () => held.promise;
    const answer = summoner.request("www", "127.0.0.1");
    await sse.waitFor((e) => e.length >= 1, 5000, "starting");
    assert.deepEqual(describeEvents(sse.events), ["vm.state www off>starting"]);
    await clock.advance(1200);
    held.resolve();
    delete backend.hold.start;
    await answer;
    await sse.waitFor((e) => e.some((x) => x.data.type === "vm.started"), 5000, "vm.started");

    const stop = await httpCall(port, "POST", "/vms/www/stop", auth);
    assert.equal(stop.status, 200, stop.body);
    await sse.waitFor((e) => e.some((x) => x.data.type === "vm.stopped"), 5000, "vm.stopped");
    assert.deepEqual(describeEvents(sse.events), [
      "vm.state www off>starting",
      "vm.state www starting>ready",
      "vm.started www",
      "vm.state www ready>stopping",
      "vm.state www stopping>off",
      "vm.stopped www admin",
    ]);
    const started = sse.events[2]!.data;
    assert.equal(started.how, "start");
    assert.equal(typeof started.durationMs, "number");
    const stopped = sse.events[5]!.data;
    assert.equal(stopped.mode, "destroy");
    assert.equal(stopped.to, "off");
    // ids count up by one, and each `id:` line is the event's own id.
    const ids = sse.events.map((e) => Number(e.id));
    assert.deepEqual(
      ids,
      ids.map((_, i) => ids[0]! + i),
    );
    assert.deepEqual(
      sse.events.map((e) => e.data.id),
      ids,
    );
    for (const e of sse.events) assert.ok(!Number.isNaN(Date.parse(String(e.data.time))));
    sse.close();
    await waitFor(() => server.eventClients === 0, 3000, "the stream to close");
  });

  it("reports an idle stop, an eviction and a crash with their reasons", async () => {
    const sse = await open();
    await waitFor(() => server.eventClients >= 1, 2000, "the stream");
    const from = bus.next;
    const mine = (): string[] =>
      describeEvents(
        sse.events.filter((e) => Number(e.id) >= from),
        ["vm.stopped", "vm.failed"],
      );

    // Idle: ready, then 2 x TTL (120 s) and a reaper pass.
    await summoner.request("db", "127.0.0.1");
    await clock.advance(125_000);
    await summoner.tick();
    await sse.waitFor(() => mine().includes("vm.stopped db idle"), 5000, "the idle stop");

    // A crash the backend reports.
    await summoner.request("db", "127.0.0.1");
    backend.states.set("db", "crashed");
    backend.emit({ vm: { label: "db", ref: "ref-db" }, state: "crashed", reason: "oom" });
    await sse.waitFor(() => mine().includes("vm.failed db run"), 5000, "the crash");
    const crash = sse.events.find((e) => e.data.type === "vm.failed" && e.data.vm === "db")!.data;
    assert.match(String(crash.error), /crash/);

    // Eviction (--max-running 2): www and db up and past their TTL, ci summoned.
    await summoner.request("www", "127.0.0.1");
    await summoner.request("db", "127.0.0.1");
    await clock.advance(61_000);
    const ci = summoner.request("ci", "127.0.0.1");
    await clock.advance(10);
    await ci;
    await sse.waitFor(() => mine().some((l) => /vm\.stopped (www|db) eviction/.test(l)), 5000, "an eviction");
    sse.close();
  });

  it("replays what a client missed after Last-Event-ID, and says so when it is gone", async () => {
    const last = bus.next - 1;
    const first = await open({ "last-event-id": String(last - 3) });
    await first.waitFor((e) => e.length >= 3, 5000, "the replay");
    assert.deepEqual(
      first.events.map((e) => Number(e.id)),
      [last - 2, last - 1, last],
    );
    first.close();
    // ?lastEventId= does the same (a page reconnecting on its own).
    const byQuery = await open({}, `/events?lastEventId=${last - 1}`);
    await byQuery.waitFor((e) => e.length >= 1, 5000, "the replay");
    assert.deepEqual(
      byQuery.events.map((e) => Number(e.id)),
      [last],
    );
    byQuery.close();
    const gone = await open({ "last-event-id": "99999999" });
    await gone.waitFor((e) => e.length >= 1, 5000, "stream.reset");
    assert.equal(gone.events[0]!.data.type, "stream.reset");
    gone.close();
    await waitFor(() => server.eventClients === 0, 3000, "the streams to close");
  });

  it("filters by type (?types=) and sends a keep-alive comment while nothing happens", async () => {
    const sse = await open({}, "/events?types=config");
    await sse.waitFor(() => sse.comments.includes("keep-alive"), 3000, "a keep-alive comment");
    bus.emit({ type: "stream.reset", reason: "not for this client" });
    bus.emit({
      type: "config.reloaded",
      ok: true,
      file: "/etc/jitsu.yaml",
      vms: 3,
      added: 0,
      changed: 1,
      removed: 0,
      error: null,
    });
    await sse.waitFor((e) => e.length >= 1, 5000, "config.reloaded");
    assert.deepEqual(describeEvents(sse.events), ["config.reloaded"]);
    sse.close();
  });

  it("drops a client that does not read instead of buffering for it, and limits the streams", async () => {
    await waitFor(() => server.eventClients === 0, 3000, "no stream left open");
    // A client that sends the request and then never reads: the kernel buffers fill, then jitsu's.
    const socket = connect(port, "127.0.0.1");
    socket.pause();
    await new Promise<void>((resolve) => socket.once("connect", resolve));
    socket.write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n");
    await waitFor(() => server.eventClients === 1, 3000, "the slow stream");
    const closed = new Promise<void>((resolve) => socket.once("close", resolve));
    const big = "x".repeat(4000);
    for (let i = 0; i < 2000 && server.eventClients === 1; i++) {
      bus.emit({ type: "stream.reset", reason: big });
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => server.eventClients === 0, 5000, "the slow client to be dropped");
    socket.resume(); // let it see the end
    socket.on("data", () => undefined);
    await closed;

    // At most 3 streams (this test's limit): the 4th is told to come back later.
    const a = await open();
    const b = await open();
    const c = await open();
    await waitFor(() => server.eventClients === 3, 3000, "three streams");
    const refused = await httpCall(port, "GET", "/events");
    assert.equal(refused.status, 503);
    assert.equal(refused.headers["retry-after"], "5");
    assert.match(JSON.parse(refused.body).error, /too many \/events streams/);
    // /status still answers while the streams are open.
    assert.equal((await httpCall(port, "GET", "/status")).status, 200);
    a.close();
    b.close();
    c.close();
  });

  it("/history and /status carry what the page draws", async () => {
    counters.countType(1);
    counters.countType(1);
    history.sample();
    const res = await httpCall(port, "GET", "/history");
    assert.equal(res.status, 200);
    const body = JSON.parse(res.body) as {
      queriesPerSecond: [number, number][];
      starts: [number, number, string][];
    };
    assert.ok(body.queriesPerSecond.length >= 1);
    assert.ok(
      body.starts.some(([, ms, vm]) => vm === "www" && ms >= 0),
      JSON.stringify(body.starts),
    );
    const status = JSON.parse((await httpCall(port, "GET", "/status?compact")).body) as {
      admin: boolean;
      lastEventId: number;
      vms: {
        label: string;
        backend: string;
        host: null;
        stateSince: string;
        idleStopAt: string | null;
        state: string;
      }[];
      dns: { counters: { queries: number } };
    };
    assert.equal(status.admin, true);
    assert.equal(status.lastEventId, bus.next - 1);
    assert.equal(status.dns.counters.queries, 2);
    for (const vm of status.vms) {
      assert.equal(vm.backend, "test");
      assert.equal(vm.host, null);
      assert.ok(!Number.isNaN(Date.parse(vm.stateSince)));
      assert.equal(vm.idleStopAt === null, vm.state !== "ready");
    }
  });
});
