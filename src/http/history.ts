/**
 * What the status page charts, kept in memory for the last hour: DNS queries
 * per second (one sample every `intervalMs`) and the cold starts (`vm.started`
 * events: when, how long, which VM). Each sample is also a `stats` event, with
 * the DNS totals and the VMs asked for since the one before, so the page
 * follows the counters without polling.
 */
import type { Clock, Timer } from "../clock/index.js";
import type { EventBus } from "../events/index.js";
import type { DnsCountersView, SummonerView } from "./view.js";

/** A sample every 5 s, an hour of them. */
export const HISTORY_INTERVAL_MS = 5000;
export const HISTORY_SPAN_MS = 3_600_000;
/** At most this many cold starts are kept (an hour of a VM a second). */
export const HISTORY_MAX_STARTS = 3600;

export interface StatsHistoryOptions {
  readonly bus: EventBus;
  readonly counters: DnsCountersView;
  readonly summoner: Pick<SummonerView, "status">;
  readonly clock: Clock;
  readonly intervalMs?: number;
}

/** GET /history. */
export interface HistoryBody {
  readonly intervalSeconds: number;
  /** `[time (ms since the epoch), queries per second over the interval before it]`, oldest first. */
  readonly queriesPerSecond: readonly (readonly [number, number])[];
  /** `[time, start duration in ms, VM]`, oldest first. */
  readonly starts: readonly (readonly [number, number, string])[];
}

export class StatsHistory {
  private readonly opts: StatsHistoryOptions;
  private readonly intervalMs: number;
  private readonly qps: [number, number][] = [];
  private readonly starts: [number, number, string][] = [];
  private lastQueries: number;
  private lastAt: number;
  /** Each VM's request total as of the last sample, to send only the ones that changed. */
  private readonly requestsSeen = new Map<string, number>();
  private timer: Timer | null = null;
  private readonly unsubscribe: () => void;

  constructor(opts: StatsHistoryOptions) {
    this.opts = opts;
    this.intervalMs = opts.intervalMs ?? HISTORY_INTERVAL_MS;
    this.lastQueries = totalQueries(opts.counters);
    this.lastAt = opts.clock.now();
    for (const vm of opts.summoner.status()) this.requestsSeen.set(vm.label, vm.totalRequests);
    this.unsubscribe = opts.bus.subscribe((event) => {
      if (event.type !== "vm.started" || event.how === "adopt") return;
      this.starts.push([Date.parse(event.time), event.durationMs, event.vm]);
      if (this.starts.length > HISTORY_MAX_STARTS) this.starts.shift();
    });
  }

  /** Samples every interval until close(). */
  start(): void {
    this.timer = this.opts.clock.setTimer(this.intervalMs, () => {
      this.sample();
      if (this.timer !== null) this.start();
    });
  }

  close(): void {
    this.timer?.cancel();
    this.timer = null;
    this.unsubscribe();
  }

  /** One sample: a point of the chart and a `stats` event. */
  sample(): void {
    const now = this.opts.clock.now();
    const queries = totalQueries(this.opts.counters);
    const seconds = Math.max(0.001, (now - this.lastAt) / 1000);
    const qps = Math.round(((queries - this.lastQueries) / seconds) * 100) / 100;
    this.lastQueries = queries;
    this.lastAt = now;
    this.qps.push([now, qps]);
    this.prune(now);
    const requests: [string, number, number | null][] = [];
    for (const vm of this.opts.summoner.status()) {
      if (this.requestsSeen.get(vm.label) !== vm.totalRequests) {
        this.requestsSeen.set(vm.label, vm.totalRequests);
        requests.push([vm.label, vm.totalRequests, vm.lastRequest]);
      }
    }
    this.opts.bus.emit({
      type: "stats",
      intervalSeconds: this.intervalMs / 1000,
      queriesPerSecond: qps,
      dns: dnsTotals(this.opts.counters),
      requests,
    });
  }

  body(): HistoryBody {
    this.prune(this.opts.clock.now());
    return { intervalSeconds: this.intervalMs / 1000, queriesPerSecond: this.qps, starts: this.starts };
  }

  private prune(now: number): void {
    const oldest = now - HISTORY_SPAN_MS;
    while (this.qps.length > 0 && this.qps[0]![0] < oldest) this.qps.shift();
    while (this.starts.length > 0 && this.starts[0]![0] < oldest) this.starts.shift();
  }
}

function totalQueries(counters: DnsCountersView): number {
  let sum = 0;
  for (const n of counters.queriesByType.values()) sum += n;
  return sum;
}

/** The DNS counters the status page shows (and /status carries under `dns.counters`). */
export function dnsTotals(counters: DnsCountersView): Record<string, number> {
  let refused = 0;
  for (const n of counters.refusedByReason.values()) refused += n;
  return {
    queries: totalQueries(counters),
    forwarded: counters.forwarded,
    forwardFailures: counters.forwardFailures,
    forwardCoalesced: counters.forwardCoalesced,
    holdAnswers: counters.holdAnswers,
    refused,
    malformed: counters.malformed,
    dropped: counters.dropped,
    truncated: counters.truncated,
    tcpConnections: counters.tcpConnections,
  };
}
