/**
 * `npm run chaos -- --minutes M --seed S [--qemu N] [--libvirt N] [--keep]`:
 * the chaos soak (issue 16). Three jitsus (process, qemu, libvirt's test
 * driver; 20 VMs in all), a client querying random names, and a chaos loop
 * that every few seconds injects one random fault for real (faults.ts). At
 * the end it checks the invariants, prints them with the totals, and exits 1
 * naming the seed and the step when one broke:
 *
 * 1. every query got an address or SERVFAIL within --start-timeout + 1 s
 *    (queries sent to a jitsu while it was killed, restarting or SIGSTOPped
 *    are lost to that fault, counted apart);
 * 2. no VM runs (process, QEMU, domain) that its jitsu's /status lists as off
 *    or not at all, none runs twice, and none listed ready is dead (a
 *    mismatch must outlast a reaper pass to count: jitsu learns of a change
 *    by an event or that pass);
 * 3. request counters never go backwards, across a jitsu's restarts beyond
 *    one flush interval (5 s; a full disk or a frozen jitsu delays flushes,
 *    and that is allowed for);
 * 4. once the chaos stops, every name answers its address within one start
 *    time (after its back-off, if it has one).
 */
import { Prng } from "../fuzz/prng.js";
import { stopAll, killAllNow } from "../procs.js";
import { ChaosClient, query, type QueryResult } from "./client.js";
import { FAULT_KINDS, Faults, type FaultKind } from "./faults.js";
import type { Instance, StatusBody } from "./instance.js";
import { World } from "./world.js";

const USAGE =
  "usage: npm run chaos -- [--minutes M] [--seed S] [--process N] [--qemu N] [--libvirt N] [--keep]";
/** The reaper's pass (and store flush) interval. */
const FLUSH_MS = 5000;
/** A listing mismatch must outlast this to count (a reaper pass, a stop's grace and a margin). */
const SETTLE_MS = 8000;

interface Options {
  minutes: number;
  seed: number;
  processVms: number;
  qemuVms: number;
  libvirtVms: number;
  keep: boolean;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    minutes: 3,
    seed: Date.now() % 1_000_000,
    processVms: 15,
    qemuVms: 2,
    libvirtVms: 3,
    keep: false,
  };
  const num = (flag: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min)
      throw new Error(`chaos: ${flag} takes a number >= ${min} (${USAGE})`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--minutes") o.minutes = num(a, argv[++i], 0.1);
    else if (a === "--seed") o.seed = Math.floor(num(a, argv[++i], 0));
    else if (a === "--process") o.processVms = Math.floor(num(a, argv[++i], 1));
    else if (a === "--qemu") o.qemuVms = Math.floor(num(a, argv[++i], 0));
    else if (a === "--libvirt") o.libvirtVms = Math.floor(num(a, argv[++i], 0));
    else if (a === "--keep") o.keep = true;
    else throw new Error(`chaos: unknown argument '${a}' (${USAGE})`);
  }
  return o;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Violation {
  readonly invariant: number;
  readonly step: number;
  readonly what: string;
}

interface Sample {
  readonly at: number;
  readonly life: number;
  readonly totals: Map<string, number>;
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  const log = (line: string): void =>
    console.log(
      `[chaos +${((Date.now() - t0) / 1000).toFixed(1)}s ${new Date().toISOString().slice(11, 23)}] ${line}`,
    );
  log(
    `seed ${opts.seed}, ${opts.minutes} min, VMs: ${opts.processVms} process, ${opts.qemuVms} qemu, ${opts.libvirtVms} libvirt`,
  );
  const rng = new Prng(opts.seed);
  const clientRng = new Prng(opts.seed ^ 0x5eed);
  const world = new World({
    processVms: opts.processVms,
    qemuVms: opts.qemuVms,
    libvirtVms: opts.libvirtVms,
    log,
  });
  const violations: Violation[] = [];
  let step = 0;
  const faultCounts = new Map<FaultKind, number>(FAULT_KINDS.map((k) => [k, 0]));
  const stepLog: string[] = [];
  const samples = new Map<Instance, Sample[]>();
  let sampling = true;
  let sampler: Promise<void> | null = null;
  const client: { c: ChaosClient | null } = { c: null };
  const faults = new Faults(world, rng);
  const violate = (invariant: number, what: string, atStep = step): void => {
    violations.push({ invariant, step: atStep, what });
    log(`VIOLATION of invariant ${invariant} at step ${atStep}: ${what}`);
  };

