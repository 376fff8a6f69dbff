/**
 * Admission control (issue 15; README.md "Admission"): what the centre asks
 * before it starts a VM, so that anyone who can reach the DNS port cannot boot
 * more VMs than the host can hold. Three limits, all on the injected clock:
 *
 *  - `--max-starting N`: at most N starts (start, resume, unpause) at once;
 *    further ones wait in arrival order for a slot.
 *  - `--max-running N`: at most N VMs up (`isUp` in vm.ts, plus those granted
 *    a slot). A start beyond it first evicts a VM nobody can still be using:
 *    one whose start failed but which may still run (its address was never
 *    given out), else the least recently queried ready VM whose last query is
 *    older than the TTL (no client can still hold its address from our
 *    answer). With none evictable yet, it waits for the first that is.
 *  - `--summon-rate R`: cold summons per second per client prefix (/24 for
 *    IPv4, /56 for IPv6), a token bucket with a burst of 2 x R; over it,
 *    `SummonRefusedError` (the DNS server answers REFUSED).
 *
 * A wait ends with the start's signal, so `--start-timeout` counts the time
 * queued. The part never changes a phase: it stops VMs through its host.
 */
import type { Clock, Timer } from "../clock/index.js";
import { SummonRefusedError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import type { StartStep } from "./readiness.js";
import { isUp, type Vm } from "./vm.js";

export interface AdmissionLimits {
  /** At most this many starts at once; Infinity for no limit. */
  readonly maxStarting: number;
  /** At most this many VMs up at once; 0 for no limit. */
  readonly maxRunning: number;
  /** Cold summons per second per client prefix; 0 for no limit. */
  readonly summonRate: number;
}

/** No limit at all (a Summoner created without admission options: the unit tests' default). */
export const NO_LIMITS: AdmissionLimits = { maxStarting: Infinity, maxRunning: 0, summonRate: 0 };

/** What admission needs from the summoner. */
export interface AdmissionHost {
  vms(): Iterable<Vm>;
  /** Stops `vm` with the configured stop mode, logging `why`; never rejects. */
  stop(vm: Vm, why: string): Promise<void>;
  /**
   * When `vm` was last in use: its last query, or when it became ready if
   * later; for a group member, its whole group's (groups.ts).
   */
  lastActivity(vm: Vm): number;
  /**
   * Run before `vms` are evicted, or null when there is nothing to run: with
   * --workers, the workers stop answering them from their copies of the ready
   * map and report what they answered, so that a VM in use does not look
   * idle (and none is answered between the last look and its stop).
   */
  beforeEvict(vms: readonly Vm[]): Promise<void> | null;
}

export interface AdmissionOptions extends AdmissionLimits {
  readonly clock: Clock;
  readonly log: Logger;
  /** The DNS TTL: a ready VM queried less than this long ago is never evicted. */
  readonly ttlSeconds: number;
}

/** Held by a start from admission to its end (ready or failed). */
export interface StartSlot {
  release(): void;
}

/** Admission as /status and /metrics show it. */
export interface AdmissionStatus {
  /** The limits; null for none. */
  readonly maxStarting: number | null;
  readonly maxRunning: number | null;
  readonly summonRate: number | null;
  /** Starts holding a slot. */
  readonly starting: number;
  /** VMs up, as --max-running counts them. */
  readonly up: number;
  /** The labels of the VMs waiting to start, first in line first. */
  readonly queued: readonly string[];
  /** VMs stopped to make room since jitsu started. */
  readonly evictions: number;
  /** Cold summons refused for --summon-rate since jitsu started. */
  readonly refused: number;
}

interface Waiter {
  readonly vm: Vm;
  /** When its start times out (clock ms; Infinity for never). */
  readonly deadline: number;
  readonly step: StartStep;
  readonly signal: AbortSignal;
  readonly onAbort: () => void;
  resolve(slot: StartSlot): void;
  reject(err: Error): void;
}

/** A warning that a prefix is over its rate, at most this often (a flood must not flood the log). */
const RATE_WARNING_INTERVAL_MS = 60_000;

export class Admission {
  private readonly queue: Waiter[] = [];
  /** VMs holding a start slot (granted, until their start ends). */
  private readonly granted = new Set<Vm>();
  private readonly rate: SummonRate | null;
  private evictions = 0;
  private refused = 0;
  private lastRateWarning = -Infinity;
  /** Collecting the workers' counts before an eviction (beforeEvict). */
  private collecting = false;
  /** While the pump that follows a collection runs: the VMs withheld, the only ones it may evict. */
  private withheld: ReadonlySet<Vm> | null = null;
  /** Wakes the queue when the next ready VM passes its TTL. */
  private timer: Timer | null = null;
  private pumpScheduled = false;
  private closed = false;

  constructor(
    private readonly host: AdmissionHost,
    private readonly opts: AdmissionOptions,
  ) {
    this.rate = opts.summonRate > 0 ? new SummonRate(opts.summonRate, opts.clock) : null;
  }

  /**
   * Takes a token from `client`'s prefix for a cold summon of `label`, or
   * throws SummonRefusedError when it has none left.
   */
  checkRate(client: string, label: string): void {
    const rate = this.rate;
    if (rate === null) return;
    const prefix = rate.take(client);
    if (prefix === null) return;
    this.refused++;
    const now = this.opts.clock.now();
    const message = `client ${prefix} is over --summon-rate ${this.opts.summonRate}/s: VM '${label}' not started for it`;
    if (now - this.lastRateWarning >= RATE_WARNING_INTERVAL_MS) {
      this.lastRateWarning = now;
      this.opts.log.warn(`${message} (answered REFUSED; this warning at most once a minute)`);
    } else if (this.opts.log.isLevelEnabled("debug")) {
      this.opts.log.debug(message);
    }
    throw new SummonRefusedError("summon-rate", message);
  }

  /**
   * Resolves with a start slot once `vm` may start: at once when there is
   * room, else in arrival order. Rejects with the signal's reason if it aborts
   * first (the start's timeout at `deadline`), leaving the queue.
   */
  admit(vm: Vm, signal: AbortSignal, step: StartStep, deadline = Infinity): Promise<StartSlot> {
    if (this.closed) return Promise.reject(new Error("jitsu is shutting down"));
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (this.queue.length === 0 && this.mayStart(vm)) return Promise.resolve(this.grant(vm));
    return new Promise<StartSlot>((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal.reason as Error);
        this.schedulePump();
      };
      const waiter: Waiter = { vm, deadline, step, signal, onAbort, resolve, reject };
      signal.addEventListener("abort", onAbort, { once: true });
      this.queue.push(waiter);
      this.pump();
      if (this.queue.includes(waiter)) {
        this.opts.log.info(`VM '${vm.spec.label}' waits to start: ${step.name}`);
      }
    });
  }

  /** A VM's phase changed (a stop ended, a start finished...): the queue may move. */
  changed(): void {
    if (this.queue.length > 0) this.schedulePump();
  }

  status(): AdmissionStatus {
    const { maxStarting, maxRunning, summonRate } = this.opts;
    return {
      maxStarting: Number.isFinite(maxStarting) ? maxStarting : null,
      maxRunning: maxRunning > 0 ? maxRunning : null,
      summonRate: summonRate > 0 ? summonRate : null,
      starting: this.granted.size,
      up: this.count().up,
      queued: this.queue.map((w) => w.vm.spec.label),
      evictions: this.evictions,
      refused: this.refused,
    };
  }

  /** No more starts: every waiter is rejected. */
  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = null;
    const waiters = this.queue.splice(0);
    for (const w of waiters) {
      w.signal.removeEventListener("abort", w.onAbort);
      w.reject(new Error("jitsu is shutting down"));
    }
  }

  // ---- the queue ------------------------------------------------------------

  private mayStart(vm: Vm): boolean {
    if (this.granted.size >= this.opts.maxStarting) return false;
    const max = this.opts.maxRunning;
    return max <= 0 || isUp(vm.phase) || this.count().up < max;
  }

  private grant(vm: Vm): StartSlot {
    this.granted.add(vm);
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.granted.delete(vm);
        this.schedulePump();
      },
    };
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.closed) return;
    this.pumpScheduled = true;
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Grants slots from the front of the queue while there is room; else makes room or waits for it. */
  private pump(): void {
    if (this.closed) return;
    this.timer?.cancel();
    this.timer = null;
    const { maxStarting, maxRunning } = this.opts;
    const now = this.opts.clock.now();
    let i = 0;
    while (i < this.queue.length) {
      const head = this.queue[i]!;
      if (head.deadline <= now) {
        // Its timeout fires now: a start begun for it would be abandoned at once.
        i++;
        continue;
      }
      if (this.granted.size >= maxStarting) {
        this.describeWait(`queued: ${this.granted.size} VMs are starting (--max-starting ${maxStarting})`);
        return;
      }
      if (maxRunning > 0 && !isUp(head.vm.phase) && this.count().up >= maxRunning) {
        this.describeWait(
          `queued: ${maxRunning} VMs are up (--max-running ${maxRunning}) and none has been idle for its TTL of ${this.opts.ttlSeconds} s yet`,
        );
        this.makeRoom();
        return;
      }
      this.queue.splice(i, 1);
      head.signal.removeEventListener("abort", head.onAbort);
      head.resolve(this.grant(head.vm));
    }
  }

  private describeWait(why: string): void {
    for (const w of this.queue) w.step.name = why;
  }

  /** VMs up (granted ones included) and, among them, those stopping (room on its way). */
  private count(): { up: number; stopping: number } {
    let up = 0;
    let stopping = 0;
    for (const vm of this.host.vms()) {
      if (isUp(vm.phase) || this.granted.has(vm)) up++;
      if (vm.phase.kind === "stopping") stopping++;
    }
    return { up, stopping };
  }

  // ---- eviction (--max-running) ---------------------------------------------

  /**
   * Evicts as many VMs as the waiters that could start now need, counting the
   * VMs already stopping as room on its way; if too few may be evicted, wakes
   * the queue when the next ready VM passes its TTL.
   */
  private makeRoom(): void {
    if (this.collecting) return;
    const { up, stopping } = this.count();
    const slots = this.opts.maxStarting - this.granted.size;
    let wanting = 0;
    for (let i = 0; i < this.queue.length && wanting < slots; i++) {
      if (!isUp(this.queue[i]!.vm.phase)) wanting++;
    }
    const needed = up - stopping + wanting - this.opts.maxRunning;
    if (needed <= 0) return; // the stops in flight make the room
    const now = this.opts.clock.now();
    const withheld = this.withheld;
    const candidates = this.candidates(now).filter((c) => withheld === null || withheld.has(c.vm));
    if (candidates.length > 0 && withheld === null) {
      const chosen = candidates.slice(0, needed).map((c) => c.vm);
      const before = this.host.beforeEvict(chosen);
      if (before !== null) {
        // Judge them on complete counts, then look again (those used meanwhile are no longer idle;
        // if none is left, the timer below tries the next ones).
        this.collecting = true;
        void before
          .catch((err: unknown) =>
            this.opts.log.warn(`Before an eviction: ${describeError(err)} (going on with what is known)`),
          )
          .then(() => {
            this.collecting = false;
            this.withheld = new Set(chosen);
            try {
              this.pump();
            } finally {
              this.withheld = null;
            }
          });
        return;
      }
    }
    const ttl = this.opts.ttlSeconds;
    for (let i = 0; i < candidates.length && i < needed; i++) {
      const { vm, last } = candidates[i]!;
      const forVm = this.queue[Math.min(i, this.queue.length - 1)]!.vm.spec.label;
      const why =
        vm.phase.kind === "failed"
          ? "(its start failed and it may still run)"
          : `(last queried ${Math.round((now - last) / 1000)} s ago, past its TTL of ${ttl} s)`;
      this.evictions++;
      void this.host.stop(
        vm,
        `to make room for VM '${forVm}' (--max-running ${this.opts.maxRunning}) ${why}`,
      );
    }
    if (candidates.length < needed) this.wakeWhenEvictable(now);
  }

  /**
   * The VMs that may be evicted now, best first: failed starts that may still
   * run, then ready VMs whose last query is older than the TTL, least recently
   * queried first. A VM with a start or stop in flight is never one.
   */
  private candidates(now: number): { vm: Vm; last: number }[] {
    const ttlMs = this.opts.ttlSeconds * 1000;
    const out: { vm: Vm; last: number }[] = [];
    for (const vm of this.host.vms()) {
      const phase = vm.phase;
      if (vm.flight !== null || this.granted.has(vm)) continue;
      if (phase.kind === "failed" && phase.runs === "maybe") out.push({ vm, last: -Infinity });
      else if (phase.kind === "ready") {
        const last = this.host.lastActivity(vm);
        if (now - last > ttlMs) out.push({ vm, last });
      }
    }
    return out.sort((a, b) => a.last - b.last);
  }

  /** Pumps again when the first ready VM passes its TTL (if none is ready, a phase change will). */
  private wakeWhenEvictable(now: number): void {
    const ttlMs = this.opts.ttlSeconds * 1000;
    let first = Infinity;
    for (const vm of this.host.vms()) {
      if (vm.phase.kind !== "ready" || vm.flight !== null) continue;
      first = Math.min(first, this.host.lastActivity(vm) + ttlMs + 1);
    }
    if (first === Infinity) return;
    this.timer = this.opts.clock.setTimer(Math.max(1, first - now), () => {
      this.timer = null;
      this.pump();
    });
  }
}

