/**
 * The Summoner (DESIGN.md "Summoner"): the centre of the per-VM state machine.
 * It owns the VM table, answers requests (the hot path, and the one start in
 * flight that every cold request joins), brings VMs up with back-off on
 * failure, stops them, and tells its listeners. The other parts each live in a
 * file of their own and work on the same `Vm` records (vm.ts):
 * readiness.ts (what a VM must pass before it is answered), reaper.ts (idle
 * stops and re-checks), backend-events.ts (changes behind our back),
 * reconcile.ts (the store and reloads) and admission.ts (how many may start
 * or run at once, and how often a client may summon). It knows the VmBackend
 * contract only.
 */
import type { StopMode, VmBackend, VmRef, VmState } from "../backends/contract.js";
import type { Clock } from "../clock/index.js";
import { groupPlans, type VmSpec } from "../config/index.js";
import { BackendError, ConfigError, JitsuError, StartTimeoutError, describeError } from "../errors/index.js";
import type { EventBus, EventInput, StopReason } from "../events/index.js";
import { perVmLevel, redactUri, type Logger } from "../log/index.js";
import type { SharedState, SharedStatus, StartLock, Store } from "../store/index.js";
import { Admission, NO_LIMITS, type AdmissionStatus, type StartSlot } from "./admission.js";
import { applyBackendEvent, type EventHost } from "./backend-events.js";
import { Groups, type GroupStatus } from "./groups.js";
import { abortable, waitReady, type StartStep } from "./readiness.js";
import { Reaper } from "./reaper.js";
import { Shared } from "./shared.js";
import {
  StoreWriter,
  recordOf,
  readinessOf,
  reloadVms,
  resolveVm,
  type Adoption,
  type ReconcileOptions,
  type ReloadCounts,
  type StoreHealth,
} from "./reconcile.js";
import { OFF, phaseAfterStop, phaseFor, type Phase, type SummonerState, type Vm } from "./vm.js";

export type { SummonerState } from "./vm.js";
export type { GroupStatus } from "./groups.js";

export interface SummonerOptions {
  backend: VmBackend;
  backendName: string;
  /** Where the backend connects (-c, without a password), for messages; none for local backends. */
  backendTarget?: string;
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
  /** --max-starting: at most this many starts at once (default: no limit). */
  maxStarting?: number;
  /** --max-running: at most this many VMs up at once, evicting idle ones (default 0: no limit). */
  maxRunning?: number;
  /** --summon-rate: cold summons per second per client prefix (default 0: no limit). */
  summonRate?: number;
  /** Where every state change, start, stop and failure is reported (src/events); none in most unit tests. */
  events?: EventBus;
  /** --max-failures: failed starts in a row before the VM is given up on (default 0: never). */
  maxFailures?: number;
  /** --failure-reset: how long a VM given up on waits for its next try (default 300). */
  failureResetSeconds?: number;
  /** --etcd: the state shared with the other instances (usually the store itself, an EtcdStore). */
  shared?: SharedState;
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
  /** Failed starts in a row (0 once one succeeds). */
  failures: number;
  /** When a failed VM may be tried again (ms since the epoch), or null when it is not failed. */
  nextTryAt: number | null;
  /** It failed --max-failures starts in a row: not tried again before nextTryAt, a reload or an admin start. */
  givenUp: boolean;
  /** The DNS TTL in seconds (the VM is stopped after 2 x TTL idle). */
  ttlSeconds: number;
  /** Its group (`group=`), or null. */
  group: string | null;
  /** The members of its group it starts after (`after=`, as labels). */
  after: string[];
  /** When the state last changed (ms since the epoch, on the clock). */
  stateSince: number;
  /** When a ready VM will be stopped if nobody asks for it (the reaper's next pass after this); null if not ready. */
  idleStopAt: number | null;
  /** The backend's name (`-x`). */
  backend: string;
  /** Where it lives: its `connect=` URI, else -c's (passwords hidden); null for a local backend. */
  host: string | null;
  /** Connections held or relayed to it now (src/activator): it is not idle while any is open. */
  openConnections: number;
  /** When a connection last counted as activity (the last one closed, or the backend saw some). */
  lastConnection: number | null;
}

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** --failure-reset's default: 5 x the longest back-off, so a VM given up on costs one try in 5 minutes. */
export const DEFAULT_FAILURE_RESET_S = 300;

export class Summoner {
  private readonly vms = new Map<string, Vm>();
  private readonly backend: VmBackend;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly changeListeners: (() => void)[] = [];
  private readonly startedListeners: ((label: string, ref: VmRef) => void)[] = [];
  private readonly reaper: Reaper;
  private readonly admission: Admission;
  private readonly groups: Groups;
  private readonly storeWriter: StoreWriter;
  /** --etcd: start locks, shared activity, the elected reaper (shared.ts); null alone. */
  private readonly shared: Shared | null;
  /** What reconcile.ts and backend-events.ts need. */
  private readonly parts: ReconcileOptions & EventHost;
  private closed = false;

