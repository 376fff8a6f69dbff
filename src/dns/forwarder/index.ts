export {
  FORWARD_DEFAULTS,
  Forwarder,
  ForwardError,
  randomizeCase,
  replyMatches,
  upstreamQuery,
  type ForwarderOptions,
  type ForwardingOptions,
} from "./forwarder.js";
export { RandomBytes } from "./random-bytes.js";
export { parseResolvConf, upstreamsFromResolvConf, type Upstream } from "./resolv-conf.js";
