/**
 * The IPC messages between the primary and its DNS workers (node:cluster,
 * JSON over the channel). Each side checks every message it receives with
 * the parser for its direction: a malformed one is reported (the caller logs
 * it) and ignored, never trusted.
 */
import type { CountersSnapshot, ForwardingOptions, Upstream, ZoneVm } from "../dns/index.js";
import type { SummonRefusal } from "../errors/index.js";
import type { LogFormat, LogLevel } from "../log/index.js";

/** A ready VM as the workers see it: label and addresses. */
export type ReadyEntry = readonly [label: string, addresses: readonly string[]];

/** The settings every worker serves DNS with (the primary's ClusterOptions carry them too). */
export interface WorkerSettings {
  readonly bind: string;
  readonly port: number;
  readonly ttl: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  /** Empty: forwarding disabled. */
  readonly upstreams: readonly Upstream[];
  /** --forward-sockets, --forward-socket-queries, --forward-socket-seconds, --forward-random-case. */
  readonly forwarding: ForwardingOptions;
  /** --tcp-per-client (0: no limit): the primary counts for every worker (tcp-acquire). */
  readonly tcpPerClient: number;
  readonly zone: readonly ZoneVm[];
  /** --allow-recursion and --allow-summon entries (parseAccessList's), and what `localnets` stands for. */
  readonly allowRecursion: readonly string[];
  readonly allowSummon: readonly string[];
  readonly localnets: readonly string[];
}

/** What a worker needs to serve DNS, sent once after it says hello. */
export interface InitMessage extends WorkerSettings {
  readonly t: "init";
  /** 1-based, stable across a worker's replacements (for logs and metrics). */
  readonly index: number;
  readonly ready: readonly ReadyEntry[];
}

export type ToWorker =
  | InitMessage
  /** VMs that became ready (or whose addresses changed), and those no longer ready. */
  | { readonly t: "ready"; readonly set: readonly ReadyEntry[]; readonly unset: readonly string[] }
  | { readonly t: "summoned"; readonly id: number; readonly addresses: readonly string[] }
  /** `refused`: the summon was refused for the client (--summon-rate), not failed: the worker answers REFUSED. */
  | {
      readonly t: "summon-failed";
      readonly id: number;
      readonly error: string;
      readonly refused?: SummonRefusal;
    }
  /** Report your counts now, answering with this id. */
  | { readonly t: "flush"; readonly id: number }
  /** SIGHUP: the interfaces' subnets changed (what `localnets` stands for). */
  | { readonly t: "localnets"; readonly cidrs: readonly string[] }
  /** Config reload: the new zone. */
  | { readonly t: "zone"; readonly zone: readonly ZoneVm[] }
  /** The answer to tcp-acquire `id`: may the worker keep that connection. */
  | { readonly t: "tcp-acquired"; readonly id: number; readonly granted: boolean }
  /** SIGHUP: read the host's addresses again (a wildcard bind follows them). */
  | { readonly t: "refresh-addresses" }
  /** Stop accepting queries, answer those in flight, report, exit. */
  | { readonly t: "close" };

export type ToPrimary =
  | { readonly t: "hello" }
  | { readonly t: "listening"; readonly port: number }
  | { readonly t: "listen-failed"; readonly error: string }
  /** `client`: the address of the query that caused it (admission control's --summon-rate). */
  | { readonly t: "summon"; readonly id: number; readonly label: string; readonly client?: string }
  /** A TCP connection from `client` accepted: may it stay (under --tcp-per-client over every worker)? */
  | { readonly t: "tcp-acquire"; readonly id: number; readonly client: string }
  /** A connection tcp-acquired for `client` closed. */
  | { readonly t: "tcp-release"; readonly client: string }
  /**
   * Requests answered from the ready map since the last report, per label, and
   * the worker's DNS counters (totals since it started). `id`: the flush this
   * answers, or null for the periodic report.
   */
  | {
      readonly t: "counts";
      readonly id: number | null;
      readonly requests: readonly (readonly [string, number])[];
      readonly dns: CountersSnapshot;
    };

/** A parse result: the message, or what is wrong with it. */
export type Parsed<T> =
  { readonly ok: true; readonly msg: T } | { readonly ok: false; readonly error: string };

class Bad extends Error {}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Bad(`${what}: expected an object`);
  return v as Record<string, unknown>;
}

function str(o: Record<string, unknown>, key: string): string {
  const v = o[key];
  if (typeof v !== "string") throw new Bad(`'${key}': expected a string`);
  return v;
}

function count(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new Bad(`${what}: expected a count`);
  return v;
}

