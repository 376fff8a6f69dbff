/**
 * The summoner's VMs against what is outside it: the store (a VM's record
 * read back at start-up and written on every reaper pass), the backend (what
 * state a VM is really in when it is resolved) and the configuration (a
 * SIGHUP reload adds, changes and removes VMs without dropping a query).
 */
import type { StopMode, VmBackend } from "../backends/contract.js";
import type { Clock } from "../clock/index.js";
import { samePairs, type VmSpec } from "../config/index.js";
import { describeError } from "../errors/index.js";
import { perVmLevel, type Logger } from "../log/index.js";
import type { Store, VmRecord } from "../store/index.js";
import { describeProbe } from "./probes.js";
import { OFF, phaseFor, sameList, type Vm } from "./vm.js";

export interface ReconcileOptions {
  readonly backend: VmBackend;
  readonly backendName: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly stopMode: StopMode;
}

/** A VM as resolveVm found it. */
export interface ResolvedVm {
  readonly vm: Vm;
  /**
   * Null, or the VM runs but has readiness to pass (`wait_for_key`, `ready=`
   * probes) that nobody has seen pass: it is left `off`, and the summoner
   * adopts it through a start flight (as one started behind its back), so
   * that its name is not answered before its service is up (a jitsu
   * restarted while the VM booted). `readySince`: the ready phase's start
   * once it passes, no later than the last request of the jitsu before, so
   * that the reaper stops it on schedule.
   */
  readonly adopt: { readonly readySince: number } | null;
}

/**
 * The readiness `spec` has beyond the backend's state, one description each:
 * `wait_for_key` (where the backend has it), then the `ready=` probes; empty
 * for none.
 */
export function readinessOf(spec: VmSpec, backend: VmBackend): string[] {
  const parts = spec.ready.map(describeProbe);
  if (spec.waitForKey !== undefined && backend.waitForKey !== undefined) {
    parts.unshift(`wait_for_key '${spec.waitForKey}'`);
  }
  return parts;
}

/**
 * Finds the VM through the backend and reads its state; takes the counters
 * from the store's `record` when it is of the same backend and reference.
 */
export async function resolveVm(
  opts: ReconcileOptions,
  spec: VmSpec,
  record: VmRecord | undefined,
): Promise<ResolvedVm> {
  const { backend, log } = opts;
  const ref = await backend.resolve(spec);
  const state = await backend.state(ref);
  const now = opts.clock.now();
  const known = record !== undefined && record.backend === opts.backendName && record.backendRef === ref.ref;
  // A VM we had summoned (--persistdb) that still runs keeps its last request, so the reaper
  // stops it on schedule rather than 2 x TTL after this restart.
  const wasUp =
    known && (record.state === "ready" || record.state === "starting" || record.state === "stopping");
  const stillUp = state === "running" || state === "paused" || state === "suspended";
  let phase = phaseFor(state, now);
  if (known && phase.kind === "ready") {
    phase = { kind: "ready", since: Math.min(now, record.lastRequest ?? record.startedAt ?? now) };
  }
  if (wasUp && !stillUp) {
    log.info(
      `VM '${spec.label}' was ${record.state} when jitsu last ran, but is ${state} now; marking it off`,
    );
  }
  const vm: Vm = {
    spec,
    ref,
    phase,
    since: now,
    // Frozen specs (buildVmSpec) share their array; the hot path keys its answers by identity.
    addresses: Object.isFrozen(spec.ips) ? spec.ips : Object.freeze([...spec.ips]),
    flight: null,
    adoptOnly: false,
    startedAt: known ? record.startedAt : null,
    totalStarts: known ? record.totalStarts : 0,
    totalRequests: known ? record.totalRequests : 0,
    lastRequest: known ? record.lastRequest : null,
    lastError: null,
    failures: 0,
    openConnections: 0,
    lastConnection: null,
    seenConnections: 0,
    // Started by the jitsu before this one: --stop-on-exit stops it too.
    startedByUs: wasUp && stillUp && record.startedAt !== null,
    group: null,
  };
  if (vm.phase.kind === "ready" && readinessOf(spec, backend).length > 0) {
    const readySince = vm.phase.since;
    vm.phase = OFF;
    return { vm, adopt: { readySince } };
  }
  if (vm.phase.kind === "ready" && spec.ips.length === 0) {
    const found = (await backend.addresses?.(ref)) ?? [];
    if (found.length > 0) vm.addresses = Object.freeze([...found]);
    else vm.phase = OFF; // running but without a known address: the next request adopts it
  }
  return { vm, adopt: null };
}

