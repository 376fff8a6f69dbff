/**
 * One process supervisor for the backends that run local processes (process,
 * qemu): spawn into a process group, pid files with one identity policy,
 * adoption of what an earlier jitsu left running, signals, waits with a grace
 * period on the injected clock. See README.md.
 */
export {
  ProcessSupervisor,
  type Adoption,
  type AdoptOptions,
  type SpawnCommand,
  type SupervisorOptions,
} from "./process-supervisor.js";
export { SupervisedProcess, SupervisorError, type ExitStatus } from "./supervised-process.js";
export { SpawnGate, type GateCommand } from "./spawn-gate.js";
export { PidFile, parsePidFile, type PidRecord } from "./pid-file.js";
export { isRecordedProcess, type ExpectProcess } from "./identity.js";
export { findByEnvironment, readProcess, type MarkedProcess, type ProcessInfo } from "./proc.js";
export { countInboundConnections, groupMembers, parseProcNetTcp } from "./connections.js";
