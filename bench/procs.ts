/**
 * Every process the bench starts goes through here, so each one is stopped
 * by its own process ID when the bench ends, fails or is interrupted.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

const live = new Set<BenchProcess>();

export interface StartOptions {
  /** Resolves the start when a line of stdout or stderr satisfies it; without it, start resolves at spawn. */
  readyLine?: (line: string) => boolean;
  readyTimeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Keep every output line (for parsing logs afterwards). */
  keepLines?: boolean;
}

export class BenchProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<void>;
  private exitCode: number | null = null;
  private exitSignal: NodeJS.Signals | null = null;
  private hasExited = false;
  private readonly lineListeners: ((line: string) => void)[] = [];

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
    keepLines: boolean,
  ) {
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.hasExited = true;
        this.exitCode = code;
        this.exitSignal = signal;
        live.delete(this);
        resolve();
      });
    });
    const onLine = (line: string): void => {
      if (keepLines || this.lines.length < 200) this.lines.push(line);
      for (const l of this.lineListeners) l(line);
    };
    if (child.stdout !== null) createInterface({ input: child.stdout }).on("line", onLine);
    if (child.stderr !== null) createInterface({ input: child.stderr }).on("line", onLine);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return !this.hasExited;
  }

  onLine(listener: (line: string) => void): void {
    this.lineListeners.push(listener);
  }

  describeExit(): string {
    return this.exitSignal !== null ? `killed by ${this.exitSignal}` : `exited with code ${this.exitCode}`;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.hasExited) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => {
      if (!this.hasExited) this.child.kill("SIGKILL");
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Starts a command and, with `readyLine`, waits until it says it is ready (or fails, naming its last output). */
export async function startProcess(
  label: string,
  command: string,
  args: readonly string[],
  options: StartOptions = {},
): Promise<BenchProcess> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: options.env ?? process.env });
  const proc = new BenchProcess(label, child, options.keepLines === true);
  live.add(proc);
  await new Promise<void>((resolve, reject) => {
    child.once("error", (err) => reject(new Error(`bench: cannot run ${command}: ${err.message}`)));
    child.once("spawn", () => resolve());
  });
  const ready = options.readyLine;
  if (ready === undefined) return proc;
  const timeoutMs = options.readyTimeoutMs ?? 30_000;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    const fail = (why: string): void => {
      clearTimeout(timer);
      reject(new Error(`bench: ${label} ${why}; last output: ${proc.lines.slice(-5).join(" | ")}`));
    };
    for (const line of proc.lines) {
      if (ready(line)) {
        clearTimeout(timer);
        resolve();
        return;
      }
    }
    proc.onLine((line) => {
      if (ready(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void proc.exited.then(() => fail(proc.describeExit()));
  });
  return proc;
}

/** Stops every process still running (in parallel), each by its own ID. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop(5_000)));
}

/** Synchronous last resort (process 'exit'): SIGKILL whatever is left, by ID. */
export function killAllNow(): void {
  for (const p of live) {
    try {
      p.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}
