export { Summoner, type SummonerOptions, type SummonerState, type VmStatus } from "./summoner.js";
export { formatStateSummary, formatStatsTable } from "./stats-table.js";
export { probeOnce, describeProbe } from "./probes.js";
export { clientPrefix, type AdmissionStatus } from "./admission.js";
export { STORE_WARN_INTERVAL_MS, type StoreHealth } from "./reconcile.js";