  cleanUp = async () => {
    sampling = false;
    await world.close();
    world.remove(true);
  };
  try {
    await world.start();
    log(
      `started: ${world.instances.map((i) => `jitsu -x ${i.backend} on 127.0.0.1:${i.dns} (${i.vms.length} VMs)`).join(", ")}; files in ${world.dir}`,
    );

    client.c = new ChaosClient(
      world.instances.map((i) => ({
        port: i.dns,
        names: i.vms.map((v) => v.name),
        limitMs: i.startTimeoutS * 1000 + 5000,
      })),
      () => clientRng.u32() / 0x1_0000_0000,
      () => step,
      [50, 250],
    );
    client.c.start();

    // Invariant 3's samples: every instance's totals, every second while it serves.
    sampler = (async () => {
      while (sampling) {
        for (const instance of world.instances) {
          if (!instance.serving) continue;
          const life = instance.restarts;
          let body: StatusBody;
          try {
            body = await instance.status();
          } catch {
            continue;
          }
          if (instance.restarts !== life) continue;
          const totals = new Map(body.vms.map((vm) => [vm.label, vm.totalRequests]));
          const list = samples.get(instance) ?? [];
          const last = list.at(-1);
          if (last !== undefined && last.life === life) {
            for (const [label, n] of totals) {
              if (n < (last.totals.get(label) ?? 0)) {
                violate(
                  3,
                  `jitsu -x ${instance.backend}: VM '${label}' requests went from ${last.totals.get(label)} to ${n} while it ran`,
                );
              }
            }
          }
          list.push({ at: Date.now(), life, totals });
          if (list.length > 600) list.splice(0, list.length - 600);
          samples.set(instance, list);
        }
        await sleep(1000);
      }
    })();

    // The chaos loop.
    const end = t0 + opts.minutes * 60_000;
    await sleep(3000);
    while (Date.now() < end) {
      step++;
      const kind = faults.draw();
      const began = Date.now();
      const lifeBefore = new Map(world.instances.map((i) => [i, i.restarts]));
      let what: string;
      try {
        what = await faults.inject(kind);
      } catch (err) {
        what = `failed to inject: ${err instanceof Error ? err.message : String(err)}`;
      }
      faultCounts.set(kind, faultCounts.get(kind)! + 1);
      const line = `step ${step}: ${kind}: ${what} (${Date.now() - began} ms)`;
      stepLog.push(line);
      log(line);
      for (const instance of world.instances) {
        if (instance.restarts !== lifeBefore.get(instance)) checkCounts(instance, began);
      }
      await sleep(rng.range(1500, 4000));
      await checkListings(step);
    }

    // The chaos stops: every fault has ended (each ends before the next); let jitsu notice.
    log("chaos over; checking that every name answers");
    await client.c.stop();
    await sleep(3000);
    await checkListings(step);
    await finalAnswers();
  } finally {
    sampling = false;
    await sampler;
    await client.c?.stop();
    await world.close().catch((err: unknown) => log(`closing: ${String(err)}`));
    await stopAll();
  }

