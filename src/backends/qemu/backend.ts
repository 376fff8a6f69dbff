/**
 * The `qemu` backend: each VM is a QEMU process launched straight from a
 * kernel, in its own process group, controlled over QMP. Its pid file and QMP
 * socket live in the VM's directory under --state-dir, so a restarted jitsu
 * re-adopts a running VM instead of starting a second QEMU.
 *
 * pause = QMP stop; unpause = cont. suspend/save = stop, migrate the memory to
 * a file, quit; resume = a new QEMU with -incoming from that file, then cont.
 * shutdown = system_powerdown, quit after the grace period, then SIGKILL.
 * destroy = quit, then SIGKILL.
 */
import { createHash } from "node:crypto";
import { open, rm } from "node:fs/promises";
import type { BackendEvent, BackendOptions, StopMode, VmBackend, VmRef, VmState } from "../contract.js";
import type { Clock } from "../../clock/index.js";
import type { VmSpec } from "../../config/index.js";
import { BackendError, describeError, type JitsuError } from "../../errors/index.js";
import type { Logger } from "../../log/index.js";
import {
  PidFile,
  ProcessSupervisor,
  SupervisorError,
  countInboundConnections,
  type ExitStatus,
  type SupervisedProcess,
} from "../../supervisor/index.js";
import { qemuArgs, shellQuote } from "./command-line.js";
import { parseMachine, type QemuMachine } from "./config.js";
import { checkQemuVms } from "./preflight.js";
import { QmpClient, QmpError, type QmpEvent } from "./qmp.js";
import { VmDirectory } from "./vm-directory.js";

const NAME = "qemu";
/** How long QEMU may take to open its QMP socket (TCG on a busy host is slow to start). */
const QMP_APPEAR_MS = 60_000;
/** How long `quit` may take before SIGKILL. */
const QUIT_GRACE_MS = 5_000;
/** How long a migration to or from a file may take. */
const MIGRATION_MS = 300_000;
const POLL_MS = 10;
/** How often to look for the end of a re-adopted QEMU (not our child: no exit event). */
const ADOPTED_POLL_MS = 250;
/** Where a resuming QEMU reads the saved image from: its fd 3, the image file opened for it. */
const IMAGE_URI = "fd:3";

export const QEMU_STOP_MODES: ReadonlySet<StopMode> = new Set<StopMode>([
  "destroy",
  "shutdown",
  "suspend",
  "pause",
  "save",
]);

/** A QEMU process we run or re-adopted. */
interface Instance {
  /** Our child, or re-adopted from a previous jitsu (then its exit status and stderr are not ours). */
  readonly process: SupervisedProcess;
  qmp: QmpClient | null;
  /** Set before we make it exit, so the exit is not reported as a change behind our back. */
  expectedExit: boolean;
  /** The reason of QEMU's SHUTDOWN event, if one came. */
  shutdownReason: string | null;
  /** Started with `-incoming defer` to load a saved image on resume (key `standby`); the VM is still suspended. */
  standby: boolean;
}

interface Vm {
  readonly ref: VmRef;
  readonly machine: QemuMachine;
  readonly dir: VmDirectory;
  readonly log: Logger;
  /** Hash of the command line (without -incoming): a saved image only loads into the same machine. */
  readonly machineHash: string;
  instance: Instance | null;
  crashed: boolean;
  /** Our own operations run one at a time; events seen meanwhile are ours, not news. */
  busy: number;
  queue: Promise<unknown>;
}

/** QMP query-status `status` values (qapi/run-state.json) as VmState. */
/** The host ports of the VM's TCP `hostfwd`s. */
function hostfwdPorts(machine: QemuMachine): Set<number> {
  const ports = new Set<number>();
  for (const nic of machine.nics) {
    if (nic.kind !== "user") continue;
    for (const h of nic.hostfwd) {
      const m = /^tcp:[0-9.]*:(\d+)-/.exec(h);
      if (m !== null) ports.add(Number(m[1]));
    }
  }
  return ports;
}

function stateOfRunStatus(status: string): VmState {
  switch (status) {
    case "running":
      return "running";
    case "paused":
    case "suspended":
    case "prelaunch":
    case "inmigrate":
    case "finish-migrate":
    case "postmigrate":
    case "save-vm":
    case "restore-vm":
    case "debug":
    case "watchdog":
    case "colo":
      return "paused";
    case "internal-error":
    case "io-error":
    case "guest-panicked":
    case "shutdown":
      return "crashed";
    default:
      return "unknown";
  }
}

