/**
 * dnsperf runs and what we read from its output. Throughput comes from its
 * summary ("Queries per second"); latency percentiles from its `-v` lines
 * ("> NOERROR www.example.org A 0.000123", one per answered query, latency in
 * seconds), since the summary only gives an average and a standard deviation.
 */
import { spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BenchContext } from "./context.js";
import type { Server } from "./servers.js";
import { percentile } from "./stats.js";

export interface DnsperfResult {
  sent: number;
  completed: number;
  lost: number;
  qps: number;
  /** Average latency in ms. */
  avgMs: number;
  /** Answers that were not NOERROR, by rcode. */
  otherRcodes: Record<string, number>;
  /** Per-query latencies in ms (only with `-v`). */
  latenciesMs: number[];
  /** CPU time the server used per answered query, microseconds (set by the caller). */
  serverCpuUs?: number;
}

function num(text: string, re: RegExp, what: string): number {
  const m = re.exec(text);
  if (m === null || m[1] === undefined) throw new Error(`dnsperf output has no ${what}`);
  return Number(m[1]);
}

/** Parses dnsperf 2.x standard output (with or without `-v`). */
export function parseDnsperf(out: string): DnsperfResult {
  const latenciesMs: number[] = [];
  for (const line of out.split("\n")) {
    if (!line.startsWith("> ")) continue;
    // "> NOERROR www.example.org A 0.000123"
    const lastSpace = line.lastIndexOf(" ");
    const seconds = Number(line.slice(lastSpace + 1));
    if (Number.isFinite(seconds)) latenciesMs.push(seconds * 1000);
  }
  const otherRcodes: Record<string, number> = {};
  const codes = /Response codes:\s+(.*)/.exec(out)?.[1] ?? "";
  for (const m of codes.matchAll(/([A-Z]+) (\d+) \(/g)) {
    if (m[1] !== "NOERROR") otherRcodes[m[1]!] = Number(m[2]);
  }
  return {
    sent: num(out, /Queries sent:\s+(\d+)/, "'Queries sent'"),
    completed: num(out, /Queries completed:\s+(\d+)/, "'Queries completed'"),
    lost: num(out, /Queries lost:\s+(\d+)/, "'Queries lost'"),
    qps: num(out, /Queries per second:\s+([\d.]+)/, "'Queries per second'"),
    avgMs: num(out, /Average Latency \(s\):\s+([\d.]+)/, "'Average Latency'") * 1000,
    otherRcodes,
    latenciesMs,
  };
}

export interface DnsperfRun {
  dnsperf: string;
  port: number;
  queryFile: string;
  seconds: number;
  tcp?: boolean;
  /** Limit the rate (-Q) and record per-query latency (-v). */
  rateQps?: number;
  clients?: number;
  outstanding?: number;
  /** Run dnsperf on these CPUs (`taskset -c`), whatever the bench's own affinity. */
  cpus?: string;
}

export function dnsperfArgs(run: DnsperfRun): string[] {
  const args = ["-s", "127.0.0.1", "-p", String(run.port), "-d", run.queryFile, "-l", String(run.seconds)];
  args.push("-c", String(run.clients ?? 4), "-q", String(run.outstanding ?? 100), "-t", "2");
  if (run.tcp === true) args.push("-m", "tcp");
  if (run.rateQps !== undefined) args.push("-Q", String(Math.max(1, Math.round(run.rateQps))), "-v");
  return args;
}

export async function runDnsperf(run: DnsperfRun): Promise<DnsperfResult> {
  const args = dnsperfArgs(run);
  // dnsperf's output goes to a file, read once it exits: with -v that is a line per
  // query (40,000 a second), and a pipe would keep the bench busy on the load CPU
  // while dnsperf measures.
  const dir = mkdtempSync(join(tmpdir(), "jitsu-dnsperf-"));
  const outPath = join(dir, "out.txt");
  const fd = openSync(outPath, "w");
  let out: string;
  let code: number | null;
  let stderr = "";
  try {
    const child =
      run.cpus === undefined
        ? spawn(run.dnsperf, args, { stdio: ["ignore", fd, "pipe"] })
        : spawn("taskset", ["-c", run.cpus, run.dnsperf, ...args], { stdio: ["ignore", fd, "pipe"] });
    child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), (run.seconds + 30) * 1000);
    code = await new Promise<number | null>((resolve) => {
      child.once("exit", resolve);
      child.once("error", (err) => {
        stderr += err.message;
        resolve(null);
      });
    });
    clearTimeout(timer);
    out = readFileSync(outPath, "utf8");
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  if (code !== 0)
    throw new Error(`dnsperf ${args.join(" ")} failed (${code}): ${stderr.trim().slice(0, 300)}`);
  return parseDnsperf(out);
}

