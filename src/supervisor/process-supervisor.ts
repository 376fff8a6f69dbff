/**
 * Starts processes into their own process group, and adopts the ones an
 * earlier jitsu left running, so that a backend can signal everything a VM
 * started and wait for it with a grace period, all on the injected clock.
 */
import { spawn } from "node:child_process";
import type { Clock } from "../clock/index.js";
import { isRecordedProcess, type ExpectProcess } from "./identity.js";
import type { PidFile, PidRecord } from "./pid-file.js";
import { bootId, readProcess, readProcessSync } from "./proc.js";
import { SpawnGate } from "./spawn-gate.js";
import { SupervisedProcess, SupervisorError } from "./supervised-process.js";

/** How long after a start the next gate is forked (prestartLater). */
const PRESTART_DELAY_MS = 50;

export interface SupervisorOptions {
  readonly clock: Clock;
  /** How often to look at /proc while waiting for a process that is not our child (default 50 ms). */
  readonly pollMs?: number;
  /**
   * Keep one process spawned ahead of time (a SpawnGate) for the next
   * `spawn`, which then costs a write instead of a fork of Node (default
   * false). Started by `prestart()`, again after each spawn that used it;
   * ended by `close()`.
   */
  readonly prestart?: boolean;
}

export interface SpawnCommand {
  /** The program and its arguments; run without a shell. */
  readonly argv: readonly [string, ...string[]];
  readonly cwd?: string;
  /** Its whole environment (default: jitsu's). */
  readonly env?: NodeJS.ProcessEnv;
  /** Each line it writes to stdout; without it, stdout goes nowhere. */
  readonly onStdout?: (line: string) => void;
  /** Each line it writes to stderr (the last `stderrTailLines` are kept in any case). */
  readonly onStderr?: (line: string) => void;
  /** How many of the last stderr lines to keep (default 5). */
  readonly stderrTailLines?: number;
  /** Open file descriptors it gets as fd 3, 4, ...; the caller may close its own once spawn resolves. */
  readonly fds?: readonly number[];
  /** An error of the child process after it started (a failed signal, for one). */
  readonly onError?: (err: Error) => void;
}

/** A process found through a pid file. */
export interface Adoption {
  readonly process: SupervisedProcess;
  /** What the pid file said (its `extra` holds the owner's fields). */
  readonly record: PidRecord;
  /** /proc/PID/stat state letter when it was adopted: "T" when it is stopped. */
  readonly state: string;
}

export interface AdoptOptions {
  /** The owner's own test of the process (see identity.ts); required to adopt from a bare pid. */
  readonly expect?: ExpectProcess;
  /**
   * A pid file the program writes itself (QEMU's -pidfile), read when ours is
   * missing: a jitsu killed between the spawn and our write, or an older
   * jitsu that kept none.
   */
  readonly programPidFile?: PidFile;
}

export class ProcessSupervisor {
  private readonly context: { clock: Clock; pollMs: number };
  private readonly usesGate: boolean;
  private gate: SpawnGate | null = null;
  private gateComing: Promise<void> | null = null;
  private closed = false;

  constructor(options: SupervisorOptions) {
    this.context = { clock: options.clock, pollMs: options.pollMs ?? 50 };
    this.usesGate = options.prestart === true;
  }

  /**
   * With `prestart`: spawns the gate the next `spawn` will use, if there is
   * none; resolves once it waits. A gate that cannot be made (no /bin/sh)
   * leaves `spawn` as it is without one.
   */
  prestart(): Promise<void> {
    if (!this.usesGate || this.closed || this.gate?.waiting === true) return Promise.resolve();
    return (this.gateComing ??= SpawnGate.create().then(
      (gate) => {
        this.gateComing = null;
        if (this.closed) gate.close();
        else this.gate = gate;
      },
      () => {
        this.gateComing = null;
      },
    ));
  }

  /**
   * Forks the next gate PRESTART_DELAY_MS after a start, once that start's own
   * work is done: the fork of jitsu blocks its event loop for 5-25 ms, and at
   * the next turn (setImmediate) it landed between the exec and its answer,
   * which then waited for it (bench/, summon: 6-7 ms a cold answer where the
   * exec took under one). A start that comes sooner spawns as without a gate.
   */
  private prestartLater(): void {
    setTimeout(() => void this.prestart(), PRESTART_DELAY_MS).unref();
  }

  /** Ends the waiting gate, if any; the processes spawned are not touched. */
  close(): void {
    this.closed = true;
    this.gate?.close();
    this.gate = null;
  }

  /**
   * Spawns `argv` as the leader of a new process group (detached, so it
   * outlives us, and a signal to the group reaches all it started). Rejects
   * with a SupervisorError when it cannot be run.
   */
  async spawn(command: SpawnCommand): Promise<SupervisedProcess> {
    const viaGate = this.throughGate(command);
    if (viaGate !== null) return this.confirmExec(viaGate, command.argv[0]);
    if (this.usesGate) this.prestartLater();
    const [file, ...args] = command.argv;
    const child = spawn(file, args, {
      cwd: command.cwd,
      env: command.env,
      detached: true,
      stdio: ["ignore", command.onStdout === undefined ? "ignore" : "pipe", "pipe", ...(command.fds ?? [])],
    });
    try {
      // Listened to before any await: 'spawn' fires on the next turn.
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", reject);
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new SupervisorError(`cannot run '${file}'`, `${e.code ?? "error"}: ${e.message}`, { cause: err });
    }
    child.on("error", (err) => command.onError?.(err));
    const pid = child.pid!;
    // Read at once, synchronously: procfs answers from memory, and this is on a cold start's path.
    const now = readProcessSync(pid);
    return new SupervisedProcess(this.context, pid, now?.startTime ?? "", now?.cmdline ?? [], {
      child,
      stderrTailLines: command.stderrTailLines ?? 5,
      onStdout: command.onStdout,
      onStderr: command.onStderr,
    });
  }

