/**
 * The `process` backend: a VM is a local command, run in its own process group
 * so that pause (SIGSTOP), shutdown (SIGTERM, then SIGKILL after the grace) and
 * destroy (SIGKILL) reach everything it started.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import type {
  BackendEvent,
  BackendOptions,
  Capability,
  StopMode,
  VmBackend,
  VmRef,
  VmState,
} from "../contract.js";
import type { KeySpec, VmSpec } from "../../config/index.js";
import { BackendError, ConfigError, describeError } from "../../errors/index.js";
import type { Logger } from "../../log/index.js";
import { splitCommandLine } from "./command-line.js";
import {
  pidFileDir,
  pidFileName,
  pidFilePath,
  procStat,
  procStatSync,
  readPidFile,
  removePidFile,
  writePidFile,
} from "./pid-file.js";

const NAME = "process";
const DEFAULT_GRACE_SECONDS = 10;

export const PROCESS_KEYS: readonly KeySpec[] = [
  {
    key: "name",
    type: "string",
    doc: "Name of the VM, used in logs and the stats table (defaults to the first DNS name).",
  },
  {
    key: "exec",
    type: "string",
    required: true,
    doc: "Command to run (required), split on spaces; '...' and \"...\" quote, \\ escapes. Runs without a shell, in its own process group. Values cannot contain commas: put longer scripts in a file.",
  },
  { key: "cwd", type: "path", doc: "Working directory of the command (default: jitsu's)." },
  {
    key: "env",
    type: "string",
    repeatable: true,
    doc: "Environment variable for the command, as env=NAME=VALUE. Can be set more than once. JITSU_VM is always set to the VM's label.",
  },
  {
    key: "stop_grace",
    type: "seconds",
    doc: `Seconds between SIGTERM and SIGKILL when the VM is shut down (default ${DEFAULT_GRACE_SECONDS}).`,
  },
];

export const PROCESS_STOP_MODES: ReadonlySet<StopMode> = new Set<StopMode>([
  "destroy",
  "shutdown",
  "suspend",
  "pause",
]);

/**
 * A VM's command. Its logger and pid file path are made on first use: with
 * 10,000 VMs, a pino child logger and a path each cost ~3 MB at start-up for
 * VMs that may never start.
 */
class Program {
  private childLog: Logger | undefined;

  constructor(
    readonly label: string,
    readonly command: string,
    readonly argv: readonly [string, ...string[]],
    readonly cwd: string | undefined,
    readonly env: Readonly<Record<string, string>>,
    readonly graceMs: number,
    private readonly backendLog: Logger,
    private readonly stateDir: string,
  ) {}

  get log(): Logger {
    return (this.childLog ??= this.backendLog.child({ vm: this.label }));
  }

  get pidFile(): string {
    return pidFilePath(this.stateDir, this.label);
  }
}

const NO_ENV: Readonly<Record<string, string>> = Object.freeze({});

interface Running {
  /** null for a process adopted from a pid file (left running by an earlier jitsu). */
  readonly child: ChildProcess | null;
  readonly pid: number;
  readonly startTime: string;
  /** Set by SIGSTOP: which stop mode stopped it. */
  stoppedAs: "paused" | "suspended" | null;
  /** Set before we signal it to end, so its exit is not reported as a change behind our back. */
  expectedExit: boolean;
  /** Resolves when the process has exited. */
  readonly waitExit: () => Promise<void>;
}

export class ProcessBackend implements VmBackend {
  readonly name = NAME;
  readonly supports: ReadonlySet<Capability> = new Set<Capability>([...PROCESS_STOP_MODES, "events"]);
  private readonly programs = new Map<string, Program>();
  private readonly running = new Map<string, Running>();
  /** VMs whose last exit was a crash (non-zero code or a signal we did not send). */
  private readonly crashed = new Set<string>();
  private readonly listeners: ((event: BackendEvent) => void)[] = [];
  private readonly log: Logger;
  /** argv by `exec` value: many VMs often run the same command. */
  private readonly argvs = new Map<string, readonly [string, ...string[]]>();
  /**
   * The pid files an earlier jitsu left, listed once at connect (null before):
   * one readdir instead of a lookup per VM. A file missing from the list can
   * only have been written since, by us, for a VM in `running`.
   */
  private leftPidFiles: ReadonlySet<string> | null = null;

