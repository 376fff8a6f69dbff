/**
 * dnsperf runs and what we read from its output. Throughput comes from its
 * summary ("Queries per second"); latency percentiles from its `-v` lines
 * ("> NOERROR www.example.org A 0.000123", one per answered query, latency in
 * seconds), since the summary only gives an average and a standard deviation.
 */
import { spawn } from "node:child_process";

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
  const child = spawn(run.dnsperf, args, { stdio: ["ignore", "pipe", "pipe"] });
  const chunks: Buffer[] = [];
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => chunks.push(c));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), (run.seconds + 30) * 1000);
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  clearTimeout(timer);
  const out = Buffer.concat(chunks).toString();
  if (code !== 0)
    throw new Error(`dnsperf ${args.join(" ")} failed (${code}): ${stderr.trim().slice(0, 300)}`);
  return parseDnsperf(out);
}
