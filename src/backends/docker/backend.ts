/**
 * The docker VmBackend: a VM is a container of a Docker Engine API server
 * (Docker, or Podman's compatible service), found by name or id, or created
 * from `image` on the first summon. Spoken through dockerode.
 *
 * Stop modes: destroy = kill (SIGKILL); shutdown = stop (SIGTERM, SIGKILL
 * after stop_timeout); pause = pause (cgroup freezer); suspend and save =
 * checkpoint (CRIU), restored by the next summon, where the engine can
 * (checked in connect(), never silently replaced).
 */
import Docker from "dockerode";
import type { ContainerInspectInfo } from "dockerode";
import type { Clock, Timer } from "../../clock/index.js";
import type { VmSpec } from "../../config/index.js";
import { BackendError, ConfigError, JitsuError, UsageError } from "../../errors/index.js";
import type { Logger } from "../../log/index.js";
import type { BackendEvent, BackendOptions, StopMode, VmBackend, VmRef, VmState } from "../contract.js";
import { lookupProgram } from "../preflight.js";
import { BoundedCalls, EngineBusyError, EngineTimeoutError } from "./bounded-calls.js";
import { planContainer, type ContainerPlan } from "./container-plan.js";
import { startedBehindEngine } from "./lost-start.js";
import { EventWatcher, describeEvent, eventState, type ContainerEvent } from "./events.js";
import { CREATED_LABEL } from "./keys.js";
import type { DockerTarget } from "./target.js";

export const BACKEND_NAME = "docker";
export const DOCKER_STOP_MODES: ReadonlySet<StopMode> = new Set<StopMode>([
  "destroy",
  "shutdown",
  "suspend",
  "pause",
  "save",
]);
const CHECKPOINT_ID = "jitsu";

/** How long after a reconnect every container is read again (see afterReconnect). */
const RECONNECT_RECHECK_MS = 1000;

interface Known {
  readonly ref: VmRef;
  readonly plan: ContainerPlan;
  /** The container's id once found or created; undefined while it does not exist. */
  id: string | undefined;
  /** The state we last saw or reported, so events report changes only. */
  last: VmState | undefined;
  /** Taken by every operation, state read and event re-read as it begins (the next number). */
  ticket: number;
  /**
   * The newest ticket that says what the container is: an operation's from
   * its start, a read's once it answered. A read that answered with an older
   * ticket is stale; a read that failed says nothing and leaves this as it was.
   */
  settled: number;
  /** Checkpointed by us (suspend/save) and not restored since. */
  checkpointed: boolean;
  /** Engine events queued for a re-read so far: a re-read with a newer one behind it leaves the report to it. */
  events?: number;
  /** The engine calls it created, but its process runs (lost-start.ts): warned once, stopped with `stop`. */
  untracked?: boolean;
}

export interface EngineInfo {
  readonly kind: "docker" | "podman";
  readonly version: string;
  readonly apiVersion: string;
  readonly experimental: boolean;
}

export interface DockerBackendTuning {
  readonly reconnectInitialMs?: number;
  readonly reconnectMaxMs?: number;
  /** How long `stop(vm, "destroy")` waits for the killed container to be gone. */
  readonly killWaitMs?: number;
  /** At most this many engine calls outstanding at once; more fail at once (default 256). */
  readonly maxCalls?: number;
}

/** The call timeout when --start-timeout is not set (as libvirt's). */
const DEFAULT_CALL_TIMEOUT_MS = 30_000;
/**
 * At start-up the engine may take this long at least (the call timeout when
 * longer): Podman answers /version by asking conmon and the runtime for
 * theirs, 0.4-1.5 s on a loaded machine, more than a short --start-timeout
 * leaves; a hung engine still fails start-up, just not at once.
 */
const CONNECT_TIMEOUT_MS = 10_000;
/** The engine's own grace between SIGTERM and SIGKILL when neither stop_timeout nor the container gives one. */
const ENGINE_STOP_GRACE_S = 10;

