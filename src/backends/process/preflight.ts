/**
 * The process backend's start-up checks (`ProcessBackend.preflight`): each
 * VM's keys read as `resolve` reads them, its `cwd` a directory it may enter,
 * its `exec` program found as spawn will find it (relative to `cwd`, or on
 * the PATH the VM gets), and the pid-file folder under --state-dir writable.
 */
import { isAbsolute } from "node:path";
import type { VmSpec } from "../../config/index.js";
import { ConfigError, type JitsuError } from "../../errors/index.js";
import { directoryProblem, lookupProgram, noteConfigError, stateDirProblem } from "../preflight.js";
import { pidFileDir } from "./pid-file.js";
import { readArgv, readEnv, readGraceMs, type Argv } from "./program-spec.js";

export async function checkProcessVms(stateDir: string, specs: readonly VmSpec[]): Promise<JitsuError[]> {
  const problems: JitsuError[] = [];
  // No VM, no pid file: an empty configuration needs no state directory yet.
  if (specs.length > 0) {
    const dir = await stateDirProblem("process", pidFileDir(stateDir));
    if (dir !== null) problems.push(dir);
  }
  // Thousands of VMs often share a command and a directory: look each up once.
  const dirs = new Map<string, string | null>();
  const programs = new Map<string, string | null>();
  for (const spec of specs) {
    const vm = spec.label;
    noteConfigError(problems, () => readGraceMs(spec));
    const env = noteConfigError(problems, () => readEnv(spec));
    const cwd = spec.options.str("cwd");
    let cwdOk = true;
    if (cwd !== undefined) {
      let problem = dirs.get(cwd);
      if (problem === undefined) dirs.set(cwd, (problem = directoryProblem(cwd)));
      if (problem !== null) problems.push(new ConfigError(problem, { vm, key: "cwd" }));
      cwdOk = problem === null;
    }
    const argv: Argv | undefined = noteConfigError(problems, () =>
      readArgv(vm, spec.options.requireStr("exec")),
    );
    if (argv === undefined || env === undefined) continue;
    // A relative program in a directory that is not there: the cwd line says it.
    if (!cwdOk && argv[0].includes("/") && !isAbsolute(argv[0])) continue;
    const searchPath = env["PATH"] ?? process.env["PATH"];
    const key = `${cwd ?? ""}\0${searchPath ?? ""}\0${argv[0]}`;
    let problem = programs.get(key);
    if (problem === undefined) {
      const found = lookupProgram(argv[0], {
        ...(cwd === undefined ? {} : { cwd }),
        ...(searchPath === undefined ? {} : { searchPath }),
      });
      programs.set(key, (problem = "problem" in found ? `program ${found.problem}` : null));
    }
    if (problem !== null) problems.push(new ConfigError(problem, { vm, key: "exec" }));
  }
  return problems;
}