export class QemuBackend implements VmBackend {
  readonly name = NAME;
  private readonly vms = new Map<string, Vm>();
  private readonly listeners: ((event: BackendEvent) => void)[] = [];
  private readonly log: Logger;
  private closed = false;
  private readonly supervisor: ProcessSupervisor;
  /** All of the backend's time: QMP timeouts, polls, the grace periods, durations in the log. */
  private readonly clock: Clock;

  constructor(private readonly options: BackendOptions) {
    this.log = options.log;
    this.clock = options.clock;
    this.supervisor = new ProcessSupervisor({ clock: options.clock });
  }

  async connect(): Promise<void> {}

  async resolve(spec: VmSpec): Promise<VmRef> {
    const machine = parseMachine(spec);
    const dir = new VmDirectory(this.options.stateDir, spec.label);
    await dir.create().catch((err: unknown) => {
      throw new BackendError(NAME, `cannot create the state directory ${dir.path}`, {
        vm: spec.label,
        detail: describeError(err),
        cause: err,
      });
    });
    const ref: VmRef = { label: spec.label, ref: dir.path };
    const previous = this.vms.get(ref.ref);
    const machineHash = createHash("sha256")
      .update(JSON.stringify([machine.qemu, qemuArgs(machine, dir)]))
      .digest("hex")
      .slice(0, 16);
    const vm: Vm = {
      ref,
      machine,
      dir,
      log: this.log.child({ vm: spec.label }),
      machineHash,
      instance: previous?.instance ?? null,
      crashed: previous?.crashed ?? false,
      busy: 0,
      queue: previous?.queue ?? Promise.resolve(),
    };
    this.vms.set(ref.ref, vm);
    if (vm.instance === null) await this.adopt(vm);
    return ref;
  }

  async state(ref: VmRef): Promise<VmState> {
    const vm = this.vm(ref);
    const inst = vm.instance;
    if (inst?.standby === true) return "suspended";
    if (inst !== null) {
      try {
        const qmp = await this.qmpOf(vm, inst);
        const status = await qmp.execute<{ status: string }>("query-status", undefined, {
          timeoutMs: 10_000,
        });
        return stateOfRunStatus(status.status);
      } catch (err) {
        // QMP fails as QEMU dies: let its exit be seen (then it is off or crashed), not "unknown".
        if (vm.instance === inst && (await inst.process.waitExit(1000))) await inst.process.exited;
        if (vm.instance !== inst) return this.state(ref);
        vm.log.warn(`Cannot read the state of VM '${ref.label}': ${describeError(err)}`);
        return "unknown";
      }
    }
    if ((await vm.dir.readImageMeta()) !== null) return "suspended";
    return vm.crashed ? "crashed" : "off";
  }

  start(ref: VmRef): Promise<void> {
    return this.exclusive(ref, async (vm) => {
      await this.endStandby(vm);
      if (vm.instance !== null) return;
      if ((await vm.dir.readImageMeta()) !== null) {
        vm.log.info(`Discarding the saved memory of VM '${ref.label}': it is started afresh`);
        await vm.dir.dropImage();
      }
      await this.launch(vm);
    });
  }