function int(o: Record<string, unknown>, key: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new Bad(`'${key}': expected a whole number from ${min} to ${max}`);
  }
  return v;
}

function list<T>(v: unknown, what: string, item: (x: unknown, what: string) => T): T[] {
  if (!Array.isArray(v)) throw new Bad(`${what}: expected a list`);
  return v.map((x, i) => item(x, `${what}[${i}]`));
}

function strings(v: unknown, what: string): string[] {
  return list(v, what, (x, w) => {
    if (typeof x !== "string") throw new Bad(`${w}: expected a string`);
    return x;
  });
}

function pair<A, B>(
  v: unknown,
  what: string,
  a: (x: unknown, w: string) => A,
  b: (x: unknown, w: string) => B,
): readonly [A, B] {
  if (!Array.isArray(v) || v.length !== 2) throw new Bad(`${what}: expected a pair`);
  return [a(v[0], `${what}[0]`), b(v[1], `${what}[1]`)];
}

function label(x: unknown, w: string): string {
  if (typeof x !== "string" || x === "") throw new Bad(`${w}: expected a VM label`);
  return x;
}

/** A client address as a worker names it (an IPv6 address with a zone is at most ~60 characters). */
function client(o: Record<string, unknown>): string {
  const v = str(o, "client");
  if (v === "" || v.length > 100) throw new Bad("'client': expected an address");
  return v;
}

function readyEntries(v: unknown, what: string): ReadyEntry[] {
  return list(v, what, (x, w) => pair(x, w, label, strings));
}

/** A client's address as a socket gives it (at most 64 characters: an IPv6 address with a zone id). */
function address(x: unknown): string {
  if (typeof x !== "string" || x === "" || x.length > 64) throw new Bad("'client': expected an address");
  return x;
}

function zoneVms(v: unknown, what: string): ZoneVm[] {
  return list(v, what, (x, w) => {
    const o = obj(x, w);
    const vm = {
      label: label(o.label, `${w}.label`),
      dns: strings(o.dns, `${w}.dns`),
      ips: strings(o.ips, `${w}.ips`),
    };
    return o.holdIps === undefined ? vm : { ...vm, holdIps: strings(o.holdIps, `${w}.holdIps`) };
  });
}

function forwarding(v: unknown): ForwardingOptions {
  const o = obj(v, "'forwarding'");
  const seconds = o.socketSeconds;
  if (typeof seconds !== "number" || !(seconds > 0 && seconds <= 60)) {
    throw new Bad("'forwarding.socketSeconds': expected seconds above 0, at most 60");
  }
  if (typeof o.caseRandomization !== "boolean")
    throw new Bad("'forwarding.caseRandomization': expected a boolean");
  return {
    sockets: int(o, "sockets", 1, 1024),
    socketQueries: int(o, "socketQueries", 1, 500),
    socketSeconds: seconds,
    caseRandomization: o.caseRandomization,
  };
}

function snapshot(v: unknown): CountersSnapshot {
  const o = obj(v, "'dns'");
  const sparse = (x: unknown, w: string): (readonly [number, number])[] =>
    list(x, w, (p, pw) =>
      pair(
        p,
        pw,
        (i, iw) => {
          if (typeof i !== "number" || !Number.isInteger(i) || i < 0 || i > 65535) {
            throw new Bad(`${iw}: expected an index`);
          }
          return i;
        },
        count,
      ),
    );
  return {
    types: sparse(o.types, "dns.types"),
    results: sparse(o.results, "dns.results"),
    malformed: count(o.malformed, "dns.malformed"),
    dropped: count(o.dropped, "dns.dropped"),
    forwarded: count(o.forwarded, "dns.forwarded"),
    forwardCoalesced: count(o.forwardCoalesced, "dns.forwardCoalesced"),
    forwardMismatched: count(o.forwardMismatched, "dns.forwardMismatched"),
    // Absent from a worker of an older build (a rolling restart): none.
    holdAnswers: o.holdAnswers === undefined ? 0 : count(o.holdAnswers, "dns.holdAnswers"),
    forwardFailures: count(o.forwardFailures, "dns.forwardFailures"),
    truncated: count(o.truncated, "dns.truncated"),
    tcpConnections: count(o.tcpConnections, "dns.tcpConnections"),
    refused: list(o.refused, "dns.refused", count),
    tcpClosed: list(o.tcpClosed, "dns.tcpClosed", count),
    latencyBuckets: list(o.latencyBuckets, "dns.latencyBuckets", count),
    latencySum: count(o.latencySum, "dns.latencySum"),
    latencyCount: count(o.latencyCount, "dns.latencyCount"),
  };
}

