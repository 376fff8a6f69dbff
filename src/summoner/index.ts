export { Summoner, type SummonerOptions, type SummonerState, type VmStatus } from "./summoner.js";
export { formatStatsTable } from "./stats-table.js";
export { probeOnce, describeProbe } from "./probes.js";
