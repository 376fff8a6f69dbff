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
import { execFile, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { BenchContext } from "./context.js";
import { startProcess, type BenchProcess } from "./procs.js";
import { vs, type Row, type Target } from "./report.js";
import { cpuSeconds, startJitsu, stopJitsu, type JitsuServer } from "./servers.js";
import { freePort, pinTo, which } from "./tools.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const DEMO_SERVICE = join(here, "..", "scripts", "demo-service.js");
const PROXYD = "/lib/systemd/systemd-socket-proxyd";
const VM_HOST = "127.0.0.2";
const execFileAsync = promisify(execFile);

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

/** The bench's C peers (bench/peers/*.c in the source tree; this file runs from dist/bench/). */
const PEERS_SOURCE = join(here, "..", "..", "bench", "peers");

/** Compiles bench/peers/NAME.c into the bench's temp dir; its path. */
function compilePeer(ctx: BenchContext, name: string): string {
  const cc = which("cc") ?? which("gcc");
  if (cc === null)
    throw new Error("bench: hold: no C compiler (cc, gcc) for its client and service (apt-get install gcc)");
  const binary = join(ctx.dir, name);
  execFileSync(cc, ["-O2", "-o", binary, join(PEERS_SOURCE, `${name}.c`)], { stdio: "inherit" });
  return binary;
}

interface Percentiles {
  p50: number;
  p99: number;
}

/** Runs the load client (bench/peers/tcp-load.c) on the load CPUs: its one line of JSON. */
async function load<T>(client: string, cpus: string | undefined, args: (string | number)[]): Promise<T> {
  const argv = [client, ...args.map(String)];
  const { stdout } = await execFileAsync(
    cpus === undefined ? argv[0]! : "taskset",
    cpus === undefined ? argv.slice(1) : ["-c", cpus, ...argv],
    {
      timeout: 120_000,
    },
  );
  return JSON.parse(stdout) as T;
}

/** One bulk transfer: `size` bytes from the service through `port`, read to its FIN; MB/s. */
async function bulk(client: string, cpus: string | undefined, port: number, size: number): Promise<number> {
  return (await load<{ mbps: number }>(client, cpus, ["bulk", "127.0.0.1", port, size])).mbps;
}

/** Short connections per second with `concurrency` in flight for `seconds`; and CPU µs per connection in `pid`. */
async function connectionsPerSecond(
  client: string,
  cpus: string | undefined,
  port: number,
  pid: number,
  seconds: number,
  concurrency: number,
  serviceCloses = false,
): Promise<{ cps: number; cpuUs: number }> {
  const cpu0 = cpuSeconds(pid);
  const r = await load<{ connections: number; cps: number }>(client, cpus, [
    "cps",
    "127.0.0.1",
    port,
    seconds,
    concurrency,
    serviceCloses ? 1 : 0,
  ]);
  return { cps: r.cps, cpuUs: ((cpuSeconds(pid) - cpu0) * 1e6) / r.connections };
}

/**
 * `n` short connections one after another (connect, 64 B there and back,
 * close): percentiles (µs) of connect -> reply (the request) and connect ->
 * closed (the whole connection, both FINs).
 */
function shortLatency(
  client: string,
  cpus: string | undefined,
  port: number,
  n: number,
  host = "127.0.0.1",
  serviceCloses = false,
): Promise<{ reply: Percentiles; closed: Percentiles }> {
  return load(client, cpus, ["latency", host, port, n, serviceCloses ? 1 : 0]);
}

/** p50/p99 (µs) of `n` 64-byte round trips on one open connection. */
async function warmLatency(
  client: string,
  cpus: string | undefined,
  port: number,
  n: number,
  host = "127.0.0.1",
): Promise<Percentiles> {
  return (await load<{ roundTrip: Percentiles }>(client, cpus, ["warm", host, port, n])).roundTrip;
}

/**
 * A short connection from this process: 64 bytes there and back, then the
 * client's FIN (warms a side up: its first connection summons the VM). Not
 * sent with the request: systemd-socket-proxyd would end both sides at once.
 */
function shortConnection(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, noDelay: true }, () => s.write(Buffer.alloc(64, 0x72)));
    let got = 0;
    s.on("data", (chunk: Buffer) => {
      got += chunk.length;
      if (got >= 64) s.end();
    });
    s.on("error", reject);
    s.on("close", () => (got >= 64 ? resolve() : reject(new Error("short connection: no reply"))));
  });
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
  const client = compilePeer(ctx, "tcp-load");
  const cpus = plan?.load;
  const backend = await startProcess(
    "tcp-backend",
    compilePeer(ctx, "tcp-backend"),
    [VM_HOST, String(backendPort), String(bulkBytes)],
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
    type Latency = { reply: Percentiles; closed: Percentiles };
    interface Rounds {
      mbps: number[];
      cps: number[];
      cpuUs: number[];
      lat: Latency[];
      warm: Percentiles[];
      /** The service closes first. */
      cpsClose: number[];
      cpuUsClose: number[];
      latClose: Latency[];
    }
    const runs = new Map<string, Rounds>();
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? sides : [...sides].reverse();
      for (const side of order) {
        log(`hold: ${side.name}, round ${round + 1}`);
        const mbps = await bulk(client, cpus, side.port, bulkBytes);
        const { cps, cpuUs } = await connectionsPerSecond(
          client,
          cpus,
          side.port,
          side.pid,
          cpsSeconds,
          concurrency,
        );
        const lat = await shortLatency(client, cpus, side.port, quick ? 300 : 1000);
        const warm = await warmLatency(client, cpus, side.port, quick ? 1000 : 3000);
        const close = await connectionsPerSecond(
          client,
          cpus,
          side.port,
          side.pid,
          cpsSeconds,
          concurrency,
          true,
        );
        const latClose = await shortLatency(client, cpus, side.port, quick ? 300 : 1000, "127.0.0.1", true);
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
          lat: medianBy(r.lat, (l) => l.reply.p50),
          latClosed: medianBy(r.lat, (l) => l.closed.p50),
          warm: medianBy(r.warm, (l) => l.p50),
          cpsClose: median(r.cpsClose),
          cpuUsClose: median(r.cpuUsClose),
          latClose: medianBy(r.latClose, (l) => l.closed.p50),
          rounds: r,
        },
      ]),
    );
    // The backend alone (no proxy), for the latency a proxy adds.
    const directLat = await shortLatency(client, cpus, direct.port, quick ? 300 : 1000, VM_HOST);
    const directWarm = await warmLatency(client, cpus, direct.port, quick ? 1000 : 3000, VM_HOST);
    const directLatClose = await shortLatency(client, cpus, direct.port, quick ? 300 : 1000, VM_HOST, true);
    const cold = await coldStarts(ctx, quick ? 2 : 4);

    const j = best.get("jitsu")!;
    const js = best.get("jitsu (JS relay)")!;
    const p = best.get("systemd-socket-proxyd")!;
    /** Per request: connect -> reply, above the service's own. */
    const added = (s: { lat: Latency }): number => s.lat.reply.p50 - directLat.reply.p50;
    /** Per connection: connect -> both FINs, above the service's own. */
    const addedClosed = (s: { latClosed: Latency }): number => s.latClosed.closed.p50 - directLat.closed.p50;
    const addedClose = (s: { latClose: Latency }): number =>
      s.latClose.closed.p50 - directLatClose.closed.p50;
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
        p50Ms: s.lat.reply.p50 / 1000,
        p99Ms: s.lat.reply.p99 / 1000,
        vs: s !== p ? vs(s.cps, p.cps, "proxyd") : "",
        note:
          `conn/s with ${concurrency} in flight (the client closes first); p50/p99 of one request at a time ` +
          `(connect, 64 B there, reply), ${fmt(added(s))} us above direct; the whole connection (both FINs) p50 ` +
          `${fmt(s.latClosed.closed.p50)} us, ${fmt(addedClosed(s))} us above direct; bulk ${fmt(s.mbps)} MB/s` +
          `${s !== p ? ` (${vs(s.mbps, p.mbps, "proxyd")})` : ""}; warm round trip p50 ${fmt(s.warm.p50)} us`,
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
        p50Ms: s.latClose.closed.p50 / 1000,
        p99Ms: s.latClose.closed.p99 / 1000,
        vs: s !== p ? vs(s.cpsClose, p.cpsClose, "proxyd") : "",
        note: `as above, the service ending each connection after its reply; p50/p99 of the whole connection: ${fmt(addedClose(s))} us above direct${s !== p ? ` (${(addedClose(s) / addedClose(p)).toFixed(2)} x proxyd's)` : ""}`,
      });
    }
    rows.push({
      scenario: "hold: direct (no proxy), short connections",
      p50Ms: directLat.reply.p50 / 1000,
      p99Ms: directLat.reply.p99 / 1000,
      note: `the request (connect -> reply); the whole connection p50 ${fmt(directLat.closed.p50)} us; warm round trip p50 ${fmt(directWarm.p50)} us; the service closing first: p50 ${fmt(directLatClose.closed.p50)} us`,
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
      target("hold: added latency per request vs systemd-socket-proxyd", added(j) / added(p), "<=", 1.2),
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
