/**
 * Start failures that repeat (--max-failures, --failure-reset) on a
 * ManualClock: the back-off as before, /status's last error and next try, and
 * after N failures in a row the VM is given up on (fast failures, no backend
 * call) until the reset passes, a reload or an admin start.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { Summoner, type SummonerOptions } from "../../src/summoner/index.js";
import { TestBackend, spec } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

const WWW = "dns=www.example.org,ip=10.0.0.1,name=www";
const API = "dns=api.example.org,ip=10.0.0.2,name=api";

async function setup(overrides: Partial<SummonerOptions> = {}): Promise<{
  clock: ManualClock;
  backend: TestBackend;
  summoner: Summoner;
}> {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const summoner = await Summoner.create(
    summonerOptions({
      backend,
      specs: [spec(WWW), spec(API)],
      clock,
      maxFailures: 3,
      failureResetSeconds: 120,
      ...overrides,
    }),
  );
  return { clock, backend, summoner };
}

function row(s: Summoner, label = "www") {
  return s.status().find((r) => r.label === label)!;
}

function starts(backend: TestBackend): number {
  return backend.ops().filter((op) => op === "start:www").length;
}

/** Fails `n` starts in a row, waiting out each back-off (1 s, 2 s, 4 s ...). */
async function failTimes(clock: ManualClock, summoner: Summoner, n: number, before = 0): Promise<void> {
  for (let i = 0; i < n; i++) {
    await assert.rejects(summoner.request("www") as Promise<unknown>, /boot loop/);
    if (i < n - 1) await clock.advance(Math.min(60_000, 1000 * 2 ** (before + i)));
  }
}

describe("Summoner --max-failures", () => {
  it("shows the last error and the next try in status, then gives up after N failures in a row", async () => {
    const { clock, backend, summoner } = await setup({ ttlSeconds: 3600 });
    assert.deepEqual(await summoner.request("api"), ["10.0.0.2"]);
    backend.hold.start = () => Promise.reject(new Error("boot loop"));
    await assert.rejects(summoner.request("www") as Promise<unknown>, /boot loop/);
    let www = row(summoner);
    assert.equal(www.state, "failed");
    assert.match(www.lastError ?? "", /boot loop/);
    assert.equal(www.failures, 1);
    assert.equal(www.nextTryAt, clock.now() + 1000, "back-off 1 s");
    assert.equal(www.givenUp, false);

    await clock.advance(1000);
    await failTimes(clock, summoner, 2, 1); // the 2nd and 3rd failures
    www = row(summoner);
    assert.equal(www.failures, 3);
    assert.equal(www.givenUp, true);
    assert.equal(www.nextTryAt, clock.now() + 120_000, "--failure-reset, not the back-off");
    assert.equal(starts(backend), 3);

    // Given up: queries fail at once, with no backend call, far past the longest back-off.
    for (const wait of [1000, 60_000, 58_000]) {
      await clock.advance(wait);
      await assert.rejects(summoner.request("www") as Promise<unknown>, /boot loop/);
    }
    assert.equal(starts(backend), 3);
    // Other VMs are not affected.
    assert.deepEqual(summoner.request("api"), ["10.0.0.2"]);

    // The reset passes: one more try; it fails again, and waits the whole reset again.
    await clock.advance(1000);
    await assert.rejects(summoner.request("www") as Promise<unknown>, /boot loop/);
    assert.equal(starts(backend), 4);
    assert.equal(row(summoner).givenUp, true);
    assert.equal(row(summoner).nextTryAt, clock.now() + 120_000);

    // Fixed: after the next reset it starts, and the count of failures is cleared.
    delete backend.hold.start;
    await clock.advance(120_000);
    assert.deepEqual(await summoner.request("www"), ["10.0.0.1"]);
    www = row(summoner);
    assert.equal(www.state, "ready");
    assert.equal(www.failures, 0);
    assert.equal(www.nextTryAt, null);
    assert.equal(www.lastError, null);
    await summoner.close();
  });

  it("stays given up through the reaper's passes (a failed VM seen off is not made off)", async () => {
    const { clock, backend, summoner } = await setup({ ttlSeconds: 5 });
    backend.hold.start = () => Promise.reject(new Error("boot loop"));
    await failTimes(clock, summoner, 3);
    await clock.advance(60_000); // twelve reaper passes, far past 2 x TTL idle
    assert.equal(row(summoner).state, "failed");
    assert.equal(row(summoner).givenUp, true);
    await assert.rejects(summoner.request("www") as Promise<unknown>, /boot loop/);
    assert.equal(starts(backend), 3);
    await summoner.close();
  });

  it("a reload lets a VM given up on be tried again at once", async () => {
    const { clock, backend, summoner } = await setup();
    backend.hold.start = () => Promise.reject(new Error("boot loop"));
    await failTimes(clock, summoner, 3);
    assert.equal(row(summoner).givenUp, true);
    delete backend.hold.start;
    await summoner.setSpecs([spec(WWW), spec(API)]); // the same configuration: the user's word
    assert.equal(row(summoner).state, "off");
    assert.equal(row(summoner).failures, 0);
    assert.deepEqual(await summoner.request("www"), ["10.0.0.1"]);
    await summoner.close();
  });

  it("an admin start tries at once, and gives back the N tries", async () => {
    const { clock, backend, summoner } = await setup();
    backend.hold.start = () => Promise.reject(new Error("boot loop"));
    await failTimes(clock, summoner, 3);
    await assert.rejects(summoner.startVm("www"), /boot loop/);
    assert.equal(starts(backend), 4);
    let www = row(summoner);
    assert.equal(www.failures, 1, "the admin start's failure is the first of a new run");
    assert.equal(www.givenUp, false);
    assert.equal(www.nextTryAt, clock.now() + 1000);
    delete backend.hold.start;
    await summoner.startVm("www");
    www = row(summoner);
    assert.equal(www.state, "ready");
    await summoner.close();
  });

  it("0 never gives up: the back-off stays capped at 60 s", async () => {
    const { clock, backend, summoner } = await setup({ maxFailures: 0 });
    backend.hold.start = () => Promise.reject(new Error("boot loop"));
    await failTimes(clock, summoner, 8);
    const www = row(summoner);
    assert.equal(www.failures, 8);
    assert.equal(www.givenUp, false);
    assert.equal(www.nextTryAt, clock.now() + 60_000);
    await summoner.close();
  });
});
