/**
 * The qemu backend's start-up checks (`QemuBackend.preflight`): the folder
 * under --state-dir writable, and for each VM its QMP socket path short
 * enough, its QEMU binary, kernel, initrd and disk files present, KVM there if
 * `accel=kvm`, and its other keys read as `resolve` reads them.
 */
import { join } from "node:path";
import type { VmSpec } from "../../config/index.js";
import type { ConfigError, JitsuError } from "../../errors/index.js";
import { noteConfigError, stateDirProblem } from "../preflight.js";
import { parseMachine } from "./config.js";
import { VmDirectory } from "./vm-directory.js";

export async function checkQemuVms(stateDir: string, specs: readonly VmSpec[]): Promise<JitsuError[]> {
  const problems: JitsuError[] = [];
  if (specs.length > 0) {
    // VmDirectory.create makes the VMs' folders the same way.
    const dir = await stateDirProblem("qemu", join(stateDir, "qemu"), 0o700);
    if (dir !== null) problems.push(dir);
  }
  for (const spec of specs) {
    noteConfigError(problems, () => new VmDirectory(stateDir, spec.label));
    const missing: ConfigError[] = [];
    noteConfigError(problems, () => parseMachine(spec, missing));
    problems.push(...missing);
  }
  return problems;
}
