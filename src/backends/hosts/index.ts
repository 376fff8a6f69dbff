/**
 * One backend connection per host, for per-VM `connect=` URIs. See README.md
 * in this folder.
 */
import type { BackendFactory, BackendOptions, VmBackend } from "../contract.js";
import { HostRouter } from "./host-router.js";

export {
  CONNECT_RETRY_MS,
  HostRouter,
  PROBE_INTERVAL_MS,
  hostOptions,
  type HostState,
  type HostStatus,
} from "./host-router.js";

/**
 * The backend the CLI runs: for a backend that connects, a HostRouter (-c's
 * host and one connection per `connect=` host), else the factory's own.
 */
export function createBackend(factory: BackendFactory, options: BackendOptions): VmBackend {
  return factory.hosts === undefined ? factory.create(options) : new HostRouter(factory, options);
}