  // ---- the report ---------------------------------------------------------
  const results = client.c?.results ?? [];
  checkAnswers(results);
  const byRcode = new Map<string, number>();
  let lost = 0;
  let worst = 0;
  let worstWhere = "";
  for (const r of results) {
    const instance = world.instances[r.instance]!;
    const excused = instance.wasOut(r.sentAt, r.sentAt + (r.ms ?? instance.startTimeoutS * 1000 + 5000));
    if (r.ms === null) {
      if (excused) lost++;
      else byRcode.set("no answer", (byRcode.get("no answer") ?? 0) + 1);
      continue;
    }
    byRcode.set(r.rcode, (byRcode.get(r.rcode) ?? 0) + 1);
    if (!excused && r.ms > worst) {
      worst = r.ms;
      worstWhere = `${r.name} (${r.rcode}, step ${r.step})`;
    }
  }
  const restarts = world.instances.map((i) => `${i.backend} ${i.restarts}`).join(", ");
  console.log("\n=== chaos soak ===");
  console.log(`seed ${opts.seed}, ${((Date.now() - t0) / 60_000).toFixed(1)} min, ${step} steps`);
  console.log(
    `faults injected: ${[...faultCounts]
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(", ")}`,
  );
  console.log(
    `queries: ${results.length}; answers: ${[...byRcode].map(([k, n]) => `${k} ${n}`).join(", ")}; lost to a jitsu kill or freeze: ${lost}`,
  );
  console.log(`restarts: jitsu ${restarts}; libvirtd ${faults.libvirtdRestarts}`);
  console.log(`worst answer time (outside a jitsu outage): ${worst.toFixed(0)} ms, ${worstWhere}`);
  const names = [
    "every query answered (address or SERVFAIL) within --start-timeout + 1 s",
    "no VM running unlisted or twice, none listed ready and dead",
    "request counters never backwards (beyond one flush interval)",
    "after the chaos, every name answers its address within one start time",
  ];
  for (let i = 1; i <= 4; i++) {
    const broken = violations.filter((v) => v.invariant === i);
    console.log(
      `invariant ${i}: ${broken.length === 0 ? "PASS" : `FAIL (${broken.length})`}: ${names[i - 1]}`,
    );
    for (const v of broken.slice(0, 10)) console.log(`  seed ${opts.seed} step ${v.step}: ${v.what}`);
  }
  world.writeNote("steps.log", stepLog.join("\n"));
  if (violations.length > 0) {
    const first = violations[0]!;
    console.log(
      `\nFAILED: seed ${opts.seed}, step ${first.step} (invariant ${first.invariant}); logs kept in ${world.dir}`,
    );
    world.remove(true);
    return 1;
  }
  console.log(opts.keep ? `\nPASSED; logs kept in ${world.dir}` : "\nPASSED");
  world.remove(opts.keep);
  return 0;

  // ---- the checks ---------------------------------------------------------

  /** Invariant 3 at a restart: what the new jitsu read back is at least what was flushed before the kill. */
  function checkCounts(instance: Instance, killedAround: number): void {
    const list = samples.get(instance) ?? [];
    const previousLife = instance.restarts - 1;
    let cutoff = killedAround - FLUSH_MS - 1000;
    // A full disk (the process jitsu's database) or a frozen jitsu holds the writes back.
    if (instance.backend === "process") {
      for (const full of faults.diskFull) {
        if (full.from <= killedAround && full.to >= cutoff - FLUSH_MS)
          cutoff = Math.min(cutoff, full.from - FLUSH_MS - 1000);
      }
    }
    for (const o of instance.outages) {
      if (o.to !== Infinity && o.to >= cutoff && o.from < killedAround) cutoff -= o.to - o.from;
    }
    const baseline = list.filter((s) => s.life === previousLife && s.at <= cutoff).at(-1);
    if (baseline === undefined) return;
    void (async () => {
      let body: StatusBody;
      try {
        body = await instance.status();
      } catch {
        return;
      }
      for (const vm of body.vms) {
        const before = baseline.totals.get(vm.label) ?? 0;
        if (vm.totalRequests < before) {
          violate(
            3,
            `jitsu -x ${instance.backend} restarted with ${vm.totalRequests} requests for VM '${vm.label}'; ${before} were counted ${Math.round((killedAround - baseline.at) / 1000)} s before the kill`,
          );
        }
      }
    })();
  }

  /** Invariant 2: what runs against what each serving jitsu lists; a mismatch must last SETTLE_MS. */
  async function checkListings(atStep: number): Promise<void> {
    const first = await listingProblems();
    if (first.size === 0) return;
    await sleep(SETTLE_MS);
    const second = await listingProblems();
    for (const [key, what] of second) if (first.has(key)) violate(2, what, atStep);
  }

