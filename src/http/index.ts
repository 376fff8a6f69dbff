/** The status and metrics endpoint (--http). See README.md. */
export {
  HTTP_HEADERS_TIMEOUT_MS,
  HTTP_MAX_CONNECTIONS,
  StatusServer,
  type StatusServerOptions,
} from "./server.js";
export { JitsuMetrics, type MetricsOptions } from "./metrics.js";
export {
  EVENTS_KEEPALIVE_MS,
  EVENTS_MAX_BUFFER_BYTES,
  EVENTS_MAX_CLIENTS,
  EventStream,
} from "./event-stream.js";
export { HISTORY_INTERVAL_MS, StatsHistory, dnsTotals, type HistoryBody } from "./history.js";
export { PAGE_CSP, loadPageFiles } from "./page-files.js";
export type {
  AdmissionView,
  GroupStatusView,
  SummonerView,
  VmStatusView,
  DnsCountersView,
  DnsStatusView,
  HostStatusView,
} from "./view.js";
