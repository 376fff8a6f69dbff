/**
 * The docker backend's event re-reads against an engine double
 * (test/doubles/docker-engine.ts) whose answers the test orders: a container
 * removed behind jitsu's back is reported removed by the first event whose
 * re-read finds it gone, Podman's 500 for a container removed while the
 * inspect waited counts as gone, a state read that fails does not silence an
 * event's re-read, a late 'start' does not report a pause, and a re-read
 * answered before a newer state read still reports nothing.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { DockerBackend } from "../../../src/backends/docker/backend.js";
import { dockerBackend } from "../../../src/backends/docker/index.js";
import { parseDockerTarget } from "../../../src/backends/docker/target.js";
import type { BackendEvent, VmRef } from "../../../src/backends/contract.js";
import { ManualClock, flushPromises } from "../../../src/clock/index.js";
import { buildVmSpec, parseConfigString } from "../../../src/config/index.js";
import { BackendError } from "../../../src/errors/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { DockerEngineDouble } from "../../doubles/docker-engine.js";

/** Waits (bounded) for what a real socket round trip makes true. */
async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("docker event re-reads (engine double)", () => {
  let dir: string;
  let engine: DockerEngineDouble;
  let backend: DockerBackend;
  let ref: VmRef;
  let events: BackendEvent[];
  let engines = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "jitsu-docker-events-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    // A socket of its own per test: Node's agent keeps connections to a path alive between tests.
    engine = new DockerEngineDouble(join(dir, `engine-${++engines}.sock`));
    await engine.start();
    engine.add("fresh", "running");
    backend = new DockerBackend(parseDockerTarget(engine.uri), {
      log: silentLogger(),
      clock: new ManualClock(),
      settings: {},
    });
    await backend.connect();
    const spec = buildVmSpec(parseConfigString("dns=fresh.jitsu.test,name=fresh", "CONFIG #1"), "CONFIG #1", {
      backendKeys: dockerBackend.keys,
      backendName: "docker",
    });
    ref = await backend.resolve(spec);
    events = [];
    backend.onEvent((e) => events.push(e));
    assert.equal(await backend.state(ref), "running");
    assert.equal(engine.eventStreams, 1);
  });

  afterEach(async () => {
    await backend.close();
    await engine.stop();
  });

  /** Waits until `n` more inspects have been answered and their re-reads have run. */
  async function settled(inspectsBefore: number, n: number): Promise<void> {
    await until(`${n} re-read(s)`, () => engine.inspects.length >= inspectsBefore + n);
    await flushPromises();
  }

  it("podman rm --force: the stop delivered alone, re-read with the container gone, is reported as removed", async () => {
    engine.remove("fresh");
    engine.emit("stop", "fresh");
    await until("an event", () => events.length > 0);
    assert.deepEqual(
      events.map((e) => [e.state, e.reason]),
      [["off", "removed"]],
    );
    // The died and remove that follow change nothing.
    const n = engine.inspects.length;
    engine.emit("died", "fresh", { exitCode: "137" });
    engine.emit("remove", "fresh");
    await settled(n, 2);
    assert.equal(events.length, 1);
  });

  it("Podman's 500 for a container removed while the inspect waited counts as gone", async () => {
    engine.midRemoval("fresh");
    engine.emit("died", "fresh", { exitCode: "137" });
    await until("an event", () => events.length > 0);
    assert.deepEqual(
      events.map((e) => [e.state, e.reason]),
      [["off", "removed"]],
    );
    // A state read then (the reaper's, a query's) says off too, not an error.
    assert.equal(await backend.state(ref), "off");
  });

  it("a state read that fails meanwhile does not silence an event's re-read", async () => {
    const reread = engine.hold();
    engine.emit("died", "fresh", { exitCode: "137" });
    await reread.arrived;
    const read = engine.hold();
    const state = backend.state(ref);
    await read.arrived;
    read.release("error");
    await assert.rejects(
      state,
      (err: unknown) => err instanceof BackendError && /cannot read the state/.test(err.message),
    );
    reread.release("gone");
    await until("an event", () => events.length > 0);
    assert.deepEqual(
      events.map((e) => [e.state, e.reason]),
      [["off", "removed"]],
    );
  });

  it("a start whose re-read finds the container paused already leaves the report to the pause", async () => {
    engine.setStatus("fresh", "paused");
    const n = engine.inspects.length;
    engine.emit("start", "fresh");
    await settled(n, 1);
    engine.emit("pause", "fresh");
    await until("an event", () => events.length > 0);
    assert.deepEqual(
      events.map((e) => [e.state, e.reason]),
      [["paused", "pause"]],
    );
  });

  it("a re-read answered after a newer state read reports nothing (the newer read knows better)", async () => {
    const reread = engine.hold();
    engine.setStatus("fresh", "exited");
    engine.emit("died", "fresh", { exitCode: "137" });
    await reread.arrived;
    assert.equal(await backend.state(ref), "off");
    // The held answer is an older one: the container still ran when it was read.
    engine.setStatus("fresh", "running");
    reread.release();
    // Started again: the next event's re-read reports it (after the held one: they run in order).
    engine.emit("start", "fresh");
    await until("an event", () => events.length > 0);
    assert.deepEqual(
      events.map((e) => [e.state, e.reason]),
      [["running", "start"]],
    );
  });
});
