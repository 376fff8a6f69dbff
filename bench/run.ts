#!/usr/bin/env node
/**
 * `npm run bench [-- --quick]`: jitsu's DNS performance against peers measured
 * in the same run, on loopback. See bench/README.md for what each row means
 * and how it is measured.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, setPriority } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { queryOnce } from "./dns-client.js";
import { bestRun, readSides, runDnsperf, runRounds, type DnsperfResult } from "./dnsperf.js";
import { killAllNow, stopAll } from "./procs.js";
import { formatTable, formatTargets, ratio, vs, type Row, type Target } from "./report.js";
import {
  JITSU_CLI,
  cpuSeconds,
  rssMb,
  startDnsmasq,
  startJitsu,
  startNodeResponder,
  startUnbound,
  stopJitsu,
  type JitsuServer,
  type Server,
} from "./servers.js";
import { percentile } from "./stats.js";
import { runScaleOnly, scaleConfigs } from "./scale.js";
import {
  IDLE_GAP_MS,
  measureIdleRtt,
  measureStorm,
  measureSummon,
  summonConfigs,
  SUMMON_EXEC,
} from "./summon.js";
import { parseParams, type Params } from "./params.js";
import { cpuPlan, makeTempDir, pinTo, requireTools } from "./tools.js";
import { measureAllCpus, type AllCpusOptions, type AllCpusResult } from "./workers.js";

const here = dirname(fileURLToPath(import.meta.url));
/** bench/results/ in the source tree (this file runs from dist/bench/). */
const RESULTS_DIR = join(here, "..", "..", "bench", "results");

const NAME = "www.example.org";
const IP = "10.0.0.1";
const FWD_NAME = "fwd.example.net";
const FWD_IP = "10.0.0.2";
/** Forwarded, no sharing: this many distinct names, so every query goes upstream on its own. */
const FWD_MANY = 2000;
/** Scale: names per VM in the QPS instance (all VMs ready, queries over every name). */
const NAMES_PER_VM = 100;

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

function trimmed(r: DnsperfResult): Omit<DnsperfResult, "latenciesMs"> & { p50Ms?: number; p99Ms?: number } {
  const { latenciesMs, ...rest } = r;
  return latenciesMs.length === 0
    ? rest
    : { ...rest, p50Ms: percentile(latenciesMs, 50), p99Ms: percentile(latenciesMs, 99) };
}

