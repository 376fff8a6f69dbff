/**
 * The Activator (a userspace Synjitsu): listens on each VM's hold ports,
 * also while the VM is off, so that a connection summons it as a query does;
 * holds each connection (not reading it) until the VM is ready, within
 * --start-timeout, then connects to the VM's own address and port and relays
 * both ways (relay.ts). Every connection counts as activity of its VM from
 * accept to close (`ActivatorHost.connectionOpened/Closed`): the summoner's
 * reaper never stops a VM with one open.
 */
import net from "node:net";
import type { Clock, Timer } from "../clock/index.js";
import type { EventBus } from "../events/index.js";
import { ListenError, SummonRefusedError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { endpointText, type HoldPlan } from "./plan.js";
import { relay } from "./relay.js";

/** What the activator needs from the summoner (the Summoner satisfies it; src/cli passes it in). */
export interface ActivatorHost {
  /** As SummonTarget.request: the addresses now if ready, else a promise; may throw SummonRefusedError. */
  request(label: string, client?: string): readonly string[] | Promise<readonly string[]>;
  /** The addresses if ready now, else null (never starts it). */
  requestIfReady(label: string): readonly string[] | null;
  connectionOpened(label: string): void;
  connectionClosed(label: string): void;
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
  readonly server: net.Server;
  readonly address: string;
  readonly port: number;
  /** Changed in place by a reload that gives the port to another VM or VM port. */
  label: string;
  vmPort: number;
}

interface Held {
  readonly label: string;
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

  constructor(private readonly opts: ActivatorOptions) {}

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
      await Promise.all(opened.map((l) => closeServer(l.server)));
      throw err;
    }
    for (const l of opened) this.listeners.set(l.key, l);
    for (const [key, l] of this.listeners) {
      const w = wanted.get(key);
      if (w === undefined) {
        this.listeners.delete(key);
        this.opts.log.info(`No longer holding connections on ${key} (was VM '${l.label}')`);
        void closeServer(l.server);
        continue;
      }
      if (!opened.includes(l) && (l.label !== w.label || l.vmPort !== w.vmPort)) {
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
    return {
      listeners: this.endpoints,
      held: this.held,
      relaying: this.relaying,
      vms: Object.fromEntries(this.perVm),
      accepted: this.accepted,
      splices: this.splices,
      bytesToVm: this.bytesToVm,
      bytesFromVm: this.bytesFromVm,
      timedOut: this.timedOut,
      failed: this.failed,
      refused: this.refused,
      relayErrors: this.relayErrors,
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
    this.closed = true;
    const servers = [...this.listeners.values()].map((l) => closeServer(l.server));
    this.listeners.clear();
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
    // pauseOnConnect: nothing is read while a connection is held, so what the client sends
    // waits in the kernel (its window fills: no buffer of ours grows) and is relayed first.
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true, noDelay: true });
    const listener: Listener = { key, server, address, port, label, vmPort };
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

  private accept(listener: Listener, socket: net.Socket): void {
    const label = listener.label;
    const vmPort = listener.vmPort;
    if (this.closed) {
      socket.destroy();
      return;
    }
    // Errors are handled where they matter (the relay); this keeps one from being thrown meanwhile.
    socket.on("error", () => undefined);
    const client = socket.remoteAddress ?? "";
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
    if (r === null) {
      this.refused++;
      socket.resetAndDestroy();
      return;
    }
    this.accepted++;
    const c: Held = {
      label,
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

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