  private constructor(private readonly opts: SummonerOptions) {
    this.backend = opts.backend;
    this.clock = opts.clock;
    this.log = opts.log;
    this.parts = {
      backend: opts.backend,
      backendName: opts.backendName,
      clock: opts.clock,
      log: opts.log,
      stopMode: opts.stopMode,
      setPhase: (vm, phase) => this.setPhase(vm, phase),
      adopt: (vm) => this.adopt(vm),
    };
    this.storeWriter = new StoreWriter(opts.store, opts.log, opts.clock);
    this.shared =
      opts.shared === undefined
        ? null
        : new Shared(
            {
              vm: (label) => this.vms.get(label),
              flush: () => this.flush(),
              recheck: (vm) => void this.reaper.recheck(vm),
            },
            opts.shared,
            { clock: opts.clock, log: opts.log },
          );
    this.groups = new Groups(
      {
        summon: (vm, admin) => this.summonOne(vm, admin),
        stop: (vm, mode, why) => this.stop(vm, mode, why, "idle"),
      },
      { clock: opts.clock, log: opts.log, startTimeoutSeconds: opts.startTimeoutSeconds },
    );
    this.reaper = new Reaper(
      {
        vms: () => this.vms.values(),
        stop: (vm, mode, why) => this.stop(vm, mode, why, "idle"),
        stopIdle: (vm, mode, why) => this.groups.stopIdle(vm, mode, why),
        lastActivity: (vm) => this.lastActivity(vm),
        membersOf: (vm) => this.groups.membersOf(vm),
        mayStopIdle: () => this.shared?.mayStopIdle() ?? true,
        setPhase: (vm, phase) => this.setPhase(vm, phase),
        flush: () => this.flush(),
      },
      {
        backend: opts.backend,
        clock: opts.clock,
        log: opts.log,
        ttlSeconds: opts.ttlSeconds,
        stopMode: opts.stopMode,
        intervalMs: opts.reaperIntervalMs ?? 5000,
      },
    );
    this.admission = new Admission(
      {
        vms: () => this.vms.values(),
        stop: (vm, why) => this.stop(vm, opts.stopMode, why, "eviction"),
        lastActivity: (vm) => this.lastActivity(vm),
        beforeEvict: (vms) => this.beforeEvict?.(vms.map((vm) => vm.spec.label)) ?? null,
      },
      {
        clock: opts.clock,
        log: opts.log,
        ttlSeconds: opts.ttlSeconds,
        maxStarting: opts.maxStarting ?? NO_LIMITS.maxStarting,
        maxRunning: opts.maxRunning ?? NO_LIMITS.maxRunning,
        summonRate: opts.summonRate ?? NO_LIMITS.summonRate,
      },
    );
  }

  /**
   * Run at the start of each reaper pass, before anything is judged idle: with
   * --workers, it collects the requests the workers answered but have not yet
   * reported (see src/cluster). Its failure is logged and the pass goes on.
   */
  get beforeReap(): (() => Promise<void>) | undefined {
    return this.reaper.beforeReap;
  }

  set beforeReap(fn: (() => Promise<void>) | undefined) {
    this.reaper.beforeReap = fn;
  }

  /**
   * Run before admission control evicts VMs (their labels): with --workers,
   * the workers stop answering them from their copies and report their
   * counts (see src/cluster), so a VM answered a moment ago is not evicted.
   * Its failure is logged and the eviction goes on with what is known.
   */
  beforeEvict: ((labels: readonly string[]) => Promise<void>) | undefined = undefined;

  /**
   * Resolves every VM, reads its state and the
   * store's counters, and starts the reaper. The backend must be connected.
   */
  static async create(opts: SummonerOptions): Promise<Summoner> {
    const s = new Summoner(opts);
    // Checked by the CLI before anything started; checked again for callers of our own.
    const plans = groupPlans(opts.specs, { maxRunning: opts.maxRunning });
    const records = new Map((await s.storeWriter.load()).map((r) => [r.label, r]));
    const adoptions: Adoption[] = [];
    for (const spec of opts.specs) {
      const { vm, adopt } = await resolveVm(s.parts, spec, records.get(spec.label));
      s.vms.set(spec.label, vm);
      if (adopt !== null) adoptions.push({ vm, ...adopt });
    }
    s.groups.configure(s.vms, plans);
    opts.backend.onEvent?.((event) => {
      const vm = s.vms.get(event.vm.label);
      if (vm === undefined || vm.ref.ref !== event.vm.ref) return;
      applyBackendEvent(s.parts, vm, event);
    });
    s.adoptFound(adoptions);
    s.reaper.start();
    s.shared?.start();
    return s;
  }

  // ---- the hot path -------------------------------------------------------

