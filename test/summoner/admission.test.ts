/**
 * Admission control (src/summoner/admission.ts) through the real Summoner,
 * with a manual clock and the in-memory test backend: --max-starting's queue,
 * --start-timeout while queued, --max-running's eviction choice and wait, a
 * failed start still running counted as up, and --summon-rate's token buckets.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { StartTimeoutError, SummonRefusedError } from "../../src/errors/index.js";
import { createLogger } from "../../src/log/index.js";
import { Summoner, clientPrefix, type SummonerOptions } from "../../src/summoner/index.js";
import { SummonRate } from "../../src/summoner/admission.js";
import { TestBackend, deferred, spec, track, type Deferred } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

const vmSpec = (i: number) => spec(`dns=v${i}.example.org,ip=10.0.0.${i},name=v${i}`);

async function setup(n: number, overrides: Partial<SummonerOptions> = {}) {
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
    summonerOptions({
      backend,
      clock,
      log,
      specs: Array.from({ length: n }, (_, i) => vmSpec(i + 1)),
      ...overrides,
    }),
  );
  return { clock, backend, summoner, lines };
}

/** Each start waits for its own gate, in the order the starts were called. */
function gateStarts(backend: TestBackend): Deferred[] {
  const gates: Deferred[] = [];
  backend.hold.start = () => {
    const gate = deferred();
    gates.push(gate);
    return gate.promise;
  };
  return gates;
}

function state(s: Summoner, label: string): string | undefined {
  return s.status().find((r) => r.label === label)?.state;
}

function starts(backend: TestBackend): string[] {
  return backend.ops().filter((op) => op.startsWith("start:"));
}

/** Brings `labels` up one after another (no limit reached), at the current time. */
async function bringUp(summoner: Summoner, ...labels: string[]): Promise<void> {
  for (const label of labels) await summoner.request(label);
}