// ---- --summon-rate ------------------------------------------------------------

/**
 * At most this many client prefixes are remembered: a flood from spoofed
 * sources evicts the least recently seen buckets instead of growing memory
 * (~150 bytes each). A bucket that has refilled is the same as none, and is
 * dropped as soon as it is the oldest.
 */
export const MAX_RATE_BUCKETS = 16_384;

interface Bucket {
  tokens: number;
  at: number;
}

/** Token buckets per client prefix: R tokens a second, at most max(1, 2 x R). */
export class SummonRate {
  /** In order of last use, oldest first (a Map keeps insertion order). */
  private readonly buckets = new Map<string, Bucket>();
  private readonly burst: number;

  constructor(
    private readonly perSecond: number,
    private readonly clock: Clock,
    private readonly maxBuckets = MAX_RATE_BUCKETS,
  ) {
    this.burst = Math.max(1, 2 * perSecond);
  }

  /** Takes a token for `client`; returns null if it had one, else its prefix (for the message). */
  take(client: string): string | null {
    const prefix = clientPrefix(client);
    const now = this.clock.now();
    let bucket = this.buckets.get(prefix);
    if (bucket === undefined) {
      this.prune(now);
      bucket = { tokens: this.burst, at: now };
    } else {
      this.buckets.delete(prefix); // re-inserted below: most recently used last
      bucket.tokens = this.refilled(bucket, now);
      bucket.at = now;
    }
    this.buckets.set(prefix, bucket);
    if (bucket.tokens < 1) return prefix;
    bucket.tokens -= 1;
    return null;
  }

