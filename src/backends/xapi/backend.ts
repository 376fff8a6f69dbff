/**
 * The XAPI backend: VMs on XenServer / XCP-ng driven through the XenAPI
 * (VM and VIF classes of the XenAPI reference). VmRef.ref is the VM's uuid,
 * which is permanent; the opaque reference used on the wire is looked up per
 * session ("Note on References vs UUIDs") and looked up again when the server
 * says HANDLE_INVALID.
 */
import type { BackendEvent, BackendOptions, StopMode, VmBackend, VmRef, VmState } from "../contract.js";
import type { VmSpec } from "../../config/index.js";
import { BackendError, ConfigError, JitsuError } from "../../errors/index.js";
import type { Logger } from "../../log/index.js";
import { XapiEventWatcher, type VmPowerChange } from "./events.js";
import { XenApiFailure, XenApiSession } from "./session.js";
import { parseXapiTarget, type XapiTarget } from "./target.js";
import { TransportError } from "./transport.js";
import type { XmlRpcValue } from "./xmlrpc.js";
import { XenstoreClient, waitForDomainKey } from "../../xen/xenstore/index.js";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** XenAPI enum vm_power_state -> our VmState. */
const POWER_STATES: Readonly<Record<string, VmState>> = {
  Halted: "off",
  Paused: "paused",
  Running: "running",
  Suspended: "suspended",
};

/** What each stop mode calls, and the power state (as VM_BAD_POWER_STATE spells it) it leaves the VM in. */
const STOP_CALLS: Readonly<Partial<Record<StopMode, { method: string; leaves: string }>>> = {
  destroy: { method: "VM.hard_shutdown", leaves: "halted" },
  shutdown: { method: "VM.clean_shutdown", leaves: "halted" },
  suspend: { method: "VM.suspend", leaves: "suspended" },
  pause: { method: "VM.pause", leaves: "paused" },
};

/** "halted" (as VM_BAD_POWER_STATE spells it) -> "Halted" (as power_state is). */
function xapiState(lower: string): string {
  return lower.charAt(0).toUpperCase() + lower.slice(1);
}

export const XAPI_STOP_MODES: ReadonlySet<StopMode> = new Set(Object.keys(STOP_CALLS) as StopMode[]);

export class XapiBackend implements VmBackend {
  readonly name = "xapi";
  /** dom0's xenstore, for wait_for_key; opened on first use (jitsu must run in the host's dom0 for it). */
  private xs: XenstoreClient | undefined;
  private readonly target: XapiTarget;
  private readonly session: XenApiSession;
  private readonly log: Logger;
  /** uuid -> opaque reference, valid for the session generation it was looked up in. */
  private readonly refs = new Map<string, { ref: string; generation: number }>();
  /** uuid -> the VmRefs resolved to it, for events. */
  private readonly resolved = new Map<string, VmRef[]>();
  private readonly listeners: ((event: BackendEvent) => void)[] = [];
  /** uuid -> lifecycle operations of ours under way, and the XAPI power state we last saw or caused. */
  private readonly inFlight = new Map<string, number>();
  private readonly lastKnown = new Map<string, string>();
  private readonly watcher: XapiEventWatcher;
  private connected = false;

  constructor(options: BackendOptions, env: NodeJS.ProcessEnv = process.env) {
    this.target = parseXapiTarget(options.connect, env);
    this.log = options.log;
    this.session = new XenApiSession(this.target, this.log);
    this.watcher = new XapiEventWatcher(this.session, options.clock, this.log, (c) => this.emit(c));
    const host = this.target.url.hostname;
    if (this.target.url.protocol === "http:" && !/^(127\.|localhost$|\[::1\]$)/.test(host)) {
      this.log.warn(
        `XAPI at ${this.target.display} over plain http: the password travels unencrypted (use https://)`,
      );
    }
    if (this.target.insecure) {
      this.log.warn(`TLS certificate of ${this.target.display} will not be verified (insecure=1)`);
    }
  }

  async connect(): Promise<void> {
    try {
      await this.session.login();
    } catch (err) {
      if (err instanceof XenApiFailure && err.code === "SESSION_AUTHENTICATION_FAILED") {
        throw this.error(`authentication failed for user '${this.target.user}' at ${this.session.display}`, {
          detail: err.detail,
          cause: err,
        });
      }
      if (err instanceof XenApiFailure && err.code === "HOST_IS_SLAVE") {
        throw this.error(
          `${this.session.display} is a pool member and its pool master is not answering as one (last pointed to ${err.params[0] ?? "?"}); connect to the master`,
          { detail: err.detail, cause: err },
        );
      }
      throw this.wrap(err, `login to ${this.session.display}`);
    }
    this.log.info(`Connected to XAPI at ${this.session.display} as '${this.target.user}'`);
    this.connected = true;
    if (this.listeners.length > 0) this.watcher.start();
  }

