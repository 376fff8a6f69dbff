/**
 * Command-line options: the original Jitsu's (same short and long names,
 * defaults and meaning) plus ours. One table drives commander, --help and
 * validation, so they never drift apart.
 */
import { availableParallelism, homedir } from "node:os";
import { accessSync, constants, readFileSync } from "node:fs";
import { join } from "node:path";
import { BACKENDS, STOP_MODES, type StopMode } from "../backends/index.js";
import {
  parseFloatStrict,
  parseIntStrict,
  parseIp,
  parsePort,
  parseSeconds,
  type ConfigFile,
  type FileOptionSpec,
} from "../config/index.js";
import { FORWARD_DEFAULTS, parseAccessList, type ForwardingOptions } from "../dns/index.js";
import { describeError, UsageError } from "../errors/index.js";
import type { EtcdSettings } from "../store/index.js";
import { LOG_LEVELS, PER_VM_LINES_MAX, type LogFormat, type LogLevel } from "../log/index.js";

export interface OptionDef {
  /** Commander flags, e.g. "-b, --bind <ADDR>". */
  readonly flags: string;
  /** The long name without dashes; also the key in a config file. */
  readonly name: string;
  readonly doc: string;
  /** Default shown in --help, as the original's "(absent=...)". */
  readonly absent?: string;
  /** Comma-separated on the command line; a config file may also give a YAML/JSON list. */
  readonly list?: true;
}

/** "a, b or c": the registry's backend names in --help, in registry order. */
function wordList(words: readonly string[], conjunction: "and" | "or"): string {
  return words.length < 2
    ? words.join("")
    : `${words.slice(0, -1).join(", ")} ${conjunction} ${words.at(-1)}`;
}

/** The backends that take -c, as the original's help named them ("Libvirt and Xapi"). */
/** --forward-sockets: at least dnsmasq's 64 (RFC 5452 §9.2); at most what a process should hold open per upstream. */
const MIN_FORWARD_SOCKETS = 64;
const MAX_FORWARD_SOCKETS = 1024;
/** --forward-socket-queries and --forward-socket-seconds: "a few hundred queries" and "a minute" at most (issue 22). */
const MAX_FORWARD_SOCKET_QUERIES = 500;
const MAX_FORWARD_SOCKET_SECONDS = 60;

const CONNECTING = BACKENDS.filter((b) => b.connects).map((b) => b.name[0]!.toUpperCase() + b.name.slice(1));
const BACKEND_NAMES = BACKENDS.map((b) => b.name);

