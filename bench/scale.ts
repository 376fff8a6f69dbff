/**
 * The scale shapes (issue 5): 10,000 names on 100 VMs, and 10,000 VMs of one
 * name each, under scale.example. In the full run, the names instance starts
 * before the throughput rounds, which measure its QPS beside the others
 * (bench/throughput.ts), and scaleSection then times the VMs instance and
 * gives both rows. `npm run bench -- --only scale` starts each shape a few
 * times and prints the medians of start-up and RSS, without the peers and the
 * throughput runs (a quick check while working on start-up).
 */
import type { BenchContext } from "./context.js";
import { vs, ratio, type Row } from "./report.js";
import { startJitsu, rssMb, stopJitsu, warm, VM_EXEC, type JitsuServer } from "./servers.js";
import type { FullServers } from "./shared-servers.js";
import { median } from "./stats.js";
import type { ThroughputResult } from "./throughput.js";

/** The names instance: names per VM (all VMs ready, queries over every name). */
const NAMES_PER_VM = 100;

type Rss = ReturnType<typeof rssMb>;

/** Scale configs: `vms` VMs with `perVm` names each, under scale.example. */
export function scaleConfigs(vms: number, perVm: number): { configs: string[]; names: string[] } {
  const configs: string[] = [];
  const names: string[] = [];
  for (let v = 0; v < vms; v++) {
    const dns: string[] = [];
    for (let n = 0; n < perVm; n++) {
      const name = `h${v * perVm + n}.scale.example`;
      names.push(name);
      dns.push(`dns=${name}`);
    }
    configs.push(`name=s${v},${dns.join(",")},ip=10.8.${v >> 8}.${v & 255},exec=${VM_EXEC}`);
  }
  return { configs, names };
}

/**
 * Starts jitsu with a scale shape's `configs` (-x process, -f 0.0.0.0, JSON
 * logs at `logLevel` piped to the bench; on `cpus` if given) and waits for its
 * first answer: its startupMs is the shape's start-up.
 */
function startScaleJitsu(
  label: string,
  configs: readonly string[],
  logLevel: "info" | "warn",
  cpus: string | undefined,
): Promise<JitsuServer> {
  return startJitsu({
    label,
    cpus,
    configs,
    upstreamPort: null,
    logLevel,
    probe: { name: "scale.example", type: "SOA" },
  });
}

export interface StartupSample {
  startupMs: number;
  /** RSS (and peak, VmHWM) when it first answered, MB. */
  rssReady: Rss;
  /** RSS and peak one second later, MB. */
  rssSettled: Rss;
}

/** Starts a shape (startScaleJitsu), reads its RSS then and one second later, and stops it. */
export async function sampleStartup(
  label: string,
  configs: readonly string[],
  logLevel: "info" | "warn",
  cpus?: string,
): Promise<StartupSample> {
  const j = await startScaleJitsu(label, configs, logLevel, cpus);
  const rssReady = rssMb(j.proc.pid);
  await new Promise((r) => setTimeout(r, 1000));
  const rssSettled = rssMb(j.proc.pid);
  await stopJitsu(j);
  return { startupMs: j.startupMs, rssReady, rssSettled };
}

/** The names instance of the full run, started and warmed, its QPS not yet measured. */
export interface NamesInstance {
  server: JitsuServer;
  /** The dnsperf query file cycling through all its names. */
  file: string;
  names: number;
  vms: number;
  rssIdle: Rss;
}

/**
 * Starts the names instance on every CPU (its start-up is timed as a user runs
 * jitsu), reads its RSS, then pins it as a server under test and starts all
 * its VMs (one query for a name of each).
 */
export async function startNamesInstance(ctx: BenchContext): Promise<NamesInstance> {
  const vms = ctx.params.scaleNames / NAMES_PER_VM;
  const scale = scaleConfigs(vms, NAMES_PER_VM);
  const file = ctx.queryFile("scale.txt", scale.names);
  const server = await startScaleJitsu(
    `jitsu ${scale.names.length} names`,
    scale.configs,
    "warn",
    ctx.everyCpu,
  );
  const rssIdle = rssMb(server.proc.pid);
  ctx.underTest(server); // after its start-up was timed: start-up runs as a user would run it
  ctx.log(`warming ${vms} VMs of the ${scale.names.length}-name instance`);
  await warm(
    server,
    scale.names.filter((_, i) => i % NAMES_PER_VM === 0),
  );
  return { server, file, names: scale.names.length, vms, rssIdle };
}

/** After the throughput rounds: the names instance's RSS after load, then it stops (it shares the server CPU: its timers would wake it there). */
export async function stopNamesInstance(n: NamesInstance): Promise<NamesInstance & { rssLoaded: Rss }> {
  const rssLoaded = rssMb(n.server.proc.pid);
  await stopJitsu(n.server);
  return { ...n, rssLoaded };
}

