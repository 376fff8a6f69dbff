/**
 * Connections are activity (src/activator, and backends that count them): the
 * reaper never stops a VM with an open connection, and its 2 x TTL clock
 * starts when the last one closes; a group member's connections keep its
 * whole group up, and admission never evicts a VM with open connections.
 * Injected clock, in-memory backend.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { VmRef } from "../../src/backends/contract.js";
import { ManualClock } from "../../src/clock/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { TestBackend, spec, track } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

async function setup(
  backend = new TestBackend(),
): Promise<{ clock: ManualClock; backend: TestBackend; summoner: Summoner }> {
  const clock = new ManualClock();
  const summoner = await Summoner.create(
    summonerOptions({
      backend,
      specs: [spec("dns=www.example.org,ip=10.0.0.1,name=www")],
      clock,
      ttlSeconds: 1,
      reaperIntervalMs: 100,
    }),
  );
  return { clock, backend, summoner };
}

const www = (s: Summoner) => s.status().find((vm) => vm.label === "www")!;

describe("Summoner: connections keep a VM up", () => {
  it("an open connection keeps the VM up past 2 x TTL; it stops 2 x TTL after the last one closes", async () => {
    const { clock, backend, summoner } = await setup();
    await summoner.request("www");
    summoner.connectionOpened("www");
    summoner.connectionOpened("www");
    await clock.advance(4000); // 4 x TTL, no query
    assert.equal(www(summoner).state, "ready");
    assert.equal(www(summoner).openConnections, 2);
    summoner.connectionClosed("www");
    await clock.advance(3000);
    assert.equal(www(summoner).state, "ready", "one is still open");
    summoner.connectionClosed("www");
    const closedAt = clock.now();
    assert.equal(www(summoner).lastConnection, closedAt);
    await clock.advance(1900);
    assert.equal(www(summoner).state, "ready", "not yet 2 x TTL after the last close");
    await clock.advance(200);
    assert.equal(www(summoner).state, "off");
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy"]);
    // Closes beyond the opens, and unknown labels, change nothing.
    summoner.connectionClosed("www");
    summoner.connectionOpened("gone");
    assert.equal(www(summoner).openConnections, 0);
    await summoner.close();
  });

  it("a backend that counts established connections keeps an idle VM up while it reports some", async () => {
    class Counting extends TestBackend {
      open = 1;
      asked = 0;
      async connections(_vm: VmRef): Promise<number> {
        this.asked++;
        return this.open;
      }
    }
    const backend = new Counting();
    const { clock, summoner } = await setup(backend);
    await summoner.request("www");
    await clock.advance(5000);
    assert.equal(www(summoner).state, "ready");
    assert.ok(backend.asked > 0, "the reaper asked the backend");
    backend.open = 0;
    const lastSeen = www(summoner).lastConnection!;
    await clock.advance(1500);
    assert.equal(www(summoner).state, "ready", "2 x TTL counts from the last time some were seen");
    await clock.advance(1000);
    assert.equal(www(summoner).state, "off");
    assert.ok(clock.now() - lastSeen >= 2000);
    await summoner.close();
  });

  it("a failing count is logged and the idle VM is stopped as before", async () => {
    class Broken extends TestBackend {
      async connections(_vm: VmRef): Promise<number> {
        throw new Error("no /proc");
      }
    }
    const { clock, summoner } = await setup(new Broken());
    await summoner.request("www");
    await clock.advance(2500);
    assert.equal(www(summoner).state, "off");
    await summoner.close();
  });
});

describe("Summoner: connections of a group member, and eviction", () => {
  const DB = "dns=db.shop.test,ip=10.0.0.1,name=db,group=shop";
  const WEB = "dns=web.shop.test,ip=10.0.0.2,name=web,group=shop,after=db";
  const SOLO = "dns=solo.test,ip=10.0.0.9,name=solo";
  const state = (s: Summoner, label: string) => s.status().find((vm) => vm.label === label)?.state;

  it("an open connection to one member keeps the whole group up; it stops 2 x TTL after the close", async () => {
    const clock = new ManualClock();
    const backend = new TestBackend();
    const summoner = await Summoner.create(
      summonerOptions({ backend, clock, specs: [DB, WEB].map(spec), ttlSeconds: 1, reaperIntervalMs: 100 }),
    );
    await summoner.request("web");
    summoner.connectionOpened("db"); // only db has a connection; web is never queried again
    await clock.advance(5000);
    assert.equal(state(summoner, "web"), "ready", "the group is in use through db");
    assert.equal(state(summoner, "db"), "ready");
    summoner.connectionClosed("db");
    await clock.advance(1900);
    assert.equal(state(summoner, "web"), "ready");
    await clock.advance(300);
    assert.equal(state(summoner, "web"), "off");
    assert.equal(state(summoner, "db"), "off");
    await summoner.close();
  });

  it("a backend's established connections to one member keep the group up", async () => {
    class Counting extends TestBackend {
      open = new Map<string, number>([["db", 1]]);
      async connections(vm: VmRef): Promise<number> {
        return this.open.get(vm.label) ?? 0;
      }
    }
    const clock = new ManualClock();
    const backend = new Counting();
    const summoner = await Summoner.create(
      summonerOptions({ backend, clock, specs: [DB, WEB].map(spec), ttlSeconds: 1, reaperIntervalMs: 100 }),
    );
    await summoner.request("web");
    await clock.advance(5000);
    assert.equal(state(summoner, "web"), "ready", "db's direct connection keeps web up too");
    backend.open.set("db", 0);
    await clock.advance(2500);
    assert.equal(state(summoner, "web"), "off");
    await summoner.close();
  });

  it("--max-running never evicts a VM with open connections, however long since its last query", async () => {
    const clock = new ManualClock();
    const backend = new TestBackend();
    const summoner = await Summoner.create(
      summonerOptions({
        backend,
        clock,
        specs: ["dns=www.example.org,ip=10.0.0.1,name=www", SOLO].map(spec),
        ttlSeconds: 60,
        reaperIntervalMs: 3_600_000,
        maxRunning: 1,
        startTimeoutSeconds: 0,
      }),
    );
    await summoner.request("www");
    summoner.connectionOpened("www");
    await clock.advance(200_000); // idle by queries for more than 3 x TTL
    const solo = track(summoner.request("solo") as Promise<unknown>);
    await clock.advance(0);
    assert.equal(solo.settled, false, "solo waits: www is in use");
    assert.equal(state(summoner, "www"), "ready");
    summoner.connectionClosed("www");
    await clock.advance(61_000); // its TTL after the close: now it may make room
    assert.deepEqual(solo.value, ["10.0.0.9"]);
    assert.equal(state(summoner, "www"), "off");
    await summoner.close();
  });
});
