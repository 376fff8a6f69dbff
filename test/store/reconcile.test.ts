/**
 * --persistdb across a restart: the real Summoner with a SqliteStore on disk
 * and an injected clock; the backend is the summoner tests' in-memory double
 * (its state survives the "restart" as a hypervisor's would).
 */
import { strict as assert } from "node:assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { SqliteStore } from "../../src/store/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { TestBackend, spec } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

const SPECS = [
  spec("name=www,dns=www.example.org,ip=10.0.0.1"),
  spec("name=db,dns=db.example.org,ip=10.0.0.2"),
];

async function summoner(backend: TestBackend, clock: ManualClock, store: SqliteStore): Promise<Summoner> {
  return Summoner.create(
    summonerOptions({
      backend,
      specs: SPECS,
      clock,
      store,
      reaperIntervalMs: 5000,
    }),
  );
}

test("restart: counts and timers come back; a running VM is stopped 2 x TTL after its last request; a VM gone is off", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "jitsu-reconcile-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "state.db");
  const clock = new ManualClock();
  const t0 = clock.now();
  const backend = new TestBackend();

  // First jitsu: both VMs summoned; www asked for 3 times, db twice.
  const firstStore = SqliteStore.open(path);
  const first = await summoner(backend, clock, firstStore);
  await first.request("www");
  await first.request("db");
  await clock.advance(30_000);
  first.request("www");
  first.request("www");
  first.request("db");
  await first.close(); // flushes
  await firstStore.close();
  assert.equal(backend.states.get("www"), "running");

  // Behind our back while jitsu was down: db was shut down.
  backend.states.set("db", "off");
  await clock.advance(70_000); // restart at t0 + 100 s
  const store = SqliteStore.open(path);
  t.after(() => store.close());
  const second = await summoner(backend, clock, store);
  t.after(() => second.close());
  const byLabel = new Map(second.status().map((s) => [s.label, s]));
  assert.deepEqual(
    [byLabel.get("www")?.state, byLabel.get("www")?.totalRequests, byLabel.get("www")?.totalStarts],
    ["ready", 3, 1],
  );
  assert.equal(byLabel.get("www")?.lastRequest, t0 + 30_000);
  assert.equal(byLabel.get("www")?.startedAt, t0);
  assert.deepEqual([byLabel.get("db")?.state, byLabel.get("db")?.totalRequests], ["off", 2]);

  // The reaper stops www at last request + 2 x TTL = t0 + 150 s, not 2 x TTL after the restart.
  await clock.advance(45_000); // t0 + 145 s
  assert.equal(backend.states.get("www"), "running");
  await clock.advance(10_000); // t0 + 155 s
  assert.equal(backend.states.get("www"), "off");
  assert.ok(backend.ops().includes("stop:www:destroy"));

  // The store now says so too.
  await second.tick();
  const rows = new Map((await store.load()).map((r) => [r.label, r]));
  assert.equal(rows.get("www")?.state, "off");
  assert.equal(rows.get("db")?.state, "off");
  assert.equal(rows.get("www")?.totalRequests, 3);
});

test("restart with --stop-on-exit semantics: a VM the previous jitsu started counts as ours", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "jitsu-reconcile-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "state.db");
  const clock = new ManualClock();
  const backend = new TestBackend();
  const firstStore = SqliteStore.open(path);
  const first = await summoner(backend, clock, firstStore);
  await first.request("www");
  await first.close();
  await firstStore.close();
  backend.states.set("db", "running"); // started by someone else: not ours

  const store = SqliteStore.open(path);
  const second = await summoner(backend, clock, store);
  await second.close({ stopVms: true });
  await store.close();
  assert.equal(backend.states.get("www"), "off");
  assert.equal(backend.states.get("db"), "running");
});
