/**
 * The servers the bench runs, each on its own loopback port, each started
 * and stopped by the bench: jitsu (the built CLI), the minimal Node
 * responder, dnsmasq and unbound with their own configs in a temp dir.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { queryOnce, waitForDns } from "./dns-client.js";
import { startProcess, type BenchProcess } from "./procs.js";
import { freePort } from "./tools.js";

const here = dirname(fileURLToPath(import.meta.url));
/** dist/src/cli/main.js, seen from dist/bench/. */
export const JITSU_CLI = join(here, "..", "src", "cli", "main.js");
const NODE_RESPONDER = join(here, "peers", "node-responder.js");

/** The command of every VM the bench gives jitsu (`exec=`, process backend): ready once started. */
export const VM_EXEC = "sleep 300";

export interface Server {
  readonly label: string;
  readonly port: number;
  readonly proc: BenchProcess;
}

export async function startNodeResponder(name: string, ip: string): Promise<Server> {
  const port = await freePort();
  const proc = await startProcess(
    "node responder",
    process.execPath,
    [NODE_RESPONDER, String(port), name, ip],
    {
      readyLine: (l) => l.startsWith("ready "),
    },
  );
  return { label: "node responder", port, proc };
}

export interface DnsmasqOptions {
  /** host-record entries: [name, ip]. */
  records?: readonly (readonly [string, string])[];
  /** Forward everything else here, with the cache off. */
  upstreamPort?: number;
  /** A name the server answers, to know it is up. */
  probeName: string;
}

export async function startDnsmasq(dnsmasq: string, label: string, opts: DnsmasqOptions): Promise<Server> {
  const port = await freePort();
  const args = [
    "-k",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--pid-file=",
    "--user=",
    "--group=",
    `--port=${port}`,
    "--listen-address=127.0.0.1",
    "--bind-interfaces",
    "--log-facility=-",
  ];
  for (const [name, ip] of opts.records ?? []) args.push(`--host-record=${name},${ip}`);
  if (opts.upstreamPort !== undefined) args.push(`--server=127.0.0.1#${opts.upstreamPort}`, "--cache-size=0");
  const proc = await startProcess(label, dnsmasq, args);
  await waitForDns(port, opts.probeName, "A", 15_000);
  return { label, port, proc };
}

export async function startUnbound(
  unbound: string,
  dir: string,
  label: string,
  records: readonly (readonly [string, string])[],
): Promise<Server> {
  const port = await freePort();
  const conf = join(dir, `unbound-${port}.conf`);
  const zones = [...new Set(records.map(([name]) => name.split(".").slice(1).join(".")))];
  writeFileSync(
    conf,
    [
      "server:",
      "  interface: 127.0.0.1",
      `  port: ${port}`,
      "  do-ip6: no",
      "  do-daemonize: no",
      "  use-syslog: no",
      '  logfile: ""',
      '  username: ""',
      '  chroot: ""',
      `  directory: "${dir}"`,
      `  pidfile: "${join(dir, `unbound-${port}.pid`)}"`,
      // One thread: jitsu is one process with one thread on the query path.
      "  num-threads: 1",
      "  access-control: 127.0.0.0/8 allow",
      '  module-config: "iterator"',
      "  verbosity: 0",
      ...zones.map((z) => `  local-zone: "${z}." static`),
      ...records.map(([name, ip]) => `  local-data: "${name}. 60 IN A ${ip}"`),
      "remote-control:",
      "  control-enable: no",
      "",
    ].join("\n"),
  );
  const proc = await startProcess(label, unbound, ["-d", "-c", conf]);
  await waitForDns(port, records[0]![0], "A", 15_000);
  return { label, port, proc };
}

export interface JitsuOptions {
  label: string;
  /** CONFIG strings, one per VM. */
  configs: readonly string[];
  /** null: forwarding off (-f 0.0.0.0). */
  upstreamPort: number | null;
  logLevel: "info" | "warn";
  /** A name (with its type) the server answers without summoning, to know it is up. */
  probe: { name: string; type: "A" | "SOA" };
  extraArgs?: readonly string[];
  readyTimeoutMs?: number;
  /** Run on these CPUs (`taskset -c`, e.g. "0-1"), whatever the bench's own affinity. */
  cpus?: string;
  /** Added to the bench's environment. */
  env?: Readonly<Record<string, string>>;
}

export interface JitsuServer extends Server {
  /** From spawn to the first answer to `probe`, ms. */
  readonly startupMs: number;
}

