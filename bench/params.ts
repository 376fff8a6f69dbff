/** The bench's command line: `--quick` (about a minute, a sanity run) or the full run (a few minutes). */
export interface Params {
  quick: boolean;
  /** dnsperf run length, s. */
  seconds: number;
  /** Throughput rounds (best of this many per side, interleaved). */
  rounds: number;
  latencySeconds: number;
  summonStarts: number;
  stormQueries: number;
  scaleNames: number;
}

export function parseParams(argv: readonly string[]): Params {
  const quick = argv.includes("--quick");
  for (const a of argv) {
    if (a !== "--quick") throw new Error(`bench: unknown argument '${a}' (only --quick is known)`);
  }
  return quick
    ? {
        quick,
        seconds: 2,
        rounds: 1,
        latencySeconds: 2,
        summonStarts: 12,
        stormQueries: 1000,
        scaleNames: 10_000,
      }
    : {
        quick,
        seconds: 6,
        rounds: 2,
        latencySeconds: 4,
        summonStarts: 100,
        stormQueries: 1000,
        scaleNames: 10_000,
      };
}