export const OPTIONS: readonly OptionDef[] = [
  {
    flags: "-b, --bind <ADDR>",
    name: "bind",
    absent: "127.0.0.1",
    doc: "Bind local DNS server to interface with this IP",
  },
  {
    flags: "-c, --connect <CONNECT>",
    name: "connect",
    absent: "xen:///",
    doc: `${wordList(CONNECTING, "and")} connection string (e.g. xen+ssh://x.x.x.x/system or vbox:///session)`,
  },
  {
    flags: "-d, --delay <SECONDS>",
    name: "delay",
    absent: "0.1",
    doc: "Time to wait in seconds before responding to a DNS query after the local VM has started. This delay gives the VM time to open up the necessary TCP ports etc. Setting this value too low can result in long delays on the first TCP request to the VM.",
  },
  {
    flags: "-f, --forwarder <ADDR>",
    name: "forwarder",
    doc: "IP address of DNS server queries should be forwarded to if no local match is found. Defaults to system default (/etc/resolv.conf) if not specified. Set to 0.0.0.0 to disable forwarding.",
  },
  {
    flags: "--forward-sockets <N>",
    name: "forward-sockets",
    absent: String(FORWARD_DEFAULTS.sockets),
    doc: `UDP sockets, each on a random port, that forwarded queries go out on, per upstream (${MIN_FORWARD_SOCKETS} to ${MAX_FORWARD_SOCKETS}); each query takes one at random, with a fresh random ID. With --workers, per worker.`,
  },
  {
    flags: "--forward-socket-queries <N>",
    name: "forward-socket-queries",
    absent: String(FORWARD_DEFAULTS.socketQueries),
    doc: `A forwarding socket is replaced by one on a new random port after sending this many queries (1 to ${MAX_FORWARD_SOCKET_QUERIES}), so no port is used for long.`,
  },
  {
    flags: "--forward-socket-seconds <SECONDS>",
    name: "forward-socket-seconds",
    absent: String(FORWARD_DEFAULTS.socketSeconds),
    doc: `... or after this many seconds (above 0, at most ${MAX_FORWARD_SOCKET_SECONDS}), whichever comes first.`,
  },
  {
    flags: "--forward-random-case",
    name: "forward-random-case",
    doc: "DNS 0x20: send the question upstream in random upper and lower case and take only a reply that echoes that very case (one more bit for a spoofer to guess per letter). Only for upstreams that keep the case of the question (BIND, Unbound, Knot Resolver, PowerDNS and dnsmasq do): replies from one that does not are ignored and the queries time out (SERVFAIL), with a warning.",
  },
  {
    flags: "-l, --listen <PORT>",
    name: "listen",
    absent: "53",
    doc: "UDP (and TCP) port to listen for DNS queries",
  },
  {
    flags: "-m, --mode <MODE>",
    name: "mode",
    absent: "destroy",
    doc: `How to stop running VMs after timeout. Valid options are ${STOP_MODES.join(", ")}; which ones a backend supports is listed with its configuration below. Suspended VMs are generally faster to resume, but require resources to store state.`,
  },
  { flags: "-p, --port <PORT>", name: "port", absent: "53", doc: "UDP port to forward DNS queries to" },
  {
    flags: "-t, --ttl <SECONDS>",
    name: "ttl",
    absent: "60",
    doc: "DNS TTL in seconds. The TTL determines how long the clients may cache our DNS response. VMs are terminated after no DNS requests have been received for TTL*2 seconds.",
  },
  {
    flags: "-x, --backend <BACKEND>",
    name: "backend",
    absent: "libvirt",
    doc: `Which backend to use: ${wordList(BACKEND_NAMES, "or")}.`,
  },
  {
    flags: "--persistdb <path>",
    name: "persistdb",
    doc: "Keep jitsu's state (per VM: starts, requests, timers) in this SQLite database, so it survives restarts; given a directory, in jitsu.db inside it. The default is to keep it in memory only.",
  },
  {
    flags: "--etcd <ENDPOINTS>",
    name: "etcd",
    list: true,
    doc: "Share state with the other jitsu instances that serve the same names, through etcd at these endpoints (comma-separated, e.g. http://127.0.0.1:2379,http://10.0.0.2:2379): each VM is started once and stopped once by all of them, a VM is idle only when idle on every instance, and counts and timers live in etcd. Not with --persistdb. See README 'Two name servers'.",
  },
  {
    flags: "--etcd-ca <FILE>",
    name: "etcd-ca",
    doc: "PEM file of the CA that signed the etcd servers' certificates (https endpoints; default: the system's CAs).",
  },
  {
    flags: "--etcd-cert <FILE>",
    name: "etcd-cert",
    doc: "PEM file of jitsu's client certificate for etcd (with --etcd-key).",
  },
  { flags: "--etcd-key <FILE>", name: "etcd-key", doc: "PEM file of the key of --etcd-cert." },
  { flags: "--etcd-user <USER>", name: "etcd-user", doc: "etcd user name (etcd authentication)." },
  {
    flags: "--etcd-password <PASSWORD>",
    name: "etcd-password",
    doc: "etcd password of --etcd-user. Others on the host can read a command line: prefer --etcd-password-file or the JITSU_ETCD_PASSWORD environment variable. Never logged.",
  },
  {
    flags: "--etcd-password-file <FILE>",
    name: "etcd-password-file",
    doc: "File holding the etcd password (its first line).",
  },
  {
    flags: "--etcd-prefix <PREFIX>",
    name: "etcd-prefix",
    absent: "/jitsu/",
    doc: "Prefix of jitsu's keys in etcd; instances with the same prefix share their VMs.",
  },
  {
    flags: "--synjitsu <UUID>",
    name: "synjitsu",
    doc: "UUID of a running Synjitsu compatible unikernel. When specified, Jitsu connects to it over Vchan on port 'synjitsu' and sends notifications with the MAC and IP addresses of booted unikernels (for VMs with use_synjitsu).",
  },
  {
    flags: "--start-timeout <SECONDS>",
    name: "start-timeout",
    absent: "30",
    doc: "How long a VM may take to become ready (start, wait_for_key, delay, ready probes) before the query is answered with SERVFAIL and the start is retried after a back-off.",
  },
  {
    flags: "--hold-address <ADDR>",
    name: "hold-address",
    absent: "the -b address",
    doc: "Where VMs with hold= ports hold connections while they start, and the address their names are answered with until they are ready (a VM's hold_address= overrides it). Must be an address clients can reach: required when -b is a wildcard.",
  },
  {
    flags: "--reaper-interval <SECONDS>",
    name: "reaper-interval",
    absent: "5",
    doc: "How often idle VMs are looked for (a VM is stopped 2 x TTL after its last query or held connection, give or take this).",
  },
  {
    flags: "--max-starting <N>",
    name: "max-starting",
    absent: "the number of CPUs, at least 2",
    doc: "At most N VMs start or resume at once; further summons wait in arrival order (their queries too, within --start-timeout, which counts the time waited; then SERVFAIL).",
  },
  {
    flags: "--max-running <N>",
    name: "max-running",
    absent: "0, no limit",
    doc: "At most N VMs up at once (starting, ready, stopping, or failed but still running). A summon beyond it stops, with -m, the least recently queried ready VM whose last query is older than the TTL (no client can still hold its address), then starts; with none such yet, it waits for the first (within --start-timeout, then SERVFAIL).",
  },
  {
    flags: "--summon-rate <R>",
    name: "summon-rate",
    absent: "10",
    doc: "Cold summons (queries that start a VM) per second per client prefix (/24 for IPv4, /56 for IPv6), with bursts of 2 x R; a client over it is answered REFUSED for names of VMs that are not ready (ready VMs and forwarded names are not limited). 0: no limit.",
  },
  {
    flags: "--max-failures <N>",
    name: "max-failures",
    absent: "5",
    doc: "A VM whose start fails N times in a row (with back-off between tries) is given up on: its queries get SERVFAIL at once, and it is not started again until a config reload (SIGHUP), an admin start or --failure-reset seconds pass, so a broken VM cannot keep the host busy. 0: never give up.",
  },
  {
    flags: "--failure-reset <SECONDS>",
    name: "failure-reset",
    absent: "300",
    doc: "How long a VM given up on after --max-failures failed starts waits before one more try (a try that fails waits this long again).",
  },
  {
    flags: "--state-dir <DIR>",
    name: "state-dir",
    absent: "$XDG_RUNTIME_DIR/jitsu or ~/.cache/jitsu",
    doc: "Where backends keep pid files, control sockets and saved memory images.",
  },
  {
    flags: "--xl <PATH>",
    name: "xl",
    absent: "xl on PATH",
    doc: "The xl command used by the libxl backend.",
  },
  {
    flags: "--synjitsu-socket <PATH>",
    name: "synjitsu-socket",
    doc: "Reach Synjitsu through this unix socket instead of starting vchan-socket-proxy.",
  },
  {
    flags: "--config <FILE>",
    name: "config",
    doc: "Read options and VMs from this YAML or JSON file (command-line values win); SIGHUP reloads it.",
  },
  {
    flags: "--http <ADDR:PORT>",
    name: "http",
    doc: "Serve /status, /metrics and /healthz over HTTP on this address.",
  },
  {
    flags: "--http-token <TOKEN>",
    name: "http-token",
    doc: "Enable POST /vms/NAME/start and /stop on the HTTP endpoint for requests bearing this token.",
  },
  {
    flags: "--allow-recursion <LIST>",
    name: "allow-recursion",
    absent: "localhost,localnets",
    list: true,
    doc: "Clients whose queries for names jitsu does not manage may be forwarded: comma-separated CIDRs (192.0.2.0/24, 2001:db8::/32), addresses, and localhost (127.0.0.0/8, ::1), localnets (the subnets of this host's interfaces, re-read on SIGHUP), any or none. Other clients get REFUSED for those names (as from BIND's allow-recursion), so jitsu on a public address is no open resolver; managed names are answered to everyone.",
  },
  {
    flags: "--allow-summon <LIST>",
    name: "allow-summon",
    absent: "any",
    list: true,
    doc: "Clients whose queries may start a VM (same syntax as --allow-recursion). Other clients get the address of a VM that is already ready, and REFUSED for one that is not.",
  },
  {
    flags: "--stop-on-exit",
    name: "stop-on-exit",
    doc: "On SIGINT/SIGTERM, also stop the VMs that jitsu started.",
  },
  {
    flags: "--workers <N>",
    name: "workers",
    absent: "1",
    doc: "Serve DNS from N worker processes (1 to 64) sharing the UDP and TCP socket, for more queries per second on several cores. With N > 1 the main process owns the VMs, the state, --http and reloads and serves no DNS itself; workers answer ready VMs from memory and report their request counts every second. A worker that dies is replaced (its queries in flight are lost; clients retry).",
  },
  {
    flags: "--tcp-per-client <N>",
    name: "tcp-per-client",
    absent: "8",
    doc: "At most N open DNS TCP connections from one client address (0: no limit); a further one is closed at once. With --workers, counted over all the workers.",
  },
  {
    flags: "--log-level <LEVEL>",
    name: "log-level",
    absent: "info",
    doc: `Log level: ${LOG_LEVELS.join(", ")}. With more than ${PER_VM_LINES_MAX} VMs, the start-up lines per domain and PTR and the stats table are logged at debug; info gets one summary line each.`,
  },
  {
    flags: "--log-format <FORMAT>",
    name: "log-format",
    absent: "text",
    doc: "Log format: text (human-readable lines) or json.",
  },
];