/** Socket errors that mean the engine is not there or went away: its fault, not the VM's. */
const DAEMON_CODES = new Set([
  "ENOENT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ECONNABORTED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/** dockerode's errors: an HTTP status and the engine's JSON body, or a socket error code. */
interface EngineError extends Error {
  statusCode?: number;
  json?: { message?: string } | null;
  reason?: string;
  code?: string;
}

export class DockerBackend implements VmBackend {
  readonly name = BACKEND_NAME;
  /** For requests; each goes through `calls` (bounded in time and number). */
  readonly docker: Docker;
  /** Every engine request: bounded by the call timeout, at most maxCalls at once. */
  readonly calls: BoundedCalls;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly byLabel = new Map<string, Known>();
  private readonly listeners: ((e: BackendEvent) => void)[] = [];
  private readonly watcher: EventWatcher;
  /** The second re-read after a reconnect (afterReconnect). */
  private recheckTimer: Timer | null = null;
  private closed = false;
  private eventChain: Promise<void> = Promise.resolve();
  private readonly mode: string | undefined;
  private readonly bind: string | undefined;
  private readonly killWaitMs: number;
  engine: EngineInfo | undefined;

  constructor(
    readonly target: DockerTarget,
    options: Pick<BackendOptions, "log" | "clock" | "settings" | "callTimeoutMs">,
    tuning: DockerBackendTuning = {},
  ) {
    this.log = options.log;
    this.clock = options.clock;
    this.mode = options.settings["mode"];
    this.bind = options.settings["bind"];
    this.killWaitMs = tuning.killWaitMs ?? 30_000;
    this.calls = new BoundedCalls({
      clock: this.clock,
      timeoutMs: options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS,
      maxCalls: tuning.maxCalls ?? 256,
    });
    // No timeout of the modem's own: `calls` bounds each request and aborts it.
    this.docker = new Docker({ ...target.options });
    // The event stream stays open for hours: no timeout on its requests.
    const events = new Docker({ ...target.options });
    this.watcher = new EventWatcher({
      docker: events,
      display: target.display,
      clock: this.clock,
      openTimeoutMs: Math.max(CONNECT_TIMEOUT_MS, this.calls.timeoutMs),
      log: this.log,
      onEvent: (e) => this.onEngineEvent(e),
      onReconnect: () => this.afterReconnect(),
      ...(tuning.reconnectInitialMs === undefined ? {} : { reconnectInitialMs: tuning.reconnectInitialMs }),
      ...(tuning.reconnectMaxMs === undefined ? {} : { reconnectMaxMs: tuning.reconnectMaxMs }),
    });
  }

  get eventStats(): { opens: number; reconnects: number } {
    return this.watcher.stats;
  }

  async connect(): Promise<void> {
    let version: Docker.DockerVersion & { Components?: { Name?: string }[]; Experimental?: boolean };
    try {
      // dockerode's version() takes options (and so a signal), though its types omit them.
      const versionOf = this.docker.version.bind(this.docker) as (opts: {
        abortSignal: AbortSignal;
      }) => Promise<Docker.DockerVersion>;
      version = await this.calls.run(
        (abortSignal) => versionOf({ abortSignal }),
        Math.max(0, CONNECT_TIMEOUT_MS - this.calls.timeoutMs),
      );
    } catch (err) {
      throw this.fail(err, "connect");
    }
    const podman = (version.Components ?? []).some((c) => /podman/i.test(c.Name ?? ""));
    this.engine = {
      kind: podman ? "podman" : "docker",
      version: version.Version ?? "?",
      apiVersion: version.ApiVersion ?? "?",
      experimental: version.Experimental === true,
    };
    this.log.info(
      `docker: ${this.target.display} is ${podman ? "Podman" : "Docker"} ${this.engine.version} (API ${this.engine.apiVersion})`,
    );
    if (this.mode === "suspend" || this.mode === "save") this.checkCheckpoints(this.mode, this.engine);
    try {
      await this.watcher.start();
    } catch (err) {
      throw this.fail(err, "follow the event stream");
    }
  }

  async resolve(spec: VmSpec): Promise<VmRef> {
    const plan = planContainer(spec);
    const known: Known = {
      ref: { label: spec.label, ref: plan.name },
      plan,
      id: undefined,
      last: undefined,
      ticket: 0,
      settled: 0,
      checkpointed: false,
    };
    let info: ContainerInspectInfo | undefined;
    try {
      info = await this.calls.run((abortSignal) =>
        this.docker.getContainer(plan.name).inspect({ abortSignal }),
      );
    } catch (err) {
      if (!isNotFound(err)) throw this.fail(err, "look up the container", spec.label, plan.name);
    }
    if (info !== undefined) {
      known.id = info.Id;
      if (plan.create !== undefined && info.Config?.Labels?.[CREATED_LABEL] === undefined) {
        this.log.info(
          `docker: VM '${spec.label}': container '${plan.name}' exists and was not created by jitsu; it is used as it is (image and the other creation keys are not applied)`,
        );
      }
    } else if (plan.create === undefined) {
      throw new BackendError(
        BACKEND_NAME,
        `no such container '${plan.name}' at ${this.target.display} (create it first, or give 'image' so that jitsu creates it)`,
        { vm: spec.label },
      );
    } else {
      try {
        // (dockerode's image inspect takes no signal: the deadline still ends the wait.)
        await this.calls.run(() => this.docker.getImage(plan.create!.Image!).inspect());
      } catch (err) {
        throw this.fail(err, "look up the image", spec.label, plan.name, plan.create.Image);
      }
    }
    this.byLabel.set(spec.label, known);
    return known.ref;
  }

  async state(vm: VmRef): Promise<VmState> {
    const known = this.known(vm);
    const ticket = ++known.ticket;
    try {
      const state = await this.readState(known);
      if (ticket > known.settled) {
        known.settled = ticket;
        known.last = state;
      }
      return state;
    } catch (err) {
      throw this.fail(err, "read the state", vm.label, known.plan.name);
    }
  }

  async start(vm: VmRef): Promise<void> {
    const known = this.known(vm);
    this.settle(known);
    try {
      if (known.id === undefined && known.plan.create !== undefined) await this.create(known);
      const start = (): Promise<unknown> =>
        this.calls.run((abortSignal) => this.container(known).start({ abortSignal }));
      try {
        await start();
      } catch (err) {
        if (isNotModified(err)) {
          // already running
        } else if (isNotFound(err) && known.plan.create !== undefined) {
          // Removed since we last saw it: made again, as on the first summon.
          await this.create(known);
          await start();
        } else throw err;
      }
      known.last = "running";
      known.checkpointed = false;
    } catch (err) {
      throw this.fail(err, "start the container", vm.label, known.plan.name);
    }
  }

  /** From suspended: restored from our checkpoint; a container merely stopped is started. */
  async resume(vm: VmRef): Promise<void> {
    const known = this.known(vm);
    if (!known.checkpointed) return this.start(vm);
    this.settle(known);
    try {
      if (this.engine?.kind === "podman") {
        await this.libpod(`/containers/${encodeURIComponent(this.idOf(known))}/restore?`, {
          keep: "true",
          tcpEstablished: "true",
        });
      } else {
        // POST /containers/{id}/start?checkpoint=ID (experimental Docker); dockerode's types omit it.
        await this.calls.run((abortSignal) =>
          this.container(known).start({
            checkpoint: CHECKPOINT_ID,
            abortSignal,
          } as Docker.ContainerStartOptions),
        );
      }
      known.checkpointed = false;
      known.last = "running";
    } catch (err) {
      throw this.fail(err, "restore the container from its checkpoint", vm.label, known.plan.name);
    }
  }

  async unpause(vm: VmRef): Promise<void> {
    const known = this.known(vm);
    this.settle(known);
    try {
      await this.calls.run((abortSignal) => this.container(known).unpause({ abortSignal }));
      known.last = "running";
    } catch (err) {
      throw this.fail(err, "unpause the container", vm.label, known.plan.name);
    }
  }

  async stop(vm: VmRef, mode: StopMode): Promise<void> {
    const known = this.known(vm);
    this.settle(known);
    const c = this.container(known);
    try {
      switch (mode) {
        case "destroy":
          try {
            if (known.untracked === true) {
              // The engine refuses to kill what it thinks never started; its stop kills the process.
              await this.calls.run((abortSignal) => c.stop({ t: 0, abortSignal }));
            } else {
              await this.calls.run((abortSignal) => c.kill({ signal: "SIGKILL", abortSignal }));
            }
          } catch (err) {
            if (!isConflict(err) && !isNotModified(err)) throw err; // 409, 304: not running already
          }
          await this.waitNotRunning(known);
          known.last = "off";
          return;
        case "shutdown":
          try {
            // The engine waits up to the grace period before its SIGKILL: the deadline allows for it.
            const grace = known.plan.stopTimeout ?? ENGINE_STOP_GRACE_S;
            await this.calls.run(
              (abortSignal) =>
                c.stop(
                  known.plan.stopTimeout === undefined
                    ? { abortSignal }
                    : { t: known.plan.stopTimeout, abortSignal },
                ),
              grace * 1000,
            );
          } catch (err) {
            if (!isNotModified(err)) throw err; // 304: stopped already
          }
          known.last = "off";
          return;
        case "pause":
          await this.calls.run((abortSignal) => c.pause({ abortSignal }));
          known.last = "paused";
          return;
        case "suspend":
        case "save":
          await this.checkpoint(known);
          known.checkpointed = true;
          known.last = "suspended";
          return;
      }
    } catch (err) {
      throw this.fail(err, `stop the container (${mode})`, vm.label, known.plan.name);
    }
  }

  /**
   * The container's addresses on its networks (from inspect), or, with the
   * host's network, the address clients reach this host by: -b's when it is
   * one address of this host, else 127.0.0.1 (README: "Addresses").
   */
  async addresses(vm: VmRef): Promise<string[]> {
    const known = this.known(vm);
    let info: ContainerInspectInfo;
    try {
      info = await this.calls.run((abortSignal) => this.container(known).inspect({ abortSignal }));
    } catch (err) {
      throw this.fail(err, "read the addresses", vm.label, known.plan.name);
    }
    if (info.HostConfig?.NetworkMode === "host") return [this.hostAddress()];
    const found = new Set<string>();
    // The old top-level IPAddress (the default bridge) is still filled in by Docker and Podman.
    const settings = info.NetworkSettings as
      (ContainerInspectInfo["NetworkSettings"] & { IPAddress?: string }) | undefined;
    for (const net of Object.values(settings?.Networks ?? {})) {
      if (net?.IPAddress) found.add(net.IPAddress);
      if (net?.GlobalIPv6Address) found.add(net.GlobalIPv6Address);
    }
    if (settings?.IPAddress) found.add(settings.IPAddress);
    if (found.size === 0 && info.State?.Running === true) {
      throw new BackendError(
        BACKEND_NAME,
        `container '${known.plan.name}' runs but has no address on its networks (network '${info.HostConfig?.NetworkMode ?? "?"}'); give ip=`,
        { vm: vm.label },
      );
    }
    return [...found];
  }

  onEvent(listener: (event: BackendEvent) => void): void {
    this.listeners.push(listener);
  }

  async preflight(specs: readonly VmSpec[]): Promise<JitsuError[]> {
    const problems: ConfigError[] = [];
    for (const spec of specs) {
      try {
        planContainer(spec, problems);
      } catch (err) {
        if (err instanceof ConfigError) problems.push(err);
        else throw err;
      }
    }
    return problems;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.recheckTimer?.cancel();
    this.watcher.close();
    await this.eventChain.catch(() => undefined);
  }

  /** An operation begins: every read begun before it is stale. */
  private settle(known: Known): void {
    known.settled = ++known.ticket;
  }

  private known(vm: VmRef): Known {
    const k = this.byLabel.get(vm.label);
    if (k === undefined)
      throw new BackendError(BACKEND_NAME, "was never resolved by this backend", { vm: vm.label });
    return k;
  }

  private idOf(known: Known): string {
    return known.id ?? known.plan.name;
  }

  private container(known: Known): Docker.Container {
    return this.docker.getContainer(this.idOf(known));
  }

  private async create(known: Known): Promise<void> {
    try {
      // A copy: dockerode deletes abortSignal from the options it is given.
      const c = await this.calls.run((abortSignal) =>
        this.docker.createContainer({ ...known.plan.create!, abortSignal }),
      );
      known.id = c.id;
    } catch (err) {
      if (!isConflict(err)) throw err;
      // 409: a container of that name appeared meanwhile (made by hand, or by another jitsu): use it.
      known.id = (
        await this.calls.run((abortSignal) =>
          this.docker.getContainer(known.plan.name).inspect({ abortSignal }),
        )
      ).Id;
    }
    this.log.info(
      `docker: created container '${known.plan.name}' from ${known.plan.create!.Image} for VM '${known.ref.label}'`,
    );
  }

  private async readState(known: Known): Promise<VmState> {
    return (await this.read(known)).state;
  }

  /** The container's state, and whether it is gone (no such container: off). */
  private async read(known: Known): Promise<{ state: VmState; gone: boolean }> {
    let info: ContainerInspectInfo;
    try {
      info = await this.calls.run((abortSignal) =>
        this.docker.getContainer(this.idOf(known)).inspect({ abortSignal }),
      );
    } catch (err) {
      if (!isNotFound(err) && !isMidRemoval(err)) throw err;
      // Gone (removed behind our back): off; a created one is made again by the next start.
      known.id = undefined;
      known.checkpointed = false;
      return { state: "off", gone: true };
    }
    known.id = info.Id;
    const state = mapContainerState(info.State, known.checkpointed);
    const untracked =
      state === "off" &&
      info.State?.Status === "created" &&
      this.target.socketPath !== undefined &&
      startedBehindEngine(info.State.Pid);
    if (untracked && known.untracked !== true) {
      this.log.warn(
        `docker: VM '${known.ref.label}': ${this.target.display} reports container '${known.plan.name}' as created, but its process (pid ${info.State!.Pid}) runs: the engine lost track of a start (was it killed mid-start?); taken as running, not started again`,
      );
    }
    known.untracked = untracked;
    return { state: untracked ? "running" : state, gone: false };
  }

  private async waitNotRunning(known: Known): Promise<void> {
    const deadline = this.clock.now() + this.killWaitMs;
    for (;;) {
      const state = await this.readState(known);
      if (state !== "running" && state !== "paused") return;
      if (this.clock.now() >= deadline) {
        throw new BackendError(
          BACKEND_NAME,
          `container '${known.plan.name}' still runs ${this.killWaitMs / 1000} s after SIGKILL`,
          { vm: known.ref.label },
        );
      }
      await this.clock.sleep(50);
    }
  }

  private async checkpoint(known: Known): Promise<void> {
    if (this.engine?.kind === "podman") {
      await this.libpod(`/containers/${encodeURIComponent(this.idOf(known))}/checkpoint?`, {
        keep: "true",
        tcpEstablished: "true",
      });
      return;
    }
    const c = this.container(known) as Docker.Container & {
      deleteCheckpoint(id: string, opts: object): Promise<unknown>;
      createCheckpoint(opts: object): Promise<unknown>;
    };
    await this.calls
      .run((abortSignal) => c.deleteCheckpoint(CHECKPOINT_ID, { abortSignal }))
      .catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    await this.calls.run((abortSignal) =>
      c.createCheckpoint({ CheckpointID: CHECKPOINT_ID, Exit: true, abortSignal }),
    );
  }

  /** A call to Podman's own API (libpod), for what the Docker API has no word for. */
  private libpod(path: string, query: Record<string, string>): Promise<unknown> {
    return this.calls.run(
      (abortSignal) =>
        new Promise((resolve, reject) => {
          this.docker.modem.dial(
            {
              path: `/v4.0.0/libpod${path}`,
              method: "POST",
              abortSignal,
              options: query,
              statusCodes: {
                200: true,
                204: true,
                404: "no such container",
                409: "conflict",
                500: "server error",
              },
            },
            (err: unknown, data: unknown) => (err ? reject(err as Error) : resolve(data)),
          );
        }),
    );
  }

  /**
   * -m suspend/save need checkpoints: CRIU on the engine's host, and Podman or
   * an experimental Docker. A UsageError naming why, at start-up.
   */
  private checkCheckpoints(mode: string, engine: EngineInfo): void {
    const cannot = (why: string): UsageError =>
      new UsageError(
        `the docker backend cannot ${mode} containers at ${this.target.display} (${engine.kind === "podman" ? "Podman" : "Docker"} ${engine.version}): ${why}; use -m pause (frozen in memory) or -m shutdown instead`,
        "--mode",
      );
    if (engine.kind === "docker" && !engine.experimental) {
      throw cannot(
        `Docker checkpoints are experimental and this daemon is not ("experimental": true in /etc/docker/daemon.json)`,
      );
    }
    if (this.target.socketPath === undefined) {
      this.log.warn(
        `docker: cannot check from here that ${this.target.display} has CRIU for -m ${mode}; the first checkpoint will tell`,
      );
      return;
    }
    const path = `${process.env["PATH"] ?? "/usr/bin:/bin"}:/usr/sbin:/sbin`;
    if ("problem" in lookupProgram("criu", { searchPath: path })) {
      throw cannot(
        "checkpoint and restore need CRIU on the engine's host, and criu is not installed here (apt-get install criu)",
      );
    }
  }

  private onEngineEvent(e: ContainerEvent): void {
    const state = eventState(e.action);
    if (state === undefined) return;
    for (const known of this.byLabel.values()) {
      const matches =
        (known.id !== undefined && e.id === known.id) ||
        e.name === known.plan.name ||
        (known.id === undefined && e.id.startsWith(known.plan.name));
      if (!matches) continue;
      this.enqueueRead(known, describeEvent(e), state);
    }
  }

  /**
   * Re-reads the container after an event (in the order events came) and
   * reports a change: the engine's state, not the event's, so an event
   * delivered after our own later operation cannot undo it.
   */
  private enqueueRead(known: Known, reason: string, implied?: VmState): void {
    const seq = (known.events = (known.events ?? 0) + 1);
    this.eventChain = this.eventChain.then(async () => {
      const ticket = ++known.ticket;
      let state: VmState;
      let gone: boolean;
      try {
        ({ state, gone } = await this.read(known));
      } catch (err) {
        this.log.debug(
          `docker: cannot read the state of VM '${known.ref.label}' after an event: ${(err as Error).message}`,
        );
        return;
      }
      // An operation begun, or a read answered, since this read began knows better. (A state read
      // that failed knows nothing: this read still reports, rather than the reaper's next pass.)
      if (known.settled > ticket) return;
      // A newer event is queued (a 'start' read after a 'kill' already finds the container dead):
      // its re-read reports the change, with its own reason ("died with exit code 137", not "start").
      if (known.events !== seq) return;
      // An event that says up ('start', 'unpause', 'pause') whose container is in another state
      // already: the event that says why ('died', 'stop', 'remove', 'pause', 'unpause') is on its
      // way and reports it (Podman may deliver our own start's 'start' after the kill or the pause
      // that followed it: not "paused (start)"); the reaper's re-read would too.
      if ((implied === "running" || implied === "paused") && state !== implied) return;
      // Gone: removed, whichever event came first. `podman rm --force` sends stop, died and remove,
      // and the stream may deliver the stop alone: its re-read finds the container gone, and the
      // later ones no change to report.
      known.settled = ticket;
      this.report(known, state, gone && implied !== undefined ? "removed" : reason);
    });
  }

  private report(known: Known, state: VmState, reason: string): void {
    if (state === known.last) return;
    known.last = state;
    const event: BackendEvent = { vm: known.ref, state, reason };
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.log.error(`docker: event listener failed: ${(err as Error).message}`);
      }
    }
  }

  private reconcile(reason: string): void {
    for (const known of this.byLabel.values()) this.enqueueRead(known, reason);
  }

  /**
   * The stream is back: every container is re-read now (what changed while
   * it was down), and once more a second later. An engine answers the events
   * request before it follows its event log (Podman 4.3's file logger), so a
   * change in that moment has no event; the second read sees it.
   */
  private afterReconnect(): void {
    this.reconcile("engine reconnected");
    this.recheckTimer?.cancel();
    this.recheckTimer = this.clock.setTimer(RECONNECT_RECHECK_MS, () => {
      this.recheckTimer = null;
      if (!this.closed) this.reconcile("seen after the engine reconnected");
    });
  }

  private hostAddress(): string {
    const b = this.bind;
    if (b === undefined || b === "0.0.0.0" || b === "::" || b.startsWith("127.") || b === "::1")
      return "127.0.0.1";
    return b;
  }

  /**
   * One line for users, naming the URI and the VM (BackendError adds the
   * VM), with the engine's own text as the detail. The engine not there, gone
   * or hung (a socket error, a call past its deadline, too many calls waiting)
   * is `unavailable`: not the VM's fault, so no back-off and not counted
   * toward --max-failures.
   */
  private fail(err: unknown, what: string, vm?: string, name?: string, image?: string): JitsuError {
    if (err instanceof JitsuError) return err;
    const uri = this.target.display;
    const e = err as EngineError;
    const engineText =
      e.json?.message ?? (typeof e.reason === "string" && e.reason !== "" ? e.reason : undefined);
    const unavailable =
      err instanceof EngineTimeoutError ||
      err instanceof EngineBusyError ||
      (typeof e.statusCode !== "number" && typeof e.code === "string" && DAEMON_CODES.has(e.code));
    const make = (message: string, detail?: string): BackendError =>
      new BackendError(BACKEND_NAME, message, {
        ...(vm === undefined ? {} : { vm }),
        ...(detail === undefined ? {} : { detail }),
        cause: err,
        unavailable,
      });
    if (err instanceof EngineTimeoutError) {
      const made = make(
        `no answer from ${uri} for ${err.ms / 1000} s while trying to ${what}; the call was abandoned (its connection reset)`,
      );
      this.log.warn(made.message);
      return made;
    }
    if (err instanceof EngineBusyError) {
      return make(
        `${err.waiting} calls to ${uri} are already waiting for an answer (is the engine hung?); not sending more`,
      );
    }
    if (typeof e.statusCode === "number") {
      const detail = `HTTP ${e.statusCode}: ${engineText ?? e.message}`;
      if (e.statusCode === 404) {
        if (/image/i.test(engineText ?? "")) {
          const img = image ?? this.byLabel.get(vm ?? "")?.plan.create?.Image;
          return make(
            `no such image${img === undefined ? "" : ` '${img}'`} at ${uri} (pull or build it on the engine first: jitsu does not pull)`,
            detail,
          );
        }
        return make(`no such container${name === undefined ? "" : ` '${name}'`} at ${uri}`, detail);
      }
      if (e.statusCode === 401 || e.statusCode === 403)
        return make(`permission denied to ${what} at ${uri}`, detail);
      return make(`cannot ${what} at ${uri}`, detail);
    }
    const sock = this.target.socketPath;
    switch (e.code) {
      case "ENOENT":
        return make(
          `cannot connect to ${uri}: no socket at ${sock ?? "?"} (is the engine running? systemctl start docker, or podman system service)`,
        );
      case "ECONNREFUSED":
        return make(`cannot connect to ${uri}: connection refused (is the engine running?)`);
      case "EACCES":
      case "EPERM":
        return make(
          `permission denied on ${sock === undefined ? uri : `the socket ${sock}`} (run jitsu as root, or as a user in the socket's group, e.g. docker)`,
        );
      case "ECONNRESET":
      case "EPIPE":
      case "ECONNABORTED":
        return make(
          `lost the connection to ${uri} while trying to ${what}; the outcome is unknown and the state will be re-read`,
          e.code,
        );
      default:
        if (typeof e.code === "string" && /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO/.test(e.code)) {
          return make(
            `TLS with ${uri} failed (${e.code}): set DOCKER_CERT_PATH to the folder with the engine's ca.pem and your cert.pem and key.pem`,
          );
        }
        return make(`cannot ${what} at ${uri}`, e.code ?? (err as Error).message);
    }
  }
}

/** The engine's State -> our VmState (Status, not Running: Podman 4.3 reports a paused container as not running). */
export function mapContainerState(
  state: ContainerInspectInfo["State"] | undefined,
  checkpointed: boolean,
): VmState {
  switch (state?.Status) {
    case "running":
    case "restarting":
      return "running";
    case "paused":
      return "paused";
    case "created":
    case "exited":
    case "removing":
    case "stopped":
    case "configured":
      return checkpointed ? "suspended" : "off";
    case "dead":
      return "crashed";
    default:
      return "unknown";
  }
}

function isNotFound(err: unknown): boolean {
  return (err as EngineError | null)?.statusCode === 404;
}
/**
 * Podman's 500 for a container it looked up and then found gone from its
 * database: removed meanwhile (an inspect waits for the lock that `rm` holds,
 * then finds it gone). As good as a 404 for a state read.
 */
function isMidRemoval(err: unknown): boolean {
  const e = err as EngineError | null;
  return e?.statusCode === 500 && /\bno such container\b/i.test(e.json?.message ?? "");
}
function isNotModified(err: unknown): boolean {
  return (err as EngineError | null)?.statusCode === 304;
}
function isConflict(err: unknown): boolean {
  return (err as EngineError | null)?.statusCode === 409;
}
