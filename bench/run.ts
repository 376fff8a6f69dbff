#!/usr/bin/env node
/**
 * `npm run bench [-- --quick]`: jitsu's DNS performance against peers measured
 * in the same run, on loopback. See bench/README.md for what each row means
 * and how it is measured. This file parses the options, builds the context,
 * runs the sections in order and writes the report; each section is a file
 * that measures and gives its rows.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, setPriority } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeContext, type BenchContext } from "./context.js";
import { latencySection } from "./latency.js";
import { parseParams } from "./params.js";
import { killAllNow, stopAll } from "./procs.js";
import { formatTable, formatTargets } from "./report.js";
import { scaleOnly, scaleSection, startNamesInstance, stopNamesInstance } from "./scale.js";
import { JITSU_CLI } from "./servers.js";
import { startFullServers, startSharedServers, stopAllButUnbound } from "./shared-servers.js";
import { idleBaseline, summonSection } from "./summon.js";
import { forwardTargets, issue5Targets, summonTarget } from "./targets.js";
import { forwardOnly, throughputSection } from "./throughput.js";
import { holdSection } from "./hold.js";
import { pinTo, requireTools } from "./tools.js";
import { allCpusSection } from "./workers.js";

const here = dirname(fileURLToPath(import.meta.url));
/** bench/results/ in the source tree (this file runs from dist/bench/). */
const RESULTS_DIR = join(here, "..", "..", "bench", "results");

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

/** The full run: every section, one table, the targets, and the JSON in bench/results/. */
async function runAll(ctx: BenchContext): Promise<void> {
  const { params, plan } = ctx;
  // The bench (and so dnsperf and the upstream, its children) on the load CPUs;
  // each server under test is moved to the server CPU once started. Instances
  // whose start-up is timed run on every CPU, as a user runs jitsu.
  if (plan !== null) pinTo(process.pid, plan.load);
  const started = new Date();
  log(
    `${params.quick ? "quick" : "full"} run, temp dir ${ctx.dir}, load average ${loadavg()[0]!.toFixed(2)}`,
  );

  const servers = await startFullServers(ctx);
  // The 10,000-name instance's QPS is measured in the throughput rounds, interleaved with the others.
  const names = await startNamesInstance(ctx);
  const throughput = await throughputSection(ctx, servers, names);
  const namesLoaded = await stopNamesInstance(names);
  const latency = await latencySection(ctx, servers, throughput.nodeQps);
  // On the pinned servers, before the all-CPUs rows free them: the summon rows' baseline.
  const idle = await idleBaseline(ctx, servers);
  const allCpus = await allCpusSection(ctx, servers);
  await stopAllButUnbound(servers);
  const summon = await summonSection(ctx, idle);
  const scale = await scaleSection(ctx, servers, namesLoaded, throughput.names);
  await Promise.all([servers.unbound.proc.stop(), servers.upstream.proc.stop()]);
  const hold = await holdSection(ctx);

  const rows = [
    ...throughput.rows,
    ...latency.rows,
    ...allCpus.rows,
    ...summon.rows,
    ...scale.rows,
    ...hold.rows,
  ];
  const failed = { ...throughput.failed, ...latency.failed };
  const targets = issue5Targets({ throughput, latency, allCpus, summon, scale });
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
    }\n\nTargets (issue 5):\n${formatTargets(targets)}\n\nTargets (issue 22, forwarding):\n${formatTargets(forwardTargets(throughput))}\n\nTargets (issue 18, held connections):\n${formatTargets(hold.targets)}\n`,
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
    throughput: throughput.json,
    latency: latency.json,
    allCpus: allCpus.json,
    ...summon.json,
    scale: scale.json,
    hold: hold.json,
    holdTargets: hold.targets,
    failed,
    rows,
    targets,
    forwardTargets: forwardTargets(throughput),
  };
  writeFileSync(file, JSON.stringify(json, null, 2) + "\n");
  process.stdout.write(`\nResults: ${file}\n`);
}

/** `--only hold`: the held-connection rows (jitsu's hold port against systemd-socket-proxyd) and their targets. */
async function runHoldOnly(ctx: BenchContext): Promise<void> {
  if (ctx.plan !== null) pinTo(process.pid, ctx.plan.load);
  const r = await holdSection(ctx);
  process.stdout.write(
    `\nHeld connections (${ctx.params.quick ? "quick" : "full"}), load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}\n\n${formatTable(r.rows)}\n\nTargets (issue 18):\n${formatTargets(r.targets)}\n`,
  );
}

/** `--only workers`: the servers the all-CPUs rows need, those rows, and their table. */
async function runWorkersOnly(ctx: BenchContext): Promise<void> {
  const servers = await startSharedServers(ctx);
  const r = await allCpusSection(ctx, servers);
  await Promise.all([stopAllButUnbound(servers), servers.upstream.proc.stop()]);
  process.stdout.write(
    `\nAll CPUs (${cpus().length}), dnsperf -c 4 -q 100, ${ctx.params.seconds} s a run, best of ${ctx.params.rounds} per side, interleaved\n\n${formatTable(r.rows)}\n`,
  );
}

/** `--only forward`: the hot path UDP and the forwarded rows against the node responder and dnsmasq. */
async function runForwardOnly(ctx: BenchContext): Promise<void> {
  if (ctx.plan !== null) pinTo(process.pid, ctx.plan.load);
  const servers = await startFullServers(ctx);
  const r = await forwardOnly(ctx, servers);
  await Promise.all([stopAllButUnbound(servers), servers.unbound.proc.stop(), servers.upstream.proc.stop()]);
  process.stdout.write(
    `\nForwarding, dnsperf -c 4 -q 100, ${ctx.params.seconds} s a run, best of ${ctx.params.rounds} per side, interleaved, load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(
        " ",
      )}\n\n${formatTable(r.rows)}\n\nTargets (issue 22, forwarding):\n${formatTargets(forwardTargets(r))}\n`,
  );
}

/** `--only summon`: the idle baseline on the shared servers (pinned), then the summon rows, and their table. */
async function runSummonOnly(ctx: BenchContext): Promise<void> {
  if (ctx.plan !== null) pinTo(process.pid, ctx.plan.load);
  const servers = await startSharedServers(ctx);
  const idle = await idleBaseline(ctx, servers);
  await Promise.all([stopAllButUnbound(servers), servers.upstream.proc.stop()]);
  const r = await summonSection(ctx, idle);
  const target = summonTarget(r);
  process.stdout.write(
    `\nSummon (${ctx.params.summonStarts} cold starts, load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")})\n\n${formatTable(r.rows)}\n\n${formatTargets([target])}\n`,
  );
}

async function main(): Promise<void> {
  const params = parseParams(process.argv.slice(2));
  const tools = requireTools();
  // Children inherit the priority: every side of every comparison runs at it.
  if (params.nice !== null) setPriority(params.nice);
  if (!existsSync(JITSU_CLI)) throw new Error(`bench: ${JITSU_CLI} is missing: run 'npm run build' first`);
  const ctx = makeContext(params, tools, log);
  if (params.only === "scale") process.stdout.write(await scaleOnly(ctx));
  else if (params.only === "workers") await runWorkersOnly(ctx);
  else if (params.only === "forward") await runForwardOnly(ctx);
  else if (params.only === "summon") await runSummonOnly(ctx);
  else if (params.only === "hold") await runHoldOnly(ctx);
  else await runAll(ctx);
  rmSync(ctx.dir, { recursive: true, force: true });
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