async function warm(server: Server, names: readonly string[], concurrency = 8): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < names.length) {
      const name = names[next++]!;
      const a = await queryOnce(server.port, name, "A", 30_000);
      if (a === null || a.rcode !== "NOERROR" || a.addresses.length === 0) {
        throw new Error(
          `bench: warming ${server.label}: ${name} answered ${a === null ? "nothing" : a.rcode}`,
        );
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/**
 * jitsu with the hot-path VM (NAME, a process backend `sleep`) started and
 * answered once, forwarding to `upstreamPort`.
 */
async function startHotJitsu(
  label: string,
  upstreamPort: number,
  more: { cpus?: string; extraArgs?: readonly string[] } = {},
): Promise<JitsuServer> {
  const jitsu = await startJitsu({
    label,
    configs: [`name=www,dns=${NAME},ip=${IP},exec=${SUMMON_EXEC}`],
    upstreamPort,
    logLevel: "warn",
    probe: { name: "example.org", type: "SOA" },
    ...more,
  });
  await warm(jitsu, [NAME], 1);
  return jitsu;
}

/** The pinned run's servers and query files, which the all-CPUs rows measure again. */
interface AllCpusContext extends Pick<
  AllCpusOptions,
  "dnsperf" | "jitsu" | "node" | "dnsmasq" | "dnsmasqFwd" | "hotFile" | "fwdFile"
> {
  params: Params;
  upstreamPort: number;
}

/**
 * Starts `jitsu --workers N` (N = the CPU count) and runs bench/workers.ts with
 * every server and dnsperf on every CPU. Needs 2 CPUs or more.
 */
async function allCpusSection(c: AllCpusContext): Promise<AllCpusResult & { workers: number }> {
  const n = cpus().length;
  if (n < 2) {
    log("all CPUs: skipped, this machine has one CPU");
    return { rows: [], runs: {}, failed: {}, fwdRatio: Number.NaN, workers: 0 };
  }
  const every = `0-${n - 1}`;
  log(`all CPUs: starting jitsu --workers ${n}`);
  const jitsuWorkers = await startHotJitsu(`jitsu --workers ${n}`, c.upstreamPort, {
    cpus: every,
    extraArgs: ["--workers", String(n)],
  });
  try {
    const r = await measureAllCpus({
      dnsperf: c.dnsperf,
      cpus: every,
      rounds: c.params.rounds,
      seconds: c.params.seconds,
      workers: n,
      jitsuWorkers,
      jitsu: c.jitsu,
      node: c.node,
      dnsmasq: c.dnsmasq,
      dnsmasqFwd: c.dnsmasqFwd,
      hotFile: c.hotFile,
      fwdFile: c.fwdFile,
      log,
    });
    return { ...r, workers: n };
  } finally {
    await stopJitsu(jitsuWorkers);
  }
}

/** `--only workers`: the servers the all-CPUs rows need, those rows, and their table. */
async function runAllCpusOnly(
  params: Params,
  dnsperf: string,
  unboundBin: string,
  dnsmasqBin: string,
): Promise<void> {
  const dir = makeTempDir();
  const write = (name: string, line: string): string => {
    const path = join(dir, name);
    writeFileSync(path, `${line} A\n`);
    return path;
  };
  const upstream = await startUnbound(unboundBin, dir, "unbound upstream", [[FWD_NAME, FWD_IP]]);
  const dnsmasq = await startDnsmasq(dnsmasqBin, "dnsmasq", { records: [[NAME, IP]], probeName: NAME });
  const dnsmasqFwd = await startDnsmasq(dnsmasqBin, "dnsmasq forwarding", {
    upstreamPort: upstream.port,
    probeName: FWD_NAME,
  });
  const node = await startNodeResponder(NAME, IP);
  const jitsu = await startHotJitsu("jitsu", upstream.port);
  const r = await allCpusSection({
    params,
    dnsperf,
    upstreamPort: upstream.port,
    jitsu,
    node,
    dnsmasq,
    dnsmasqFwd,
    hotFile: write("hot.txt", NAME),
    fwdFile: write("fwd.txt", FWD_NAME),
  });
  await Promise.all([
    stopJitsu(jitsu),
    node.proc.stop(),
    dnsmasq.proc.stop(),
    dnsmasqFwd.proc.stop(),
    upstream.proc.stop(),
  ]);
  process.stdout.write(
    `\nAll CPUs (${cpus().length}), dnsperf -c 4 -q 100, ${params.seconds} s a run, best of ${params.rounds} per side, interleaved\n\n${formatTable(r.rows)}\n`,
  );
  rmSync(dir, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const params = parseParams(process.argv.slice(2));
  const tools = requireTools();
  // Children inherit the priority: every side of every comparison runs at it.
  if (params.nice !== null) setPriority(params.nice);
  if (!existsSync(JITSU_CLI)) throw new Error(`bench: ${JITSU_CLI} is missing: run 'npm run build' first`);
  if (params.only === "scale") {
    await runScaleOnly(params.scaleNames, NAMES_PER_VM, params.scaleRepeats, log);
    return;
  }
  if (params.only === "workers") {
    await runAllCpusOnly(params, tools.dnsperf!, tools.unbound!, tools.dnsmasq!);
    return;
  }
  // The bench (and so dnsperf and the upstream, its children) on the load CPUs;
  // each server under test is moved to the server CPU once started. Instances
  // whose start-up is timed run on every CPU, as a user runs jitsu.
  const plan = cpuPlan(cpus().length, params.pin);
  if (plan !== null) pinTo(process.pid, plan.load);
  const underTest = <S extends Server>(server: S): S => {
    if (plan !== null) pinTo(server.proc.pid, plan.server);
    return server;
  };
  const everyCpu = plan === null ? undefined : `0-${cpus().length - 1}`;
  const dir = makeTempDir();
  const started = new Date();
  log(`${params.quick ? "quick" : "full"} run, temp dir ${dir}, load average ${loadavg()[0]!.toFixed(2)}`);

  const qfile = (name: string, lines: readonly string[]): string => {
    const path = join(dir, name);
    writeFileSync(path, lines.map((n) => `${n} A`).join("\n") + "\n");
    return path;
  };
  const hotFile = qfile("hot.txt", [NAME]);
  const fwdFile = qfile("fwd.txt", [FWD_NAME]);
  const fwdMany = Array.from({ length: FWD_MANY }, (_, i) => `f${i}.many.example.net`);
  const fwdManyFile = qfile("fwd-many.txt", fwdMany);

  // ---- servers --------------------------------------------------------------
  log("starting peers and jitsu");
  const unbound = underTest(await startUnbound(tools.unbound!, dir, "unbound", [[NAME, IP]]));
  // The upstream of the forwarded rows: its own unbound, on the load CPUs.
  const upstream = await startUnbound(tools.unbound!, dir, "unbound upstream", [
    [FWD_NAME, FWD_IP],
    ...fwdMany.map((n, i): [string, string] => [n, `10.2.${i >> 8}.${i & 255}`]),
  ]);
  const dnsmasq = underTest(
    await startDnsmasq(tools.dnsmasq!, "dnsmasq", { records: [[NAME, IP]], probeName: NAME }),
  );
  const dnsmasqFwd = underTest(
    await startDnsmasq(tools.dnsmasq!, "dnsmasq forwarding", {
      upstreamPort: upstream.port,
      probeName: FWD_NAME,
    }),
  );
  const node = underTest(await startNodeResponder(NAME, IP));
  const jitsu = underTest(await startHotJitsu("jitsu", upstream.port));
  const oneNameRss = rssMb(jitsu.proc.pid);

  const scaleVms = params.scaleNames / NAMES_PER_VM;
  const scale = scaleConfigs(scaleVms, NAMES_PER_VM);
  const scaleFile = qfile("scale.txt", scale.names);
  const jitsuScale = await startJitsu({
    label: `jitsu ${scale.names.length} names`,
    cpus: everyCpu,
    configs: scale.configs,
    upstreamPort: null,
    logLevel: "warn",
    probe: { name: "scale.example", type: "SOA" },
  });
  const scaleRssIdle = rssMb(jitsuScale.proc.pid);
  underTest(jitsuScale); // after its start-up was timed: start-up runs as a user would run it
  log(`warming ${scaleVms} VMs of the ${scale.names.length}-name instance`);
  await warm(
    jitsuScale,
    scale.names.filter((_, i) => i % NAMES_PER_VM === 0),
  );

  // ---- throughput: interleaved, best of `rounds` per side ---------------------
  const sides: { key: string; server: Server; file: string; tcp?: boolean }[] = [
    { key: "node/udp", server: node, file: hotFile },
    { key: "jitsu/udp", server: jitsu, file: hotFile },
    { key: "dnsmasq/udp", server: dnsmasq, file: hotFile },
    { key: "unbound/udp", server: unbound, file: hotFile },
    { key: "jitsu-scale/udp", server: jitsuScale, file: scaleFile },
    { key: "node/tcp", server: node, file: hotFile, tcp: true },
    { key: "jitsu/tcp", server: jitsu, file: hotFile, tcp: true },
    { key: "unbound/tcp", server: unbound, file: hotFile, tcp: true },
    { key: "jitsu/fwd", server: jitsu, file: fwdFile },
    { key: "dnsmasq/fwd", server: dnsmasqFwd, file: fwdFile },
    { key: "jitsu/fwd-many", server: jitsu, file: fwdManyFile },
    { key: "dnsmasq/fwd-many", server: dnsmasqFwd, file: fwdManyFile },
  ];
  // Runs dnsperf could not finish are reported under the table, not fatal (the other sides still count).
  const { runs, failed } = await runRounds({
    dnsperf: tools.dnsperf!,
    sides: sides.map((side) => ({
      key: side.key,
      port: side.server.port,
      pid: side.server.proc.pid,
      file: side.file,
      tcp: side.tcp,
    })),
    rounds: params.rounds,
    seconds: params.seconds,
    cpuSeconds,
    what: "throughput",
    log,
  });
  const read = readSides(runs, failed);
  const tp = read.best;
  const scaleRssLoaded = rssMb(jitsuScale.proc.pid);
  // Not needed any more, and it shares the server CPU: its timers would wake it there.
  await stopJitsu(jitsuScale);

  // ---- latency at 50 % of the Node responder's best QPS ------------------------
  const rate = 0.5 * (tp("node/udp")?.qps ?? 0);
  const latSides: { key: string; server: Server }[] = [
    { key: "jitsu", server: jitsu },
    { key: "node", server: node },
    { key: "dnsmasq", server: dnsmasq },
    { key: "unbound", server: unbound },
  ];
  const lat: Record<string, DnsperfResult[]> = {};
  for (let round = 1; round <= params.latencyRounds; round++) {
    for (const side of round % 2 === 1 ? latSides : [...latSides].reverse()) {
      log(
        `latency round ${round}/${params.latencyRounds}: ${side.key} at ${Math.round(rate)} qps (${params.latencySeconds} s)`,
      );
      try {
        const r = await runDnsperf({
          dnsperf: tools.dnsperf!,
          port: side.server.port,
          queryFile: hotFile,
          seconds: params.latencySeconds,
          rateQps: rate,
        });
        (lat[side.key] ??= []).push(r);
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        log(`latency ${side.key}: ${why}`);
        (failed[`latency/${side.key}`] ??= []).push(why);
      }
    }
  }
  // Best of the rounds = the run with the lower p99.
  const latBest = (key: string): { p50: number; p99: number; result: DnsperfResult } | undefined => {
    let out: { p50: number; p99: number; result: DnsperfResult } | undefined;
    for (const r of lat[key] ?? []) {
      const p99 = percentile(r.latenciesMs, 99);
      if (out === undefined || p99 < out.p99) out = { p50: percentile(r.latenciesMs, 50), p99, result: r };
    }
    return out;
  };

  // ---- the summon rows' baseline: one query after an idle gap, on the pinned servers ----
  log(`idle baseline: ${params.summonStarts} queries each after ${IDLE_GAP_MS} ms of quiet`);
  const idle = await measureIdleRtt(
    [
      { key: "node", server: node, name: NAME },
      { key: "jitsu", server: jitsu, name: NAME },
    ],
    params.summonStarts,
  );

  // ---- all CPUs: --workers N against one process and the peers ---------------
  const allCpus = await allCpusSection({
    params,
    dnsperf: tools.dnsperf!,
    upstreamPort: upstream.port,
    jitsu,
    node,
    dnsmasq,
    dnsmasqFwd,
    hotFile,
    fwdFile,
  });

  await Promise.all([stopJitsu(jitsu), node.proc.stop(), dnsmasq.proc.stop(), dnsmasqFwd.proc.stop()]);

  // ---- summon overhead and the storm -------------------------------------------
  const warmup = 5;
  log(
    `summon: ${params.summonStarts} cold starts (+${warmup} warm-up), then a storm of ${params.stormQueries}`,
  );
  const jitsuSummon = underTest(
    await startJitsu({
      label: "jitsu summon",
      configs: summonConfigs(params.summonStarts + warmup),
      upstreamPort: null,
      logLevel: "info",
      probe: { name: "cold.example", type: "SOA" },
    }),
  );
  const summon = await measureSummon(jitsuSummon, join(dir, "state"), params.summonStarts, warmup);
  const stormResult = await measureStorm(jitsuSummon, params.stormQueries);
  await stopJitsu(jitsuSummon);

  // ---- scale: start-up and memory with 10,000 VMs of one name each ---------------
  log(`scale: start-up with ${params.scaleNames} VMs`);
  const many = scaleConfigs(params.scaleNames, 1);
  const jitsuMany = await startJitsu({
    label: `jitsu ${params.scaleNames} VMs`,
    cpus: everyCpu,
    configs: many.configs,
    upstreamPort: null,
    logLevel: "info",
    probe: { name: "scale.example", type: "SOA" },
  });
  const manyRssReady = rssMb(jitsuMany.proc.pid);
  await new Promise((r) => setTimeout(r, 1000));
  const manyRssSettled = rssMb(jitsuMany.proc.pid);
  await stopJitsu(jitsuMany);
  await Promise.all([unbound.proc.stop(), upstream.proc.stop()]);

  // ---- report ---------------------------------------------------------------
  const { qps: q, cpu, loss } = read;
  const jl = latBest("jitsu");
  const rows: Row[] = [
    {
      scenario: "hot path UDP: jitsu, ready VM",
      qps: q("jitsu/udp"),
      cpuUs: cpu("jitsu/udp"),
      vs: vs(q("jitsu/udp"), q("node/udp"), "node"),
      note: loss("jitsu/udp"),
    },
    {
      scenario: "  node responder (prebuilt buffer)",
      qps: q("node/udp"),
      cpuUs: cpu("node/udp"),
      note: loss("node/udp"),
    },
    {
      scenario: "  dnsmasq local data",
      qps: q("dnsmasq/udp"),
      cpuUs: cpu("dnsmasq/udp"),
      vs: vs(q("jitsu/udp"), q("dnsmasq/udp"), "dnsmasq (jitsu)"),
    },
    {
      scenario: "  unbound local data, 1 thread",
      qps: q("unbound/udp"),
      cpuUs: cpu("unbound/udp"),
      vs: vs(q("jitsu/udp"), q("unbound/udp"), "unbound (jitsu)"),
    },
    {
      scenario: "hot path TCP: jitsu",
      qps: q("jitsu/tcp"),
      cpuUs: cpu("jitsu/tcp"),
      vs: vs(q("jitsu/tcp"), q("node/tcp"), "node tcp"),
      note: loss("jitsu/tcp"),
    },
    { scenario: "  node responder TCP", qps: q("node/tcp"), cpuUs: cpu("node/tcp") },
    {
      scenario: "  unbound TCP",
      qps: q("unbound/tcp"),
      cpuUs: cpu("unbound/tcp"),
      vs: vs(q("jitsu/tcp"), q("unbound/tcp"), "unbound (jitsu)"),
    },
    {
      scenario: "forwarded UDP: jitsu -> unbound",
      qps: q("jitsu/fwd"),
      cpuUs: cpu("jitsu/fwd"),
      vs: vs(q("jitsu/fwd"), q("dnsmasq/fwd"), "dnsmasq fwd"),
      note: loss("jitsu/fwd"),
    },
    {
      scenario: "  dnsmasq -> unbound, cache off",
      qps: q("dnsmasq/fwd"),
      cpuUs: cpu("dnsmasq/fwd"),
      note: loss("dnsmasq/fwd"),
    },
    {
      scenario: `forwarded UDP, ${FWD_MANY} names: jitsu`,
      qps: q("jitsu/fwd-many"),
      cpuUs: cpu("jitsu/fwd-many"),
      vs: vs(q("jitsu/fwd-many"), q("dnsmasq/fwd-many"), "dnsmasq fwd"),
      note: loss("jitsu/fwd-many") || "a fresh socket per upstream query",
    },
    {
      scenario: `  dnsmasq, ${FWD_MANY} names`,
      qps: q("dnsmasq/fwd-many"),
      cpuUs: cpu("dnsmasq/fwd-many"),
      note: loss("dnsmasq/fwd-many") || "shares its 64 random-port sockets under load",
    },
  ];
  for (const key of ["jitsu", "node", "dnsmasq", "unbound"]) {
    const b = latBest(key);
    rows.push({
      scenario: `latency @ ${Math.round(rate)} qps (50% node): ${key}`,
      p50Ms: b?.p50,
      p99Ms: b?.p99,
      vs: key === "jitsu" ? "" : vs(jl?.p99, b?.p99, `${key} p99 (jitsu)`),
      note:
        b === undefined
          ? ""
          : `${b.result.completed} answers${b.result.lost > 0 ? `, lost ${b.result.lost}` : ""}`,
    });
  }
  rows.push(...allCpus.rows);
  rows.push(
    {
      scenario: `summon: cold query -> answer (${summon.starts} starts)`,
      p50Ms: summon.queryMs.p50,
      p99Ms: summon.queryMs.p99,
      note: summon.failures > 0 ? `${summon.failures} failed` : "",
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
    {
      scenario: `scale: ${scale.names.length} names on ${scaleVms} ready VMs`,
      qps: q("jitsu-scale/udp"),
      cpuUs: cpu("jitsu-scale/udp"),
      vs: vs(q("jitsu-scale/udp"), q("jitsu/udp"), "1 name"),
      note: `start-up ${jitsuScale.startupMs.toFixed(0)} ms, RSS ${scaleRssIdle.rss.toFixed(0)} MB idle, ${scaleRssLoaded.rss.toFixed(0)} MB after load`,
    },
    {
      scenario: `scale: ${params.scaleNames} VMs, 1 name each`,
      vs: `(1 name: start-up ${jitsu.startupMs.toFixed(0)} ms, RSS ${oneNameRss.rss.toFixed(0)} MB)`,
      note: `start-up ${jitsuMany.startupMs.toFixed(0)} ms, RSS ${manyRssReady.rss.toFixed(0)} MB ready, ${manyRssSettled.rss.toFixed(0)} MB 1 s later (peak ${manyRssSettled.peak.toFixed(0)})`,
    },
  );

  const hot = ratio(q("jitsu/udp"), q("node/udp"));
  const fwd = ratio(q("jitsu/fwd"), q("dnsmasq/fwd"));
  const scaleRatio = ratio(q("jitsu-scale/udp"), q("jitsu/udp"));
  const maxStartup = Math.max(jitsuScale.startupMs, jitsuMany.startupMs);
  const maxRss = Math.max(scaleRssLoaded.peak, manyRssSettled.peak);
  const targets: Target[] = [
    {
      what: "hot path >= 90% of node responder QPS",
      measured: `${(hot * 100).toFixed(0)}%`,
      met: hot >= 0.9,
    },
    {
      what: "hot path p99 < 1 ms at 50% of node QPS",
      measured: `${jl?.p99.toFixed(3)} ms at ${Math.round(rate)} qps`,
      met: jl !== undefined && jl.p99 < 1,
    },
    {
      what: "forwarded >= 70% of dnsmasq forwarding",
      measured: `${(fwd * 100).toFixed(0)}%`,
      met: fwd >= 0.7,
    },
    {
      what: `forwarded, all CPUs, --workers ${allCpus.workers}: >= 70% of dnsmasq`,
      measured: Number.isFinite(allCpus.fwdRatio)
        ? `${(allCpus.fwdRatio * 100).toFixed(0)}%`
        : "not measured",
      met: Number.isFinite(allCpus.fwdRatio) ? allCpus.fwdRatio >= 0.7 : null,
    },
    {
      what: "summon overhead <= 2 ms p99",
      measured: `${summon.perStartOverheadMs.p99.toFixed(2)} ms p99 per start (cross-check, unpaired: ${summon.overheadMs.p99.toFixed(2)} ms; idle baseline p99: node ${idle.node?.p99.toFixed(2)}, jitsu ${idle.jitsu?.p99.toFixed(2)} ms)${summon.starts < 50 ? `; only ${summon.starts} starts (quick)` : ""}`,
      met: summon.perStartOverheadMs.p99 <= 2,
    },
    {
      what: "storm: exactly one start, all answered",
      measured: `${stormResult.starts} start(s), ${stormResult.ok}/${stormResult.sent} answered with the address`,
      met: stormResult.starts === 1 && stormResult.ok === stormResult.sent,
    },
    {
      what: "10k names: start-up <= 1 s",
      measured: `${maxStartup.toFixed(0)} ms (worst of the two shapes)`,
      met: maxStartup <= 1000,
    },
    {
      what: "10k names: RSS <= 100 MB",
      measured: `${maxRss.toFixed(0)} MB peak (worst of the two shapes)`,
      met: maxRss <= 100,
    },
    {
      what: "10k names: QPS within 10% of one name",
      measured: `${(scaleRatio * 100).toFixed(0)}%`,
      met: scaleRatio >= 0.9,
    },
  ];

  const header = [
    `jitsu bench (${params.quick ? "quick" : "full"}), ${started.toISOString()}, ${cpus().length} CPUs, load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}, node ${process.version}`,
    `QPS: dnsperf -c 4 -q 100, ${params.seconds} s a run${params.nice === null ? "" : `, nice ${params.nice}`}, best of ${params.rounds} per side, interleaved. Latency: dnsperf -Q -v, lowest p99 of ${params.latencyRounds} per side.`,
    plan === null
      ? "CPU affinity: not pinned."
      : `CPU affinity: servers under test on CPU ${plan.server}, dnsperf, the bench and the upstream on CPU ${plan.load}.`,
  ];
  process.stdout.write(
    `\n${header.join("\n")}\n\n${formatTable(rows)}${
      Object.keys(failed).length === 0
        ? ""
        : `\n\ndnsperf failed (not counted): ${Object.entries(failed)
            .map(([k, v]) => `${k} x${v.length}: ${v[0]!.slice(0, 160)}`)
            .join("; ")}`
    }\n\nTargets (issue 5):\n${formatTargets(targets)}\n`,
  );

  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(
    RESULTS_DIR,
    `${started.toISOString().replace(/[:.]/g, "-")}${params.quick ? "-quick" : ""}.json`,
  );
  const json = {
    startedAt: started.toISOString(),
    params,
    machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg: loadavg(), node: process.version },
    throughput: Object.fromEntries(
      Object.entries(runs).map(([k, v]) => [k, { best: trimmed(bestRun(v)!), runs: v.map(trimmed) }]),
    ),
    latency: {
      rateQps: rate,
      ...Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, v.map(trimmed)])),
    },
    allCpus: {
      workers: allCpus.workers,
      ...Object.fromEntries(
        Object.entries(allCpus.runs).map(([k, v]) => [
          k,
          { best: trimmed(bestRun(v)!), runs: v.map(trimmed) },
        ]),
      ),
      failed: allCpus.failed,
    },
    summon: { ...summon, idleBaselineMs: idle, idleGapMs: IDLE_GAP_MS },
    storm: { ...stormResult, latenciesMs: undefined },
    scale: {
      oneName: { startupMs: jitsu.startupMs, rss: oneNameRss },
      namesInstance: {
        names: scale.names.length,
        vms: scaleVms,
        startupMs: jitsuScale.startupMs,
        rssIdle: scaleRssIdle,
        rssLoaded: scaleRssLoaded,
      },
      vmsInstance: {
        vms: params.scaleNames,
        startupMs: jitsuMany.startupMs,
        rssReady: manyRssReady,
        rssSettled: manyRssSettled,
      },
    },
    failed,
    rows,
    targets,
  };
  writeFileSync(file, JSON.stringify(json, null, 2) + "\n");
  process.stdout.write(`\nResults: ${file}\n`);
  rmSync(dir, { recursive: true, force: true });
}

process.on("exit", killAllNow);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping everything`);
    void stopAll().finally(() => process.exit(130));
  });
}

main().catch(async (err: unknown) => {
  log(err instanceof Error ? err.message : String(err));
  await stopAll();
  process.exit(1);
});
