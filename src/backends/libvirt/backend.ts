/**
 * The libvirt VmBackend: VMs are libvirt domains found by uuid (which wins, as
 * in the original Jitsu) or name, driven through our own remote-protocol client.
 *
 * Stop modes: destroy = virDomainDestroy; shutdown = virDomainShutdown, then
 * wait for shut off; suspend and pause = virDomainSuspend (paused in memory);
 * save = virDomainManagedSave (memory to disk; the next create restores it).
 */
import type { BackendEvent, BackendOptions, StopMode, VmBackend, VmRef, VmState } from "../contract.js";
import type { Clock } from "../../clock/index.js";
import type { VmSpec } from "../../config/index.js";
import { BackendError, ConfigError, JitsuError } from "../../errors/index.js";
import type { Logger } from "../../log/index.js";
import { AuthError, LibvirtConnection, UnreachableError, type ConnectionOptions } from "./connection.js";
import {
  createWithFlags,
  getState,
  getXmlDesc,
  hasManagedSaveImage,
  interfaceAddresses,
  lookupByName,
  lookupByUuid,
  macsFromDomainXml,
  managedSave,
  registerLifecycleEvents,
  simpleDomainCall,
} from "./domain.js";
import { eventState, describeEvent } from "./events.js";
import {
  AddressSource,
  DomainState,
  PausedReason,
  Proc,
  readLifecycleMessage,
  uuidToString,
  type Domain,
} from "./protocol.js";
import { ConnectionLostError, ErrorCode, LibvirtError, ProtocolError } from "./rpc.js";
import { TransportError } from "./transport.js";
import type { LibvirtUri } from "./uri.js";
import { XdrError } from "./xdr.js";

export const BACKEND_NAME = "libvirt";

interface Known {
  ref: VmRef;
  dom: Domain;
  /** The state we last saw or reported, so events report changes only. */
  last: VmState | undefined;
  /** Bumped by every operation and state read: an event worked out before that is stale. */
  generation: number;
}

export interface LibvirtBackendOptions extends Omit<ConnectionOptions, "log" | "clock"> {
  /** How long `stop(vm, "shutdown")` waits for the guest to power off. */
  shutdownTimeoutMs?: number;
  /** Poll interval while waiting for a shutdown. */
  pollIntervalMs?: number;
}

/** virDomainState -> our VmState (shut off with a managed save image is "suspended"). */
export function mapDomainState(state: number, managedSave: boolean): VmState {
  switch (state) {
    case DomainState.Running:
    case DomainState.Blocked:
      return "running";
    case DomainState.Paused:
      return "paused";
    case DomainState.Shutdown:
    case DomainState.Shutoff:
      return managedSave ? "suspended" : "off";
    case DomainState.Crashed:
      return "crashed";
    case DomainState.PmSuspended:
      return "suspended";
    default:
      return "unknown";
  }
}

export class LibvirtBackend implements VmBackend {
  readonly name = BACKEND_NAME;
  readonly connection: LibvirtConnection;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly byUuid = new Map<string, Known>();
  private readonly byLabel = new Map<string, Known>();
  private readonly listeners: ((e: BackendEvent) => void)[] = [];
  /** Events are handled one after another, in the order the daemon sent them. */
  private eventChain: Promise<void> = Promise.resolve();
  private readonly shutdownTimeoutMs: number;
  private readonly pollIntervalMs: number;
  /** How long a state read waits for a domain libvirt is starting (the call timeout). */
  private readonly startingUpTimeoutMs: number;

  constructor(
    readonly uri: LibvirtUri,
    options: Pick<BackendOptions, "log" | "clock">,
    tuning: LibvirtBackendOptions = {},
  ) {
    this.log = options.log;
    this.clock = options.clock;
    this.shutdownTimeoutMs = tuning.shutdownTimeoutMs ?? 120_000;
    this.pollIntervalMs = tuning.pollIntervalMs ?? 100;
    this.startingUpTimeoutMs = tuning.callTimeoutMs ?? 30_000;
    this.connection = new LibvirtConnection(uri, { ...tuning, log: options.log, clock: options.clock });
    this.connection.onOpen(async () => {
      try {
        await registerLifecycleEvents(this.connection);
      } catch (err) {
        this.log.warn(`libvirt: ${uri.original} gives no lifecycle events (${(err as Error).message})`);
      }
      // After a reconnection, and before the calls that waited are sent: whatever
      // happened while we were away is re-read and reported.
      if (this.connection.stats.opens > 1) await this.reconcile("daemon reconnected");
    });
    this.connection.onMessage((proc, r) => {
      if (proc !== Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE) return;
      let msg;
      try {
        msg = readLifecycleMessage(r);
      } catch (err) {
        this.log.warn(`libvirt: malformed lifecycle event from ${uri.original}: ${(err as Error).message}`);
        return;
      }
      const known = this.byUuid.get(uuidToString(msg.dom.uuid));
      if (known === undefined) return;
      known.dom = msg.dom;
      this.enqueueEvent(known, async () => {
        const state = await eventState(msg.event, msg.detail, () =>
          hasManagedSaveImage(this.connection, known.dom),
        );
        return state === undefined ? undefined : { state, reason: describeEvent(msg.event, msg.detail) };
      });
    });
  }

