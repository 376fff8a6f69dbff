/**
 * The backend registry. The CLI and --help read it; the summoner only sees the
 * contract. Backends whose issue has not landed are listed as `planned`, so
 * `-x NAME` fails with a clear "not available yet" instead of "unknown".
 */
import { NotAvailableError, UsageError } from "../errors/index.js";
import type { BackendFactory } from "./contract.js";
import { libvirtBackend } from "./libvirt/index.js";
import { libxlBackend } from "./libxl/index.js";
import { processBackend } from "./process/index.js";
import { qemuBackend } from "./qemu/index.js";
import { xapiBackend } from "./xapi/index.js";

export * from "./contract.js";

export const BACKENDS: readonly BackendFactory[] = [
  libvirtBackend,
  processBackend,
  xapiBackend,
  libxlBackend,
  qemuBackend,
];

/** Backends of the original (and ours) that are still being built. */
const PLANNED: readonly string[] = ["libvirt", "xapi", "libxl", "qemu"];

/** Planned backends not registered yet, for --help. */
export function plannedBackends(): string[] {
  return PLANNED.filter((p) => !BACKENDS.some((b) => b.name === p));
}

export function findBackend(name: string): BackendFactory {
  const factory = BACKENDS.find((b) => b.name === name);
  if (factory !== undefined) return factory;
  if (PLANNED.includes(name)) throw new NotAvailableError(`the ${name} backend (-x ${name})`);
  const known = [...BACKENDS.map((b) => b.name), ...plannedBackends()];
  throw new UsageError(`unknown backend '${name}' (known: ${known.join(", ")})`, "--backend");
}
