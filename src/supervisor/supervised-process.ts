/**
 * One process we supervise: either our child (spawned into its own process
 * group, its exit status known, its stderr tail kept) or a process an earlier
 * jitsu left running and we adopted from its pid file (no exit status; its end
 * is noticed by reading /proc). Every wait runs on the injected clock.
 */
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import type { Clock, Timer } from "../clock/index.js";
import type { PidFile } from "./pid-file.js";
import { bootId, readProcessSync, readStartTime } from "./proc.js";

export interface ExitStatus {
  /** Both null for a process that was not our child: its status went to its own parent. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A spawn or a signal that failed; `detail` keeps the system's code and text ("ENOENT: spawn foo ENOENT"). */
export class SupervisorError extends Error {
  constructor(
    message: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "SupervisorError";
  }
}

/** How the supervisor made it: the clock for every wait, how often to look at /proc for a process not ours. */
export interface SupervisedProcessContext {
  readonly clock: Clock;
  readonly pollMs: number;
}

/** Our child, as ProcessSupervisor.spawn hands it over, and what to do with its output. */
export interface ChildOutput {
  readonly child: ChildProcess;
  /** How many of its last stderr lines to keep. */
  readonly stderrTailLines: number;
  readonly onStdout: ((line: string) => void) | undefined;
  readonly onStderr: ((line: string) => void) | undefined;
}

/** Longer than any wait; the interval only holds the event loop open (see waitExit). */
const HOLD_MS = 2 ** 30;

export class SupervisedProcess {
  /** Resolves once, when the process has exited (or, for one not our child, was found gone). */
  readonly exited: Promise<ExitStatus>;
  /** Our child's stdout and stderr are closed too, so its last lines were read; for one not our child, `exited`. */
  readonly drained: Promise<void>;
  private exitStatus: ExitStatus | null = null;
  private resolveExit!: (exit: ExitStatus) => void;
  private readonly child: ChildProcess | null;
  private readonly tail: string[] = [];
  private pidFile: PidFile | null = null;
  private watchTimer: Timer | null = null;

  constructor(
    private readonly context: SupervisedProcessContext,
    readonly pid: number,
    /** /proc/PID/stat field 22; "" when the process was gone before we could read it. */
    readonly startTime: string,
    private cmdline: readonly string[],
    output: ChildOutput | null,
  ) {
    this.exited = new Promise<ExitStatus>((resolve) => (this.resolveExit = resolve));
    this.child = output?.child ?? null;
    if (output === null) {
      this.drained = this.exited.then(() => undefined);
      return;
    }
    const { child, stderrTailLines, onStdout, onStderr } = output;
    this.drained = new Promise<void>((resolve) => child.once("close", () => resolve()));
    child.once("exit", (code, signal) => this.finish({ code, signal }));
    if (child.stdout !== null && onStdout !== undefined) eachLine(child.stdout, onStdout);
    // A stdout nobody reads (a gate's is always a pipe) must still be drained, or the process blocks on it.
    else child.stdout?.resume();
    if (child.stderr !== null) {
      eachLine(child.stderr, (line) => {
        this.tail.push(line);
        if (this.tail.length > stderrTailLines) this.tail.shift();
        onStderr?.(line);
      });
    }
  }

  /** Whether it is our child (its exit status is known and its output read). */
  get isChild(): boolean {
    return this.child !== null;
  }

  /** The exit status once it has exited, else null. */
  get exit(): ExitStatus | null {
    return this.exitStatus;
  }

  /** Its last stderr lines, oldest first (empty for a process not our child). */
  get stderrTail(): readonly string[] {
    return this.tail;
  }

  /**
   * Writes (or rewrites) its pid file: the pid, its start time, the boot id
   * (its identity: identity.ts), its command line (for humans; read again on a
   * rewrite: it may have exec'd or rewritten its argv since it started), and
   * the owner's `extra`. The file is removed when the process exits (unless
   * another pid was written to it since). Throws when the file cannot be
   * written; does nothing for a process gone before it was read.
   */
  writePidFile(file: PidFile, extra: Readonly<Record<string, unknown>> = {}): void {
    if (this.startTime === "") return;
    // A first write uses the command line read at the spawn (or adoption): one procfs read less on a cold start.
    const now = this.pidFile !== null && this.exitStatus === null ? readProcessSync(this.pid) : null;
    if (now !== null && now.startTime === this.startTime) this.cmdline = now.cmdline;
    this.pidFile = file;
    file.write({ pid: this.pid, startTime: this.startTime, bootId: bootId(), cmdline: this.cmdline, extra });
  }