describe("admission: --max-starting", () => {
  it("starts at most N at once; the others wait and start in arrival order", async () => {
    const { clock, backend, summoner } = await setup(4, { maxStarting: 2 });
    const gates = gateStarts(backend);
    const answers = ["v1", "v4", "v2", "v3"].map((label) =>
      track(summoner.request(label) as Promise<unknown>),
    );
    await clock.advance(0);
    assert.deepEqual(starts(backend), ["start:v1", "start:v4"]);
    assert.deepEqual(summoner.admissionStatus().queued, ["v2", "v3"]);
    assert.equal(summoner.admissionStatus().starting, 2);
    assert.equal(state(summoner, "v2"), "off", "a queued VM keeps its phase");

    gates[1]!.resolve(); // v4 is ready: the first in line (v2) starts, not v3
    await clock.advance(0);
    assert.equal(state(summoner, "v4"), "ready");
    assert.deepEqual(starts(backend), ["start:v1", "start:v4", "start:v2"]);
    assert.deepEqual(summoner.admissionStatus().queued, ["v3"]);

    gates[0]!.resolve();
    await clock.advance(0);
    assert.deepEqual(starts(backend), ["start:v1", "start:v4", "start:v2", "start:v3"]);
    gates[2]!.resolve();
    gates[3]!.resolve();
    await clock.advance(0);
    assert.ok(answers.every((a) => a.settled && a.error === undefined));
    assert.deepEqual(summoner.admissionStatus().queued, []);
    assert.equal(summoner.admissionStatus().starting, 0);
    await summoner.close();
  });

  it("a failed start frees its slot too", async () => {
    const { clock, backend, summoner } = await setup(2, { maxStarting: 1 });
    const gates = gateStarts(backend);
    const first = track(summoner.request("v1") as Promise<unknown>);
    const second = track(summoner.request("v2") as Promise<unknown>);
    await clock.advance(0);
    gates[0]!.reject(new Error("no memory"));
    await clock.advance(0);
    assert.match(String(first.error), /no memory/);
    assert.deepEqual(starts(backend), ["start:v1", "start:v2"]);
    gates[1]!.resolve();
    await clock.advance(0);
    assert.deepEqual(second.value, ["10.0.0.2"]);
    await summoner.close();
  });

  it("a queued summon times out with --start-timeout, leaves the queue, and is not a failure", async () => {
    const { clock, backend, summoner, lines } = await setup(3, { maxStarting: 1, startTimeoutSeconds: 5 });
    const gates = gateStarts(backend);
    const [v1, v2, v3] = ["v1", "v2", "v3"].map((l) => track(summoner.request(l) as Promise<unknown>));
    await clock.advance(4999);
    assert.ok(!v1!.settled && !v2!.settled && !v3!.settled);
    assert.deepEqual(summoner.admissionStatus().queued, ["v2", "v3"]);
    // All three time out at 5 s. v1's slot is not given to v2 or v3 as it frees: their time is
    // up too, and a start begun now would be abandoned at once (leaving a VM booting for nobody).
    await clock.advance(1);
    assert.match(
      String(v1!.error),
      /^StartTimeoutError: VM 'v1' was not ready after 5 s \(still waiting for the test backend to start it\)$/,
    );
    for (const [label, t] of [
      ["v2", v2],
      ["v3", v3],
    ] as const) {
      assert.ok(t!.error instanceof StartTimeoutError);
      assert.equal(
        (t!.error as Error).message,
        `VM '${label}' was not ready after 5 s (still queued: 1 VMs are starting (--max-starting 1))`,
      );
    }
    assert.deepEqual(summoner.admissionStatus().queued, []);
    assert.deepEqual(starts(backend), ["start:v1"]);
    assert.equal(state(summoner, "v3"), "off", "never started: not failed, no back-off");
    assert.ok(lines.includes(`VM 'v3' was not started: ${(v3!.error as Error).message}`));
    assert.ok(lines.includes("VM 'v3' waits to start: queued: 1 VMs are starting (--max-starting 1)"));

    // Asked again: starts at once (no back-off).
    const again = track(summoner.request("v3") as Promise<unknown>);
    await clock.advance(0);
    assert.deepEqual(starts(backend), ["start:v1", "start:v3"]);
    gates[1]!.resolve();
    await clock.advance(0);
    assert.deepEqual(again.value, ["10.0.0.3"]);
    await summoner.close();
  });

  it("the time queued counts against --start-timeout", async () => {
    const { clock, backend, summoner } = await setup(2, { maxStarting: 1, startTimeoutSeconds: 5 });
    const gates = gateStarts(backend);
    void (summoner.request("v1") as Promise<unknown>).catch(() => undefined);
    const second = track(summoner.request("v2") as Promise<unknown>);
    await clock.advance(3000);
    gates[0]!.resolve();
    await clock.advance(0);
    assert.deepEqual(starts(backend), ["start:v1", "start:v2"]);
    await clock.advance(1999);
    assert.equal(second.settled, false);
    await clock.advance(1);
    assert.ok(second.error instanceof StartTimeoutError);
    assert.match(
      (second.error as Error).message,
      /after 5 s \(still waiting for the test backend to start it\)/,
    );
    assert.equal(state(summoner, "v2"), "failed");
    await summoner.close();
  });

  it("close() rejects the summons still queued", async () => {
    const { clock, backend, summoner } = await setup(2, { maxStarting: 1, startTimeoutSeconds: 0 });
    const gates = gateStarts(backend);
    void (summoner.request("v1") as Promise<unknown>).catch(() => undefined);
    const queued = track(summoner.request("v2") as Promise<unknown>);
    await clock.advance(0);
    const closed = summoner.close();
    await clock.advance(0);
    assert.match(String(queued.error), /shutting down/);
    gates[0]!.resolve();
    await closed;
  });
});

