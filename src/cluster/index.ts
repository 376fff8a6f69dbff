/** --workers N: DNS served by node:cluster workers, VMs owned by the primary. See README.md. */
export { ClusterPrimary, type ClusterOptions } from "./primary.js";
export { RemoteSummoner } from "./remote-summoner.js";
export { parseToPrimary, parseToWorker, type ToPrimary, type ToWorker, type ReadyEntry } from "./protocol.js";
