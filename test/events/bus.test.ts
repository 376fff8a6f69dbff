/** The event bus (src/events): ids, times, the kept ring for Last-Event-ID, listeners. */
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";
import { EventBus, type JitsuEvent } from "../../src/events/index.js";

describe("EventBus", () => {
  it("numbers events from 1, stamps them with the clock and serialises type, id and time first", () => {
    let now = Date.parse("2026-11-25T12:00:00Z");
    const bus = new EventBus(() => now);
    const seen: [JitsuEvent, string][] = [];
    bus.subscribe((e, json) => seen.push([e, json]));
    bus.emit({ type: "vm.state", vm: "www", from: "off", to: "starting" });
    now += 1500;
    bus.emit({ type: "vm.started", vm: "www", how: "start", durationMs: 1500, backendMs: 20 });
    assert.deepEqual(
      seen.map(([e]) => [e.id, e.time, e.type]),
      [
        [1, "2026-11-25T12:00:00.000Z", "vm.state"],
        [2, "2026-11-25T12:00:01.500Z", "vm.started"],
      ],
    );
    assert.equal(
      seen[0]![1],
      '{"type":"vm.state","id":1,"time":"2026-11-25T12:00:00.000Z","vm":"www","from":"off","to":"starting"}',
    );
    assert.equal(bus.next, 3);
  });

  it("gives the kept events after an id, [] when none are missed, null when some are gone", () => {
    const bus = new EventBus(Date.now, 4);
    assert.deepEqual(bus.since(0), []);
    for (let i = 0; i < 6; i++) bus.emit({ type: "stream.reset", reason: String(i) });
    assert.deepEqual(
      bus.since(3)?.map((k) => k.event.id),
      [4, 5, 6],
    );
    assert.deepEqual(
      bus.since(2)?.map((k) => k.event.id),
      [3, 4, 5, 6],
    );
    assert.equal(bus.since(1), null, "event 2 is no longer kept");
    assert.deepEqual(bus.since(6), []);
    assert.equal(bus.since(7), null, "an id from the future (another jitsu)");
    assert.equal(bus.since(-1), null);
  });

  it("stops calling a listener once unsubscribed, and a throwing listener does not stop the others", () => {
    const bus = new EventBus();
    const a: number[] = [];
    const b: number[] = [];
    bus.subscribe(() => {
      throw new Error("broken listener");
    });
    const stopA = bus.subscribe((e) => a.push(e.id));
    bus.subscribe((e) => b.push(e.id));
    bus.emit({ type: "stream.reset", reason: "x" });
    stopA();
    bus.emit({ type: "stream.reset", reason: "y" });
    assert.deepEqual(a, [1]);
    assert.deepEqual(b, [1, 2]);
    assert.equal(bus.subscribers, 2);
  });
});
