/**
 * Latency at a fixed rate: `dnsperf -Q RATE -v` at 50 % of the node
 * responder's best QPS, against jitsu, the node responder, dnsmasq and
 * unbound, each pinned to the server CPU; `latencyRounds` rounds, interleaved,
 * the run with the lowest p99 counts per side. p50/p99 come from dnsperf's
 * per-query lines.
 */
import type { BenchContext } from "./context.js";
import { resultJson, runDnsperf, type DnsperfResult } from "./dnsperf.js";
import { vs, type Row } from "./report.js";
import type { Server } from "./servers.js";
import type { FullServers } from "./shared-servers.js";
import { percentile } from "./stats.js";

/** A side's run with the lowest p99, and its p50 and p99, ms. */
export interface LatencyBest {
  p50: number;
  p99: number;
  result: DnsperfResult;
}

export interface LatencyResult {
  rows: Row[];
  rateQps: number;
  /** Runs dnsperf could not finish, as `latency/SIDE`: reported under the table, not counted. */
  failed: Record<string, string[]>;
  jitsu: LatencyBest | undefined;
  json: Record<string, unknown>;
}

export async function latencySection(
  ctx: BenchContext,
  s: FullServers,
  nodeQps: number | undefined,
): Promise<LatencyResult> {
  const { params } = ctx;
  const rate = 0.5 * (nodeQps ?? 0);
  const sides: { key: string; server: Server }[] = [
    { key: "jitsu", server: s.jitsu },
    { key: "node", server: s.node },
    { key: "dnsmasq", server: s.dnsmasq },
    { key: "unbound", server: s.unbound },
  ];
  const lat: Record<string, DnsperfResult[]> = {};
  const failed: Record<string, string[]> = {};
  for (let round = 1; round <= params.latencyRounds; round++) {
    for (const side of round % 2 === 1 ? sides : [...sides].reverse()) {
      ctx.log(
        `latency round ${round}/${params.latencyRounds}: ${side.key} at ${Math.round(rate)} qps (${params.latencySeconds} s)`,
      );
      try {
        const r = await runDnsperf({
          dnsperf: ctx.tools.dnsperf,
          port: side.server.port,
          queryFile: s.hotFile,
          seconds: params.latencySeconds,
          rateQps: rate,
        });
        (lat[side.key] ??= []).push(r);
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        ctx.log(`latency ${side.key}: ${why}`);
        (failed[`latency/${side.key}`] ??= []).push(why);
      }
    }
  }
  // Best of the rounds = the run with the lower p99.
  const latBest = (key: string): LatencyBest | undefined => {
    let out: LatencyBest | undefined;
    for (const r of lat[key] ?? []) {
      const p99 = percentile(r.latenciesMs, 99);
      if (out === undefined || p99 < out.p99) out = { p50: percentile(r.latenciesMs, 50), p99, result: r };
    }
    return out;
  };
  const jl = latBest("jitsu");
  const rows: Row[] = sides.map(({ key }) => {
    const b = latBest(key);
    return {
      scenario: `latency @ ${Math.round(rate)} qps (50% node): ${key}`,
      p50Ms: b?.p50,
      p99Ms: b?.p99,
      vs: key === "jitsu" ? "" : vs(jl?.p99, b?.p99, `${key} p99 (jitsu)`),
      note:
        b === undefined
          ? ""
          : `${b.result.completed} answers${b.result.lost > 0 ? `, lost ${b.result.lost}` : ""}`,
    };
  });
  return {
    rows,
    rateQps: rate,
    failed,
    jitsu: jl,
    json: {
      rateQps: rate,
      ...Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, v.map(resultJson)])),
    },
  };
}