  constructor(private readonly options: BackendOptions) {
    this.log = options.log;
  }

  async connect(): Promise<void> {
    try {
      this.leftPidFiles = new Set(await readdir(pidFileDir(this.options.stateDir)));
    } catch {
      this.leftPidFiles = new Set();
    }
  }

  async resolve(spec: VmSpec): Promise<VmRef> {
    const label = spec.label;
    const command = spec.options.requireStr("exec");
    let argv = this.argvs.get(command);
    if (argv === undefined) {
      try {
        argv = splitCommandLine(command) as [string, ...string[]];
      } catch (err) {
        throw new ConfigError(describeError(err), { vm: label, key: "exec" });
      }
      this.argvs.set(command, argv);
    }
    let env = NO_ENV;
    for (const pair of spec.options.all("env")) {
      const eq = pair.indexOf("=");
      if (eq <= 0) throw new ConfigError(`expected NAME=VALUE, got '${pair}'`, { vm: label, key: "env" });
      if (env === NO_ENV) env = {};
      (env as Record<string, string>)[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    const grace = spec.options.float("stop_grace") ?? DEFAULT_GRACE_SECONDS;
    if (grace < 0)
      throw new ConfigError(`expected 0 seconds or more, got ${grace}`, { vm: label, key: "stop_grace" });
    this.programs.set(
      label,
      new Program(
        label,
        command,
        argv,
        spec.options.str("cwd"),
        env,
        grace * 1000,
        this.log,
        this.options.stateDir,
      ),
    );
    if (!this.running.has(label) && this.mayHavePidFile(label)) await this.adopt(label);
    return { label, ref: label };
  }

  async state(vm: VmRef): Promise<VmState> {
    const proc = this.running.get(vm.ref);
    if (proc !== undefined && proc.child === null && !(await this.stillThere(vm.ref, proc))) return "off";
    if (proc !== undefined) return proc.stoppedAs ?? "running";
    return this.crashed.has(vm.ref) ? "crashed" : "off";
  }

  async start(vm: VmRef): Promise<void> {
    const prog = this.program(vm);
    if (this.running.has(vm.ref)) return;
    if (prog.cwd !== undefined) {
      const dir = await stat(prog.cwd).catch(() => null);
      if (dir === null || !dir.isDirectory()) {
        throw new BackendError(NAME, `working directory '${prog.cwd}' does not exist`, { vm: vm.label });
      }
    }
    const [file, ...args] = prog.argv;
    const child = spawn(file, args, {
      cwd: prog.cwd,
      env: { ...process.env, ...prog.env, JITSU_VM: prog.label },
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", reject);
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new BackendError(NAME, `cannot run '${prog.command}'`, {
        vm: vm.label,
        detail: `${e.code ?? "error"}: ${e.message}`,
        cause: err,
      });
    }
    const pid = child.pid!;
    let onExit!: () => void;
    const exited = new Promise<void>((resolve) => (onExit = resolve));
    const startTime = procStatSync(pid)?.startTime ?? "";
    const proc: Running = {
      child,
      pid,
      startTime,
      stoppedAs: null,
      expectedExit: false,
      waitExit: () => exited,
    };
    this.running.set(vm.ref, proc);
    this.crashed.delete(vm.ref);
    this.savePid(prog, proc);
    child.on("error", (err) => prog.log.warn(`Process ${pid} of VM '${prog.label}': ${describeError(err)}`));
    child.once("exit", (code, signal) => {
      if (this.running.get(vm.ref) === proc) {
        this.running.delete(vm.ref);
        removePidFile(prog.pidFile).catch(() => undefined);
      }
      onExit();
      this.exited(vm, prog, proc, code, signal);
    });
    forwardLines(child.stdout, prog.log, "stdout");
    forwardLines(child.stderr, prog.log, "stderr");
    prog.log.info(`Started process ${pid} for VM '${prog.label}': ${prog.command}`);
  }

  async resume(vm: VmRef): Promise<void> {
    await this.continue(vm, "resume");
  }

  async unpause(vm: VmRef): Promise<void> {
    await this.continue(vm, "unpause");
  }

  async stop(vm: VmRef, mode: StopMode): Promise<void> {
    const prog = this.program(vm);
    const proc = this.running.get(vm.ref);
    switch (mode) {
      case "pause":
      case "suspend":
        if (proc === undefined)
          throw new BackendError(NAME, `cannot ${mode}: it is not running`, { vm: vm.label });
        signalGroup(proc, "SIGSTOP", vm.label);
        proc.stoppedAs = mode === "pause" ? "paused" : "suspended";
        this.savePid(prog, proc);
        return;
      case "destroy":
        if (proc === undefined) return;
        proc.expectedExit = true;
        signalGroup(proc, "SIGKILL", vm.label);
        await proc.waitExit();
        await this.forgetAdopted(vm.ref, proc);
        return;
      case "shutdown": {
        if (proc === undefined) return;
        proc.expectedExit = true;
        signalGroup(proc, "SIGTERM", vm.label);
        // A stopped process keeps SIGTERM pending until it runs again.
        if (proc.stoppedAs !== null) signalGroup(proc, "SIGCONT", vm.label);
        let timer: { cancel(): void } | undefined;
        const graceOver = new Promise<boolean>((resolve) => {
          timer = this.options.clock.setTimer(prog.graceMs, () => resolve(true));
        });
        const late = await Promise.race([proc.waitExit().then(() => false), graceOver]);
        timer?.cancel();
        if (late) {
          prog.log.warn(
            `VM '${prog.label}' (process ${proc.pid}) did not exit within ${prog.graceMs / 1000} s of SIGTERM; sending SIGKILL`,
          );
          signalGroup(proc, "SIGKILL", vm.label);
          await proc.waitExit();
        }
        await this.forgetAdopted(vm.ref, proc);
        return;
      }
      case "save":
        throw new BackendError(
          NAME,
          "cannot save a process to disk (use suspend, pause, shutdown or destroy)",
          {
            vm: vm.label,
          },
        );
    }
  }

  onEvent(listener: (event: BackendEvent) => void): void {
    this.listeners.push(listener);
  }

  /** The process ID of a running VM (for diagnostics and tests). */
  pid(vm: VmRef): number | undefined {
    return this.running.get(vm.ref)?.pid;
  }

  /**
   * Kills nothing (the CLI decides with --stop-on-exit) but stops reporting
   * and lets Node exit while the processes run on.
   */
  async close(): Promise<void> {
    this.listeners.length = 0;
    for (const proc of this.running.values()) {
      proc.child?.unref();
      unrefStream(proc.child?.stdout ?? null);
      unrefStream(proc.child?.stderr ?? null);
    }
  }

  private program(vm: VmRef): Program {
    const prog = this.programs.get(vm.ref);
    if (prog === undefined) throw new BackendError(NAME, "unknown VM (not resolved)", { vm: vm.label });
    return prog;
  }

  private async continue(vm: VmRef, op: string): Promise<void> {
    const proc = this.running.get(vm.ref);
    if (proc === undefined) throw new BackendError(NAME, `cannot ${op}: it is not running`, { vm: vm.label });
    signalGroup(proc, "SIGCONT", vm.label);
    proc.stoppedAs = null;
    this.savePid(this.program(vm), proc);
  }

  /** Whether a pid file an earlier jitsu left may exist for the VM (most VMs have none). */
  private mayHavePidFile(label: string): boolean {
    if (this.leftPidFiles !== null) return this.leftPidFiles.has(pidFileName(label));
    // Not connected (tests): a sync existence check costs a microsecond where an async open that fails costs tens.
    return existsSync(pidFilePath(this.options.stateDir, label));
  }

  /** Takes over a process an earlier jitsu left running, if its pid file still describes it. */
  private async adopt(label: string): Promise<void> {
    const prog = this.programs.get(label)!;
    const record = await readPidFile(prog.pidFile);
    if (record === null) return;
    const stat = await procStat(record.pid);
    if (stat === null || stat.startTime !== record.startTime || record.command !== prog.command) {
      await removePidFile(prog.pidFile).catch(() => undefined);
      return;
    }
    // Trust the record first: a SIGSTOP just sent may not show in /proc yet.
    const stoppedAs = record.stoppedAs ?? (stat.state === "T" ? "paused" : null);
    const proc: Running = {
      child: null,
      pid: record.pid,
      startTime: record.startTime,
      stoppedAs,
      expectedExit: false,
      waitExit: () => waitGone(record.pid, record.startTime),
    };
    this.running.set(label, proc);
    prog.log.info(
      `Found process ${record.pid} of VM '${label}' left running by an earlier jitsu (${stoppedAs ?? "running"}); adopting it (its output is not captured)`,
    );
  }

  /** After an adopted process (no exit event) was stopped: forget it and its pid file. */
  private async forgetAdopted(ref: string, proc: Running): Promise<void> {
    if (proc.child !== null) return;
    const prog = this.programs.get(ref);
    prog?.log.info(`Process ${proc.pid} of VM '${prog.label}' is gone`);
    if (this.running.get(ref) === proc) this.running.delete(ref);
    if (prog !== undefined) await removePidFile(prog.pidFile).catch(() => undefined);
  }

  /** For an adopted process: whether it still runs; if not, forgets it. */
  private async stillThere(ref: string, proc: Running): Promise<boolean> {
    const stat = await procStat(proc.pid);
    if (stat !== null && stat.startTime === proc.startTime) return true;
    if (this.running.get(ref) === proc) this.running.delete(ref);
    const prog = this.programs.get(ref);
    if (prog !== undefined) await removePidFile(prog.pidFile).catch(() => undefined);
    return false;
  }

  private savePid(prog: Program, proc: Running): void {
    try {
      writePidFile(prog.pidFile, {
        pid: proc.pid,
        startTime: proc.startTime,
        command: prog.command,
        stoppedAs: proc.stoppedAs,
      });
    } catch (err) {
      prog.log.warn(`Could not write the pid file of VM '${prog.label}': ${describeError(err)}`);
    }
  }

  private exited(
    vm: VmRef,
    prog: Program,
    proc: Running,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): void {
    const reason = signal !== null ? `killed by ${signal}` : `exited with code ${code}`;
    if (proc.expectedExit) {
      prog.log.info(`Process ${proc.pid} of VM '${prog.label}' ${reason}`);
      return;
    }
    const state: VmState = signal === null && code === 0 ? "off" : "crashed";
    if (state === "crashed") this.crashed.add(vm.ref);
    prog.log.warn(`Process ${proc.pid} of VM '${prog.label}' ${reason} on its own`);
    // Whatever it left behind in its group would hold ports the next start needs.
    try {
      process.kill(-proc.pid, "SIGKILL");
    } catch {
      // ESRCH: nothing left.
    }
    const event: BackendEvent = { vm, state, reason };
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.warn(`A process backend listener failed: ${describeError(err)}`);
      }
    }
  }
}

/** Resolves when the (not child) process is gone or its pid belongs to another process. */
async function waitGone(pid: number, startTime: string): Promise<void> {
  for (;;) {
    const stat = await procStat(pid);
    if (stat === null || stat.startTime !== startTime) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function signalGroup(proc: Running, signal: NodeJS.Signals, label: string): void {
  try {
    process.kill(-proc.pid, signal);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ESRCH") return; // already gone: its exit event follows
    throw new BackendError(NAME, `cannot send ${signal} to process group ${proc.pid}`, {
      vm: label,
      detail: `${e.code ?? "error"}: ${e.message}`,
    });
  }
}

function forwardLines(stream: Readable | null, log: Logger, name: "stdout" | "stderr"): void {
  if (stream === null) return;
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  lines.on("line", (line) => log.info({ stream: name }, line));
}

function unrefStream(stream: Readable | null): void {
  const s = stream as (Readable & { unref?: () => void }) | null;
  s?.unref?.();
}