  /** Takes `file` as its pid file without writing it (the supervisor's adopt: it already describes the process). */
  keepPidFile(file: PidFile): void {
    this.pidFile = file;
  }

  /**
   * Sends `signal` to its process group; false when there is nothing left to
   * signal. When the group is gone but the process is still ours (it left the
   * group), to the process alone.
   */
  signal(signal: NodeJS.Signals): boolean {
    try {
      process.kill(-this.pid, signal);
      return true;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code !== "ESRCH") {
        throw new SupervisorError(
          `cannot send ${signal} to process group ${this.pid}`,
          `${e.code ?? "error"}: ${e.message}`,
          { cause: err },
        );
      }
    }
    // After its exit the pid may already be another process's: never signal it alone then.
    if (this.exitStatus !== null || readProcessSync(this.pid)?.startTime !== this.startTime) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Resolves true when it has exited, false when `ms` passed first (no limit
   * when omitted). While waiting, the process stays alive: the clock's timers
   * do not hold Node's event loop open, nor does a process that is not our child.
   */
  async waitExit(ms?: number): Promise<boolean> {
    if (this.exitStatus !== null) return true;
    // Not a measure of time (the clock's timer below is): a handle that keeps Node running while we wait.
    const hold = setInterval(() => undefined, HOLD_MS);
    const { clock, pollMs } = this.context;
    let deadline: Timer | undefined;
    let poll: Timer | undefined;
    let waiting = true;
    try {
      return await new Promise<boolean>((resolve) => {
        void this.exited.then(() => resolve(true));
        if (ms !== undefined) deadline = clock.setTimer(ms, () => resolve(false));
        if (this.child !== null) return;
        // Not our child: no exit event will come, so look at /proc until it is gone.
        const look = (): void => {
          void this.isRunning().then((running) => {
            if (running && waiting) poll = clock.setTimer(pollMs, look);
          });
        };
        look();
      });
    } finally {
      waiting = false;
      deadline?.cancel();
      poll?.cancel();
      clearInterval(hold);
    }
  }

  /** SIGKILL to the group, then waits (no limit when `ms` is omitted); false if it still runs after `ms`. */
  async kill(ms?: number): Promise<boolean> {
    this.signal("SIGKILL");
    return this.waitExit(ms);
  }

  /**
   * Asks it to end: `signal` (SIGTERM) to the group, SIGCONT too when `wake`
   * (a stopped process keeps the signal pending until it runs again), then
   * SIGKILL after `graceMs`. Resolves true when it ended within the grace.
   */
  async terminate(options: { graceMs: number; signal?: NodeJS.Signals; wake?: boolean }): Promise<boolean> {
    this.signal(options.signal ?? "SIGTERM");
    if (options.wake === true) this.signal("SIGCONT");
    if (await this.waitExit(options.graceMs)) return true;
    await this.kill();
    return false;
  }

  /**
   * Whether it still runs. For our child that is known; for a process not our
   * child it is read from /proc now (same pid, same start time), and if it is
   * gone, `exited` resolves.
   */
  async isRunning(): Promise<boolean> {
    if (this.exitStatus !== null) return false;
    if (this.child !== null) return true;
    if ((await readStartTime(this.pid)) === this.startTime) return true;
    this.finish({ code: null, signal: null });
    return false;
  }

  /** For a process not our child: looks at /proc every `ms` until it is gone, so `exited` resolves by itself. */
  watch(ms: number): void {
    if (this.child !== null || this.watchTimer !== null) return;
    const tick = (): void => {
      void this.isRunning().then((running) => {
        if (running) this.watchTimer = this.context.clock.setTimer(ms, tick);
      });
    };
    this.watchTimer = this.context.clock.setTimer(ms, tick);
  }

  /** Lets Node exit while the process runs on (its output is still read while we live). */
  unref(): void {
    this.child?.unref();
    unrefStream(this.child?.stdout ?? null);
    unrefStream(this.child?.stderr ?? null);
  }

  private finish(exit: ExitStatus): void {
    if (this.exitStatus !== null) return;
    this.exitStatus = exit;
    this.watchTimer?.cancel();
    this.watchTimer = null;
    try {
      this.pidFile?.removeIfNames(this.pid);
    } catch {
      // A pid file we cannot remove names a process that is gone: the next adoption finds it stale.
    }
    this.resolveExit(exit);
  }
}

function eachLine(stream: Readable, fn: (line: string) => void): void {
  createInterface({ input: stream, crlfDelay: Infinity }).on("line", fn);
}

function unrefStream(stream: Readable | null): void {
  (stream as (Readable & { unref?: () => void }) | null)?.unref?.();
}