/** What the store keeps of `vm`. */
export function recordOf(opts: ReconcileOptions, vm: Vm): VmRecord {
  return {
    label: vm.spec.label,
    names: vm.spec.dns,
    ips: vm.addresses,
    backend: opts.backendName,
    backendRef: vm.ref.ref,
    state: vm.phase.kind,
    startedAt: vm.startedAt,
    totalStarts: vm.totalStarts,
    totalRequests: vm.totalRequests,
    lastRequest: vm.lastRequest,
    stopMode: opts.stopMode,
  };
}

/** How the state store's writes are going, for /status ("store"). */
export interface StoreHealth {
  /** Whether the last write succeeded (true before the first). */
  readonly ok: boolean;
  /** Writes that failed since the last one that succeeded. */
  readonly failedWrites: number;
  /** When the first of those failed (ms since the epoch), or null. */
  readonly failingSince: number | null;
  /** Why the last write failed, or null. */
  readonly lastError: string | null;
}

/** A failing store is logged at warn at most this often (a flush runs every reaper pass). */
export const STORE_WARN_INTERVAL_MS = 60_000;

/**
 * Writes to the store one after another, behind the hot path; a failed write
 * is logged, never thrown. Every write carries every VM's whole record, so
 * nothing is lost while the store fails (a full disk, a read-only file): the
 * counters stay in memory and the first write that succeeds has them all.
 * The failure is logged at warn when it begins and then at most once a
 * minute (not once a pass), and its end at info.
 */
export class StoreWriter {
  private chain: Promise<void> = Promise.resolve();
  private failedWrites = 0;
  private failingSince: number | null = null;
  private lastError: string | null = null;
  private lastWarnAt = -Infinity;
  private suppressed = 0;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  load(): Promise<VmRecord[]> {
    return this.store.load();
  }

  health(): StoreHealth {
    return {
      ok: this.failedWrites === 0,
      failedWrites: this.failedWrites,
      failingSince: this.failingSince,
      lastError: this.lastError,
    };
  }

  write(records: readonly VmRecord[]): Promise<void> {
    this.chain = this.chain.then(() =>
      this.store.write(records).then(
        () => this.succeeded(records.length),
        (err: unknown) => this.failed(err),
      ),
    );
    return this.chain;
  }

  private succeeded(count: number): void {
    if (this.failedWrites === 0) return;
    const since = this.failingSince ?? this.clock.now();
    this.log.info(
      `The state store is written again (${count} VMs' records, after ${this.failedWrites} failed writes over ${Math.round((this.clock.now() - since) / 1000)} s); nothing was lost`,
    );
    this.failedWrites = 0;
    this.failingSince = null;
    this.lastError = null;
    this.suppressed = 0;
  }

  private failed(err: unknown): void {
    const now = this.clock.now();
    this.failedWrites++;
    this.failingSince ??= now;
    this.lastError = describeError(err);
    if (now - this.lastWarnAt < STORE_WARN_INTERVAL_MS) {
      this.suppressed++;
      return;
    }
    const more = this.suppressed > 0 ? `; ${this.suppressed} more failed writes since the last warning` : "";
    this.log.warn(
      `Could not write the state store: ${this.lastError} (counts are kept in memory and written when it can be written again${more}; this warning at most once a minute)`,
    );
    this.lastWarnAt = now;
    this.suppressed = 0;
  }
}

/**
 * A reload: the VM table for `specs`. New and changed VMs are resolved first,
 * so a bad spec (a rejection) leaves `current` untouched; unchanged VMs keep
 * their object, state and start in flight; a changed VM keeps its object too
 * (a start in flight finishes on it) and takes the new spec, which applies from
 * its next start. Removed VMs are left out, and left as they are.
 */