describe("admission: --max-running", () => {
  it("evicts the least recently queried ready VM idle past its TTL, never one queried within it", async () => {
    const { clock, backend, summoner, lines } = await setup(4, { maxRunning: 3, ttlSeconds: 60 });
    await bringUp(summoner, "v1", "v2", "v3");
    await clock.advance(10_000);
    summoner.request("v2"); // hot path: v2 last queried at 10 s
    await clock.advance(10_000);
    summoner.request("v1"); // v1 at 20 s
    await clock.advance(55_000); // 75 s: v3 (0 s) and v2 (10 s) are past their TTL, v1 (20 s) is not
    summoner.request("v3"); // v3 at 75 s: now only v2 may go
    const v4 = track(summoner.request("v4") as Promise<unknown>);
    await clock.advance(0);
    assert.deepEqual(v4.value, ["10.0.0.4"]);
    assert.deepEqual(
      backend.ops().filter((op) => op.startsWith("stop:")),
      ["stop:v2:destroy"],
    );
    assert.deepEqual(
      ["v1", "v2", "v3", "v4"].map((l) => state(summoner, l)),
      ["ready", "off", "ready", "ready"],
    );
    assert.ok(
      lines.includes(
        "Stopping VM 'v2' (destroy) to make room for VM 'v4' (--max-running 3) (last queried 65 s ago, past its TTL of 60 s)",
      ),
      lines.join("\n"),
    );
    assert.equal(summoner.admissionStatus().evictions, 1);
    assert.equal(summoner.admissionStatus().up, 3);
    await summoner.close();
  });

  it("an adoption (a VM started behind jitsu's back) takes no slot: it neither waits for one nor evicts", async () => {
    const { clock, backend, summoner } = await setup(2, { maxRunning: 1, ttlSeconds: 60 });
    await bringUp(summoner, "v1");
    backend.states.set("v2", "running");
    backend.emit({ vm: { label: "v2", ref: "ref-v2" }, state: "running" });
    await clock.advance(0);
    assert.deepEqual(
      ["v1", "v2"].map((l) => state(summoner, l)),
      ["ready", "ready"],
    );
    assert.deepEqual(backend.ops(), ["start:v1"], "nothing evicted, nothing started");
    assert.equal(summoner.admissionStatus().up, 2, "counted as up: the next start makes room for it");
    await summoner.close();
  });

  /** v1 ready; v2's adoption joined by a request, its state read finding it off again. */
  async function adoptionFindingOff(overrides: Partial<SummonerOptions>) {
    const setUp = await setup(2, { maxRunning: 1, ...overrides });
    const { backend, summoner } = setUp;
    await bringUp(summoner, "v1");
    const read = deferred();
    backend.hold.state = (label) => (label === "v2" ? read.promise : Promise.resolve());
    backend.states.set("v2", "running");
    backend.emit({ vm: { label: "v2", ref: "ref-v2" }, state: "running" });
    const answer = track(summoner.request("v2") as Promise<unknown>);
    backend.states.set("v2", "off"); // stopped again before the adoption's state read
    read.resolve();
    await setUp.clock.advance(0);
    return { ...setUp, answer };
  }

  it("an adoption a request joined that finds the VM off is admitted as a start: queued in its phase from before", async () => {
    const { clock, backend, summoner, answer } = await adoptionFindingOff({ ttlSeconds: 10 });
    assert.equal(answer.settled, false);
    assert.deepEqual(summoner.admissionStatus().queued, ["v2"]);
    assert.equal(state(summoner, "v2"), "off", "not counted as up while it waits");
    await clock.advance(11_000); // v1 past its TTL: evicted for v2
    assert.deepEqual(answer.value, ["10.0.0.2"]);
    assert.deepEqual(backend.ops(), ["start:v1", "stop:v1:destroy", "start:v2"]);
    assert.equal(state(summoner, "v2"), "ready");
    await summoner.close();
  });

  it("such a start that times out queued is not a failure: the VM keeps its phase, no back-off", async () => {
    const { clock, backend, summoner, answer } = await adoptionFindingOff({
      ttlSeconds: 60,
      startTimeoutSeconds: 5,
    });
    await clock.advance(5000);
    assert.ok(answer.error instanceof StartTimeoutError, String(answer.error));
    assert.equal(state(summoner, "v2"), "off");
    assert.deepEqual(backend.ops(), ["start:v1"]);
    assert.deepEqual(summoner.admissionStatus().queued, []);
    await summoner.close();
  });

  it("picks the least recently queried of several idle VMs, and stops with -m", async () => {
    const { clock, backend, summoner } = await setup(3, { maxRunning: 2, ttlSeconds: 1, stopMode: "pause" });
    await bringUp(summoner, "v1", "v2");
    await clock.advance(500);
    summoner.request("v1");
    await clock.advance(2000);
    await summoner.request("v3");
    assert.deepEqual(
      backend.ops().filter((op) => op.startsWith("stop:")),
      ["stop:v2:pause"],
    );
    assert.equal(state(summoner, "v2"), "paused");
    await summoner.close();
  });

  it("waits for the first VM to pass its TTL (a query meanwhile postpones it), then evicts it", async () => {
    const { clock, backend, summoner } = await setup(3, {
      maxRunning: 2,
      ttlSeconds: 60,
      startTimeoutSeconds: 120,
    });
    await bringUp(summoner, "v1"); // v1 queried at 0 s
    await clock.advance(30_000);
    await bringUp(summoner, "v2"); // v2 at 30 s
    await clock.advance(10_000);
    const v3 = track(summoner.request("v3") as Promise<unknown>); // 40 s: nobody is past its TTL
    await clock.advance(0);
    assert.deepEqual(summoner.admissionStatus().queued, ["v3"]);
    assert.equal(starts(backend).length, 2);
    await clock.advance(10_000);
    summoner.request("v1"); // 50 s: v1 is in use again; v2 (30 s) is now the first to pass its TTL, at 90 s
    await clock.advance(39_999);
    assert.equal(v3.settled, false);
    assert.deepEqual(
      backend.ops().filter((op) => op.startsWith("stop:")),
      [],
    );
    await clock.advance(2);
    assert.deepEqual(v3.value, ["10.0.0.3"]);
    assert.deepEqual(
      backend.ops().filter((op) => !op.startsWith("start:")),
      ["stop:v2:destroy"],
    );
    assert.equal(state(summoner, "v1"), "ready");
    await summoner.close();
  });

  it("with --workers: the chosen VMs are withheld and judged on the workers' counts before they go", async () => {
    const { clock, backend, summoner } = await setup(3, { maxRunning: 2, ttlSeconds: 60 });
    await bringUp(summoner, "v1");
    await clock.advance(1000);
    await bringUp(summoner, "v2");
    await clock.advance(61_000); // both past their TTL; v1 the least recently queried
    const withheld: string[][] = [];
    summoner.beforeEvict = async (labels) => {
      withheld.push([...labels]);
      // A worker had answered v1 from its copy of the ready map since its last report.
      if (labels.includes("v1")) summoner.noteRequests("v1", 1);
      await clock.sleep(10);
    };
    const v3 = track(summoner.request("v3") as Promise<unknown>);
    await clock.advance(100);
    assert.deepEqual(withheld, [["v1"], ["v2"]]);
    assert.deepEqual(v3.value, ["10.0.0.3"]);
    assert.deepEqual(
      backend.ops().filter((op) => op.startsWith("stop:")),
      ["stop:v2:destroy"],
    );
    assert.equal(state(summoner, "v1"), "ready");
    await summoner.close();
  });

  it("times out (SERVFAIL) if no VM passes its TTL within --start-timeout", async () => {
    const { clock, backend, summoner } = await setup(2, {
      maxRunning: 1,
      ttlSeconds: 60,
      startTimeoutSeconds: 5,
    });
    await bringUp(summoner, "v1");
    const v2 = track(summoner.request("v2") as Promise<unknown>);
    await clock.advance(5000);
    assert.ok(v2.error instanceof StartTimeoutError);
    assert.match((v2.error as Error).message, /still queued: 1 VMs are up \(--max-running 1\)/);
    assert.deepEqual(summoner.admissionStatus().queued, []);
    assert.deepEqual(backend.ops(), ["start:v1"]);
    await summoner.close();
  });

  it("a VM whose start failed but still runs counts as up, and is evicted first", async () => {
    // The response delay (10 s) outlasts the start timeout (5 s): the backend started it, it runs.
    const { clock, backend, summoner, lines } = await setup(3, {
      maxRunning: 2,
      ttlSeconds: 60,
      startTimeoutSeconds: 5,
      delaySeconds: 10,
    });
    const v1 = track(summoner.request("v1") as Promise<unknown>);
    await clock.advance(5000);
    assert.ok(v1.error instanceof StartTimeoutError);
    assert.equal(state(summoner, "v1"), "failed");
    assert.equal(backend.states.get("v1"), "running");
    assert.equal(summoner.admissionStatus().up, 1, "failed, but the backend runs it: up");

    const v2 = track(summoner.request("v2") as Promise<unknown>);
    await clock.advance(5000); // v2 fails the same way: two up, both failed
    assert.ok(v2.error instanceof StartTimeoutError);
    assert.equal(summoner.admissionStatus().up, 2);

    backend.hold.stop = () => stopGate.promise;
    const stopGate = deferred();
    const v3 = track(summoner.request("v3") as Promise<unknown>);
    await clock.advance(0);
    assert.deepEqual(
      backend.ops().filter((op) => op.startsWith("stop:")),
      ["stop:v1:destroy"],
      "the longest-failed first",
    );
    assert.equal(starts(backend).includes("start:v3"), false, "not before v1 has stopped");
    stopGate.resolve();
    await clock.advance(0);
    assert.deepEqual(starts(backend), ["start:v1", "start:v2", "start:v3"]);
    assert.ok(
      lines.some((l) => /^Stopping VM 'v1' \(destroy\) to make room for VM 'v3'.*start failed/.test(l)),
    );
    assert.equal(v3.settled, false, "v3 is starting");
    await summoner.close();
  });

  it("a failed start whose VM does not run (the backend says off) does not count", async () => {
    const { clock, backend, summoner } = await setup(2, { maxRunning: 1 });
    backend.hold.start = () => Promise.reject(new Error("no memory"));
    await assert.rejects(Promise.resolve(summoner.request("v1")), /no memory/);
    await clock.advance(0);
    assert.equal(summoner.admissionStatus().up, 0);
    delete backend.hold.start;
    assert.deepEqual(await summoner.request("v2"), ["10.0.0.2"]);
    assert.equal(
      backend.ops().some((op) => op.startsWith("stop:")),
      false,
    );
    await summoner.close();
  });

  it("a start still in the backend when it timed out counts until the backend has finished and says off", async () => {
    const { clock, backend, summoner } = await setup(2, { maxRunning: 1, startTimeoutSeconds: 5 });
    const gates = gateStarts(backend);
    const v1 = track(summoner.request("v1") as Promise<unknown>);
    await clock.advance(5000);
    assert.ok(v1.error instanceof StartTimeoutError);
    assert.equal(summoner.admissionStatus().up, 1, "the backend's start has not returned: it may run");
    gates[0]!.reject(new Error("gave up")); // the backend's start ends, and the VM is off
    await clock.advance(0);
    assert.equal(summoner.admissionStatus().up, 0);
    await summoner.close();
  });

  it("never has more than N VMs up, whatever the sequence of queries", async () => {
    // A fixed pseudo-random walk: queries, time passing, reaper passes, slow starts and stops.
    let seed = 12345;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const { clock, backend, summoner } = await setup(8, {
      maxRunning: 3,
      maxStarting: 2,
      ttlSeconds: 1,
      startTimeoutSeconds: 3,
      reaperIntervalMs: 1000,
    });
    backend.hold.start = () => clock.sleep(Math.floor(random() * 1500));
    backend.hold.stop = () => clock.sleep(Math.floor(random() * 500));
    let answered = 0;
    let failed = 0;
    let maxUp = 0;
    let maxStarting = 0;
    const check = (): void => {
      let up = 0;
      for (const s of backend.states.values()) if (s === "running") up++;
      const starting = summoner.status().filter((r) => r.state === "starting").length;
      maxUp = Math.max(maxUp, up);
      maxStarting = Math.max(maxStarting, starting);
      assert.ok(up <= 3, `${up} VMs running`);
      assert.ok(starting <= 2, `${starting} VMs starting`);
    };
    for (let step = 0; step < 400; step++) {
      const r = random();
      if (r < 0.6) {
        const label = `v${1 + Math.floor(random() * 8)}`;
        const answer = summoner.request(label);
        if (answer instanceof Promise) {
          answer.then(
            () => answered++,
            () => failed++,
          );
        } else answered++;
      } else {
        await clock.advance(Math.floor(random() * 400));
      }
      await clock.advance(0);
      check();
    }
    await clock.advance(10_000);
    check();
    assert.equal(maxUp, 3, "the limit was reached");
    assert.ok(answered > 0 && failed > 0, `answered ${answered}, failed ${failed}`);
    assert.ok(summoner.admissionStatus().evictions > 0);
    await summoner.close();
  });
});

