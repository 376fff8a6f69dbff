/**
 * DNS counters: plain numbers, and maps built when read, for the metrics
 * exporter. Counting on the hot path is an array increment (no hashing, no
 * allocation); the maps are built only when someone reads them.
 */
import { qtypeName, rcodeName } from "./wire.js";

/** Index of the "forwarded" result, after the 4096 extended rcodes (RFC 6891 §6.1.3). */
const FORWARDED = 4096;

export class DnsCounters {
  private readonly byType = new Float64Array(65536);
  private readonly byResult = new Float64Array(FORWARDED + 1);
  /** Packets that could be read up to the header but not further (answered FORMERR). */
  malformed = 0;
  /** Packets dropped without an answer: shorter than a header, or responses (QR=1). */
  dropped = 0;
  /** Queries sent upstream. */
  forwarded = 0;
  /** Forwarded queries that joined an identical upstream query in flight instead of sending their own. */
  forwardCoalesced = 0;
  /** Forwarded queries no upstream answered in time (answered SERVFAIL). */
  forwardFailures = 0;
  /** Sum and count of forward latencies in seconds, for a summary or histogram. */
  forwardLatencySum = 0;
  forwardLatencyCount = 0;
  /** Called with each forward latency in seconds (e.g. prom-client Histogram.observe). */
  onForwardLatency: ((seconds: number) => void) | undefined = undefined;
  /** UDP answers that did not fit the client's buffer and were sent truncated (TC). */
  truncated = 0;
  /** TCP connections accepted. */
  tcpConnections = 0;

  /** Queries by type mnemonic ("A", "AAAA", "TYPE65534"...), counted once decoded. */
  get queriesByType(): Map<string, number> {
    const out = new Map<string, number>();
    this.byType.forEach((n, t) => {
      if (n > 0) out.set(qtypeName(t), n);
    });
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
    const i = qtype & 0xffff;
    this.byType[i] = this.byType[i]! + 1;
  }

  countRcode(rcode: number): void {
    const i = rcode & 0xfff;
    this.byResult[i] = this.byResult[i]! + 1;
  }

  countForwarded(): void {
    this.byResult[FORWARDED] = this.byResult[FORWARDED]! + 1;
  }

  observeForwardLatency(seconds: number): void {
    this.forwardLatencySum += seconds;
    this.forwardLatencyCount += 1;
    this.onForwardLatency?.(seconds);
  }
}