  async connect(): Promise<void> {
    try {
      await this.connection.connect();
    } catch (err) {
      throw this.fail(err, "connect");
    }
  }

  async resolve(spec: VmSpec): Promise<VmRef> {
    const by = spec.uuid !== undefined ? "uuid" : spec.name !== undefined ? "name" : undefined;
    if (by === undefined)
      throw new ConfigError("a libvirt VM needs 'name' or 'uuid'", { vm: spec.label, key: "name" });
    let dom: Domain;
    try {
      dom =
        spec.uuid !== undefined
          ? await lookupByUuid(this.connection, spec.uuid)
          : await lookupByName(this.connection, spec.name!);
    } catch (err) {
      if (err instanceof XdrError)
        throw new ConfigError(err.message.replace(/^XDR: /, ""), { vm: spec.label, key: "uuid" });
      throw this.fail(
        err,
        "look up the domain",
        spec.label,
        `${by} '${by === "uuid" ? spec.uuid : spec.name}'`,
      );
    }
    const uuid = uuidToString(dom.uuid);
    const known: Known = { ref: { label: spec.label, ref: uuid }, dom, last: undefined, generation: 0 };
    this.byUuid.set(uuid, known);
    this.byLabel.set(spec.label, known);
    return known.ref;
  }

  async state(vm: VmRef): Promise<VmState> {
    const known = this.known(vm);
    known.generation++;
    try {
      const state = await this.readState(known);
      known.last = state;
      return state;
    } catch (err) {
      throw this.fail(err, "read the state", vm.label);
    }
  }

  async start(vm: VmRef): Promise<void> {
    const known = this.known(vm);
    known.generation++;
    try {
      known.dom = await createWithFlags(this.connection, known.dom);
      known.last = "running";
    } catch (err) {
      throw this.fail(err, "start the domain", vm.label);
    }
  }

  /** From suspended: a domain paused in memory is resumed; one saved to disk is created (libvirt restores it). */
  async resume(vm: VmRef): Promise<void> {
    const known = this.known(vm);
    known.generation++;
    try {
      const { state } = await getState(this.connection, known.dom);
      if (state === DomainState.Paused)
        await simpleDomainCall(this.connection, Proc.DOMAIN_RESUME, known.dom);
      else if (state === DomainState.Shutoff) known.dom = await createWithFlags(this.connection, known.dom);
      else if (state === DomainState.PmSuspended) {
        throw new BackendError(
          BACKEND_NAME,
          "the guest suspended itself (pmsuspended); jitsu cannot wake it",
          {
            vm: vm.label,
          },
        );
      }
      known.last = "running";
    } catch (err) {
      throw this.fail(err, "resume the domain", vm.label);
    }
  }

  async unpause(vm: VmRef): Promise<void> {
    const known = this.known(vm);
    known.generation++;
    try {
      await simpleDomainCall(this.connection, Proc.DOMAIN_RESUME, known.dom);
      known.last = "running";
    } catch (err) {
      throw this.fail(err, "unpause the domain", vm.label);
    }
  }

  async stop(vm: VmRef, mode: StopMode): Promise<void> {
    const known = this.known(vm);
    known.generation++;
    try {
      switch (mode) {
        case "destroy":
          await simpleDomainCall(this.connection, Proc.DOMAIN_DESTROY, known.dom);
          known.last = "off";
          return;
        case "shutdown":
          await simpleDomainCall(this.connection, Proc.DOMAIN_SHUTDOWN, known.dom);
          await this.waitForShutoff(known);
          known.last = "off";
          return;
        case "suspend":
        case "pause":
          await simpleDomainCall(this.connection, Proc.DOMAIN_SUSPEND, known.dom);
          known.last = "paused";
          return;
        case "save":
          await managedSave(this.connection, known.dom);
          known.last = "suspended";
          return;
      }
    } catch (err) {
      throw this.fail(err, `stop the domain (${mode})`, vm.label);
    }
  }

