/**
 * DNS counters: plain numbers, and maps built when read, for the metrics
 * exporter. Counting on the hot path is an array increment (no hashing, no
 * allocation); the maps are built only when someone reads them.
 */
import { KNOWN_QTYPES, qtypeName, rcodeName } from "./wire.js";

/** Index of the "forwarded" result, after the 4096 extended rcodes (RFC 6891 §6.1.3). */
const FORWARDED = 4096;

/**
 * Why jitsu closed a DNS TCP connection (RFC 7766 §6.2.3): no message began
 * within the idle timeout (`idle`); a message took longer than it, or the
 * client did not read its answers (`slow`); the client had `--tcp-per-client`
 * connections open already (`per-client`); or the connection was the one idle
 * longest when a new one came in at the limit (`evicted`).
 */
export const TCP_CLOSE_REASONS = ["idle", "slow", "per-client", "evicted"] as const;
export type TcpCloseReason = (typeof TCP_CLOSE_REASONS)[number];

/** Upper bounds (seconds) of the forward-latency histogram: an upstream answer on a LAN to a timeout. */
export const FORWARD_LATENCY_BOUNDS: readonly number[] = Object.freeze([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
]);

/**
 * Query types are counted in one slot per type known by name and one "other"
 * slot (slot 0) for the rest: the type comes from the network, and each
 * distinct label value would be one more series in /metrics (65,536 QTYPEs
 * made 2.9 MB of text before).
 */
const TYPE_SLOT = new Uint8Array(65536);
const SLOT_NAMES: readonly string[] = ["other", ...KNOWN_QTYPES.map((t) => qtypeName(t))];
KNOWN_QTYPES.forEach((t, i) => (TYPE_SLOT[t] = i + 1));

/**
 * Why a query was answered REFUSED: the label values of
 * jitsu_dns_refused_total{reason}, indexed by `REFUSED`'s values.
 */
export const REFUSED_REASONS = [
  "recursion",
  "summon",
  "norec",
  "transfer",
  "forwarding_off",
  "summon-rate",
] as const;
export type RefusedReason = (typeof REFUSED_REASONS)[number];
export const REFUSED = {
  /** A query we would forward, from a client outside --allow-recursion. */
  recursion: 0,
  /** A cold VM asked for by a client outside --allow-summon. */
  summon: 1,
  /** A query we would forward that does not ask for recursion (RD clear). */
  norec: 2,
  /** AXFR / IXFR. */
  transfer: 3,
  /** Forwarding is off (-f 0.0.0.0) and the name is outside every managed zone (or not class IN). */
  forwarding_off: 4,
  /** A cold VM asked for by a client whose prefix is over --summon-rate. */
  "summon-rate": 5,
} as const satisfies Record<RefusedReason, number>;

/**
 * The counters as plain data (what a --workers worker sends its primary):
 * per query type and per result only the non-zero entries, as [index, count].
 */
export interface CountersSnapshot {
  /** [type slot (0 = other), count]. */
  readonly types: readonly (readonly [number, number])[];
  readonly results: readonly (readonly [number, number])[];
  readonly malformed: number;
  readonly dropped: number;
  readonly forwarded: number;
  readonly forwardCoalesced: number;
  readonly forwardMismatched: number;
  readonly forwardFailures: number;
  readonly holdAnswers: number;
  readonly truncated: number;
  readonly tcpConnections: number;
  /** REFUSED answers by reason, indexed as REFUSED_REASONS. */
  readonly refused: readonly number[];
  /** Per TCP_CLOSE_REASONS entry, in that order. */
  readonly tcpClosed: readonly number[];
  readonly latencyBuckets: readonly number[];
  readonly latencySum: number;
  readonly latencyCount: number;
}

export class DnsCounters {
  private readonly byType = new Float64Array(SLOT_NAMES.length);
  private readonly byRefused = new Float64Array(REFUSED_REASONS.length);
  private readonly byResult = new Float64Array(FORWARDED + 1);
  /** Packets that could be read up to the header but not further (answered FORMERR). */
  malformed = 0;
  /** Packets dropped without an answer: shorter than a header, or responses (QR=1); and UDP answers the kernel would not take. */
  dropped = 0;
  /** Queries sent upstream. */
  forwarded = 0;
  /** Forwarded queries that joined an identical upstream query in flight instead of sending their own. */
  forwardCoalesced = 0;
  /**
   * Datagrams on the forwarder's sockets (from the upstream's address and port)
   * that answer no query in flight there: a wrong ID, a wrong question (or case,
   * with 0x20), not a response, or a late reply. Spoofing attempts show up here.
   */
  forwardMismatched = 0;
  /** Forwarded queries no upstream answered in time (answered SERVFAIL). */
  forwardFailures = 0;
  /** A/AAAA answered with a VM's hold address because it was not ready (src/activator). */
  holdAnswers = 0;
  /** Sum and count of forward latencies in seconds, for a summary or histogram. */
  forwardLatencySum = 0;
  forwardLatencyCount = 0;
  /** The histogram's bounds, and per bucket (not cumulative; the last one above every bound) the count. */
  readonly forwardLatencyBounds = FORWARD_LATENCY_BOUNDS;
  readonly forwardLatencyBuckets = new Float64Array(FORWARD_LATENCY_BOUNDS.length + 1);
  /** Called with each forward latency in seconds (tests). */
  onForwardLatency: ((seconds: number) => void) | undefined = undefined;
  /** UDP answers that did not fit the client's buffer and were sent truncated (TC). */
  truncated = 0;
  /** TCP connections accepted. */
  tcpConnections = 0;
  /** TCP connections jitsu closed, per TCP_CLOSE_REASONS entry (those the client closed are not counted). */
  readonly tcpClosed = new Float64Array(TCP_CLOSE_REASONS.length);

