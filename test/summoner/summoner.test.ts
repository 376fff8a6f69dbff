import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import type { VmRef } from "../../src/backends/contract.js";
import { ManualClock } from "../../src/clock/index.js";
import type { VmSpec } from "../../src/config/index.js";
import { ConfigError, StartTimeoutError } from "../../src/errors/index.js";
import { createLogger } from "../../src/log/index.js";
import { MemoryStore } from "../../src/store/index.js";
import {
  Summoner,
  formatStateSummary,
  formatStatsTable,
  type SummonerOptions,
} from "../../src/summoner/index.js";
import { TestBackend, deferred, spec, track } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

const WWW = "dns=www.example.org,ip=10.0.0.1,name=www";
const API = "dns=api.example.org,ip=10.0.0.2,ip=2001:db8::2,name=api";

interface Setup {
  clock: ManualClock;
  backend: TestBackend;
  summoner: Summoner;
  store: MemoryStore;
}

async function setup(
  specs: VmSpec[] = [spec(WWW)],
  overrides: Partial<SummonerOptions> = {},
  backend = new TestBackend(),
): Promise<Setup> {
  const clock = new ManualClock();
  const store = (overrides.store as MemoryStore | undefined) ?? new MemoryStore();
  const summoner = await Summoner.create(
    summonerOptions({
      backend,
      specs,
      clock,
      store,
      reaperIntervalMs: 5000,
      ...overrides,
    }),
  );
  return { clock, backend, summoner, store };
}

function state(s: Summoner, label = "www"): string | undefined {
  return s.status().find((r) => r.label === label)?.state;
}