const LOG_LEVELS_SET = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

function parse<T>(raw: unknown, decode: (o: Record<string, unknown>, t: string) => T): Parsed<T> {
  try {
    const o = obj(raw, "message");
    const t = o.t;
    if (typeof t !== "string") throw new Bad("no message type 't'");
    return { ok: true, msg: decode(o, t) };
  } catch (err) {
    if (err instanceof Bad) return { ok: false, error: err.message };
    throw err;
  }
}

/** A message the primary sent, as a worker checks it. */
export function parseToWorker(raw: unknown): Parsed<ToWorker> {
  return parse<ToWorker>(raw, (o, t) => {
    switch (t) {
      case "init": {
        const logLevel = str(o, "logLevel");
        if (!LOG_LEVELS_SET.has(logLevel)) throw new Bad(`'logLevel': unknown level '${logLevel}'`);
        const logFormat = str(o, "logFormat");
        if (logFormat !== "text" && logFormat !== "json")
          throw new Bad(`'logFormat': unknown '${logFormat}'`);
        return {
          t,
          index: int(o, "index", 1, 1024),
          bind: str(o, "bind"),
          port: int(o, "port", 0, 65535),
          ttl: int(o, "ttl", 0, 2147483647),
          logLevel: logLevel as LogLevel,
          logFormat,
          upstreams: list(o.upstreams, "upstreams", (x, w) => {
            const u = obj(x, w);
            return { host: str(u, "host"), port: int(u, "port", 1, 65535) };
          }),
          forwarding: forwarding(o.forwarding),
          tcpPerClient: int(o, "tcpPerClient", 0, 65535),
          zone: zoneVms(o.zone, "zone"),
          allowRecursion: strings(o.allowRecursion, "allowRecursion"),
          allowSummon: strings(o.allowSummon, "allowSummon"),
          localnets: strings(o.localnets, "localnets"),
          ready: readyEntries(o.ready, "ready"),
        };
      }
      case "ready":
        return { t, set: readyEntries(o.set, "set"), unset: list(o.unset, "unset", label) };
      case "summoned":
        return {
          t,
          id: int(o, "id", 1, Number.MAX_SAFE_INTEGER),
          addresses: strings(o.addresses, "addresses"),
        };
      case "summon-failed": {
        const id = int(o, "id", 1, Number.MAX_SAFE_INTEGER);
        if (o.refused === undefined) return { t, id, error: str(o, "error") };
        if (o.refused !== "summon-rate") throw new Bad("'refused': expected 'summon-rate'");
        return { t, id, error: str(o, "error"), refused: o.refused };
      }
      case "flush":
        return { t, id: int(o, "id", 1, Number.MAX_SAFE_INTEGER) };
      case "tcp-acquired": {
        const granted = o.granted;
        if (typeof granted !== "boolean") throw new Bad("'granted': expected true or false");
        return { t, id: int(o, "id", 1, Number.MAX_SAFE_INTEGER), granted };
      }
      case "zone":
        return { t, zone: zoneVms(o.zone, "zone") };
      case "localnets":
        return { t, cidrs: strings(o.cidrs, "cidrs") };
      case "close":
      case "refresh-addresses":
        return { t };
      default:
        throw new Bad(`unknown message type '${t}'`);
    }
  });
}

/** A message a worker sent, as the primary checks it. */
export function parseToPrimary(raw: unknown): Parsed<ToPrimary> {
  return parse<ToPrimary>(raw, (o, t) => {
    switch (t) {
      case "hello":
        return { t };
      case "listening":
        return { t, port: int(o, "port", 1, 65535) };
      case "listen-failed":
        return { t, error: str(o, "error") };
      case "summon": {
        const id = int(o, "id", 1, Number.MAX_SAFE_INTEGER);
        if (o.client === undefined) return { t, id, label: label(o.label, "label") };
        return { t, id, label: label(o.label, "label"), client: address(o.client) };
      }
      case "tcp-acquire":
        return { t, id: int(o, "id", 1, Number.MAX_SAFE_INTEGER), client: client(o) };
      case "tcp-release":
        return { t, client: client(o) };
      case "counts":
        return {
          t,
          id: o.id === null ? null : int(o, "id", 1, Number.MAX_SAFE_INTEGER),
          requests: list(o.requests, "requests", (x, w) => pair(x, w, label, count)),
          dns: snapshot(o.dns),
        };
      default:
        throw new Bad(`unknown message type '${t}'`);
    }
  });
}