  /** Queries by type mnemonic ("A", "AAAA", ..., "other" for every type not known by name), counted once decoded. */
  get queriesByType(): Map<string, number> {
    const out = new Map<string, number>();
    this.byType.forEach((n, slot) => {
      if (n > 0) out.set(SLOT_NAMES[slot]!, n);
    });
    return out;
  }

  /** REFUSED answers by reason, every reason present (0 included). */
  get refusedByReason(): Map<RefusedReason, number> {
    const out = new Map<RefusedReason, number>();
    REFUSED_REASONS.forEach((reason, i) => out.set(reason, this.byRefused[i]!));
    return out;
  }

  /** Answers by result: an rcode name ("NOERROR", "NXDOMAIN", ...) or "forwarded". */
  get queriesByResult(): Map<string, number> {
    const out = new Map<string, number>();
    this.byResult.forEach((n, r) => {
      if (n > 0) out.set(r === FORWARDED ? "forwarded" : rcodeName(r), n);
    });
    return out;
  }

  /** Every answer sent (all results). */
  get answered(): number {
    let sum = 0;
    for (const n of this.byResult) sum += n;
    return sum;
  }

  countType(qtype: number): void {
    const i = TYPE_SLOT[qtype & 0xffff]!;
    this.byType[i] = this.byType[i]! + 1;
  }

  /** One REFUSED answer, by reason (a `REFUSED` value). */
  countRefused(reason: number): void {
    this.byRefused[reason] = this.byRefused[reason]! + 1;
  }

  countRcode(rcode: number): void {
    const i = rcode & 0xfff;
    this.byResult[i] = this.byResult[i]! + 1;
  }

  /** TCP connections closed by jitsu, by reason: every reason present, 0 included. */
  get tcpClosedByReason(): Map<TcpCloseReason, number> {
    return new Map(TCP_CLOSE_REASONS.map((r, i) => [r, this.tcpClosed[i]!]));
  }

  countTcpClosed(reason: TcpCloseReason): void {
    const i = TCP_CLOSE_REASONS.indexOf(reason);
    this.tcpClosed[i] = this.tcpClosed[i]! + 1;
  }

  countForwarded(): void {
    this.byResult[FORWARDED] = this.byResult[FORWARDED]! + 1;
  }

  observeForwardLatency(seconds: number): void {
    this.forwardLatencySum += seconds;
    this.forwardLatencyCount += 1;
    const bounds = this.forwardLatencyBounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    this.forwardLatencyBuckets[i] = this.forwardLatencyBuckets[i]! + 1;
    this.onForwardLatency?.(seconds);
  }

  snapshot(): CountersSnapshot {
    const sparse = (a: Float64Array): [number, number][] => {
      const out: [number, number][] = [];
      for (let i = 0; i < a.length; i++) if (a[i]! !== 0) out.push([i, a[i]!]);
      return out;
    };
    return {
      types: sparse(this.byType),
      results: sparse(this.byResult),
      malformed: this.malformed,
      dropped: this.dropped,
      forwarded: this.forwarded,
      forwardCoalesced: this.forwardCoalesced,
      forwardMismatched: this.forwardMismatched,
      forwardFailures: this.forwardFailures,
      holdAnswers: this.holdAnswers,
      truncated: this.truncated,
      tcpConnections: this.tcpConnections,
      refused: [...this.byRefused],
      tcpClosed: [...this.tcpClosed],
      latencyBuckets: [...this.forwardLatencyBuckets],
      latencySum: this.forwardLatencySum,
      latencyCount: this.forwardLatencyCount,
    };
  }

  /** Adds (`sign` 1) or takes away (-1) a snapshot: the primary's sum over its workers. */
  addSnapshot(s: CountersSnapshot, sign: 1 | -1 = 1): void {
    for (const [i, n] of s.types) {
      if (i >= 0 && i < this.byType.length) this.byType[i] = this.byType[i]! + sign * n;
    }
    for (let i = 0; i < this.byRefused.length && i < s.refused.length; i++) {
      this.byRefused[i] = this.byRefused[i]! + sign * s.refused[i]!;
    }
    for (const [i, n] of s.results) {
      if (i >= 0 && i < this.byResult.length) this.byResult[i] = this.byResult[i]! + sign * n;
    }
    this.malformed += sign * s.malformed;
    this.dropped += sign * s.dropped;
    this.forwarded += sign * s.forwarded;
    this.forwardCoalesced += sign * s.forwardCoalesced;
    this.forwardMismatched += sign * s.forwardMismatched;
    this.forwardFailures += sign * s.forwardFailures;
    this.holdAnswers += sign * s.holdAnswers;
    this.truncated += sign * s.truncated;
    this.tcpConnections += sign * s.tcpConnections;
    for (let i = 0; i < this.tcpClosed.length && i < s.tcpClosed.length; i++) {
      this.tcpClosed[i] = this.tcpClosed[i]! + sign * s.tcpClosed[i]!;
    }
    const buckets = this.forwardLatencyBuckets;
    for (let i = 0; i < buckets.length && i < s.latencyBuckets.length; i++) {
      buckets[i] = buckets[i]! + sign * s.latencyBuckets[i]!;
    }
    this.forwardLatencySum += sign * s.latencySum;
    this.forwardLatencyCount += sign * s.latencyCount;
  }
}
