/**
 * Summon overhead and the storm, against one jitsu with many cold `process`
 * VMs (`sleep`, no ready probe, `-d 0`: the VM is ready as soon as the
 * process backend has started it).
 *
 * Method. Each cold start is a different VM (summon-0, summon-1, ...), queried
 * once, timed from send to answer. The overhead of that start is its query
 * time minus the backend's own work for that same start: the `backendMs`
 * field of jitsu's "VM 'x' is ready after N ms" JSON log record, the time
 * its `state()` and `start()` calls took, to the microsecond. Paired per start,
 * so the spawn's own variance (10-30 ms here) cancels out.
 *
 * Cross-check, not paired: between the starts, the bench itself drives the
 * real ProcessBackend (same code, same command) through `state()` then
 * `start()` and times it; percentile of the query times minus the same
 * percentile of those.
 *
 * summonSection gives the summon and storm rows; idleBaseline measures their
 * baseline rows earlier, while the shared servers are still pinned.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { systemClock } from "../src/clock/index.js";
import { buildSpecs } from "../src/cli/run.js";
import { findBackend } from "../src/backends/index.js";
import { silentLogger } from "../src/log/index.js";
import { queryOnce, storm, type StormResult } from "./dns-client.js";
import type { BenchContext } from "./context.js";
import { ratio, vs, type Row } from "./report.js";
import { startProcess } from "./procs.js";
import { logMessages, logRecords, startJitsu, stopJitsu, VM_EXEC, type Server } from "./servers.js";
import { NAME, type SharedServers } from "./shared-servers.js";
import { percentile } from "./stats.js";
import { which } from "./tools.js";

/** bench/peers/fork-exec.c in the source tree (this file runs from dist/bench/). */
const FORK_EXEC_SOURCE = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "bench",
  "peers",
  "fork-exec.c",
);

export function summonConfigs(count: number): string[] {
  const configs: string[] = [];
  for (let i = 0; i < count; i++) {
    configs.push(
      `name=summon-${i},dns=summon-${i}.cold.example,ip=10.9.${i >> 8}.${i & 255},exec=${VM_EXEC}`,
    );
  }
  configs.push(`name=storm,dns=storm.cold.example,ip=10.9.255.1,exec=${VM_EXEC}`);
  return configs;
}

export interface SummonResult {
  starts: number;
  queryMs: { p50: number; p99: number; max: number };
  backendMs: { p50: number; p99: number; max: number };
  /** Cross-check: percentiles of the query times minus those of the bench's own backend runs. */
  overheadMs: { p50: number; p99: number };
  /** Per start: query time minus jitsu's backendMs for that start (the target's measure). */
  perStartOverheadMs: { p50: number; p99: number; max: number; samples: number };
  /** Per start: query time minus jitsu's startMs (start to ready): the DNS layer and dispatch. */
  dnsOverheadMs: { p50: number; p99: number };
  failures: number;
  /** The peer, interleaved with jitsu's starts: query -> answer of bench/peers/fork-exec.c (null: not measured). */
  peerMs: { p50: number; p99: number; max: number; samples: number } | null;
}

function summary(values: number[]): { p50: number; p99: number; max: number } {
  return { p50: percentile(values, 50), p99: percentile(values, 99), max: Math.max(...values) };
}

/** measureIdleRtt's result: p50/p99/max per server key, ms. */
export type IdleBaseline = Record<string, { p50: number; p99: number; max: number }>;

/** The pause between queries in measureIdleRtt: about what jitsu idles between two cold starts of measureSummon. */
export const IDLE_GAP_MS = 20;

/**
 * The baseline of the summon rows: a query for a name each server answers at
 * once, sent after `IDLE_GAP_MS` of quiet, as each cold start's query is. It
 * prices the two wake-ups from idle (the server's, then the client's) that
 * every cold-start answer pays whatever the server does. Servers are asked
 * in turn, `count` times each; p50/p99 per server, ms.
 */
