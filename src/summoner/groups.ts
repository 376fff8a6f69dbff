/**
 * Groups (`group=`, `after=`; README.md "Groups"): VMs that start and stop
 * together, such as an app, its database and a worker.
 *
 *  - A summon of any member starts every member that is not ready, in
 *    parallel, except that a member with `after=X` starts once X is ready;
 *    the query is answered when all members are ready. One group start is in
 *    flight at a time; every member's own start is the centre's (admission,
 *    back-off, readiness), so a member waiting for its `after=` holds no
 *    --max-starting slot.
 *  - A member that fails to start fails the group's summon at once (SERVFAIL).
 *    The group is left as it was: members already up, or whose start is in
 *    flight, stay up (nothing is rolled back); members waiting for the failed
 *    one are not started; the failed member is `failed` with its back-off, and
 *    until that passes a query for any member fails fast. The next query
 *    starts only what is not up. The error is logged and in /status.
 *  - A query for any member is activity of the whole group
 *    (`lastActivity`): the group is idle when none of its members was
 *    queried (or became ready) for 2 x TTL, and is then stopped together
 *    (`stopIdle`), in reverse `after=` order with -m shutdown (a member goes
 *    down once the members that start after it are down), all at once with
 *    the other modes (they freeze or end every member at once).
 *  - A member is answered from memory only while its whole group is ready
 *    (`VmGroup.ready`, read by the centre's hot path): when one member goes
 *    down (a crash, an admin stop), a query for any member starts it again.
 *
 * The part never changes a phase: it starts and stops VMs through its host.
 */
