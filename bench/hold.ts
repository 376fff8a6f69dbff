/**
 * Held connections (src/activator), issue 18: jitsu's hold port relaying a
 * warm VM's connections, side by side with systemd-socket-proxyd (started by
 * systemd-socket-activate on a listening socket) in front of the same backend
 * (peers/tcp-backend.ts on 127.0.0.2), interleaved, the median of 3 rounds
 * per side; and the hold overhead on a cold start. Each proxy runs on the server
 * CPU; the backend and this client on the load CPUs.
 *
 * Two jitsu sides: the default (the splice relay, native, where it is built)
 * and "jitsu (JS relay)" (JITSU_HOLD_RELAY=js: the fallback without the
 * addon). Short connections are measured twice: the client closes first
 * (its FIN goes through the proxy to the service and the service's FIN back:
 * jitsu passes a half-close on, while systemd-socket-proxyd closes both sides
 * at the first EOF and so skips that round trip), and the service closes
 * first (as an HTTP/1.0 server does: the same path through both proxies).
 */
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchContext } from "./context.js";
import { startProcess, type BenchProcess } from "./procs.js";
import { vs, type Row, type Target } from "./report.js";
import { cpuSeconds, startJitsu, stopJitsu, type JitsuServer } from "./servers.js";
import { freePort, pinTo, which } from "./tools.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const BACKEND = join(here, "peers", "tcp-backend.js");
const DEMO_SERVICE = join(here, "..", "scripts", "demo-service.js");
const PROXYD = "/lib/systemd/systemd-socket-proxyd";
const VM_HOST = "127.0.0.2";

export interface HoldResult {
  rows: Row[];
  targets: Target[];
  json: Record<string, unknown>;
}

interface Side {
  readonly name: string;
  readonly port: number;
  readonly pid: number;
}

/** One bulk transfer: `size` bytes from the backend through `port`; MB/s. */
function bulk(port: number, size: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let got = 0;
    // No half-close from the client: systemd-socket-proxyd ends both directions at the first EOF.
    const s = net.connect({ host: "127.0.0.1", port }, () => s.write("B"));
    s.on("data", (chunk: Buffer) => (got += chunk.length));
    s.on("error", reject);
    s.on("end", () => {
      const seconds = (performance.now() - t0) / 1000;
      if (got !== size) reject(new Error(`bulk: got ${got} of ${size} bytes`));
      else resolve(size / 1e6 / seconds);
    });
  });
}

const REQUEST = Buffer.alloc(64, 0x72);
/** The service echoes it and closes first (tcp-backend's 'C'). */
const REQUEST_CLOSE = Buffer.alloc(64, 0x43);

/**
 * One short connection: connect, 64 bytes there and back, close; resolves when
 * closed. `serviceCloses`: the service ends it after its reply, the client's
 * FIN answers (else the client ends it once it has the reply).
 */
function shortConnection(port: number, host = "127.0.0.1", serviceCloses = false): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = serviceCloses ? REQUEST_CLOSE : REQUEST;
    const s = net.connect({ host, port, noDelay: true }, () => s.write(request));
    let got = 0;
    s.on("data", (chunk: Buffer) => {
      got += chunk.length;
      if (got >= REQUEST.length && !serviceCloses) s.end();
    });
    s.on("error", reject);
    s.on("close", () =>
      got >= REQUEST.length ? resolve() : reject(new Error("short connection: no reply")),
    );
  });
}

/** Short connections per second with `concurrency` in flight for `seconds`; and CPU µs per connection in `pid`. */
async function connectionsPerSecond(
  port: number,
  pid: number,
  seconds: number,
  concurrency: number,
  serviceCloses = false,
): Promise<{ cps: number; cpuUs: number }> {
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const cpu0 = cpuSeconds(pid);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await shortConnection(port, "127.0.0.1", serviceCloses);
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return { cps: done / elapsed, cpuUs: ((cpuSeconds(pid) - cpu0) * 1e6) / done };
}

/** p50/p99 (µs) of `n` short connections made one after another (connect, request, reply, close). */
async function shortLatency(
  port: number,
  n: number,
  host = "127.0.0.1",
  serviceCloses = false,
): Promise<{ p50: number; p99: number }> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await shortConnection(port, host, serviceCloses);
    times.push((performance.now() - t0) * 1000);
  }
  return percentiles(times);
}