  /** Power-state changes made by anyone (XenCenter, xe, HA), from event.from. */
  onEvent(listener: (event: BackendEvent) => void): void {
    this.listeners.push(listener);
    if (this.connected) this.watcher.start();
  }

  async resolve(spec: VmSpec): Promise<VmRef> {
    // xapi's database stores uuids in lower case and compares them exactly.
    const uuid = spec.uuid?.toLowerCase();
    if (uuid !== undefined) {
      if (!UUID_RE.test(uuid)) {
        throw new ConfigError(`'${spec.uuid}' is not a UUID (expected 8-4-4-4-12 hex digits)`, {
          vm: spec.label,
          key: "uuid",
        });
      }
      let ref: string;
      try {
        ref = await this.expectString("VM.get_by_uuid", await this.session.call("VM.get_by_uuid", uuid));
      } catch (err) {
        if (err instanceof XenApiFailure && err.code === "UUID_INVALID") {
          throw new ConfigError(`no VM with this uuid on ${this.session.display} (${err.detail})`, {
            vm: spec.label,
            key: "uuid",
            cause: err,
          });
        }
        throw this.wrap(err, "VM.get_by_uuid", spec.label);
      }
      if (await this.isTemplate(ref, spec.label)) {
        throw new ConfigError(
          `VM ${uuid} on ${this.session.display} is a template or snapshot, not a VM that can run`,
          {
            vm: spec.label,
            key: "uuid",
          },
        );
      }
      return this.resolved_(spec.label, uuid, ref);
    }

    const name = spec.name;
    if (name === undefined) {
      throw new ConfigError("the xapi backend needs the VM's name or uuid", { vm: spec.label, key: "name" });
    }
    let candidates: string[];
    try {
      const refs = await this.session.call("VM.get_by_name_label", name);
      if (!Array.isArray(refs) || !refs.every((r) => typeof r === "string")) {
        throw this.error(`bad reply to VM.get_by_name_label: expected a list of references`, {
          vm: spec.label,
        });
      }
      candidates = [];
      for (const ref of refs as string[]) {
        if (!(await this.isTemplate(ref, spec.label))) candidates.push(ref);
      }
    } catch (err) {
      throw this.wrap(err, "VM.get_by_name_label", spec.label);
    }
    if (candidates.length === 0) {
      throw new ConfigError(
        `no VM named '${name}' on ${this.session.display} (templates and snapshots are not counted)`,
        {
          vm: spec.label,
          key: "name",
        },
      );
    }
    const uuids: string[] = [];
    for (const ref of candidates) {
      try {
        uuids.push(
          (await this.expectString("VM.get_uuid", await this.session.call("VM.get_uuid", ref))).toLowerCase(),
        );
      } catch (err) {
        throw this.wrap(err, "VM.get_uuid", spec.label);
      }
    }
    if (uuids.length > 1) {
      throw new ConfigError(
        `${uuids.length} VMs are named '${name}' on ${this.session.display} (uuids ${uuids.join(", ")}); set uuid= to choose one`,
        { vm: spec.label, key: "name" },
      );
    }
    return this.resolved_(spec.label, uuids[0]!, candidates[0]!);
  }

  async state(vm: VmRef): Promise<VmState> {
    const value = await this.onVm(vm, "VM.get_power_state");
    if (typeof value !== "string")
      throw this.error("bad reply to VM.get_power_state: expected a string", { vm: vm.label });
    this.lastKnown.set(vm.ref, value);
    const state = POWER_STATES[value];
    if (state === undefined) {
      this.log.warn({ vm: vm.label }, `XAPI reports an unknown power state '${value}'`);
      return "unknown";
    }
    return state;
  }

  async start(vm: VmRef): Promise<void> {
    // VM.start(session, vm, start_paused, force)
    await this.lifecycle(vm, "VM.start", "running", false, false);
  }

  async resume(vm: VmRef): Promise<void> {
    // VM.resume(session, vm, start_paused, force)
    await this.lifecycle(vm, "VM.resume", "running", false, false);
  }