  /**
   * A query for `label` from `client` (its address; none for a caller of our
   * own): the addresses at once when the VM is ready, else a promise of them.
   * Throws SummonRefusedError when `client` may not cause a start now
   * (--summon-rate); a refused query is not counted as a request.
   */
  request(label: string, client?: string): readonly string[] | Promise<readonly string[]> {
    const vm = this.vms.get(label);
    if (vm === undefined)
      return Promise.reject(new ConfigError(`no VM is configured with this label`, { vm: label }));
    // A group member only while its whole group is ready (groups.ts).
    const hot = vm.phase.kind === "ready" && (vm.group === null || vm.group.ready);
    if (client !== undefined && !hot && this.wouldStart(vm)) {
      this.admission.checkRate(client, label);
    }
    vm.totalRequests++;
    vm.lastRequest = this.clock.now();
    if (hot) return vm.addresses;
    return this.summon(vm);
  }

  /**
   * The hot path for a client that may not start VMs (--allow-summon): the
   * addresses if the VM is ready (counted as request() counts), else null.
   * Never starts, resumes or waits.
   */
  requestIfReady(label: string): readonly string[] | null {
    const vm = this.vms.get(label);
    if (vm === undefined || vm.phase.kind !== "ready" || (vm.group !== null && !vm.group.ready)) return null;
    vm.totalRequests++;
    vm.lastRequest = this.clock.now();
    return vm.addresses;
  }

  /**
   * Requests answered elsewhere (a --workers worker, from its copy of the ready
   * VMs) and reported later: counted as if they came through request(). A VM
   * that is no longer up (it stopped in the moment before the worker heard) is
   * summoned again, since those clients were given its address (unless
   * `summon` is false: the last counts of workers closing at shutdown). `at`:
   * when the last of them came (on the clock; default now), if the reporter
   * knows (the splice relay does).
   */
  noteRequests(label: string, count: number, options: { summon?: boolean; at?: number } = {}): void {
    const vm = this.vms.get(label);
    if (vm === undefined || !(count > 0)) return;
    vm.totalRequests += count;
    vm.lastRequest = Math.max(vm.lastRequest ?? -Infinity, options.at ?? this.clock.now());
    const kind = vm.phase.kind;
    if (vm.group !== null) {
      if (!this.groups.shouldResummon(vm)) return;
    } else if (kind === "ready" || kind === "starting" || kind === "failed" || vm.flight !== null) return;
    // Not while shutting down (`summon: false`): nobody will use the VM.
    if (this.closed || options.summon === false) return;
    const what = vm.group === null ? kind : `its group '${vm.group.name}' was not`;
    this.log.info(`VM '${label}' was answered as ready while ${what}; summoning it again`);
    this.summon(vm).catch(() => undefined); // a failure is logged by bringUp (and groups)
  }

  // ---- connections (src/activator) --------------------------------------------

  /**
   * A connection to `label` opened (held while it starts, or relayed): the VM
   * is not idle while any is open. Not a request (the connection's own
   * request() counted that). Unknown labels (removed by a reload) are ignored.
   */
  connectionOpened(label: string): void {
    const vm = this.vms.get(label);
    if (vm !== undefined) vm.openConnections++;
  }

  /** One of them closed (at `at`, default now): when the last one has, the 2 x TTL idle clock starts from then. */
  connectionClosed(label: string, at = this.clock.now()): void {
    const vm = this.vms.get(label);
    if (vm === undefined || vm.openConnections === 0) return;
    vm.openConnections--;
    vm.lastConnection = Math.max(vm.lastConnection ?? -Infinity, at);
    if (vm.openConnections === 0) this.admission.changed();
  }

