/**
 * Every request to the engine goes through here (issue 16), so that a hung
 * engine (SIGSTOP, a wedged daemon) costs a bounded time and nothing piles up
 * behind it:
 * - each call is bounded by the call timeout (--start-timeout): when it passes,
 *   the call is abandoned (its request aborted, which resets its connection,
 *   so the engine's answer, if it ever comes, goes nowhere) and fails with
 *   EngineTimeoutError;
 * - at most `maxCalls` calls are outstanding at once: beyond that a call fails
 *   at once with EngineBusyError instead of queueing without bound.
 * The engine's HTTP API has no keepalive of its own (libvirt's connection
 * pings its daemon, src/backends/libvirt/connection.ts): the deadline is the
 * only way to tell a hung engine from a slow answer.
 */
import type { Clock } from "../../clock/index.js";

/** A call the engine did not answer within its deadline. */
export class EngineTimeoutError extends Error {
  readonly code = "ETIMEDOUT";
  constructor(readonly ms: number) {
    super(`no answer for ${ms / 1000} s`);
    this.name = "EngineTimeoutError";
  }
}

/** A call refused because `maxCalls` calls are already waiting for the engine. */
export class EngineBusyError extends Error {
  readonly code = "EBUSY";
  constructor(readonly waiting: number) {
    super(`${waiting} calls are already waiting for an answer`);
    this.name = "EngineBusyError";
  }
}

export interface BoundedCallsOptions {
  readonly clock: Clock;
  readonly timeoutMs: number;
  readonly maxCalls: number;
}

export class BoundedCalls {
  private outstanding = 0;
  /** Counts, for tests and logs. */
  readonly stats = { timedOut: 0, refused: 0 };

  constructor(private readonly o: BoundedCallsOptions) {}

  /** Calls made and not yet answered, failed or abandoned. */
  get waiting(): number {
    return this.outstanding;
  }

  get timeoutMs(): number {
    return this.o.timeoutMs;
  }

  /**
   * Runs `call`, which must hand `signal` to its request (dockerode's
   * `abortSignal`): it aborts when the deadline (the call timeout plus
   * `extraMs`, for operations the engine itself makes wait, such as a stop's
   * grace period) passes.
   */
  run<T>(call: (signal: AbortSignal) => Promise<T>, extraMs = 0): Promise<T> {
    if (this.outstanding >= this.o.maxCalls) {
      this.stats.refused++;
      return Promise.reject(new EngineBusyError(this.outstanding));
    }
    this.outstanding++;
    const abort = new AbortController();
    const ms = this.o.timeoutMs + extraMs;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        this.outstanding--;
        timer.cancel();
        return true;
      };
      const timer = this.o.clock.setTimer(ms, () => {
        if (!settle()) return;
        this.stats.timedOut++;
        const err = new EngineTimeoutError(ms);
        abort.abort(err);
        reject(err);
      });
      let pending: Promise<T>;
      try {
        pending = call(abort.signal);
      } catch (err) {
        if (settle()) reject(err as Error);
        return;
      }
      pending.then(
        (v) => {
          if (settle()) resolve(v);
        },
        (err: unknown) => {
          if (settle()) reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }
}