  resume(ref: VmRef): Promise<void> {
    return this.exclusive(ref, async (vm) => {
      const current = vm.instance;
      if (current !== null && !current.standby) {
        await this.cont(vm, current);
        return;
      }
      const meta = await vm.dir.readImageMeta();
      if (meta === null) {
        await this.endStandby(vm);
        throw new BackendError(NAME, "cannot resume: there is no saved memory image (it is off)", {
          vm: ref.label,
        });
      }
      const problem = await vm.dir.imageProblem(meta);
      if (problem !== null) {
        await this.endStandby(vm);
        await this.bootInstead(vm, vm.dir.image, `its saved memory is damaged (${problem})`);
        return;
      }
      if (meta.machineHash !== vm.machineHash) {
        vm.log.warn(
          `The saved memory of VM '${ref.label}' was taken with another configuration; discarding it and booting afresh`,
        );
        await this.endStandby(vm);
        await vm.dir.dropImage();
        await this.launch(vm);
        return;
      }
      const t0 = this.clock.now();
      const standby = current?.standby === true ? current : null;
      let inst: Instance;
      try {
        inst = standby ?? (await this.launch(vm, IMAGE_URI));
      } catch (err) {
        if (!(err instanceof QemuExitedError)) throw err;
        await this.bootInstead(
          vm,
          vm.dir.image,
          `its saved memory could not be loaded (${describeError(err)})`,
        );
        return;
      }
      const up = this.clock.now() - t0;
      let loaded: number;
      try {
        const qmp = await this.qmpOf(vm, inst);
        if (standby !== null) await qmp.execute("migrate-incoming", { uri: IMAGE_URI });
        // QEMU loads the image, then stays paused: the image was taken from a stopped VM.
        const deadline = this.clock.now() + MIGRATION_MS;
        for (;;) {
          const { status } = await qmp.execute<{ status: string }>("query-status");
          if (status !== "inmigrate") break;
          if (this.clock.now() > deadline)
            throw new BackendError(NAME, "loading the saved memory timed out", { vm: ref.label });
          await this.clock.sleep(POLL_MS);
        }
        loaded = this.clock.now() - t0;
        await qmp.execute("cont");
        inst.standby = false;
      } catch (err) {
        // QEMU exited while loading (a cut-short or corrupt image), or refused it:
        // that image is never tried again; the VM boots afresh in the same call.
        await this.kill(vm, inst);
        const why = describeError(this.failure(vm, inst, "QEMU could not load it", err));
        await this.bootInstead(vm, vm.dir.image, `its saved memory could not be loaded (${why})`);
        return;
      }
      await vm.dir.dropImage();
      vm.log.info(
        `Resumed VM '${ref.label}' from its saved memory in ${this.clock.now() - t0} ms (${
          standby === null ? `QMP up after ${up} ms` : "standby QEMU"
        }, memory loaded after ${loaded} ms)`,
      );
    });
  }

  unpause(ref: VmRef): Promise<void> {
    return this.exclusive(ref, async (vm) => {
      const inst = vm.instance;
      if (inst === null || inst.standby) {
        throw new BackendError(NAME, "cannot unpause: it is not running", { vm: ref.label });
      }
      await this.cont(vm, inst);
    });
  }

  stop(ref: VmRef, mode: StopMode): Promise<void> {
    return this.exclusive(ref, async (vm) => {
      const inst = vm.instance?.standby === true ? null : vm.instance;
      switch (mode) {
        case "pause": {
          if (inst === null)
            throw new BackendError(NAME, "cannot pause: it is not running", { vm: ref.label });
          await this.command(vm, inst, "stop");
          return;
        }
        case "suspend":
        case "save": {
          if (inst === null) {
            if ((await vm.dir.readImageMeta()) !== null) return;
            throw new BackendError(NAME, `cannot ${mode}: it is not running`, { vm: ref.label });
          }
          await this.saveToFile(vm, inst);
          if (vm.machine.standby) await this.startStandby(vm);
          return;
        }
        case "shutdown": {
          await this.endStandby(vm);
          await vm.dir.dropImage();
          if (inst === null) return;
          await this.powerDown(vm, inst);
          return;
        }
        case "destroy": {
          await this.endStandby(vm);
          await vm.dir.dropImage();
          if (inst === null) return;
          inst.expectedExit = true;
          await this.quit(vm, inst);
          return;
        }
      }
    });
  }

  async macs(ref: VmRef): Promise<string[]> {
    return [...this.vm(ref).machine.macs];
  }

  /** Clients connected through the VM's `hostfwd` TCP ports (QEMU's own sockets, from /proc). */
  async connections(ref: VmRef): Promise<number> {
    const inst = this.vm(ref).instance;
    if (inst === null || inst.standby) return 0;
    return countInboundConnections([inst.process.pid], hostfwdPorts(this.vm(ref).machine));
  }

  /** A `hostfwd=tcp:HOST:HOSTPORT-:port` of the VM: HOST (127.0.0.1 when empty) and HOSTPORT. */
  hostPort(ref: VmRef, port: number): { host: string; port: number } | null {
    for (const nic of this.vm(ref).machine.nics) {
      if (nic.kind !== "user") continue;
      for (const h of nic.hostfwd) {
        const m = /^tcp:([0-9.]*):(\d+)-[0-9.]*:(\d+)$/.exec(h);
        if (m !== null && Number(m[3]) === port) return { host: m[1] || "127.0.0.1", port: Number(m[2]) };
      }
    }
    return null;
  }

