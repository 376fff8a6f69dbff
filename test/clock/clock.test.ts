import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ManualClock, systemClock } from "../../src/clock/index.js";

describe("Clock.sleep", () => {
  it("resolves when the manual clock passes the time, not before", async () => {
    const clock = new ManualClock();
    let done = false;
    const slept = clock.sleep(100).then(() => {
      done = true;
    });
    await clock.advance(99);
    assert.equal(done, false);
    await clock.advance(1);
    await slept;
    assert.equal(done, true);
  });

  it("rejects with the signal's reason when it aborts, and cancels its timer", async () => {
    const clock = new ManualClock();
    const abort = new AbortController();
    const slept = clock.sleep(1000, abort.signal);
    assert.equal(clock.pendingTimers(), 1);
    const reason = new Error("start timed out");
    abort.abort(reason);
    await assert.rejects(slept, (err) => err === reason);
    assert.equal(clock.pendingTimers(), 0);
  });

  it("rejects at once, without a timer, when the signal has already aborted", async () => {
    const clock = new ManualClock();
    const reason = new Error("gone");
    await assert.rejects(clock.sleep(10, AbortSignal.abort(reason)), (err) => err === reason);
    assert.equal(clock.pendingTimers(), 0);
  });

  it("resolves normally with a signal that never aborts", async () => {
    const clock = new ManualClock();
    const abort = new AbortController();
    const slept = clock.sleep(5, abort.signal);
    await clock.advance(5);
    await slept;
    abort.abort(new Error("late")); // after the sleep: nothing to reject any more
  });

  it("on the system clock: an abort ends the sleep long before its time", async () => {
    const abort = new AbortController();
    const began = Date.now();
    const slept = systemClock.sleep(60_000, abort.signal);
    setTimeout(() => abort.abort(new Error("stop")), 10);
    await assert.rejects(slept, /stop/);
    assert.ok(Date.now() - began < 5000);
  });
});
