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
import { readSides, runRounds, type DnsperfResult } from "./dnsperf.js";
import { vs, type Row } from "./report.js";
import { processTree, treeCpuSeconds, type Server } from "./servers.js";
import { pinTo } from "./tools.js";

export interface AllCpusOptions {
  dnsperf: string;
  /** Every CPU, for taskset (e.g. "0-1"). */
  cpus: string;
  rounds: number;
  seconds: number;
  workers: number;
  /** jitsu --workers N, one jitsu process, and the peers; each answers `hotFile`'s name. */
  jitsuWorkers: Server;
  jitsu: Server;
  node: Server;
  dnsmasq: Server;
  /** dnsmasq forwarding to the same upstream as both jitsus. */
  dnsmasqFwd: Server;
  hotFile: string;
  fwdFile: string;
  log: (line: string) => void;
}

export interface AllCpusResult {
  rows: Row[];
  runs: Record<string, DnsperfResult[]>;
  failed: Record<string, string[]>;
  /** Best QPS ratio of the forwarded row with workers against dnsmasq, for the targets. */
  fwdRatio: number;
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

export async function measureAllCpus(o: AllCpusOptions): Promise<AllCpusResult> {
  for (const s of [o.jitsuWorkers, o.jitsu, o.node, o.dnsmasq, o.dnsmasqFwd]) release(s, o.cpus);
  const w = `jitsu --workers ${o.workers}`;
  const sides: { key: string; server: Server; file: string }[] = [
    { key: "workers/udp", server: o.jitsuWorkers, file: o.hotFile },
    { key: "jitsu/udp", server: o.jitsu, file: o.hotFile },
    { key: "node/udp", server: o.node, file: o.hotFile },
    { key: "dnsmasq/udp", server: o.dnsmasq, file: o.hotFile },
    { key: "workers/fwd", server: o.jitsuWorkers, file: o.fwdFile },
    { key: "jitsu/fwd", server: o.jitsu, file: o.fwdFile },
    { key: "dnsmasq/fwd", server: o.dnsmasqFwd, file: o.fwdFile },
  ];
  const { runs, failed } = await runRounds({
    dnsperf: o.dnsperf,
    sides: sides.map((side) => ({
      key: side.key,
      port: side.server.port,
      pid: side.server.proc.pid,
      file: side.file,
    })),
    rounds: o.rounds,
    seconds: o.seconds,
    cpus: o.cpus,
    cpuSeconds: treeCpuSeconds,
    what: "all CPUs",
    log: o.log,
  });
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
  const a = q("workers/fwd");
  const b = q("dnsmasq/fwd");
  return { rows, runs, failed, fwdRatio: a === undefined || b === undefined || b === 0 ? Number.NaN : a / b };
}