export interface ScaleResult {
  rows: Row[];
  /** The worse start-up of the two shapes, ms, and the higher peak RSS, MB. */
  maxStartupMs: number;
  maxPeakMb: number;
  /** The names instance's best QPS over one name's. */
  qpsRatio: number;
  json: Record<string, unknown>;
}

/** Times the VMs instance (the names instance was measured with the throughput rounds) and gives both rows. */
export async function scaleSection(
  ctx: BenchContext,
  s: FullServers,
  names: NamesInstance & { rssLoaded: Rss },
  throughput: ThroughputResult["names"],
): Promise<ScaleResult> {
  const vmsCount = ctx.params.scaleNames;
  ctx.log(`scale: start-up with ${vmsCount} VMs`);
  const many = await sampleStartup(
    `jitsu ${vmsCount} VMs`,
    scaleConfigs(vmsCount, 1).configs,
    "info",
    ctx.everyCpu,
  );
  const rows: Row[] = [
    {
      scenario: `scale: ${names.names} names on ${names.vms} ready VMs`,
      qps: throughput.qps,
      cpuUs: throughput.cpuUs,
      vs: vs(throughput.qps, throughput.oneNameQps, "1 name"),
      note: `start-up ${names.server.startupMs.toFixed(0)} ms, RSS ${names.rssIdle.rss.toFixed(0)} MB idle, ${names.rssLoaded.rss.toFixed(0)} MB after load`,
    },
    {
      scenario: `scale: ${vmsCount} VMs, 1 name each`,
      vs: `(1 name: start-up ${s.jitsu.startupMs.toFixed(0)} ms, RSS ${s.jitsuRss.rss.toFixed(0)} MB)`,
      note: `start-up ${many.startupMs.toFixed(0)} ms, RSS ${many.rssReady.rss.toFixed(0)} MB ready, ${many.rssSettled.rss.toFixed(0)} MB 1 s later (peak ${many.rssSettled.peak.toFixed(0)})`,
    },
  ];
  return {
    rows,
    maxStartupMs: Math.max(names.server.startupMs, many.startupMs),
    maxPeakMb: Math.max(names.rssLoaded.peak, many.rssSettled.peak),
    qpsRatio: ratio(throughput.qps, throughput.oneNameQps),
    json: {
      oneName: { startupMs: s.jitsu.startupMs, rss: s.jitsuRss },
      namesInstance: {
        names: names.names,
        vms: names.vms,
        startupMs: names.server.startupMs,
        rssIdle: names.rssIdle,
        rssLoaded: names.rssLoaded,
      },
      vmsInstance: {
        vms: vmsCount,
        startupMs: many.startupMs,
        rssReady: many.rssReady,
        rssSettled: many.rssSettled,
      },
    },
  };
}

/** `--only scale`: each shape `scaleRepeats` times, interleaved; the medians and every sample, as text. */
export async function scaleOnly(ctx: BenchContext): Promise<string> {
  const names = ctx.params.scaleNames;
  const shapes = [
    // The same log levels as the full bench's two scale instances.
    {
      label: `${names} names on ${names / NAMES_PER_VM} VMs`,
      ...scaleConfigs(names / NAMES_PER_VM, NAMES_PER_VM),
      level: "warn" as const,
    },
    { label: `${names} VMs, 1 name each`, ...scaleConfigs(names, 1), level: "info" as const },
  ];
  const repeats = ctx.params.scaleRepeats;
  const samples = shapes.map(() => [] as StartupSample[]);
  for (let r = 1; r <= repeats; r++) {
    for (const [i, shape] of shapes.entries()) {
      ctx.log(`scale ${r}/${repeats}: ${shape.label}`);
      samples[i]!.push(await sampleStartup(`jitsu ${shape.label}`, shape.configs, shape.level));
    }
  }
  const lines = shapes.map((shape, i) => {
    const s = samples[i]!;
    const m = (f: (x: StartupSample) => number): string => median(s.map(f)).toFixed(0);
    return [
      `scale: ${shape.label} (median of ${s.length}): start-up ${m((x) => x.startupMs)} ms, RSS ${m((x) => x.rssReady.rss)} MB ready, ${m((x) => x.rssSettled.rss)} MB 1 s later, peak ${m((x) => x.rssSettled.peak)} MB`,
      `  samples (ms / peak MB): ${s.map((x) => `${x.startupMs.toFixed(0)}/${x.rssSettled.peak.toFixed(0)}`).join(", ")}`,
    ].join("\n");
  });
  return `\n${lines.join("\n")}\n`;
}
