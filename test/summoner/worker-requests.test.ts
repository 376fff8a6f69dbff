/**
 * What the summoner offers --workers (src/cluster): requests answered by a
 * worker and reported later (noteRequests), and the hook that collects them
 * before each reaper pass (beforeReap). Injected clock, in-memory backend.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { TestBackend, deferred, spec } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

async function setup(
  ttlSeconds = 1,
): Promise<{ clock: ManualClock; backend: TestBackend; summoner: Summoner }> {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const summoner = await Summoner.create(
    summonerOptions({
      backend,
      specs: [spec("dns=www.example.org,ip=10.0.0.1,name=www")],
      clock,
      ttlSeconds,
      reaperIntervalMs: 1000,
    }),
  );
  return { clock, backend, summoner };
}

const www = (s: Summoner) => s.status().find((vm) => vm.label === "www")!;

describe("Summoner and --workers", () => {
  it("noteRequests counts requests and moves the last request on, without a backend call for a ready VM", async () => {
    const { clock, backend, summoner } = await setup();
    await summoner.request("www");
    const ops = backend.ops().length;
    await clock.advance(500);
    summoner.noteRequests("www", 41);
    assert.equal(www(summoner).totalRequests, 42);
    assert.equal(www(summoner).lastRequest, clock.now());
    assert.equal(backend.ops().length, ops);
    // Unknown labels (a VM removed by a reload meanwhile) and nonsense counts are ignored.
    summoner.noteRequests("gone", 3);
    summoner.noteRequests("www", 0);
    summoner.noteRequests("www", Number.NaN);
    assert.equal(www(summoner).totalRequests, 42);
    await summoner.close();
  });

  it("noteRequests for a VM that stopped meanwhile summons it again (those clients were given its address)", async () => {
    const { clock, backend, summoner } = await setup();
    await summoner.request("www");
    const gate = deferred();
    backend.hold.stop = () => gate.promise;
    await clock.advance(3000); // idle 2 x TTL: the reaper stops it
    assert.equal(www(summoner).state, "stopping");
    summoner.noteRequests("www", 2); // answered by a worker before it heard "not ready"
    gate.resolve();
    await clock.advance(10);
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy", "start:www"]);
    assert.equal(www(summoner).state, "ready");
    assert.equal(www(summoner).totalRequests, 3);
    // Off (not stopping) is summoned too.
    delete backend.hold.stop;
    await clock.advance(3000);
    assert.equal(www(summoner).state, "off");
    summoner.noteRequests("www", 1);
    await clock.advance(10);
    assert.equal(www(summoner).state, "ready");
    assert.equal(backend.ops().filter((op) => op === "start:www").length, 3);
    // At shutdown (summon: false) the counts are kept but nothing is started.
    await clock.advance(3000);
    assert.equal(www(summoner).state, "off");
    summoner.noteRequests("www", 1, { summon: false });
    await clock.advance(10);
    assert.equal(www(summoner).state, "off");
    assert.equal(www(summoner).totalRequests, 5);
    await summoner.close();
  });

  it("noteRequests does not retry a failed VM (its clients got SERVFAIL)", async () => {
    const { clock, backend, summoner } = await setup();
    backend.hold.start = () => Promise.reject(new Error("no memory"));
    await assert.rejects(summoner.request("www") as Promise<unknown>, /no memory/);
    assert.equal(www(summoner).state, "failed");
    await clock.advance(1500); // past the 1 s back-off, not yet idle for 2 x TTL
    summoner.noteRequests("www", 5);
    await clock.advance(10);
    assert.deepEqual(backend.ops(), ["start:www"]);
    assert.equal(www(summoner).totalRequests, 6);
    await summoner.close();
  });

  it("runs beforeReap at the start of each pass, so counts it collects keep a VM from being stopped", async () => {
    const { clock, backend, summoner } = await setup();
    await summoner.request("www");
    let passes = 0;
    let queried = true;
    summoner.beforeReap = () => {
      passes++;
      // What a worker answered since its last report, collected just before the pass judges idleness.
      if (queried) summoner.noteRequests("www", 1);
      return Promise.resolve();
    };
    await clock.advance(10_000);
    assert.ok(passes >= 9, `passes: ${passes}`);
    assert.equal(www(summoner).state, "ready");
    assert.deepEqual(backend.ops(), ["start:www"]);
    queried = false;
    await clock.advance(3000);
    assert.equal(www(summoner).state, "off");
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy"]);
    await summoner.close();
  });

  it("a beforeReap that fails does not stop the pass", async () => {
    const { clock, summoner } = await setup();
    await summoner.request("www");
    summoner.beforeReap = () => Promise.reject(new Error("worker gone"));
    await clock.advance(3000);
    assert.equal(www(summoner).state, "off");
    await summoner.close();
  });

  it("readyAddresses lists ready VMs with the hot path's own arrays", async () => {
    const { summoner } = await setup();
    assert.equal(summoner.readyAddresses().size, 0);
    const first = await summoner.request("www");
    const ready = summoner.readyAddresses();
    assert.equal(ready.get("www"), first);
    assert.equal(summoner.readyAddresses().get("www"), ready.get("www"));
    await summoner.close();
  });
});
