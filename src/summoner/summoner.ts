/**
 * The Summoner (DESIGN.md "Summoner"): one small state machine per VM,
 * single-flight starts, readiness checks, start timeouts with back-off, the
 * idle reaper and the stats. It knows the VmBackend contract only.
 */
import type { BackendEvent, StopMode, VmBackend, VmRef, VmState } from "../backends/contract.js";
import { STOP_MODES } from "../backends/contract.js";
import type { Clock, Timer } from "../clock/index.js";
import type { VmSpec } from "../config/index.js";
import {
  BackendError,
  ConfigError,
  JitsuError,
  StartTimeoutError,
  UsageError,
  describeError,
} from "../errors/index.js";
import { perVmLevel, type Logger } from "../log/index.js";
import type { Store, VmRecord } from "../store/index.js";
import { describeProbe, probeOnce } from "./probes.js";

export type SummonerState = "off" | "starting" | "ready" | "stopping" | "suspended" | "paused" | "failed";

export interface SummonerOptions {
  backend: VmBackend;
  backendName: string;
  specs: readonly VmSpec[];
  clock: Clock;
  log: Logger;
  ttlSeconds: number;
  delaySeconds: number;
  /** 0 or less: no limit. */
  startTimeoutSeconds: number;
  stopMode: StopMode;
  store: Store;
  /** How often the reaper runs (default 5000). */
  reaperIntervalMs?: number;
}

export interface VmStatus {
  label: string;
  uuid: string | undefined;
  name: string | undefined;
  dns: string[];
  ips: string[];
  state: SummonerState;
  backendRef: string;
  /** Seconds. */
  responseDelay: number;
  useSynjitsu: boolean;
  startedAt: number | null;
  totalStarts: number;
  totalRequests: number;
  lastRequest: number | null;
  stopMode: StopMode;
  lastError: string | null;
  /** The DNS TTL in seconds (the VM is stopped after 2 x TTL idle). */
  ttlSeconds: number;
}

/** Where a VM is in its life, as the summoner sees it. */
type Phase =
  | { readonly kind: "off" }
  | { readonly kind: "starting"; readonly since: number; readonly abort: AbortController }
  | { readonly kind: "ready"; readonly since: number }
  | { readonly kind: "stopping"; readonly mode: StopMode; readonly done: Promise<void> }
  | { readonly kind: "suspended" }
  | { readonly kind: "paused" }
  | { readonly kind: "failed"; readonly error: Error; readonly retryAt: number };

interface Vm {
  spec: VmSpec;
  ref: VmRef;
  phase: Phase;
  /** The answer for the hot path: the same instance while it does not change. */
  addresses: readonly string[];
  /** The one start in flight, shared by every request that arrives meanwhile. */
  flight: Promise<readonly string[]> | null;
  startedAt: number | null;
  totalStarts: number;
  totalRequests: number;
  lastRequest: number | null;
  lastError: string | null;
  /** Consecutive failed starts, for the back-off. */
  failures: number;
  /** Whether we brought it up (close({stopVms}) only stops those). */
  startedByUs: boolean;
}

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
const PROBE_RETRY_MS = 50;
const ADDRESS_RETRY_MS = 250;

const OFF: Phase = { kind: "off" };
const SUSPENDED: Phase = { kind: "suspended" };
const PAUSED: Phase = { kind: "paused" };

export class Summoner {
  private readonly vms = new Map<string, Vm>();
  private readonly backend: VmBackend;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly changeListeners: (() => void)[] = [];
  private readonly startedListeners: ((label: string, ref: VmRef) => void)[] = [];
  private reaperTimer: Timer | null = null;
  private ticking: Promise<void> | null = null;
  private storeChain: Promise<void> = Promise.resolve();
  private closed = false;
  /**
   * Run at the start of each reaper pass, before anything is judged idle: with
   * --workers, it collects the requests the workers answered but have not yet
   * reported (see src/cluster). Its failure is logged and the pass goes on.
   */
  beforeReap: (() => Promise<void>) | undefined = undefined;

  private constructor(private readonly opts: SummonerOptions) {
    this.backend = opts.backend;
    this.clock = opts.clock;
    this.log = opts.log;
  }

