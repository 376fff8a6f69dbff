/**
 * Prometheus metrics (prom-client, a registry of our own). DNS counters and
 * per-VM totals are read at scrape time, so the DNS hot path only bumps plain
 * numbers; summons, start/readiness durations and stops are observed from the
 * summoner's change and started events (never from the hot path).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from "prom-client";
import type { Clock } from "../clock/index.js";
import type {
  AdmissionView,
  DnsCountersView,
  HoldView,
  HostStatusView,
  SummonerView,
  VmStatusView,
} from "./view.js";

/** Seconds: from a warm unpause (ms) to a cold VM boot with probes (minutes). */
const START_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120];

const STATES = ["off", "starting", "ready", "stopping", "suspended", "paused", "failed"] as const;

export interface MetricsOptions {
  readonly summoner: SummonerView;
  readonly counters: DnsCountersView | null;
  readonly clock: Clock;
  /** --workers N: DNS answers sent by each worker (by index), for a per-worker counter. */
  readonly answersByWorker?: (() => ReadonlyMap<string, number>) | undefined;
  /** Held connections (hold= ports), if any VM may have them. */
  readonly hold?: HoldView | undefined;
  /** The backend's connections, one per host (a backend that connects). */
  readonly hosts?: (() => readonly HostStatusView[]) | undefined;
  /** Also export Node's process metrics (CPU, memory, event loop lag); default true. */
  readonly processMetrics?: boolean;
}

export class JitsuMetrics {
  readonly registry = new Registry();
  private readonly summoner: SummonerView;
  private readonly clock: Clock;
  /** Per VM: the state last seen and when its current start began. */
  private readonly seen = new Map<string, { state: string; startingSince: number | null }>();
  private readonly summons: Counter<"vm" | "result">;
  private readonly startDuration: Histogram<"vm">;
  private readonly readyDuration: Histogram<"vm">;
  private readonly stops: Counter<"vm" | "mode">;