describe("admission: --summon-rate", () => {
  it("refuses a client prefix over its rate for cold names, not for ready VMs nor other prefixes", async () => {
    const { clock, backend, summoner, lines } = await setup(5, { summonRate: 1 });
    // A burst of 2 x R = 2 cold summons, then one per second.
    assert.deepEqual(await summoner.request("v1", "192.0.2.1"), ["10.0.0.1"]);
    assert.deepEqual(await summoner.request("v2", "192.0.2.200"), ["10.0.0.2"]);
    assert.throws(() => summoner.request("v3", "192.0.2.1"), SummonRefusedError);
    assert.throws(
      () => summoner.request("v3", "192.0.2.99"),
      (err: unknown) => err instanceof SummonRefusedError && err.reason === "summon-rate",
      "the same /24",
    );
    assert.deepEqual(summoner.request("v1", "192.0.2.1"), ["10.0.0.1"], "a ready VM is answered");
    assert.deepEqual(await summoner.request("v3", "198.51.100.7"), ["10.0.0.3"], "another prefix");
    assert.deepEqual(await summoner.request("v4"), ["10.0.0.4"], "no client (our own callers)");
    assert.equal(state(summoner, "v5"), "off");
    assert.equal(summoner.status().find((r) => r.label === "v5")!.totalRequests, 0, "refused: not counted");
    assert.equal(summoner.admissionStatus().refused, 2);
    assert.equal(lines.filter((l) => /over --summon-rate 1\/s/.test(l)).length, 2);
    assert.ok(
      lines.some((l) => /^client 192\.0\.2\.0\/24 is over --summon-rate 1\/s.*at most once a minute/.test(l)),
    );

    await clock.advance(1000); // one token back
    assert.deepEqual(await summoner.request("v5", "192.0.2.1"), ["10.0.0.5"]);
    assert.deepEqual(backend.ops(), ["start:v1", "start:v2", "start:v3", "start:v4", "start:v5"]);
    await summoner.close();
  });

  it("joining a start in flight, or a failed VM in its back-off, takes no token", async () => {
    const { clock, backend, summoner } = await setup(2, { summonRate: 0.5 }); // burst 1
    const gates = gateStarts(backend);
    const first = summoner.request("v1", "203.0.113.1") as Promise<unknown>;
    for (let i = 0; i < 5; i++) assert.equal(summoner.request("v1", "203.0.113.1"), first);
    await clock.advance(0);
    gates[0]!.reject(new Error("no memory"));
    await assert.rejects(first, /no memory/);
    // In its back-off: fails fast (SERVFAIL), not REFUSED.
    await assert.rejects(Promise.resolve(summoner.request("v1", "203.0.113.1")), /no memory/);
    assert.throws(() => summoner.request("v2", "203.0.113.1"), SummonRefusedError);
    await clock.advance(2000);
    const second = summoner.request("v2", "203.0.113.1") as Promise<unknown>;
    await clock.advance(0);
    gates[1]!.resolve();
    assert.deepEqual(await second, ["10.0.0.2"]);
    await summoner.close();
  });
});

