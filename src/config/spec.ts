/**
 * VmSpec: one VM as parsed from a CONFIG string (or, later, a config file).
 * Common keys are read here; backend keys stay in `options` and are validated
 * against the backend's KeySpecs.
 */
import { ConfigError } from "../errors/index.js";
import type { ConfigPair } from "./grammar.js";
import { VmOptions, validate, type KeySpec } from "./keys.js";
import { parseDnsName, parseIp, parsePort } from "./values.js";

export type ReadyProbe =
  | { readonly kind: "tcp"; readonly host: string; readonly port: number }
  | { readonly kind: "http"; readonly url: string };

/** `hold=PORT` or `hold=PORT:VMPORT`: jitsu listens on the hold address's `port`, the VM on `vmPort`. */
export interface HoldPort {
  readonly port: number;
  readonly vmPort: number;
}

export interface VmSpec {
  /** What logs and errors call this VM: name, else uuid, else the first DNS name. */
  readonly label: string;
  readonly name: string | undefined;
  readonly uuid: string | undefined;
  /** Lower-cased, without trailing dots, in the order given. */
  readonly dns: readonly string[];
  /** Canonical addresses, in the order given; empty if the backend is to discover them. */
  readonly ips: readonly string[];
  /** Seconds; undefined means the global -d. */
  readonly responseDelay: number | undefined;
  readonly waitForKey: string | undefined;
  readonly useSynjitsu: boolean;
  readonly ready: readonly ReadyProbe[];
  /** `group=`: VMs with the same group start and stop together (src/summoner groups.ts). */
  readonly group: string | undefined;
  /** `after=`: labels of members of the same group that must be ready before this one starts. */
  readonly after: readonly string[];
  /** `hold=` ports (src/activator), in the order given; empty: no connections are held. */
  readonly hold: readonly HoldPort[];
  /** `hold_address=`: this VM's hold address; undefined means --hold-address (default -b). */
  readonly holdAddress: string | undefined;
  /** `connect=`: the host this VM lives on (a libvirt URI, an XAPI URL, a Docker host); undefined means -c. */
  readonly connect?: string | undefined;
  /** Every pair, for the backend to read its own keys. */
  readonly options: VmOptions;
}

/** Keys every backend accepts (the original's COMMON CONFIGURATION, plus ours). */
export const COMMON_KEYS: readonly KeySpec[] = [
  {
    key: "dns",
    type: "dns",
    required: true,
    repeatable: true,
    doc: "DNS name (required). Can be set more than once.",
  },
  {
    key: "ip",
    type: "ip",
    repeatable: true,
    doc: "IP to return in DNS reply: IPv4 for A, IPv6 for AAAA. Can be set more than once. Required unless the backend can discover the VM's address.",
  },
  {
    key: "response_delay",
    type: "seconds",
    doc: "Override default DNS query response delay for this unikernel. See also -d.",
  },
  {
    key: "wait_for_key",
    type: "string",
    doc: "Wait for this key to appear in Xenstore before responding to the DNS query. Sleeps for [response_delay] after the key appears. The key should be relative to /local/domain/[domid]/.",
  },
  {
    key: "use_synjitsu",
    type: "bool",
    doc: "Enable Synjitsu for this domain if not 0 or absent (requires Synjitsu support enabled)",
  },
  {
    key: "ready",
    type: "string",
    repeatable: true,
    doc: "Readiness probe that must succeed before the DNS answer is sent: tcp:PORT, tcp:HOST:PORT or http://HOST:PORT/path (any 2xx/3xx). Can be set more than once; all must pass.",
  },
  {
    key: "group",
    type: "string",
    doc: "Group name (letters, digits, '.', '_', '-'): VMs with the same group start together. A query for any member starts every member that is not up (in parallel, except for after=) and is answered when all are ready; a query for any member keeps the whole group up, and the group is stopped together 2 x TTL after the last one. A member that fails to start fails the query (SERVFAIL); the members already up stay up.",
  },
  {
    key: "after",
    type: "string",
    repeatable: true,
    doc: "Start this group member only once the member with this name (its name, else uuid, else first dns) is ready, and, with -m shutdown, stop it before that one. Needs group=, and names a member of the same group. Can be set more than once.",
  },
  {
    key: "hold",
    type: "string",
    repeatable: true,
    doc: "Hold TCP connections while the VM starts: PORT, or PORT:VMPORT when the VM listens on another port. While the VM is not ready, A/AAAA queries are answered at once with the hold address; jitsu listens there on PORT (also while the VM is off: a connection summons it), holds each connection until the VM is ready (within --start-timeout), then relays it to the VM's address and VMPORT. Open connections keep the VM up. Can be set more than once.",
  },
  {
    key: "hold_address",
    type: "ip",
    doc: "The address this VM's hold ports listen on and that queries are answered with while it is not ready (default: --hold-address, else -b).",
  },
  {
    key: "connect",
    type: "string",
    doc: "The host this VM lives on, in -c's form (qemu+ssh://kvm2/system, https://xen-pool-2, tcp://docker3:2376); default -c. jitsu keeps one connection per host, each with its own reconnection and events: a host that is down fails only its VMs. Only for the backends that connect (libvirt, xapi, docker).",
  },
];