export async function measureIdleRtt(
  sides: readonly { key: string; server: Server; name: string }[],
  count: number,
): Promise<IdleBaseline> {
  const ms: Record<string, number[]> = {};
  for (let i = 0; i < count; i++) {
    for (const side of sides) {
      await new Promise((r) => setTimeout(r, IDLE_GAP_MS));
      const a = await queryOnce(side.server.port, side.name, "A", 5_000);
      if (a !== null && a.rcode === "NOERROR") (ms[side.key] ??= []).push(a.ms);
    }
  }
  return Object.fromEntries(Object.entries(ms).map(([k, v]) => [k, summary(v)]));
}

/** `warmup` starts first (not counted: the first runs of any code path are slower), then `count`. */
export async function measureSummon(
  jitsu: Server,
  stateDir: string,
  count: number,
  warmup: number,
  peer: Server | null = null,
): Promise<SummonResult> {
  const factory = findBackend("process");
  const backend = factory.create({
    connect: "",
    stateDir,
    settings: {},
    log: silentLogger(),
    clock: systemClock,
  });
  await backend.connect();
  const spec = buildSpecs(
    [`name=direct,dns=direct.cold.example,ip=10.9.254.1,exec=${VM_EXEC}`],
    "process",
  )[0]!;
  const ref = await backend.resolve(spec);
  const queryMs: number[] = [];
  const backendMs: number[] = [];
  const perStart: number[] = [];
  const queried: { vm: string; ms: number }[] = [];
  const peerMs: number[] = [];
  let failures = 0;
  try {
    for (let i = 0; i < warmup + count; i++) {
      if (peer !== null) {
        // The peer first, after the same quiet as jitsu's query gets below (the backend's stop).
        await new Promise((r) => setTimeout(r, IDLE_GAP_MS));
        const a = await queryOnce(peer.port, `summon-${i}.cold.example`, "A", 10_000);
        if (a !== null && a.addresses.length > 0 && i >= warmup) peerMs.push(a.ms);
        killStarted(peer);
      }
      const t0 = performance.now();
      await backend.state(ref);
      await backend.start(ref);
      const own = performance.now() - t0;
      await backend.stop(ref, "destroy");

      const answer = await queryOnce(jitsu.port, `summon-${i}.cold.example`, "A", 10_000);
      if (answer === null || answer.rcode !== "NOERROR" || answer.addresses.length === 0) {
        failures++;
        continue;
      }
      if (i < warmup) continue;
      backendMs.push(own);
      queryMs.push(answer.ms);
      queried.push({ vm: `summon-${i}`, ms: answer.ms });
    }
  } finally {
    await backend.stop(ref, "destroy").catch(() => undefined);
    await backend.close();
    if (peer !== null) {
      await new Promise((r) => setTimeout(r, 50));
      killStarted(peer);
    }
  }
  // jitsu's own account of each start, read from its log once the starts are done.
  await new Promise((r) => setTimeout(r, 300));
  const own = new Map<string, { startMs: number; backendMs: number }>();
  for (const o of logRecords(jitsu.proc)) {
    const m = typeof o.msg === "string" ? /^VM '(summon-\d+)' is ready after/.exec(o.msg) : null;
    if (m !== null && typeof o.startMs === "number" && typeof o.backendMs === "number")
      own.set(m[1]!, { startMs: o.startMs, backendMs: o.backendMs });
  }
  const dnsPart: number[] = [];
  for (const { vm, ms } of queried) {
    const o = own.get(vm);
    if (o === undefined) continue;
    perStart.push(ms - o.backendMs);
    dnsPart.push(ms - o.startMs);
  }
  const q = summary(queryMs);
  const b = summary(backendMs);
  return {
    starts: queryMs.length,
    queryMs: q,
    backendMs: b,
    overheadMs: { p50: q.p50 - b.p50, p99: q.p99 - b.p99 },
    perStartOverheadMs: { ...summary(perStart), samples: perStart.length },
    dnsOverheadMs: { p50: percentile(dnsPart, 50), p99: percentile(dnsPart, 99) },
    failures,
    peerMs: peer === null ? null : { ...summary(peerMs), samples: peerMs.length },
  };
}