  /**
   * Checks what the backend can do, resolves every VM, reads its state and the
   * store's counters, and starts the reaper. The backend must be connected.
   */
  static async create(opts: SummonerOptions): Promise<Summoner> {
    const s = new Summoner(opts);
    s.checkStopMode(opts.stopMode);
    for (const spec of opts.specs) s.checkSpec(spec);
    const records = new Map((await opts.store.load()).map((r) => [r.label, r]));
    for (const spec of opts.specs) {
      const vm = await s.resolveVm(spec, records.get(spec.label));
      s.vms.set(spec.label, vm);
    }
    opts.backend.onEvent?.((event) => s.onBackendEvent(event));
    s.armReaper();
    return s;
  }

  // ---- the hot path -------------------------------------------------------

  request(label: string): readonly string[] | Promise<readonly string[]> {
    const vm = this.vms.get(label);
    if (vm === undefined)
      return Promise.reject(new ConfigError(`no VM is configured with this label`, { vm: label }));
    vm.totalRequests++;
    vm.lastRequest = this.clock.now();
    if (vm.phase.kind === "ready") return vm.addresses;
    return this.summon(vm);
  }

  /**
   * Requests answered elsewhere (a --workers worker, from its copy of the ready
   * VMs) and reported later: counted as if they came through request(). A VM
   * that is no longer up (it stopped in the moment before the worker heard) is
   * summoned again, since those clients were given its address (unless
   * `summon` is false: the last counts of workers closing at shutdown).
   */
  noteRequests(label: string, count: number, options: { summon?: boolean } = {}): void {
    const vm = this.vms.get(label);
    if (vm === undefined || !(count > 0)) return;
    vm.totalRequests += count;
    vm.lastRequest = this.clock.now();
    const kind = vm.phase.kind;
    if (kind === "ready" || kind === "starting" || kind === "failed" || vm.flight !== null) return;
    // Not while shutting down (`summon: false`): nobody will use the VM.
    if (this.closed || options.summon === false) return;
    this.log.info(`VM '${label}' was answered as ready while ${kind}; summoning it again`);
    this.summon(vm).catch(() => undefined); // a failure is logged by bringUp
  }

  /** Each ready VM's label and addresses (the same array instances the hot path returns). */
  readyAddresses(): Map<string, readonly string[]> {
    const out = new Map<string, readonly string[]>();
    for (const [label, vm] of this.vms) if (vm.phase.kind === "ready") out.set(label, vm.addresses);
    return out;
  }

  // ---- admin ----------------------------------------------------------------

  async startVm(label: string): Promise<void> {
    const vm = this.get(label);
    if (vm.phase.kind === "ready") return;
    await this.summon(vm, true);
  }

  async stopVm(label: string, mode: StopMode = this.opts.stopMode): Promise<void> {
    const vm = this.get(label);
    this.checkStopMode(mode);
    if (vm.flight !== null) await vm.flight.catch(() => undefined);
    if (vm.phase.kind === "stopping") await vm.phase.done;
    const state = await this.backend.state(vm.ref);
    if (state === "off" || state === "crashed") {
      this.setPhase(vm, OFF);
      return;
    }
    await this.stop(vm, mode, "on request");
  }

  status(): VmStatus[] {
    return [...this.vms.values()].map((vm) => ({
      label: vm.spec.label,
      uuid: vm.spec.uuid,
      name: vm.spec.name,
      dns: [...vm.spec.dns],
      ips: [...vm.addresses],
      state: vm.phase.kind,
      backendRef: vm.ref.ref,
      responseDelay: vm.spec.responseDelay ?? this.opts.delaySeconds,
      useSynjitsu: vm.spec.useSynjitsu,
      startedAt: vm.startedAt,
      totalStarts: vm.totalStarts,
      totalRequests: vm.totalRequests,
      lastRequest: vm.lastRequest,
      stopMode: this.opts.stopMode,
      lastError: vm.lastError,
      ttlSeconds: this.opts.ttlSeconds,
    }));
  }

