/**
 * One VM as the summoner keeps it: its phase (a discriminated union, see the
 * state diagram in README.md), its addresses for the hot path, the one start in
 * flight, and its counters. The parts of the summoner (summoner.ts, readiness,
 * reaper, backend events, reconcile) all work on this record.
 */
import type { StopMode, VmRef, VmState } from "../backends/contract.js";
import type { VmSpec } from "../config/index.js";
import type { StopReason } from "../events/index.js";

export type SummonerState = "off" | "starting" | "ready" | "stopping" | "suspended" | "paused" | "failed";

/** Where a VM is in its life, as the summoner sees it. */
export type Phase =
  | { readonly kind: "off" }
  | { readonly kind: "starting"; readonly since: number; readonly abort: AbortController }
  | { readonly kind: "ready"; readonly since: number }
  | {
      readonly kind: "stopping";
      readonly mode: StopMode;
      readonly done: Promise<void>;
      /** Why it is stopped (the `vm.stopped` event's reason), and since when. */
      readonly reason: StopReason;
      readonly since: number;
    }
  | { readonly kind: "suspended" }
  | { readonly kind: "paused" }
  /**
   * `runs`: whether the backend may still run it (see `FailedRuns`); `givenUp`:
   * it failed --max-failures starts in a row, and `retryAt` is --failure-reset
   * away (a reload or an admin start clears it).
   */
  | {
      readonly kind: "failed";
      readonly error: Error;
      readonly retryAt: number;
      readonly runs: FailedRuns;
      readonly givenUp?: boolean;
    };

/**
 * After a failed start, whether the backend may still run the VM:
 * - "no": it was never asked to, or it says the VM is off;
 * - "pending": its start, resume or unpause has not returned yet, so the VM
 *   may still come up: it counts as up, and nothing stops it until the
 *   backend has answered (a stop before the start returns could be undone by it);
 * - "maybe": the backend did start it (or found it running): it counts as up
 *   (--max-running) until it is stopped or seen off.
 */
export type FailedRuns = "no" | "pending" | "maybe";

/**
 * The group a VM belongs to (`group=`), as the centre's hot path reads it;
 * groups.ts keeps the rest (members, order, the group's start and stop).
 */
export interface VmGroup {
  readonly name: string;
  /** Every member is ready: only then is a member answered from memory. */
  readonly ready: boolean;
}

export interface Vm {
  spec: VmSpec;
  ref: VmRef;
  phase: Phase;
  /** When the phase last changed kind (ms on the clock): the state's age on the status page. */
  since: number;
  /** The answer for the hot path: the same instance while it does not change. */
  addresses: readonly string[];
  /** The one start in flight, shared by every request that arrives meanwhile. */
  flight: Promise<readonly string[]> | null;
  /**
   * The flight was begun by a backend event (the VM was started behind our
   * back) and nothing has asked for the VM since: if the VM turns out not to
   * run, the flight ends without starting it. Cleared by any summon that
   * joins the flight (it then wants the VM up, as any start does).
   */
  adoptOnly: boolean;
  startedAt: number | null;
  totalStarts: number;
  totalRequests: number;
  lastRequest: number | null;
  lastError: string | null;
  /** Consecutive failed starts, for the back-off. */
  failures: number;
  /** Whether we brought it up (close({stopVms}) only stops those). */
  startedByUs: boolean;
  /** Its group, or null (set by groups.ts at start-up and on each reload). */
  group: VmGroup | null;
  /**
   * Connections open to the VM that keep it up (src/activator's held and
   * relayed ones): while above 0 it is never idle.
   */
  openConnections: number;
  /**
   * When a connection last counted as activity: the last held one closed, or
   * the backend last reported established ones (`VmBackend.connections`).
   */
  lastConnection: number | null;
  /**
   * Established connections the backend reported at the reaper's last look
   * (`VmBackend.connections`, asked once the VM is idle): while above 0 it
   * is asked again at every pass, so the VM stops 2 x TTL after the pass
   * that last saw one.
   */
  seenConnections: number;
}

export const OFF: Phase = { kind: "off" };
export const SUSPENDED: Phase = { kind: "suspended" };
export const PAUSED: Phase = { kind: "paused" };

/** The summoner's view of a state the backend reports. */
export function phaseFor(state: VmState, now: number): Phase {
  switch (state) {
    case "running":
      return { kind: "ready", since: now };
    case "paused":
      return PAUSED;
    case "suspended":
      return SUSPENDED;
    case "crashed":
      // Crashed: the next request may restart it at once (no back-off for a crash we did not cause).
      return { kind: "failed", error: new Error("the VM crashed"), retryAt: now, runs: "no" };
    case "off":
    case "unknown":
      return OFF;
  }
}

/**
 * Whether the VM is up as --max-running counts it: anything the backend may
 * still run (starting, ready, stopping, or a failed start that may still run).
 * Paused and suspended VMs are not: they run no code.
 */
export function isUp(phase: Phase): boolean {
  switch (phase.kind) {
    case "starting":
    case "ready":
    case "stopping":
      return true;
    case "failed":
      return phase.runs !== "no";
    default:
      return false;
  }
}

/** The phase a VM is in once `backend.stop(mode)` has returned. */
export function phaseAfterStop(mode: StopMode): Phase {
  return mode === "pause" ? PAUSED : mode === "suspend" || mode === "save" ? SUSPENDED : OFF;
}

export function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
