/**
 * The `process` backend: a VM is a local command, run in its own process group
 * so that pause (SIGSTOP), shutdown (SIGTERM, then SIGKILL after the grace) and
 * destroy (SIGKILL) reach everything it started.
 */
import { existsSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { resolve as resolvePath } from "node:path";
import type { BackendEvent, BackendOptions, StopMode, VmBackend, VmRef, VmState } from "../contract.js";
import type { VmSpec } from "../../config/index.js";
import { BackendError, describeError, type JitsuError } from "../../errors/index.js";
import type { Logger } from "../../log/index.js";
import {
  PidFile,
  ProcessSupervisor,
  findByEnvironment,
  SupervisorError,
  countInboundConnections,
  groupMembers,
  type ExitStatus,
  type SupervisedProcess,
} from "../../supervisor/index.js";
import { pidFileDir, pidFileName, pidFilePath } from "./pid-file.js";
import { checkProcessVms } from "./preflight.js";
import { readArgv, readEnv, readGraceMs, type Argv } from "./program-spec.js";

const NAME = "process";
/** How often an adopted process (not our child: no exit event) is looked for in /proc. */
const ADOPTED_POLL_MS = 1000;
/** In every VM's environment: the folder of its pid file (see connect). */
const STATE_DIR_VAR = "JITSU_STATE_DIR";

export const PROCESS_STOP_MODES: ReadonlySet<StopMode> = new Set<StopMode>([
  "destroy",
  "shutdown",
  "suspend",
  "pause",
]);

/**
 * A VM's command. Its logger and pid file are made on first use: with
 * 10,000 VMs, a pino child logger and a path each cost ~3 MB at start-up for
 * VMs that may never start.
 */
class Program {
  private childLog: Logger | undefined;
  private file: PidFile | undefined;

  constructor(
    readonly label: string,
    readonly command: string,
    readonly argv: Argv,
    readonly cwd: string | undefined,
    readonly env: Readonly<Record<string, string>>,
    readonly graceMs: number,
    private readonly backendLog: Logger,
    private readonly stateDir: string,
  ) {}

  get log(): Logger {
    return (this.childLog ??= this.backendLog.child({ vm: this.label }));
  }

  get pidFile(): PidFile {
    return (this.file ??= new PidFile(pidFilePath(this.stateDir, this.label)));
  }
}

interface Running {
  /** Our child, or a process adopted from a pid file (left running by an earlier jitsu). */
  readonly process: SupervisedProcess;
  /** Set by SIGSTOP: which stop mode stopped it. */
  stoppedAs: "paused" | "suspended" | null;
  /** Set before we signal it to end, so its exit is not reported as a change behind our back. */
  expectedExit: boolean;
}

export class ProcessBackend implements VmBackend {
  readonly name = NAME;
  private readonly programs = new Map<string, Program>();
  private readonly running = new Map<string, Running>();
  /** VMs whose last exit was a crash (non-zero code or a signal we did not send). */
  private readonly crashed = new Set<string>();
  private readonly listeners: ((event: BackendEvent) => void)[] = [];
  private readonly log: Logger;
  /** argv by `exec` value: many VMs often run the same command. */
  private readonly argvs = new Map<string, Argv>();
  /**
   * The pid files an earlier jitsu left, listed once at connect (null before):
   * one readdir instead of a lookup per VM. A file missing from the list can
   * only have been written since, by us, for a VM in `running`.
   */
  private leftPidFiles: ReadonlySet<string> | null = null;
  /**
   * VM processes of this --state-dir found running without a pid file, by
   * label (see connect): a jitsu killed between a spawn and its pid file's
   * write left them.
   */
  private unrecorded = new Map<string, number>();
  private readonly supervisor: ProcessSupervisor;

  constructor(private readonly options: BackendOptions) {
    this.log = options.log;
    // prestart: a cold start costs a write to a waiting shell, not a fork of jitsu (README, "Spawn").
    this.supervisor = new ProcessSupervisor({ clock: options.clock, prestart: true });
  }

  async connect(): Promise<void> {
    try {
      this.leftPidFiles = new Set(await readdir(pidFileDir(this.options.stateDir)));
    } catch {
      this.leftPidFiles = new Set();
    }
    // Every VM process carries JITSU_STATE_DIR and JITSU_VM in its environment, so one that an
    // earlier jitsu started but had no time to record (SIGKILL right after the spawn) is found too.
    for (const found of await findByEnvironment(STATE_DIR_VAR, this.markerDir())) {
      const label = found.env.get("JITSU_VM");
      if (label !== undefined) this.unrecorded.set(label, found.pid);
    }
    await this.supervisor.prestart();
  }

  async resolve(spec: VmSpec): Promise<VmRef> {
    const label = spec.label;
    const command = spec.options.requireStr("exec");
    let argv = this.argvs.get(command);
    if (argv === undefined) {
      argv = readArgv(label, command);
      this.argvs.set(command, argv);
    }
    const env = readEnv(spec);
    const graceMs = readGraceMs(spec);
    this.programs.set(
      label,
      new Program(
        label,
        command,
        argv,
        spec.options.str("cwd"),
        env,
        graceMs,
        this.log,
        this.options.stateDir,
      ),
    );
    if (!this.running.has(label) && this.mayHavePidFile(label)) await this.adopt(label);
    if (this.unrecorded.has(label)) {
      if (!this.running.has(label)) await this.adoptUnrecorded(label);
      else this.endDuplicate(label);
    }
    return { label, ref: label };
  }

  async state(vm: VmRef): Promise<VmState> {
    const proc = this.running.get(vm.ref);
    if (proc !== undefined && !(await proc.process.isRunning())) {
      if (this.running.get(vm.ref) === proc) this.running.delete(vm.ref);
      return "off";
    }
    // SIGSTOP keeps the process in memory, holding its ports, whether -m said pause or suspend.
    if (proc !== undefined) return proc.stoppedAs === null ? "running" : "paused";
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
    let child: SupervisedProcess;
    try {
      child = await this.supervisor.spawn({
        argv: prog.argv,
        cwd: prog.cwd,
        env: { ...process.env, ...prog.env, JITSU_VM: prog.label, [STATE_DIR_VAR]: this.markerDir() },
        onStdout: (line) => prog.log.info({ stream: "stdout" }, line),
        onStderr: (line) => prog.log.info({ stream: "stderr" }, line),
        onError: (err) => prog.log.warn(`Process ${child.pid} of VM '${prog.label}': ${describeError(err)}`),
      });
    } catch (err) {
      throw new BackendError(NAME, `cannot run '${prog.command}'`, {
        vm: vm.label,
        detail: err instanceof SupervisorError ? err.detail : describeError(err),
        cause: err,
      });
    }
    const proc: Running = { process: child, stoppedAs: null, expectedExit: false };
    try {
      child.writePidFile(prog.pidFile, { command: prog.command, stoppedAs: null });
    } catch (err) {
      // Without its pid file a jitsu started again could not find the process (an orphan that
      // holds its ports): end it, and fail this start with the reason (a full or read-only
      // --state-dir); the VMs already running are not affected.
      child.signal("SIGKILL");
      throw new BackendError(NAME, `cannot write its pid file '${prog.pidFile.path}'`, {
        vm: vm.label,
        detail: `${describeError(err)}; free space in --state-dir or make it writable`,
        cause: err,
      });
    }
    this.track(vm, prog, proc);
    this.crashed.delete(vm.ref);
    prog.log.info(`Started process ${child.pid} for VM '${prog.label}': ${prog.command}`);
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
        signal(proc, "SIGSTOP", vm.label);
        proc.stoppedAs = mode === "pause" ? "paused" : "suspended";
        this.savePid(prog, proc);
        return;
      case "destroy":
        if (proc === undefined) return;
        proc.expectedExit = true;
        await guard(vm.label, () => proc.process.kill());
        return;
      case "shutdown": {
        if (proc === undefined) return;
        proc.expectedExit = true;
        // A stopped process keeps SIGTERM pending until it runs again: wake it.
        const wake = proc.stoppedAs !== null;
        if (!(await guard(vm.label, () => proc.process.terminate({ graceMs: prog.graceMs, wake })))) {
          prog.log.warn(
            `VM '${prog.label}' (process ${proc.process.pid}) did not exit within ${prog.graceMs / 1000} s of SIGTERM; sent SIGKILL`,
          );
        }
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

  /** Each VM's keys, `cwd` and `exec` program, and `<state-dir>/process` (preflight.ts). */
  preflight(specs: readonly VmSpec[]): Promise<JitsuError[]> {
    return checkProcessVms(this.options.stateDir, specs);
  }

  /**
   * Clients connected to the VM: established inbound TCP connections of its
   * process group's processes, to ports they listen on (from /proc).
   */
  async connections(vm: VmRef): Promise<number> {
    const pid = this.pid(vm);
    if (pid === undefined) return 0;
    return countInboundConnections(await groupMembers(pid));
  }

  /** The process ID of a running VM (for diagnostics and tests). */
  pid(vm: VmRef): number | undefined {
    return this.running.get(vm.ref)?.process.pid;
  }

  /**
   * Kills nothing (the CLI decides with --stop-on-exit) but stops reporting
   * and lets Node exit while the processes run on.
   */
  async close(): Promise<void> {
    this.listeners.length = 0;
    this.supervisor.close();
    for (const proc of this.running.values()) proc.process.unref();
  }

  private program(vm: VmRef): Program {
    const prog = this.programs.get(vm.ref);
    if (prog === undefined) throw new BackendError(NAME, "unknown VM (not resolved)", { vm: vm.label });
    return prog;
  }

  private async continue(vm: VmRef, op: string): Promise<void> {
    const proc = this.running.get(vm.ref);
    if (proc === undefined) throw new BackendError(NAME, `cannot ${op}: it is not running`, { vm: vm.label });
    signal(proc, "SIGCONT", vm.label);
    proc.stoppedAs = null;
    this.savePid(this.program(vm), proc);
  }

  /** Whether a pid file an earlier jitsu left may exist for the VM (most VMs have none). */
  private mayHavePidFile(label: string): boolean {
    if (this.leftPidFiles !== null) return this.leftPidFiles.has(pidFileName(label));
    // Not connected (tests): a sync existence check costs a microsecond where an async open that fails costs tens.
    return existsSync(pidFilePath(this.options.stateDir, label));
  }

  /** Takes over a process an earlier jitsu left running, if its pid file still describes it and its command. */
  private async adopt(label: string): Promise<void> {
    const prog = this.programs.get(label)!;
    const found = await this.supervisor.adopt(prog.pidFile, {
      expect: (record) => record.extra["command"] === prog.command,
    });
    if (found === null) return;
    const recorded = found.record.extra["stoppedAs"];
    // Trust the record first: a SIGSTOP just sent may not show in /proc yet.
    const stoppedAs =
      recorded === "paused" || recorded === "suspended" ? recorded : found.state === "T" ? "paused" : null;
    this.track({ label, ref: label }, prog, { process: found.process, stoppedAs, expectedExit: false });
    prog.log.info(
      `Found process ${found.process.pid} of VM '${label}' left running by an earlier jitsu (${stoppedAs ?? "running"}); adopting it (its output is not captured)`,
    );
  }

  /** Takes over a VM process found by its environment, without a pid file (see connect), and writes its file. */
  private async adoptUnrecorded(label: string): Promise<void> {
    const pid = this.unrecorded.get(label)!;
    this.unrecorded.delete(label);
    const prog = this.programs.get(label)!;
    let found;
    try {
      found = await this.supervisor.adoptFound(pid, prog.pidFile, { command: prog.command, stoppedAs: null });
    } catch (err) {
      prog.log.warn(
        `Found process ${pid} of VM '${label}' without a pid file, but cannot write one: ${describeError(err)}`,
      );
      return;
    }
    if (found === null) return;
    const stoppedAs = found.state === "T" ? "paused" : null;
    this.track({ label, ref: label }, prog, { process: found.process, stoppedAs, expectedExit: false });
    prog.log.warn(
      `Found process ${pid} of VM '${label}' running without a pid file (an earlier jitsu was killed as it started it); adopting it (its output is not captured)`,
    );
  }

  /**
   * A second process of a VM whose first was adopted from its pid file: no
   * state would ever name it (an orphan holding the VM's ports), so it ends.
   */
  private endDuplicate(label: string): void {
    const pid = this.unrecorded.get(label)!;
    this.unrecorded.delete(label);
    if (this.running.get(label)?.process.pid === pid) return;
    this.log.warn(
      `Process ${pid} of VM '${label}' runs beside the one adopted from its pid file; killing it`,
    );
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }

  /** The value of JITSU_STATE_DIR in a VM's environment: this backend's folder, absolute. */
  private markerDir(): string {
    return resolvePath(pidFileDir(this.options.stateDir));
  }

  /** Makes `proc` the VM's process, and forgets it when it ends. */
  private track(vm: VmRef, prog: Program, proc: Running): void {
    this.running.set(vm.ref, proc);
    void proc.process.exited.then((exit) => {
      if (this.running.get(vm.ref) === proc) this.running.delete(vm.ref);
      // An adopted process (not our child) has no exit status: its end is noticed, not reported.
      if (proc.process.isChild) this.exited(vm, prog, proc, exit);
      else if (proc.expectedExit) prog.log.info(`Process ${proc.process.pid} of VM '${prog.label}' is gone`);
      else {
        // Adopted (not our child): no exit status, and its end noticed by the watch below.
        prog.log.warn(
          `Process ${proc.process.pid} of VM '${prog.label}' is gone (adopted: its exit status is unknown)`,
        );
        this.emit({ vm, state: "off", reason: "its process is gone" });
      }
    });
    // An adopted process sends no exit event: look at /proc now and then, so that a ready VM
    // whose process died is not answered for long (the hot path reads memory only).
    if (!proc.process.isChild) proc.process.watch(ADOPTED_POLL_MS);
  }

  private savePid(prog: Program, proc: Running): void {
    try {
      proc.process.writePidFile(prog.pidFile, { command: prog.command, stoppedAs: proc.stoppedAs });
    } catch (err) {
      prog.log.warn(`Could not write the pid file of VM '${prog.label}': ${describeError(err)}`);
    }
  }

  private exited(vm: VmRef, prog: Program, proc: Running, { code, signal }: ExitStatus): void {
    const pid = proc.process.pid;
    const reason = signal !== null ? `killed by ${signal}` : `exited with code ${code}`;
    if (proc.expectedExit) {
      prog.log.info(`Process ${pid} of VM '${prog.label}' ${reason}`);
      return;
    }
    const state: VmState = signal === null && code === 0 ? "off" : "crashed";
    if (state === "crashed") this.crashed.add(vm.ref);
    prog.log.warn(`Process ${pid} of VM '${prog.label}' ${reason} on its own`);
    // Whatever it left behind in its group would hold ports the next start needs.
    try {
      proc.process.signal("SIGKILL");
    } catch {
      // Nothing we may signal is left.
    }
    this.emit({ vm, state, reason });
  }

  private emit(event: BackendEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.log.warn(`A process backend listener failed: ${describeError(err)}`);
      }
    }
  }
}

/** Runs a supervisor operation; its SupervisorError (a signal refused) becomes a BackendError naming the VM. */
async function guard<T>(label: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw asBackendError(err, label);
  }
}

function signal(proc: Running, sig: NodeJS.Signals, label: string): void {
  try {
    proc.process.signal(sig); // false: already gone, and its exit follows
  } catch (err) {
    throw asBackendError(err, label);
  }
}

function asBackendError(err: unknown, label: string): unknown {
  if (!(err instanceof SupervisorError)) return err;
  return new BackendError(NAME, err.message, { vm: label, detail: err.detail, cause: err });
}