  async unpause(vm: VmRef): Promise<void> {
    await this.lifecycle(vm, "VM.unpause", "running");
  }

  async stop(vm: VmRef, mode: StopMode): Promise<void> {
    const call = STOP_CALLS[mode];
    if (call === undefined) {
      throw this.error(`stop mode '${mode}' is not supported (use ${[...XAPI_STOP_MODES].join(", ")})`, {
        vm: vm.label,
      });
    }
    await this.lifecycle(vm, call.method, call.leaves);
  }

  async domainId(vm: VmRef): Promise<number> {
    const value = await this.onVm(vm, "VM.get_domid");
    // XenAPI ints travel as strings of decimal digits.
    const text = typeof value === "number" ? String(value) : value;
    if (typeof text !== "string" || !/^-?\d+$/.test(text)) {
      throw this.error(`bad reply to VM.get_domid: expected an integer, got ${JSON.stringify(value)}`, {
        vm: vm.label,
      });
    }
    const domid = Number(text);
    if (domid < 0) throw this.error("has no Xen domain (it is not running)", { vm: vm.label });
    return domid;
  }

  async macs(vm: VmRef): Promise<string[]> {
    const vifs = await this.onVm(vm, "VM.get_VIFs");
    if (!Array.isArray(vifs) || !vifs.every((v) => typeof v === "string")) {
      throw this.error("bad reply to VM.get_VIFs: expected a list of references", { vm: vm.label });
    }
    const found: { device: number; mac: string }[] = [];
    for (const vif of vifs as string[]) {
      const mac = await this.call(vm.label, "VIF.get_MAC", vif);
      const device = await this.call(vm.label, "VIF.get_device", vif);
      if (typeof mac !== "string" || !MAC_RE.test(mac)) {
        throw this.error(`bad reply to VIF.get_MAC: '${String(mac)}' is not a MAC address`, { vm: vm.label });
      }
      found.push({
        device: typeof device === "string" && /^\d+$/.test(device) ? Number(device) : found.length,
        mac,
      });
    }
    // In device order (eth0 first), as the guest numbers its interfaces.
    return found.sort((a, b) => a.device - b.device).map((f) => f.mac.toLowerCase());
  }

  /** Resolves once `key` (relative to /local/domain/<domid>/) exists in the host's xenstore. */
  async waitForKey(vm: VmRef, key: string, signal: AbortSignal): Promise<void> {
    const domid = await this.domainId(vm);
    this.xs ??= new XenstoreClient();
    await waitForDomainKey(this.xs, domid, key, signal, (message, detail, cause, unavailable) =>
      this.error(`${message} (wait_for_key needs jitsu in the XAPI host's dom0)`, {
        vm: vm.label,
        detail,
        cause,
        unavailable,
      }),
    );
  }

  async close(): Promise<void> {
    await this.xs?.close();
    this.xs = undefined;
    this.watcher.stop();
    try {
      await this.session.logout();
    } catch (err) {
      this.log.debug({ err }, `session.logout at ${this.session.display} failed`);
    }
    await this.watcher.finished();
  }

  // ------------------------------------------------------------ helpers

  private resolved_(label: string, uuid: string, ref: string): VmRef {
    this.remember(uuid, ref);
    const vm: VmRef = { label, ref: uuid };
    const list = this.resolved.get(uuid) ?? [];
    if (!list.some((v) => v.label === label)) list.push(vm);
    this.resolved.set(uuid, list);
    return vm;
  }

  /**
   * Reports a change only when it is news: not while our own operation on the VM
   * is under way, and not the state our own operation (or read) left it in.
   */
  private emit(change: VmPowerChange): void {
    if ((this.inFlight.get(change.uuid) ?? 0) > 0) return;
    const power = change.powerState ?? "deleted";
    if (this.lastKnown.get(change.uuid) === power) return;
    this.lastKnown.set(change.uuid, power);
    const state: VmState =
      change.powerState === null ? "unknown" : (POWER_STATES[change.powerState] ?? "unknown");
    const reason =
      change.powerState === null ? "VM deleted in XAPI" : `XAPI power_state ${change.powerState}`;
    for (const vm of this.resolved.get(change.uuid) ?? []) {
      for (const listener of this.listeners) listener({ vm, state, reason });
    }
  }

