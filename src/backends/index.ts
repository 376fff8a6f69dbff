/**
 * The backend registry. The CLI and --help read it; the summoner only sees the
 * contract.
 */
import { UsageError } from "../errors/index.js";
import type { BackendFactory } from "./contract.js";
import { dockerBackend } from "./docker/index.js";
import { libvirtBackend } from "./libvirt/index.js";
import { libxlBackend } from "./libxl/index.js";
import { processBackend } from "./process/index.js";
import { qemuBackend } from "./qemu/index.js";
import { xapiBackend } from "./xapi/index.js";

export * from "./contract.js";
export { checkStopMode, checkVmSpec, exitStopMode, specOptions } from "./capabilities.js";
export { runPreflight } from "./preflight.js";
export { HostRouter, createBackend, hostOptions, type HostState, type HostStatus } from "./hosts/index.js";

export const BACKENDS: readonly BackendFactory[] = [
  libvirtBackend,
  processBackend,
  xapiBackend,
  libxlBackend,
  qemuBackend,
  dockerBackend,
];

export function findBackend(name: string): BackendFactory {
  const factory = BACKENDS.find((b) => b.name === name);
  if (factory !== undefined) return factory;
  throw new UsageError(
    `unknown backend '${name}' (known: ${BACKENDS.map((b) => b.name).join(", ")})`,
    "--backend",
  );
}