  async function listingProblems(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const instance of world.instances) {
      if (!instance.serving) continue;
      if (instance.backend === "libvirt" && faults.libvirtdOutages.some((o) => o.to === Infinity)) continue;
      let body: StatusBody;
      let outside;
      try {
        body = await instance.status();
        outside = await world.outside(instance);
      } catch {
        continue;
      }
      const states = new Map(body.vms.map((vm) => [vm.label, vm.state]));
      const since = new Map(body.vms.map((vm) => [vm.label, vm.startedAt]));
      for (const [label, pids] of outside.running) {
        const state = states.get(label);
        if (pids.length > 1)
          out.set(
            `${instance.backend}/${label}/twice/${pids.join(",")}`,
            `${instance.backend} VM '${label}' runs twice (pids ${pids.join(", ")})`,
          );
        if (state === undefined || state === "off") {
          out.set(
            `${instance.backend}/${label}/orphan/${pids.join(",")}`,
            `${instance.backend} VM '${label}' runs (${pids.join(", ")}) but jitsu lists it as ${state ?? "nothing"}`,
          );
        }
      }
      for (const [label, state] of states) {
        if (state === "ready" && !outside.alive.has(label)) {
          // Keyed by its start: a VM started again since the first look is another case.
          out.set(
            `${instance.backend}/${label}/dead/${since.get(label)}`,
            `${instance.backend} VM '${label}' is listed ready (started ${since.get(label)}) but does not run`,
          );
        }
      }
    }
    return out;
  }

  /** Invariant 1, over every result. */
  function checkAnswers(all: readonly QueryResult[]): void {
    for (const r of all) {
      const instance = world.instances[r.instance]!;
      const limit = instance.startTimeoutS * 1000 + 1000;
      if (instance.wasOut(r.sentAt, r.sentAt + (r.ms ?? limit + 4000))) continue;
      const vm = instance.vms.find((v) => v.name === r.name)!;
      if (r.ms === null || r.ms > limit) {
        violate(
          1,
          `${r.name} sent at +${((r.sentAt - t0) / 1000).toFixed(1)} s: ${r.ms === null ? "no answer" : `answered after ${Math.round(r.ms)} ms`} (limit ${limit} ms)`,
          r.step,
        );
      } else if (r.rcode === "NOERROR" ? r.address !== vm.ip : r.rcode !== "SERVFAIL") {
        violate(
          1,
          `${r.name}: answered ${r.rcode} ${r.address ?? ""} (expected ${vm.ip} or SERVFAIL)`,
          r.step,
        );
      }
    }
  }

  /** Invariant 4: each name, after its back-off if it has one, answers its address within one start time. */
  async function finalAnswers(): Promise<void> {
    await Promise.all(
      world.instances.map(async (instance) => {
        let body: StatusBody;
        try {
          body = await instance.status();
        } catch (err) {
          violate(4, `jitsu -x ${instance.backend} does not serve /status after the chaos: ${String(err)}`);
          return;
        }
        for (const vm of instance.vms) {
          const row = body.vms.find((v) => v.label === vm.label);
          const nextTry = row?.nextTry === null || row?.nextTry === undefined ? 0 : Date.parse(row.nextTry);
          const deadline = Math.max(Date.now(), nextTry) + instance.startTimeoutS * 1000 + 1000;
          let last: string;
          for (;;) {
            const r = await query(instance.dns, vm.name, Math.max(1000, deadline - Date.now()));
            if (r.rcode === "NOERROR" && r.address === vm.ip) break;
            last = r.ms === null ? "no answer" : `${r.rcode} ${r.address ?? ""}`;
            if (Date.now() >= deadline) {
              violate(
                4,
                `${vm.name} did not answer ${vm.ip} within one start time after the chaos (last: ${last})`,
              );
              break;
            }
            await sleep(250);
          }
        }
      }),
    );
  }
}

/** Set once the world runs: a signal ends the soak with the same clean-up as its end. */
let cleanUp: (() => Promise<void>) | null = null;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.log(`chaos: ${sig}: stopping everything it started`);
    void (cleanUp ?? (async () => undefined))()
      .catch(() => undefined)
      .finally(() => {
        killAllNow();
        process.exit(130);
      });
  });
}
main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    killAllNow();
    process.exit(2);
  },
);