/**
 * The summon rows' peer (bench/peers/fork-exec.c): compiled with the
 * machine's C compiler into the bench's temp dir and started; null, with the
 * reason logged, when there is no compiler.
 */
export async function startForkExecPeer(ctx: BenchContext): Promise<Server | null> {
  const cc = which("cc") ?? which("gcc");
  if (cc === null) {
    ctx.log("summon: no C compiler (cc, gcc): the fork+exec peer is not measured (apt-get install gcc)");
    return null;
  }
  const binary = join(ctx.dir, "fork-exec");
  execFileSync(cc, ["-O2", "-o", binary, FORK_EXEC_SOURCE], { stdio: "inherit" });
  const proc = await startProcess("fork-exec peer", binary, VM_EXEC.split(" "), {
    readyLine: (l) => l.startsWith("ready "),
    keepLines: true,
  });
  const port = Number(proc.lines.find((l) => l.startsWith("ready "))!.slice(6));
  return { label: "fork-exec peer", port, proc };
}

/** Kills (by process group) the commands the fork-exec peer started so far: it prints each pid. */
function killStarted(peer: Server): void {
  const lines = peer.proc.lines;
  for (let i = 0; i < lines.length; i++) {
    const pid = Number(lines[i]);
    if (!Number.isInteger(pid) || pid <= 1) continue;
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone already
    }
    lines[i] = "";
  }
}

/** UDP datagrams the kernel dropped for a full receive buffer, machine-wide (/proc/net/snmp "Udp: RcvbufErrors"). */
export function udpRcvbufErrors(): number {
  const lines = readFileSync("/proc/net/snmp", "utf8")
    .split("\n")
    .filter((l) => l.startsWith("Udp:"));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  return Number(values[names.indexOf("RcvbufErrors")] ?? Number.NaN);
}

export interface StormSummary extends StormResult {
  /** Receive-buffer drops during the storm (machine-wide, so other traffic may add a few). */
  rcvbufDrops: number;
  /** "Starting VM 'storm'" lines in jitsu's log: must be exactly 1. */
  starts: number;
  p50Ms: number;
  p99Ms: number;
}

export async function measureStorm(jitsu: Server, count: number): Promise<StormSummary> {
  const drops0 = udpRcvbufErrors();
  const result = await storm(jitsu.port, "storm.cold.example", count);
  const rcvbufDrops = udpRcvbufErrors() - drops0;
  await new Promise((r) => setTimeout(r, 300));
  const starts = logMessages(jitsu.proc).filter((msg) => msg === "Starting VM 'storm'").length;
  return {
    ...result,
    rcvbufDrops,
    starts,
    p50Ms: percentile(result.latenciesMs, 50),
    p99Ms: percentile(result.latenciesMs, 99),
  };
}

/** The summon rows' baseline (measureIdleRtt) on the node responder and jitsu, while they are still pinned. */
export async function idleBaseline(ctx: BenchContext, s: SharedServers): Promise<IdleBaseline> {
  ctx.log(`idle baseline: ${ctx.params.summonStarts} queries each after ${IDLE_GAP_MS} ms of quiet`);
  return measureIdleRtt(
    [
      { key: "node", server: s.node, name: NAME },
      { key: "jitsu", server: s.jitsu, name: NAME },
    ],
    ctx.params.summonStarts,
  );
}

export interface SummonSection {
  rows: Row[];
  summon: SummonResult;
  storm: StormSummary;
  idle: IdleBaseline;
  /** The results file's `summon` and `storm`. */
  json: { summon: Record<string, unknown>; storm: Record<string, unknown> };
}

/**
 * Summon overhead then the storm, on their own jitsu (pinned), once the shared
 * servers are stopped; `idle` (idleBaseline, measured before) gives the
 * baseline rows.
 */
