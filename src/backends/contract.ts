/**
 * The VmBackend contract (DESIGN.md "VmBackend"). The summoner imports this
 * file and the registry, never a backend folder.
 */
import type { Clock } from "../clock/index.js";
import type { KeySpec, VmSpec } from "../config/index.js";
import type { JitsuError } from "../errors/index.js";
import type { Logger } from "../log/index.js";

/**
 * What a VM is doing. `paused`: frozen in memory, still holding its memory
 * and ports (QMP stop, virDomainSuspend, SIGSTOP); `suspended`: saved out of
 * memory, holding nothing but its image on disk (managed save, xl save,
 * VM.suspend, QEMU's migrate to file).
 */
export type VmState = "running" | "paused" | "suspended" | "off" | "crashed" | "unknown";
export type StopMode = "destroy" | "shutdown" | "suspend" | "pause" | "save";
export const STOP_MODES: readonly StopMode[] = ["destroy", "shutdown", "suspend", "pause", "save"];

/** A VM as the backend knows it. `ref` is the backend's own reference (UUID, pid file, domain name). */
export interface VmRef {
  readonly label: string;
  readonly ref: string;
}

/** A state change the backend noticed by itself (libvirt lifecycle event, QMP SHUTDOWN, process exit). */
export interface BackendEvent {
  readonly vm: VmRef;
  readonly state: VmState;
  readonly reason?: string;
}

/** What every backend is given when it is created. */
export interface BackendOptions {
  /** -c/--connect: libvirt URI or XAPI URL. */
  readonly connect: string;
  /** --state-dir: where a backend keeps pid files, sockets, saved memory images. */
  readonly stateDir: string;
  /** Backend-specific global options by their long name without dashes (e.g. "xl", "synjitsu-socket"). */
  readonly settings: Readonly<Record<string, string | undefined>>;
  readonly log: Logger;
  readonly clock: Clock;
  /**
   * --start-timeout in ms: how long a daemon (libvirtd, the container engine,
   * XAPI) may leave the backend without an answer before it is taken for hung,
   * its connection reset and the calls in flight failed. Unset: the backend's
   * default (30 s).
   */
  readonly callTimeoutMs?: number;
}

export interface VmBackend {
  readonly name: string;
  connect(): Promise<void>;
  /** Finds (or defines) the VM; ConfigError/BackendError naming the VM if impossible. */
  resolve(spec: VmSpec): Promise<VmRef>;
  state(vm: VmRef): Promise<VmState>;
  /** From off (or crashed). */
  start(vm: VmRef): Promise<void>;
  /** From suspended (or saved). */
  resume(vm: VmRef): Promise<void>;
  /** From paused. */
  unpause(vm: VmRef): Promise<void>;
  stop(vm: VmRef, mode: StopMode): Promise<void>;
  /** Xen domain ID, for xenstore paths. */
  domainId?(vm: VmRef): Promise<number>;
  /** MAC addresses (lower-case, colon-separated), for Synjitsu. */
  macs?(vm: VmRef): Promise<string[]>;
  /** The running VM's addresses, for VMs configured without `ip`. */
  addresses?(vm: VmRef): Promise<string[]>;
  /** Resolves when `key` (relative to /local/domain/<domid>/) exists; rejects when `signal` aborts. */
  waitForKey?(vm: VmRef, key: string, signal: AbortSignal): Promise<void>;
  /**
   * How many TCP connections clients hold to the running VM now (established,
   * inbound to a port it listens on), asked by the reaper before it stops an
   * idle VM: more than 0 keeps it up. Only backends that can tell cheaply.
   */
  connections?(vm: VmRef): Promise<number>;
  /**
   * Where the host reaches the VM's TCP `port` when that is not the VM's own
   * address (QEMU user networking's `hostfwd`), else null: what src/activator
   * connects to.
   */
  hostPort?(vm: VmRef, port: number): { readonly host: string; readonly port: number } | null;
  /** Registers a listener for changes made behind our back. */
  onEvent?(listener: (event: BackendEvent) => void): void;
  /**
   * The checks of `specs` that need nothing but this machine (files and
   * programs the VMs need, --state-dir writable), run by the CLI before
   * connect() and again on each reload: every problem found, each a
   * ConfigError naming the VM and the key or a UsageError naming the option;
   * none when all is well. Changes nothing but creating the backend's folder
   * under --state-dir, as the backend would.
   */
  preflight?(specs: readonly VmSpec[]): Promise<JitsuError[]>;
  close(): Promise<void>;
}

/** The optional VmBackend methods; a backend's factory declares which of them its instances have. */
export const OPTIONAL_METHODS = [
  "domainId",
  "macs",
  "addresses",
  "waitForKey",
  "onEvent",
  "preflight",
  "connections",
  "hostPort",
] as const satisfies readonly (keyof VmBackend)[];
export type OptionalMethod = (typeof OPTIONAL_METHODS)[number];

/**
 * What a backend can do: the one declaration, on its factory. The CLI checks
 * -m and every VM against it at start-up and on reload (capabilities.ts); a
 * test checks that each backend's instances have exactly these methods.
 */
export interface BackendCapabilities {
  /** The -m/--mode values its `stop` takes. */
  readonly stopModes: ReadonlySet<StopMode>;
  /**
   * Its optional methods: `addresses` (then `ip` may be omitted), `waitForKey`
   * (then `wait_for_key` may be given), `domainId` and `macs` (Synjitsu,
   * xenstore), `onEvent` (changes made behind our back), `preflight` (local
   * checks at start-up and reload).
   */
  readonly optional: ReadonlySet<OptionalMethod>;
}

/**
 * What a backend that connects (libvirt, xapi, docker) says about its hosts,
 * for per-VM `connect=` URIs (src/backends/hosts).
 */
export interface HostSupport {
  /** Checks a `connect=` URI as -c is checked: throws a UsageError (naming --connect) that says what is wrong. */
  check(uri: string): void;
  /** The default host's URI for these options: -c, or the backend's own default (docker: DOCKER_HOST). */
  defaultUri(options: BackendOptions): string;
}

/** How a backend is described and made; `jitsu --help` and validation read the same `keys`. */
export interface BackendFactory {
  readonly name: string;
  /** One line for --help. */
  readonly summary: string;
  /** The backend's own CONFIG keys (the common ones are added by config/). */
  readonly keys: readonly KeySpec[];
  /** Whether it talks to the hypervisor at -c/--connect (a libvirt URI, a XAPI URL); others ignore -c. */
  readonly connects: boolean;
  /** Present exactly when `connects`: its VMs may each live on another host (`connect=`). */
  readonly hosts?: HostSupport;
  readonly capabilities: BackendCapabilities;
  create(options: BackendOptions): VmBackend;
}
