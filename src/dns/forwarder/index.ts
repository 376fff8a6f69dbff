export { Forwarder, ForwardError, replyMatches, upstreamQuery, type ForwarderOptions } from "./forwarder.js";
export { parseResolvConf, upstreamsFromResolvConf, type Upstream } from "./resolv-conf.js";