  /** How many VMs are in each state (states with none left out), without building `status()`. */
  stateCounts(): Map<SummonerState, number> {
    const counts = new Map<SummonerState, number>();
    for (const vm of this.vms.values()) counts.set(vm.phase.kind, (counts.get(vm.phase.kind) ?? 0) + 1);
    return counts;
  }

  onChange(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  /** Called when a backend start/resume/unpause returns, before the readiness checks (for Synjitsu). */
  onStarted(listener: (label: string, ref: VmRef) => void): void {
    this.startedListeners.push(listener);
  }

  /**
   * Config reload. New VMs are resolved first, so a bad spec leaves the running
   * set untouched; unchanged VMs keep their state and in-flight starts.
   */
  async setSpecs(specs: readonly VmSpec[]): Promise<void> {
    for (const spec of specs) this.checkSpec(spec);
    const next = new Map<string, Vm>();
    const updates: (() => void)[] = [];
    // One line per added, changed or removed VM, logged at the end (see logChanges).
    const notes: string[] = [];
    const counts = { added: 0, changed: 0, removed: 0 };
    for (const spec of specs) {
      const old = this.vms.get(spec.label);
      if (old !== undefined && sameSpec(old.spec, spec)) {
        next.set(spec.label, old);
        continue;
      }
      const fresh = await this.resolveVm(spec, old === undefined ? undefined : this.record(old));
      if (old === undefined) {
        notes.push(`VM '${spec.label}' added to the configuration (${fresh.phase.kind})`);
        counts.added++;
        next.set(spec.label, fresh);
        continue;
      }
      // A changed VM keeps its object, so a start in flight finishes on it; the
      // new spec (addresses, delay, probes) applies from the next start on.
      next.set(spec.label, old);
      updates.push(() => {
        const sameVm = old.ref.ref === fresh.ref.ref;
        old.spec = spec;
        old.ref = fresh.ref;
        if (!sameList(old.addresses, fresh.addresses) && (spec.ips.length > 0 || !sameVm)) {
          old.addresses = fresh.addresses;
        }
        const busy = old.flight !== null || old.phase.kind === "starting" || old.phase.kind === "stopping";
        if (!sameVm && !busy) old.phase = fresh.phase;
        else if (old.phase.kind === "failed" && !busy) {
          // A changed configuration is the user's fix: try it at the next request, without back-off.
          old.phase = OFF;
          old.failures = 0;
        }
        notes.push(`VM '${spec.label}' changed in the configuration`);
        counts.changed++;
      });
    }
    for (const update of updates) update();
    for (const [label, vm] of this.vms) {
      if (!next.has(label)) {
        notes.push(`VM '${label}' removed from the configuration; leaving it as it is (${vm.phase.kind})`);
        counts.removed++;
      }
    }
    this.logChanges(notes, counts);
    this.vms.clear();
    for (const [label, vm] of next) this.vms.set(label, vm);
    this.changed();
  }

  /** One reaper pass: stop idle VMs, notice crashes, flush the store. Never overlaps another. */
  tick(): Promise<void> {
    if (this.ticking !== null) return this.ticking;
    const before = this.beforeReap;
    const pass =
      before === undefined
        ? this.reap()
        : before()
            .catch((err: unknown) =>
              this.log.warn(`Before the reaper pass: ${describeError(err)} (going on with what is known)`),
            )
            .then(() => this.reap());
    this.ticking = pass.finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  async close(options: { stopVms?: boolean } = {}): Promise<void> {
    this.closed = true;
    this.reaperTimer?.cancel();
    this.reaperTimer = null;
    if (this.ticking !== null) await this.ticking;
    if (options.stopVms === true) {
      await Promise.all(
        [...this.vms.values()].map(async (vm) => {
          if (vm.flight !== null) await vm.flight.catch(() => undefined);
          if (!vm.startedByUs || vm.phase.kind === "off" || vm.phase.kind === "stopping") return;
          await this.stop(vm, this.opts.stopMode, "at shutdown");
        }),
      );
    }
    await this.flush();
  }

  // ---- starting -------------------------------------------------------------

  private summon(vm: Vm, admin = false): Promise<readonly string[]> {
    if (vm.flight !== null) return vm.flight;
    const phase = vm.phase;
    if (!admin && phase.kind === "failed" && this.clock.now() < phase.retryAt)
      return Promise.reject(phase.error);
    const flight = this.bringUp(vm).finally(() => {
      if (vm.flight === flight) vm.flight = null;
    });
    vm.flight = flight;
    return flight;
  }

  private async bringUp(vm: Vm): Promise<readonly string[]> {
    if (vm.phase.kind === "stopping") await vm.phase.done;
    const label = vm.spec.label;
    const began = this.clock.now();
    const abort = new AbortController();
    const signal = abort.signal;
    const step = { name: "starting" };
    const timeoutS = this.opts.startTimeoutSeconds;
    const timer =
      timeoutS > 0
        ? this.clock.setTimer(timeoutS * 1000, () =>
            abort.abort(new StartTimeoutError(label, timeoutS, step.name)),
          )
        : null;
    this.setPhase(vm, { kind: "starting", since: began, abort });
    // Precise durations for the log's fields (the clock above has whole ms and may be a test's).
    const t0 = performance.now();
    try {
      const state = await abortable(this.backend.state(vm.ref), signal);
      let adopted = false;
      switch (state) {
        case "running":
          adopted = true;
          this.log.info(`VM '${label}' is already running; adopting it`);
          break;
        case "paused":
          this.log.info(`Unpausing VM '${label}'`);
          await abortable(this.backend.unpause(vm.ref), signal);
          break;
        case "suspended":
          this.log.info(`Resuming VM '${label}'`);
          await abortable(this.backend.resume(vm.ref), signal);
          break;
        default:
          this.log.info(`Starting VM '${label}'`);
          await abortable(this.backend.start(vm.ref), signal);
          break;
      }
      const backendMs = performance.now() - t0;
      if (!adopted) {
        vm.totalStarts++;
        vm.startedAt = this.clock.now();
        vm.startedByUs = true;
        for (const listener of this.startedListeners) safeCall(() => listener(label, vm.ref), this.log);
      }
      await this.waitReady(vm, signal, step, adopted);
      vm.failures = 0;
      vm.lastError = null;
      this.setPhase(vm, { kind: "ready", since: this.clock.now() });
      // startMs/backendMs (JSON logs): how long the start took, and how much of it the backend's
      // state and start calls; the rest is readiness (wait_for_key, delay, probes, addresses).
      this.log.info(
        { startMs: round3(performance.now() - t0), backendMs: round3(backendMs) },
        `VM '${label}' is ready after ${this.clock.now() - began} ms`,
      );
      return vm.addresses;
    } catch (err) {
      const error = signal.aborted && signal.reason instanceof Error ? signal.reason : asError(err, label);
      vm.failures++;
      const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (vm.failures - 1));
      vm.lastError = describeError(error);
      this.setPhase(vm, { kind: "failed", error, retryAt: this.clock.now() + backoff });
      this.log.warn(
        `VM '${label}' could not be started: ${vm.lastError}; next try in ${backoff / 1000} s at the earliest`,
      );
      throw error;
    } finally {
      timer?.cancel();
      if (!signal.aborted) abort.abort(new Error("start finished"));
    }
  }

  /** Readiness, in order: wait_for_key, response delay, probes, addresses. */
  private async waitReady(
    vm: Vm,
    signal: AbortSignal,
    step: { name: string },
    adopted: boolean,
  ): Promise<void> {
    const spec = vm.spec;
    if (spec.waitForKey !== undefined && this.backend.waitForKey !== undefined) {
      step.name = `waiting for key '${spec.waitForKey}'`;
      await abortable(this.backend.waitForKey(vm.ref, spec.waitForKey, signal), signal);
    }
    const delay = spec.responseDelay ?? this.opts.delaySeconds;
    if (!adopted && delay > 0) {
      step.name = `in its response delay of ${delay} s`;
      await sleep(this.clock, delay * 1000, signal);
    }
    for (const probe of spec.ready) {
      step.name = `waiting for ${describeProbe(probe)}`;
      while (!(await abortable(probeOnce(probe), signal))) await sleep(this.clock, PROBE_RETRY_MS, signal);
    }
    if (spec.ips.length === 0 && this.backend.addresses !== undefined) {
      step.name = "waiting for an address";
      for (;;) {
        const found = await abortable(this.backend.addresses(vm.ref), signal);
        if (found.length > 0) {
          if (!sameList(found, vm.addresses)) vm.addresses = Object.freeze([...found]);
          break;
        }
        await sleep(this.clock, ADDRESS_RETRY_MS, signal);
      }
    }
  }

  // ---- stopping and the reaper ---------------------------------------------

  private stop(vm: Vm, mode: StopMode, why: string): Promise<void> {
    if (vm.phase.kind === "stopping") return vm.phase.done;
    const label = vm.spec.label;
    this.log.info(`Stopping VM '${label}' (${mode}) ${why}`);
    const began = this.clock.now();
    const done = (async () => {
      try {
        await this.backend.stop(vm.ref, mode);
        const after = mode === "pause" ? PAUSED : mode === "suspend" || mode === "save" ? SUSPENDED : OFF;
        this.setPhase(vm, after);
        this.log.info(`VM '${label}' stopped (${mode}) after ${this.clock.now() - began} ms`);
      } catch (err) {
        vm.lastError = describeError(err);
        this.log.error(`Could not stop VM '${label}' (${mode}): ${vm.lastError}`);
        const state = await this.backend.state(vm.ref).catch(() => "unknown" as VmState);
        this.setPhase(vm, phaseFor(state, this.clock.now()));
      }
    })();
    this.setPhase(vm, { kind: "stopping", mode, done });
    return done;
  }

  private armReaper(): void {
    if (this.closed) return;
    this.reaperTimer = this.clock.setTimer(this.opts.reaperIntervalMs ?? 5000, () => {
      this.armReaper();
      void this.tick();
    });
  }

  private async reap(): Promise<void> {
    const now = this.clock.now();
    const idleMs = 2 * this.opts.ttlSeconds * 1000;
    const jobs: Promise<void>[] = [];
    for (const vm of this.vms.values()) {
      const phase = vm.phase;
      if (vm.flight !== null) continue;
      if (phase.kind === "failed") {
        // A start that failed its readiness may have left the VM running: stop it once idle.
        const last = Math.max(vm.lastRequest ?? 0, vm.startedAt ?? 0);
        if (now - last >= idleMs) jobs.push(this.settleFailed(vm, Math.round((now - last) / 1000)));
        continue;
      }
      if (phase.kind !== "ready") continue;
      const last = Math.max(vm.lastRequest ?? 0, phase.since);
      if (now - last >= idleMs) {
        jobs.push(this.stop(vm, this.opts.stopMode, `after ${Math.round((now - last) / 1000)} s idle`));
        continue;
      }
      jobs.push(this.recheck(vm));
    }
    await Promise.all(jobs);
    await this.flush();
  }

  /** The backend's view of a VM on a reaper tick; null (and a warning) if it cannot say. */
  private async readState(vm: Vm): Promise<VmState | null> {
    try {
      return await this.backend.state(vm.ref);
    } catch (err) {
      this.log.warn(`Could not read the state of VM '${vm.spec.label}': ${describeError(err)}`);
      return null;
    }
  }

  /** A failed VM idle for 2 x TTL: stopped if it runs after all, else marked off (no more checks). */
  private async settleFailed(vm: Vm, idleS: number): Promise<void> {
    const state = await this.readState(vm);
    if (state === null) return;
    if (vm.phase.kind !== "failed" || vm.flight !== null) return;
    if (state === "running" && vm.startedByUs) {
      await this.stop(vm, this.opts.stopMode, `after ${idleS} s idle (it never became ready)`);
    } else if (state === "off" || state === "crashed") {
      this.setPhase(vm, OFF);
    }
  }

  /** Re-reads a ready VM's state, so a crash or a stop behind our back is noticed. */
  private async recheck(vm: Vm): Promise<void> {
    const state = await this.readState(vm);
    if (state === null) return;
    if (vm.phase.kind !== "ready" || vm.flight !== null || state === "running" || state === "unknown") return;
    this.log.warn(`VM '${vm.spec.label}' is ${state} (changed behind our back)`);
    this.setPhase(vm, phaseFor(state, this.clock.now()));
  }

  private onBackendEvent(event: BackendEvent): void {
    const vm = this.vms.get(event.vm.label);
    if (vm === undefined || vm.ref.ref !== event.vm.ref) return;
    const label = vm.spec.label;
    const reason = event.reason === undefined ? "" : ` (${event.reason})`;
    const phase = vm.phase;
    if (phase.kind === "stopping") return;
    if (phase.kind === "starting") {
      if (event.state === "off" || event.state === "crashed") {
        phase.abort.abort(
          new BackendError(this.opts.backendName, `stopped while starting${reason}`, { vm: label }),
        );
      }
      return;
    }
    switch (event.state) {
      case "off":
      case "crashed":
        if (phase.kind === "off" || phase.kind === "failed") return;
        this.log.warn(`VM '${label}' is ${event.state}${reason}`);
        if (event.state === "crashed") vm.lastError = `crashed${reason}`;
        this.setPhase(vm, phaseFor(event.state, this.clock.now()));
        return;
      case "running":
        if (phase.kind === "ready" || vm.flight !== null) return;
        if (vm.addresses.length === 0) return; // the next request adopts it and finds its address
        this.log.info(`VM '${label}' was started behind our back; adopting it`);
        this.setPhase(vm, { kind: "ready", since: this.clock.now() });
        return;
      case "paused":
      case "suspended":
        if (phase.kind === event.state || vm.flight !== null) return;
        this.log.info(`VM '${label}' is ${event.state}${reason}`);
        this.setPhase(vm, event.state === "paused" ? PAUSED : SUSPENDED);
        return;
      case "unknown":
        return;
    }
  }

  // ---- plumbing -------------------------------------------------------------

  private checkStopMode(mode: StopMode): void {
    if (this.backend.supports.has(mode)) return;
    const can = STOP_MODES.filter((m) => this.backend.supports.has(m)).join(", ");
    throw new UsageError(`the ${this.opts.backendName} backend cannot ${mode} VMs (it can: ${can})`, "-m");
  }

  private checkSpec(spec: VmSpec): void {
    if (spec.waitForKey !== undefined && this.backend.waitForKey === undefined) {
      throw new ConfigError(`the ${this.opts.backendName} backend cannot wait for keys`, {
        vm: spec.label,
        key: "wait_for_key",
      });
    }
    if (spec.ips.length === 0 && this.backend.addresses === undefined) {
      throw new ConfigError(
        `required key is missing (the ${this.opts.backendName} backend cannot discover addresses)`,
        {
          vm: spec.label,
          key: "ip",
        },
      );
    }
  }

  private async resolveVm(spec: VmSpec, record: VmRecord | undefined): Promise<Vm> {
    const ref = await this.backend.resolve(spec);
    const state = await this.backend.state(ref);
    const now = this.clock.now();
    const known =
      record !== undefined && record.backend === this.opts.backendName && record.backendRef === ref.ref;
    // Reconcile with what the store says (--persistdb): a VM we had summoned that still runs keeps
    // its last request, so the reaper stops it on schedule rather than 2 x TTL after this restart.
    const wasUp =
      known && (record.state === "ready" || record.state === "starting" || record.state === "stopping");
    const stillUp = state === "running" || state === "paused" || state === "suspended";
    let phase = phaseFor(state, now);
    if (known && phase.kind === "ready") {
      phase = { kind: "ready", since: Math.min(now, record.lastRequest ?? record.startedAt ?? now) };
    }
    if (wasUp && !stillUp) {
      this.log.info(
        `VM '${spec.label}' was ${record.state} when jitsu last ran, but is ${state} now; marking it off`,
      );
    }
    const vm: Vm = {
      spec,
      ref,
      phase,
      // Frozen specs (buildVmSpec) share their array; the hot path keys its answers by identity.
      addresses: Object.isFrozen(spec.ips) ? spec.ips : Object.freeze([...spec.ips]),
      flight: null,
      startedAt: known ? record.startedAt : null,
      totalStarts: known ? record.totalStarts : 0,
      totalRequests: known ? record.totalRequests : 0,
      lastRequest: known ? record.lastRequest : null,
      lastError: null,
      failures: 0,
      // Started by the jitsu before this one: --stop-on-exit stops it too.
      startedByUs: wasUp && stillUp && record.startedAt !== null,
    };
    if (vm.phase.kind === "ready" && spec.ips.length === 0) {
      const found = (await this.backend.addresses?.(ref)) ?? [];
      if (found.length > 0) vm.addresses = Object.freeze([...found]);
      else vm.phase = OFF; // running but without a known address: the next request adopts it
    }
    return vm;
  }

  /**
   * A reload's per-VM lines at info, as for start-up: above PER_VM_LINES_MAX
   * of them, at debug, and one line of counts at info.
   */
  private logChanges(
    notes: readonly string[],
    counts: { added: number; changed: number; removed: number },
  ): void {
    const level = perVmLevel(notes.length);
    if (this.log.isLevelEnabled(level)) for (const note of notes) this.log[level](note);
    if (level !== "info") {
      this.log.info(
        `Configuration: ${counts.added} VMs added, ${counts.changed} changed, ${counts.removed} removed (one line each at --log-level debug)`,
      );
    }
  }

  private get(label: string): Vm {
    const vm = this.vms.get(label);
    if (vm === undefined) throw new ConfigError("no VM is configured with this label", { vm: label });
    return vm;
  }

  private setPhase(vm: Vm, phase: Phase): void {
    const before = vm.phase.kind;
    vm.phase = phase;
    if (before !== phase.kind) this.changed();
  }

  private changed(): void {
    for (const listener of this.changeListeners) safeCall(listener, this.log);
  }

  private record(vm: Vm): VmRecord {
    return {
      label: vm.spec.label,
      names: vm.spec.dns,
      ips: vm.addresses,
      backend: this.opts.backendName,
      backendRef: vm.ref.ref,
      state: vm.phase.kind,
      startedAt: vm.startedAt,
      totalStarts: vm.totalStarts,
      totalRequests: vm.totalRequests,
      lastRequest: vm.lastRequest,
      stopMode: this.opts.stopMode,
    };
  }

  /** Writes every VM's record; writes are serialised and never reject. */
  private flush(): Promise<void> {
    const records = [...this.vms.values()].map((vm) => this.record(vm));
    this.storeChain = this.storeChain.then(() =>
      this.opts.store.write(records).catch((err: unknown) => {
        this.log.warn(`Could not write the state store: ${describeError(err)}`);
      }),
    );
    return this.storeChain;
  }
}

/** The summoner's view of a state the backend reports. */
function phaseFor(state: VmState, now: number): Phase {
  switch (state) {
    case "running":
      return { kind: "ready", since: now };
    case "paused":
      return PAUSED;
    case "suspended":
      return SUSPENDED;
    case "crashed":
      // Crashed: the next request may restart it at once (no back-off for a crash we did not cause).
      return { kind: "failed", error: new Error("the VM crashed"), retryAt: now };
    case "off":
    case "unknown":
      return OFF;
  }
}

function asError(err: unknown, label: string): Error {
  if (err instanceof JitsuError) return err;
  if (err instanceof Error) return err;
  return new Error(`VM '${label}': ${String(err)}`);
}

function safeCall(fn: () => void, log: Logger): void {
  try {
    fn();
  } catch (err) {
    log.warn(`A summoner listener failed: ${describeError(err)}`);
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sameSpec(a: VmSpec, b: VmSpec): boolean {
  const pa = a.options.pairs;
  const pb = b.options.pairs;
  return pa.length === pb.length && pa.every(([k, v], i) => pb[i]?.[0] === k && pb[i]?.[1] === v);
}

/** `p`, or the signal's reason if it aborts first. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** Sleeps on the injected clock; rejects with the signal's reason if it aborts. */
function sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(signal.reason as Error);
    };
    const timer = clock.setTimer(ms, () => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Milliseconds to the microsecond, for log fields. */
function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
