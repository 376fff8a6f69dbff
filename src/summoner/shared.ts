/**
 * Shared: the summoner's part for several jitsu instances serving the same
 * names (`--etcd`, README "Two name servers"). Through a `SharedState` (the
 * EtcdStore) it
 * - takes the VM's start lock before a start (called by the centre after
 *   admission), so one instance starts a VM and the others wait for it to be
 *   ready, then adopt it;
 * - publishes this instance's records (requests, last request, state) once a
 *   second, behind the hot path, and gives the reaper's idle test the latest
 *   activity over every instance;
 * - lets the reaper stop idle VMs only on the elected instance, and only while
 *   it can see the others;
 * - re-reads a VM another instance stopped, so it is not answered from memory.
 */
import type { Clock, Timer } from "../clock/index.js";
import type { Logger } from "../log/index.js";
import type { SharedState, StartLock } from "../store/index.js";
import type { Vm } from "./vm.js";

/** How often this instance's records are published. */
export const PUBLISH_INTERVAL_MS = 1000;

export interface SharedHost {
  vm(label: string): Vm | undefined;
  /** Writes every VM's record to the store; never rejects. */
  flush(): Promise<void>;
  /** Re-reads `vm`'s state from the backend (another instance changed it). */
  recheck(vm: Vm): void;
}

export class Shared {
  private timer: Timer | null = null;
  private closed = false;

  constructor(
    private readonly host: SharedHost,
    private readonly state: SharedState,
    private readonly opts: { clock: Clock; log: Logger },
  ) {
    state.onRemoteState((label, to) => {
      const vm = host.vm(label);
      if (vm === undefined || vm.flight !== null) return;
      // Stopped (or being stopped) by the reaper's instance: stop answering it from memory.
      if (vm.phase.kind === "ready" && to !== "ready" && to !== "starting") host.recheck(vm);
    });
  }

  start(): void {
    if (this.closed) return;
    this.timer = this.opts.clock.setTimer(PUBLISH_INTERVAL_MS, () => {
      void this.host.flush().finally(() => this.start());
    });
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = null;
  }

  /** Before a start: this instance's lock on the VM, or null when another instance made it ready. */
  lockStart(vm: Vm, signal: AbortSignal): Promise<StartLock | null> {
    return this.state.lockStart(vm.spec.label, signal);
  }

  /**
   * After a start held the lock: the ready record goes to etcd first (the
   * instances waiting see it), then the lock is released. Not awaited by the
   * start: the query is answered at once.
   */
  async release(lock: StartLock, ready: boolean): Promise<void> {
    if (ready) await this.host.flush();
    await lock.release();
  }

  /** The latest activity of `vm` over every instance (`local`: this instance's). */
  lastActivity(vm: Vm, local: number): number {
    const shared = this.state.lastRequest(vm.spec.label);
    return shared === null ? local : Math.max(local, shared);
  }

  /** Whether this instance may stop idle VMs now: it is the elected reaper and sees the others. */
  mayStopIdle(): boolean {
    return this.state.isReaper();
  }
}