export interface Settings {
  readonly bind: string;
  readonly connect: string;
  readonly delay: number;
  /** undefined: /etc/resolv.conf; null: forwarding disabled (-f 0.0.0.0). */
  readonly forwarder: string | null | undefined;
  readonly listen: number;
  readonly mode: StopMode;
  readonly port: number;
  readonly ttl: number;
  readonly backend: string;
  readonly persistdb: string | undefined;
  /** --etcd and its TLS, user and prefix options (the password read from its file or the environment). */
  readonly etcd: EtcdSettings | undefined;
  readonly synjitsu: string | undefined;
  readonly startTimeout: number;
  readonly stateDir: string;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly stopOnExit: boolean;
  /** --workers: 1 is one process serving DNS itself; more forks DNS workers (src/cluster). */
  readonly workers: number;
  /** --max-starting: starts at once (default: the number of CPUs, at least 2). */
  readonly maxStarting: number;
  /** --max-running: VMs up at once; 0 for no limit. */
  readonly maxRunning: number;
  /** --summon-rate: cold summons per second per client prefix; 0 for no limit. */
  readonly summonRate: number;
  /** --tcp-per-client: open DNS TCP connections per client address; 0 is no limit. */
  readonly tcpPerClient: number;
  /** --forward-sockets, --forward-socket-queries, --forward-socket-seconds, --forward-random-case. */
  readonly forwarding: ForwardingOptions;
  /** --max-failures: failed starts in a row before a VM is given up on; 0 for never. */
  readonly maxFailures: number;
  /** --failure-reset: seconds a VM given up on waits for its next try. */
  readonly failureReset: number;
  /** Everything as given, by long name, for backends' own global options. */
  readonly raw: Readonly<Record<string, string | undefined>>;
  /** Positional CONFIG strings. */
  readonly configs: readonly string[];
  /** --config: the file as read at start-up (its VMs are added to `configs`' VMs). */
  readonly file: ConfigFile | undefined;
  /** --allow-recursion and --allow-summon, as parseAccessList returns them (words and canonical CIDRs). */
  readonly allowRecursion: readonly string[];
  readonly allowSummon: readonly string[];
  /** --hold-address: undefined means the -b address (src/activator). */
  readonly holdAddress: string | undefined;
  /** --reaper-interval, in seconds. */
  readonly reaperInterval: number;
  /** --http ADDR:PORT and --http-token. */
  readonly http: { readonly host: string; readonly port: number } | undefined;
  readonly httpToken: string | undefined;
}

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XDG_RUNTIME_DIR !== undefined && env.XDG_RUNTIME_DIR !== "")
    return join(env.XDG_RUNTIME_DIR, "jitsu");
  const cache =
    env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== ""
      ? env.XDG_CACHE_HOME
      : join(homedir(), ".cache");
  return join(cache, "jitsu");
}

