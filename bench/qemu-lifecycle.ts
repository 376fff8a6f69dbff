#!/usr/bin/env node
/**
 * `node dist/bench/qemu-lifecycle.js [--runs N]`: how fast a VM behind a jitsu
 * name comes back, through the whole path a user sees: a DNS query over UDP on
 * loopback to jitsu (DNS server + summoner + qemu backend in this process),
 * the answer, then an HTTP GET to the guest through hostfwd on 127.0.0.1.
 *
 * For the test guest (scripts/build-test-guest.sh) under the available
 * accelerator, it measures query -> answer and query -> first HTTP byte when
 * the VM is paused (QMP stop), saved to a memory file (migrate to file), and
 * off (cold boot); p50 (and min/max) over N runs each. The VM is put into each
 * state with the summoner's own stopVm between runs. The answer waits for
 * `ready=http://...` to pass, so "answer" means "the guest serves HTTP".
 *
 * Peers: the same operations through the libvirt backend in the same run (a
 * private libvirtd from test/doubles/libvirtd.ts, qemu:///session, the
 * same guest, kernel command line and QEMU binary), when that backend is in
 * the build; otherwise the report says it was not measured. And for the cold
 * boot, the very same QEMU command line run by hand, interleaved with jitsu's
 * runs (before jitsu's boot in even rounds, after it in odd ones): spawn ->
 * first HTTP byte, the first byte seen by a poller that opens a new
 * connection every 10 ms (each waits up to 1 s), so
 * that it sees the guest serve within about 10 ms whatever the connections
 * opened before the guest's network was up do (QEMU's user networking holds
 * them).
 *
 * `--only cold`: only the cold boot, jitsu against QEMU by hand. `--observe`:
 * during jitsu's cold boots, an observer like the by-hand poller watches the
 * guest's port too, for a row of how long after the guest first served HTTP
 * jitsu answered (paired per boot; see measure()).
 */
import { execFileSync, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import packet from "dns-packet";
import { BACKENDS, type StopMode } from "../src/backends/index.js";
import { qemuArgs } from "../src/backends/qemu/command-line.js";
import { parseMachine } from "../src/backends/qemu/config.js";
import { DEFAULT_CMDLINE } from "../src/backends/qemu/keys.js";
import { VmDirectory } from "../src/backends/qemu/vm-directory.js";
import { parseArgs } from "../src/cli/command.js";
import { buildSpecs, startJitsu, type Jitsu } from "../src/cli/run.js";
import { silentLogger } from "../src/log/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = join(here, "..", "..");
const RESULTS_DIR = join(REPO_ROOT, "bench", "results");
const NAME = "web.bench.test";
const LABEL = "web";

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    sock.once("error", reject);
    sock.bind(0, "127.0.0.1", () => {
      const { port } = sock.address();
      sock.close(() => {
        // The same port must be free on TCP too (hostfwd and DNS over TCP).
        const probe = connect({ host: "127.0.0.1", port });
        probe.once("connect", () => {
          probe.destroy();
          resolve(freePort());
        });
        probe.once("error", () => resolve(port));
      });
    });
  });
}