export async function summonSection(ctx: BenchContext, idle: IdleBaseline): Promise<SummonSection> {
  const { params } = ctx;
  const warmup = 5;
  ctx.log(
    `summon: ${params.summonStarts} cold starts (+${warmup} warm-up), then a storm of ${params.stormQueries}`,
  );
  const jitsu = ctx.underTest(
    await startJitsu({
      label: "jitsu summon",
      configs: summonConfigs(params.summonStarts + warmup),
      upstreamPort: null,
      logLevel: "info",
      probe: { name: "cold.example", type: "SOA" },
    }),
  );
  const peer = await startForkExecPeer(ctx);
  if (peer !== null) ctx.underTest(peer);
  const summon = await measureSummon(jitsu, join(ctx.dir, "state"), params.summonStarts, warmup, peer);
  await peer?.proc.stop();
  const stormResult = await measureStorm(jitsu, params.stormQueries);
  await stopJitsu(jitsu);
  const p = summon.peerMs;
  const rows: Row[] = [
    {
      scenario: `summon: cold query -> answer (${summon.starts} starts)`,
      p50Ms: summon.queryMs.p50,
      p99Ms: summon.queryMs.p99,
      vs:
        p === null
          ? ""
          : `${vs(summon.queryMs.p50, p.p50, "fork+exec")} (p99: ${ratio(summon.queryMs.p99, p.p99).toFixed(2)} x)`,
      note: summon.failures > 0 ? `${summon.failures} failed` : "",
    },
    {
      scenario: "  peer: fork+exec by a minimal C launcher",
      p50Ms: p?.p50,
      p99Ms: p?.p99,
      note:
        p === null
          ? "not measured (no C compiler)"
          : `bench/peers/fork-exec.c: the same query, answered once '${VM_EXEC}' is exec'd; interleaved, ${p.samples} starts`,
    },
    {
      scenario: "  overhead per start (query - its backend work)",
      p50Ms: summon.perStartOverheadMs.p50,
      p99Ms: summon.perStartOverheadMs.p99,
      note: `paired per start (jitsu's backendMs), ${summon.perStartOverheadMs.samples} samples, max ${summon.perStartOverheadMs.max.toFixed(2)} ms`,
    },
    {
      scenario: "    of which outside the summoner",
      p50Ms: summon.dnsOverheadMs.p50,
      p99Ms: summon.dnsOverheadMs.p99,
      note: "query - jitsu's startMs: client, DNS layer, dispatch",
    },
    {
      scenario: "  cross-check: bench's own backend runs",
      p50Ms: summon.backendMs.p50,
      p99Ms: summon.backendMs.p99,
      note: `state+start in the bench process; query p50/p99 minus these: ${summon.overheadMs.p50.toFixed(2)} / ${summon.overheadMs.p99.toFixed(2)} ms`,
    },
    {
      scenario: `  baseline: a ready name after ${IDLE_GAP_MS} ms idle, node responder`,
      p50Ms: idle.node?.p50,
      p99Ms: idle.node?.p99,
      note: "the two wake-ups from idle every cold answer pays, whatever the server",
    },
    {
      scenario: `  baseline: a ready name after ${IDLE_GAP_MS} ms idle, jitsu`,
      p50Ms: idle.jitsu?.p50,
      p99Ms: idle.jitsu?.p99,
      vs: vs(idle.jitsu?.p99, idle.node?.p99, "node p99"),
    },
    {
      scenario: `storm: ${stormResult.sent} queries, one cold VM`,
      p50Ms: stormResult.p50Ms,
      p99Ms: stormResult.p99Ms,
      note: `starts ${stormResult.starts}, answered ${stormResult.answered} (${stormResult.ok} with address), resent ${stormResult.resent} (UDP rcvbuf drops ${stormResult.rcvbufDrops}), all in ${stormResult.allAnsweredMs.toFixed(0)} ms`,
    },
  ];
  return {
    rows,
    summon,
    storm: stormResult,
    idle,
    json: {
      summon: { ...summon, idleBaselineMs: idle, idleGapMs: IDLE_GAP_MS },
      storm: { ...stormResult, latenciesMs: undefined },
    },
  };
}
