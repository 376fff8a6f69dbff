/**
 * What tests that run jitsu share: free loopback ports, temp dirs, real DNS
 * clients (dig, raw UDP), polling, and the built CLI run as a child process
 * that is always killed afterwards.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { readFileSync, readdirSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";

/** dist/src/cli/main.js, from dist/test/support/index.js. */
export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

/**
 * dist/scripts/demo-service.js: a VM program for the process backend that
 * serves HTTP (argv: HOST PORT NAME BOOT-SECONDS [STAMP-FILE], the file
 * getting a line `start MS` when it begins and `ready MS` when it listens).
 */
export const DEMO_SERVICE = fileURLToPath(new URL("../../scripts/demo-service.js", import.meta.url));

/** Ports this process has handed out: a test asks for several before it binds any. */
const handedOut = new Set<number>();

/**
 * A port free for both UDP and TCP on loopback (DNS listens on both), below
 * the ephemeral range (32768-60999 here) and never the same twice in one
 * process. Not from the kernel's port 0: a port handed out that way is the
 * next one the kernel gives a daemon binding port 0 (a double, a peer) or a
 * client socket, before the test has bound it; and a server that a test
 * restarts keeps its port while it is down.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 10_000 + Math.floor(Math.random() * 22_000);
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, host, () => srv.close(() => resolve(true)));
    });
    if (!free) continue;
    const udpFree = await new Promise<boolean>((resolve) => {
      const sock = createSocket(host.includes(":") ? "udp6" : "udp4");
      sock.once("error", () => resolve(false));
      sock.bind(port, host, () => sock.close(() => resolve(true)));
    });
    if (!udpFree) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free port found below 32000 on ${host}`);
}

/**
 * A temp dir for a test, used as jitsu's --state-dir. `remove()` first kills
 * the process groups of any process-backend VMs a jitsu left running there
 * (their pid files are in <dir>/process/), so no test leaves a VM behind.
 */
export async function tempDir(prefix = "jitsu-test-"): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    async remove() {
      await killLeftoverVms(path);
      await rm(path, { recursive: true, force: true });
    },
  };
}

async function killLeftoverVms(stateDir: string): Promise<void> {
  let files: string[];
  try {
    files = await readdir(join(stateDir, "process"));
  } catch {
    return;
  }
  for (const file of files.filter((f) => f.endsWith(".json"))) {
    try {
      const { pid } = JSON.parse(await readFile(join(stateDir, "process", file), "utf8")) as {
        pid?: unknown;
      };
      if (typeof pid !== "number" || pid <= 1) continue;
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, "SIGCONT");
          process.kill(target, "SIGKILL");
        } catch {
          // already gone
        }
      }
    } catch {
      // not a pid file we understand
    }
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded by `timeoutMs`); never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], timeoutMs = 20_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code === "string") {
        reject(new Error(`cannot run ${cmd}: ${err.message} (is it installed? .ci/run installs it)`));
        return;
      }
      resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stdout, stderr });
    });
  });
}

export interface DigAnswer {
  status: string;
  flags: string[];
  answers: { name: string; ttl: number; type: string; data: string }[];
  authority: { name: string; ttl: number; type: string; data: string }[];
  raw: string;
}

function section(raw: string, title: string): DigAnswer["answers"] {
  const m = new RegExp(`;; ${title} SECTION:\\n([\\s\\S]*?)(?:\\n\\n|$)`).exec(raw);
  if (m === null) return [];
  return m[1]!
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith(";"))
    .map((l) => {
      const [name = "", ttl = "0", , type = "", ...data] = l.split(/\s+/);
      return { name, ttl: Number(ttl), type, data: data.join(" ") };
    });
}

/**
 * dig's arguments for the `k`-th of several digs that ask one server at once:
 * a source address of its own on loopback (127.0.1.k+1), and `port` as its
 * source port if given. dig (BIND 9.18) sets SO_REUSEPORT on its UDP socket,
 * and the kernel's pick for a bind to port 0 may then be a port another
 * SO_REUSEPORT socket of the same user holds: two digs running at once get
 * one source port about once in 28,232 pairs (the ephemeral range). Connected
 * to the same server, they share one address 4-tuple, and the kernel hands
 * both answers to one of them: the other times out though the server answered
 * it. With a source address each, their 4-tuples differ whatever the ports.
 */
