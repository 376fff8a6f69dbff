/** The status and metrics endpoint (--http). See README.md. */
export {
  HTTP_HEADERS_TIMEOUT_MS,
  HTTP_MAX_CONNECTIONS,
  StatusServer,
  type StatusServerOptions,
} from "./server.js";
export { JitsuMetrics, type MetricsOptions } from "./metrics.js";
export type {
  AdmissionView,
  GroupStatusView,
  SummonerView,
  VmStatusView,
  DnsCountersView,
  DnsStatusView,
} from "./view.js";