  constructor(opts: MetricsOptions) {
    this.summoner = opts.summoner;
    this.clock = opts.clock;
    const registers = [this.registry];
    const counters = opts.counters;
    const summoner = opts.summoner;
    if (opts.processMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: "jitsu_" });
      dropTotalGauges(this.registry);
    }

    // ---- DNS, read from DnsServer.counters at scrape time ----
    const fromMap = (
      name: string,
      help: string,
      label: string,
      read: (c: DnsCountersView) => ReadonlyMap<string, number>,
    ) =>
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          if (counters === null) return;
          this.reset();
          for (const [key, n] of read(counters)) this.inc({ [label]: key }, n);
        },
      });
    fromMap(
      "jitsu_dns_queries_total",
      "DNS queries received, by query type.",
      "type",
      (c) => c.queriesByType,
    );
    fromMap(
      "jitsu_dns_refused_total",
      "DNS queries answered REFUSED, by reason: recursion (client outside --allow-recursion), summon (outside --allow-summon), norec (RD clear on a name we would forward), transfer (AXFR/IXFR), forwarding_off, summon-rate (the client's prefix was over --summon-rate for a VM that was not ready).",
      "reason",
      (c) => c.refusedByReason,
    );
    fromMap(
      "jitsu_dns_answers_total",
      "DNS answers sent, by result: the rcode (NOERROR, NXDOMAIN, SERVFAIL, ...) or 'forwarded'.",
      "result",
      (c) => c.queriesByResult,
    );
    const plain = (name: string, help: string, read: (c: DnsCountersView) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          if (counters === null) return;
          this.reset();
          this.inc(read(counters));
        },
      });
    plain("jitsu_dns_malformed_total", "Malformed DNS packets (answered FORMERR).", (c) => c.malformed);
    plain(
      "jitsu_dns_dropped_total",
      "DNS packets dropped without an answer (too short, or responses), and UDP answers the kernel would not take (send buffer full).",
      (c) => c.dropped,
    );
    plain("jitsu_dns_forwarded_total", "DNS queries forwarded upstream.", (c) => c.forwarded);
    plain(
      "jitsu_dns_forward_failures_total",
      "Forwarded DNS queries that no upstream answered in time (answered SERVFAIL).",
      (c) => c.forwardFailures,
    );
    plain(
      "jitsu_dns_forward_coalesced_total",
      "Forwarded DNS queries that shared an identical upstream query already in flight.",
      (c) => c.forwardCoalesced,
    );
    plain(
      "jitsu_dns_forward_mismatched_total",
      "Datagrams from an upstream on the forwarder's sockets that answered no query in flight there (wrong ID, question or 0x20 case, or too late): ignored. Spoofing attempts count here; forged replies from another address or port are dropped by the kernel (its Udp NoPorts counter).",
      (c) => c.forwardMismatched,
    );
    plain(
      "jitsu_dns_hold_answers_total",
      "A/AAAA queries answered at once with a hold address because the VM was not ready (hold= ports).",
      (c) => c.holdAnswers,
    );
    plain("jitsu_dns_truncated_total", "UDP answers sent truncated (TC set).", (c) => c.truncated);
    plain("jitsu_dns_tcp_connections_total", "DNS TCP connections accepted.", (c) => c.tcpConnections);
    fromMap(
      "jitsu_dns_tcp_closed_total",
      "DNS TCP connections jitsu closed, by reason: idle (no query within the idle timeout), slow (a query not completed, or answers not read, within it), per-client (over --tcp-per-client), evicted (idle longest when a new connection came at the limit).",
      "reason",
      (c) => c.tcpClosedByReason,
    );
    // Read from the counters' buckets at scrape time (not observed one by one), so the
    // buckets of --workers workers add up to one histogram in the primary.
    if (counters !== null) this.registry.registerMetric(forwardLatencyHistogram(counters));
    const byWorker = opts.answersByWorker;
    if (byWorker !== undefined) {
      new Counter({
        name: "jitsu_dns_worker_answers_total",
        help: "DNS answers sent by each worker process (--workers), as of its last report.",
        labelNames: ["worker"],
        registers,
        collect() {
          this.reset();
          for (const [worker, n] of byWorker()) this.inc({ worker }, n);
        },
      });
    }

    // ---- held connections, read from the Activator's status() at scrape time ----
    if (opts.hold !== undefined) registerHoldMetrics(this.registry, opts.hold);

    // ---- VMs: totals and states read from Summoner.status() at scrape time ----
    new Gauge({
      name: "jitsu_vm_state",
      help: "1 for the state each VM is in, 0 for the others.",
      labelNames: ["vm", "state"],
      registers,
      collect() {
        this.reset();
        for (const vm of summoner.status()) {
          for (const state of STATES) this.set({ vm: vm.label, state }, vm.state === state ? 1 : 0);
        }
      },
    });
    const perVm = (name: string, help: string, read: (vm: VmStatusView) => number) =>
      new Counter({
        name,
        help,
        labelNames: ["vm"],
        registers,
        collect() {
          this.reset();
          for (const vm of summoner.status()) this.inc({ vm: vm.label }, read(vm));
        },
      });
    perVm(
      "jitsu_vm_requests_total",
      "DNS requests for each VM's names (kept across restarts with --persistdb).",
      (vm) => vm.totalRequests,
    );
    perVm(
      "jitsu_vm_starts_total",
      "Times each VM was started, resumed or unpaused by jitsu (kept across restarts with --persistdb).",
      (vm) => vm.totalStarts,
    );
    new Gauge({
      name: "jitsu_vm_last_request_timestamp_seconds",
      help: "When each VM was last requested (Unix time; absent if never).",
      labelNames: ["vm"],
      registers,
      collect() {
        this.reset();
        for (const vm of summoner.status()) {
          if (vm.lastRequest !== null) this.set({ vm: vm.label }, vm.lastRequest / 1000);
        }
      },
    });

    // ---- admission control, read from Summoner.admissionStatus() at scrape time ----
    const admission = summoner.admissionStatus?.bind(summoner);
    if (admission !== undefined) {
      const gauge = (name: string, help: string, read: (a: AdmissionView) => number) =>
        new Gauge({
          name,
          help,
          registers,
          collect() {
            this.set(read(admission()));
          },
        });
      gauge(
        "jitsu_summons_queued",
        "Summons waiting to start (--max-starting, --max-running).",
        (a) => a.queued.length,
      );
      gauge("jitsu_summons_starting", "VMs starting, resuming or unpausing now.", (a) => a.starting);
      gauge(
        "jitsu_vms_up",
        "VMs up as --max-running counts them (starting, ready, stopping, failed but still running).",
        (a) => a.up,
      );
      new Counter({
        name: "jitsu_evictions_total",
        help: "Ready VMs idle past their TTL (or failed ones still running) stopped to make room for another (--max-running).",
        registers,
        collect() {
          this.reset();
          this.inc(admission().evictions);
        },
      });
    }

    // ---- --etcd: the shared state, read from Summoner.sharedStatus() at scrape time ----
    const shared = summoner.sharedStatus?.bind(summoner);
    if (shared !== undefined && shared() !== null) {
      new Gauge({
        name: "jitsu_etcd_connected",
        help: "1 while this instance sees the others through etcd (an answer within 3 s, the watch running), else 0.",
        registers,
        collect() {
          this.set(shared()?.connected === true ? 1 : 0);
        },
      });
      new Gauge({
        name: "jitsu_etcd_reaper",
        help: "1 while this instance is the elected reaper (the one instance that stops idle VMs), else 0.",
        registers,
        collect() {
          this.set(shared()?.reaper === true ? 1 : 0);
        },
      });
    }

    // ---- the backend's connections, one per host (-c's and each connect=), read at scrape time ----
    const hosts = opts.hosts;
    if (hosts !== undefined) {
      new Gauge({
        name: "jitsu_backend_connection_up",
        help: "1 while the backend's connection to this host answers (the last call or probe got an answer), else 0; one per host: -c's and each VM's connect=.",
        labelNames: ["backend", "uri"],
        registers,
        collect() {
          this.reset();
          for (const h of hosts()) this.set({ backend: h.backend, uri: h.uri }, h.state === "up" ? 1 : 0);
        },
      });
    }

    // ---- VMs: observed from the summoner's events ----
    this.summons = new Counter({
      name: "jitsu_vm_summons_total",
      help: "Starts (start, resume, unpause or adoption) jitsu began for each VM, by result: ready or failed.",
      labelNames: ["vm", "result"],
      registers,
    });
    this.startDuration = new Histogram({
      name: "jitsu_vm_start_duration_seconds",
      help: "Time for the backend's start, resume or unpause operation to return.",
      labelNames: ["vm"],
      buckets: START_BUCKETS,
      registers,
    });
    this.readyDuration = new Histogram({
      name: "jitsu_vm_ready_duration_seconds",
      help: "Time from the start of a summon to the VM being ready (backend operation, wait_for_key, response delay, probes).",
      labelNames: ["vm"],
      buckets: START_BUCKETS,
      registers,
    });
    this.stops = new Counter({
      name: "jitsu_vm_stops_total",
      help: "Stops jitsu began, by VM and stop mode.",
      labelNames: ["vm", "mode"],
      registers,
    });
    for (const vm of summoner.status()) this.seen.set(vm.label, { state: vm.state, startingSince: null });
    summoner.onChange(() => this.observe());
    summoner.onStarted((label) => {
      const since = this.seen.get(label)?.startingSince;
      if (since !== null && since !== undefined)
        this.startDuration.observe({ vm: label }, (this.clock.now() - since) / 1000);
    });
  }

  /** The Prometheus text exposition. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Diffs every VM's state against the last one seen. */
  private observe(): void {
    const now = this.clock.now();
    const present = new Set<string>();
    for (const vm of this.summoner.status()) {
      present.add(vm.label);
      const before = this.seen.get(vm.label);
      const entry = before ?? { state: vm.state, startingSince: null };
      if (before === undefined) this.seen.set(vm.label, entry);
      if (before !== undefined && before.state === vm.state) continue;
      switch (vm.state) {
        case "starting":
          entry.startingSince = now;
          break;
        case "ready":
          if (entry.startingSince !== null) {
            this.summons.inc({ vm: vm.label, result: "ready" });
            this.readyDuration.observe({ vm: vm.label }, (now - entry.startingSince) / 1000);
          }
          entry.startingSince = null;
          break;
        case "failed":
          if (entry.startingSince !== null) this.summons.inc({ vm: vm.label, result: "failed" });
          entry.startingSince = null;
          break;
        case "stopping":
          this.stops.inc({ vm: vm.label, mode: vm.stopMode });
          entry.startingSince = null;
          break;
        default:
          entry.startingSince = null;
      }
      entry.state = vm.state;
    }
    for (const label of this.seen.keys()) if (!present.has(label)) this.seen.delete(label);
  }
}