/** What a group name may be: it shows in logs, /status and metrics labels. */
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** `PORT` or `PORT:VMPORT` (ports 1-65535). */
export function parseHoldPort(value: string): HoldPort {
  const m = /^(\d+)(?::(\d+))?$/.exec(value);
  if (m === null) throw new Error(`expected PORT or PORT:VMPORT, got '${value}'`);
  const port = Number(m[1]);
  const vmPort = m[2] === undefined ? port : Number(m[2]);
  for (const p of [port, vmPort]) {
    if (!Number.isInteger(p) || p < 1 || p > 65535)
      throw new Error(`expected ports from 1 to 65535, got '${value}'`);
  }
  return { port, vmPort };
}

export function parseReadyProbe(value: string): ReadyProbe {
  if (value.startsWith("http://")) {
    try {
      const url = new URL(value);
      if (url.port === "" && url.hostname === "") throw new Error("no host");
      return { kind: "http", url: url.toString() };
    } catch {
      throw new Error(`expected http://HOST:PORT/path, got '${value}'`);
    }
  }
  const m = /^tcp:(?:(\[[^\]]+\]|[^:]+):)?(\d+)$/.exec(value);
  if (m !== null) {
    const host = (m[1] ?? "127.0.0.1").replace(/^\[|\]$/g, "");
    return { kind: "tcp", host, port: parsePort(m[2]!) };
  }
  throw new Error(`expected tcp:PORT, tcp:HOST:PORT or http://HOST:PORT/path, got '${value}'`);
}

export interface BuildSpecOptions {
  /** The backend's own keys (name, uuid, kernel, ...). */
  readonly backendKeys: readonly KeySpec[];
  readonly backendName: string;
  /**
   * What the backend can do, checked on each VM built (a ConfigError): `ip`
   * omitted where it cannot discover addresses, for one. src/backends
   * `specOptions(factory)` gives its keys, name and this check together.
   */
  readonly check?: (spec: VmSpec) => void;
  /** Common keys this backend cannot honour (wait_for_key without xenstore): not listed as known. */
  readonly unsupportedKeys?: ReadonlySet<string>;
}

const knownKeyLists = new WeakMap<readonly KeySpec[], readonly KeySpec[]>();

/** The common keys plus a backend's own, computed once per backend. */
function knownKeys(backendKeys: readonly KeySpec[]): readonly KeySpec[] {
  let known = knownKeyLists.get(backendKeys);
  if (known === undefined) {
    known = [...COMMON_KEYS, ...backendKeys.filter((b) => !COMMON_KEYS.some((c) => c.key === b.key))];
    knownKeyLists.set(backendKeys, known);
  }
  return known;
}

const NONE: readonly never[] = Object.freeze([]);

