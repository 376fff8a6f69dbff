import type { BackendFactory } from "../contract.js";
import { QEMU_STOP_MODES, QemuBackend } from "./backend.js";
import { QEMU_KEYS } from "./keys.js";

export { QemuBackend, QEMU_STOP_MODES } from "./backend.js";
export { parseMachine, type QemuMachine } from "./config.js";
export { QEMU_KEYS } from "./keys.js";
export { QmpClient, QmpError, type QmpEvent, type QmpGreeting } from "./qmp.js";

/** QEMU launched straight from a kernel, controlled over QMP. */
export const qemuBackend: BackendFactory = {
  name: "qemu",
  summary:
    "QEMU microVMs booted from a kernel, controlled over QMP (pause = stop, suspend/save = memory to a file)",
  keys: QEMU_KEYS,
  connects: false,
  capabilities: {
    stopModes: QEMU_STOP_MODES,
    optional: new Set(["macs", "onEvent", "preflight", "connections", "hostPort"]),
  },
  create: (options) => new QemuBackend(options),
};
