/**
 * The summoner's shared part (src/summoner/shared.ts, --etcd) through the real
 * Summoner, with a manual clock, the in-memory test backend and an in-memory
 * SharedState standing in for etcd (test/e2e/etcd.test.ts runs the real one):
 * only the elected reaper stops idle VMs, another instance's queries keep a VM
 * (and every member of its group) up, the start lock is taken before a start
 * and released after, and /status's shared view is the store's.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import type { SharedState, SharedStatus, StartLock } from "../../src/store/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { TestBackend, spec } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

/** Another instance's view, set by the test. */
class FakeShared implements SharedState {
  reaper = true;
  isConnected = true;
  readonly remote = new Map<string, number>();
  readonly locks: string[] = [];
  connected(): boolean {
    return this.isConnected;
  }
  lastRequest(label: string): number | null {
    return this.remote.get(label) ?? null;
  }
  isReaper(): boolean {
    return this.reaper && this.isConnected;
  }
  lockStart(label: string): Promise<StartLock | null> {
    this.locks.push(`lock:${label}`);
    return Promise.resolve({
      release: () => {
        this.locks.push(`release:${label}`);
        return Promise.resolve();
      },
    });
  }
  onRemoteState(): void {}
  describe(): SharedStatus {
    return {
      store: "etcd",
      endpoints: ["http://127.0.0.1:2379"],
      prefix: "/jitsu/",
      instance: "test:1:abc",
      connected: this.isConnected,
      reaper: this.isReaper(),
      lastAnswer: 0,
    };
  }
}

const WWW = "dns=www.test,ip=10.0.0.1,name=www";
const OTHER = "dns=other.test,ip=10.0.0.9,name=other";
const DB = "dns=db.shop.test,ip=10.0.0.2,name=db,group=shop";
const WEB = "dns=web.shop.test,ip=10.0.0.3,name=web,group=shop,after=db";

async function setup(configs: string[], maxRunning?: number) {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const shared = new FakeShared();
  const summoner = await Summoner.create(
    summonerOptions({
      backend,
      clock,
      specs: configs.map(spec),
      shared,
      ...(maxRunning ? { maxRunning } : {}),
    }),
  );
  return { clock, backend, shared, summoner };
}

function stops(backend: TestBackend): string[] {
  return backend.ops().filter((op) => op.startsWith("stop:"));
}

describe("summoner with shared state (--etcd)", () => {
  it("takes the start lock before the start and releases it once the VM is ready", async () => {
    const { clock, backend, shared, summoner } = await setup([WWW]);
    await summoner.request("www");
    await clock.advance(0);
    assert.deepEqual(shared.locks, ["lock:www", "release:www"]);
    assert.deepEqual(
      backend.ops().filter((op) => op.startsWith("start:")),
      ["start:www"],
    );
    await summoner.close();
  });

  it("stops idle VMs only on the elected reaper, and only while it sees the others", async () => {
    const { clock, backend, shared, summoner } = await setup([WWW]);
    await summoner.request("www");
    shared.reaper = false;
    await clock.advance(120_000);
    await summoner.tick();
    assert.deepEqual(stops(backend), []);
    shared.reaper = true;
    shared.isConnected = false;
    await summoner.tick();
    assert.deepEqual(stops(backend), []);
    shared.isConnected = true;
    await summoner.tick();
    assert.deepEqual(stops(backend), ["stop:www:destroy"]);
    await summoner.close();
  });

  it("another instance's queries keep a VM up; 2 x TTL after the last of them it stops", async () => {
    const { clock, backend, shared, summoner } = await setup([WWW]);
    await summoner.request("www");
    await clock.advance(100_000);
    shared.remote.set("www", clock.now());
    await clock.advance(100_000);
    await summoner.tick();
    assert.deepEqual(stops(backend), []);
    await clock.advance(20_000);
    await summoner.tick();
    assert.deepEqual(stops(backend), ["stop:www:destroy"]);
    await summoner.close();
  });

  it("another instance's query for one group member keeps the whole group up", async () => {
    const { clock, backend, shared, summoner } = await setup([DB, WEB]);
    await summoner.request("web");
    await clock.advance(100_000);
    shared.remote.set("web", clock.now()); // only web, only elsewhere
    await clock.advance(100_000); // db: 200 s idle here and everywhere
    await summoner.tick();
    assert.deepEqual(stops(backend), []);
    await clock.advance(20_000);
    await summoner.tick();
    assert.deepEqual(stops(backend).sort(), ["stop:db:destroy", "stop:web:destroy"]);
    await summoner.close();
  });

  it("--max-running never evicts a VM another instance was asked for within its TTL", async () => {
    const { clock, backend, shared, summoner } = await setup([WWW, OTHER], 1);
    await summoner.request("www");
    await clock.advance(100_000); // www: 100 s since its query here, past its 60 s TTL
    shared.remote.set("www", clock.now() - 50_000); // but queried 50 s ago elsewhere
    const other = summoner.request("other") as Promise<readonly string[]>;
    await clock.advance(0);
    assert.deepEqual(stops(backend), []);
    await clock.advance(11_000); // 61 s since the query elsewhere: evicted now
    assert.deepEqual(stops(backend), ["stop:www:destroy"]);
    assert.deepEqual(await other, ["10.0.0.9"]);
    await summoner.close();
  });

  it("gives /status its shared view (null alone)", async () => {
    const { summoner } = await setup([WWW]);
    assert.equal(summoner.sharedStatus()?.instance, "test:1:abc");
    assert.equal(summoner.sharedStatus()?.reaper, true);
    await summoner.close();
    const alone = await Summoner.create(
      summonerOptions({
        backend: new TestBackend(),
        clock: new ManualClock(),
        specs: [spec(WWW)],
      }),
    );
    assert.equal(alone.sharedStatus(), null);
    await alone.close();
  });
});
