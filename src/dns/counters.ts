/**
 * DNS counters: plain numbers and maps, read by the metrics exporter.
 * Incrementing allocates nothing for the common query types and rcodes.
 */
export class DnsCounters {
  /** Queries by type mnemonic ("A", "AAAA", "TYPE65"...), counted once decoded. */
  readonly queriesByType = new Map<string, number>();
  /** Answers by result: an rcode name ("NOERROR", "NXDOMAIN", ...) or "forwarded". */
  readonly queriesByResult = new Map<string, number>();
  /** Packets that could be read up to the header but not further (answered FORMERR). */
  malformed = 0;
  /** Packets dropped without an answer: shorter than a header, or responses (QR=1). */
  dropped = 0;
  /** Queries sent upstream. */
  forwarded = 0;
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

  countType(name: string): void {
    this.queriesByType.set(name, (this.queriesByType.get(name) ?? 0) + 1);
  }

  countResult(name: string): void {
    this.queriesByResult.set(name, (this.queriesByResult.get(name) ?? 0) + 1);
  }

  observeForwardLatency(seconds: number): void {
    this.forwardLatencySum += seconds;
    this.forwardLatencyCount += 1;
    this.onForwardLatency?.(seconds);
  }
}