function parseWith<T>(option: string, value: string, parse: (v: string) => T): T {
  try {
    return parse(value);
  } catch (err) {
    throw new UsageError((err as Error).message, option);
  }
}

function positiveInt(v: string): number {
  const n = parseIntStrict(v);
  if (n < 1 || n > 2147483647)
    throw new Error(`expected a whole number of seconds from 1 to 2147483647, got '${v}'`);
  return n;
}

/** Above this, more workers only share the same cores (and each costs ~40 MB). */
export const MAX_WORKERS = 64;

function workerCount(v: string): number {
  let n: number;
  try {
    n = parseIntStrict(v);
  } catch {
    throw new Error(`expected a whole number of worker processes from 1 to ${MAX_WORKERS}, got '${v}'`);
  }
  if (n < 1 || n > MAX_WORKERS)
    throw new Error(`expected a whole number of worker processes from 1 to ${MAX_WORKERS}, got '${v}'`);
  return n;
}

/** --max-starting's default: one start per CPU, and at least two so one slow boot does not hold up every other. */
export function defaultMaxStarting(): number {
  return Math.max(2, availableParallelism());
}

/** A whole number from `min` to 2^31 - 1 (`what` names it in the message). */
function wholeNumber(min: number, what: string): (v: string) => number {
  return (v) => {
    let n: number;
    try {
      n = parseIntStrict(v);
    } catch {
      n = NaN;
    }
    if (!(n >= min && n <= 2147483647))
      throw new Error(`expected a whole number of ${what} from ${min} to 2147483647, got '${v}'`);
    return n;
  };
}