  async domainId(vm: VmRef): Promise<number> {
    const known = this.known(vm);
    try {
      known.dom = await lookupByUuid(this.connection, vm.ref);
    } catch (err) {
      throw this.fail(err, "read the domain ID", vm.label);
    }
    if (known.dom.id < 0)
      throw new BackendError(BACKEND_NAME, "has no domain ID: it is not running", { vm: vm.label });
    return known.dom.id;
  }

  async macs(vm: VmRef): Promise<string[]> {
    const known = this.known(vm);
    let text: string;
    try {
      text = await getXmlDesc(this.connection, known.dom);
    } catch (err) {
      throw this.fail(err, "read the domain XML", vm.label);
    }
    try {
      return macsFromDomainXml(text);
    } catch (err) {
      throw new BackendError(BACKEND_NAME, "cannot parse the domain XML", {
        vm: vm.label,
        detail: (err as Error).message,
      });
    }
  }

  /** Addresses from DHCP leases first, then from the guest agent. */
  async addresses(vm: VmRef): Promise<string[]> {
    const known = this.known(vm);
    const errors: string[] = [];
    for (const source of [AddressSource.Lease, AddressSource.Agent]) {
      try {
        const ifaces = await interfaceAddresses(this.connection, known.dom, source);
        const addrs = ifaces.flatMap((i) => i.addrs.map((a) => a.addr)).filter((a) => !isLoopback(a));
        if (addrs.length > 0) return addrs;
      } catch (err) {
        if (err instanceof LibvirtError)
          errors.push(`${source === AddressSource.Lease ? "lease" : "agent"}: ${err.message}`);
        else throw this.fail(err, "read the addresses", vm.label);
      }
    }
    if (errors.length === 2) {
      throw new BackendError(
        BACKEND_NAME,
        `no address from leases or the guest agent at ${this.uri.original}`,
        {
          vm: vm.label,
          detail: errors.join("; "),
        },
      );
    }
    return [];
  }

  onEvent(listener: (event: BackendEvent) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    await this.connection.close();
  }

  private known(vm: VmRef): Known {
    const k = this.byUuid.get(vm.ref) ?? this.byLabel.get(vm.label);
    if (k === undefined)
      throw new BackendError(BACKEND_NAME, "was never resolved by this backend", { vm: vm.label });
    return k;
  }

  /**
   * The domain's state, once libvirt has settled it. A domain "paused, starting
   * up" is inside a libvirt start: another client's, or one that a killed
   * libvirtd left half done, which the new daemon finishes (QEMU already ran
   * the guest) or kills (it did not) as it reconnects. Unpausing or starting it
   * then would race the daemon (and fail), so this waits, at most the call
   * timeout, until libvirt has decided.
   */
  private async readState(known: Known): Promise<VmState> {
    const deadline = this.clock.now() + this.startingUpTimeoutMs;
    for (let logged = false; ; logged = true) {
      const state = await this.readSettledState(known);
      if (state !== undefined) return state;
      if (this.clock.now() >= deadline) {
        throw new BackendError(
          BACKEND_NAME,
          `is still being started by libvirt (paused, starting up) after ${this.startingUpTimeoutMs / 1000} s at ${this.uri.original}`,
          { vm: known.ref.label, unavailable: true },
        );
      }
      if (!logged) {
        this.log.debug(
          `libvirt: VM '${known.ref.label}' is being started by libvirt (paused, starting up); waiting for it to settle`,
        );
      }
      await this.clock.sleep(this.pollIntervalMs);
    }
  }

  /** The domain's state, or undefined while libvirt is starting it (paused, starting up). */
  private async readSettledState(known: Known): Promise<VmState | undefined> {
    const { state, reason } = await getState(this.connection, known.dom);
    if (state === DomainState.Paused && reason === PausedReason.StartingUp) return undefined;
    const saved =
      state === DomainState.Shutoff || state === DomainState.Shutdown
        ? await hasManagedSaveImage(this.connection, known.dom)
        : false;
    return mapDomainState(state, saved);
  }

