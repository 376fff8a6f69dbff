/**
 * The scale shapes (issue 5): 10,000 names on 100 VMs, and 10,000 VMs of one
 * name each, under scale.example. `npm run bench -- --only scale` starts each
 * shape a few times and prints the medians of start-up and RSS, without the
 * peers and the throughput runs (a quick check while working on start-up).
 */
import { startJitsu, rssMb, stopJitsu } from "./servers.js";
import { median } from "./stats.js";
import { SUMMON_EXEC } from "./summon.js";

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
    configs.push(`name=s${v},${dns.join(",")},ip=10.8.${v >> 8}.${v & 255},exec=${SUMMON_EXEC}`);
  }
  return { configs, names };
}

export interface StartupSample {
  startupMs: number;
  /** RSS when it first answered, MB. */
  rssReady: number;
  /** RSS and peak RSS (VmHWM) one second later, MB. */
  rssSettled: number;
  peak: number;
}

/**
 * Starts jitsu with `configs` (as the full bench does: -x process, -f 0.0.0.0,
 * JSON logs at `logLevel` piped to the bench), waits for its first answer, and
 * reads its RSS then and one second later.
 */
export async function sampleStartup(
  label: string,
  configs: readonly string[],
  logLevel: "info" | "warn",
): Promise<StartupSample> {
  const j = await startJitsu({
    label,
    configs,
    upstreamPort: null,
    logLevel,
    probe: { name: "scale.example", type: "SOA" },
  });
  const ready = rssMb(j.proc.pid);
  await new Promise((r) => setTimeout(r, 1000));
  const settled = rssMb(j.proc.pid);
  await stopJitsu(j);
  return { startupMs: j.startupMs, rssReady: ready.rss, rssSettled: settled.rss, peak: settled.peak };
}

/** `--only scale`: each shape `repeats` times, interleaved; prints the medians and every sample. */
export async function runScaleOnly(
  names: number,
  namesPerVm: number,
  repeats: number,
  log: (line: string) => void,
): Promise<void> {
  const shapes = [
    // The same log levels as the full bench's two scale instances.
    {
      label: `${names} names on ${names / namesPerVm} VMs`,
      ...scaleConfigs(names / namesPerVm, namesPerVm),
      level: "warn" as const,
    },
    { label: `${names} VMs, 1 name each`, ...scaleConfigs(names, 1), level: "info" as const },
  ];
  const samples = shapes.map(() => [] as StartupSample[]);
  for (let r = 1; r <= repeats; r++) {
    for (const [i, shape] of shapes.entries()) {
      log(`scale ${r}/${repeats}: ${shape.label}`);
      samples[i]!.push(await sampleStartup(`jitsu ${shape.label}`, shape.configs, shape.level));
    }
  }
  const lines = shapes.map((shape, i) => {
    const s = samples[i]!;
    const m = (f: (x: StartupSample) => number): string => median(s.map(f)).toFixed(0);
    return [
      `scale: ${shape.label} (median of ${s.length}): start-up ${m((x) => x.startupMs)} ms, RSS ${m((x) => x.rssReady)} MB ready, ${m((x) => x.rssSettled)} MB 1 s later, peak ${m((x) => x.peak)} MB`,
      `  samples (ms / peak MB): ${s.map((x) => `${x.startupMs.toFixed(0)}/${x.peak.toFixed(0)}`).join(", ")}`,
    ].join("\n");
  });
  process.stdout.write(`\n${lines.join("\n")}\n`);
}
