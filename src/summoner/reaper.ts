/**
 * The idle reaper: every `intervalMs` on the injected clock, stops the ready
 * VMs nobody asked for during 2 x TTL, re-reads the state of the others (a VM
 * stopped behind our back is noticed), settles VMs whose start failed, and has
 * the store written. Passes never overlap.
 */
import type { StopMode, VmBackend, VmState } from "../backends/contract.js";
import type { Clock, Timer } from "../clock/index.js";
import { describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { OFF, phaseFor, type Phase, type Vm } from "./vm.js";

/** What the reaper needs from the summoner. */
export interface ReaperHost {
  vms(): Iterable<Vm>;
  /** Stops `vm` with `mode`, logging `why`; never rejects. */
  stop(vm: Vm, mode: StopMode, why: string): Promise<void>;
  /** Stops a ready VM found idle: a group member's whole group (groups.ts); never rejects. */
  stopIdle(vm: Vm, mode: StopMode, why: string): Promise<void>;
  /**
   * When `vm` was last in use: its last request, last connection or ready
   * time, a group member's its group's; now while any of them has open
   * connections (groups.ts `lastActivity`, the one place that says so).
   */
  lastActivity(vm: Vm): number;
  /** The VMs whose connections keep `vm` up: its group's members, or itself. */
  membersOf(vm: Vm): readonly Vm[];
  /** Whether this instance may stop idle VMs now (--etcd: the elected reaper, seeing the others). */
  mayStopIdle(): boolean;
  setPhase(vm: Vm, phase: Phase): void;
  /** Writes every VM's record to the store; never rejects. */
  flush(): Promise<void>;
}

export interface ReaperOptions {
  readonly backend: VmBackend;
  readonly clock: Clock;
  readonly log: Logger;
  readonly ttlSeconds: number;
  readonly stopMode: StopMode;
  /** How often a pass runs. */
  readonly intervalMs: number;
}

export class Reaper {
  private timer: Timer | null = null;
  private ticking: Promise<void> | null = null;
  private closed = false;
  /**
   * Run at the start of each pass, before anything is judged idle: with
   * --workers, it collects the requests the workers answered but have not yet
   * reported (see src/cluster). Its failure is logged and the pass goes on.
   */
  beforeReap: (() => Promise<void>) | undefined = undefined;

  constructor(
    private readonly host: ReaperHost,
    private readonly opts: ReaperOptions,
  ) {}

  start(): void {
    if (this.closed) return;
    this.timer = this.opts.clock.setTimer(this.opts.intervalMs, () => {
      this.start();
      // A pass still running (a backend call that hangs) does not hold the store's writes back.
      if (this.ticking !== null) void this.host.flush();
      void this.tick();
    });
  }

  /** One pass; a call during a pass returns that pass. */
  tick(): Promise<void> {
    if (this.ticking !== null) return this.ticking;
    const before = this.beforeReap;
    const pass =
      before === undefined
        ? this.reap()
        : before()
            .catch((err: unknown) =>
              this.opts.log.warn(
                `Before the reaper pass: ${describeError(err)} (going on with what is known)`,
              ),
            )
            .then(() => this.reap());
    this.ticking = pass.finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  /** No more passes; resolves when the one running (if any) has finished. */
  async close(): Promise<void> {
    this.closed = true;
    this.timer?.cancel();
    this.timer = null;
    if (this.ticking !== null) await this.ticking;
  }

  private async reap(): Promise<void> {
    // First: the counts are written even when a backend call below hangs (a daemon SIGSTOPped),
    // so a jitsu killed meanwhile loses at most one interval of them.
    const flushed = this.host.flush();
    const { clock, ttlSeconds } = this.opts;
    const now = clock.now();
    const idleMs = 2 * ttlSeconds * 1000;
    const jobs: Promise<void>[] = [];
    // With --etcd, only the elected instance stops idle VMs, and only while it sees the others.
    const mayStop = this.host.mayStopIdle();
    for (const vm of this.host.vms()) {
      const phase = vm.phase;
      if (vm.flight !== null) continue;
      if (phase.kind === "failed") {
        // Not while the backend's start may still be going on: a stop now could be undone by it.
        if (phase.runs === "pending") continue;
        // Given up on and known not to run: nothing to settle until its reset.
        if (phase.givenUp === true && phase.runs === "no") continue;
        // A start that failed its readiness may have left the VM running: stop it once idle.
        const last = Math.max(this.host.lastActivity(vm), vm.startedAt ?? 0);
        if (now - last >= idleMs && mayStop)
          jobs.push(this.settleFailed(vm, Math.round((now - last) / 1000)));
        continue;
      }
      if (phase.kind !== "ready") continue;
      const last = this.host.lastActivity(vm);
      if (now - last >= idleMs && mayStop) {
        jobs.push(this.stopIdle(vm, now - last));
        continue;
      }
      if (vm.seenConnections > 0) jobs.push(this.countConnections(vm).then(() => this.recheck(vm)));
      else jobs.push(this.recheck(vm));
    }
    await Promise.all(jobs);
    await flushed;
    // Again, with what the stops and re-reads changed (one short transaction).
    if (jobs.length > 0) await this.host.flush();
  }

  /**
   * A ready VM idle for 2 x TTL: stopped, unless the backend counts
   * established connections to it (clients that took the direct path, the
   * VM's own address): then it is busy as of now, and checked again later.
   */
  private async stopIdle(vm: Vm, idleMs: number): Promise<void> {
    const { backend, clock, log, stopMode } = this.opts;
    if (backend.connections !== undefined) {
      // Any member's established connections keep its whole group up.
      let open = 0;
      for (const m of this.host.membersOf(vm)) {
        if (m.phase.kind === "ready") open += await this.countConnections(m);
      }
      if (open > 0) {
        log.debug(`VM '${vm.spec.label}' is idle but has ${open} established connection(s); keeping it`);
        return this.recheck(vm);
      }
      // Anything may have happened while we asked: a query, a start, a stop, a held connection.
      if (vm.phase.kind !== "ready" || vm.flight !== null) return;
      const idle = clock.now() - this.host.lastActivity(vm);
      if (idle < 2 * this.opts.ttlSeconds * 1000) return;
      idleMs = idle;
    }
    await this.host.stopIdle(vm, stopMode, `after ${Math.round(idleMs / 1000)} s idle`);
  }

  /** The backend's count of established connections (0 if it cannot say); some count as activity now. */
  private async countConnections(vm: Vm): Promise<number> {
    const { backend, clock, log } = this.opts;
    let open = 0;
    try {
      open = (await backend.connections?.(vm.ref)) ?? 0;
    } catch (err) {
      log.warn(`Could not count the connections of VM '${vm.spec.label}': ${describeError(err)}`);
    }
    vm.seenConnections = open;
    if (open > 0) vm.lastConnection = clock.now();
    return open;
  }

  /** The backend's view of a VM; null (and a warning) if it cannot say. */
  private async readState(vm: Vm): Promise<VmState | null> {
    try {
      return await this.opts.backend.state(vm.ref);
    } catch (err) {
      this.opts.log.warn(`Could not read the state of VM '${vm.spec.label}': ${describeError(err)}`);
      return null;
    }
  }

  /** A failed VM idle for 2 x TTL: stopped if it runs after all, else marked off (no more checks). */
  private async settleFailed(vm: Vm, idleS: number): Promise<void> {
    const state = await this.readState(vm);
    if (state === null) return;
    if (vm.phase.kind !== "failed" || vm.flight !== null) return;
    if (state === "running" && vm.startedByUs) {
      await this.host.stop(vm, this.opts.stopMode, `after ${idleS} s idle (it never became ready)`);
    } else if (state === "off" || state === "crashed") {
      // Given up on (--max-failures): it stays failed until its reset, a reload or an admin start.
      const phase = vm.phase;
      this.host.setPhase(vm, phase.givenUp === true ? { ...phase, runs: "no" } : OFF);
    }
  }

  /** Re-reads a ready VM's state, so a crash or a stop behind our back is noticed. */
  async recheck(vm: Vm): Promise<void> {
    const state = await this.readState(vm);
    if (state === null) return;
    if (vm.phase.kind !== "ready" || vm.flight !== null || state === "running" || state === "unknown") return;
    const type = state === "crashed" ? "vm.failed" : "vm.stopped";
    this.opts.log.warn({ type }, `VM '${vm.spec.label}' is ${state} (changed behind our back)`);
    this.host.setPhase(vm, phaseFor(state, this.opts.clock.now()));
  }
}
