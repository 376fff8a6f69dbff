/**
 * The bench's command line: `--quick` (about a minute, a sanity run) or the
 * full run (a few minutes); `--nice N` runs the bench and everything it starts
 * at that scheduling priority (e.g. -5 on a machine shared with other work, so
 * that other processes disturb the measurements less; all sides alike);
 * `--no-pin` leaves CPU affinity alone (by default each server under test
 * gets a CPU of its own and the load the others: see tools.ts cpuPlan).
 * `--only scale` runs only the scale start-up and memory shapes, a few times
 * each, and prints their medians (bench/scale.ts); `--only workers` runs only
 * the all-CPUs rows (`--workers N` against one process and the peers,
 * bench/workers.ts); `--only forward` only the hot path UDP and the forwarded
 * rows (bench/throughput.ts forwardOnly); `--only summon` only the summon rows
 * and their idle baseline (bench/summon.ts), pinned as in the full run.
 */
export interface Params {
  quick: boolean;
  /** Scheduling priority for the bench and its children, or null to leave it. */
  nice: number | null;
  /** Servers under test on a CPU of their own, the load on the others (off with `--no-pin`). */
  pin: boolean;
  /** Run one section only, or null for all. */
  only: "scale" | "workers" | "forward" | "summon" | "hold" | null;
  /** `--only scale`: starts of each shape. */
  scaleRepeats: number;
  /** dnsperf run length, s. */
  seconds: number;
  /** Throughput rounds (best of this many per side, interleaved). */
  rounds: number;
  latencySeconds: number;
  /** Latency rounds (best p99 of this many per side: one quiet window is enough to show what the server does). */
  latencyRounds: number;
  summonStarts: number;
  stormQueries: number;
  scaleNames: number;
}

const USAGE =
  "usage: npm run bench -- [--quick] [--nice N] [--no-pin] [--only scale|workers|forward|summon|hold]";

export function parseParams(argv: readonly string[]): Params {
  let quick = false;
  let nice: number | null = null;
  let pin = true;
  let only: "scale" | "workers" | "forward" | "summon" | "hold" | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") quick = true;
    else if (a === "--no-pin") pin = false;
    else if (a === "--nice") {
      const v = argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isInteger(n) || n < -20 || n > 19) {
        throw new Error(`bench: --nice takes a whole number from -20 to 19, got '${v ?? ""}' (${USAGE})`);
      }
      nice = n;
    } else if (a === "--only") {
      const v = argv[++i];
      if (v !== "scale" && v !== "workers" && v !== "forward" && v !== "summon" && v !== "hold") {
        throw new Error(
          `bench: --only takes 'scale', 'workers', 'forward', 'summon' or 'hold', got '${v ?? ""}' (${USAGE})`,
        );
      }
      only = v;
    } else throw new Error(`bench: unknown argument '${a}' (${USAGE})`);
  }
  const sizes = quick
    ? { seconds: 2, rounds: 1, latencySeconds: 2, latencyRounds: 1, summonStarts: 12 }
    : { seconds: 6, rounds: 2, latencySeconds: 4, latencyRounds: 3, summonStarts: 100 };
  return {
    quick,
    nice,
    pin,
    only,
    ...sizes,
    stormQueries: 1000,
    scaleNames: 10_000,
    scaleRepeats: quick ? 3 : 5,
  };
}