describe("Summoner", () => {
  it("answers a ready VM synchronously with the same array instance and no backend call", async () => {
    const { backend, summoner } = await setup();
    const first = await summoner.request("www");
    assert.deepEqual(first, ["10.0.0.1"]);
    const calls = backend.calls.length;
    const a = summoner.request("www");
    const b = summoner.request("www");
    assert.ok(Array.isArray(a), "hot path returns the array, not a promise");
    assert.equal(a, b);
    assert.equal(a, first);
    assert.equal(backend.calls.length, calls, "no backend call on the hot path");
    const row = summoner.status()[0]!;
    assert.equal(row.totalRequests, 3);
    assert.equal(row.totalStarts, 1);
    assert.equal(row.state, "ready");
    await summoner.close();
  });

  it("requestIfReady: a ready VM's addresses (counted), else null without starting or waiting", async () => {
    const { backend, summoner, clock } = await setup();
    assert.equal(summoner.requestIfReady("www"), null);
    assert.equal(summoner.requestIfReady("nope"), null);
    assert.deepEqual(backend.ops(), [], "nothing was started");
    assert.equal(state(summoner), "off");
    assert.equal(summoner.status()[0]!.totalRequests, 0);
    const first = await summoner.request("www");
    clock.advance(1000);
    assert.equal(summoner.requestIfReady("www"), first, "the hot path's own array");
    const row = summoner.status()[0]!;
    assert.equal(row.totalRequests, 2);
    assert.equal(row.lastRequest, clock.now(), "it keeps the VM from being idle");
    assert.deepEqual(backend.ops(), ["start:www"]);
    await summoner.close();
  });

  it("starts a cold VM exactly once for 1000 concurrent requests", async () => {
    const { backend, summoner } = await setup();
    const gate = deferred();
    backend.hold.start = () => gate.promise;
    const pending = Array.from({ length: 1000 }, () => summoner.request("www"));
    assert.ok(pending.every((p) => p instanceof Promise));
    assert.equal(new Set(pending).size, 1, "every request shares one promise");
    await new Promise((r) => setImmediate(r));
    assert.equal(state(summoner), "starting");
    gate.resolve();
    const answers = await Promise.all(pending);
    assert.ok(answers.every((a) => a[0] === "10.0.0.1"));
    assert.deepEqual(backend.ops(), ["start:www"]);
    assert.equal(summoner.status()[0]!.totalRequests, 1000);
    await summoner.close();
  });

  it("resumes a suspended VM and unpauses a paused one", async () => {
    const { backend, summoner } = await setup([spec(WWW), spec(API)]);
    backend.states.set("www", "suspended");
    backend.states.set("api", "paused");
    await summoner.request("www");
    await summoner.request("api");
    assert.deepEqual(backend.ops(), ["resume:www", "unpause:api"]);
    await summoner.close();
  });

  it("adopts a VM started behind our back instead of starting it", async () => {
    const { backend, summoner } = await setup();
    assert.equal(state(summoner), "off");
    backend.states.set("www", "running");
    assert.deepEqual(await summoner.request("www"), ["10.0.0.1"]);
    assert.deepEqual(backend.ops(), []);
    await summoner.close();
  });

  it("makes a request that arrives while stopping wait for the stop, then start again", async () => {
    const { clock, backend, summoner } = await setup([spec(WWW)], { ttlSeconds: 1, reaperIntervalMs: 1000 });
    await summoner.request("www");
    const stopGate = deferred();
    backend.hold.stop = () => stopGate.promise;
    await clock.advance(3000);
    assert.equal(state(summoner), "stopping");
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(10);
    assert.equal(answer.settled, false);
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy"]);
    stopGate.resolve();
    await clock.advance(10);
    assert.equal(answer.settled, true);
    assert.deepEqual(answer.value, ["10.0.0.1"]);
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy", "start:www"]);
    assert.equal(state(summoner), "ready");
    await summoner.close();
  });

  it("fails a start that passes its timeout, backs off, then tries again", async () => {
    const { clock, backend, summoner } = await setup([spec(WWW)], { startTimeoutSeconds: 30 });
    backend.hold.start = () => new Promise(() => undefined); // never returns
    const first = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(29_999);
    assert.equal(first.settled, false);
    await clock.advance(1);
    assert.ok(first.error instanceof StartTimeoutError, String(first.error));
    assert.match((first.error as Error).message, /VM 'www' was not ready after 30 s/);
    assert.equal(state(summoner), "failed");
    assert.match(summoner.status()[0]!.lastError ?? "", /not ready after 30 s/);

    // During the back-off (1 s after the first failure) requests fail fast, without a backend call.
    const ops = backend.ops().length;
    await assert.rejects(summoner.request("www") as Promise<unknown>, StartTimeoutError);
    assert.equal(backend.ops().length, ops);

    // After the back-off, the next request tries again, and this time the start works.
    delete backend.hold.start;
    await clock.advance(1000);
    assert.deepEqual(await summoner.request("www"), ["10.0.0.1"]);
    assert.equal(state(summoner), "ready");
    assert.deepEqual(backend.ops(), ["start:www", "start:www"]);
    await summoner.close();
  });

  it("doubles the back-off after consecutive failures", async () => {
    const { clock, backend, summoner } = await setup();
    backend.hold.start = () => Promise.reject(new Error("no memory left"));
    await assert.rejects(summoner.request("www") as Promise<unknown>, /no memory left/);
    await clock.advance(1000);
    await assert.rejects(summoner.request("www") as Promise<unknown>, /no memory left/);
    assert.equal(backend.ops().length, 2);
    await clock.advance(1000); // the second back-off is 2 s
    await assert.rejects(summoner.request("www") as Promise<unknown>, /no memory left/);
    assert.equal(backend.ops().length, 2);
    await clock.advance(1000);
    await assert.rejects(summoner.request("www") as Promise<unknown>, /no memory left/);
    assert.equal(backend.ops().length, 3);
    await summoner.close();
  });

  it("stops a VM after 2 x TTL without requests, with the configured mode, and not before", async () => {
    const { clock, backend, summoner } = await setup([spec(WWW)], { ttlSeconds: 60, stopMode: "suspend" });
    await summoner.request("www");
    await clock.advance(100_000);
    summoner.request("www"); // resets the idle time
    await clock.advance(115_000);
    assert.equal(state(summoner), "ready");
    assert.deepEqual(backend.ops(), ["start:www"]);
    await clock.advance(10_000);
    assert.equal(state(summoner), "suspended");
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:suspend"]);
    // The next request resumes it.
    await summoner.request("www");
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:suspend", "resume:www"]);
    await summoner.close();
  });

  it("waits for the key, then the response delay, then answers", async () => {
    const backend = new TestBackend();
    const key = deferred();
    const seen: string[] = [];
    Object.assign(backend, {
      waitForKey: async (vm: VmRef, k: string, signal: AbortSignal) => {
        assert.ok(signal instanceof AbortSignal);
        seen.push(`wait:${vm.label}:${k}`);
        await key.promise;
      },
    });
    const { clock, summoner } = await setup(
      [spec(`${WWW},wait_for_key=data/ready,response_delay=2`)],
      {},
      backend,
    );
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(5000);
    assert.deepEqual(backend.ops(), ["start:www"]);
    assert.deepEqual(seen, ["wait:www:data/ready"]);
    assert.equal(answer.settled, false, "not ready before the key appears");
    key.resolve();
    await clock.advance(1999);
    assert.equal(answer.settled, false, "not ready before the response delay has passed");
    await clock.advance(1);
    assert.deepEqual(answer.value, ["10.0.0.1"]);
    await summoner.close();
  });

  it("honours the global response delay (-d) through the clock", async () => {
    const { clock, summoner } = await setup([spec(WWW)], { delaySeconds: 3 });
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(2999);
    assert.equal(answer.settled, false);
    await clock.advance(1);
    assert.deepEqual(answer.value, ["10.0.0.1"]);
    await summoner.close();
  });

  it("times out a wait for a key that never appears and aborts the wait", async () => {
    const backend = new TestBackend();
    let aborted = false;
    Object.assign(backend, {
      waitForKey: (_vm: VmRef, _k: string, signal: AbortSignal) =>
        new Promise<void>((_resolve, reject) => {
          signal.addEventListener("abort", () => {
            aborted = true;
            reject(new Error("aborted"));
          });
        }),
    });
    const { clock, summoner } = await setup(
      [spec(`${WWW},wait_for_key=data/ready`)],
      { startTimeoutSeconds: 5 },
      backend,
    );
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(5000);
    assert.ok(answer.error instanceof StartTimeoutError);
    assert.match(
      (answer.error as Error).message,
      /still waiting for key 'data\/ready' in the \w+ backend's xenstore/,
    );
    assert.ok(aborted, "the backend's wait is told to stop");
    await summoner.close();
  });

  it("polls the backend for addresses when the VM has no ip", async () => {
    const backend = new TestBackend();
    let calls = 0;
    Object.assign(backend, {
      addresses: async () => (++calls < 3 ? [] : ["192.0.2.7"]),
    });
    const { clock, summoner } = await setup([spec("dns=www.example.org,name=www")], {}, backend);
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(1000);
    assert.deepEqual(answer.value, ["192.0.2.7"]);
    assert.equal(calls, 3);
    assert.equal(summoner.request("www"), answer.value);
    await summoner.close();
  });

  it("notices a VM stopped behind our back, by event and by the reaper's state check", async () => {
    const { clock, backend, summoner } = await setup();
    await summoner.request("www");
    backend.states.set("www", "off");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "off", reason: "exited with code 0" });
    assert.equal(state(summoner), "off");
    await summoner.request("www");
    assert.deepEqual(backend.ops(), ["start:www", "start:www"]);

    backend.states.set("www", "crashed"); // no event this time: the reaper's check notices
    await clock.advance(5000);
    assert.equal(state(summoner), "failed");
    await summoner.request("www"); // a crash we did not cause is retried at once
    assert.deepEqual(backend.ops(), ["start:www", "start:www", "start:www"]);
    await summoner.close();
  });

  it("adopts a VM an event says was started behind our back only once its readiness passes, as a request would", async () => {
    const backend = new TestBackend();
    const key = deferred();
    const waits: string[] = [];
    Object.assign(backend, {
      waitForKey: async (vm: VmRef, k: string) => {
        waits.push(`${vm.label}:${k}`);
        await key.promise;
      },
    });
    // response_delay is skipped for an adoption (the VM was not started by us).
    const { clock, summoner } = await setup(
      [spec(`${WWW},wait_for_key=data/ready,response_delay=5`)],
      {},
      backend,
    );
    const started: string[] = [];
    summoner.onStarted((label) => started.push(label));
    backend.states.set("www", "running");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "running", reason: "started (booted)" });
    await clock.advance(1000);
    assert.equal(state(summoner), "starting", "not ready before its key appears");
    assert.deepEqual(waits, ["www:data/ready"], "the state is re-read, then its readiness checked");
    assert.equal(summoner.requestIfReady("www"), null, "not answered from memory");
    const a = summoner.request("www");
    const b = summoner.request("www");
    assert.ok(a instanceof Promise, "a request waits");
    assert.equal(a, b, "requests join the adoption's flight");
    const answer = track(a as Promise<readonly string[]>);
    await clock.advance(1000);
    assert.equal(answer.settled, false);
    key.resolve();
    await clock.advance(0);
    assert.deepEqual(answer.value, ["10.0.0.1"]);
    assert.equal(state(summoner), "ready");
    assert.ok(Array.isArray(summoner.request("www")), "then the hot path");
    assert.deepEqual(backend.ops(), [], "adopted, not started");
    assert.deepEqual(started, [], "no onStarted: jitsu did not start it");
    assert.deepEqual(waits, ["www:data/ready"], "one flight, one wait");
    const row = summoner.status()[0]!;
    assert.equal(row.totalStarts, 0, "an adoption is not a start");
    assert.equal(row.totalRequests, 3, "the event is not a request: only the three queries count");
    await summoner.close();
  });

  it("answers a VM found running at start-up or by a reload only once its readiness passes", async () => {
    const backend = new TestBackend();
    const keys = new Map([
      ["www", deferred()],
      ["api", deferred()],
    ]);
    Object.assign(backend, {
      waitForKey: async (vm: VmRef) => keys.get(vm.label)!.promise,
    });
    // A jitsu restarted while 'www' was booting: it runs, but its service may not be up yet.
    backend.states.set("www", "running");
    const { clock, summoner } = await setup([spec(`${WWW},wait_for_key=data/ready`)], {}, backend);
    await clock.advance(0);
    assert.equal(state(summoner), "starting", "not ready before its key appears");
    assert.equal(summoner.requestIfReady("www"), null, "not answered from memory");
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(1000);
    assert.equal(answer.settled, false);
    keys.get("www")!.resolve();
    await clock.advance(0);
    assert.deepEqual(answer.value, ["10.0.0.1"]);
    assert.equal(state(summoner), "ready");
    // A reload that adds a VM found running: the same.
    backend.states.set("api", "running");
    await summoner.setSpecs([spec(`${WWW},wait_for_key=data/ready`), spec(`${API},wait_for_key=data/ready`)]);
    await clock.advance(0);
    assert.equal(state(summoner, "api"), "starting");
    keys.get("api")!.resolve();
    await clock.advance(0);
    assert.equal(state(summoner, "api"), "ready");
    assert.deepEqual(backend.ops(), [], "adopted, never started");
    const rows = summoner.status();
    assert.deepEqual(
      rows.map((r) => [r.label, r.totalStarts]),
      [
        ["www", 0],
        ["api", 0],
      ],
    );
    await summoner.close();
  });

  it("stops a VM adopted at start-up 2 x TTL after the last request of the jitsu before, not after the adoption", async () => {
    const backend = new TestBackend();
    Object.assign(backend, { waitForKey: async () => undefined });
    backend.states.set("www", "running");
    const store = new MemoryStore();
    const now = new ManualClock().now();
    // Queried 100 s before this jitsu started; 2 x TTL is 120 s.
    await store.write([
      {
        label: "www",
        names: ["www.example.org"],
        ips: ["10.0.0.1"],
        backend: "test",
        backendRef: "ref-www",
        state: "ready",
        startedAt: now - 200_000,
        totalStarts: 1,
        totalRequests: 4,
        lastRequest: now - 100_000,
        stopMode: "destroy",
      },
    ]);
    const { clock, summoner } = await setup([spec(`${WWW},wait_for_key=data/ready`)], { store }, backend);
    await clock.advance(0);
    assert.equal(state(summoner), "ready");
    await clock.advance(15_000);
    assert.equal(state(summoner), "ready", "118 s idle: kept");
    await clock.advance(10_000);
    assert.equal(state(summoner), "off", "over 120 s idle: stopped");
    assert.deepEqual(backend.ops(), ["stop:www:destroy"]);
    await summoner.close();
  });

  it("adopts a VM started behind our back with no readiness checks at once, without a request", async () => {
    const { clock, backend, summoner } = await setup();
    backend.states.set("www", "suspended");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "suspended" });
    assert.equal(state(summoner), "suspended");
    backend.states.set("www", "running");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "running" });
    await clock.advance(0);
    assert.equal(state(summoner), "ready");
    assert.deepEqual(summoner.request("www"), ["10.0.0.1"], "answered from memory");
    assert.deepEqual(backend.ops(), []);
    const row = summoner.status()[0]!;
    assert.equal(row.totalStarts, 0);
    assert.equal(row.totalRequests, 1);
    await summoner.close();
  });

  it("finds the address of a VM without ip= started behind our back before it is ready", async () => {
    const backend = new TestBackend();
    let calls = 0;
    Object.assign(backend, {
      addresses: async () => (++calls < 3 ? [] : ["192.0.2.7"]),
    });
    const { clock, summoner } = await setup([spec("dns=www.example.org,name=www")], {}, backend);
    backend.states.set("www", "running");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "running" });
    await clock.advance(250);
    assert.equal(state(summoner), "starting", "no address yet");
    await clock.advance(250);
    assert.equal(state(summoner), "ready");
    assert.deepEqual(summoner.request("www"), ["192.0.2.7"]);
    assert.deepEqual(backend.ops(), []);
    await summoner.close();
  });

  it("starts nothing when a VM started behind our back is off again by the adoption's state read, unless a request joined", async () => {
    const { clock, backend, summoner } = await setup();
    const read = deferred();
    backend.hold.state = () => read.promise;
    backend.states.set("www", "running");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "running" });
    await clock.advance(0);
    assert.equal(state(summoner), "starting");
    backend.states.set("www", "off"); // destroyed again (its event is ignored while the flight runs)
    read.resolve();
    await clock.advance(0);
    assert.equal(state(summoner), "off");
    assert.deepEqual(backend.ops(), [], "nobody asked for it: not started");
    assert.equal(summoner.status()[0]!.totalStarts, 0);

    // The same, but a query arrives while the adoption reads the state: it wants the VM up.
    const again = deferred();
    backend.hold.state = () => again.promise;
    backend.states.set("www", "running");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "running" });
    await clock.advance(0);
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    backend.states.set("www", "off");
    again.resolve();
    await clock.advance(0);
    assert.deepEqual(answer.value, ["10.0.0.1"]);
    assert.deepEqual(backend.ops(), ["start:www"], "started as the query's own start");
    assert.equal(summoner.status()[0]!.totalStarts, 1);
    await summoner.close();
  });

  it("fails an adoption by event whose readiness times out like any adoption: back-off, then a request adopts it", async () => {
    const backend = new TestBackend();
    let key = deferred();
    Object.assign(backend, {
      waitForKey: (_vm: VmRef, _k: string, signal: AbortSignal) =>
        new Promise<void>((resolve, reject) => {
          signal.addEventListener("abort", () => reject(new Error("aborted")));
          void key.promise.then(resolve);
        }),
    });
    const { clock, summoner } = await setup(
      [spec(`${WWW},wait_for_key=data/ready`)],
      { startTimeoutSeconds: 5 },
      backend,
    );
    backend.states.set("www", "running");
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "running" });
    await clock.advance(5000);
    assert.equal(state(summoner), "failed");
    assert.match(
      summoner.status()[0]!.lastError ?? "",
      /not ready after 5 s \(still waiting for key 'data\/ready'/,
    );
    assert.equal(summoner.status()[0]!.failures, 1);
    // In its back-off, a query fails fast without a backend call.
    const reads = backend.calls.length;
    await assert.rejects(summoner.request("www") as Promise<unknown>, StartTimeoutError);
    assert.equal(backend.calls.length, reads);
    // After it, a query adopts it (still running) and waits for the key.
    await clock.advance(1000);
    key = deferred();
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(100);
    assert.equal(answer.settled, false);
    key.resolve();
    await clock.advance(0);
    assert.deepEqual(answer.value, ["10.0.0.1"]);
    assert.deepEqual(backend.ops(), [], "never started by jitsu");
    assert.equal(summoner.status()[0]!.totalStarts, 0);
    await summoner.close();
  });

  it("fails a start at once when the VM exits while starting", async () => {
    const { clock, backend, summoner } = await setup([spec(WWW)], { delaySeconds: 10 });
    const answer = track(summoner.request("www") as Promise<readonly string[]>);
    await clock.advance(100);
    backend.emit({ vm: { label: "www", ref: "ref-www" }, state: "crashed", reason: "exited with code 1" });
    await clock.advance(1);
    assert.match(String(answer.error), /stopped while starting \(exited with code 1\)/);
    assert.equal(state(summoner), "failed");
    await summoner.close();
  });

  it("adds and removes VMs on setSpecs without disturbing the others", async () => {
    const { backend, summoner } = await setup();
    const gate = deferred();
    backend.hold.start = () => gate.promise;
    const inFlight = summoner.request("www") as Promise<readonly string[]>;
    await summoner.setSpecs([spec(WWW), spec(API)]);
    gate.resolve();
    assert.deepEqual(await inFlight, ["10.0.0.1"]);
    assert.deepEqual(await summoner.request("api"), ["10.0.0.2", "2001:db8::2"]);
    assert.deepEqual(
      summoner.status().map((r) => r.label),
      ["www", "api"],
    );
    const wwwAnswer = summoner.request("www");
    await summoner.setSpecs([spec(API)]);
    assert.deepEqual(
      summoner.status().map((r) => r.label),
      ["api"],
    );
    await assert.rejects(summoner.request("www") as Promise<unknown>, ConfigError);
    assert.equal(backend.states.get("www"), "running", "a removed VM is left as it is");
    assert.deepEqual(wwwAnswer, ["10.0.0.1"]);
    // A changed VM takes its new address.
    await summoner.setSpecs([spec("dns=api.example.org,ip=10.0.0.9,name=api")]);
    assert.deepEqual(summoner.request("api"), ["10.0.0.9"]);
    await summoner.close();
  });

  it("logs a reload's added, changed and removed VMs one line each, or counts above 100", async () => {
    const lines: { level: number; msg: string }[] = [];
    const dest = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split("\n"))
          if (l !== "") lines.push(JSON.parse(l) as { level: number; msg: string });
        cb();
      },
    });
    const log = createLogger({ level: "info", format: "json", destination: dest });
    const { summoner } = await setup([spec(WWW), spec(API)], { log });
    const many = (n: number, ip: string): VmSpec[] =>
      Array.from({ length: n }, (_, i) => spec(`dns=m${i}.example.org,ip=${ip},name=m${i}`));

    await summoner.setSpecs([spec(WWW), ...many(2, "10.0.1.1")]);
    assert.deepEqual(
      lines.map((l) => l.msg),
      [
        "VM 'm0' added to the configuration (off)",
        "VM 'm1' added to the configuration (off)",
        "VM 'api' removed from the configuration; leaving it as it is (off)",
      ],
    );
    lines.length = 0;
    await summoner.setSpecs([spec(WWW), ...many(101, "10.0.1.2")]);
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg]),
      [[30, "Configuration: 99 VMs added, 2 changed, 0 removed (one line each at --log-level debug)"]],
    );
    assert.equal(summoner.status().length, 102);
    await summoner.close();
  });

  it("applies a changed VM to a start in flight without losing it", async () => {
    const { backend, summoner } = await setup();
    const gate = deferred();
    backend.hold.start = () => gate.promise;
    const inFlight = summoner.request("www") as Promise<readonly string[]>;
    await summoner.setSpecs([spec("dns=www.example.org,ip=10.0.0.5,name=www")]);
    gate.resolve();
    assert.deepEqual(await inFlight, ["10.0.0.5"]);
    assert.equal(state(summoner), "ready");
    assert.deepEqual(summoner.request("www"), ["10.0.0.5"]);
    assert.deepEqual(backend.ops(), ["start:www"]);
    await summoner.close();
  });

  it("retries a failed VM at once when its configuration changes", async () => {
    const { clock, backend, summoner } = await setup();
    backend.hold.start = () => Promise.reject(new Error("bad kernel"));
    await assert.rejects(summoner.request("www") as Promise<unknown>, /bad kernel/);
    await clock.advance(1000);
    await assert.rejects(summoner.request("www") as Promise<unknown>, /bad kernel/); // back-off now 2 s
    delete backend.hold.start;
    await summoner.setSpecs([spec(`${WWW},response_delay=0`)]);
    assert.equal(state(summoner), "off");
    assert.deepEqual(await summoner.request("www"), ["10.0.0.1"]);
    await summoner.close();
  });

  it("stops a VM that started but never became ready, once idle for 2 x TTL", async () => {
    const backend = new TestBackend();
    Object.assign(backend, {
      waitForKey: () => Promise.reject(new Error("xenstore said no")),
    });
    const { clock, summoner } = await setup(
      [spec(`${WWW},wait_for_key=data/ready`)],
      { ttlSeconds: 10 },
      backend,
    );
    await assert.rejects(summoner.request("www") as Promise<unknown>, /xenstore said no/);
    assert.equal(state(summoner), "failed");
    assert.equal(backend.states.get("www"), "running");
    await clock.advance(15_000);
    assert.deepEqual(backend.ops(), ["start:www"]);
    await clock.advance(10_000);
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy"]);
    assert.equal(state(summoner), "off");
    await summoner.close();
  });

  it("writes its counters to the store on ticks and reads them back at create", async () => {
    const store = new MemoryStore();
    const first = await setup([spec(WWW)], { store });
    await first.summoner.request("www");
    first.summoner.request("www");
    await first.clock.advance(5000);
    const records = await store.load();
    assert.equal(records[0]?.totalRequests, 2);
    assert.equal(records[0]?.state, "ready");
    await first.summoner.close();
    const second = await setup([spec(WWW)], { store }, first.backend);
    const row = second.summoner.status()[0]!;
    assert.equal(row.totalRequests, 2);
    assert.equal(row.totalStarts, 1);
    assert.equal(row.state, "ready", "reconciled with the backend: still running");
    await second.summoner.close();
  });

  it("fires onChange and onStarted, and stops only the VMs it started on close", async () => {
    const { backend, summoner } = await setup([spec(WWW), spec(API)]);
    backend.states.set("api", "running");
    const started: string[] = [];
    let changes = 0;
    summoner.onChange(() => changes++);
    summoner.onStarted((label) => started.push(label));
    await summoner.request("www");
    await summoner.request("api");
    assert.deepEqual(started, ["www"]);
    assert.ok(changes >= 2);
    await summoner.close({ stopVms: true });
    assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy"]);
    assert.equal(backend.states.get("api"), "running");
  });

  it("counts VMs by state for the one-line summary of a large configuration", async () => {
    const { summoner } = await setup([spec(WWW), spec(API)]);
    assert.equal(formatStateSummary(summoner.stateCounts()), "2 VMs: 2 off");
    await summoner.request("www");
    assert.deepEqual([...summoner.stateCounts()].sort(), [
      ["off", 1],
      ["ready", 1],
    ]);
    assert.equal(formatStateSummary(summoner.stateCounts()), "2 VMs: 1 ready, 1 off");
    assert.equal(formatStateSummary(new Map()), "0 VMs: none");
    assert.equal(formatStateSummary(new Map([["failed", 1]])), "1 VM: 1 failed");
    await summoner.close();
  });

  it("formats the stats table with the original's columns", async () => {
    const { summoner } = await setup([spec(WWW), spec(API)]);
    await summoner.request("www");
    const table = formatStatsTable(summoner.status());
    const lines = table.split("\n");
    assert.match(
      lines[1]!,
      /uuid .*name .*state .*delay .*synjitsu .*start time .*total starts .*stop mode .*DNS .*IP .*TTL .*total requests .*last request/,
    );
    assert.match(table, /\| www +\| ready +\|/);
    assert.match(table, /\| api +\| off +\|/);
    assert.match(table, /10\.0\.0\.2 2001:db8::2/);
    assert.equal(new Set(lines.map((l) => l.length)).size, 1, "every line has the same width");
    await summoner.close();
  });
});
