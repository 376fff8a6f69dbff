/**
 * One backend connection per host (README.md in this folder). A VmBackend
 * that holds one backend of the factory per distinct host URI (-c's, and each
 * VM's `connect=`) and sends each call to the backend of the VM's host.
 *
 * -c's host is connected in connect(), exactly once, with the options the
 * CLI gives (as a backend without connect= VMs always was): its failure stops
 * a start as before. Every other host is connected when the first VM on it is
 * resolved (at start-up, or by the reload that adds it); if it cannot be
 * reached then, its VMs are placed anyway and resolved there once it answers,
 * so that a host that is down fails only its VMs (BackendError `unavailable`:
 * SERVFAIL, no back-off) and jitsu still starts. From its first connection on,
 * each backend reconnects by itself (libvirt's connection, docker's event
 * stream, the XAPI session); the router only watches what its calls find, to
 * say which host is up (/status, /metrics), and asks a host that is down
 * again every few seconds, so it is seen back without a query.
 */
import type { Clock, Timer } from "../../clock/index.js";
import type { VmSpec } from "../../config/index.js";
import { BackendError, describeError } from "../../errors/index.js";
import { redactUri, type Logger } from "../../log/index.js";
import type {
  BackendEvent,
  BackendFactory,
  BackendOptions,
  OptionalMethod,
  StopMode,
  VmBackend,
  VmRef,
  VmState,
} from "../contract.js";

export type HostState = "connecting" | "up" | "down";

/** One host as /status shows it. */
export interface HostStatus {
  readonly backend: string;
  /** The URI, its password hidden. */
  readonly uri: string;
  /** -c's host (the VMs without connect=). */
  readonly default: boolean;
  readonly state: HostState;
  /** When the state last changed (ms since the epoch, on the clock). */
  readonly since: number;
  /** Why it is (or was last) down; null if it never was. */
  readonly lastError: string | null;
  /** The VMs of the configuration on it. */
  readonly vms: number;
}

/** A failed first connection is tried again no sooner than this (queries in between fail at once). */
export const CONNECT_RETRY_MS = 1000;
/** How often a host seen down is asked again (a connection, or a state read of one of its VMs). */
export const PROBE_INTERVAL_MS = 2000;

interface Host {
  readonly uri: string;
  /** The URI without its password, for messages. */
  readonly shown: string;
  readonly isDefault: boolean;
  /** This host's backend; made again after a failed first connection. */
  backend: VmBackend;
  /** Its connect() succeeded (it reconnects by itself from then on). */
  opened: boolean;
  opening: Promise<void> | null;
  /** When a failed first connection may be tried again. */
  retryAt: number;
  state: HostState;
  since: number;
  lastError: string | null;
  probe: Timer | null;
  probing: boolean;
  closed: boolean;
}

/** A VM and where it lives. */
interface Placed {
  readonly spec: VmSpec;
  readonly host: Host;
  /** The reference the summoner holds (the host backend's own once it is known). */
  readonly ref: VmRef;
  /** The host backend's reference, once the VM was resolved there. */
  inner: VmRef | null;
  resolving: Promise<VmRef> | null;
}

/** The options that make `factory.create` connect to `uri` (docker reads -c from `settings`). */
export function hostOptions(options: BackendOptions, uri: string): BackendOptions {
  return { ...options, connect: uri, settings: { ...options.settings, connect: uri } };
}

export class HostRouter implements VmBackend {
  readonly name: string;
  /** -c's host's URI (docker: DOCKER_HOST or its default socket when -c is not given). */
  readonly defaultUri: string;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly hosts = new Map<string, Host>();
  private readonly defaultHost: Host;
  /** By the reference handed out (what the summoner passes back), and the latest by label. */
  private readonly byRef = new WeakMap<VmRef, Placed>();
  private readonly byLabel = new Map<string, Placed>();
  private readonly listeners: ((event: BackendEvent) => void)[] = [];
  private closed = false;

  declare domainId?: (vm: VmRef) => Promise<number>;
  declare macs?: (vm: VmRef) => Promise<string[]>;
  declare addresses?: (vm: VmRef) => Promise<string[]>;
  declare waitForKey?: (vm: VmRef, key: string, signal: AbortSignal) => Promise<void>;
  declare connections?: (vm: VmRef) => Promise<number>;
  declare hostPort?: (vm: VmRef, port: number) => { readonly host: string; readonly port: number } | null;
  declare onEvent?: (listener: (event: BackendEvent) => void) => void;
  declare preflight?: VmBackend["preflight"];