export function digSource(k: number, port?: number): string[] {
  return ["-b", `127.0.1.${(k % 254) + 1}${port === undefined ? "" : `#${port}`}`];
}

/**
 * Queries with real `dig` and parses its output; with `netns`, dig runs inside
 * that network namespace (`ip netns exec`, see netns.ts). Several at once
 * against one server: give each its own source address (`digSource`).
 */
export async function dig(
  port: number,
  args: readonly string[],
  host = "127.0.0.1",
  netns?: string,
): Promise<DigAnswer> {
  const digArgs = [`@${host}`, "-p", String(port), "+time=10", "+tries=1", ...args];
  const res = await (netns === undefined
    ? run("dig", digArgs, 30_000)
    : run("ip", ["netns", "exec", netns, "dig", ...digArgs], 30_000));
  const raw = res.stdout;
  const status = /status: (\w+)/.exec(raw)?.[1] ?? (res.code === 9 ? "TIMEOUT" : `EXIT${res.code}`);
  const flags = (/;; flags: ([^;]*);/.exec(raw)?.[1] ?? "").trim().split(/\s+/);
  return { status, flags, answers: section(raw, "ANSWER"), authority: section(raw, "AUTHORITY"), raw };
}

/**
 * dig for `name` A: its status, its first answer ("" if none), and how long it
 * took (ms); from `digSource(source)` when given (one of several at once).
 */
export async function timedDig(
  port: number,
  name: string,
  source?: number,
): Promise<{ status: string; data: string; ms: number }> {
  const t0 = Date.now();
  const a = await dig(port, [...(source === undefined ? [] : digSource(source)), name, "A"]);
  return { status: a.status, data: a.answers[0]?.data ?? "", ms: Date.now() - t0 };
}

/** Queries `name` A every 200 ms until it answers NOERROR (it may SERVFAIL while a daemon comes back). */
export async function answered(
  port: number,
  name: string,
  withinMs: number,
): Promise<{ tries: number; data: string }> {
  const deadline = Date.now() + withinMs;
  for (let tries = 1; ; tries++) {
    const a = await timedDig(port, name);
    if (a.status === "NOERROR") return { tries, data: a.data };
    if (Date.now() > deadline) throw new Error(`${name} still answers ${a.status} after ${withinMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface CliProcess {
  readonly child: ChildProcess;
  /** Everything written to stderr and stdout so far. */
  output(): string;
  /** Resolves once the output matches `pattern` (or rejects after `timeoutMs`). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Sends `signal` and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * The usual start of a test's command line: the process backend answering on
 * 127.0.0.1:`port`, no forwarding (never the machine's resolver) or forwarding
 * to 127.0.0.1:`upstream`, no response delay, VMs' pid files in `stateDir`
 * and stopped when jitsu exits (unless `stopOnExit` is false: a test of what
 * outlives jitsu).
 */
export function localArgs(
  port: number,
  stateDir: string,
  { stopOnExit = true, upstream }: { stopOnExit?: boolean; upstream?: number } = {},
): string[] {
  return [
    "-x",
    "process",
    "-l",
    String(port),
    ...(upstream === undefined ? ["-f", "0.0.0.0"] : ["-f", "127.0.0.1", "-p", String(upstream)]),
    "-d",
    "0",
    "--state-dir",
    stateDir,
    ...(stopOnExit ? ["--stop-on-exit"] : []),
  ];
}

/** The head of a YAML config file: one `option: value` line each (long option names), then `vms:`. */
export function yamlHeader(options: Readonly<Record<string, string | number | boolean>>): string {
  return `${Object.entries(options)
    .map(([name, value]) => `${name}: ${value}\n`)
    .join("")}vms:\n`;
}

/** A VM entry of a YAML config file (under `vms:`): name.jitsu.test, a process that idles. */
export function yamlVm(name: string, ip: string): string {
  return `  - name: ${name}\n    dns: ${name}.jitsu.test\n    ip: ${ip}\n    exec: ${process.execPath} -e "setInterval(() => {}, 1000)"\n`;
}

/** How many times `pattern` occurs in `text` (jitsu's output, say). */
export function countMatches(text: string, pattern: RegExp): number {
  return (text.match(new RegExp(pattern.source, "g")) ?? []).length;
}

/**
 * Starts the built CLI with `args` (inside network namespace `netns` if given:
 * `ip netns exec` runs node itself, so signals reach it); `t.after(() => cli.stop())`
 * is the caller's job.
 */
export function startCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  opts: { netns?: string } = {},
): CliProcess {
  return startScript(CLI, args, env, opts);
}

/** Every CLI and script started by this test file and not yet exited. */
const running = new Set<CliProcess>();

// A safety net, not the way to stop them: a script whose test failed before the test could keep
// its handle (a before() hook that timed out) would otherwise outlive the file, and its pipes keep
// the file's process from ever exiting. Stopped as stop() does (SIGTERM, SIGKILL after 10 s).
after(async () => {
  const left = [...running];
  if (left.length > 0) process.stderr.write(`test/support: stopping ${left.length} jitsu left running\n`);
  await Promise.all(left.map((cli) => cli.stop()));
});

/** Starts a built script (the CLI, the demo) under node, with the same handle as startCli. */
export function startScript(
  script: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  opts: { netns?: string } = {},
): CliProcess {
  const argv = [process.execPath, script, ...args];
  if (opts.netns !== undefined) argv.unshift("ip", "netns", "exec", opts.netns);
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const onData = (chunk: Buffer): void => {
    out += chunk.toString();
    for (const w of [...waiters]) {
      if (w.pattern.test(out)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const cli: CliProcess = {
    child,
    output: () => out,
    waitFor(pattern, timeoutMs = 20_000) {
      if (pattern.test(out)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`timed out waiting for ${pattern} in jitsu's output:\n${out}`));
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(timer);
          resolve();
        };
        waiters.push({ pattern, resolve: done });
        void exited.then(() => {
          clearTimeout(timer);
          if (!pattern.test(out)) reject(new Error(`jitsu exited before printing ${pattern}:\n${out}`));
        });
      });
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  running.add(cli);
  void exited.then(() => running.delete(cli));
  return cli;
}