  /**
   * The command run by the waiting gate, or null when there is none or it
   * cannot run this command as spawn would (SpawnGate.script). Its process
   * is the gate's: our child, its pid and start time; its command line is
   * recorded as the command's (the shell execs it an instant later).
   */
  private throughGate(command: SpawnCommand): SupervisedProcess | null {
    const gate = this.gate;
    if (gate === null || (command.fds ?? []).length > 0) return null;
    if (!gate.waiting) {
      this.gate = null;
      return null;
    }
    const script = gate.script(command);
    if (script === null) return null;
    this.gate = null;
    const child = gate.open(script);
    this.prestartLater();
    child.on("error", (err) => command.onError?.(err));
    const now = readProcessSync(child.pid!);
    const proc = new SupervisedProcess(this.context, child.pid!, now?.startTime ?? "", command.argv, {
      child,
      stderrTailLines: command.stderrTailLines ?? 5,
      onStdout: command.onStdout,
      onStderr: command.onStderr,
    });
    return proc;
  }

  /**
   * Resolves with the gate's process once the shell has exec'd the command
   * (its command line is no longer the gate's); rejects as spawn does when
   * the exec failed (the shell exits 126 or 127: a `#!` interpreter that is
   * missing, a file that is no program), with the shell's own words. spawn
   * learns of that from the exec itself; here /proc says it, read every
   * millisecond (the exec takes about one).
   */
  private async confirmExec(proc: SupervisedProcess, file: string): Promise<SupervisedProcess> {
    // Not "differs from what was read after the hand-over": the shell may have exec'd before that read.
    const execd = (): boolean => {
      const now = readProcessSync(proc.pid);
      // An empty command line is a process on its way out (its memory is gone before it is a
      // zombie): the shell whose exec failed, not an exec'd command.
      return (
        now !== null &&
        now.startTime === proc.startTime &&
        now.cmdline.length > 0 &&
        !SpawnGate.isGate(now.cmdline)
      );
    };
    let gone = false;
    void proc.exited.then(() => (gone = true));
    while (!gone && !execd()) await new Promise((r) => setTimeout(r, 1));
    if (!gone) return proc;
    const exit = proc.exit!;
    if (exit.code !== 126 && exit.code !== 127) return proc;
    // The shell's message ("exec: ...: not found") may still be on its way.
    await Promise.race([proc.drained, new Promise((r) => setTimeout(r, 200))]);
    throw new SupervisorError(
      `cannot run '${file}'`,
      proc.stderrTail.at(-1) ?? `the shell could not exec it (exit code ${exit.code})`,
    );
  }

  /**
   * Takes over a process found without a pid file (by `findByEnvironment`: a
   * marker its spawner put in its environment), when the spawner was killed
   * between the spawn and the write of its pid file; writes `pidFile` for it
   * with `extra`. Null when it is gone, or no longer a group leader.
   */
  async adoptFound(
    pid: number,
    pidFile: PidFile,
    extra: Readonly<Record<string, unknown>>,
  ): Promise<Adoption | null> {
    const now = await readProcess(pid);
    if (now === null) return null;
    const record: PidRecord = {
      pid,
      startTime: now.startTime,
      bootId: bootId(),
      cmdline: now.cmdline,
      extra,
    };
    const proc = new SupervisedProcess(this.context, pid, now.startTime, now.cmdline, null);
    proc.writePidFile(pidFile, extra);
    return { process: proc, record, state: now.state };
  }

  /**
   * Takes over the process `pidFile` (or `programPidFile`) names, if it is
   * still that process (identity.ts); else removes `pidFile` and resolves null.
   * A pid file in an older format is rewritten in the current one.
   */
  async adopt(pidFile: PidFile, options: AdoptOptions = {}): Promise<Adoption | null> {
    const ours = await pidFile.read();
    const record = ours ?? (await options.programPidFile?.read()) ?? null;
    if (record === null) return null;
    const now = await readProcess(record.pid);
    if (now === null || !isRecordedProcess(record, now, options.expect)) {
      await pidFile.remove();
      return null;
    }
    const proc = new SupervisedProcess(this.context, record.pid, now.startTime, now.cmdline, null);
    if (ours !== null && ours.startTime !== null && ours.bootId !== null) {
      proc.keepPidFile(pidFile);
    } else {
      try {
        proc.writePidFile(pidFile, record.extra);
      } catch {
        // Unwritable: the older file stays, and is judged by what it has the next time too.
        proc.keepPidFile(pidFile);
      }
    }
    return { process: proc, record, state: now.state };
  }
}
