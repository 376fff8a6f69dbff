/**
 * Groups (src/summoner/groups.ts) through the real Summoner, with a manual
 * clock and the in-memory test backend: start order with after=, parallel
 * starts, the answer waiting for every member, group activity, the idle stop
 * together (in reverse after= order with shutdown), a member failing to
 * start, admission, reload, admin start/stop, --workers accounting and exit.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { ConfigError, BackendError } from "../../src/errors/index.js";
import { createLogger } from "../../src/log/index.js";
import { Summoner, type SummonerOptions } from "../../src/summoner/index.js";
import { TestBackend, deferred, spec, track, type Deferred } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

const DB = "dns=db.shop.test,ip=10.0.0.1,name=db,group=shop";
const WORKER = "dns=worker.shop.test,ip=10.0.0.2,name=worker,group=shop";
const WEB = "dns=web.shop.test,ip=10.0.0.3,name=web,group=shop,after=db";
const SOLO = "dns=solo.test,ip=10.0.0.9,name=solo";
const SHOP = [DB, WORKER, WEB];

async function setup(configs: string[] = SHOP, overrides: Partial<SummonerOptions> = {}) {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const lines: string[] = [];
  const log = createLogger({
    level: "debug",
    format: "json",
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split("\n"))
          if (l !== "") lines.push((JSON.parse(l) as { msg: string }).msg);
        cb();
      },
    }),
  });
  const summoner = await Summoner.create(
    summonerOptions({ backend, clock, log, specs: configs.map(spec), ...overrides }),
  );
  return { clock, backend, summoner, lines };
}

/** Each start (per VM label) waits for the test to release it. */
function gateStarts(backend: TestBackend): Map<string, Deferred> {
  const gates = new Map<string, Deferred>();
  backend.hold.start = (label) => {
    const gate = deferred();
    gates.set(label, gate);
    return gate.promise;
  };
  return gates;
}

function starts(backend: TestBackend): string[] {
  return backend.ops().filter((op) => op.startsWith("start:"));
}

function stops(backend: TestBackend): string[] {
  return backend.ops().filter((op) => op.startsWith("stop:"));
}

function state(s: Summoner, label: string): string | undefined {
  return s.status().find((r) => r.label === label)?.state;
}

function group(s: Summoner, name = "shop") {
  return s.groupStatus().find((g) => g.name === name);
}

async function allUp(s: Summoner): Promise<void> {
  await s.request("web");
  assert.equal(group(s)?.state, "ready");
}

describe("groups: starting", () => {
  it("starts every member in parallel except after=, and answers when all are ready", async () => {
    const { clock, backend, summoner, lines } = await setup();
    const gates = gateStarts(backend);
    const answer = track(summoner.request("web") as Promise<readonly string[]>);
    await clock.advance(0);
    // db and worker at once; web waits for db to be ready.
    assert.deepEqual(starts(backend), ["start:db", "start:worker"]);
    assert.equal(group(summoner)?.state, "starting");
    gates.get("db")!.resolve();
    await clock.advance(0);
    assert.equal(state(summoner, "db"), "ready");
    assert.deepEqual(starts(backend), ["start:db", "start:worker", "start:web"]);
    gates.get("web")!.resolve();
    await clock.advance(0);
    assert.equal(state(summoner, "web"), "ready");
    assert.equal(answer.settled, false, "answered before worker was ready");
    gates.get("worker")!.resolve();
    await clock.advance(0);
    assert.deepEqual(answer.value, ["10.0.0.3"]);
    assert.equal(group(summoner)?.state, "ready");
    assert.ok(lines.some((l) => /^Group 'shop' is ready after \d+ ms \(db, worker, web\)$/.test(l)));
    // Now every member is answered from memory, with no backend call.
    const calls = backend.calls.length;
    assert.deepEqual(summoner.request("db"), ["10.0.0.1"]);
    assert.deepEqual(summoner.request("worker"), ["10.0.0.2"]);
    assert.equal(backend.calls.length, calls);
  });

  it("joins concurrent queries for different members into one start of each", async () => {
    const { clock, backend, summoner } = await setup();
    const gates = gateStarts(backend);
    const answers = ["web", "db", "worker", "web"].map((l) => track(summoner.request(l) as Promise<unknown>));
    await clock.advance(0);
    gates.get("db")!.resolve();
    gates.get("worker")!.resolve();
    await clock.advance(0);
    gates.get("web")!.resolve();
    await clock.advance(0);
    assert.deepEqual(starts(backend).sort(), ["start:db", "start:web", "start:worker"]);
    assert.deepEqual(
      answers.map((a) => a.value),
      [["10.0.0.3"], ["10.0.0.1"], ["10.0.0.2"], ["10.0.0.3"]],
    );
  });

  it("a member that went down is started again by a query for any member; the others are not", async () => {
    const { clock, backend, summoner } = await setup();
    await allUp(summoner);
    backend.states.set("db", "off");
    backend.emit({ vm: { label: "db", ref: "ref-db" }, state: "off", reason: "exited" });
    assert.equal(group(summoner)?.state, "partial");
    // web is ready but its group is not: not answered from memory, not in the workers' copy.
    assert.equal(summoner.requestIfReady("web"), null);
    assert.equal(summoner.readyAddresses().has("web"), false);
    const answer = summoner.request("web");
    assert.ok(answer instanceof Promise);
    assert.deepEqual(await answer, ["10.0.0.3"]);
    assert.deepEqual(starts(backend), ["start:db", "start:worker", "start:web", "start:db"]);
    await clock.advance(0);
    assert.equal(summoner.readyAddresses().get("web")?.[0], "10.0.0.3");
  });
});

