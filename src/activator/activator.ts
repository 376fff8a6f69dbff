/**
 * The Activator (a userspace Synjitsu): listens on each VM's hold ports,
 * also while the VM is off, so that a connection summons it as a query does;
 * holds each connection (not reading it) until the VM is ready, within
 * --start-timeout, then connects to the VM's own address and port and relays
 * both ways (relay.ts). Every connection counts as activity of its VM from
 * accept to close (`ActivatorHost.connectionOpened/Closed`): the summoner's
 * reaper never stops a VM with one open.
 *
 * With the splice relay (splice-relay.ts, a native addon) the listeners are
 * its own: once a connection to a VM has been relayed (here, or given back to
 * the relay because its VM was ready when it came), the port is enabled and
 * the next ones are accepted and relayed in its thread, with no JavaScript
 * per connection. An enabled port holds one connection of its VM
 * open (a lease) until a tick finds it idle (nothing accepted for a tick,
 * none open): then it is disabled, the lease is closed, and the next
 * connection comes here again. Each tick counts the natively accepted
 * connections as requests (`ActivatorHost.noteRequests`).
 */
import net from "node:net";
import type { Clock, Timer } from "../clock/index.js";
import type { EventBus } from "../events/index.js";
import { ListenError, SummonRefusedError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { endpointText, type HoldPlan } from "./plan.js";
import { relay } from "./relay.js";
import { SpliceRelay } from "./splice-relay.js";

/** What the activator needs from the summoner (the Summoner satisfies it; src/cli passes it in). */
export interface ActivatorHost {
  /** As SummonTarget.request: the addresses now if ready, else a promise; may throw SummonRefusedError. */
  request(label: string, client?: string): readonly string[] | Promise<readonly string[]>;
  /** The addresses if ready now, else null (never starts it). */
  requestIfReady(label: string): readonly string[] | null;
  connectionOpened(label: string): void;
  /**
   * Connections accepted elsewhere (the splice relay's thread) for a VM that
   * was ready: counted as requests, the last at `at` (on the clock; default now).
   */
  noteRequests(label: string, count: number, options?: { at?: number }): void;
  /** One connection ended, at `at` (on the clock; default now). */
  connectionClosed(label: string, at?: number): void;
  /** Where the host reaches `port` of the VM at `address` (QEMU's hostfwd maps it). */
  endpoint(label: string, address: string, port: number): { host: string; port: number };
}

/** Who may start a VM by connecting (--allow-summon; src/dns ClientAccess satisfies it). */
export interface SummonAccess {
  readonly all: boolean;
  allows(address: string): boolean;
}

export interface ActivatorOptions {
  readonly host: ActivatorHost;
  readonly log: Logger;
  readonly clock: Clock;
  /** --start-timeout: how long a connection is held (0 or less: as long as the start takes). */
  readonly startTimeoutSeconds: number;
  readonly allowSummon?: SummonAccess;
  /** How long to wait between connection attempts to a VM that refuses them (default 100 ms). */
  readonly retryMs?: number;
  /** Where `hold.reset` goes (at most one per VM every 10 s, with the count since the last). */
  readonly events?: EventBus;
  /** "splice": the native splice relay if it is built (the default); "js": listen and relay in JavaScript. */
  readonly relay?: "splice" | "js";
  /** How often the splice relay's counts are read and idle ports disabled (default 1000 ms). */
  readonly tickMs?: number;
}

/** Seconds a connection was held (accept to relay, or to its end): from a ready VM's µs to a slow boot. */
export const HOLD_BUCKETS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60];

export interface HoldListenerStatus {
  readonly vm: string;
  readonly address: string;
  readonly port: number;
  readonly vmPort: number;
}