  onEvent(listener: (event: BackendEvent) => void): void {
    this.listeners.push(listener);
  }

  /** --state-dir, and each VM's binary, files and keys (preflight.ts). */
  preflight(specs: readonly VmSpec[]): Promise<JitsuError[]> {
    return checkQemuVms(this.options.stateDir, specs);
  }

  /** Leaves the VMs running (a restarted jitsu re-adopts them); only our connections go. */
  async close(): Promise<void> {
    this.closed = true;
    for (const vm of this.vms.values()) {
      const inst = vm.instance;
      if (inst === null) continue;
      inst.qmp?.close();
      inst.process.unref();
    }
  }

  // ---- operations -------------------------------------------------------------

  /**
   * A saved image that must not be loaded: moved aside (named in the log, kept
   * for inspection), then the VM boots afresh, within the same resume.
   */
  private async bootInstead(vm: Vm, image: string, why: string): Promise<void> {
    const aside = await vm.dir.moveImageAside(image, "unloadable", this.clock.now());
    await vm.dir.dropImage();
    vm.log.warn(
      `VM '${vm.ref.label}': ${why}; ${aside === null ? "" : `moved aside to ${aside}; `}booting it afresh`,
    );
    await this.launch(vm);
  }

  private async cont(vm: Vm, inst: Instance): Promise<void> {
    await this.command(vm, inst, "cont");
  }