/** The run with the highest QPS, if any. */
export function bestRun(runs: readonly DnsperfResult[]): DnsperfResult | undefined {
  return runs.reduce<DnsperfResult | undefined>(
    (b, r) => (b === undefined || r.qps > b.qps ? r : b),
    undefined,
  );
}

/** A run as the results file keeps it: per-query latencies replaced by their p50 and p99. */
export function resultJson(
  r: DnsperfResult,
): Omit<DnsperfResult, "latenciesMs"> & { p50Ms?: number; p99Ms?: number } {
  const { latenciesMs, ...rest } = r;
  return latenciesMs.length === 0
    ? rest
    : { ...rest, p50Ms: percentile(latenciesMs, 50), p99Ms: percentile(latenciesMs, 99) };
}

/** Rounds as the results file keeps them: per side, the best run and every run (see resultJson). */
export function roundsJson(
  runs: Readonly<Record<string, readonly DnsperfResult[]>>,
): Record<string, { best: ReturnType<typeof resultJson>; runs: ReturnType<typeof resultJson>[] }> {
  return Object.fromEntries(
    Object.entries(runs).map(([k, v]) => [k, { best: resultJson(bestRun(v)!), runs: v.map(resultJson) }]),
  );
}

/** What the table shows of each side's rounds (runs and failures by side key). */
export interface SideReader {
  best(key: string): DnsperfResult | undefined;
  /** The best QPS. */
  qps(key: string): number | undefined;
  /** CPU per query: the lowest of the rounds (the least disturbed by other load). */
  cpu(key: string): number | undefined;
  /** Losses and non-NOERROR answers of the best run, or why dnsperf failed. */
  loss(key: string): string;
}

export function readSides(
  runs: Readonly<Record<string, readonly DnsperfResult[]>>,
  failed: Readonly<Record<string, readonly string[]>>,
): SideReader {
  const best = (key: string): DnsperfResult | undefined => bestRun(runs[key] ?? []);
  return {
    best,
    qps: (key) => best(key)?.qps,
    cpu: (key) => {
      const v = (runs[key] ?? []).map((r) => r.serverCpuUs ?? Number.NaN).filter(Number.isFinite);
      return v.length === 0 ? undefined : Math.min(...v);
    },
    loss: (key) => {
      const r = best(key);
      if (r === undefined) {
        const why = failed[key];
        return why !== undefined && why.length > 0 ? `dnsperf failed: ${why[0]!.slice(0, 80)}` : "";
      }
      const bad = Object.entries(r.otherRcodes).map(([k, v]) => `${k} ${v}`);
      if (r.lost > 0) bad.unshift(`lost ${r.lost}`);
      return bad.join(", ");
    },
  };
}

/** One side of a throughput comparison: a server (its port, and its pid whose CPU is counted) and a query file. */
export interface RoundSide {
  key: string;
  server: Server;
  file: string;
  tcp?: boolean;
}

/**
 * `params.rounds` dnsperf runs of `params.seconds` per side, interleaved (even
 * rounds in reverse order), each with the server's CPU per answered query
 * (`cpuSeconds` of its pid). A run dnsperf cannot finish is logged and kept
 * under `failed`, not fatal.
 */
export async function runRounds(
  ctx: BenchContext,
  o: {
    sides: readonly RoundSide[];
    /** Run dnsperf on these CPUs (`taskset -c`). */
    cpus?: string;
    cpuSeconds: (pid: number) => number;
    /** Names the rounds in the log ("throughput", "all CPUs"). */
    what: string;
  },
): Promise<{ runs: Record<string, DnsperfResult[]>; failed: Record<string, string[]> }> {
  const { rounds, seconds } = ctx.params;
  const runs: Record<string, DnsperfResult[]> = {};
  const failed: Record<string, string[]> = {};
  for (let round = 1; round <= rounds; round++) {
    for (const side of round % 2 === 1 ? o.sides : [...o.sides].reverse()) {
      ctx.log(`${o.what} round ${round}/${rounds}: ${side.key} (${seconds} s)`);
      const pid = side.server.proc.pid;
      const cpu0 = o.cpuSeconds(pid);
      let r: DnsperfResult;
      try {
        r = await runDnsperf({
          dnsperf: ctx.tools.dnsperf,
          port: side.server.port,
          queryFile: side.file,
          seconds,
          tcp: side.tcp === true,
          cpus: o.cpus,
        });
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        ctx.log(`${o.what} ${side.key}: ${why}`);
        (failed[side.key] ??= []).push(why);
        continue;
      }
      r.serverCpuUs = ((o.cpuSeconds(pid) - cpu0) * 1e6) / Math.max(1, r.completed);
      (runs[side.key] ??= []).push(r);
    }
  }
  return { runs, failed };
}
