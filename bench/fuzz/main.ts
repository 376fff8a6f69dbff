#!/usr/bin/env node
/**
 * `npm run fuzz -- --packets N --seed S [--no-forward] [--skip K] [--dump-dir DIR]`:
 * mutated DNS queries and junk TCP streams at a jitsu started for the run.
 * Prints the totals; exits 1 with the findings (and a file of the cases since
 * the last passing check) if jitsu crashed, hung or lost count. See README.md.
 */
import { stopAll, killAllNow } from "../procs.js";
import { formatReport, runFuzz, type FuzzOptions } from "./fuzzer.js";

const USAGE = "usage: npm run fuzz -- [--packets N] [--seed S] [--no-forward] [--skip K] [--dump-dir DIR]";

function parseFuzzArgs(argv: readonly string[]): FuzzOptions {
  let packets = 100_000;
  let seed = 1;
  let skip = 0;
  let forward = true;
  let dumpDir: string | undefined;
  const count = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isSafeInteger(n) || n < min)
      throw new Error(`fuzz: ${flag} takes a whole number of at least ${min}, got '${v ?? ""}' (${USAGE})`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--packets") packets = count(a, argv[++i], 1);
    else if (a === "--seed") seed = count(a, argv[++i], 0) % 0x1_0000_0000;
    else if (a === "--skip") skip = count(a, argv[++i], 0);
    else if (a === "--no-forward") forward = false;
    else if (a === "--dump-dir") {
      dumpDir = argv[++i];
      if (dumpDir === undefined) throw new Error(`fuzz: --dump-dir takes a directory (${USAGE})`);
    } else throw new Error(`fuzz: unknown argument '${a}' (${USAGE})`);
  }
  return { packets, seed, skip, forward, ...(dumpDir === undefined ? {} : { dumpDir }) };
}

async function main(): Promise<void> {
  let opts: FuzzOptions;
  try {
    opts = parseFuzzArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  process.once("exit", killAllNow);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      void stopAll().then(() => process.exit(130));
    });
  }
  process.stderr.write(
    `fuzz: seed ${opts.seed}, ${opts.packets} packets${opts.skip ? ` after skipping ${opts.skip}` : ""}, forwarding ${opts.forward === false ? "off" : "to a local upstream"}\n`,
  );
  const report = await runFuzz({ ...opts, log: (line) => process.stderr.write(`fuzz: ${line}\n`) });
  process.stdout.write(`${formatReport(report)}\n`);
  process.exitCode = report.findings.length === 0 ? 0 : 1;
}

main().catch(async (err: unknown) => {
  process.stderr.write(`fuzz: ${err instanceof Error ? err.message : String(err)}\n`);
  await stopAll();
  process.exit(1);
});
