/**
 * The primary's side of --workers N: forks the DNS workers (node:cluster),
 * keeps their copy of the ready VMs current, answers their summons with the
 * real Summoner, applies the requests they answered from memory, sums their
 * DNS counters, sends them reloaded zones, replaces a worker that dies, and
 * closes them first at shutdown. The primary itself serves no DNS.
 */
import cluster, { type Worker } from "node:cluster";
import { fileURLToPath } from "node:url";
import { DnsCounters, LocalClientSlots, type CountersSnapshot, type ZoneVm } from "../dns/index.js";
import { ListenError, SummonRefusedError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import type { Summoner } from "../summoner/index.js";
import {
  parseToPrimary,
  type ReadyEntry,
  type ToPrimary,
  type ToWorker,
  type WorkerSettings,
} from "./protocol.js";

/** dist/src/cluster/worker-main.js, next to this file once compiled. */
const WORKER_ENTRY = fileURLToPath(new URL("./worker-main.js", import.meta.url));

/** How long a flush (before a reaper pass or a scrape) waits for each worker. */
const FLUSH_TIMEOUT_MS = 1000;
/** A dead worker is replaced at most once a second, and given up on once it was replaced 5 times within a minute. */
const RESTART = { minIntervalMs: 1000, limit: 5, windowMs: 60_000 };

export interface ClusterOptions extends WorkerSettings {
  readonly workers: number;
  readonly summoner: Summoner;
  readonly log: Logger;
  /** How long close() lets a worker finish its queries in flight before killing it. */
  readonly closeTimeoutMs: number;
  /** Replacing dead workers (tests shorten it): at most one start per minIntervalMs, none after `limit` within windowMs. */
  readonly restart?: { readonly minIntervalMs: number; readonly limit: number; readonly windowMs: number };
  /** Where the workers' counts are summed (default: counters of its own); the CLI makes them first, for observers that start before DNS. */
  readonly counters?: DnsCounters;
}

interface Slot {
  /** 1-based; a replacement takes the dead worker's index. */
  readonly index: number;
  worker: Worker | null;
  /** Sent init: gets every change of the ready map from now on. */
  inited: boolean;
  listening: boolean;
  /** While starting: settles when the worker listens or fails to. */
  up: { resolve(port: number): void; reject(err: Error): void } | null;
  /** Flushes waiting for this worker's counts, by id. */
  readonly flushes: Map<number, () => void>;
  /** DNS answers by all the workers this slot has had (for the per-worker metric). */
  answered: number;
  /** When replacements were started, for the back-off and the limit. */
  restarts: number[];
  /** The TCP connections per client its worker holds (given back if it dies). */
  tcpHeld: LocalClientSlots;
  restartTimer: ReturnType<typeof setTimeout> | null;
}

export class ClusterPrimary {
  /** The sum of every worker's DNS counters (dead workers' last report included). */
  readonly counters: DnsCounters;
  private readonly opts: ClusterOptions;
  private readonly log: Logger;
  private readonly slots: Slot[] = [];
  /** The ready map as last sent to the workers (the Summoner's own address arrays). */
  private sent: Map<string, readonly string[]>;
  /** VMs withheld from the workers while an eviction is decided (withhold): no push gives them back meanwhile. */
  private readonly withheld = new Set<string>();
  private zone: ZoneVm[];
  private localnets: readonly string[];
  private pushScheduled = false;
  private nextFlushId = 1;
  private boundPort: number;
  private closing = false;
  /** --tcp-per-client over every worker. */
  private readonly tcpSlots: LocalClientSlots;
  /** Each worker's last counters, to turn its totals into changes of the sum. */
  private readonly lastCounters = new WeakMap<Worker, CountersSnapshot>();

  private constructor(opts: ClusterOptions) {
    this.opts = opts;
    this.counters = opts.counters ?? new DnsCounters();
    this.log = opts.log;
    this.boundPort = opts.port;
    this.zone = plainZone(opts.zone);
    this.localnets = opts.localnets;
    this.tcpSlots = new LocalClientSlots(opts.tcpPerClient);
    this.sent = opts.summoner.readyAddresses();
    for (let i = 1; i <= opts.workers; i++) {
      this.slots.push({
        index: i,
        worker: null,
        inited: false,
        listening: false,
        up: null,
        flushes: new Map(),
        answered: 0,
        restarts: [],
        restartTimer: null,
        tcpHeld: new LocalClientSlots(0),
      });
    }
  }

  /** Forks the workers and resolves once every one listens; rejects (all killed) if one cannot. */
  static async start(opts: ClusterOptions): Promise<ClusterPrimary> {
    const p = new ClusterPrimary(opts);
    cluster.setupPrimary({ exec: WORKER_ENTRY, args: [], execArgv: [], silent: false });
    opts.summoner.onChange(() => p.scheduleReadyPush());
    try {
      // With -l 0, every worker binds port 0 too: node:cluster shares one handle per
      // address and requested port, so they all get the port the first bind picked.
      const ports = await Promise.all(p.slots.map((slot) => p.fork(slot)));
      p.boundPort = ports[0]!;
      if (ports.some((port) => port !== p.boundPort)) {
        throw new Error(`the workers listen on different ports (${ports.join(", ")})`);
      }
    } catch (err) {
      p.closing = true;
      await p.killAll();
      throw err;
    }
    opts.summoner.beforeReap = () => p.collect();
    opts.summoner.beforeEvict = (labels) => p.withhold(labels);
    return p;
  }

  /** The DNS port the workers share. */
  get port(): number {
    return this.boundPort;
  }

  /** The live workers' pids. */
  pids(): number[] {
    const out: number[] = [];
    for (const slot of this.slots)
      if (slot.worker?.process.pid !== undefined) out.push(slot.worker.process.pid);
    return out;
  }

  /** DNS answers sent by each worker index (replacements included), for the per-worker metric. */
  answersByWorker(): Map<string, number> {
    return new Map(this.slots.map((slot) => [String(slot.index), slot.answered]));
  }

  /** Config reload: every worker swaps its zone; replacements start with it. */
  setZone(vms: readonly ZoneVm[]): void {
    this.zone = plainZone(vms);
    this.broadcast({ t: "zone", zone: this.zone });
  }

  /** SIGHUP: what `localnets` stands for now; replacements start with it. */
  setLocalnets(cidrs: readonly string[]): void {
    this.localnets = [...cidrs];
    this.broadcast({ t: "localnets", cidrs: this.localnets });
  }

  /** SIGHUP: every worker reads the host's addresses again (a wildcard bind follows them). */
  refreshAddresses(): void {
    this.broadcast({ t: "refresh-addresses" });
  }

  /**
   * Asks every listening worker for its counts and waits for the answers (at
   * most FLUSH_TIMEOUT_MS each; a worker that does not answer is named in a
   * warning). Run before each reaper pass and each /status or /metrics read.
   */
  collect(): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const slot of this.slots) {
      const worker = slot.worker;
      if (worker === null || !slot.listening) continue;
      const id = this.nextFlushId++;
      waits.push(
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            slot.flushes.delete(id);
            this.log.warn(
              `DNS worker ${slot.index} (pid ${worker.process.pid}) did not report its counts within ${FLUSH_TIMEOUT_MS} ms`,
            );
            resolve();
          }, FLUSH_TIMEOUT_MS);
          slot.flushes.set(id, () => {
            clearTimeout(timer);
            resolve();
          });
          this.send(worker, { t: "flush", id });
        }),
      );
    }
    return Promise.all(waits).then(() => undefined);
  }

  /**
   * Before admission control evicts `labels`: the workers stop answering
   * them from their copies of the ready map (a query for one goes to the
   * Summoner, which counts it), then report their counts. The channel keeps
   * the order, so those counts include every answer a worker gave from its
   * copy: the Summoner judges the VMs idle on all of them, and none is
   * answered from a copy between that judgement and its stop. Until then no
   * ready push gives them back (another VM's change while the counts are
   * collected would: the workers would answer them from their copies again,
   * and those answers would reach the Summoner after its judgement). The VMs
   * it keeps after all are given back once it has decided (after its promise
   * jobs: setImmediate). Admission collects for one eviction at a time.
   */
  async withhold(labels: readonly string[]): Promise<void> {
    for (const label of labels) this.withheld.add(label);
    const hidden = labels.filter((label) => this.sent.has(label));
    for (const label of hidden) this.sent.delete(label);
    if (hidden.length > 0) this.broadcast({ t: "ready", set: [], unset: hidden });
    try {
      await this.collect();
    } finally {
      setImmediate(() => {
        for (const label of labels) this.withheld.delete(label);
        this.scheduleReadyPush();
      });
    }
  }

  /**
   * Tells every worker to close (stop accepting, answer what is in flight,
   * report its last counts) and waits for each to exit; one still running
   * after closeTimeoutMs is killed.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.opts.summoner.beforeReap = undefined;
    this.opts.summoner.beforeEvict = undefined;
    for (const slot of this.slots) {
      if (slot.restartTimer !== null) clearTimeout(slot.restartTimer);
      slot.restartTimer = null;
    }
    await Promise.all(
      this.slots.map(async (slot) => {
        const worker = slot.worker;
        if (worker === null) return;
        const gone = ended(worker);
        if (!slot.listening) {
          // A replacement still starting has no queries to finish.
          worker.process.kill("SIGKILL");
          await gone;
          return;
        }
        const timer = setTimeout(() => {
          this.log.warn(
            `DNS worker ${slot.index} (pid ${worker.process.pid}) did not finish within ${this.opts.closeTimeoutMs / 1000} s; killing it`,
          );
          worker.process.kill("SIGKILL");
        }, this.opts.closeTimeoutMs);
        this.send(worker, { t: "close" });
        await gone;
        clearTimeout(timer);
      }),
    );
  }

  // ---- workers ---------------------------------------------------------------

  /** Forks the slot's worker; resolves with its port once it listens. */
  private fork(slot: Slot): Promise<number> {
    const worker = cluster.fork();
    slot.worker = worker;
    slot.inited = false;
    slot.listening = false;
    const up = new Promise<number>((resolve, reject) => {
      slot.up = { resolve, reject };
    });
    worker.on("message", (raw: unknown) => this.onMessage(slot, worker, raw));
    worker.on("error", (err) => this.log.debug(`DNS worker ${slot.index}: IPC: ${describeError(err)}`));
    worker.on("exit", (code: number | null, signal: string | null) =>
      this.onExit(slot, worker, code, signal),
    );
    return up;
  }

  private onMessage(slot: Slot, worker: Worker, raw: unknown): void {
    const parsed = parseToPrimary(raw);
    if (!parsed.ok) {
      this.log.warn(
        `DNS worker ${slot.index} (pid ${worker.process.pid}): ignoring a malformed message: ${parsed.error}`,
      );
      return;
    }
    const msg: ToPrimary = parsed.msg;
    switch (msg.t) {
      case "hello":
        if (slot.worker !== worker || slot.inited) return;
        slot.inited = true;
        this.send(worker, {
          t: "init",
          index: slot.index,
          bind: this.opts.bind,
          port: this.opts.port,
          ttl: this.opts.ttl,
          logLevel: this.opts.logLevel,
          logFormat: this.opts.logFormat,
          upstreams: this.opts.upstreams,
          forwarding: this.opts.forwarding,
          tcpPerClient: this.opts.tcpPerClient,
          zone: this.zone,
          allowRecursion: this.opts.allowRecursion,
          allowSummon: this.opts.allowSummon,
          localnets: this.localnets,
          ready: [...this.sent],
        });
        return;
      case "listening":
        if (slot.worker !== worker) return;
        slot.listening = true;
        slot.up?.resolve(msg.port);
        slot.up = null;
        return;
      case "listen-failed":
        if (slot.worker !== worker) return;
        slot.up?.reject(new ListenError(msg.error));
        slot.up = null;
        return;
      case "summon":
        this.summon(worker, msg.id, msg.label, msg.client);
        return;
      case "tcp-acquire": {
        if (slot.worker !== worker) return;
        const granted = this.tcpSlots.acquire(msg.client);
        if (granted) slot.tcpHeld.acquire(msg.client);
        this.send(worker, { t: "tcp-acquired", id: msg.id, granted });
        return;
      }
      case "tcp-release":
        // Only what this worker was granted: a stray release frees nobody else's slot.
        if (slot.worker !== worker || slot.tcpHeld.count(msg.client) === 0) return;
        slot.tcpHeld.release(msg.client);
        this.tcpSlots.release(msg.client);
        return;
      case "counts": {
        // At shutdown the workers' last counts are kept, but start nothing.
        for (const [label, n] of msg.requests) {
          this.opts.summoner.noteRequests(label, n, { summon: !this.closing });
        }
        const before = this.lastCounters.get(worker);
        if (before !== undefined) this.counters.addSnapshot(before, -1);
        this.counters.addSnapshot(msg.dns, 1);
        this.lastCounters.set(worker, msg.dns);
        slot.answered += answered(msg.dns) - (before === undefined ? 0 : answered(before));
        if (msg.id !== null) {
          const done = slot.flushes.get(msg.id);
          slot.flushes.delete(msg.id);
          done?.();
        }
        return;
      }
    }
  }

  /**
   * A worker's summon for a query from `client`: the real Summoner's answer,
   * or its error's message (the worker's SERVFAIL line shows it), marked
   * `refused` when admission control refused it (the worker answers REFUSED).
   */
  private summon(worker: Worker, id: number, label: string, client: string | undefined): void {
    const failed = (err: unknown): void =>
      this.send(
        worker,
        err instanceof SummonRefusedError
          ? { t: "summon-failed", id, error: describeError(err), refused: err.reason }
          : { t: "summon-failed", id, error: describeError(err) },
      );
    let r: readonly string[] | Promise<readonly string[]>;
    try {
      r = this.opts.summoner.request(label, client);
    } catch (err) {
      failed(err);
      return;
    }
    if (Array.isArray(r)) {
      this.send(worker, { t: "summoned", id, addresses: r as readonly string[] });
      return;
    }
    (r as Promise<readonly string[]>).then(
      (addresses) => this.send(worker, { t: "summoned", id, addresses }),
      failed,
    );
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    slot.worker = null;
    slot.inited = false;
    slot.listening = false;
    // Its connections died with it.
    for (const [client, n] of slot.tcpHeld.entries())
      for (let i = 0; i < n; i++) this.tcpSlots.release(client);
    slot.tcpHeld = new LocalClientSlots(0);
    for (const done of slot.flushes.values()) done();
    slot.flushes.clear();
    const how = signal !== null ? `signal ${signal}` : `code ${code}`;
    if (slot.up !== null) {
      slot.up.reject(new Error(`DNS worker ${slot.index} exited (${how}) before it listened`));
      slot.up = null;
      // At start-up start() reports it; at shutdown it does not matter.
      if (slot.restarts.length === 0 || this.closing) return;
    } else if (this.closing) {
      return;
    } else {
      this.log.error(
        `DNS worker ${slot.index} (pid ${worker.process.pid}) exited with ${how}; the queries it had in flight are lost (clients retry)`,
      );
    }
    if (!this.closing) this.restart(slot);
  }

  /** Replaces a dead worker: at most one start a second, and none once it was replaced `limit` times within the window. */
  private restart(slot: Slot): void {
    const policy = this.opts.restart ?? RESTART;
    const now = Date.now();
    slot.restarts = slot.restarts.filter((t) => now - t < policy.windowMs);
    if (slot.restarts.length >= policy.limit) {
      const alive = this.slots.filter((s) => s.worker !== null).length;
      this.log.error(
        `DNS worker ${slot.index} was replaced ${slot.restarts.length} times within ${policy.windowMs / 1000} s and died again; not starting it again` +
          (alive === 0
            ? ": no DNS worker is left, jitsu answers no queries until it is restarted"
            : ` (${alive} left)`),
      );
      return;
    }
    const last = slot.restarts.at(-1) ?? 0;
    const delay = Math.max(0, last + policy.minIntervalMs - now);
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      if (this.closing) return;
      slot.restarts.push(Date.now());
      const started = this.fork(slot);
      const pid = slot.worker?.process.pid;
      started.then(
        () => this.log.info(`DNS worker ${slot.index} replaced (pid ${pid})`),
        (err: unknown) => {
          if (!this.closing)
            this.log.error(`DNS worker ${slot.index} could not be restarted: ${describeError(err)}`);
        },
      );
    }, delay);
  }

  /** Start-up failed: kill whatever was forked and wait for it. */
  private async killAll(): Promise<void> {
    await Promise.all(
      this.slots.map(async (slot) => {
        const worker = slot.worker;
        if (worker === null) return;
        const gone = ended(worker);
        worker.process.kill("SIGKILL");
        await gone;
      }),
    );
  }

  // ---- the ready map -----------------------------------------------------------

  /** Changes come in bursts (a reload, many VMs ready at once): one diff per turn. */
  private scheduleReadyPush(): void {
    if (this.pushScheduled || this.closing) return;
    this.pushScheduled = true;
    queueMicrotask(() => {
      this.pushScheduled = false;
      this.pushReady();
    });
  }

  private pushReady(): void {
    const now = this.opts.summoner.readyAddresses();
    for (const label of this.withheld) now.delete(label);
    const set: ReadyEntry[] = [];
    const unset: string[] = [];
    for (const [label, addresses] of now)
      if (this.sent.get(label) !== addresses) set.push([label, addresses]);
    for (const label of this.sent.keys()) if (!now.has(label)) unset.push(label);
    this.sent = now;
    if (set.length > 0 || unset.length > 0) this.broadcast({ t: "ready", set, unset });
  }

  private broadcast(msg: ToWorker): void {
    for (const slot of this.slots) if (slot.worker !== null && slot.inited) this.send(slot.worker, msg);
  }

  private send(worker: Worker, msg: ToWorker): void {
    if (!worker.isConnected()) return;
    // With a callback, a channel that closes meanwhile is an error passed here, not an 'error' event.
    worker.send(msg, undefined, (err) => {
      if (err !== null) this.log.debug(`IPC to a DNS worker: ${describeError(err)}`);
    });
  }
}

/** Resolves once the worker has exited and its channel is closed (its last messages read). */
function ended(worker: Worker): Promise<void> {
  const exited =
    worker.process.exitCode !== null || worker.process.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const disconnected = worker.isConnected()
    ? new Promise<void>((resolve) => worker.once("disconnect", () => resolve()))
    : Promise.resolve();
  return Promise.all([exited, disconnected]).then(() => undefined);
}

function answered(s: CountersSnapshot): number {
  let n = 0;
  for (const [, c] of s.results) n += c;
  return n;
}

/** Only what the zone needs (a VmSpec carries much more, some of it not plain data). */
function plainZone(vms: readonly ZoneVm[]): ZoneVm[] {
  return vms.map((vm) =>
    vm.holdIps === undefined
      ? { label: vm.label, dns: [...vm.dns], ips: [...vm.ips] }
      : { label: vm.label, dns: [...vm.dns], ips: [...vm.ips], holdIps: [...vm.holdIps] },
  );
}
