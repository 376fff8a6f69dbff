/**
 * ClusterPrimary with a real forked worker and a real Summoner (the summoner
 * tests' in-memory backend at the backend boundary): a summon through the
 * worker, the hot path from the pushed ready map, counts collected on demand,
 * a stop pushed to the worker, and the restart policy (shortened) giving up
 * on a worker that keeps dying; and VMs withheld for an eviction
 * (`withhold`) stay withheld through another VM's ready push until the
 * decision. Real dig.
 */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import cluster from "node:cluster";
import { it } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { ClusterPrimary } from "../../src/cluster/index.js";
import { FORWARD_DEFAULTS } from "../../src/dns/index.js";
import { createLogger } from "../../src/log/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { dig } from "../support/index.js";
import { TestBackend, spec } from "../doubles/test-backend.js";
import { summonerOptions } from "../support/summoner.js";

/** What both tests give ClusterPrimary.start beside the summoner, the log and the restart policy. */
function primaryOptions(specs: ReturnType<typeof spec>[]) {
  return {
    bind: "127.0.0.1",
    port: 0,
    ttl: 60,
    logLevel: "error" as const,
    logFormat: "text" as const,
    upstreams: [],
    forwarding: FORWARD_DEFAULTS,
    tcpPerClient: 8,
    zone: specs,
    allowRecursion: ["any"],
    allowSummon: ["any"],
    localnets: [],
    closeTimeoutMs: 5000,
  };
}

it("summons through a worker, answers from its ready map, and gives up on a worker that keeps dying", async (t) => {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const specs = [spec("dns=www.example.org,ip=127.0.0.1,name=www")];
  const summoner = await Summoner.create(
    summonerOptions({
      backend,
      specs,
      clock,
    }),
  );
  let lines = "";
  const out = new PassThrough();
  out.on("data", (d: Buffer) => (lines += d.toString()));
  const waitFor = async (pattern: RegExp): Promise<void> => {
    for (let i = 0; i < 200 && !pattern.test(lines); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(lines, pattern);
  };
  const primary = await ClusterPrimary.start({
    workers: 1,
    summoner,
    log: createLogger({ level: "info", format: "text", destination: out }),
    ...primaryOptions(specs),
    restart: { minIntervalMs: 100, limit: 2, windowMs: 60_000 },
  });
  t.after(async () => {
    await primary.close();
    await summoner.close();
  });

  // Cold: the worker asks the primary, whose Summoner starts the VM.
  const cold = await dig(primary.port, ["www.example.org", "A"]);
  assert.equal(cold.answers[0]?.data, "127.0.0.1");
  assert.deepEqual(backend.ops(), ["start:www"]);
  // Hot: from the worker's ready map; counted there, applied when collected.
  for (let i = 0; i < 3; i++) {
    assert.equal((await dig(primary.port, ["www.example.org", "A"])).answers[0]?.data, "127.0.0.1");
  }
  await primary.collect();
  assert.equal(summoner.status()[0]?.totalRequests, 4);
  assert.deepEqual(backend.ops(), ["start:www"]);

  // A stop is pushed to the worker: the next query summons again through the primary.
  await summoner.stopVm("www");
  assert.equal((await dig(primary.port, ["www.example.org", "A"])).answers[0]?.data, "127.0.0.1");
  assert.deepEqual(backend.ops(), ["start:www", "stop:www:destroy", "start:www"]);

  // Killed: replaced twice, then given up on (limit 2), with nothing left to answer.
  for (let round = 1; round <= 3; round++) {
    const [pid] = primary.pids();
    assert.ok(pid !== undefined);
    process.kill(pid, "SIGKILL");
    if (round < 3) await waitFor(new RegExp(`(DNS worker 1 replaced.*[\\s\\S]*){${round}}`));
  }
  await waitFor(
    /DNS worker 1 was replaced 2 times within 60 s and died again; not starting it again: no DNS worker is left/,
  );
  assert.deepEqual(primary.pids(), []);
  assert.equal((await dig(primary.port, ["+time=1", "www.example.org", "A"])).status, "TIMEOUT");
});

it("withholds VMs from the workers until an eviction is decided, whatever changes meanwhile", async (t) => {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const specs = [
    spec("dns=www.example.org,ip=127.0.0.1,name=www"),
    spec("dns=db.example.org,ip=127.0.0.2,name=db"),
  ];
  const summoner = await Summoner.create(summonerOptions({ backend, specs, clock }));
  const primary = await ClusterPrimary.start({
    workers: 1,
    summoner,
    log: createLogger({ level: "error", format: "text", destination: new PassThrough() }),
    ...primaryOptions(specs),
  });
  t.after(async () => {
    await primary.close();
    await summoner.close();
  });
  assert.equal((await dig(primary.port, ["www.example.org", "A"])).answers[0]?.data, "127.0.0.1");

  // What the primary tells the worker from here on.
  const [pid] = primary.pids();
  const worker = Object.values(cluster.workers ?? {}).find((w) => w?.process.pid === pid);
  assert.ok(pid !== undefined && worker !== undefined);
  const told: { t: string; set?: [string, unknown][]; unset?: string[] }[] = [];
  const send = worker.send.bind(worker) as (...args: unknown[]) => boolean;
  (worker as { send: (...args: unknown[]) => boolean }).send = (msg, ...rest) => {
    told.push(msg as (typeof told)[number]);
    return send(msg, ...rest);
  };
  const setsWww = (): boolean =>
    told.some((m) => m.t === "ready" && (m.set ?? []).some(([label]) => label === "www"));

  // The worker is stopped (SIGSTOP) so the collection is still waiting for its counts when db starts.
  process.kill(pid, "SIGSTOP");
  let atDecision: typeof told | undefined;
  // What the worker had been told when withhold resolves (the summoner decides in these promise jobs).
  const withheld = primary.withhold(["www"]).then(() => void (atDecision = [...told]));
  try {
    // db starts and is ready meanwhile: a ready push, which must leave www out.
    await summoner.startVm("db");
  } finally {
    process.kill(pid, "SIGCONT");
  }
  await withheld;
  assert.deepEqual(
    atDecision!
      .filter((m) => m.t === "ready")
      .map((m) => ({ set: (m.set ?? []).map(([l]) => l), unset: m.unset })),
    [
      { set: [], unset: ["www"] },
      { set: ["db"], unset: [] },
    ],
  );
  // Not stopped: given back once the decision is made.
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.equal(setsWww(), true);
});
