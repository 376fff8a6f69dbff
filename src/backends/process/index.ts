import type { BackendFactory } from "../contract.js";
import { PROCESS_STOP_MODES, ProcessBackend } from "./backend.js";
import { PROCESS_KEYS } from "./keys.js";

export { ProcessBackend } from "./backend.js";
export { PROCESS_KEYS } from "./keys.js";
export { splitCommandLine } from "./command-line.js";

/** Local commands as VMs: the no-hypervisor backend for demos and development servers. */
export const processBackend: BackendFactory = {
  name: "process",
  summary: "Local commands as VMs (each in its own process group; pause = SIGSTOP)",
  keys: PROCESS_KEYS,
  connects: false,
  capabilities: { stopModes: PROCESS_STOP_MODES, optional: new Set(["onEvent", "preflight", "connections"]) },
  create: (options) => new ProcessBackend(options),
};