function summonRate(v: string): number {
  let n: number;
  try {
    n = parseFloatStrict(v);
  } catch {
    n = NaN;
  }
  if (!(n >= 0 && n <= 1e6))
    throw new Error(`expected a number of summons per second from 0 (no limit) to 1000000, got '${v}'`);
  return n;
}

/** More than a process could hold open anyway. */
const MAX_TCP_PER_CLIENT = 65535;

function tcpPerClient(v: string): number {
  const bad = (): Error =>
    new Error(
      `expected a whole number of connections from 0 (no limit) to ${MAX_TCP_PER_CLIENT}, got '${v}'`,
    );
  let n: number;
  try {
    n = parseIntStrict(v);
  } catch {
    throw bad();
  }
  if (n < 0 || n > MAX_TCP_PER_CLIENT) throw bad();
  return n;
}

/** A whole number from `min` to `max` (`what` names it in the message). */
function wholeIn(min: number, max: number, what: string): (v: string) => number {
  return (v) => {
    let n: number;
    try {
      n = parseIntStrict(v);
    } catch {
      n = NaN;
    }
    if (!(n >= min && n <= max))
      throw new Error(`expected a whole number of ${what} from ${min} to ${max}, got '${v}'`);
    return n;
  };
}

function socketSeconds(v: string): number {
  let n: number;
  try {
    n = parseSeconds(v);
  } catch {
    n = NaN;
  }
  if (!(n > 0 && n <= MAX_FORWARD_SOCKET_SECONDS))
    throw new Error(
      `expected a number of seconds above 0 and at most ${MAX_FORWARD_SOCKET_SECONDS}, got '${v}'`,
    );
  return n;
}

function positive(v: string): number {
  const n = parseSeconds(v);
  if (n <= 0) throw new Error(`expected a number of seconds above 0, got '${v}'`);
  return n;
}