  constructor(
    private readonly factory: BackendFactory,
    private readonly options: BackendOptions,
  ) {
    if (factory.hosts === undefined) throw new Error(`the ${factory.name} backend has no hosts to route to`);
    this.name = factory.name;
    this.log = options.log;
    this.clock = options.clock;
    this.defaultUri = factory.hosts.defaultUri(options);
    this.defaultHost = this.addHost(this.defaultUri, true);
    // Exactly the optional methods the factory declares (test/backends/capabilities checks it).
    const has = (m: OptionalMethod): boolean => factory.capabilities.optional.has(m);
    if (has("domainId")) this.domainId = (vm) => this.on(vm, (b, r) => b.domainId!(r));
    if (has("macs")) this.macs = (vm) => this.on(vm, (b, r) => b.macs!(r));
    if (has("addresses")) this.addresses = (vm) => this.on(vm, (b, r) => b.addresses!(r));
    if (has("waitForKey"))
      this.waitForKey = (vm, key, signal) => this.on(vm, (b, r) => b.waitForKey!(r, key, signal));
    if (has("connections")) this.connections = (vm) => this.on(vm, (b, r) => b.connections!(r));
    if (has("hostPort")) {
      this.hostPort = (vm, port) => {
        const placed = this.find(vm);
        if (placed === undefined || placed.inner === null) return null;
        return placed.host.backend.hostPort?.(placed.inner, port) ?? null;
      };
    }
    if (has("onEvent")) this.onEvent = (listener) => void this.listeners.push(listener);
    // The local checks need no host: -c's backend checks every VM's keys.
    if (has("preflight")) this.preflight = (specs) => this.defaultHost.backend.preflight!(specs);
  }

  /** -c's host, as a backend's connect(): its failure is thrown (a start stops on it). */
  async connect(): Promise<void> {
    await this.open(this.defaultHost);
  }

  /**
   * Resolves the VM on its host. -c's host fails as a backend alone does; a
   * `connect=` host that cannot be reached places the VM anyway (resolved
   * there once the host answers), so that jitsu starts and the other VMs run.
   */
  async resolve(spec: VmSpec): Promise<VmRef> {
    const host = this.hostFor(spec);
    try {
      await this.open(host);
      const inner = await host.backend.resolve(spec);
      this.answered(host);
      return this.place({ spec, host, ref: { label: inner.label, ref: inner.ref }, inner, resolving: null });
    } catch (err) {
      if (host.isDefault || !this.isDown(host, err)) {
        if (host.opened) this.noteError(host, err);
        throw err;
      }
      this.noteError(host, err);
      this.log.warn(
        `${this.name}: VM '${spec.label}' lives on ${host.shown}, which cannot be reached (${describeError(err)}); its queries get SERVFAIL until the host is back`,
      );
      // Until it is resolved there: what names it in the configuration.
      const ref: VmRef = { label: spec.label, ref: spec.uuid ?? spec.name ?? spec.label };
      return this.place({ spec, host, ref, inner: null, resolving: null });
    }
  }

  /**
   * A VM not yet found on its host, while the host cannot be reached, is
   * `unknown` (so that it is placed at start-up, and a summon goes on to
   * start it and fails there, naming the host).
   */
  async state(vm: VmRef): Promise<VmState> {
    const placed = this.placed(vm);
    if (placed.inner === null) {
      try {
        await this.innerRef(placed);
      } catch (err) {
        if (this.isDown(placed.host, err)) return "unknown";
        throw err;
      }
    }
    return this.on(vm, (b, r) => b.state(r));
  }

  start(vm: VmRef): Promise<void> {
    return this.on(vm, (b, r) => b.start(r));
  }

  resume(vm: VmRef): Promise<void> {
    return this.on(vm, (b, r) => b.resume(r));
  }

  unpause(vm: VmRef): Promise<void> {
    return this.on(vm, (b, r) => b.unpause(r));
  }

  stop(vm: VmRef, mode: StopMode): Promise<void> {
    return this.on(vm, (b, r) => b.stop(r, mode));
  }

  /** Every host: -c's first, then the others in the order they were first needed. */
  hostStatus(): HostStatus[] {
    const counts = new Map<Host, number>();
    for (const placed of this.byLabel.values()) counts.set(placed.host, (counts.get(placed.host) ?? 0) + 1);
    return [...this.hosts.values()].map((h) => ({
      backend: this.name,
      uri: h.shown,
      default: h.isDefault,
      state: h.state,
      since: h.since,
      lastError: h.lastError,
      vms: counts.get(h) ?? 0,
    }));
  }

