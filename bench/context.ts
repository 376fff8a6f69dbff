/**
 * What every section of the bench is given: the options, the tools, a temp
 * dir for configs and query files, the log, and where servers run (the CPU
 * plan, see tools.ts cpuPlan). run.ts builds it once.
 */
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import type { Params } from "./params.js";
import type { Server } from "./servers.js";
import { cpuPlan, makeTempDir, pinTo, type CpuPlan, type Tools } from "./tools.js";

export interface BenchContext {
  readonly params: Params;
  readonly tools: Tools;
  /** Configs, query files and state; run.ts removes it at the end. */
  readonly dir: string;
  readonly log: (line: string) => void;
  /** Which CPUs the servers under test and the load run on; null: nothing is pinned. */
  readonly plan: CpuPlan | null;
  /** Every CPU (`0-N`) when pinned, for the instances whose start-up is timed (as a user runs jitsu). */
  readonly everyCpu: string | undefined;
  /** Moves a server under test (all its threads) onto the server CPU when pinned; returns it. */
  underTest<S extends Server>(server: S): S;
  /** Writes a dnsperf query file (a `NAME A` line per name) into `dir`; returns its path. */
  queryFile(file: string, names: readonly string[]): string;
}

/** The full run and `--only summon` pin (`--only scale` and `--only workers` leave CPU affinity alone). */
export function makeContext(params: Params, tools: Tools, log: (line: string) => void): BenchContext {
  const plan =
    params.only === null || params.only === "summon" || params.only === "hold"
      ? cpuPlan(cpus().length, params.pin)
      : null;
  const dir = makeTempDir();
  return {
    params,
    tools,
    dir,
    log,
    plan,
    everyCpu: plan === null ? undefined : `0-${cpus().length - 1}`,
    underTest<S extends Server>(server: S): S {
      if (plan !== null) pinTo(server.proc.pid, plan.server);
      return server;
    },
    queryFile(file: string, names: readonly string[]): string {
      const path = join(dir, file);
      writeFileSync(path, names.map((n) => `${n} A`).join("\n") + "\n");
      return path;
    },
  };
}
