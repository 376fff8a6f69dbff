/**
 * The libxl backend's start-up checks (`LibxlBackend.preflight`): `xl` found
 * (on PATH, or --xl), the folder under --state-dir writable (the domain config
 * files and save images go there), and for each VM jitsu creates (one with a
 * `kernel`) its kernel, disk and rumprun_config files present, the rumprun
 * JSON valid, and its other keys read as `resolve` reads them.
 */
import type { VmSpec } from "../../config/index.js";
import { UsageError, type ConfigError, type JitsuError } from "../../errors/index.js";
import { lookupProgram, noteConfigError, stateDirProblem } from "../preflight.js";
import { planDomain } from "./domain-config.js";
import { XL_HINT } from "./xl.js";

/** `dir`: the backend's folder, `<state-dir>/libxl`; `xl`: the command it runs. */
export async function checkLibxlVms(
  dir: string,
  xl: string,
  specs: readonly VmSpec[],
): Promise<JitsuError[]> {
  const problems: JitsuError[] = [];
  const found = lookupProgram(xl);
  if ("problem" in found) problems.push(new UsageError(`program ${found.problem}; ${XL_HINT}`, "--xl"));
  if (specs.length > 0) {
    const unwritable = await stateDirProblem("libxl", dir);
    if (unwritable !== null) problems.push(unwritable);
  }
  for (const spec of specs) {
    // Without a kernel the VM is an existing domain (the Synjitsu VM): nothing of ours to check.
    if (!spec.options.has("kernel")) continue;
    const missing: ConfigError[] = [];
    noteConfigError(problems, () => planDomain(spec, process.cwd(), missing));
    problems.push(...missing);
  }
  return problems;
}