  /** The host a VM label lives on (its URI without password), or undefined if it is not placed. */
  hostOf(label: string): string | undefined {
    return this.byLabel.get(label)?.host.shown;
  }

  /**
   * After a reload: forgets the VMs no longer configured, and closes the
   * connection of each `connect=` host no VM lives on any more.
   */
  async retain(specs: readonly VmSpec[]): Promise<void> {
    const labels = new Set(specs.map((s) => s.label));
    for (const label of [...this.byLabel.keys()]) if (!labels.has(label)) this.byLabel.delete(label);
    const used = new Set<Host>();
    for (const placed of this.byLabel.values()) used.add(placed.host);
    for (const host of [...this.hosts.values()]) {
      if (host.isDefault || used.has(host)) continue;
      this.log.info(
        `${this.name}: closing the connection to ${host.shown} (no configured VM lives there now)`,
      );
      await this.closeHost(host);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.hosts.values()].map((h) => this.closeHost(h)));
  }

  // ------------------------------------------------------------ hosts

  private addHost(uri: string, isDefault: boolean): Host {
    const host: Host = {
      uri,
      shown: redactUri(uri),
      isDefault,
      backend: undefined as unknown as VmBackend,
      opened: false,
      opening: null,
      retryAt: 0,
      state: "connecting",
      since: this.clock.now(),
      lastError: null,
      probe: null,
      probing: false,
      closed: false,
    };
    host.backend = this.make(host);
    this.hosts.set(uri, host);
    return host;
  }

  /** A backend for `host`; -c's is made with the CLI's options unchanged. */
  private make(host: Host): VmBackend {
    const backend = this.factory.create(host.isDefault ? this.options : hostOptions(this.options, host.uri));
    backend.onEvent?.((event) => this.forward(host, backend, event));
    return backend;
  }

  private hostFor(spec: VmSpec): Host {
    const uri = spec.connect ?? this.defaultUri;
    const host = this.hosts.get(uri);
    if (host !== undefined) return host;
    if (this.closed) throw new BackendError(this.name, "is closed", { vm: spec.label });
    return this.addHost(uri, false);
  }

  /** Connects `host` once; a failure is tried again after CONNECT_RETRY_MS, with a new backend. */
  private open(host: Host): Promise<void> {
    if (host.opened) return Promise.resolve();
    if (host.closed)
      return Promise.reject(new BackendError(this.name, `the connection to ${host.shown} is closed`));
    if (host.opening !== null) return host.opening;
    if (this.clock.now() < host.retryAt) {
      return Promise.reject(
        new BackendError(this.name, `cannot connect to ${host.shown}: ${host.lastError ?? "unreachable"}`, {
          unavailable: true,
        }),
      );
    }
    const backend = host.backend;
    const opening = backend.connect().then(
      () => {
        host.opening = null;
        if (host.closed) {
          void backend.close().catch(() => undefined);
          throw new BackendError(this.name, `the connection to ${host.shown} is closed`);
        }
        host.opened = true;
        if (!host.isDefault) this.log.info(`${this.name}: connected to ${host.shown}`);
        this.answered(host);
      },
      (err: unknown) => {
        host.opening = null;
        host.retryAt = this.clock.now() + CONNECT_RETRY_MS;
        // Whatever the failed attempt left half made is not reused: a new backend tries next time.
        void backend.close().catch(() => undefined);
        if (!host.closed) host.backend = this.make(host);
        if (host.isDefault) {
          // -c's first connection: the caller (a start) reports it and stops.
          host.state = "down";
          host.since = this.clock.now();
          host.lastError = describeError(err);
        } else this.down(host, err);
        throw err;
      },
    );
    host.opening = opening;
    return opening;
  }

  private async closeHost(host: Host): Promise<void> {
    if (host.closed) return;
    host.closed = true;
    host.probe?.cancel();
    host.probe = null;
    this.hosts.delete(host.uri);
    await host.opening?.catch(() => undefined);
    await host.backend.close().catch((err: unknown) => {
      this.log.debug(`${this.name}: closing ${host.shown}: ${describeError(err)}`);
    });
  }

  /** The host answered (a call returned, or failed for the VM's own reason). */
  private answered(host: Host): void {
    if (host.state === "up") return;
    const was = host.state;
    host.state = "up";
    host.since = this.clock.now();
    host.probe?.cancel();
    host.probe = null;
    if (was === "down") this.log.info(`${this.name}: ${host.shown} answers again`);
  }

  private down(host: Host, err: unknown): void {
    host.lastError = describeError(err);
    if (host.state !== "down") {
      host.state = "down";
      host.since = this.clock.now();
      this.log.warn(
        `${this.name}: ${host.shown} is down (${host.lastError}); its VMs fail until it answers, the others are not affected`,
      );
    }
    this.scheduleProbe(host);
  }

  /** Whether `err` says the host is away rather than the VM wrong. */
  private isDown(host: Host, err: unknown): boolean {
    return !host.opened || (err instanceof BackendError && err.unavailable);
  }

  /** A call's failure: the host is down when the error blames it, else it answered. */
  private noteError(host: Host, err: unknown): void {
    if (this.isDown(host, err)) this.down(host, err);
    else this.answered(host);
  }

  /** While a host is down: asked again every PROBE_INTERVAL_MS, one probe at a time. */
  private scheduleProbe(host: Host): void {
    if (host.probe !== null || host.closed || this.closed) return;
    host.probe = this.clock.setTimer(PROBE_INTERVAL_MS, () => {
      host.probe = null;
      if (host.closed || host.state !== "down") return;
      if (host.probing) return this.scheduleProbe(host);
      host.probing = true;
      void this.probe(host).finally(() => {
        host.probing = false;
        if (host.state === "down") this.scheduleProbe(host);
      });
    });
  }

  private async probe(host: Host): Promise<void> {
    if (!host.opened) {
      await this.open(host).catch(() => undefined);
      return;
    }
    let sample: Placed | undefined;
    for (const placed of this.byLabel.values()) {
      if (placed.host === host && placed.inner !== null) {
        sample = placed;
        break;
      }
    }
    if (sample === undefined) return;
    try {
      await host.backend.state(sample.inner!);
      this.answered(host);
    } catch (err) {
      this.noteError(host, err);
    }
  }

  // ------------------------------------------------------------ VMs

  private place(placed: Placed): VmRef {
    this.byRef.set(placed.ref, placed);
    this.byLabel.set(placed.spec.label, placed);
    return placed.ref;
  }

  private find(vm: VmRef): Placed | undefined {
    return this.byRef.get(vm) ?? this.byLabel.get(vm.label);
  }

  private placed(vm: VmRef): Placed {
    const placed = this.find(vm);
    if (placed === undefined)
      throw new BackendError(this.name, "was never resolved by this backend", { vm: vm.label });
    return placed;
  }

  /** The host backend's reference: the host connected (once) and the VM resolved there (once). */
  private async innerRef(placed: Placed): Promise<VmRef> {
    const host = placed.host;
    if (placed.inner !== null && host.opened) return placed.inner;
    try {
      await this.open(host);
    } catch (err) {
      throw new BackendError(this.name, `cannot reach ${host.shown}: ${describeError(err)}`, {
        vm: placed.spec.label,
        cause: err,
        unavailable: true,
      });
    }
    if (placed.inner === null) {
      placed.resolving ??= host.backend.resolve(placed.spec).finally(() => {
        placed.resolving = null;
      });
      let inner: VmRef;
      try {
        inner = await placed.resolving;
      } catch (err) {
        this.noteError(host, err);
        throw err;
      }
      this.answered(host);
      if (placed.inner === null) {
        placed.inner = inner;
        this.log.info(`${this.name}: VM '${placed.spec.label}' found on ${host.shown}`);
      }
    }
    return placed.inner;
  }

  /** One call on the VM's host, watched for what it says about the host. */
  private async on<T>(vm: VmRef, call: (backend: VmBackend, ref: VmRef) => Promise<T>): Promise<T> {
    const placed = this.placed(vm);
    const host = placed.host;
    let backend: VmBackend | undefined;
    try {
      const ref = await this.innerRef(placed);
      backend = host.backend;
      const value = await call(backend, ref);
      this.answered(host);
      return value;
    } catch (err) {
      // (innerRef noted its own failures: the connection's, or the lookup's.)
      if (backend !== undefined) this.noteError(host, err);
      throw err;
    }
  }

  /** An event of a host's backend, for a VM placed there, under the reference the summoner holds. */
  private forward(host: Host, from: VmBackend, event: BackendEvent): void {
    if (host.backend !== from || host.closed) return;
    const placed = this.byLabel.get(event.vm.label);
    if (placed === undefined || placed.host !== host || placed.inner?.ref !== event.vm.ref) return;
    const out: BackendEvent = { ...event, vm: placed.ref };
    for (const listener of this.listeners) {
      try {
        listener(out);
      } catch (err) {
        this.log.error(`${this.name}: event listener failed: ${describeError(err)}`);
      }
    }
  }
}