export async function reloadVms(
  opts: ReconcileOptions,
  current: ReadonlyMap<string, Vm>,
  specs: readonly VmSpec[],
): Promise<{ vms: Map<string, Vm>; counts: ReloadCounts; adopt: Adoption[] }> {
  const next = new Map<string, Vm>();
  const adopt: Adoption[] = [];
  const updates: (() => void)[] = [];
  // One line per added, changed or removed VM, logged at the end (see logChanges).
  const notes: string[] = [];
  const counts = { added: 0, changed: 0, removed: 0 };
  for (const spec of specs) {
    const old = current.get(spec.label);
    if (old !== undefined && samePairs(old.spec, spec)) {
      next.set(spec.label, old);
      continue;
    }
    const resolved = await resolveVm(opts, spec, old === undefined ? undefined : recordOf(opts, old));
    const fresh = resolved.vm;
    if (old === undefined) {
      const found = resolved.adopt === null ? fresh.phase.kind : "running, to be adopted";
      notes.push(`VM '${spec.label}' added to the configuration (${found})`);
      counts.added++;
      next.set(spec.label, fresh);
      if (resolved.adopt !== null) adopt.push({ vm: fresh, ...resolved.adopt });
      continue;
    }
    next.set(spec.label, old);
    updates.push(() => {
      if (applyChangedSpec(old, fresh) && resolved.adopt !== null) adopt.push({ vm: old, ...resolved.adopt });
      notes.push(`VM '${spec.label}' changed in the configuration`);
      counts.changed++;
    });
  }
  for (const update of updates) update();
  for (const [label, vm] of current) {
    if (!next.has(label)) {
      notes.push(`VM '${label}' removed from the configuration; leaving it as it is (${vm.phase.kind})`);
      counts.removed++;
    }
  }
  logChanges(opts.log, notes, counts);
  return { vms: next, counts, adopt };
}

/** A VM found running with readiness to pass, at start-up or by a reload (see ResolvedVm.adopt). */
export interface Adoption {
  readonly vm: Vm;
  readonly readySince: number;
}

/** What a reload changed: VMs added, changed and removed. */
export interface ReloadCounts {
  added: number;
  changed: number;
  removed: number;
}

/**
 * `old` takes `fresh`'s spec and reference (and, unless it is busy, its
 * phase); true when it is another VM now and took what `fresh` found.
 */
function applyChangedSpec(old: Vm, fresh: Vm): boolean {
  const spec = fresh.spec;
  const sameVm = old.ref.ref === fresh.ref.ref;
  old.spec = spec;
  old.ref = fresh.ref;
  if (!sameList(old.addresses, fresh.addresses) && (spec.ips.length > 0 || !sameVm)) {
    old.addresses = fresh.addresses;
  }
  const busy = old.flight !== null || old.phase.kind === "starting" || old.phase.kind === "stopping";
  if (!sameVm && !busy) {
    if (old.phase.kind !== fresh.phase.kind) {
      old.phase = fresh.phase;
      old.since = fresh.since;
    }
    return true;
  }
  if (old.phase.kind === "failed" && !busy) {
    // A changed configuration is the user's fix: try it at the next request, without back-off
    // (one that may still run stays failed, so that it still counts as up and is still settled).
    old.phase = old.phase.runs !== "no" ? { ...old.phase, retryAt: 0 } : OFF;
    old.failures = 0;
  }
  return false;
}

/**
 * A reload's per-VM lines at info, as for start-up: above PER_VM_LINES_MAX
 * of them, at debug, and one line of counts at info.
 */
function logChanges(log: Logger, notes: readonly string[], counts: ReloadCounts): void {
  const level = perVmLevel(notes.length);
  if (log.isLevelEnabled(level)) for (const note of notes) log[level](note);
  if (level !== "info") {
    log.info(
      `Configuration: ${counts.added} VMs added, ${counts.changed} changed, ${counts.removed} removed (one line each at --log-level debug)`,
    );
  }
}
