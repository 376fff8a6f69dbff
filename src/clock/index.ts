/**
 * Time, injected everywhere, so tests of TTL expiry, back-off and timeouts run
 * in milliseconds. `now()` is milliseconds since the epoch.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  now(): number;
  /** Calls `fn` after `ms`; the timer never keeps the process alive on its own. */
  setTimer(ms: number, fn: () => void): Timer;
  /**
   * Resolves after `ms`. With `signal`: rejects with the signal's reason as soon
   * as it aborts (at once if it already has), and the timer is cancelled.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const handle = setTimeout(fn, ms);
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
  // Unlike setTimer, a sleep keeps the process alive: something is waiting for it.
  sleep: (ms, signal) =>
    sleepOn((fn) => {
      const handle = setTimeout(fn, ms);
      return { cancel: () => clearTimeout(handle) };
    }, signal),
};

/** A sleep on the timer `arm` sets, cut short by `signal`. */
function sleepOn(arm: (fn: () => void) => Timer, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal === undefined) {
      arm(resolve);
      return;
    }
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(signal.reason as Error);
    };
    const timer = arm(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A clock that only moves when told to. Timers fire in order of due time when
 * `advance` passes them; each fired timer's callbacks (and the promise jobs they
 * schedule) run before the next one.
 */
export class ManualClock implements Clock {
  private current: number;
  private seq = 0;
  private timers: { due: number; seq: number; fn: () => void }[] = [];

  constructor(start = 1_700_000_000_000) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimer(ms: number, fn: () => void): Timer {
    const timer = { due: this.current + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return {
      cancel: () => {
        this.timers = this.timers.filter((t) => t !== timer);
      },
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepOn((fn) => this.setTimer(ms, fn), signal);
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    for (;;) {
      await flushPromises();
      const next = this.timers
        .filter((t) => t.due <= target)
        .sort((a, b) => a.due - b.due || a.seq - b.seq)[0];
      if (next === undefined) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.current = Math.max(this.current, next.due);
      next.fn();
    }
    this.current = target;
    await flushPromises();
  }

  pendingTimers(): number {
    return this.timers.length;
  }
}

/** Lets queued promise jobs and immediate callbacks run. */
export async function flushPromises(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
