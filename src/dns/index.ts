/** The DNS layer: server (UDP + TCP), zone, forwarder, counters. See README.md. */
export {
  DnsServer,
  MAX_TCP_CONNECTIONS,
  TCP_IDLE_TIMEOUT_MS,
  type DnsServerOptions,
  type SummonTarget,
} from "./server.js";
export { ZoneIndex, reverseName, type ZoneVm } from "./zone-index.js";
export {
  FORWARD_DEFAULTS,
  Forwarder,
  ForwardError,
  parseResolvConf,
  upstreamsFromResolvConf,
  type ForwarderOptions,
  type ForwardingOptions,
  type Upstream,
} from "./forwarder/index.js";
export {
  DnsCounters,
  FORWARD_LATENCY_BOUNDS,
  REFUSED,
  REFUSED_REASONS,
  TCP_CLOSE_REASONS,
  type CountersSnapshot,
  type RefusedReason,
  type TcpCloseReason,
} from "./counters.js";
export { ClientAccess, localNetworks, parseAccessList } from "./access.js";
export { LocalClientSlots, type ClientSlots } from "./tcp.js";
export { socketKind, type SocketKind } from "./socket-kind.js";
export { UDP_IO_ADDON, UDP_IO_ENV, nativeUdp } from "./native-udp.js";
