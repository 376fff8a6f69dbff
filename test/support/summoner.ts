/**
 * Summoner options for tests: the values most tests use (no response delay,
 * a 60 s TTL, destroy, a memory store, no logs), each one overridable. The
 * backend, the specs and the clock are always the caller's.
 */
import type { SummonerOptions } from "../../src/summoner/index.js";
import { MemoryStore } from "../../src/store/index.js";
import { silentLogger } from "../../src/log/index.js";

export function summonerOptions(
  o: Pick<SummonerOptions, "backend" | "specs" | "clock"> & Partial<SummonerOptions>,
): SummonerOptions {
  return {
    backendName: "test",
    log: silentLogger(),
    ttlSeconds: 60,
    delaySeconds: 0,
    startTimeoutSeconds: 30,
    stopMode: "destroy",
    store: new MemoryStore(),
    ...o,
  };
}
