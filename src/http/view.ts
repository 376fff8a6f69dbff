/**
 * What the HTTP endpoint needs from the summoner and the DNS server. The real
 * Summoner and DnsServer.counters satisfy these shapes.
 */
export interface VmStatusView {
  readonly label: string;
  readonly uuid: string | undefined;
  readonly name: string | undefined;
  readonly dns: readonly string[];
  readonly ips: readonly string[];
  readonly state: string;
  readonly backendRef: string;
  readonly responseDelay: number;
  readonly useSynjitsu: boolean;
  readonly startedAt: number | null;
  readonly totalStarts: number;
  readonly totalRequests: number;
  readonly lastRequest: number | null;
  readonly stopMode: string;
  readonly lastError: string | null;
  /** Failed starts in a row; absent in views without it. */
  readonly failures?: number;
  /** When a failed VM may be tried again (ms since the epoch), or null. */
  readonly nextTryAt?: number | null;
  /** Given up on after --max-failures failed starts. */
  readonly givenUp?: boolean;
  readonly ttlSeconds: number;
  /** Its group (`group=`), or null; absent in summoners without groups. */
  readonly group?: string | null;
  /** The members of its group it starts after (`after=`). */
  readonly after?: readonly string[];
  /** When the state last changed (ms since the epoch). */
  readonly stateSince?: number | null;
  /** A ready VM's earliest idle stop (ms since the epoch); null otherwise. */
  readonly idleStopAt?: number | null;
  /** The backend's name, and where the VM runs when it is not where `-c` says (a per-VM URI). */
  readonly backend?: string;
  readonly host?: string | null;
  /** Connections held or relayed to it now (absent in summoners without hold ports). */
  readonly openConnections?: number;
  readonly lastConnection?: number | null;
}

/** A group (`group=`) as the summoner reports it. */
export interface GroupStatusView {
  readonly name: string;
  /** starting, stopping, the members' common state (ready, off, ...), failed or partial. */
  readonly state: string;
  /** Member labels in start order. */
  readonly members: readonly string[];
  /** Per member: the members it starts after. */
  readonly after: Readonly<Record<string, readonly string[]>>;
  /** The last query for any member (ms since the epoch), or null. */
  readonly lastRequest: number | null;
  readonly lastError: string | null;
}

/** Admission control (--max-starting, --max-running, --summon-rate) as the summoner reports it. */
export interface AdmissionView {
  /** The limits; null for none. */
  readonly maxStarting: number | null;
  readonly maxRunning: number | null;
  readonly summonRate: number | null;
  readonly starting: number;
  readonly up: number;
  /** Labels of the VMs waiting to start, first in line first. */
  readonly queued: readonly string[];
  readonly evictions: number;
  readonly refused: number;
}

/** The state store's writes (--persistdb): failing on a full disk or a read-only file. */
export interface StoreHealthView {
  readonly ok: boolean;
  readonly failedWrites: number;
  readonly failingSince: number | null;
  readonly lastError: string | null;
}

/** /status "shared" (--etcd): where the state is shared, and how that stands now. */
export interface SharedView {
  readonly store: string;
  readonly endpoints: readonly string[];
  readonly prefix: string;
  /** This instance's name in etcd. */
  readonly instance: string;
  /** Whether this instance sees the others now. */
  readonly connected: boolean;
  /** Whether this instance is the elected reaper (stops idle VMs) now. */
  readonly reaper: boolean;
  /** When etcd last answered (ms since the epoch). */
  readonly lastAnswer: number;
}

export interface SummonerView {
  status(): readonly VmStatusView[];
  /** The state store's writes; absent in summoners without a store. */
  storeHealth?(): StoreHealthView;
  /** Admission control; absent in summoners without it. */
  admissionStatus?(): AdmissionView;
  /** Groups; absent in summoners without them. */
  groupStatus?(): readonly GroupStatusView[];
  /** --etcd: the state shared with the other instances; null (or absent) for an instance alone. */
  sharedStatus?(): SharedView | null;
  startVm(label: string): Promise<void>;
  stopVm(label: string): Promise<void>;
  onChange(listener: () => void): void;
  onStarted(listener: (label: string) => void): void;
}

export interface DnsCountersView {
  readonly queriesByType: ReadonlyMap<string, number>;
  /** REFUSED answers by reason (recursion, summon, ...), every reason present. */
  readonly refusedByReason: ReadonlyMap<string, number>;
  readonly queriesByResult: ReadonlyMap<string, number>;
  readonly malformed: number;
  readonly dropped: number;
  readonly forwarded: number;
  readonly forwardFailures: number;
  readonly forwardCoalesced: number;
  readonly forwardMismatched: number;
  /** A/AAAA answered with a hold address (the VM was not ready; src/activator). */
  readonly holdAnswers: number;
  readonly truncated: number;
  readonly tcpConnections: number;
  /** TCP connections jitsu closed, by reason (idle, slow, per-client, evicted: a fixed set). */
  readonly tcpClosedByReason: ReadonlyMap<string, number>;
  /** Forward latencies: the histogram's upper bounds in seconds, the count per bucket (not cumulative, one more than bounds), sum and count. */
  readonly forwardLatencyBounds: readonly number[];
  readonly forwardLatencyBuckets: ArrayLike<number>;
  readonly forwardLatencySum: number;
  readonly forwardLatencyCount: number;
}

/**
 * /status "dns": who may recurse and summon (--allow-recursion, --allow-summon),
 * the REFUSED counts, and the forwarder's counts (null with forwarding off).
 */
export interface DnsStatusView {
  readonly allowRecursion: readonly string[];
  readonly allowSummon: readonly string[];
  readonly refused: Readonly<Record<string, number>>;
  readonly forward: {
    readonly queries: number;
    readonly failures: number;
    readonly coalesced: number;
    readonly mismatched: number;
  } | null;
}

/** One backend connection (-c's host, or a VM's connect= host: src/backends/hosts HostStatus). */
export interface HostStatusView {
  readonly backend: string;
  /** Its URI, password hidden. */
  readonly uri: string;
  /** -c's host. */
  readonly default: boolean;
  /** connecting (never answered yet), up or down. */
  readonly state: string;
  /** When the state last changed (ms since the epoch). */
  readonly since: number;
  readonly lastError: string | null;
  /** The configured VMs that live there. */
  readonly vms: number;
}

/** Held connections (src/activator's Activator satisfies it). */
export interface HoldView {
  status(): HoldStatusView;
}

export interface HoldStatusView {
  readonly listeners: readonly {
    readonly vm: string;
    readonly address: string;
    readonly port: number;
    readonly vmPort: number;
  }[];
  readonly held: number;
  readonly relaying: number;
  readonly vms: Readonly<Record<string, { readonly held: number; readonly relaying: number }>>;
  readonly accepted: number;
  readonly splices: number;
  readonly bytesToVm: number;
  readonly bytesFromVm: number;
  readonly timedOut: number;
  readonly failed: number;
  readonly refused: number;
  readonly relayErrors: number;
  readonly holdSeconds: {
    readonly bounds: readonly number[];
    readonly buckets: readonly number[];
    readonly sum: number;
    readonly count: number;
  };
}