/** The pids of a process's children (all its threads'), from /proc; empty if it is gone. */
export function childPids(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const task of tasks) {
    try {
      for (const child of readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(" ")) {
        if (child.trim() !== "") out.push(Number(child));
      }
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** True if the process with this pid runs (exists and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    // A zombie (Z) or dead (X) process has a pid but runs no more.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !"ZX".includes(stat.slice(stat.lastIndexOf(")") + 2)[0]!);
  } catch {
    return false;
  }
}

/** Waits until `check` is true, polling every 20 ms, or fails after `ms` naming `what`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * SIGKILLs the process group of every VM a jitsu started, found by its log
 * lines ("Started process PID for VM ..."): cleanup after a test, whatever
 * state jitsu was left in.
 */
export function killVmGroups(cliOutput: string | undefined): void {
  for (const m of cliOutput?.matchAll(/Started process (\d+) for VM/g) ?? []) {
    try {
      process.kill(-Number(m[1]), "SIGKILL");
    } catch {
      // gone
    }
  }
}

/**
 * Sends `n` A queries for `name` at once, each from its own UDP socket, and
 * resolves with the first A record of each answer ("RCODE:x" for an error, "timeout").
 */
export async function queryMany(
  port: number,
  name: string,
  n: number,
  timeoutMs = 30_000,
): Promise<string[]> {
  const { default: packet } = await import("dns-packet");
  const one = (id: number): Promise<string> =>
    new Promise((resolve) => {
      const sock = createSocket("udp4");
      const timer = setTimeout(() => {
        sock.close();
        resolve("timeout");
      }, timeoutMs);
      sock.on("message", (msg) => {
        clearTimeout(timer);
        sock.close();
        try {
          const res = packet.decode(msg) as { rcode?: string; answers?: { type: string; data?: unknown }[] };
          const a = res.answers?.find((r) => r.type === "A");
          resolve(res.rcode !== "NOERROR" ? `RCODE:${res.rcode}` : a === undefined ? "none" : String(a.data));
        } catch {
          resolve("undecodable");
        }
      });
      sock.send(
        packet.encode({
          type: "query",
          id,
          flags: packet.RECURSION_DESIRED,
          questions: [{ type: "A", name }],
        }),
        port,
        "127.0.0.1",
      );
    });
  return Promise.all(Array.from({ length: n }, (_, i) => one(i + 1)));
}

/** Sends raw bytes over UDP and resolves with the reply, or null if none came within `timeoutMs`. */
export function sendRaw(port: number, bytes: Buffer, timeoutMs = 1500): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const sock = createSocket("udp4");
    const timer = setTimeout(() => {
      sock.close();
      resolve(null);
    }, timeoutMs);
    sock.on("message", (msg) => {
      clearTimeout(timer);
      sock.close();
      resolve(msg);
    });
    sock.send(bytes, port, "127.0.0.1");
  });
}