describe("groups: a member that fails to start", () => {
  it("fails the query, leaves the members up as they are, and logs which one and why", async () => {
    const { clock, backend, summoner, lines } = await setup();
    backend.hold.start = (label) =>
      label === "db"
        ? Promise.reject(new BackendError("test", "no such image", { vm: "db" }))
        : Promise.resolve();
    await assert.rejects(summoner.request("web") as Promise<unknown>, /no such image/);
    await clock.advance(0);
    // worker started in parallel and stays up; web (after db) was never started.
    assert.deepEqual(starts(backend), ["start:db", "start:worker"]);
    assert.equal(state(summoner, "worker"), "ready");
    assert.equal(state(summoner, "db"), "failed");
    assert.equal(state(summoner, "web"), "off");
    const line = lines.find((l) => l.startsWith("Group 'shop' is not ready"));
    assert.match(
      line ?? "",
      /^Group 'shop' is not ready: VM 'db' could not be started: .*no such image.*; worker is (ready|starting); web was not started \(it starts after db\) \(the members up stay up\)$/,
    );
    const g = group(summoner)!;
    assert.equal(g.state, "failed");
    assert.match(g.lastError ?? "", /VM 'db' could not be started: .*no such image/);
    assert.match(summoner.status().find((v) => v.label === "db")!.lastError ?? "", /no such image/);

    // Within db's back-off a query for any member fails fast, starting nothing.
    await assert.rejects(summoner.request("worker") as Promise<unknown>, /no such image/);
    assert.equal(starts(backend).length, 2);

    // After it, only what is not up starts: db, then web; worker is not restarted.
    backend.hold.start = () => Promise.resolve();
    await clock.advance(1000);
    assert.deepEqual(await summoner.request("worker"), ["10.0.0.2"]);
    assert.deepEqual(starts(backend), ["start:db", "start:worker", "start:db", "start:web"]);
    assert.equal(group(summoner)?.lastError, null);
  });

  it("a start timeout of a member answers the query with that error", async () => {
    const { clock, backend, summoner } = await setup(SHOP, { startTimeoutSeconds: 5 });
    const gates = gateStarts(backend);
    const answer = track(summoner.request("db") as Promise<unknown>);
    await clock.advance(0);
    gates.get("db")!.resolve();
    await clock.advance(0);
    gates.get("web")!.resolve();
    await clock.advance(5000);
    assert.ok(answer.settled);
    assert.match(String(answer.error), /VM 'worker' was not ready after 5 s/);
    assert.equal(state(summoner, "db"), "ready");
    assert.equal(state(summoner, "web"), "ready");
  });
});

describe("groups: --start-timeout over an after= chain", () => {
  it("answers within --start-timeout even when the members' starts follow one another", async () => {
    const { clock, backend, summoner, lines } = await setup(SHOP, { startTimeoutSeconds: 5 });
    const gates = gateStarts(backend);
    const answer = track(summoner.request("web") as Promise<unknown>);
    await clock.advance(0);
    gates.get("worker")!.resolve();
    await clock.advance(4000);
    gates.get("db")!.resolve(); // ready after 4 s: web starts, with 5 s of its own
    await clock.advance(0);
    assert.deepEqual(starts(backend), ["start:db", "start:worker", "start:web"]);
    assert.equal(answer.settled, false);
    await clock.advance(1001);
    assert.ok(answer.settled);
    assert.match(
      String(answer.error),
      /VM 'web' was not ready after 5 s \(still waiting for group 'shop': db is ready; worker is ready; web is starting\)/,
    );
    assert.ok(lines.some((l) => l.startsWith("Group 'shop' is not ready: VM 'web' was not ready after 5 s")));
    // web's own start goes on, and the group is ready when it is.
    gates.get("web")!.resolve();
    await clock.advance(0);
    assert.equal(group(summoner)?.state, "ready");
  });
});