/** Turns commander's raw strings into typed settings; each bad value is a UsageError naming its option. */
export function toSettings(
  given: Record<string, string | boolean | undefined>,
  configs: readonly string[],
  file?: ConfigFile,
  env: NodeJS.ProcessEnv = process.env,
): Settings {
  // Commander camel-cases long names (startTimeout); we keep them as written (start-timeout).
  const raw: Record<string, string | boolean | undefined> = {};
  for (const [k, v] of Object.entries(given)) raw[k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)] = v;
  const str = (name: string): string | undefined => {
    const v = raw[name];
    return typeof v === "string" ? v : undefined;
  };
  const mode = str("mode") ?? "destroy";
  if (!(STOP_MODES as readonly string[]).includes(mode)) {
    throw new UsageError(`expected one of ${STOP_MODES.join(", ")}, got '${mode}'`, "--mode");
  }
  const logLevel = str("log-level") ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`expected one of ${LOG_LEVELS.join(", ")}, got '${logLevel}'`, "--log-level");
  }
  const logFormat = str("log-format") ?? "text";
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`expected text or json, got '${logFormat}'`, "--log-format");
  }
  const fwd = str("forwarder");
  const forwarder =
    fwd === undefined
      ? undefined
      : parseWith("--forwarder", fwd, (v) => parseIp(v).address) === "0.0.0.0"
        ? null
        : parseIp(fwd).address;
  const backend = str("backend") ?? "libvirt";
  if (backend === "") throw new UsageError("expected a backend name", "--backend");
  const stringRaw: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(raw))
    stringRaw[k] = typeof v === "string" ? v : v === true ? "true" : undefined;
  return {
    bind: parseWith("--bind", str("bind") ?? "127.0.0.1", (v) => parseIp(v).address),
    connect: str("connect") ?? "xen:///",
    delay: parseWith("--delay", str("delay") ?? "0.1", parseSeconds),
    forwarder,
    listen: parseWith("--listen", str("listen") ?? "53", parsePort),
    mode: mode as StopMode,
    port: parseWith("--port", str("port") ?? "53", parsePort),
    ttl: parseWith("--ttl", str("ttl") ?? "60", positiveInt),
    backend,
    persistdb: str("persistdb"),
    etcd: etcdSettings(str, env),
    synjitsu: str("synjitsu"),
    startTimeout: parseWith("--start-timeout", str("start-timeout") ?? "30", positive),
    stateDir: str("state-dir") ?? defaultStateDir(),
    logLevel: logLevel as LogLevel,
    logFormat,
    stopOnExit: raw["stop-on-exit"] === true,
    workers: parseWith("--workers", str("workers") ?? "1", workerCount),
    maxStarting:
      str("max-starting") === undefined
        ? defaultMaxStarting()
        : parseWith("--max-starting", str("max-starting")!, wholeNumber(1, "VMs")),
    maxRunning: parseWith("--max-running", str("max-running") ?? "0", wholeNumber(0, "VMs (0: no limit)")),
    summonRate: parseWith("--summon-rate", str("summon-rate") ?? "10", summonRate),
    tcpPerClient: parseWith("--tcp-per-client", str("tcp-per-client") ?? "8", tcpPerClient),
    forwarding: {
      sockets: parseWith(
        "--forward-sockets",
        str("forward-sockets") ?? String(FORWARD_DEFAULTS.sockets),
        wholeIn(MIN_FORWARD_SOCKETS, MAX_FORWARD_SOCKETS, "sockets"),
      ),
      socketQueries: parseWith(
        "--forward-socket-queries",
        str("forward-socket-queries") ?? String(FORWARD_DEFAULTS.socketQueries),
        wholeIn(1, MAX_FORWARD_SOCKET_QUERIES, "queries"),
      ),
      socketSeconds: parseWith(
        "--forward-socket-seconds",
        str("forward-socket-seconds") ?? String(FORWARD_DEFAULTS.socketSeconds),
        socketSeconds,
      ),
      caseRandomization: raw["forward-random-case"] === true,
    },
    maxFailures: parseWith(
      "--max-failures",
      str("max-failures") ?? "5",
      wholeNumber(0, "failed starts (0: never give up)"),
    ),
    failureReset: parseWith("--failure-reset", str("failure-reset") ?? "300", positive),
    raw: stringRaw,
    configs,
    file,
    allowRecursion: parseAccessList("--allow-recursion", str("allow-recursion") ?? "localhost,localnets"),
    allowSummon: parseAccessList("--allow-summon", str("allow-summon") ?? "any"),
    holdAddress:
      str("hold-address") === undefined
        ? undefined
        : parseWith("--hold-address", str("hold-address")!, (v) => parseIp(v).address),
    reaperInterval: parseWith("--reaper-interval", str("reaper-interval") ?? "5", positive),
    http: str("http") === undefined ? undefined : parseHttpAddress(str("http")!),
    httpToken: nonEmpty("--http-token", str("http-token")),
  };
}

