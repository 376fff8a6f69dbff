/**
 * All CPUs: `jitsu --workers N` against one jitsu process and the peers, with
 * every server and dnsperf free to run on every CPU, as a user runs them.
 *
 * The rest of the bench gives each server under test one CPU of its own, which
 * is what makes single-process numbers repeatable, but leaves workers nothing
 * to spread over. Here the servers, dnsperf and the upstream share the CPUs, so
 * the load generator competes with the server: on a 2-CPU machine this shows
 * whether workers help at all, not what they do on a larger host.
 */
import { cpus } from "node:os";
import type { BenchContext } from "./context.js";
import { readSides, roundsJson, runRounds, type DnsperfResult, type RoundSide } from "./dnsperf.js";
import { ratio, vs, type Row } from "./report.js";
import { processTree, stopJitsu, treeCpuSeconds, type Server } from "./servers.js";
import { startHotJitsu, type SharedServers } from "./shared-servers.js";
import { pinTo } from "./tools.js";

export interface AllCpusSection {
  rows: Row[];
  /** Runs dnsperf could not finish, by side (in the JSON only). */
  failed: Record<string, string[]>;
  /** N of `--workers N` (the CPU count), 0 when skipped. */
  workers: number;
  /** Best QPS ratio of the forwarded row with workers against dnsmasq, for the targets. */
  fwdRatio: number;
  json: Record<string, unknown>;
}

/** Moves a server (all its processes and threads) onto `cpus`. */
function release(server: Server, cpus: string): void {
  for (const pid of processTree(server.proc.pid)) {
    try {
      pinTo(pid, cpus);
    } catch {
      // exited meanwhile
    }
  }
}

/**
 * Starts `jitsu --workers N` (N = the CPU count, forwarding to the shared
 * upstream) and measures it against the shared jitsu, node responder and
 * dnsmasq, each moved onto every CPU, with dnsperf on every CPU too. Needs 2
 * CPUs or more.
 */
export async function allCpusSection(ctx: BenchContext, s: SharedServers): Promise<AllCpusSection> {
  const n = cpus().length;
  if (n < 2) {
    ctx.log("all CPUs: skipped, this machine has one CPU");
    return { rows: [], failed: {}, workers: 0, fwdRatio: Number.NaN, json: { workers: 0, failed: {} } };
  }
  const every = `0-${n - 1}`;
  ctx.log(`all CPUs: starting jitsu --workers ${n}`);
  const jitsuWorkers = await startHotJitsu(`jitsu --workers ${n}`, s.upstream.port, {
    cpus: every,
    extraArgs: ["--workers", String(n)],
  });
  let measured: { runs: Record<string, DnsperfResult[]>; failed: Record<string, string[]> };
  try {
    for (const server of [jitsuWorkers, s.jitsu, s.node, s.dnsmasq, s.dnsmasqFwd]) release(server, every);
    const sides: RoundSide[] = [
      { key: "workers/udp", server: jitsuWorkers, file: s.hotFile },
      { key: "jitsu/udp", server: s.jitsu, file: s.hotFile },
      { key: "node/udp", server: s.node, file: s.hotFile },
      { key: "dnsmasq/udp", server: s.dnsmasq, file: s.hotFile },
      { key: "workers/fwd", server: jitsuWorkers, file: s.fwdFile },
      { key: "jitsu/fwd", server: s.jitsu, file: s.fwdFile },
      { key: "dnsmasq/fwd", server: s.dnsmasqFwd, file: s.fwdFile },
    ];
    measured = await runRounds(ctx, { sides, cpus: every, cpuSeconds: treeCpuSeconds, what: "all CPUs" });
  } finally {
    await stopJitsu(jitsuWorkers);
  }
  const { runs, failed } = measured;
  const w = `jitsu --workers ${n}`;
  const { qps: q, cpu, loss: note } = readSides(runs, failed);
  const rows: Row[] = [
    {
      scenario: `all CPUs, hot path UDP: ${w}`,
      qps: q("workers/udp"),
      cpuUs: cpu("workers/udp"),
      vs: vs(q("workers/udp"), q("jitsu/udp"), "1 process"),
      note: note("workers/udp") || "servers, dnsperf and the upstream share every CPU",
    },
    {
      scenario: "  jitsu, 1 process",
      qps: q("jitsu/udp"),
      cpuUs: cpu("jitsu/udp"),
      vs: vs(q("jitsu/udp"), q("node/udp"), "node"),
      note: note("jitsu/udp"),
    },
    { scenario: "  node responder", qps: q("node/udp"), cpuUs: cpu("node/udp"), note: note("node/udp") },
    {
      scenario: "  dnsmasq local data",
      qps: q("dnsmasq/udp"),
      cpuUs: cpu("dnsmasq/udp"),
      vs: vs(q("workers/udp"), q("dnsmasq/udp"), `dnsmasq (${w})`),
      note: note("dnsmasq/udp"),
    },
    {
      scenario: `all CPUs, forwarded UDP: ${w}`,
      qps: q("workers/fwd"),
      cpuUs: cpu("workers/fwd"),
      vs: vs(q("workers/fwd"), q("dnsmasq/fwd"), "dnsmasq fwd"),
      note: note("workers/fwd"),
    },
    {
      scenario: "  jitsu, 1 process",
      qps: q("jitsu/fwd"),
      cpuUs: cpu("jitsu/fwd"),
      vs: vs(q("jitsu/fwd"), q("dnsmasq/fwd"), "dnsmasq fwd"),
      note: note("jitsu/fwd"),
    },
    {
      scenario: "  dnsmasq -> unbound",
      qps: q("dnsmasq/fwd"),
      cpuUs: cpu("dnsmasq/fwd"),
      note: note("dnsmasq/fwd"),
    },
  ];
  return {
    rows,
    failed,
    workers: n,
    fwdRatio: ratio(q("workers/fwd"), q("dnsmasq/fwd")),
    json: { workers: n, ...roundsJson(runs), failed },
  };
}