  /** Stops the guest, migrates its memory into the VM's image file, then quits QEMU. */
  private async saveToFile(vm: Vm, inst: Instance): Promise<void> {
    const t0 = this.clock.now();
    const qmp = await this.qmpOf(vm, inst);
    const tmp = `${vm.dir.image}.partial`;
    await rm(tmp, { force: true });
    // QEMU killed during our save is no crash of the guest: it ends off (its image was not saved).
    inst.expectedExit = true;
    try {
      // A stopped guest dirties no pages: one pass, a consistent image, and RESUME-free restore.
      await qmp.execute("stop");
      await qmp.execute("migrate-set-parameters", { "max-bandwidth": 8 * 1024 ** 3, "downtime-limit": 2000 });
      await qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(tmp)}` });
      const deadline = this.clock.now() + MIGRATION_MS;
      for (;;) {
        const info = await qmp.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
        if (info.status === "completed") break;
        if (info.status === "failed" || info.status === "cancelled") {
          throw new BackendError(NAME, "saving the memory failed", {
            vm: vm.ref.label,
            detail: info["error-desc"] ?? info.status,
          });
        }
        if (this.clock.now() > deadline) {
          await qmp.execute("migrate_cancel").catch(() => undefined);
          throw new BackendError(NAME, `saving the memory took more than ${MIGRATION_MS / 1000} s`, {
            vm: vm.ref.label,
          });
        }
        await this.clock.sleep(POLL_MS);
      }
      await vm.dir.commitImage(tmp, { machineHash: vm.machineHash, savedAt: this.clock.now() });
    } catch (err) {
      const error = this.failure(vm, inst, "cannot save the memory to a file", err);
      // Never resumed from (it has no meta), but kept for inspection.
      const aside = await vm.dir.moveImageAside(tmp, "partial", this.clock.now()).catch(() => null);
      if (aside !== null) {
        vm.log.warn(
          `The partial save of VM '${vm.ref.label}' was moved aside to ${aside}: ${describeError(error)}`,
        );
      }
      // Still running (a refused or failed migration): its exit is news again.
      if (vm.instance === inst) inst.expectedExit = false;
      throw error;
    }
    inst.expectedExit = true;
    await this.quit(vm, inst);
    vm.log.info(`Saved VM '${vm.ref.label}' to ${vm.dir.image} in ${this.clock.now() - t0} ms`);
  }

  /** ACPI power button; quit after the grace period, SIGKILL after that. */
  private async powerDown(vm: Vm, inst: Instance): Promise<void> {
    inst.expectedExit = true;
    try {
      const qmp = await this.qmpOf(vm, inst);
      // A paused guest cannot see the button.
      const { status } = await qmp.execute<{ status: string }>("query-status");
      if (status !== "running") await qmp.execute("cont");
      await qmp.execute("system_powerdown");
    } catch (err) {
      // QEMU died meanwhile (killed, OOM): it is off, which is what was asked.
      if (await inst.process.waitExit(1000)) {
        vm.log.warn(`QEMU of VM '${vm.ref.label}' ended during its shutdown: ${describeError(err)}`);
        return;
      }
      throw err;
    }
    if (await inst.process.waitExit(vm.machine.shutdownTimeoutMs)) return;
    vm.log.warn(
      `VM '${vm.ref.label}' did not power off within ${vm.machine.shutdownTimeoutMs / 1000} s of the power button; quitting QEMU`,
    );
    await this.quit(vm, inst);
  }

  /** Starts the QEMU that will load the image on resume; a failure only costs the resume its head start. */
  private async startStandby(vm: Vm): Promise<void> {
    try {
      await this.launch(vm, "defer");
      vm.log.info(`A standby QEMU waits to resume VM '${vm.ref.label}' from its saved memory`);
    } catch (err) {
      vm.log.warn(`Cannot start a standby QEMU for VM '${vm.ref.label}': ${describeError(err)}`);
    }
  }

  /** Ends a standby QEMU, if there is one. */
  private async endStandby(vm: Vm): Promise<void> {
    const inst = vm.instance;
    if (inst === null || !inst.standby) return;
    await this.quit(vm, inst);
  }

  /** QMP quit, then SIGKILL to the process group if QEMU lingers. */
  private async quit(vm: Vm, inst: Instance): Promise<void> {
    inst.expectedExit = true;
    try {
      const qmp = await this.qmpOf(vm, inst);
      // QEMU may close the socket before the reply makes it out: that is fine.
      await qmp.execute("quit", undefined, { timeoutMs: QUIT_GRACE_MS }).catch(() => undefined);
    } catch (err) {
      vm.log.warn(`Cannot ask QEMU of VM '${vm.ref.label}' to quit: ${describeError(err)}; killing it`);
    }
    if (await inst.process.waitExit(QUIT_GRACE_MS)) return;
    await this.kill(vm, inst);
  }

  /** SIGKILL to the process group; rejects if QEMU is still there 10 s later. */
  private async kill(vm: Vm, inst: Instance): Promise<void> {
    inst.expectedExit = true;
    let gone: boolean;
    try {
      gone = await inst.process.kill(10_000);
    } catch (err) {
      throw new BackendError(NAME, describeError(err), {
        vm: vm.ref.label,
        detail: (err as SupervisorError).detail,
        cause: err,
      });
    }
    if (!gone) {
      throw new BackendError(NAME, `QEMU (pid ${inst.process.pid}) survived SIGKILL`, { vm: vm.ref.label });
    }
  }

  /** A QMP command whose failure names the VM and keeps QEMU's error class and text. */
  private async command(vm: Vm, inst: Instance, command: string): Promise<void> {
    try {
      await (await this.qmpOf(vm, inst)).execute(command);
    } catch (err) {
      throw this.failure(vm, inst, `QMP '${command}' failed`, err);
    }
  }

  // ---- processes ---------------------------------------------------------------

  /** Spawns QEMU (with `incoming`, a migration URI to load from) and waits for its QMP socket. */
  private async launch(vm: Vm, incoming?: string): Promise<Instance> {
    const m = vm.machine;
    await vm.dir.clearRun(null);
    const args = qemuArgs(m, vm.dir, incoming);
    // The saved image, if any, is QEMU's fd 3 (IMAGE_URI): it reads the file itself, with no `cat` in between.
    const image = incoming === undefined ? null : await open(vm.dir.image, "r").catch(() => null);
    let proc: SupervisedProcess;
    try {
      proc = await this.supervisor.spawn({
        argv: [m.qemu, ...args],
        cwd: vm.dir.path,
        fds: image === null ? [] : [image.fd],
        onStderr: (line) => vm.log.warn(`qemu: ${line}`),
        onError: (err) => vm.log.warn(`QEMU of VM '${vm.ref.label}': ${describeError(err)}`),
      });
    } catch (err) {
      throw new BackendError(NAME, `cannot run ${m.qemu}`, {
        vm: vm.ref.label,
        detail: err instanceof SupervisorError ? err.detail : describeError(err),
        cause: err,
      });
    } finally {
      await image?.close();
    }
    try {
      proc.writePidFile(new PidFile(vm.dir.processFile));
    } catch (err) {
      vm.log.warn(`Could not write the pid file of VM '${vm.ref.label}': ${describeError(err)}`);
    }
    const inst: Instance = {
      process: proc,
      qmp: null,
      // An exit before QMP answers is start()'s failure to report, not a change behind our back.
      expectedExit: true,
      shutdownReason: null,
      standby: incoming === "defer",
    };
    this.attach(vm, inst);
    vm.crashed = false;
    vm.log.info(
      `Started QEMU (pid ${proc.pid}) for VM '${vm.ref.label}'${
        incoming === undefined ? "" : incoming === "defer" ? " as a standby" : " from its saved memory"
      }`,
    );
    vm.log.debug(`${m.qemu} ${args.join(" ")}`);

    const deadline = this.clock.now() + QMP_APPEAR_MS;
    const exitedEarly = async (): Promise<BackendError> => {
      const exit = await proc.exited;
      // Its last stderr lines say why; they may still be on their way.
      await Promise.race([proc.drained, this.clock.sleep(500)]);
      const what = `QEMU exited at start-up (${exitText(exit)})`;
      return new QemuExitedError(what, this.failure(vm, inst, what));
    };
    for (;;) {
      if (vm.instance !== inst) throw await exitedEarly();
      try {
        inst.qmp = await this.connectQmp(vm, inst, 5_000);
        inst.expectedExit = false;
        return inst;
      } catch (err) {
        const code = ((err as BackendError).cause as NodeJS.ErrnoException | undefined)?.code;
        if (code !== "ENOENT" && code !== "ECONNREFUSED") {
          if (await proc.waitExit(200)) throw await exitedEarly();
          await this.kill(vm, inst).catch(() => undefined);
          throw this.failure(vm, inst, "cannot talk to QEMU over QMP", err);
        }
      }
      if (this.clock.now() > deadline) {
        await this.kill(vm, inst).catch(() => undefined);
        throw this.failure(vm, inst, `QEMU opened no QMP socket within ${QMP_APPEAR_MS / 1000} s`);
      }
      // The socket is not there yet: look again in POLL_MS, or give up at once if QEMU exits meanwhile.
      // (It waited 200 ms here, so a socket that appeared just after a try cost a resume up to 0.2 s.)
      if (await proc.waitExit(POLL_MS)) throw await exitedEarly();
    }
  }

  /**
   * Re-adopts a QEMU left running by a previous jitsu: a pid file naming a
   * live process that is still that QEMU (the supervisor's identity policy; a
   * bare qemu.pid from before it, by its `-pidfile`), then its QMP socket.
   */
  private async adopt(vm: Vm): Promise<void> {
    const programPidFile = new PidFile(vm.dir.pidFile);
    const found = await this.supervisor.adopt(new PidFile(vm.dir.processFile), {
      programPidFile,
      expect: (_record, now) => vm.dir.isItsQemu(now.cmdline),
    });
    if (found === null) {
      const stale = programPidFile.readSync();
      if (stale !== null) {
        vm.log.debug(`Stale pid file ${vm.dir.pidFile} (pid ${stale.pid} is not its QEMU); removing it`);
      }
      await vm.dir.clearRun(null);
      return;
    }
    const proc = found.process;
    const inst: Instance = {
      process: proc,
      qmp: null,
      expectedExit: false,
      shutdownReason: null,
      standby: false,
    };
    // Not our child: look for its end now and then (and soon after its QMP socket closes).
    proc.watch(ADOPTED_POLL_MS);
    this.attach(vm, inst);
    try {
      inst.qmp = await this.connectQmp(vm, inst, 10_000);
      inst.qmp.onClose(() => this.clock.setTimer(20, () => void proc.isRunning()));
      const { status } = await inst.qmp.execute<{ status: string }>("query-status");
      inst.standby = status === "inmigrate" && (await vm.dir.readImageMeta()) !== null;
      vm.log.info(`Re-adopted QEMU (pid ${proc.pid}) of VM '${vm.ref.label}' from ${vm.dir.path}`);
    } catch (err) {
      vm.log.warn(
        `QEMU (pid ${proc.pid}) of VM '${vm.ref.label}' runs, but its QMP socket does not answer: ${describeError(err)}`,
      );
    }
  }

  /** Makes `inst` the VM's instance and reports its end. */
  private attach(vm: Vm, inst: Instance): void {
    vm.instance = inst;
    void inst.process.exited.then(async (exit) => {
      if (vm.instance === inst) vm.instance = null;
      inst.qmp?.close();
      await vm.dir.clearRun(inst.process.pid).catch(() => undefined);
      // A standby QEMU holds no guest: the VM stays suspended (its image is on disk) whatever becomes of it.
      if (inst.expectedExit || inst.standby) return;
      const guestFault = inst.shutdownReason === "guest-panic" || inst.shutdownReason === "guest-reset";
      const crashed = guestFault || (exit.code !== null && exit.code !== 0) || exit.signal !== null;
      vm.crashed = crashed;
      const reason =
        inst.shutdownReason !== null
          ? `QEMU shut down: ${inst.shutdownReason}`
          : `QEMU exited: ${exitText(exit)}`;
      if (!this.closed) {
        (crashed ? vm.log.warn : vm.log.info).call(
          vm.log,
          `VM '${vm.ref.label}' ${crashed ? "crashed" : "went off"} (${reason})`,
        );
      }
      this.emit({ vm: vm.ref, state: crashed ? "crashed" : "off", reason });
    });
  }

  private async connectQmp(vm: Vm, inst: Instance, timeoutMs: number): Promise<QmpClient> {
    const qmp = await QmpClient.connect(vm.dir.qmpSocket, { timeoutMs, clock: this.clock });
    if (this.closed) qmp.unref();
    qmp.onEvent((e) => this.onQmpEvent(vm, inst, e));
    return qmp;
  }

  /** The instance's QMP connection, reconnecting once if it dropped while QEMU lives on. */
  private async qmpOf(vm: Vm, inst: Instance): Promise<QmpClient> {
    if (inst.qmp !== null && !inst.qmp.closed) return inst.qmp;
    inst.qmp = await this.connectQmp(vm, inst, 10_000);
    return inst.qmp;
  }

  private onQmpEvent(vm: Vm, inst: Instance, e: QmpEvent): void {
    switch (e.event) {
      case "SHUTDOWN":
        inst.shutdownReason = typeof e.data["reason"] === "string" ? e.data["reason"] : "unknown";
        return;
      case "STOP":
        if (vm.busy === 0 && !inst.expectedExit)
          this.emit({ vm: vm.ref, state: "paused", reason: "QMP STOP event" });
        return;
      case "RESUME":
        if (vm.busy === 0 && !inst.expectedExit)
          this.emit({ vm: vm.ref, state: "running", reason: "QMP RESUME event" });
        return;
      case "GUEST_PANICKED":
        inst.shutdownReason = "guest-panic";
        return;
    }
  }

  private emit(event: BackendEvent): void {
    for (const l of this.listeners) l(event);
  }

  /** A BackendError for `what`, with QEMU's QMP error class/text or its last stderr lines. */
  private failure(vm: Vm, inst: Instance, what: string, err?: unknown): BackendError {
    if (err instanceof QmpError) {
      return new BackendError(NAME, what, {
        vm: vm.ref.label,
        detail: `${err.errorClass}: ${err.desc}`,
        cause: err,
      });
    }
    const detail = [err === undefined ? undefined : describeError(err), ...inst.process.stderrTail.slice(-2)]
      .filter((s) => s !== undefined)
      .join("; ");
    return new BackendError(NAME, what, {
      vm: vm.ref.label,
      ...(detail === "" ? {} : { detail }),
      cause: err,
    });
  }

  private vm(ref: VmRef): Vm {
    const vm = this.vms.get(ref.ref);
    if (vm === undefined) throw new BackendError(NAME, "unknown VM (resolve it first)", { vm: ref.label });
    return vm;
  }

  /** Runs `fn` after the VM's previous operation, with events marked as our own. */
  private exclusive<T>(ref: VmRef, fn: (vm: Vm) => Promise<T>): Promise<T> {
    const vm = this.vm(ref);
    const run = async (): Promise<T> => {
      vm.busy++;
      try {
        return await fn(vm);
      } finally {
        vm.busy--;
      }
    };
    const result = vm.queue.then(run, run);
    vm.queue = result.catch(() => undefined);
    return result;
  }
}

/** QEMU ended before it answered on QMP (a bad image given to -incoming, a bad kernel, a port taken). */
class QemuExitedError extends BackendError {
  constructor(what: string, error: BackendError) {
    super(NAME, what, {
      vm: error.vm,
      detail: error.detail,
      cause: error.cause,
    });
  }
}

function exitText(exit: ExitStatus): string {
  if (exit.signal !== null) return `killed by ${exit.signal}`;
  if (exit.code !== null) return `exit code ${exit.code}`;
  return "exit status unknown (not our child)";
}
