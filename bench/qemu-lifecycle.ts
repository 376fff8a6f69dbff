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
 * Peer: the same operations through the libvirt backend in the same run (a
 * private libvirtd from test/doubles/libvirtd.ts, qemu:///session, the
 * same guest, kernel command line and QEMU binary), when that backend is in
 * the build; otherwise the report says it was not measured.
 */
import { execFileSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import packet from "dns-packet";
import { BACKENDS, type StopMode } from "../src/backends/index.js";
import { DEFAULT_CMDLINE } from "../src/backends/qemu/keys.js";
import { parseArgs } from "../src/cli/command.js";
import { startJitsu, type Jitsu } from "../src/cli/run.js";
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
}

async function measure(dnsPort: number, httpPort: number, timeoutMs: number): Promise<Sample> {
  const t0 = performance.now();
  const answerMs = await queryA(dnsPort, timeoutMs);
  await firstByte(httpPort, timeoutMs);
  return { answerMs, firstByteMs: performance.now() - t0 };
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
}

async function benchBackend(
  backend: string,
  configFor: (httpPort: number) => string,
  runs: number,
  extraArgs: string[] | ((httpPort: number) => string[]),
  scenarios: readonly Scenario[] = SCENARIOS,
  label: string = backend,
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
    for (const sc of scenarios) {
      const samples: Sample[] = [];
      const stops: number[] = [];
      for (let i = 0; i < runs; i++) {
        const s0 = performance.now();
        await jitsu.summoner.stopVm(LABEL, sc.stop);
        stops.push(performance.now() - s0);
        // Let the host settle a moment after the stop, as a real idle VM would.
        await new Promise((r) => setTimeout(r, 200));
        const sample = await measure(dnsPort, httpPort, 300_000);
        samples.push(sample);
        log(
          `${label} ${sc.name} #${i + 1}: answer ${sample.answerMs.toFixed(1)} ms, first HTTP byte ${sample.firstByteMs.toFixed(1)} ms (stop took ${stops.at(-1)!.toFixed(0)} ms)`,
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
      });
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
  const rows = await benchBackend("qemu", qemuConfig, runs, []);
  // The same guest with standby=true: after a save, a QEMU waits with -incoming defer.
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
  if (!BACKENDS.some((b) => b.name === "libvirt")) {
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
    "query->first HTTP byte p50",
    "(min-max)",
    "stop p50",
  ];
  const lines = rows.map((r) => [
    r.backend,
    r.scenario,
    String(r.runs),
    fmt(r.answerP50),
    fmt(r.firstByteP50),
    `${fmt(r.firstByteMin)}-${fmt(r.firstByteMax)}`,
    fmt(r.stopP50),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const out = [header, ...lines].map((l) => l.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n");
  process.stdout.write(`${out}\n${peerNote}\n`);

  const paused = rows.find((r) => r.backend === "qemu" && r.scenario === "from paused");
  const saved = rows.find((r) => r.backend === "qemu" && r.scenario === "from saved snapshot");
  const standby = rows.find((r) => r.backend === "qemu standby=true");
  const targets = [
    `from paused to first HTTP byte <= 50 ms: ${paused === undefined ? "?" : `${fmt(paused.firstByteP50)} ${paused.firstByteP50 <= 50 ? "met" : "MISSED"}`}`,
    `from snapshot to first HTTP byte <= 1 s: ${saved === undefined ? "?" : `${fmt(saved.firstByteP50)} ${saved.firstByteP50 <= 1000 ? "met" : "MISSED"}`}`,
    `from snapshot, standby=true, to first HTTP byte <= 1 s: ${standby === undefined ? "?" : `${fmt(standby.firstByteP50)} ${standby.firstByteP50 <= 1000 ? "met" : "MISSED"}`}`,
  ];
  process.stdout.write(`${targets.join("\n")}\n`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    join(RESULTS_DIR, "qemu-lifecycle.json"),
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