/** p50/p99 (µs) of `n` 64-byte round trips on one open connection. */
function warmLatency(port: number, n: number, host = "127.0.0.1"): Promise<{ p50: number; p99: number }> {
  return new Promise((resolve, reject) => {
    const times: number[] = [];
    const s = net.connect({ host, port, noDelay: true });
    let t0 = 0;
    let got = 0;
    const send = (): void => {
      got = 0;
      t0 = performance.now();
      s.write(REQUEST);
    };
    s.once("connect", send);
    s.on("data", (chunk: Buffer) => {
      got += chunk.length;
      if (got < REQUEST.length) return;
      times.push((performance.now() - t0) * 1000);
      if (times.length < n) send();
      else {
        s.destroy();
        resolve(percentiles(times));
      }
    });
    s.on("error", reject);
  });
}

function percentiles(values: number[]): { p50: number; p99: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { p50: at(0.5), p99: at(0.99) };
}

/** systemd-socket-proxyd in front of the backend, on a socket systemd-socket-activate listens on. */
async function startProxyd(
  backendPort: number,
  cpus: string | undefined,
): Promise<{ side: Side; proc: BenchProcess }> {
  const activate = which("systemd-socket-activate");
  if (activate === null) throw new Error("bench: systemd-socket-activate is missing (Debian: systemd)");
  const port = await freePort();
  const args = ["-l", `127.0.0.1:${port}`, PROXYD, `${VM_HOST}:${backendPort}`];
  const proc =
    cpus === undefined
      ? await startProcess("systemd-socket-proxyd", activate, args, {
          readyLine: (l) => l.startsWith("Listening"),
        })
      : await startProcess("systemd-socket-proxyd", "taskset", ["-c", cpus, activate, ...args], {
          readyLine: (l) => l.startsWith("Listening"),
        });
  // systemd-socket-activate execs the proxy on the first connection: make it now (the pid stays).
  await shortConnection(port);
  return { side: { name: "systemd-socket-proxyd", port, pid: proc.pid }, proc };
}

/** The hold overhead on a cold start: first byte through the hold port minus the VM's own ready stamp. */
async function coldStarts(
  ctx: BenchContext,
  runs: number,
): Promise<{ overheadMs: number[]; firstByteMs: number[] }> {
  const vms: { name: string; hold: number; port: number; stamp: string }[] = [];
  for (let i = 0; i < runs; i++) {
    vms.push({
      name: `cold${i}`,
      hold: await freePort(),
      port: await freePort(),
      stamp: join(ctx.dir, `cold${i}.stamp`),
    });
  }
  const server = await startJitsu({
    label: "jitsu (cold hold)",
    upstreamPort: null,
    logLevel: "info",
    probe: { name: "example.org", type: "SOA" },
    configs: vms.map(
      (v) =>
        `dns=${v.name}.example.org,ip=${VM_HOST},name=${v.name},hold=${v.hold}:${v.port},ready=http://${VM_HOST}:${v.port}/,` +
        `exec='${process.execPath}' '${DEMO_SERVICE}' ${VM_HOST} ${v.port} ${v.name} 1 '${v.stamp}'`,
    ),
  });
  const overheadMs: number[] = [];
  const firstByteMs: number[] = [];
  try {
    for (const v of vms) {
      const t0 = Date.now();
      const firstByte = await new Promise<number>((resolve, reject) => {
        const s = net.connect({ host: "127.0.0.1", port: v.hold }, () => s.write("GET / HTTP/1.0\r\n\r\n"));
        s.once("data", () => {
          resolve(Date.now());
          s.destroy();
        });
        s.on("error", reject);
      });
      const ready = Number(/ready (\d+)/.exec(readFileSync(v.stamp, "utf8"))![1]);
      overheadMs.push(firstByte - ready);
      firstByteMs.push(firstByte - t0);
    }
  } finally {
    await stopJitsu(server);
  }
  return { overheadMs, firstByteMs };
}

