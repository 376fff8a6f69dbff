/**
 * Summon overhead and the storm, against one jitsu with many cold `process`
 * VMs (`sleep`, no ready probe, `-d 0`: the VM is ready as soon as the
 * process backend has started it).
 *
 * Method. Each cold start is a different VM (summon-0, summon-1, ...), queried
 * once. For each, in turn:
 *  1. the backend's own work: the bench itself drives the real ProcessBackend
 *     (the same code, the same command) through what the summoner asks of it
 *     on a cold start, `state()` then `start()`, and times it;
 *  2. through jitsu: one A query for the VM's name, timed from send to answer.
 * Overhead = percentile of (2) minus the same percentile of (1), interleaved so
 * both see the same machine load. A second, per-start estimate subtracts
 * jitsu's own log line "VM 'x' is ready after N ms" (whole ms, so it is coarse)
 * from that start's query time: what the DNS layer and the dispatch add.
 */
import { readFileSync } from "node:fs";
import { systemClock } from "../src/clock/index.js";
import { buildSpecs } from "../src/cli/run.js";
import { findBackend } from "../src/backends/index.js";
import { silentLogger } from "../src/log/index.js";
import { queryOnce, storm, type StormResult } from "./dns-client.js";
import { logMessages, type Server } from "./servers.js";
import { percentile } from "./stats.js";

export const SUMMON_EXEC = "sleep 300";

export function summonConfigs(count: number): string[] {
  const configs: string[] = [];
  for (let i = 0; i < count; i++) {
    configs.push(
      `name=summon-${i},dns=summon-${i}.cold.example,ip=10.9.${i >> 8}.${i & 255},exec=${SUMMON_EXEC}`,
    );
  }
  configs.push(`name=storm,dns=storm.cold.example,ip=10.9.255.1,exec=${SUMMON_EXEC}`);
  return configs;
}

export interface SummonResult {
  starts: number;
  queryMs: { p50: number; p99: number; max: number };
  backendMs: { p50: number; p99: number; max: number };
  overheadMs: { p50: number; p99: number };
  /** Per start: query time minus jitsu's "ready after N ms" (whole ms). */
  perStartOverheadMs: { p50: number; p99: number; samples: number };
  failures: number;
}

function summary(values: number[]): { p50: number; p99: number; max: number } {
  return { p50: percentile(values, 50), p99: percentile(values, 99), max: Math.max(...values) };
}

/** `warmup` starts first (not counted: the first runs of any code path are slower), then `count`. */
export async function measureSummon(
  jitsu: Server,
  stateDir: string,
  count: number,
  warmup: number,
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
    [`name=direct,dns=direct.cold.example,ip=10.9.254.1,exec=${SUMMON_EXEC}`],
    "process",
  )[0]!;
  const ref = await backend.resolve(spec);
  const queryMs: number[] = [];
  const backendMs: number[] = [];
  const perStart: number[] = [];
  let failures = 0;
  try {
    for (let i = 0; i < warmup + count; i++) {
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
    }
  } finally {
    await backend.stop(ref, "destroy").catch(() => undefined);
    await backend.close();
  }
  // jitsu's own account of each start, read from its log once the starts are done.
  await new Promise((r) => setTimeout(r, 300));
  const readyAfter = new Map<string, number>();
  for (const msg of logMessages(jitsu.proc)) {
    const m = /^VM '(summon-\d+)' is ready after (\d+) ms/.exec(msg);
    if (m !== null) readyAfter.set(m[1]!, Number(m[2]));
  }
  let k = 0;
  for (let i = warmup; i < warmup + count; i++) {
    const n = readyAfter.get(`summon-${i}`);
    const q = queryMs[k++];
    if (n !== undefined && q !== undefined) perStart.push(q - n);
  }
  const q = summary(queryMs);
  const b = summary(backendMs);
  return {
    starts: queryMs.length,
    queryMs: q,
    backendMs: b,
    overheadMs: { p50: q.p50 - b.p50, p99: q.p99 - b.p99 },
    perStartOverheadMs: {
      p50: percentile(perStart, 50),
      p99: percentile(perStart, 99),
      samples: perStart.length,
    },
    failures,
  };
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