/** Builds and validates one VmSpec. `source` names it in errors ("CONFIG #2"). */
export function buildVmSpec(pairs: readonly ConfigPair[], source: string, opts: BuildSpecOptions): VmSpec {
  // One pass over the pairs for the common keys (10,000 VMs at start-up: bench/).
  let name: string | undefined;
  let uuid: string | undefined;
  let waitForKey: string | undefined;
  const dnsText: string[] = [];
  let ipText: string[] | undefined;
  let readyText: string[] | undefined;
  let group: string | undefined;
  let afterText: string[] | undefined;
  let holdText: string[] | undefined;
  // Index loops, no destructuring: cold code (run once per VM) gets no iterator objects.
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i]!;
    const value = pair[1];
    switch (pair[0]) {
      case "name":
        name = value;
        break;
      case "uuid":
        uuid = value;
        break;
      case "dns":
        dnsText.push(value);
        break;
      case "ip":
        (ipText ??= []).push(value);
        break;
      case "ready":
        (readyText ??= []).push(value);
        break;
      case "wait_for_key":
        waitForKey = value;
        break;
      case "group":
        group = value;
        break;
      case "after":
        (afterText ??= []).push(value);
        break;
      case "hold":
        (holdText ??= []).push(value);
        break;
    }
  }
  const label = name ?? uuid ?? dnsText[0] ?? source;
  const options = new VmOptions(pairs, label);
  validate(options, knownKeys(opts.backendKeys), opts.backendName, opts.unsupportedKeys);

  const ips = ipText === undefined ? NONE : Object.freeze(ipText.map((v) => parseIp(v).address));
  const ready =
    readyText === undefined
      ? NONE
      : readyText.map((v) => {
          try {
            return parseReadyProbe(v);
          } catch (err) {
            throw new ConfigError((err as Error).message, { vm: label, key: "ready" });
          }
        });
  if (group !== undefined && !GROUP_NAME.test(group)) {
    throw new ConfigError(
      `expected a group name of letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit), got '${group}'`,
      { vm: label, key: "group" },
    );
  }
  if (afterText !== undefined && group === undefined) {
    throw new ConfigError(
      "after= orders the start of a group's members, but this VM has no group=; give it the group of the VM it starts after",
      { vm: label, key: "after" },
    );
  }
  const hold =
    holdText === undefined
      ? NONE
      : holdText.map((v) => {
          try {
            return parseHoldPort(v);
          } catch (err) {
            throw new ConfigError((err as Error).message, { vm: label, key: "hold" });
          }
        });
  for (let i = 0; i < hold.length; i++) {
    if (hold.findIndex((h) => h.port === hold[i]!.port) !== i)
      throw new ConfigError(`port ${hold[i]!.port} is given twice`, { vm: label, key: "hold" });
  }
  const holdAddress = options.str("hold_address");
  const spec: VmSpec = {
    label,
    name,
    uuid,
    dns: Object.freeze(dnsText.map(parseDnsName)),
    ips,
    responseDelay: options.float("response_delay"),
    waitForKey,
    useSynjitsu: options.bool("use_synjitsu") ?? false,
    ready,
    group,
    after: afterText === undefined ? NONE : Object.freeze(afterText),
    hold,
    holdAddress: holdAddress === undefined ? undefined : parseIp(holdAddress).address,
    connect: options.str("connect"),
    options,
  };
  opts.check?.(spec);
  return spec;
}

/**
 * The VMs `specs` describe, each once. Two specs with the same label (the same
 * `name`, else `uuid`) are one VM described twice: accepted, once, when they
 * are identical, an error naming the key otherwise (else one would silently
 * win, with the other's names answered with its addresses). A DNS name used by
 * two VMs is an error that names both.
 */
export function distinctVms(specs: readonly VmSpec[]): VmSpec[] {
  const byLabel = new Map<string, VmSpec>();
  const out: VmSpec[] = [];
  for (const spec of specs) {
    const first = byLabel.get(spec.label);
    if (first === undefined) {
      byLabel.set(spec.label, spec);
      out.push(spec);
      continue;
    }
    if (samePairs(first, spec)) continue;
    const key = spec.name !== undefined ? "name" : spec.uuid !== undefined ? "uuid" : "dns";
    throw new ConfigError(
      `another VM is configured with the same ${key} and different settings; give each VM its own ${key} (or describe it once)`,
      { vm: spec.label, key },
    );
  }
  const owner = new Map<string, string>();
  for (const spec of out) {
    for (const name of spec.dns) {
      const other = owner.get(name);
      if (other !== undefined) {
        throw new ConfigError(
          other === spec.label
            ? `DNS name '${name}' is given twice`
            : `DNS name '${name}' is already used by VM '${other}'`,
          { vm: spec.label, key: "dns" },
        );
      }
      owner.set(name, spec.label);
    }
  }
  return out;
}

/** Whether two specs say the same thing, key by key, in the same order. */
export function samePairs(a: VmSpec, b: VmSpec): boolean {
  const pa = a.options.pairs;
  const pb = b.options.pairs;
  return pa.length === pb.length && pa.every(([k, v], i) => pb[i]?.[0] === k && pb[i]?.[1] === v);
}