describe("groups: activity and the idle stop", () => {
  it("a query for any member keeps the whole group up; it stops together 2 x TTL after the last", async () => {
    const { clock, backend, summoner, lines } = await setup();
    await allUp(summoner);
    await clock.advance(100_000);
    summoner.request("worker"); // only worker is queried
    await clock.advance(30_000); // db and web: 130 s since their last query, the group 30 s
    await summoner.tick();
    assert.deepEqual(stops(backend), []);
    assert.equal(group(summoner)?.state, "ready");
    await clock.advance(90_000); // 120 s since the worker's query
    await summoner.tick();
    assert.deepEqual(stops(backend).sort(), ["stop:db:destroy", "stop:web:destroy", "stop:worker:destroy"]);
    assert.equal(group(summoner)?.state, "off");
    assert.ok(
      lines.some((l) => /^Stopping group 'shop' \(destroy\) after 120 s idle: db, worker, web$/.test(l)),
    );
    assert.ok(lines.includes("Stopping VM 'web' (destroy) with group 'shop' after 120 s idle"));
  });

  it("with -m shutdown, stops in reverse after= order: db only once web is down", async () => {
    const { clock, backend, summoner, lines } = await setup(SHOP, { stopMode: "shutdown" });
    await allUp(summoner);
    const held = new Map<string, Deferred>();
    backend.hold.stop = (label) => {
      const gate = deferred();
      held.set(label, gate);
      return gate.promise;
    };
    await clock.advance(120_000);
    const tick = summoner.tick();
    await clock.advance(0);
    assert.deepEqual(stops(backend).sort(), ["stop:web:shutdown", "stop:worker:shutdown"]);
    assert.equal(group(summoner)?.state, "stopping");
    assert.equal(summoner.requestIfReady("db"), null, "db answered while its group stops");
    // A query meanwhile waits for the stop to end, then starts the group again.
    const again = track(summoner.request("db") as Promise<unknown>);
    held.get("web")!.resolve();
    await clock.advance(0);
    assert.deepEqual(stops(backend).sort(), [
      "stop:db:shutdown",
      "stop:web:shutdown",
      "stop:worker:shutdown",
    ]);
    held.get("worker")!.resolve();
    held.get("db")!.resolve();
    await tick;
    assert.ok(
      lines.some((l) => l === "Stopping group 'shop' (shutdown) after 120 s idle: worker and web, then db"),
    );
    await clock.advance(0);
    assert.deepEqual(again.value, ["10.0.0.1"]);
    assert.deepEqual(starts(backend).slice(3).sort(), ["start:db", "start:web", "start:worker"]);
  });

  it("with -m destroy, stops every member at once", async () => {
    const { clock, backend, summoner } = await setup();
    await allUp(summoner);
    backend.hold.stop = () => new Promise(() => undefined); // never returns
    await clock.advance(120_000);
    void summoner.tick();
    await clock.advance(0);
    assert.deepEqual(stops(backend).sort(), ["stop:db:destroy", "stop:web:destroy", "stop:worker:destroy"]);
  });

  it("requests a --workers worker answered (noteRequests) are activity of the whole group", async () => {
    const { clock, backend, summoner } = await setup();
    await allUp(summoner);
    assert.deepEqual([...summoner.readyAddresses().keys()].sort(), ["db", "web", "worker"]);
    await clock.advance(100_000);
    summoner.noteRequests("worker", 3);
    await clock.advance(100_000);
    await summoner.tick();
    assert.deepEqual(stops(backend), []);
    // Reported after the group stopped: its clients hold an address, so it is summoned again.
    await clock.advance(20_000);
    await summoner.tick();
    assert.equal(group(summoner)?.state, "off");
    summoner.noteRequests("web", 1);
    await clock.advance(0);
    assert.equal(group(summoner)?.state, "ready");
    assert.equal(starts(backend).length, 6);
  });
});