  private async waitForShutoff(known: Known): Promise<void> {
    const deadline = this.clock.now() + this.shutdownTimeoutMs;
    for (;;) {
      const { state } = await getState(this.connection, known.dom);
      if (state === DomainState.Shutoff || state === DomainState.Crashed) return;
      if (this.clock.now() >= deadline) {
        throw new BackendError(
          BACKEND_NAME,
          `did not shut down within ${this.shutdownTimeoutMs / 1000} s (does the guest handle ACPI power-off?)`,
          { vm: known.ref.label },
        );
      }
      await this.clock.sleep(this.pollIntervalMs);
    }
  }

  private enqueueEvent(
    known: Known,
    compute: () => Promise<{ state: VmState; reason: string } | undefined>,
  ): void {
    this.eventChain = this.eventChain.then(async () => {
      const generation = known.generation;
      let result;
      try {
        result = await compute();
      } catch (err) {
        this.log.debug(
          `libvirt: cannot read the state of VM '${known.ref.label}' after an event: ${(err as Error).message}`,
        );
        return;
      }
      // An operation or state read since then knows better.
      if (result === undefined || known.generation !== generation) return;
      this.report(known, result.state, result.reason);
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
        this.log.error(`libvirt: event listener failed: ${(err as Error).message}`);
      }
    }
  }

  /** Re-reads every known VM and reports the ones whose state changed. */
  private async reconcile(reason: string): Promise<void> {
    // (Not waiting for eventChain: an event may be waiting for a call that is queued until this open finishes.)
    for (const known of this.byUuid.values()) {
      const generation = known.generation;
      try {
        // Not waiting for a domain libvirt is starting (this runs before the calls queued while
        // the daemon was away are sent): its lifecycle event or the next state read tells.
        const state = await this.readSettledState(known);
        if (state !== undefined && known.generation === generation) this.report(known, state, reason);
      } catch (err) {
        this.log.warn(
          `libvirt: cannot re-read the state of VM '${known.ref.label}': ${(err as Error).message}`,
        );
      }
    }
  }

  /**
   * One line for users, naming the URI and the VM, with libvirt's own code and
   * text kept as the detail.
   */
  private fail(err: unknown, what: string, vm?: string, target?: string): JitsuError {
    if (err instanceof JitsuError) return err;
    const uri = this.uri.original;
    const at = what === "connect" ? `to ${uri}` : `at ${uri}`;
    // The daemon could not be reached or stopped answering: not the VM's fault.
    const unavailable =
      err instanceof TransportError || err instanceof UnreachableError || err instanceof ConnectionLostError;
    const ctx = (
      detail?: string,
    ): { vm?: string; detail?: string; cause: unknown; unavailable: boolean } => ({
      ...(vm === undefined ? {} : { vm }),
      ...(detail === undefined ? {} : { detail }),
      cause: err,
      unavailable,
    });
    const make = (message: string, detail?: string): BackendError =>
      new BackendError(BACKEND_NAME, message, ctx(detail));
    if (err instanceof LibvirtError) {
      const detail = `libvirt error ${err.code}, domain ${err.domain}: ${err.message}`;
      switch (err.code) {
        case ErrorCode.NO_DOMAIN:
          return make(`no such domain${target === undefined ? "" : ` with ${target}`} at ${uri}`, detail);
        case ErrorCode.ACCESS_DENIED:
        case ErrorCode.OPERATION_DENIED:
        case ErrorCode.AUTH_FAILED:
          return make(`permission denied to ${what} ${at}`, detail);
        case ErrorCode.NO_CONNECT:
        case ErrorCode.NO_SUPPORT:
          return make(`cannot ${what} ${at}: driver not available or URI not supported`, detail);
        default:
          return make(`cannot ${what} ${at}`, detail);
      }
    }
    if (err instanceof TransportError || err instanceof AuthError)
      return make(`cannot connect to ${uri}: ${err.message}`);
    if (err instanceof UnreachableError) return make(`cannot ${what} at ${uri}: ${err.message}`);
    if (err instanceof ConnectionLostError) {
      return make(
        `lost the connection to ${uri} while trying to ${what}; the outcome is unknown and the state will be re-read`,
        err.message,
      );
    }
    if (err instanceof ProtocolError || err instanceof XdrError) {
      return make(`bad reply from ${uri} while trying to ${what}`, err.message);
    }
    return make(`cannot ${what} ${at}`, (err as Error).message);
  }
}

function isLoopback(addr: string): boolean {
  return addr.startsWith("127.") || addr === "::1";
}