describe("SummonRate and clientPrefix", () => {
  it("groups IPv4 by /24 and IPv6 by /56, an IPv4-mapped address as IPv4", () => {
    assert.equal(clientPrefix("192.0.2.55"), "192.0.2.0/24");
    assert.equal(clientPrefix("::ffff:192.0.2.55"), "192.0.2.0/24");
    assert.equal(clientPrefix("2001:db8:1:2345:6789::1"), "2001:db8:1:2300::/56");
    assert.equal(clientPrefix("2001:db8:1:23ff::"), "2001:db8:1:2300::/56");
    assert.equal(clientPrefix("2001:db8:1:2400::1"), "2001:db8:1:2400::/56");
    assert.equal(clientPrefix("::1"), "0:0:0:0::/56");
    assert.equal(clientPrefix("fe80::1%eth0"), "fe80:0:0:0::/56");
    assert.equal(clientPrefix("64:ff9b::192.0.2.1"), "64:ff9b:0:0::/56");
    assert.equal(clientPrefix("not:an:address::x"), "not:an:address::x");
  });

  it("refills R tokens a second up to a burst of 2 x R (at least 1)", async () => {
    const clock = new ManualClock();
    const rate = new SummonRate(10, clock);
    let allowed = 0;
    for (let i = 0; i < 30; i++) if (rate.take("192.0.2.1") === null) allowed++;
    assert.equal(allowed, 20);
    assert.equal(rate.take("192.0.2.1"), "192.0.2.0/24");
    await clock.advance(500);
    allowed = 0;
    for (let i = 0; i < 10; i++) if (rate.take("192.0.2.1") === null) allowed++;
    assert.equal(allowed, 5);
    const slow = new SummonRate(0.2, clock); // burst max(1, 0.4) = 1, then one every 5 s
    assert.equal(slow.take("::1"), null);
    assert.notEqual(slow.take("::1"), null);
    await clock.advance(5000);
    assert.equal(slow.take("::1"), null);
  });

  it("remembers a bounded number of prefixes, dropping the oldest and those refilled", async () => {
    const clock = new ManualClock();
    const rate = new SummonRate(1, clock, 100);
    for (let i = 0; i < 10_000; i++) rate.take(`10.${i >> 8}.${i & 255}.1`);
    assert.ok(rate.size <= 100, `${rate.size} buckets`);
    await clock.advance(2000); // every bucket is full again: the next new prefix drops them all
    rate.take("198.51.100.1");
    assert.equal(rate.size, 1);
  });
});