export async function holdSection(ctx: BenchContext): Promise<HoldResult> {
  const { params, plan, log } = ctx;
  const quick = params.quick;
  const bulkBytes = (quick ? 128 : 512) * 1024 * 1024;
  const cpsSeconds = quick ? 2 : 5;
  const rounds = 3;
  const concurrency = 8;
  const backendPort = await freePort();
  const backend = await startProcess(
    "tcp-backend",
    process.execPath,
    [BACKEND, VM_HOST, String(backendPort), String(bulkBytes)],
    {
      readyLine: (l) => l === "listening",
    },
  );
  if (plan !== null) pinTo(backend.pid, plan.load);
  const holdPort = await freePort();
  const jsHoldPort = await freePort();
  let jitsu: JitsuServer | null = null;
  let jitsuJs: JitsuServer | null = null;
  let proxyd: { side: Side; proc: BenchProcess } | null = null;
  try {
    jitsu = await startJitsu({
      label: "jitsu (hold)",
      upstreamPort: null,
      logLevel: "warn",
      probe: { name: "example.org", type: "SOA" },
      configs: [
        `dns=hold.example.org,ip=${VM_HOST},name=hold,hold=${holdPort}:${backendPort},exec=sleep 300`,
      ],
    });
    if (plan !== null) pinTo(jitsu.proc.pid, plan.server);
    jitsuJs = await startJitsu({
      label: "jitsu (hold, JS relay)",
      upstreamPort: null,
      logLevel: "warn",
      probe: { name: "example.org", type: "SOA" },
      configs: [
        `dns=hold.example.org,ip=${VM_HOST},name=hold,hold=${jsHoldPort}:${backendPort},exec=sleep 300`,
      ],
      env: { JITSU_HOLD_RELAY: "js" },
    });
    if (plan !== null) pinTo(jitsuJs.proc.pid, plan.server);
    proxyd = await startProxyd(backendPort, plan?.server);
    // Warm: the first connection summons the VM (a sleep: ready at once); the backend is ours.
    await shortConnection(holdPort);
    await shortConnection(jsHoldPort);
    const sides: Side[] = [
      { name: "jitsu", port: holdPort, pid: jitsu.proc.pid },
      { name: "jitsu (JS relay)", port: jsHoldPort, pid: jitsuJs.proc.pid },
      proxyd.side,
    ];
    log(
      `hold: jitsu on ${holdPort} (JS relay: ${jsHoldPort}), systemd-socket-proxyd on ${proxyd.side.port}, backend on ${VM_HOST}:${backendPort}`,
    );
    const direct: Side = { name: "direct", port: backendPort, pid: backend.pid };

    // Every round's figures per side; the medians are reported (at least 3 rounds, interleaved).
    const runs = new Map<
      string,
      {
        mbps: number[];
        cps: number[];
        cpuUs: number[];
        lat: { p50: number; p99: number }[];
        warm: { p50: number; p99: number }[];
        /** The service closes first. */
        cpsClose: number[];
        cpuUsClose: number[];
        latClose: { p50: number; p99: number }[];
      }
    >();
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? sides : [...sides].reverse();
      for (const side of order) {
        log(`hold: ${side.name}, round ${round + 1}`);
        const mbps = await bulk(side.port, bulkBytes);
        const { cps, cpuUs } = await connectionsPerSecond(side.port, side.pid, cpsSeconds, concurrency);
        const lat = await shortLatency(side.port, quick ? 300 : 1000);
        const warm = await warmLatency(side.port, quick ? 1000 : 3000);
        const close = await connectionsPerSecond(side.port, side.pid, cpsSeconds, concurrency, true);
        const latClose = await shortLatency(side.port, quick ? 300 : 1000, "127.0.0.1", true);
        let r = runs.get(side.name);
        if (r === undefined)
          runs.set(
            side.name,
            (r = {
              mbps: [],
              cps: [],
              cpuUs: [],
              lat: [],
              warm: [],
              cpsClose: [],
              cpuUsClose: [],
              latClose: [],
            }),
          );
        r.mbps.push(mbps);
        r.cps.push(cps);
        r.cpuUs.push(cpuUs);
        r.lat.push(lat);
        r.warm.push(warm);
        r.cpsClose.push(close.cps);
        r.cpuUsClose.push(close.cpuUs);
        r.latClose.push(latClose);
      }
    }
    const median = (xs: readonly number[]): number =>
      [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const medianBy = <T>(xs: readonly T[], key: (x: T) => number): T =>
      [...xs].sort((a, b) => key(a) - key(b))[Math.floor(xs.length / 2)]!;
    const best = new Map(
      [...runs].map(([name, r]) => [
        name,
        {
          mbps: median(r.mbps),
          cps: median(r.cps),
          cpuUs: median(r.cpuUs),
          lat: medianBy(r.lat, (l) => l.p50),
          warm: medianBy(r.warm, (l) => l.p50),
          cpsClose: median(r.cpsClose),
          cpuUsClose: median(r.cpuUsClose),
          latClose: medianBy(r.latClose, (l) => l.p50),
          rounds: r,
        },
      ]),
    );
    // The backend alone (no proxy), for the latency a proxy adds.
    const directLat = await shortLatency(direct.port, quick ? 300 : 1000, VM_HOST);
    const directWarm = await warmLatency(direct.port, quick ? 1000 : 3000, VM_HOST);
    const directLatClose = await shortLatency(direct.port, quick ? 300 : 1000, VM_HOST, true);
    const cold = await coldStarts(ctx, quick ? 2 : 4);

    const j = best.get("jitsu")!;
    const js = best.get("jitsu (JS relay)")!;
    const p = best.get("systemd-socket-proxyd")!;
    const added = (s: { lat: { p50: number } }): number => s.lat.p50 - directLat.p50;
    const addedClose = (s: { latClose: { p50: number } }): number => s.latClose.p50 - directLatClose.p50;
    const fmt = (n: number, d = 0): string => n.toFixed(d);
    const rows: Row[] = [];
    for (const [name, s] of [
      ["jitsu hold port", j],
      ["jitsu hold port (JS relay)", js],
      ["systemd-socket-proxyd", p],
    ] as const) {
      rows.push({
        scenario: `hold: ${name}, short connections`,
        qps: s.cps,
        cpuUs: s.cpuUs,
        p50Ms: s.lat.p50 / 1000,
        p99Ms: s.lat.p99 / 1000,
        vs: s !== p ? vs(s.cps, p.cps, "proxyd") : "",
        note: `conn/s with ${concurrency} in flight; p50/p99 of one connection at a time (connect, 64 B there and back, close), ${fmt(added(s))} us above direct; bulk ${fmt(s.mbps)} MB/s${s !== p ? ` (${vs(s.mbps, p.mbps, "proxyd")})` : ""}; warm round trip p50 ${fmt(s.warm.p50)} us`,
      });
    }
    for (const [name, s] of [
      ["jitsu hold port", j],
      ["jitsu hold port (JS relay)", js],
      ["systemd-socket-proxyd", p],
    ] as const) {
      rows.push({
        scenario: `hold: ${name}, the service closes first`,
        qps: s.cpsClose,
        cpuUs: s.cpuUsClose,
        p50Ms: s.latClose.p50 / 1000,
        p99Ms: s.latClose.p99 / 1000,
        vs: s !== p ? vs(s.cpsClose, p.cpsClose, "proxyd") : "",
        note: `as above, the service ending each connection after its reply: ${fmt(addedClose(s))} us above direct${s !== p ? ` (${(addedClose(s) / addedClose(p)).toFixed(2)} x proxyd's)` : ""}`,
      });
    }
    rows.push({
      scenario: "hold: direct (no proxy), short connections",
      p50Ms: directLat.p50 / 1000,
      p99Ms: directLat.p99 / 1000,
      note: `warm round trip p50 ${fmt(directWarm.p50)} us; the service closing first: p50 ${fmt(directLatClose.p50)} us`,
    });
    rows.push({
      scenario: "hold: cold start overhead",
      p50Ms: median(cold.overheadMs),
      p99Ms: Math.max(...cold.overheadMs),
      note: `first byte through the hold port minus the VM's own ready stamp (1 s boot, ready=http probe); ${cold.overheadMs.length} cold starts: ${cold.overheadMs.join(", ")} ms (p99 column: the max)`,
    });
    const targets: Target[] = [
      target("hold: bulk throughput vs systemd-socket-proxyd", j.mbps / p.mbps, ">=", 0.8),
      target("hold: connections/s vs systemd-socket-proxyd", j.cps / p.cps, ">=", 0.8),
      target("hold: added latency per connection vs systemd-socket-proxyd", added(j) / added(p), "<=", 1.2),
    ];
    return {
      rows,
      targets,
      json: {
        jitsu: j,
        jitsuJs: js,
        proxyd: p,
        direct: { lat: directLat, warm: directWarm, latClose: directLatClose },
        cold,
        bulkBytes,
        concurrency,
        cpsSeconds,
      },
    };
  } finally {
    if (jitsu !== null) await stopJitsu(jitsu);
    if (jitsuJs !== null) await stopJitsu(jitsuJs);
    await proxyd?.proc.stop();
    await backend.stop();
  }
}

function target(what: string, value: number, op: ">=" | "<=", goal: number): Target {
  const met = Number.isFinite(value) ? (op === ">=" ? value >= goal : value <= goal) : null;
  return { what: `${what} (${op} ${goal} x)`, measured: `${value.toFixed(2)} x`, met };
}