describe("groups: admission", () => {
  it("--max-starting 1 starts the members one at a time without deadlock", async () => {
    const { clock, backend, summoner } = await setup(SHOP, { maxStarting: 1 });
    const gates = gateStarts(backend);
    const answer = track(summoner.request("web") as Promise<unknown>);
    await clock.advance(0);
    assert.deepEqual(starts(backend), ["start:db"]);
    assert.deepEqual(summoner.admissionStatus().queued, ["worker"]);
    gates.get("db")!.resolve();
    await clock.advance(0);
    // worker was queued first; web (whose after= is now ready) waits behind it.
    assert.deepEqual(starts(backend), ["start:db", "start:worker"]);
    assert.deepEqual(summoner.admissionStatus().queued, ["web"]);
    gates.get("worker")!.resolve();
    await clock.advance(0);
    gates.get("web")!.resolve();
    await clock.advance(0);
    assert.deepEqual(answer.value, ["10.0.0.3"]);
  });

  it("--max-running: a group larger than it is a configuration error", async () => {
    await assert.rejects(
      setup(SHOP, { maxRunning: 2 }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /group 'shop' has 3 members \(db, worker, web\) but --max-running is 2/.test(err.message),
    );
  });

  it("--max-running: evicts an idle VM for the group, and a group member only when its whole group is idle", async () => {
    const { clock, backend, summoner, lines } = await setup([...SHOP, SOLO], {
      maxRunning: 3,
      startTimeoutSeconds: 0,
    });
    await summoner.request("solo");
    await clock.advance(61_000);
    // The group needs three: solo, idle past its TTL, makes room.
    await allUp(summoner);
    assert.deepEqual(stops(backend), ["stop:solo:destroy"]);
    assert.ok(lines.some((l) => l.startsWith("Stopping VM 'solo' (destroy) to make room for VM")));
    // db was last queried long ago, but worker was queried now: nothing in the group is evictable.
    await clock.advance(61_000);
    summoner.request("worker");
    const solo = track(summoner.request("solo") as Promise<unknown>);
    await clock.advance(0);
    assert.deepEqual(stops(backend), ["stop:solo:destroy"]);
    assert.equal(solo.settled, false);
    // Once the group is idle past its TTL, one member makes room.
    await clock.advance(61_000);
    assert.equal(stops(backend).length, 2);
    assert.deepEqual(solo.value, ["10.0.0.9"]);
    assert.equal(group(summoner)?.state, "partial");
  });
});

describe("groups: admin start and stop", () => {
  it("a start of one member starts its group; a stop stops that member only", async () => {
    const { backend, summoner } = await setup();
    await summoner.startVm("worker");
    assert.equal(group(summoner)?.state, "ready");
    assert.equal(starts(backend).length, 3);
    await summoner.stopVm("db");
    assert.deepEqual(stops(backend), ["stop:db:destroy"]);
    assert.equal(state(summoner, "web"), "ready");
    assert.equal(group(summoner)?.state, "partial");
    // The next query for any member starts db again (and only db).
    assert.deepEqual(await summoner.request("web"), ["10.0.0.3"]);
    assert.deepEqual(starts(backend).slice(3), ["start:db"]);
  });
});

describe("groups: reload", () => {
  it("a member added starts at the next query; one removed is left as it is and leaves the group", async () => {
    const { backend, summoner } = await setup();
    await allUp(summoner);
    const CACHE = "dns=cache.shop.test,ip=10.0.0.4,name=cache,group=shop";
    const WEB2 = "dns=web.shop.test,ip=10.0.0.3,name=web,group=shop,after=db,after=cache";
    await summoner.setSpecs([DB, WORKER, WEB2, CACHE].map(spec));
    assert.equal(group(summoner)?.state, "partial");
    assert.deepEqual(group(summoner)?.members, ["db", "worker", "cache", "web"]);
    assert.deepEqual(summoner.status().find((v) => v.label === "web")?.after, ["db", "cache"]);
    assert.ok(summoner.request("web") instanceof Promise);
    assert.deepEqual(await summoner.request("web"), ["10.0.0.3"]);
    assert.deepEqual(starts(backend).slice(3), ["start:cache"]);
    // worker leaves the group: it stays ready, now on its own.
    await summoner.setSpecs([DB, "dns=worker.shop.test,ip=10.0.0.2,name=worker", WEB, CACHE].map(spec));
    assert.equal(summoner.status().find((v) => v.label === "worker")?.group, null);
    assert.deepEqual(group(summoner)?.members, ["db", "cache", "web"]);
    assert.equal(group(summoner)?.state, "ready");
    assert.equal(state(summoner, "worker"), "ready");
  });

  it("a bad group on reload is rejected and changes nothing", async () => {
    const { summoner } = await setup();
    await assert.rejects(
      summoner.setSpecs(
        [DB, WORKER, "dns=web.shop.test,ip=10.0.0.3,name=web,group=shop,after=dbb"].map(spec),
      ),
      /VM 'web', key 'after': no VM 'dbb' is configured; did you mean 'db'\?/,
    );
    assert.deepEqual(summoner.status().find((v) => v.label === "web")?.after, ["db"]);
  });
});

describe("groups: exit", () => {
  it("--stop-on-exit with shutdown stops web before db", async () => {
    const { backend, summoner } = await setup(SHOP, { stopMode: "shutdown" });
    await allUp(summoner);
    const order: string[] = [];
    backend.hold.stop = async (label) => {
      order.push(`${label}:begin`);
      await new Promise((r) => setImmediate(r));
      order.push(`${label}:end`);
    };
    await summoner.close({ stopVms: true, stopMode: "shutdown" });
    assert.ok(order.indexOf("web:end") < order.indexOf("db:begin"), order.join(" "));
    assert.equal(stops(backend).length, 3);
  });
});