export interface HoldStatus {
  readonly listeners: readonly HoldListenerStatus[];
  /** How warm connections are relayed: "splice" (natively, splice(2)) or "js". */
  readonly relay: "splice" | "js";
  /** Of `splices`, those relayed natively (splice relay). */
  readonly nativeSplices: number;
  /** Connections waiting for their VM now. */
  readonly held: number;
  /** Connections being relayed now. */
  readonly relaying: number;
  /** Per VM with any open: held and relayed now. */
  readonly vms: Readonly<Record<string, { held: number; relaying: number }>>;
  /** Connections accepted in all (warm ones too). */
  readonly accepted: number;
  /** Connections relayed to their VM (spliced). */
  readonly splices: number;
  readonly bytesToVm: number;
  readonly bytesFromVm: number;
  /** Connections closed because the VM was not ready within --start-timeout (reset). */
  readonly timedOut: number;
  /** Connections closed because the start failed, or the VM refused them until the deadline. */
  readonly failed: number;
  /** Connections closed at once: the client may not start the VM (--allow-summon, --summon-rate). */
  readonly refused: number;
  /** Relays that ended with an error (a reset on either side). */
  readonly relayErrors: number;
  /** Time held: upper bounds (s), per-bucket counts (one more than bounds, not cumulative), sum (s) and count. */
  readonly holdSeconds: {
    readonly bounds: readonly number[];
    readonly buckets: readonly number[];
    readonly sum: number;
    readonly count: number;
  };
}

interface Listener {
  readonly key: string;
  /** Listening in JavaScript (no splice relay), else null. */
  readonly server: net.Server | null;
  /** Its id in the splice relay, else null. */
  readonly native: number | null;
  readonly address: string;
  readonly port: number;
  /** Changed in place by a reload that gives the port to another VM or VM port. */
  label: string;
  vmPort: number;
  /** The VM whose one connection an enabled splice relay port holds open, else null. */
  lease: string | null;
  /** The splice relay's accepted count at the last tick. */
  seenAccepted: number;
  /** When (on the clock) the lease began. */
  leaseSince: number;
}

interface Held {
  readonly label: string;
  readonly listener: Listener;
  readonly socket: net.Socket;
  readonly accepted: number;
  /** Set once the connection is over (closed, timed out, failed): later events ignore it. */
  done: boolean;
  held: boolean;
  /** Whether it waited (held for the start, or the VM refused it at first): its wait goes in the histogram. */
  waited: boolean;
  /** Its wait was observed already (once per connection). */
  observed: boolean;
  relaying: boolean;
  timer: Timer | null;
}

export class Activator {
  private readonly listeners = new Map<string, Listener>();
  private readonly connections = new Set<Held>();
  private readonly perVm = new Map<string, { held: number; relaying: number }>();
  private readonly holdBuckets = new Array<number>(HOLD_BUCKETS.length + 1).fill(0);
  private holdSum = 0;
  private holdCount = 0;
  private held = 0;
  private relaying = 0;
  private accepted = 0;
  private splices = 0;
  private bytesToVm = 0;
  private bytesFromVm = 0;
  private timedOut = 0;
  private failed = 0;
  private refused = 0;
  private relayErrors = 0;
  /** Per VM, when a failed hold was last logged at warn (at most one line per VM every 10 s). */
  private readonly warned = new Map<string, number>();
  /** Per VM, connections reset since its last warn line and `hold.reset` event. */
  private readonly resets = new Map<string, number>();
  private closed = false;
  /** The native relay, once a port listens with it; null: not tried yet, or not built. */
  private splice: SpliceRelay | null = null;
  private spliceTried = false;
  private readonly nativeListeners = new Map<number, Listener>();
  /** Ports that hold a lease (enabled, or disabled with relays still open), also ones no longer listened on. */
  private readonly leased = new Set<Listener>();
  private ticker: NodeJS.Timeout | null = null;

  constructor(private readonly opts: ActivatorOptions) {}

  /** How warm connections are (or, before the first listen, will be) relayed. */
  private relayKind(): "splice" | "js" {
    if (this.spliceTried) return this.splice !== null ? "splice" : "js";
    return this.opts.relay !== "js" && SpliceRelay.available() ? "splice" : "js";
  }

  /** The splice relay, loaded at the first listen unless `relay: "js"`; null without it. */
  private spliceRelay(): SpliceRelay | null {
    if (this.spliceTried) return this.splice;
    this.spliceTried = true;
    if (this.opts.relay === "js") return null;
    this.splice = SpliceRelay.load((id, fd, refused, peer) => {
      const l = this.nativeListeners.get(id);
      if (l === undefined || this.closed) SpliceRelay.socket(fd).resetAndDestroy();
      else this.acceptNative(l, fd, refused, peer);
    });
    if (this.splice === null)
      this.opts.log.info("Hold ports relay in JavaScript (the splice relay addon is not built)");
    return this.splice;
  }

