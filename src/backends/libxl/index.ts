/**
 * `-x libxl`: Xen through the xl toolstack (see README.md in this folder).
 */
import type { BackendFactory } from "../contract.js";
import { LIBXL_STOP_MODES, LibxlBackend } from "./backend.js";
import { LIBXL_KEYS } from "./keys.js";

export { LibxlBackend, type LibxlDeps } from "./backend.js";
export { planDomain, type DomainPlan } from "./domain-config.js";

export const libxlBackend: BackendFactory = {
  name: "libxl",
  summary:
    "Xen through the xl toolstack (xl create/pause/shutdown/destroy/save/restore; xenstore for rumprun and wait_for_key)",
  keys: LIBXL_KEYS,
  connects: false,
  capabilities: {
    stopModes: LIBXL_STOP_MODES,
    optional: new Set(["domainId", "macs", "waitForKey", "preflight"]),
  },
  create: (options) => new LibxlBackend(options),
};