  /**
   * A power operation. VM_BAD_POWER_STATE whose actual state is already the one
   * the operation leads to (another client did it first) counts as done.
   */
  private async lifecycle(vm: VmRef, method: string, leaves: string, ...args: XmlRpcValue[]): Promise<void> {
    this.inFlight.set(vm.ref, (this.inFlight.get(vm.ref) ?? 0) + 1);
    try {
      await this.onVm(vm, method, ...args);
      this.lastKnown.set(vm.ref, xapiState(leaves));
    } catch (err) {
      const failure = err instanceof BackendError ? err.cause : undefined;
      if (
        failure instanceof XenApiFailure &&
        failure.code === "VM_BAD_POWER_STATE" &&
        failure.params[2]?.toLowerCase() === leaves
      ) {
        this.log.debug({ vm: vm.label }, `${method}: the VM is already ${leaves}`);
        this.lastKnown.set(vm.ref, xapiState(leaves));
        return;
      }
      throw err;
    } finally {
      this.inFlight.set(vm.ref, (this.inFlight.get(vm.ref) ?? 1) - 1);
    }
  }

  /** Calls a VM method on the VM's opaque reference; looks the reference up again once on HANDLE_INVALID. */
  private async onVm(vm: VmRef, method: string, ...args: XmlRpcValue[]): Promise<XmlRpcValue> {
    try {
      const ref = await this.vmRef(vm);
      try {
        return await this.session.call(method, ref, ...args);
      } catch (err) {
        if (!(err instanceof XenApiFailure) || err.code !== "HANDLE_INVALID" || err.params[0] !== "VM")
          throw err;
        this.refs.delete(vm.ref);
        return await this.session.call(method, await this.vmRef(vm), ...args);
      }
    } catch (err) {
      throw this.wrap(err, method, vm.label);
    }
  }

  private async call(label: string, method: string, ...args: XmlRpcValue[]): Promise<XmlRpcValue> {
    try {
      return await this.session.call(method, ...args);
    } catch (err) {
      throw this.wrap(err, method, label);
    }
  }

  private async vmRef(vm: VmRef): Promise<string> {
    const cached = this.refs.get(vm.ref);
    if (cached !== undefined && cached.generation === this.session.generation) return cached.ref;
    const ref = await this.expectString("VM.get_by_uuid", await this.session.call("VM.get_by_uuid", vm.ref));
    this.remember(vm.ref, ref);
    return ref;
  }

  private remember(uuid: string, ref: string): void {
    this.refs.set(uuid, { ref, generation: this.session.generation });
  }

  private async isTemplate(ref: string, label: string): Promise<boolean> {
    // Snapshots are templates too (is_a_template is true for them); dom0 is the control domain.
    const template = await this.session.call("VM.get_is_a_template", ref);
    const control = await this.session.call("VM.get_is_control_domain", ref);
    if (typeof template !== "boolean" || typeof control !== "boolean") {
      throw this.error("bad reply to VM.get_is_a_template / VM.get_is_control_domain: expected booleans", {
        vm: label,
      });
    }
    return template || control;
  }

  private expectString(method: string, value: XmlRpcValue): string {
    if (typeof value !== "string" || value === "") {
      throw this.error(`bad reply to ${method}: expected a reference string, got ${JSON.stringify(value)}`);
    }
    return value;
  }

  private error(
    message: string,
    context: { vm?: string; detail?: string; cause?: unknown; unavailable?: boolean } = {},
  ): BackendError {
    return new BackendError("xapi", this.scrub(message), {
      ...context,
      detail: context.detail === undefined ? undefined : this.scrub(context.detail),
    });
  }

  /** Any failure as a BackendError naming the VM and keeping XAPI's ErrorDescription. */
  private wrap(err: unknown, what: string, vm?: string): JitsuError {
    if (err instanceof JitsuError) return err;
    if (err instanceof XenApiFailure) {
      return this.error(`${what} failed on ${this.session.display}`, { vm, detail: err.detail, cause: err });
    }
    const message = err instanceof Error ? err.message : String(err);
    // Unreachable, reset, timed out or too busy: XAPI's fault, not the VM's (no back-off).
    if (err instanceof TransportError) {
      return new BackendError("xapi", this.scrub(`${what}: ${message}`), {
        vm,
        cause: err,
        unavailable: true,
      });
    }
    return this.error(`${what}: ${message}`, { vm, cause: err });
  }

  /** Never let the password reach a message, whatever a server echoes back. */
  private scrub(text: string): string {
    const pw = this.target.password;
    return pw.length >= 4 ? text.split(pw).join("***") : text;
  }
}