  /**
   * Listens as `plan` says: new ports are opened (a ListenError if one cannot
   * be: the others opened by this call are closed again), ports no longer in
   * it are closed (their connections go on), and a port that now belongs to
   * another VM or VM port serves the next connection accordingly.
   */
  async apply(plan: HoldPlan): Promise<void> {
    const wanted = new Map<string, { label: string; address: string; port: number; vmPort: number }>();
    for (const vm of plan) {
      for (const p of vm.ports) {
        wanted.set(endpointText(vm.address, p.port), {
          label: vm.label,
          address: vm.address,
          port: p.port,
          vmPort: p.vmPort,
        });
      }
    }
    const opened: Listener[] = [];
    try {
      for (const [key, w] of wanted) {
        const existing = this.listeners.get(key);
        if (existing !== undefined) continue;
        opened.push(await this.listen(key, w.address, w.port, w.label, w.vmPort));
      }
    } catch (err) {
      await Promise.all(opened.map((l) => this.unlisten(l)));
      throw err;
    }
    for (const l of opened) this.listeners.set(l.key, l);
    for (const [key, l] of this.listeners) {
      const w = wanted.get(key);
      if (w === undefined) {
        this.listeners.delete(key);
        this.opts.log.info(`No longer holding connections on ${key} (was VM '${l.label}')`);
        void this.unlisten(l);
        continue;
      }
      if (!opened.includes(l) && (l.label !== w.label || l.vmPort !== w.vmPort)) {
        // Its native relays go on; the lease (on the old VM) ends when they do.
        if (l.native !== null) this.splice?.disable(l.native, -1);
        l.label = w.label;
        l.vmPort = w.vmPort;
        this.opts.log.info(`Holding connections on ${key} for VM '${w.label}' (to its port ${w.vmPort})`);
      }
    }
  }

  /** The ports listened on (useful with tests' free ports). */
  get endpoints(): HoldListenerStatus[] {
    return [...this.listeners.values()].map((l) => ({
      vm: l.label,
      address: l.address,
      port: l.port,
      vmPort: l.vmPort,
    }));
  }

  status(): HoldStatus {
    // The native relays' counts, read now (per listener, so per VM for `vms`).
    let accepted = 0;
    let relaying = 0;
    let splices = 0;
    let toVm = 0;
    let fromVm = 0;
    let errors = 0;
    const vms = new Map([...this.perVm].map(([label, c]) => [label, { ...c }]));
    if (this.splice !== null && !this.closed) {
      for (const l of this.nativeListeners.values()) {
        const s = this.splice.stats(l.native!);
        accepted += s.accepted;
        relaying += s.open;
        splices += s.connected;
        toVm += s.toVm;
        fromVm += s.fromVm;
        errors += s.errors;
        if (s.open > 0) {
          const label = l.lease ?? l.label;
          const c = vms.get(label) ?? { held: 0, relaying: 0 };
          c.relaying += s.open;
          vms.set(label, c);
        }
      }
    }
    return {
      listeners: this.endpoints,
      relay: this.relayKind(),
      nativeSplices: splices,
      held: this.held,
      relaying: this.relaying + relaying,
      vms: Object.fromEntries(vms),
      accepted: this.accepted + accepted,
      splices: this.splices + splices,
      bytesToVm: this.bytesToVm + toVm,
      bytesFromVm: this.bytesFromVm + fromVm,
      timedOut: this.timedOut,
      failed: this.failed,
      refused: this.refused,
      relayErrors: this.relayErrors + errors,
      holdSeconds: {
        bounds: HOLD_BUCKETS,
        buckets: [...this.holdBuckets],
        sum: this.holdSum,
        count: this.holdCount,
      },
    };
  }

  /** Stops listening and resets every connection still held or relayed. */
  async close(): Promise<void> {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    const servers = [...this.listeners.values()].map((l) => this.unlisten(l));
    this.closed = true;
    this.listeners.clear();
    this.splice?.stop();
    for (const l of this.leased) this.opts.host.connectionClosed(l.lease!);
    this.leased.clear();
    if (this.connections.size > 0) {
      this.opts.log.info(`Closing ${this.connections.size} held or relayed connection(s)`);
    }
    for (const c of this.connections) {
      c.timer?.cancel();
      c.socket.resetAndDestroy();
    }
    await Promise.all(servers);
  }