import type { StopMode } from "../backends/contract.js";
import type { Clock, Timer } from "../clock/index.js";
import type { GroupPlan } from "../config/index.js";
import { StartTimeoutError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import type { SummonerState } from "./vm.js";
import type { Vm, VmGroup } from "./vm.js";

/** What groups need from the summoner. */
export interface GroupHost {
  /** The centre's single-flight start of one VM (admission, back-off, readiness); `admin` skips the back-off. */
  summon(vm: Vm, admin: boolean): Promise<readonly string[]>;
  /** Stops `vm` with `mode`, logging `why`; never rejects. */
  stop(vm: Vm, mode: StopMode, why: string): Promise<void>;
}

export interface GroupOptions {
  readonly clock: Clock;
  readonly log: Logger;
  /**
   * --start-timeout (0: none): a group's start answers its queries within
   * it too, even when `after=` chains members' starts one after another.
   */
  readonly startTimeoutSeconds: number;
}

/** A group as /status shows it. */
export interface GroupStatus {
  readonly name: string;
  /**
   * starting or stopping (the group's start or stop in flight), else the
   * members' state when they all share one (ready, off, paused, ...), else
   * failed (a member failed), else partial (some up, some not).
   */
  readonly state: SummonerState | "partial";
  /** Member labels in start order. */
  readonly members: readonly string[];
  /** Per member: the members it starts after. */
  readonly after: Readonly<Record<string, readonly string[]>>;
  /** The last query for any member (clock ms), or null. */
  readonly lastRequest: number | null;
  /** Why the group's last start failed (null once it is ready). */
  readonly lastError: string | null;
}

class Group implements VmGroup {
  ready = false;
  /** Members in start order. */
  members: Vm[] = [];
  /** Per member: the members it starts after. */
  after = new Map<Vm, Vm[]>();
  /** The group's start in flight (resolves when every member is ready). */
  flight: Promise<void> | null = null;
  /** The group's idle stop in flight. */
  stopping: Promise<void> | null = null;
  /** When a start of the group began or ended (clock ms): activity, as a query is. */
  activeAt = 0;
  lastError: string | null = null;

  constructor(readonly name: string) {}

  /** Members that start after `vm` (stopped before it with -m shutdown). */
  dependents(vm: Vm): Vm[] {
    return this.members.filter((m) => this.after.get(m)!.includes(vm));
  }
}

/** Whether `mode` stops a group in reverse `after=` order (one at a time down the chain). */
export function stopsInOrder(mode: StopMode): boolean {
  return mode === "shutdown";
}

export class Groups {
  private readonly groups = new Map<string, Group>();

  constructor(
    private readonly host: GroupHost,
    private readonly opts: GroupOptions,
  ) {}

  /**
   * Takes the groups of the configuration (at start-up and after each reload;
   * `plans` from src/config groupPlans, already checked): a group keeps its
   * object, and so its start or stop in flight, across reloads; members
   * added, removed or moved take effect at once.
   */
  configure(vms: ReadonlyMap<string, Vm>, plans: ReadonlyMap<string, GroupPlan>): void {
    for (const vm of vms.values()) vm.group = null;
    const next = new Map<string, Group>();
    for (const plan of plans.values()) {
      const group = this.groups.get(plan.name) ?? new Group(plan.name);
      group.members = plan.members.map((label) => vms.get(label)!);
      group.after = new Map(
        group.members.map((vm) => [vm, (plan.after.get(vm.spec.label) ?? []).map((l) => vms.get(l)!)]),
      );
      for (const vm of group.members) vm.group = group;
      next.set(plan.name, group);
    }
    this.groups.clear();
    for (const [name, group] of next) {
      this.groups.set(name, group);
      refresh(group);
    }
  }

  /** A member's phase changed: its group's readiness for the hot path. */
  changed(vm: Vm): void {
    if (vm.group !== null) refresh(vm.group as Group);
  }

  /** Starts every member of `vm`'s group that is not ready; resolves with `vm`'s addresses when all are. */
  summon(vm: Vm, admin: boolean): Promise<readonly string[]> {
    const group = vm.group as Group;
    let flight = group.flight;
    if (flight === null) {
      const started = this.bringUp(group, admin, vm.spec.label).finally(() => {
        if (group.flight === started) group.flight = null;
        group.activeAt = this.opts.clock.now();
      });
      group.flight = flight = started;
    }
    return flight.then(() => vm.addresses);
  }

  /** Whether a summon of `vm`'s group now would begin a start (not join one, nor fail fast in a back-off). */
  wouldStart(vm: Vm): boolean {
    const group = vm.group as Group;
    return group.flight === null && backingOff(group, this.opts.clock.now()) === null;
  }

  /**
   * Whether requests answered elsewhere for `vm` (a --workers worker's copy)
   * should summon its group again: it is not ready, and nothing is starting
   * or has failed in it (as for a single VM: a failed one is not summoned).
   */
  shouldResummon(vm: Vm): boolean {
    const group = vm.group as Group;
    if (group.ready || group.flight !== null) return false;
    return group.members.every(
      (m) => m.flight === null && m.phase.kind !== "failed" && m.phase.kind !== "starting",
    );
  }

  /**
   * When `vm` was last in use: its last request, last connection or ready
   * time; for a group member, the latest of its whole group's (and now while
   * the group starts). Connections are activity: now while `vm` (or any
   * member of its group) has open ones. The reaper's idle test, admission's
   * eviction and /status idleStopAt all judge by this, and only by this.
   */
  lastActivity(vm: Vm): number {
    const now = this.opts.clock.now();
    const group = vm.group as Group | null;
    if (group === null) return ownActivity(vm, now);
    if (group.flight !== null) return now;
    let last = group.activeAt;
    for (const m of group.members) last = Math.max(last, ownActivity(m, now));
    return last;
  }

  /** The VMs that are in use together with `vm`: its group's members, or `vm` alone. */
  membersOf(vm: Vm): readonly Vm[] {
    const group = vm.group as Group | null;
    return group === null ? [vm] : group.members;
  }

  /** Stops an idle VM: a group member's whole group (the reaper judged it by `lastActivity`). */
  stopIdle(vm: Vm, mode: StopMode, why: string): Promise<void> {
    const group = vm.group as Group | null;
    if (group === null) return this.host.stop(vm, mode, why);
    if (group.stopping !== null) return group.stopping;
    if (group.flight !== null) return Promise.resolve(); // starting: in use
    const up = group.members.filter((m) => m.phase.kind === "ready" && m.flight === null);
    if (up.length === 0) return Promise.resolve();
    const order = stopsInOrder(mode)
      ? stopStages(group, up)
          .map((stage) => stage.join(" and "))
          .join(", then ")
      : up.map((m) => m.spec.label).join(", ");
    this.opts.log.info(`Stopping group '${group.name}' (${mode}) ${why}: ${order}`);
    const stopping = this.inOrder(group.members, mode, (m) =>
      up.includes(m) ? this.host.stop(m, mode, `with group '${group.name}' ${why}`) : Promise.resolve(),
    ).finally(() => {
      if (group.stopping === stopping) group.stopping = null;
      refresh(group);
    });
    group.stopping = stopping;
    refresh(group);
    return stopping;
  }

  /**
   * Runs `stopOne` on every VM of `vms` (at exit), each group member once the
   * members that start after it are done when `mode` stops in order.
   */
  stopAll(vms: readonly Vm[], mode: StopMode, stopOne: (vm: Vm) => Promise<void>): Promise<void> {
    return this.inOrder(vms, mode, stopOne);
  }

  status(): GroupStatus[] {
    return [...this.groups.values()].map((group) => {
      let lastRequest: number | null = null;
      for (const m of group.members) {
        if (m.lastRequest !== null) lastRequest = Math.max(lastRequest ?? 0, m.lastRequest);
      }
      return {
        name: group.name,
        state: groupState(group),
        members: group.members.map((m) => m.spec.label),
        after: Object.fromEntries(
          group.members.map((m) => [m.spec.label, group.after.get(m)!.map((d) => d.spec.label)]),
        ),
        lastRequest,
        lastError: group.lastError,
      };
    });
  }

  /** The labels of the members `vm` starts after (none outside a group). */
  afterOf(vm: Vm): string[] {
    const group = vm.group as Group | null;
    return group === null ? [] : (group.after.get(vm) ?? []).map((d) => d.spec.label);
  }

  // ---- starting -------------------------------------------------------------

  /** `label`: the member whose summon began it (named by a timeout). */
  private async bringUp(group: Group, admin: boolean, label: string): Promise<void> {
    // A query that arrives while the group stops waits for the stop, then starts it again.
    if (group.stopping !== null) await group.stopping;
    const { clock, log } = this.opts;
    const began = clock.now();
    group.activeAt = began;
    const members = group.members;
    const waiting = admin ? null : backingOff(group, began);
    if (waiting !== null) throw waiting.error;
    let failure: { vm: Vm; error: unknown } | null = null;
    let startedAny = false;
    const ups = new Map<Vm, Promise<void>>();
    const up = (vm: Vm): Promise<void> => {
      let p = ups.get(vm);
      if (p === undefined) {
        const deps = group.after.get(vm) ?? [];
        p = Promise.all(deps.map(up)).then(async () => {
          if (vm.phase.kind === "ready" && vm.flight === null) return;
          startedAny = true;
          try {
            await this.host.summon(vm, admin);
          } catch (err) {
            failure ??= { vm, error: err };
            throw err;
          }
        });
        ups.set(vm, p);
      }
      return p;
    };
    // Each member's start has its own timeout; this one bounds a chain of them (a step later,
    // so that a member's own timeout, more precise, has the first word).
    const timeoutS = this.opts.startTimeoutSeconds;
    let timer: Timer | null = null;
    const timedOut = new Error("group start timeout");
    const deadline =
      timeoutS > 0
        ? new Promise<never>((_, reject) => {
            timer = clock.setTimer(timeoutS * 1000 + 1, () => reject(timedOut));
          })
        : null;
    const all = Promise.all(members.map(up));
    try {
      await (deadline === null ? all : Promise.race([all, deadline]));
    } catch (err) {
      if (err === timedOut) {
        all.catch(() => undefined); // the members' starts go on, and log their own end
        const error = new StartTimeoutError(
          label,
          timeoutS,
          `waiting for group '${group.name}': ${describeMembers(group, null)}`,
        );
        group.lastError = describeError(error);
        log.warn(`Group '${group.name}' is not ready: ${group.lastError} (the members up stay up)`);
        throw error;
      }
      const failed: { vm: Vm; error: unknown } = failure ?? { vm: members[0]!, error: err };
      group.lastError = `VM '${failed.vm.spec.label}' could not be started: ${describeError(failed.error)}`;
      log.warn(
        `Group '${group.name}' is not ready: ${group.lastError}; ${describeMembers(group, failed.vm)} (the members up stay up)`,
      );
      throw failed.error;
    } finally {
      (timer as Timer | null)?.cancel();
    }
    group.lastError = null;
    if (startedAny) {
      log.info(
        `Group '${group.name}' is ready after ${clock.now() - began} ms (${members.map((m) => m.spec.label).join(", ")})`,
      );
    }
  }

  // ---- stopping -------------------------------------------------------------

  /**
   * `each` on every VM of `vms`; when `mode` stops in order, a group member's
   * once those of its group that start after it are done. Never rejects.
   */
  private inOrder(vms: readonly Vm[], mode: StopMode, each: (vm: Vm) => Promise<void>): Promise<void> {
    const ordered = stopsInOrder(mode);
    const done = new Map<Vm, Promise<void>>();
    const down = (vm: Vm): Promise<void> => {
      let p = done.get(vm);
      if (p === undefined) {
        const group = vm.group as Group | null;
        const first = ordered && group !== null ? group.dependents(vm).filter((d) => vms.includes(d)) : [];
        p = Promise.all(first.map(down))
          .then(() => each(vm))
          .catch((err: unknown) =>
            this.opts.log.warn(`Stopping VM '${vm.spec.label}': ${describeError(err)}`),
          );
        done.set(vm, p);
      }
      return p;
    };
    return Promise.all(vms.map(down)).then(() => undefined);
  }
}

/**
 * A VM's own last use: now while it has open connections (held or relayed by
 * src/activator), else the latest of its last request, its last connection
 * (the last one closed, or the backend counted some) and when it became ready.
 */
function ownActivity(vm: Vm, now: number): number {
  if (vm.openConnections > 0) return now;
  return Math.max(
    vm.lastRequest ?? 0,
    vm.lastConnection ?? 0,
    vm.phase.kind === "ready" ? vm.phase.since : 0,
  );
}

/**
 * The labels of `up` in the stages of an ordered stop: first the members no
 * other member starts after, then those whose dependents are all down, ...
 */
function stopStages(group: Group, up: readonly Vm[]): string[][] {
  const depth = new Map<Vm, number>();
  const depthOf = (vm: Vm): number => {
    let d = depth.get(vm);
    if (d === undefined) {
      d = Math.max(-1, ...group.dependents(vm).map(depthOf)) + 1;
      depth.set(vm, d);
    }
    return d;
  };
  const stages: string[][] = [];
  for (const vm of up) (stages[depthOf(vm)] ??= []).push(vm.spec.label);
  return stages.filter((stage) => stage !== undefined);
}

function refresh(group: Group): void {
  group.ready = group.stopping === null && group.members.every((m) => m.phase.kind === "ready");
}

/** A member's failed start whose back-off has not passed (a summon fails fast with its error), or null. */
function backingOff(group: Group, now: number): { vm: Vm; error: Error } | null {
  for (const m of group.members) {
    const phase = m.phase;
    if (m.flight === null && phase.kind === "failed" && now < phase.retryAt)
      return { vm: m, error: phase.error };
  }
  return null;
}

function groupState(group: Group): GroupStatus["state"] {
  if (group.flight !== null) return "starting";
  if (group.stopping !== null) return "stopping";
  const kinds = new Set(group.members.map((m) => m.phase.kind));
  if (kinds.size === 1) return [...kinds][0]!;
  if (kinds.has("failed")) return "failed";
  return "partial";
}

/** "web was not started (it starts after db); worker is ready" for the failure's log line. */
function describeMembers(group: Group, failed: Vm | null): string {
  const parts: string[] = [];
  for (const m of group.members) {
    if (m === failed) continue;
    const label = m.spec.label;
    const kind = m.phase.kind;
    if (kind === "ready") parts.push(`${label} is ready`);
    else if (kind === "starting" || m.flight !== null) parts.push(`${label} is starting`);
    else {
      const deps = group.after.get(m)!.map((d) => d.spec.label);
      parts.push(
        `${label} was not started${deps.length > 0 ? ` (it starts after ${deps.join(" and ")})` : ""}`,
      );
    }
  }
  return parts.length === 0 ? "it is the only member" : parts.join("; ");
}
