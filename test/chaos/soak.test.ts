/**
 * The chaos soak (bench/chaos/, `npm run chaos`) for 3 minutes, as CI runs
 * it: three jitsus (process, qemu, libvirt's test driver), 20 VMs, real
 * faults every few seconds; it must print PASS for each of its four
 * invariants and exit 0. A failure names the seed and the step; rerun it with
 * `npm run chaos -- --minutes 3 --seed S --keep` to keep the logs.
 * JITSU_CHAOS_SEED and JITSU_CHAOS_MINUTES override the seed and length.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { it } from "node:test";

const MAIN = fileURLToPath(new URL("../../bench/chaos/main.js", import.meta.url));
const SEED = process.env["JITSU_CHAOS_SEED"] ?? "16";
const MINUTES = process.env["JITSU_CHAOS_MINUTES"] ?? "3";

it(
  `the chaos soak: ${MINUTES} minutes, seed ${SEED}, every invariant holds`,
  { timeout: (Number(MINUTES) + 6) * 60_000 },
  async () => {
    const child = spawn(process.execPath, [MAIN, "--minutes", MINUTES, "--seed", SEED], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    const report = out.slice(out.indexOf("=== chaos soak ==="));
    assert.equal(code, 0, out.slice(-6000));
    for (let i = 1; i <= 4; i++) assert.match(report, new RegExp(`invariant ${i}: PASS`), report);
    // It did inject faults and send queries (a soak that does nothing would pass too).
    assert.match(report, /faults injected: \S+ \d+/);
    const queries = Number(/queries: (\d+)/.exec(report)?.[1] ?? 0);
    assert.ok(queries > 100, `only ${queries} queries`);
  },
);