/**
 * prom-client's defaults include gauges named like counters
 * (`nodejs_active_handles_total`, the sum of `nodejs_active_handles{type}`),
 * which `promtool check metrics` rejects: a `_total` suffix is for counters
 * (OpenMetrics). Each such sum is left out; its per-type gauge stays.
 */
function dropTotalGauges(registry: Registry): void {
  for (const metric of registry.getMetricsAsArray()) {
    if (!(metric instanceof Counter) && metric.name.endsWith("_total"))
      registry.removeSingleMetric(metric.name);
  }
}

/**
 * jitsu_dns_forward_latency_seconds, from the counters' bucket counts: the same
 * text prom-client's Histogram prints (cumulative `le` buckets, +Inf, _sum,
 * _count), built at scrape time. prom-client's registry takes any object with
 * a name, help, type and get(); its Metric type names only its own classes.
 */
function registerHoldMetrics(registry: Registry, hold: HoldView): void {
  const registers = [registry];
  new Gauge({
    name: "jitsu_hold_connections",
    help: "Connections on hold ports now, by state: held (waiting for the VM to be ready) or relaying (spliced to the VM).",
    labelNames: ["state"],
    registers,
    collect() {
      const s = hold.status();
      this.set({ state: "held" }, s.held);
      this.set({ state: "relaying" }, s.relaying);
    },
  });
  const counter = (name: string, help: string, read: (s: ReturnType<HoldView["status"]>) => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read(hold.status()));
      },
    });
  counter("jitsu_hold_accepted_total", "Connections accepted on hold ports.", (s) => s.accepted);
  counter("jitsu_hold_splices_total", "Connections relayed (spliced) to their VM.", (s) => s.splices);
  counter(
    "jitsu_hold_relay_errors_total",
    "Relays that ended with an error (a reset or a failed write on either side).",
    (s) => s.relayErrors,
  );
  new Counter({
    name: "jitsu_hold_bytes_total",
    help: "Bytes relayed through hold ports, by direction (to_vm: read from clients; from_vm: read from VMs).",
    labelNames: ["direction"],
    registers,
    collect() {
      const s = hold.status();
      this.reset();
      this.inc({ direction: "to_vm" }, s.bytesToVm);
      this.inc({ direction: "from_vm" }, s.bytesFromVm);
    },
  });
  new Counter({
    name: "jitsu_hold_closed_total",
    help: "Connections on hold ports reset without being relayed, by reason: timeout (the VM was not ready within --start-timeout), failed (its start failed, or it refused the connection), refused (the client may not start it: --allow-summon, --summon-rate).",
    labelNames: ["reason"],
    registers,
    collect() {
      const s = hold.status();
      this.reset();
      this.inc({ reason: "timeout" }, s.timedOut);
      this.inc({ reason: "failed" }, s.failed);
      this.inc({ reason: "refused" }, s.refused);
    },
  });
  const name = "jitsu_hold_wait_seconds";
  const help = "How long connections were held before being relayed to their VM (or reset).";
  registry.registerMetric({
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    get() {
      const h = hold.status().holdSeconds;
      const values: { labels: { le?: number | string }; value: number; metricName: string }[] = [];
      let cumulative = 0;
      for (let i = 0; i <= h.bounds.length; i++) {
        cumulative += h.buckets[i] ?? 0;
        values.push({
          labels: { le: i < h.bounds.length ? h.bounds[i]! : "+Inf" },
          value: cumulative,
          metricName: `${name}_bucket`,
        });
      }
      values.push({ labels: {}, value: h.sum, metricName: `${name}_sum` });
      values.push({ labels: {}, value: h.count, metricName: `${name}_count` });
      return Promise.resolve({ name, help, type: "histogram", values, aggregator: "sum" });
    },
  } as unknown as Metric);
}

function forwardLatencyHistogram(counters: DnsCountersView): Metric {
  const name = "jitsu_dns_forward_latency_seconds";
  const help = "Time from forwarding a query upstream to its answer.";
  const metric = {
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    get() {
      const bounds = counters.forwardLatencyBounds;
      const buckets = counters.forwardLatencyBuckets;
      const values: { labels: { le?: number | string }; value: number; metricName: string }[] = [];
      let cumulative = 0;
      for (let i = 0; i <= bounds.length; i++) {
        cumulative += buckets[i] ?? 0;
        values.push({
          labels: { le: i < bounds.length ? bounds[i]! : "+Inf" },
          value: cumulative,
          metricName: `${name}_bucket`,
        });
      }
      values.push({ labels: {}, value: counters.forwardLatencySum, metricName: `${name}_sum` });
      values.push({ labels: {}, value: counters.forwardLatencyCount, metricName: `${name}_count` });
      return Promise.resolve({ name, help, type: "histogram", values, aggregator: "sum" });
    },
  };
  return metric as unknown as Metric;
}