/** --etcd's settings, or undefined without --etcd; a bad value is a UsageError naming its option. */
export function etcdSettings(
  str: (name: string) => string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): EtcdSettings | undefined {
  const given = str("etcd");
  const others = ["etcd-ca", "etcd-cert", "etcd-key", "etcd-user", "etcd-password", "etcd-password-file"];
  if (given === undefined) {
    const stray = others.find((o) => str(o) !== undefined);
    if (stray !== undefined) throw new UsageError("is only used with --etcd", `--${stray}`);
    return undefined;
  }
  if (str("persistdb") !== undefined) {
    throw new UsageError(
      "cannot be used with --etcd: with --etcd the state lives in etcd (remove one of them)",
      "--persistdb",
    );
  }
  const endpoints = given
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
  if (endpoints.length === 0)
    throw new UsageError("expected at least one endpoint, e.g. http://127.0.0.1:2379", "--etcd");
  for (const e of endpoints) {
    let url: URL;
    try {
      url = new URL(e);
    } catch {
      throw new UsageError(`'${e}' is not a URL; expected http://HOST:PORT or https://HOST:PORT`, "--etcd");
    }
    if (
      (url.protocol !== "http:" && url.protocol !== "https:") ||
      url.hostname === "" ||
      url.pathname.length > 1
    )
      throw new UsageError(
        `'${e}' is not an etcd endpoint; expected http://HOST:PORT or https://HOST:PORT`,
        "--etcd",
      );
    if (url.username !== "" || url.password !== "")
      throw new UsageError(
        `'${url.host}': give the user with --etcd-user and the password with --etcd-password-file`,
        "--etcd",
      );
  }
  const schemes = new Set(endpoints.map((e) => new URL(e).protocol));
  if (schemes.size > 1)
    throw new UsageError("mixes http and https endpoints; use one scheme for all", "--etcd");
  const file = (option: string): string | undefined => {
    const path = str(option);
    if (path === undefined) return undefined;
    try {
      accessSync(path, constants.R_OK);
    } catch (err) {
      throw new UsageError(
        `cannot read '${path}' (${(err as { code?: string }).code ?? describeError(err)})`,
        `--${option}`,
      );
    }
    return path;
  };
  const ca = file("etcd-ca");
  const cert = file("etcd-cert");
  const key = file("etcd-key");
  if ((cert === undefined) !== (key === undefined))
    throw new UsageError(
      "--etcd-cert and --etcd-key go together",
      cert === undefined ? "--etcd-key" : "--etcd-cert",
    );
  if ((ca !== undefined || cert !== undefined) && schemes.has("http:"))
    throw new UsageError(
      "TLS options need https:// endpoints",
      ca !== undefined ? "--etcd-ca" : "--etcd-cert",
    );
  const user = nonEmpty("--etcd-user", str("etcd-user"));
  const passwordFile = file("etcd-password-file");
  let password = str("etcd-password");
  if (password !== undefined && passwordFile !== undefined)
    throw new UsageError(
      "give the password once: --etcd-password or --etcd-password-file",
      "--etcd-password",
    );
  if (passwordFile !== undefined) password = readFileSync(passwordFile, "utf8").split(/\r?\n/)[0] ?? "";
  password ??= env.JITSU_ETCD_PASSWORD;
  if (password !== undefined && user === undefined)
    throw new UsageError("a password needs a user name (--etcd-user)", "--etcd-user");
  if (user !== undefined && (password === undefined || password === ""))
    throw new UsageError(
      "needs a password: --etcd-password-file FILE, JITSU_ETCD_PASSWORD or --etcd-password",
      "--etcd-user",
    );
  let prefix = str("etcd-prefix") ?? "/jitsu/";
  if (prefix === "" || /[\s]/.test(prefix))
    throw new UsageError(`expected a key prefix such as /jitsu/, got '${prefix}'`, "--etcd-prefix");
  if (!prefix.endsWith("/")) prefix += "/";
  return { endpoints, ca, cert, key, user, password, prefix };
}

function nonEmpty(option: string, value: string | undefined): string | undefined {
  if (value === "") throw new UsageError("expected a non-empty value", option);
  return value;
}

/** Kebab-cases commander's camel-cased option names (startTimeout -> start-timeout). */
export function kebabKeys(given: Record<string, unknown>): Record<string, string | boolean | undefined> {
  const out: Record<string, string | boolean | undefined> = {};
  for (const [k, v] of Object.entries(given)) {
    out[k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)] =
      typeof v === "string" || typeof v === "boolean" ? v : undefined;
  }
  return out;
}

/** The options a config file may set: every long option, flags marked as such. */
export function fileOptionSpecs(): FileOptionSpec[] {
  return OPTIONS.map((o) => ({ name: o.name, takesValue: /<[^>]+>/.test(o.flags), list: o.list === true }));
}

/** Parses `ADDR:PORT` (`[v6]:PORT` for IPv6) as --http takes it. */
export function parseHttpAddress(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (m === null)
    throw new UsageError(`expected ADDR:PORT (e.g. 127.0.0.1:9053 or [::1]:9053), got '${text}'`, "--http");
  try {
    return { host: parseIp(m[1]!).address, port: parsePort(m[2]!) };
  } catch (err) {
    throw new UsageError(describeError(err), "--http");
  }
}