  /** How many prefixes are remembered (tests). */
  get size(): number {
    return this.buckets.size;
  }

  private refilled(bucket: Bucket, now: number): number {
    return Math.min(this.burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * this.perSecond);
  }

  /** Drops the oldest buckets while they are full again, and while the table is at its size. */
  private prune(now: number): void {
    for (const [prefix, bucket] of this.buckets) {
      if (this.buckets.size < this.maxBuckets && this.refilled(bucket, now) < this.burst) return;
      this.buckets.delete(prefix);
    }
  }
}

/**
 * The prefix a client is rate-limited by: its /24 for IPv4 ("192.0.2.0/24"),
 * its /56 for IPv6 ("2001:db8:0:ab00::/56"); an IPv4 client on an IPv6
 * socket (::ffff:a.b.c.d) as IPv4. Anything unparsable is its own prefix.
 */
export function clientPrefix(address: string): string {
  let a = address;
  if (a.startsWith("::ffff:") && a.includes(".")) a = a.slice(7);
  if (!a.includes(":")) {
    const dot = a.lastIndexOf(".");
    return dot < 0 ? a : `${a.slice(0, dot)}.0/24`;
  }
  const groups = ipv6Groups(a);
  if (groups === null) return a;
  const hex = (n: number): string => n.toString(16);
  return `${hex(groups[0]!)}:${hex(groups[1]!)}:${hex(groups[2]!)}:${hex(groups[3]! & 0xff00)}::/56`;
}

/** The eight 16-bit groups of an IPv6 address (zone id dropped), or null. */
function ipv6Groups(address: string): number[] | null {
  const text = address.split("%")[0]!;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const parse = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const words = part.split(":");
    for (let i = 0; i < words.length; i++) {
      const w = words[i]!;
      if (i === words.length - 1 && w.includes(".")) {
        const b = w.split(".").map(Number);
        if (b.length !== 4 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) return null;
        out.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(w)) return null;
        out.push(parseInt(w, 16));
      }
    }
    return out;
  };
  const head = parse(halves[0]!);
  const tail = halves.length === 2 ? parse(halves[1]!) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  return [...head, ...new Array<number>(missing).fill(0), ...tail];
}