/** One A query; resolves with the ms until the answer (rejects on a non-answer or after `timeoutMs`). */
function queryA(dnsPort: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    const t0 = performance.now();
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error(`no DNS answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on("message", (msg) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      sock.close();
      const res = packet.decode(msg) as { rcode?: string; answers?: unknown[] };
      if (res.rcode !== "NOERROR" || (res.answers ?? []).length === 0) {
        reject(new Error(`DNS answer ${res.rcode ?? "?"} without an A record`));
        return;
      }
      resolve(ms);
    });
    sock.send(
      packet.encode({
        type: "query",
        id: 1 + Math.floor(Math.random() * 65000),
        flags: packet.RECURSION_DESIRED,
        questions: [{ type: "A", name: NAME }],
      }),
      dnsPort,
      "127.0.0.1",
    );
  });
}

/** GET / on 127.0.0.1:port; resolves when the first byte of the reply arrives. */
function firstByte(port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: "127.0.0.1", port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no HTTP byte within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once("connect", () => sock.write(`GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`));
    sock.once("data", () => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    });
    sock.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

interface Sample {
  answerMs: number;
  firstByteMs: number;
  /** With `observe`: when the observer (firstByteOfMany, from the query on) first got an HTTP byte. */
  observedMs?: number;
}

/**
 * Query -> answer -> first byte of a GET. With `observe`, a poller like the
 * by-hand one watches the guest's port from the query on: how long after the
 * guest first served HTTP jitsu answered, paired in the same boot (so the
 * boot's own variance cancels), at the price of its connections' CPU.
 */
async function measure(
  dnsPort: number,
  httpPort: number,
  timeoutMs: number,
  observe = false,
): Promise<Sample> {
  const t0 = performance.now();
  let observedMs: number | undefined;
  const observer = observe
    ? firstByteOfMany(httpPort, 10, timeoutMs).then(() => (observedMs = performance.now() - t0))
    : Promise.resolve();
  const answerMs = await queryA(dnsPort, timeoutMs);
  await firstByte(httpPort, timeoutMs);
  const firstByteMs = performance.now() - t0;
  await observer;
  return { answerMs, firstByteMs, ...(observedMs === undefined ? {} : { observedMs }) };
}

/** The first byte of a reply to GET / on 127.0.0.1:port, from any of the connections opened every `everyMs`. */
function firstByteOfMany(port: number, everyMs: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const open = new Set<ReturnType<typeof connect>>();
    const finish = (err?: Error): void => {
      clearInterval(every);
      clearTimeout(limit);
      for (const s of open) s.destroy();
      if (err === undefined) resolve();
      else reject(err);
    };
    const attempt = (): void => {
      const sock = connect({ host: "127.0.0.1", port });
      open.add(sock);
      const drop = (): void => {
        open.delete(sock);
        sock.destroy();
      };
      sock.setTimeout(1000, drop);
      sock.once("connect", () => sock.write(`GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`));
      sock.once("data", () => finish());
      sock.once("error", drop);
      sock.once("end", drop);
    };
    const every = setInterval(attempt, everyMs);
    const limit = setTimeout(() => finish(new Error(`no HTTP byte within ${timeoutMs} ms`)), timeoutMs);
    attempt();
  });
}

/**
 * The peer of jitsu's cold boot: `argv` (the VM's QEMU command line, as jitsu
 * builds it) spawned by hand, timed from the spawn to the guest's first HTTP
 * byte on `httpPort`; then killed.
 */
async function bootByHand(argv: readonly string[], dir: string, httpPort: number): Promise<number> {
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: "ignore", detached: true, cwd: dir });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("error", () => undefined);
  try {
    await Promise.race([
      firstByteOfMany(httpPort, 10, 300_000),
      exited.then(() => Promise.reject(new Error(`QEMU by hand exited before serving HTTP`))),
    ]);
    return performance.now() - t0;
  } finally {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // gone already
    }
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))]!;
}

interface Scenario {
  readonly name: string;
  /** How the VM is put down before each run. */
  readonly stop: StopMode;
}

const SCENARIOS: readonly Scenario[] = [
  { name: "from paused", stop: "pause" },
  { name: "from saved snapshot", stop: "save" },
  { name: "from off (cold boot)", stop: "destroy" },
];

interface Row {
  backend: string;
  scenario: string;
  runs: number;
  answerP50: number;
  firstByteP50: number;
  firstByteMin: number;
  firstByteMax: number;
  stopP50: number;
  /** Per run, jitsu's first byte over the run by hand just before it (cold boot with its peer). */
  ratios?: number[];
}

/**
 * One backend's scenarios, `runs` each, through jitsu in this process. With
 * `byHand` (qemu only), each cold boot run is preceded by a boot of the same
 * QEMU command line by hand (bootByHand), which gives one more row.
 */
async function benchBackend(
  backend: string,
  configFor: (httpPort: number) => string,
  runs: number,
  extraArgs: string[] | ((httpPort: number) => string[]),
  scenarios: readonly Scenario[] = SCENARIOS,
  label: string = backend,
  byHand = false,
  observe = false,
): Promise<Row[]> {
  const stateDir = mkdtempSync(join(tmpdir(), `jitsu-bench-${backend}-`));
  const dnsPort = await freePort();
  const httpPort = await freePort();
  const extra = typeof extraArgs === "function" ? extraArgs(httpPort) : extraArgs;
  const settings = parseArgs([
    "-x",
    backend,
    "-l",
    String(dnsPort),
    "-f",
    "0.0.0.0",
    "-t",
    "3600",
    "-d",
    "0",
    "--start-timeout",
    "300",
    "--state-dir",
    stateDir,
    ...extra,
    configFor(httpPort),
  ]);
  let jitsu: Jitsu | undefined;
  const rows: Row[] = [];
  try {
    jitsu = await startJitsu(settings, { log: silentLogger() });
    log(`${backend}: first boot (not measured)`);
    await measure(dnsPort, httpPort, 300_000);
    // The same command line as jitsu's QEMU, but its own pid file, QMP socket and console log.
    const handDir = join(stateDir, "by-hand");
    const handArgv = byHand
      ? (() => {
          const machine = parseMachine(buildSpecs([configFor(httpPort)], backend)[0]!);
          return [machine.qemu, ...qemuArgs(machine, new VmDirectory(handDir, LABEL))];
        })()
      : [];
    for (const sc of scenarios) {
      const samples: Sample[] = [];
      const stops: number[] = [];
      const handMs: number[] = [];
      for (let i = 0; i < runs; i++) {
        const s0 = performance.now();
        await jitsu.summoner.stopVm(LABEL, sc.stop);
        stops.push(performance.now() - s0);
        // The same command line by hand while jitsu's VM is off (its hostfwd port free): before
        // jitsu's boot in even rounds, after it in odd ones, so a drift in the host's load favours neither.
        const handRound = byHand && sc.stop === "destroy";
        const byHandNow = async (): Promise<void> => {
          await new Promise((r) => setTimeout(r, 200));
          handMs.push(await bootByHand(handArgv, join(handDir, "qemu", LABEL), httpPort));
          log(`QEMU by hand ${sc.name} #${i + 1}: spawn -> first HTTP byte ${handMs.at(-1)!.toFixed(1)} ms`);
        };
        if (handRound && i % 2 === 0) await byHandNow();
        // Let the host settle a moment after the stop, as a real idle VM would.
        await new Promise((r) => setTimeout(r, 200));
        const sample = await measure(dnsPort, httpPort, 300_000, observe && sc.stop === "destroy");
        samples.push(sample);
        if (handRound && i % 2 === 1) {
          await jitsu.summoner.stopVm(LABEL, "destroy");
          await byHandNow();
        }
        log(
          `${label} ${sc.name} #${i + 1}: answer ${sample.answerMs.toFixed(1)} ms, first HTTP byte ${sample.firstByteMs.toFixed(1)} ms (stop took ${stops.at(-1)!.toFixed(0)} ms)${
            sample.observedMs === undefined
              ? ""
              : `; the observer's first byte ${sample.observedMs.toFixed(1)} ms: answer ${(sample.answerMs - sample.observedMs).toFixed(1)} ms after it`
          }`,
        );
      }
      const fb = samples.map((s) => s.firstByteMs);
      rows.push({
        backend: label,
        scenario: sc.name,
        runs,
        answerP50: percentile(
          samples.map((s) => s.answerMs),
          50,
        ),
        firstByteP50: percentile(fb, 50),
        firstByteMin: Math.min(...fb),
        firstByteMax: Math.max(...fb),
        stopP50: percentile(stops, 50),
        ratios: handMs.length === 0 ? undefined : fb.map((ms, i) => ms / handMs[i]!),
      });
      const lags = samples.filter((x) => x.observedMs !== undefined).map((x) => x.answerMs - x.observedMs!);
      if (lags.length > 0) {
        rows.push({
          backend: `${label} (observed)`,
          scenario: "answer after the guest first served HTTP",
          runs: lags.length,
          answerP50: percentile(lags, 50),
          firstByteP50: percentile(
            samples.map((x) => x.firstByteMs - x.observedMs!),
            50,
          ),
          firstByteMin: Math.min(...lags),
          firstByteMax: Math.max(...lags),
          stopP50: NaN,
        });
      }
      if (handMs.length > 0) {
        rows.push({
          backend: "QEMU by hand",
          scenario: sc.name,
          runs,
          answerP50: NaN,
          firstByteP50: percentile(handMs, 50),
          firstByteMin: Math.min(...handMs),
          firstByteMax: Math.max(...handMs),
          stopP50: NaN,
        });
      }
    }
  } finally {
    await jitsu?.close({ stopVms: true }).catch((err: unknown) => log(`closing ${backend}: ${String(err)}`));
    rmSync(stateDir, { recursive: true, force: true });
  }
  return rows;
}

/** What bench needs of test/doubles/libvirtd.ts's PrivateLibvirtd. */
interface LibvirtdLike {
  readonly dir: string;
  start(): Promise<void>;
  destroy(): Promise<void>;
  uri(driverAndPath: string): string;
  writeFile(name: string, content: string | Buffer): string;
  virsh(uri: string, ...commands: string[]): string;
}

function fmt(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const runsAt = argv.indexOf("--runs");
  const runs = runsAt >= 0 ? Number(argv[runsAt + 1]) : 5;
  if (!Number.isInteger(runs) || runs < 1) throw new Error("--runs takes a whole number of 1 or more");
  const onlyAt = argv.indexOf("--only");
  const only = onlyAt >= 0 ? argv[onlyAt + 1] : undefined;
  const observe = argv.includes("--observe");
  if (only !== undefined && only !== "cold")
    throw new Error("--only takes 'cold' (the cold boot and its peer)");

  const guestDir = execFileSync("bash", [join(REPO_ROOT, "scripts/build-test-guest.sh")], {
    encoding: "utf8",
  })
    .trim()
    .split("\n")
    .at(-1)!;
  const kernel = join(guestDir, "vmlinuz");
  const initrd = join(guestDir, "initrd.gz");
  log(
    `guest ${guestDir}; ${cpus().length} CPUs, load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}; ${runs} runs each`,
  );

  const qemuConfig = (http: number): string =>
    `dns=${NAME},ip=10.0.2.15,name=${LABEL},kernel=${kernel},initrd=${initrd},hostfwd=tcp:127.0.0.1:${http}-:80,ready=http://127.0.0.1:${http}/`;
  const cold = SCENARIOS.filter((s) => s.stop === "destroy");
  const rows = await benchBackend(
    "qemu",
    qemuConfig,
    runs,
    [],
    only === "cold" ? cold : SCENARIOS,
    "qemu",
    true,
    observe,
  );
  // The same guest with standby=true: after a save, a QEMU waits with -incoming defer.
  if (only === undefined)
    rows.push(
      ...(await benchBackend(
        "qemu",
        (http) => `${qemuConfig(http)},standby=true`,
        runs,
        [],
        SCENARIOS.filter((s) => s.stop === "save"),
        "qemu standby=true",
      )),
    );

  let peerNote: string;
  const daemonModule = join(here, "..", "test", "doubles", "libvirtd.js");
  if (only !== undefined) {
    peerNote = "libvirt: not measured (--only cold)";
  } else if (!BACKENDS.some((b) => b.name === "libvirt")) {
    peerNote = "libvirt: not measured (the libvirt backend is not in this build)";
  } else if (!existsSync(daemonModule)) {
    peerNote = `libvirt: not measured (${daemonModule} is missing: it starts the private libvirtd)`;
  } else {
    // A private libvirtd (test/doubles/libvirtd.ts), qemu:///session, the same guest and QEMU,
    // and the guest's domain XML as the libvirt tests define it (the NIC and hostfwd through
    // <qemu:commandline>), with the qemu backend's default kernel command line.
    const { PrivateLibvirtd, guestDomainXml } = (await import(pathToFileURL(daemonModule).href)) as {
      PrivateLibvirtd: new () => LibvirtdLike;
      guestDomainXml: (name: string, dir: string, hostPort: number, cmdline?: string) => string;
    };
    const daemon = new PrivateLibvirtd();
    try {
      await daemon.start();
      for (const f of ["vmlinuz", "initrd.gz"]) daemon.writeFile(f, readFileSync(join(guestDir, f)));
      const uri = daemon.uri("qemu:///session");
      rows.push(
        ...(await benchBackend(
          "libvirt",
          (http) => `dns=${NAME},ip=10.0.2.15,name=${LABEL},ready=http://127.0.0.1:${http}/`,
          runs,
          (http) => {
            daemon.virsh(
              uri,
              `define ${daemon.writeFile("web.xml", guestDomainXml(LABEL, daemon.dir, http, DEFAULT_CMDLINE))}`,
            );
            return ["-c", uri];
          },
        )),
      );
      peerNote = `libvirt: ${uri} (private libvirtd, qemu driver, same guest, kernel and QEMU; pause = virDomainSuspend, save = managed save)`;
    } finally {
      await daemon.destroy().catch(() => undefined);
    }
  }

  const header = [
    "backend",
    "scenario",
    "runs",
    "query->answer p50",
    "query->first HTTP byte p50 (by hand: spawn->)",
    "(min-max)",
    "stop p50",
  ];
  const lines = rows.map((r) => [
    r.backend,
    r.scenario,
    String(r.runs),
    Number.isNaN(r.answerP50) ? "" : fmt(r.answerP50),
    fmt(r.firstByteP50),
    `${fmt(r.firstByteMin)}-${fmt(r.firstByteMax)}`,
    Number.isNaN(r.stopP50) ? "" : fmt(r.stopP50),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const out = [header, ...lines].map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n");
  process.stdout.write(`${out}\n${peerNote}\n`);

  const paused = rows.find((r) => r.backend === "qemu" && r.scenario === "from paused");
  const saved = rows.find((r) => r.backend === "qemu" && r.scenario === "from saved snapshot");
  const standby = rows.find((r) => r.backend === "qemu standby=true");
  const coldJitsu = rows.find((r) => r.backend === "qemu" && r.scenario === "from off (cold boot)");
  const coldHand = rows.find((r) => r.backend === "QEMU by hand");
  const coldRatio =
    coldJitsu === undefined || coldHand === undefined ? NaN : coldJitsu.firstByteP50 / coldHand.firstByteP50;
  const perRun = coldJitsu?.ratios ?? [];
  const targets = [
    `cold boot, query -> first HTTP byte <= 1.05 x the same QEMU command line by hand (spawn -> first byte): ${
      Number.isNaN(coldRatio)
        ? "?"
        : `${coldRatio.toFixed(3)} x (medians ${fmt(coldJitsu!.firstByteP50)} / ${fmt(coldHand!.firstByteP50)}; per interleaved pair ${perRun.map((r) => r.toFixed(3)).join(" ")}, median ${percentile(perRun, 50).toFixed(3)}) ${coldRatio <= 1.05 ? "met" : "MISSED"}`
    }`,
    `from paused to first HTTP byte <= 50 ms: ${paused === undefined ? "?" : `${fmt(paused.firstByteP50)} ${paused.firstByteP50 <= 50 ? "met" : "MISSED"}`}`,
    `from snapshot to first HTTP byte <= 1 s: ${saved === undefined ? "?" : `${fmt(saved.firstByteP50)} ${saved.firstByteP50 <= 1000 ? "met" : "MISSED"}`}`,
    `from snapshot, standby=true, to first HTTP byte <= 1 s: ${standby === undefined ? "?" : `${fmt(standby.firstByteP50)} ${standby.firstByteP50 <= 1000 ? "met" : "MISSED"}`}`,
  ];
  process.stdout.write(`${targets.join("\n")}\n`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    join(RESULTS_DIR, only === "cold" ? "qemu-cold.json" : "qemu-lifecycle.json"),
    JSON.stringify(
      { date: new Date().toISOString(), cpus: cpus().length, load: loadavg(), rows, peerNote, targets },
      null,
      2,
    ),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