  /** Open connections per VM label (those with any), for /status. */
  openConnections(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [label, vm] of this.vms) if (vm.openConnections > 0) out.set(label, vm.openConnections);
    return out;
  }

  /**
   * Where the host reaches port `port` of VM `label` at `address` (one of its
   * addresses): the backend's `hostPort` (QEMU's hostfwd) if it has one, else
   * that address and port.
   */
  endpoint(label: string, address: string, port: number): { host: string; port: number } {
    const vm = this.vms.get(label);
    const mapped = vm === undefined ? null : (this.backend.hostPort?.(vm.ref, port) ?? null);
    return mapped === null ? { host: address, port } : { host: mapped.host, port: mapped.port };
  }

  /** Each ready VM's label and addresses (the same array instances the hot path returns). */
  readyAddresses(): Map<string, readonly string[]> {
    const out = new Map<string, readonly string[]>();
    for (const [label, vm] of this.vms) {
      if (vm.phase.kind === "ready" && (vm.group === null || vm.group.ready)) out.set(label, vm.addresses);
    }
    return out;
  }

  // ---- admin ----------------------------------------------------------------

  /** Starts `label` now (a group member: its whole group), ignoring the back-off. */
  async startVm(label: string): Promise<void> {
    const vm = this.get(label);
    if (vm.phase.kind === "ready" && (vm.group === null || vm.group.ready)) return;
    if (vm.phase.kind === "failed" && vm.phase.givenUp === true && vm.flight === null) {
      this.log.info(`VM '${label}' is tried again (admin start) after ${vm.failures} failed starts`);
      vm.failures = 0;
    }
    await this.summon(vm, true);
  }

  /**
   * Stops `label` now with `mode`: that VM only, even in a group (its group is
   * then not ready, and the next query for any member starts it again).
   */
  async stopVm(label: string, mode: StopMode = this.opts.stopMode): Promise<void> {
    const vm = this.get(label);
    if (vm.flight !== null) await vm.flight.catch(() => undefined);
    if (vm.phase.kind === "stopping") await vm.phase.done;
    const state = await this.backend.state(vm.ref);
    if (state === "off" || state === "crashed") {
      this.setPhase(vm, OFF);
      return;
    }
    await this.stop(vm, mode, "on request", "admin");
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
      failures: vm.failures,
      nextTryAt: vm.phase.kind === "failed" ? vm.phase.retryAt : null,
      givenUp: vm.phase.kind === "failed" && vm.phase.givenUp === true,
      ttlSeconds: this.opts.ttlSeconds,
      group: vm.group?.name ?? null,
      after: this.groups.afterOf(vm),
      stateSince: vm.since,
      idleStopAt: this.idleStopAt(vm),
      backend: this.opts.backendName,
      host: this.hostOf(vm) ?? null,
      openConnections: vm.openConnections,
      lastConnection: vm.lastConnection,
    }));
  }

  /** Every group (`group=`): its members in start order, state, last query and last error. */
  groupStatus(): GroupStatus[] {
    return this.groups.status();
  }

  /** A ready VM's earliest idle stop: 2 x TTL after its last activity (its group's, for a member). */
  private idleStopAt(vm: Vm): number | null {
    if (vm.phase.kind !== "ready") return null;
    return this.lastActivity(vm) + 2 * this.opts.ttlSeconds * 1000;
  }

  /**
   * When `vm` was last in use: its group's activity, and with --etcd every
   * instance's (for a group member, any member's query on any instance: the
   * group is stopped as one).
   */
  private lastActivity(vm: Vm): number {
    let last = this.groups.lastActivity(vm);
    if (this.shared === null) return last;
    for (const m of this.groups.membersOf(vm)) last = this.shared.lastActivity(m, last);
    return last;
  }

  /** How many VMs are in each state (states with none left out), without building `status()`. */
  stateCounts(): Map<SummonerState, number> {
    const counts = new Map<SummonerState, number>();
    for (const vm of this.vms.values()) counts.set(vm.phase.kind, (counts.get(vm.phase.kind) ?? 0) + 1);
    return counts;
  }

  /** How the state store's writes are going (a full disk, a read-only file). */
  storeHealth(): StoreHealth {
    return this.storeWriter.health();
  }

  /** Admission control as it stands: the limits, starts and VMs up, the queue, evictions. */
  admissionStatus(): AdmissionStatus {
    return this.admission.status();
  }

  /** --etcd: the shared state's endpoints, this instance, whether it sees the others and reaps; null alone. */
  sharedStatus(): SharedStatus | null {
    return this.opts.shared?.describe() ?? null;
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
  async setSpecs(specs: readonly VmSpec[]): Promise<ReloadCounts> {
    // Groups first: a bad group= or after= leaves everything as it was.
    const plans = groupPlans(specs, { maxRunning: this.opts.maxRunning });
    const { vms, counts, adopt } = await reloadVms(this.parts, this.vms, specs);
    this.vms.clear();
    for (const [label, vm] of vms) this.vms.set(label, vm);
    this.groups.configure(this.vms, plans);
    this.adoptFound(adopt);
    // A reload is the user's word that something was fixed: VMs given up on may be tried again.
    for (const vm of this.vms.values()) {
      const phase = vm.phase;
      if (phase.kind !== "failed" || phase.givenUp !== true || vm.flight !== null) continue;
      this.log.info(`VM '${vm.spec.label}' may be started again (configuration reloaded)`);
      vm.failures = 0;
      this.setPhase(vm, phase.runs !== "no" ? { ...phase, retryAt: 0, givenUp: false } : OFF);
    }
    this.changed();
    return counts;
  }

  /** One reaper pass: stop idle VMs, notice crashes, flush the store. Never overlaps another. */
  tick(): Promise<void> {
    return this.reaper.tick();
  }

  /**
   * Stops the reaper and flushes the store. With `stopVms`, first ends the VMs
   * this summoner (or the jitsu before it) started, with `stopMode`, which
   * must end them (destroy, shutdown or save; the CLI's exitStopMode picks
   * it): a VM paused in memory is unpaused first, so that a shutdown reaches
   * it; a VM suspended (saved out of memory) is left as it is.
   */
  async close(options: { stopVms?: boolean; stopMode?: StopMode } = {}): Promise<void> {
    this.closed = true;
    this.admission.close();
    this.shared?.close();
    await this.reaper.close();
    if (options.stopVms === true) {
      const mode = options.stopMode ?? this.opts.stopMode;
      // Group members with -m shutdown: each once those that start after it are down.
      await this.groups.stopAll([...this.vms.values()], mode, (vm) => this.stopAtExit(vm, mode));
    }
    await this.flush();
  }

  // ---- starting -------------------------------------------------------------

  /** Whether a summon of `vm` now would begin a start (not join one, nor fail fast in its back-off). */
  private wouldStart(vm: Vm): boolean {
    if (vm.group !== null) return this.groups.wouldStart(vm);
    const phase = vm.phase;
    return vm.flight === null && !(phase.kind === "failed" && this.clock.now() < phase.retryAt);
  }

  /** Brings `vm` up; a group member with its whole group (groups.ts). */
  private summon(vm: Vm, admin = false): Promise<readonly string[]> {
    return vm.group !== null ? this.groups.summon(vm, admin) : this.summonOne(vm, admin);
  }

  /** The one start in flight of `vm` alone. */
  private summonOne(vm: Vm, admin: boolean): Promise<readonly string[]> {
    if (vm.flight !== null) {
      // An adoption begun by a backend event now has someone who wants the VM up.
      vm.adoptOnly = false;
      return vm.flight;
    }
    const phase = vm.phase;
    if (!admin && phase.kind === "failed" && this.clock.now() < phase.retryAt)
      return Promise.reject(phase.error);
    return this.fly(vm, false);
  }

  /**
   * A backend event found `vm` running while it was not ready and nothing was
   * in flight (started behind our back: `virsh start`, or the backend's
   * re-read after a reconnect). It is adopted through the same flight as a
   * request's adoption (admission, a state re-read, then wait_for_key, the
   * ready= probes and an address), which requests arriving meanwhile join, so
   * its name is not answered before its service is up. Nobody waits for it:
   * a failure is logged and backed off from by bringUp, as any adoption's.
   */
  private adopt(vm: Vm, readySince?: number): void {
    if (this.closed || vm.flight !== null) return;
    this.fly(vm, true, readySince).catch(() => undefined);
  }

  /**
   * VMs found running at start-up or by a reload whose readiness nobody has
   * seen pass (ResolvedVm.adopt in reconcile.ts): each is adopted as one
   * started behind our back, its ready phase dated no later than its last
   * request. One line each at info (at debug above PER_VM_LINES_MAX of them).
   */
  private adoptFound(found: readonly Adoption[]): void {
    const level = perVmLevel(found.length);
    for (const { vm, readySince } of found) {
      this.log[level](
        `VM '${vm.spec.label}' is running; answering it once its readiness passes (${readinessOf(vm.spec, this.backend).join(", ")})`,
      );
      this.adopt(vm, readySince);
    }
    if (level !== "info" && found.length > 0) {
      this.log.info(`${found.length} VMs found running; answering each once its readiness passes`);
    }
  }

  /**
   * Begins the one flight of `vm`; `byEvent`: an adoption nobody asked for (see `adopt`);
   * `readySince`: if it ends ready, the ready phase starts no later than this.
   */
  private fly(vm: Vm, byEvent: boolean, readySince?: number): Promise<readonly string[]> {
    vm.adoptOnly = byEvent;
    const flight = this.bringUp(vm, byEvent, readySince).finally(() => {
      if (vm.flight === flight) vm.flight = null;
    });
    vm.flight = flight;
    return flight;
  }

  private async bringUp(vm: Vm, byEvent: boolean, readySince = Infinity): Promise<readonly string[]> {
    if (vm.phase.kind === "stopping") await vm.phase.done;
    /** The phase before this flight: an adoption that finds nothing to adopt goes back to it. */
    const before = vm.phase;
    const label = vm.spec.label;
    const abort = new AbortController();
    const signal = abort.signal;
    const step: StartStep = { name: "waiting to start" };
    const timeoutS = this.opts.startTimeoutSeconds;
    // Armed before admission: --start-timeout counts the time queued too.
    const timer =
      timeoutS > 0
        ? this.clock.setTimer(timeoutS * 1000, () =>
            abort.abort(new StartTimeoutError(label, timeoutS, step.name)),
          )
        : null;
    /**
     * Admission's slot; null for an adoption (the VM was seen running: it
     * uses nothing a start would), unless it must start the VM after all.
     */
    let slot: StartSlot | null = null;
    /** --etcd: this instance's start lock (null: alone, or another instance made the VM ready). */
    let lock: StartLock | null = null;
    const deadline = timeoutS > 0 ? this.clock.now() + timeoutS * 1000 : Infinity;
    if (!byEvent) {
      try {
        ({ slot, lock } = await this.admitStart(vm, signal, step, deadline));
      } catch (err) {
        timer?.cancel();
        throw this.notStarted(label, signal, err);
      }
    }
    const began = this.clock.now();
    // Named so that a timeout says which backend (and daemon) did not answer.
    step.name = `waiting for the ${this.backendWhere(vm)} to start it`;
    this.setPhase(vm, { kind: "starting", since: began, abort });
    // Precise durations for the log's fields (the clock above has whole ms and may be a test's).
    const t0 = performance.now();
    /** Whether the backend may run the VM now (we asked it to, or found it running). */
    let mayRun = false;
    /** The backend's start, resume or unpause (it may go on after a timeout). */
    let op: Promise<void> | null = null;
    /** Whether the backend's state read or start is what we wait for (a timeout then blames its daemon). */
    let inBackendCall = true;
    try {
      let state = await abortable(this.backend.state(vm.ref), signal);
      if (vm.adoptOnly && state !== "running") {
        // Started behind our back and stopped (or paused) again before anyone asked for it:
        // nothing to adopt, and nothing to start. Ended here, so that no summon joins it now.
        vm.flight = null;
        this.log.info(`VM '${label}' is ${state} by now; not adopting it`);
        this.setPhase(vm, this.phaseNotAdopted(before, state));
        return vm.addresses;
      }
      if (slot === null && state !== "running") {
        // An adoption a request joined finds the VM no longer running: it is started as that
        // request's own flight would start it, admission and the start lock first, in its phase
        // from before meanwhile (so that admission does not count it as up already).
        this.setPhase(vm, before);
        try {
          ({ slot, lock } = await this.admitStart(vm, signal, step, deadline));
        } catch (err) {
          throw new NotAdmitted(this.notStarted(label, signal, err));
        }
        step.name = `waiting for the ${this.backendWhere(vm)} to start it`;
        this.setPhase(vm, { kind: "starting", since: this.clock.now(), abort });
        state = await abortable(this.backend.state(vm.ref), signal);
      }
      let adopted = false;
      let how: "start" | "resume" | "unpause" | "adopt" = "start";
      mayRun = true;
      switch (state) {
        case "running":
          adopted = true;
          how = "adopt";
          // An adoption begun by an event was logged there ("started behind our back").
          if (!byEvent) this.log.info(`VM '${label}' is already running; adopting it`);
          break;
        case "paused":
          how = "unpause";
          this.log.info(`Unpausing VM '${label}'`);
          await abortable((op = this.backend.unpause(vm.ref)), signal);
          break;
        case "suspended":
          how = "resume";
          this.log.info(`Resuming VM '${label}'`);
          await abortable((op = this.backend.resume(vm.ref)), signal);
          break;
        default:
          this.log.info(`Starting VM '${label}'`);
          await abortable((op = this.backend.start(vm.ref)), signal);
          break;
      }
      const backendMs = performance.now() - t0;
      inBackendCall = false;
      if (!adopted) {
        vm.totalStarts++;
        vm.startedAt = this.clock.now();
        vm.startedByUs = true;
        for (const listener of this.startedListeners) safeCall(() => listener(label, vm.ref), this.log);
      }
      await waitReady(vm, this.opts, signal, step, adopted);
      vm.failures = 0;
      vm.lastError = null;
      this.setPhase(vm, { kind: "ready", since: Math.min(this.clock.now(), readySince) });
      // startMs/backendMs (JSON logs): how long the start took, and how much of it the backend's
      // state and start calls; the rest is readiness (wait_for_key, delay, probes, addresses).
      const startMs = round3(performance.now() - t0);
      this.log.info(
        { type: "vm.started", startMs, backendMs: round3(backendMs) },
        `VM '${label}' is ready after ${this.clock.now() - began} ms`,
      );
      this.emit({ type: "vm.started", vm: label, how, durationMs: startMs, backendMs: round3(backendMs) });
      if (lock !== null) {
        const held = lock;
        lock = null;
        void this.shared?.release(held, true);
      }
      return vm.addresses;
    } catch (err) {
      // Never started (its phase was put back): no failure, no back-off.
      if (err instanceof NotAdmitted) throw err.error;
      const error = signal.aborted && signal.reason instanceof Error ? signal.reason : asError(err, label);
      // The daemon was down or hung (not the VM's fault): no back-off, so the
      // first query after it is back starts the VM (the backend bounds its calls),
      // and it does not count toward --max-failures.
      const daemonFault =
        isDaemonFault(err) || (signal.aborted && inBackendCall && this.opts.backendTarget !== undefined);
      if (!daemonFault) vm.failures++;
      const maxFailures = this.opts.maxFailures ?? 0;
      const givenUp = !daemonFault && maxFailures > 0 && vm.failures >= maxFailures;
      const backoff = daemonFault
        ? 0
        : givenUp
          ? (this.opts.failureResetSeconds ?? DEFAULT_FAILURE_RESET_S) * 1000
          : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (vm.failures - 1));
      vm.lastError = describeError(error);
      const failed = {
        kind: "failed",
        error,
        retryAt: this.clock.now() + backoff,
        runs: mayRun ? "pending" : "no",
        givenUp,
      } as const;
      this.setPhase(vm, failed);
      if (givenUp) {
        this.log.error(
          { type: "vm.failed" },
          `VM '${label}' could not be started: ${vm.lastError}; it failed ${vm.failures} times in a row (--max-failures ${maxFailures}): its queries get SERVFAIL at once, and it is not started again before a config reload, an admin start or ${backoff / 1000} s (--failure-reset)`,
        );
      } else {
        this.log.warn(
          { type: "vm.failed" },
          daemonFault
            ? `VM '${label}' could not be started: ${vm.lastError}; the ${this.backendWhere(vm)} did not answer: the next query tries again`
            : `VM '${label}' could not be started: ${vm.lastError}; next try in ${backoff / 1000} s at the earliest`,
        );
      }
      if (mayRun) void this.settleRuns(vm, failed, op);
      throw error;
    } finally {
      timer?.cancel();
      if (!signal.aborted) abort.abort(new Error("start finished"));
      slot?.release();
      if (lock !== null) void this.shared?.release(lock, false);
    }
  }

  /** What a start takes before the backend is asked: admission's slot, then (--etcd) the start lock. */
  private async admitStart(
    vm: Vm,
    signal: AbortSignal,
    step: StartStep,
    deadline: number,
  ): Promise<{ slot: StartSlot; lock: StartLock | null }> {
    const slot = await this.admission.admit(vm, signal, step, deadline);
    if (this.shared === null) return { slot, lock: null };
    step.name = "waiting for the start lock in etcd";
    try {
      return { slot, lock: await this.shared.lockStart(vm, signal) };
    } catch (err) {
      slot.release();
      throw err;
    }
  }

  /**
   * A start that never began (admission refused it, or the wait for a slot
   * or the lock ended): logged and emitted; the VM keeps its phase, and no
   * back-off (it did not fail). The error to throw.
   */
  private notStarted(label: string, signal: AbortSignal, err: unknown): Error {
    const error = signal.aborted && signal.reason instanceof Error ? signal.reason : asError(err, label);
    this.log.warn({ type: "vm.failed" }, `VM '${label}' was not started: ${describeError(error)}`);
    this.emit({
      type: "vm.failed",
      vm: label,
      during: "start",
      error: describeError(error),
      retryInMs: null,
    });
    return error;
  }

  /**
   * The phase of a VM an event adoption found not running (`state`): that
   * state's, except that a failed VM keeps its failure and back-off while the
   * backend says it is off (as an exit event leaves it).
   */
  private phaseNotAdopted(before: Phase, state: VmState): Phase {
    if (before.kind === "failed" && (state === "off" || state === "unknown"))
      return { ...before, runs: "no" };
    return phaseFor(state, this.clock.now());
  }

  /**
   * A failed start that may have left the VM running ("pending"): once the
   * backend's operation has returned, the backend says whether the VM runs
   * ("maybe": it counts as up until it is stopped, by an eviction or the
   * reaper) or not ("no"). An operation that never returns leaves it pending.
   */
  private async settleRuns(
    vm: Vm,
    failed: Phase & { kind: "failed" },
    op: Promise<void> | null,
  ): Promise<void> {
    await op?.catch(() => undefined);
    const state = await this.backend.state(vm.ref).catch(() => "unknown" as VmState);
    if (vm.phase !== failed) return; // a new start, a stop, an event: they know better
    this.setPhase(vm, { ...failed, runs: state === "off" || state === "crashed" ? "no" : "maybe" });
  }

  // ---- stopping -------------------------------------------------------------

  private stop(vm: Vm, mode: StopMode, why: string, reason: StopReason): Promise<void> {
    if (vm.phase.kind === "stopping") return vm.phase.done;
    const label = vm.spec.label;
    this.log.info(`Stopping VM '${label}' (${mode}) ${why}`);
    const began = this.clock.now();
    const done = (async () => {
      try {
        await this.backend.stop(vm.ref, mode);
        this.setPhase(vm, phaseAfterStop(mode));
        this.log.info(
          { type: "vm.stopped" },
          `VM '${label}' stopped (${mode}) after ${this.clock.now() - began} ms`,
        );
      } catch (err) {
        vm.lastError = describeError(err);
        this.log.error({ type: "vm.failed" }, `Could not stop VM '${label}' (${mode}): ${vm.lastError}`);
        this.emit({ type: "vm.failed", vm: label, during: "stop", error: vm.lastError, retryInMs: null });
        const state = await this.backend.state(vm.ref).catch(() => "unknown" as VmState);
        this.setPhase(vm, phaseFor(state, this.clock.now()));
      }
    })();
    this.setPhase(vm, { kind: "stopping", mode, done, reason, since: began });
    return done;
  }

  private async stopAtExit(vm: Vm, mode: StopMode): Promise<void> {
    if (vm.flight !== null) await vm.flight.catch(() => undefined);
    if (vm.phase.kind === "stopping") await vm.phase.done;
    if (!vm.startedByUs || vm.phase.kind === "off") return;
    const label = vm.spec.label;
    const state = await this.backend.state(vm.ref).catch((err: unknown) => {
      this.log.warn(`Could not read the state of VM '${label}' at shutdown: ${describeError(err)}`);
      return "unknown" as VmState;
    });
    if (state === "off" || state === "crashed" || state === "suspended") {
      this.setPhase(vm, phaseFor(state, this.clock.now()));
      return;
    }
    if (state === "paused") {
      this.log.info(`Unpausing VM '${label}' to stop it (${mode}) at shutdown`);
      try {
        await this.backend.unpause(vm.ref);
      } catch (err) {
        // A destroy ends it paused or not; a shutdown is tried anyway, and logs its own failure.
        this.log.warn(`Could not unpause VM '${label}': ${describeError(err)}`);
      }
    }
    await this.stop(vm, mode, "at shutdown", "shutdown");
  }

  // ---- plumbing -------------------------------------------------------------

  /** "libvirt backend at URI" (the VM's host: its connect=, else -c), "process backend": for messages. */
  private backendWhere(vm: Vm): string {
    const target = this.hostOf(vm);
    return `${this.opts.backendName} backend${target === undefined ? "" : ` at ${target}`}`;
  }

  /** The VM's host: its `connect=` URI, else -c's (without password); undefined for a local backend. */
  private hostOf(vm: Vm): string | undefined {
    const target = this.opts.backendTarget;
    if (target === undefined) return undefined;
    const own = vm.spec.connect;
    return own === undefined ? target : redactUri(own);
  }

  private get(label: string): Vm {
    const vm = this.vms.get(label);
    if (vm === undefined) throw new ConfigError("no VM is configured with this label", { vm: label });
    return vm;
  }

  private setPhase(vm: Vm, phase: Phase): void {
    const before = vm.phase;
    vm.phase = phase;
    this.groups.changed(vm);
    if (before.kind !== phase.kind) {
      vm.since = this.clock.now();
      if (this.opts.events !== undefined) this.reportChange(vm, before, phase);
      this.changed();
    }
    // Also within a kind: a failed VM seen off no longer counts as up.
    this.admission.changed();
  }

  /**
   * The events of a change of state: `vm.state` always; `vm.stopped` when a
   * stop ends (with the reason it was begun for) or the VM is found stopped
   * (reason "backend"); `vm.failed` when a start fails or a VM crashes.
   */
  private reportChange(vm: Vm, before: Phase, after: Phase): void {
    const label = vm.spec.label;
    if (this.log.isLevelEnabled("debug"))
      this.log.debug({ type: "vm.state" }, `VM '${label}': ${before.kind} -> ${after.kind}`);
    this.emit({ type: "vm.state", vm: label, from: before.kind, to: after.kind });
    const now = this.clock.now();
    if (after.kind === "off" || after.kind === "paused" || after.kind === "suspended") {
      if (before.kind === "stopping") {
        const durationMs = now - before.since;
        this.emit({
          type: "vm.stopped",
          vm: label,
          reason: before.reason,
          mode: before.mode,
          durationMs,
          to: after.kind,
        });
      } else if (before.kind === "ready") {
        this.emit({
          type: "vm.stopped",
          vm: label,
          reason: "backend",
          mode: null,
          durationMs: null,
          to: after.kind,
        });
      }
    } else if (after.kind === "failed") {
      const during = before.kind === "starting" ? "start" : "run";
      const error = describeError(after.error);
      this.emit({ type: "vm.failed", vm: label, during, error, retryInMs: Math.max(0, after.retryAt - now) });
    }
  }

  private emit(event: EventInput): void {
    this.opts.events?.emit(event);
  }

  private changed(): void {
    for (const listener of this.changeListeners) safeCall(listener, this.log);
  }

  /** Writes every VM's record; writes are serialised and never reject. */
  private flush(): Promise<void> {
    return this.storeWriter.write([...this.vms.values()].map((vm) => recordOf(this.parts, vm)));
  }
}

/** A backend error that blames the daemon (unreachable, hung, connection lost), not the VM. */
function isDaemonFault(err: unknown): boolean {
  return err instanceof BackendError && err.unavailable;
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

/** Milliseconds to the microsecond, for log fields. */
function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** Thrown inside a flight's start when a late admission never began it (see bringUp). */
class NotAdmitted extends Error {
  constructor(readonly error: Error) {
    super(error.message);
  }
}