/** Runs the built CLI (`-x process`), always with `--stop-on-exit` so its VMs end with it. */
export async function startJitsu(opts: JitsuOptions): Promise<JitsuServer> {
  const port = await freePort();
  const fwd =
    opts.upstreamPort === null ? ["-f", "0.0.0.0"] : ["-f", "127.0.0.1", "-p", String(opts.upstreamPort)];
  const args = [
    JITSU_CLI,
    "-x",
    "process",
    "-b",
    "127.0.0.1",
    "-l",
    String(port),
    ...fwd,
    // Nothing is reaped while the bench runs; no response delay (readiness is the process backend's).
    "-t",
    "3600",
    "-d",
    "0",
    // The summon row starts 100 VMs one after another from 127.0.0.1: more than the default
    // --summon-rate lets one client prefix start (it measures a start, not admission control).
    "--summon-rate",
    "0",
    "--stop-on-exit",
    "--log-format",
    "json",
    "--log-level",
    opts.logLevel,
    ...(opts.extraArgs ?? []),
    ...opts.configs,
  ];
  const started = performance.now();
  // taskset execs node in its own process: the pid stays jitsu's.
  const env = opts.env === undefined ? undefined : { ...process.env, ...opts.env };
  const proc =
    opts.cpus === undefined
      ? await startProcess(opts.label, process.execPath, args, { keepLines: true, env })
      : await startProcess(opts.label, "taskset", ["-c", opts.cpus, process.execPath, ...args], {
          keepLines: true,
          env,
        });
  const exitedEarly = proc.exited.then(() => {
    throw new Error(`bench: ${opts.label} ${proc.describeExit()}: ${proc.lines.slice(-3).join(" | ")}`);
  });
  await Promise.race([
    waitForDns(port, opts.probe.name, opts.probe.type, opts.readyTimeoutMs ?? 60_000),
    exitedEarly,
  ]);
  const startupMs = performance.now() - started;
  void exitedEarly.catch(() => undefined);
  return { label: opts.label, port, proc, startupMs };
}

/** Queries each of `names` once (`concurrency` at a time); throws unless each answers with an address. */
export async function warm(server: Server, names: readonly string[], concurrency = 8): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < names.length) {
      const name = names[next++]!;
      const a = await queryOnce(server.port, name, "A", 30_000);
      if (a === null || a.rcode !== "NOERROR" || a.addresses.length === 0) {
        throw new Error(
          `bench: warming ${server.label}: ${name} answered ${a === null ? "nothing" : a.rcode}`,
        );
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

let clockTicks = 0;

/**
 * CPU time (user + system, itself and its waited-for children) a process has
 * used so far, in seconds, from /proc/PID/stat (proc(5): fields 14-17, in
 * clock ticks). Per query, it is far steadier than QPS on a shared machine.
 */
export function cpuSeconds(pid: number): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
  return ticks / clockTicks;
}

/** A process and every descendant still running (proc(5): /proc/PID/task/TID/children), e.g. jitsu's workers. */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number): void => {
    out.push(p);
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      return; // exited meanwhile
    }
    for (const tid of tids) {
      let children: string;
      try {
        children = readFileSync(`/proc/${p}/task/${tid}/children`, "utf8");
      } catch {
        continue;
      }
      for (const c of children.trim().split(/\s+/)) if (c !== "") visit(Number(c));
    }
  };
  visit(pid);
  return out;
}

/** CPU seconds of a process and its running descendants (see cpuSeconds). */
export function treeCpuSeconds(pid: number): number {
  let sum = 0;
  for (const p of processTree(pid)) {
    try {
      sum += cpuSeconds(p);
    } catch {
      // exited between the listing and the read
    }
  }
  return sum;
}

/** Resident set size of a process, MB (VmRSS), and its peak (VmHWM). */
export function rssMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string): number => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

/**
 * The messages jitsu logged, from JSON lines (--log-format json) or text lines
 * ("[2026-01-01 00:00:00.000] INFO: [vm] message").
 */
export function logMessages(proc: BenchProcess): string[] {
  const out: string[] = [];
  for (const line of proc.lines) {
    if (line.startsWith("{")) {
      try {
        const o = JSON.parse(line) as { msg?: unknown };
        if (typeof o.msg === "string") out.push(o.msg);
      } catch {
        // not a log line
      }
      continue;
    }
    const m = /^\[[^\]]+\] [A-Z]+: (?:\[[^\]]*\] )?(.*)$/.exec(line);
    if (m !== null) out.push(m[1]!);
  }
  return out;
}

/** jitsu's JSON log records (--log-format json), parsed; other lines are skipped. */
export function logRecords(proc: BenchProcess): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of proc.lines) {
    if (!line.startsWith("{")) continue;
    try {
      const o = JSON.parse(line) as unknown;
      if (typeof o === "object" && o !== null) out.push(o as Record<string, unknown>);
    } catch {
      // not a log line
    }
  }
  return out;
}

/** Process IDs of VMs jitsu started (from "Started process PID for VM ..."), to stop leftovers by ID. */
export function vmPids(proc: BenchProcess): number[] {
  const pids: number[] = [];
  for (const msg of logMessages(proc)) {
    const m = /^Started process (\d+) for VM/.exec(msg);
    if (m !== null) pids.push(Number(m[1]));
  }
  return pids;
}

/** Stops jitsu (SIGTERM; it stops its VMs with --stop-on-exit), then SIGKILLs any VM process group left, by ID. */
export async function stopJitsu(server: Server): Promise<void> {
  await server.proc.stop(15_000);
  for (const pid of vmPids(server.proc)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone (the normal case)
    }
  }
}