  private async listen(
    key: string,
    address: string,
    port: number,
    label: string,
    vmPort: number,
  ): Promise<Listener> {
    const splice = this.spliceRelay();
    if (splice !== null) {
      let id: number;
      try {
        id = splice.listen(address, port, 1024);
      } catch (err) {
        throw ListenError.of(`TCP (hold port of VM '${label}')`, address, port, err, "hold");
      }
      const listener: Listener = {
        key,
        server: null,
        native: id,
        address,
        port,
        label,
        vmPort,
        lease: null,
        seenAccepted: 0,
        leaseSince: 0,
      };
      this.nativeListeners.set(id, listener);
      this.opts.log.info(`Holding connections on ${key} for VM '${label}' (to its port ${vmPort})`);
      return listener;
    }
    // pauseOnConnect: nothing is read while a connection is held, so what the client sends
    // waits in the kernel (its window fills: no buffer of ours grows) and is relayed first.
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true, noDelay: true });
    const listener: Listener = {
      key,
      server,
      native: null,
      address,
      port,
      label,
      vmPort,
      lease: null,
      seenAccepted: 0,
      leaseSince: 0,
    };
    server.on("connection", (socket) => this.accept(listener, socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: address, port, backlog: 1024 }, () => {
        server.off("error", reject);
        resolve();
      });
    }).catch((err: unknown) => {
      throw ListenError.of(`TCP (hold port of VM '${label}')`, address, port, err, "hold");
    });
    server.on("error", (err) => this.opts.log.error(`Hold port ${key}: ${describeError(err)}`));
    this.opts.log.info(`Holding connections on ${key} for VM '${label}' (to its port ${vmPort})`);
    return listener;
  }

  /**
   * A connection the splice relay accepted while `l` was not enabled, or whose
   * VM refused it: relayed natively at once if its VM is ready (the port is
   * enabled again), else held here.
   */
  private acceptNative(l: Listener, fd: number, refused: boolean, peer: string): void {
    const r = this.admit(l, peer);
    if (r === null) {
      SpliceRelay.socket(fd).resetAndDestroy();
      return;
    }
    // Refused by the VM: held and retried here (the summoner may not know yet that it is down).
    if (!refused && Array.isArray(r) && r.length > 0) {
      const to = this.opts.host.endpoint(l.label, (r as readonly string[])[0]!, l.vmPort);
      if (this.enableSplice(l, l.label, to.host, to.port) && this.splice!.relay(l.native!, fd)) {
        l.seenAccepted++; // counted as a request by admit() already
        return;
      }
    }
    this.accept(l, SpliceRelay.socket(fd), r);
  }

  /** `request()` for a connection from `client` on `listener`; null: refused (counted; logged if not a SummonRefusedError). */
  private admit(listener: Listener, client: string): readonly string[] | Promise<readonly string[]> | null {
    const label = listener.label;
    const access = this.opts.allowSummon;
    let r: readonly string[] | Promise<readonly string[]> | null;
    try {
      if (access === undefined || access.all) r = this.opts.host.request(label, client);
      else
        r =
          this.opts.host.requestIfReady(label) ??
          (access.allows(client) ? this.opts.host.request(label, client) : null);
    } catch (err) {
      if (!(err instanceof SummonRefusedError))
        this.opts.log.warn(`Hold port ${listener.key}: ${describeError(err)}`);
      r = null;
    }
    if (r === null) this.refused++;
    return r;
  }

  /** `admitted`: what admit() said already (a connection from the splice relay). */
  private accept(
    listener: Listener,
    socket: net.Socket,
    admitted?: readonly string[] | Promise<readonly string[]>,
  ): void {
    const label = listener.label;
    const vmPort = listener.vmPort;
    if (this.closed) {
      socket.destroy();
      return;
    }
    // Errors are handled where they matter (the relay); this keeps one from being thrown meanwhile.
    socket.on("error", () => undefined);
    const r = admitted ?? this.admit(listener, socket.remoteAddress ?? "");
    if (r === null) {
      socket.resetAndDestroy();
      return;
    }
    this.accepted++;
    const c: Held = {
      label,
      listener,
      socket,
      accepted: performance.now(),
      done: false,
      held: false,
      waited: false,
      observed: false,
      relaying: false,
      timer: null,
    };
    this.connections.add(c);
    this.opts.host.connectionOpened(label);
    socket.once("close", () => this.finish(c));
    const timeoutS = this.opts.startTimeoutSeconds;
    // Also how long a VM that refuses connections is tried again (30 s without --start-timeout).
    const deadline = this.opts.clock.now() + (timeoutS > 0 ? timeoutS * 1000 : 30_000);
    if (Array.isArray(r)) {
      this.connect(c, r as readonly string[], vmPort, deadline);
      return;
    }
    c.held = true;
    c.waited = true;
    this.held++;
    this.vmCounts(label).held++;
    if (timeoutS > 0) {
      c.timer = this.opts.clock.setTimer(timeoutS * 1000, () => {
        if (c.done || !c.held) return;
        this.timedOut++;
        this.warnOnce(label, "timeout", `VM '${label}' was not ready within ${timeoutS} s`);
        this.endHold(c);
        this.abandon(c);
      });
    }
    (r as Promise<readonly string[]>).then(
      (addresses) => {
        if (c.done || !c.held) return;
        this.endHold(c);
        this.connect(c, addresses, vmPort, deadline);
      },
      (err: unknown) => {
        if (c.done || !c.held) return;
        this.failed++;
        this.warnOnce(label, "failed", `VM '${label}' could not be started: ${describeError(err)}`);
        this.endHold(c);
        this.abandon(c);
      },
    );
  }

  /** Connects to the VM (again every retryMs while it refuses, until `deadline`), then relays. */
  private connect(c: Held, addresses: readonly string[], vmPort: number, deadline: number): void {
    if (c.done) return;
    const address = addresses[0];
    if (address === undefined) {
      this.failed++;
      this.warnOnce(c.label, "unreachable", `VM '${c.label}' has no address to relay connections to`);
      this.abandon(c);
      return;
    }
    const to = this.opts.host.endpoint(c.label, address, vmPort);
    const upstream = net.connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true });
    const onError = (err: NodeJS.ErrnoException): void => {
      upstream.destroy();
      if (c.done) return;
      const retryMs = this.opts.retryMs ?? 100;
      if (err.code === "ECONNREFUSED" && this.opts.clock.now() + retryMs < deadline) {
        c.waited = true;
        c.timer = this.opts.clock.setTimer(retryMs, () => this.connect(c, addresses, vmPort, deadline));
        return;
      }
      this.failed++;
      this.warnOnce(
        c.label,
        "unreachable",
        `Cannot connect to VM '${c.label}' at ${endpointText(to.host, to.port)}: ${describeError(err)}`,
      );
      this.abandon(c);
    };
    upstream.once("error", onError);
    upstream.once("connect", () => {
      upstream.off("error", onError);
      if (c.done) {
        upstream.destroy();
        return;
      }
      this.observeHold(c);
      this.enableSplice(c.listener, c.label, to.host, to.port);
      this.splices++;
      this.relaying++;
      this.vmCounts(c.label).relaying++;
      c.relaying = true;
      void relay(c.socket, upstream).then((result) => {
        this.bytesToVm += result.toVm;
        this.bytesFromVm += result.fromVm;
        if (result.error !== null) {
          this.relayErrors++;
          if (this.opts.log.isLevelEnabled("debug"))
            this.opts.log.debug(`Relay to VM '${c.label}' ended: ${describeError(result.error)}`);
        }
      });
    });
  }

  /** Stops listening on `l` (its connections go on). */
  private unlisten(l: Listener): Promise<void> {
    if (l.native !== null && !this.closed) this.splice?.unlisten(l.native);
    return closeServer(l.server);
  }

  /**
   * A connection to `label`'s VM through `l` was relayed: the next ones go
   * natively to the same place (while `l` still serves that VM), and `l`
   * holds a lease on the VM until a tick finds it idle.
   */
  private enableSplice(l: Listener, label: string, host: string, port: number): boolean {
    if (l.native === null || this.splice === null || this.closed || l.label !== label) return false;
    if (l.lease !== null && l.lease !== label) return false; // the old VM's relays are still open: later
    if (!net.isIP(host)) return false;
    this.splice.enable(l.native, host, port);
    if (l.lease === null) {
      l.lease = label;
      l.leaseSince = this.opts.clock.now();
      l.seenAccepted = this.splice.stats(l.native).accepted;
      this.leased.add(l);
      this.opts.host.connectionOpened(label);
    }
    if (this.ticker === null) {
      this.ticker = setInterval(() => this.tick(), this.opts.tickMs ?? 1000);
      this.ticker.unref();
    }
    return true;
  }

  /**
   * Counts the natively accepted connections as requests; disables idle ports
   * and ends their leases. Both are dated when they happened (the relay's last
   * accept, its last close), not at the tick: the 2 x TTL clock starts when
   * the last connection closed.
   */
  private tick(): void {
    const splice = this.splice;
    if (splice === null || this.closed) return;
    const now = this.opts.clock.now();
    for (const l of this.leased) {
      const s = splice.stats(l.native!);
      const label = l.lease!;
      // Below 0 when one given back by relay() was refused at once (then counted here again).
      const fresh = Math.max(0, s.accepted - l.seenAccepted);
      if (fresh > 0) this.opts.host.noteRequests(label, fresh, { at: ago(now, s.sinceAcceptMs) });
      let fast = s.fast;
      if (fast && s.accepted <= l.seenAccepted && s.open === 0) fast = !splice.disable(l.native!, s.accepted);
      l.seenAccepted = s.accepted;
      if (!fast && s.open === 0) {
        l.lease = null;
        this.leased.delete(l);
        // The last close here, or the lease's start if none closed here since (a close from
        // an earlier lease is older).
        this.opts.host.connectionClosed(label, Math.max(l.leaseSince, ago(now, s.sinceCloseMs) ?? 0));
      }
    }
    if (this.leased.size === 0 && this.ticker !== null) {
      clearInterval(this.ticker);
      this.ticker = null;
    }
  }

  private endHold(c: Held): void {
    c.held = false;
    c.timer?.cancel();
    c.timer = null;
    this.held--;
    this.vmCounts(c.label).held--;
  }

  /** The time `c` waited, from accept to now, into the histogram (once, and only if it waited). */
  private observeHold(c: Held): void {
    if (!c.waited || c.observed) return;
    c.observed = true;
    const s = (performance.now() - c.accepted) / 1000;
    let i = 0;
    while (i < HOLD_BUCKETS.length && s > HOLD_BUCKETS[i]!) i++;
    this.holdBuckets[i]!++;
    this.holdSum += s;
    this.holdCount++;
  }

  /** Ends a connection that will not be relayed: reset, so the client knows it got nothing. */
  private abandon(c: Held): void {
    this.observeHold(c);
    c.socket.resetAndDestroy();
  }

  /** The connection closed (any way): it no longer keeps its VM up. */
  private finish(c: Held): void {
    if (c.done) return;
    c.done = true;
    c.timer?.cancel();
    if (c.held) {
      // Closed while held (jitsu shutting down, or an error): it never reached its VM.
      c.held = false;
      this.held--;
      this.vmCounts(c.label).held--;
      this.observeHold(c);
    }
    if (c.relaying) {
      this.relaying--;
      this.vmCounts(c.label).relaying--;
    }
    const counts = this.perVm.get(c.label);
    if (counts !== undefined && counts.held === 0 && counts.relaying === 0) this.perVm.delete(c.label);
    this.connections.delete(c);
    this.opts.host.connectionClosed(c.label);
  }

  private vmCounts(label: string): { held: number; relaying: number } {
    let counts = this.perVm.get(label);
    if (counts === undefined) this.perVm.set(label, (counts = { held: 0, relaying: 0 }));
    return counts;
  }

  /**
   * A held connection was reset: a warn line and a `hold.reset` event for the
   * first of a VM, then at most one every 10 s (with the count since the last);
   * the ones between are debug lines.
   */
  private warnOnce(label: string, why: "timeout" | "failed" | "unreachable", text: string): void {
    const now = this.opts.clock.now();
    const last = this.warned.get(label);
    const count = (this.resets.get(label) ?? 0) + 1;
    const message = `Held connection to VM '${label}' reset: ${text}`;
    if (last !== undefined && now - last < 10_000) {
      this.resets.set(label, count);
      if (this.opts.log.isLevelEnabled("debug")) this.opts.log.debug(message);
      return;
    }
    this.warned.set(label, now);
    this.resets.set(label, 0);
    this.opts.log.warn({ type: "hold.reset" }, `${message} (further ones for 10 s at debug)`);
    this.opts.events?.emit({ type: "hold.reset", vm: label, why, error: text, connections: count });
  }
}

function closeServer(server: net.Server | null): Promise<void> {
  if (server === null) return Promise.resolve();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** `ms` before `now`; undefined when `ms` is null (it never happened). */
function ago(now: number, ms: number | null): number | undefined {
  return ms === null ? undefined : now - ms;
}
