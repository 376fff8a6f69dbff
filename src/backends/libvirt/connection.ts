/**
 * One libvirt connection that outlives the daemon: it opens the transport,
 * authenticates (REMOTE_PROC_AUTH_LIST: none, or polkit over a unix socket;
 * SASL is refused with a clear error), turns keepalive on, sends CONNECT_OPEN,
 * and, when the daemon goes away, reconnects with back-off. Calls made while
 * it is down wait in a queue and are sent once it is back; read-only calls
 * that were in flight when it dropped are sent again (calls that change state
 * are not, since the daemon may have run them: their caller gets an error and
 * re-reads the state).
 */
import { systemClock, type Clock, type Timer } from "../../clock/index.js";
import type { Logger } from "../../log/index.js";
import { AuthType, FEATURE_PROGRAM_KEEPALIVE, Proc, STRING_MAX, AUTH_TYPE_LIST_MAX } from "./protocol.js";
import { ConnectionLostError, RpcClient } from "./rpc.js";
import { openTransport, TransportError } from "./transport.js";
import type { LibvirtUri } from "./uri.js";
import type { XdrReader, XdrWriter } from "./xdr.js";

export interface ConnectionOptions {
  clock?: Clock;
  log: Logger;
  /** Our keepalive: PING after this much silence... */
  keepaliveIntervalMs?: number;
  /** ...and give up after this many unanswered PINGs. */
  keepaliveCount?: number;
  connectTimeoutMs?: number;
  /** First and largest delay between reconnection attempts. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** How long a call may wait for the daemon to come back (default: callTimeoutMs). */
  queueTimeoutMs?: number;
  /**
   * A daemon silent this long (no reply, no keepalive answer) is taken for
   * hung: the connection is reset (calls in flight fail) and reopened. The
   * keepalive is tuned to it (default 30 s, jitsu's --start-timeout).
   */
  callTimeoutMs?: number;
  /** At most this many calls in flight and waiting at once; more fail at once (default 256). */
  maxCalls?: number;
}

export class AuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AuthError";
  }
}

/** A call that could not be made because the daemon stayed unreachable. */
export class UnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnreachableError";
  }
}

interface Queued {
  run: () => void;
  fail: (e: Error) => void;
  timer: Timer;
}

export type ConnectionState = "idle" | "open" | "down" | "closed";

export class LibvirtConnection {
  private readonly clock: Clock;
  private readonly log: Logger;
  private rpc: RpcClient | null = null;
  private stateValue: ConnectionState = "idle";
  private queue: Queued[] = [];
  private reconnectTimer: Timer | null = null;
  private reconnectDelay: number;
  private lastError: Error | null = null;
  private readonly messageListeners: ((proc: number, r: XdrReader) => void)[] = [];
  private readonly openHooks: (() => Promise<void>)[] = [];
  private readonly reconnectListeners: (() => void)[] = [];
  private readonly opts: Required<Omit<ConnectionOptions, "clock" | "log">>;
  /** Counts, for tests and logs (`refused`: calls failed at once by the maxCalls bound). */
  readonly stats = { opens: 0, reconnects: 0, retried: 0, refused: 0 };
  /** Calls made and not yet answered or failed (in flight, or waiting for the daemon). */
  private outstanding = 0;

  constructor(
    readonly uri: LibvirtUri,
    options: ConnectionOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.log = options.log;
    const callTimeoutMs = options.callTimeoutMs ?? 30_000;
    // Our PINGs go out after `interval` of silence; `count` unanswered ones end the
    // connection, interval x (count + 1) after the last byte: within callTimeoutMs.
    const keepaliveIntervalMs = Math.max(
      50,
      Math.min(options.keepaliveIntervalMs ?? 5000, Math.floor(callTimeoutMs / 4)),
    );
    const keepaliveCount = Math.max(
      1,
      Math.min(options.keepaliveCount ?? 5, Math.floor(callTimeoutMs / keepaliveIntervalMs) - 1),
    );
    this.opts = {
      keepaliveIntervalMs,
      keepaliveCount,
      connectTimeoutMs: options.connectTimeoutMs ?? Math.min(10_000, callTimeoutMs),
      reconnectInitialMs: options.reconnectInitialMs ?? 100,
      reconnectMaxMs: options.reconnectMaxMs ?? 5000,
      queueTimeoutMs: options.queueTimeoutMs ?? callTimeoutMs,
      callTimeoutMs,
      maxCalls: options.maxCalls ?? 256,
    };
    this.reconnectDelay = this.opts.reconnectInitialMs;
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The current RPC client (tests look at its keepalive counters). */
  get client(): RpcClient | null {
    return this.rpc;
  }

  /** Domain events and other asynchronous messages of the remote program. */
  onMessage(listener: (proc: number, r: XdrReader) => void): void {
    this.messageListeners.push(listener);
  }

  /** Runs after every successful open, before queued calls are sent (event registration). */
  onOpen(hook: () => Promise<void>): void {
    this.openHooks.push(hook);
  }

  /** Called after a reconnection (not the first open). */
  onReconnect(listener: () => void): void {
    this.reconnectListeners.push(listener);
  }

  /** The first open: fails at once (no retry), so a bad URI or a stopped daemon is reported at start-up. */
  async connect(): Promise<void> {
    if (this.stateValue === "open") return;
    if (this.stateValue === "closed")
      throw new UnreachableError(`connection to ${this.uri.original} is closed`);
    await this.open();
  }

  /**
   * Calls a procedure. `readOnly` calls are sent again if the connection drops
   * before their reply; the others fail with ConnectionLostError then.
   */
  async call(
    proc: number,
    args: ((w: XdrWriter) => void) | undefined,
    readOnly: boolean,
  ): Promise<XdrReader> {
    // A hung daemon must not gather an unbounded queue of calls behind it.
    if (this.outstanding >= this.opts.maxCalls) {
      this.stats.refused++;
      throw new UnreachableError(
        `${this.outstanding} calls to ${this.uri.original} are already waiting for an answer (is the daemon hung?); not sending more`,
      );
    }
    this.outstanding++;
    try {
      return await this.callOnce(proc, args, readOnly);
    } finally {
      this.outstanding--;
    }
  }

  /** Calls made and not yet answered or failed. */
  get waiting(): number {
    return this.outstanding;
  }

  private async callOnce(
    proc: number,
    args: ((w: XdrWriter) => void) | undefined,
    readOnly: boolean,
  ): Promise<XdrReader> {
    for (let attempt = 0; ; attempt++) {
      const rpc = await this.ready();
      try {
        return await rpc.call(proc, args);
      } catch (err) {
        if (!(err instanceof ConnectionLostError) || this.stateValue === "closed") throw err;
        // Not sent at all: always safe to send again. Sent: only if it changes nothing.
        if ((err.sent && !readOnly) || attempt >= 1) throw err;
        this.stats.retried++;
      }
    }
  }

  async close(): Promise<void> {
    if (this.stateValue === "closed") return;
    const rpc = this.rpc;
    this.stateValue = "closed";
    this.reconnectTimer?.cancel();
    for (const q of this.queue.splice(0)) {
      q.timer.cancel();
      q.fail(new UnreachableError(`connection to ${this.uri.original} was closed`));
    }
    if (rpc !== null && !rpc.closed) {
      try {
        await withTimeout(rpc.call(Proc.CONNECT_CLOSE), 2000);
      } catch {
        // closing anyway
      }
      rpc.destroy();
    }
    this.rpc = null;
  }

  /** Resolves with an open client, waiting (bounded) while the daemon is away. */
  private ready(): Promise<RpcClient> {
    if (this.stateValue === "open" && this.rpc !== null && !this.rpc.closed) return Promise.resolve(this.rpc);
    if (this.stateValue === "closed") {
      return Promise.reject(new UnreachableError(`connection to ${this.uri.original} is closed`));
    }
    if (this.stateValue === "idle") {
      return Promise.reject(new UnreachableError(`not connected to ${this.uri.original} yet`));
    }
    return new Promise<RpcClient>((resolve, reject) => {
      const entry: Queued = {
        run: () => resolve(this.rpc!),
        fail: reject,
        timer: this.clock.setTimer(this.opts.queueTimeoutMs, () => {
          this.queue = this.queue.filter((q) => q !== entry);
          reject(
            new UnreachableError(
              `the daemon of ${this.uri.original} has been unreachable for ${this.opts.queueTimeoutMs / 1000} s` +
                (this.lastError === null ? "" : `: ${this.lastError.message}`),
            ),
          );
        }),
      };
      this.queue.push(entry);
      this.reconnectNow();
    });
  }

  private async open(): Promise<void> {
    const { stream, endpoint } = await openTransport(this.uri, this.opts.connectTimeoutMs);
    const rpc = new RpcClient(stream, {
      clock: this.clock,
      onMessage: (proc, r) => {
        for (const l of this.messageListeners) l(proc, r);
      },
      onClose: (reason) => this.onClosed(rpc, reason),
    });
    try {
      await withTimeout(
        this.handshake(rpc, endpoint),
        this.opts.connectTimeoutMs,
        `opening ${this.uri.original}`,
      );
    } catch (err) {
      rpc.destroy();
      if (err instanceof ConnectionLostError) {
        throw new TransportError(`${endpoint} closed the connection during the handshake: ${err.message}`);
      }
      throw err;
    }
    this.rpc = rpc;
    this.stateValue = "open";
    this.stats.opens++;
    for (const hook of this.openHooks) await hook();
  }

  private async handshake(rpc: RpcClient, endpoint: string): Promise<void> {
    // remote_protocol.x: REMOTE_PROC_AUTH_LIST -> remote_auth_list_ret { remote_auth_type types<20>; }
    const types = (await rpc.call(Proc.AUTH_LIST)).array((r) => r.int(), AUTH_TYPE_LIST_MAX);
    if (types.length > 0 && !types.includes(AuthType.None)) {
      if (types.includes(AuthType.Polkit)) {
        // REMOTE_PROC_AUTH_POLKIT -> remote_auth_polkit_ret { int complete; }; the daemon checks our unix credentials.
        const complete = (await rpc.call(Proc.AUTH_POLKIT)).int();
        if (complete !== 1) throw new AuthError(`polkit authentication with ${endpoint} did not complete`);
      } else if (types.includes(AuthType.Sasl)) {
        throw new AuthError(
          `${endpoint} requires SASL authentication, which is not supported yet (set auth_unix_rw/auth_tcp = "none", or use +tls)`,
        );
      } else {
        throw new AuthError(`${endpoint} offers only unknown authentication types ${types.join(", ")}`);
      }
    }
    // VIR_DRV_FEATURE_PROGRAM_KEEPALIVE: asking also makes the daemon start pinging us.
    const keepalive =
      (await rpc.call(Proc.CONNECT_SUPPORTS_FEATURE, (w) => w.int(FEATURE_PROGRAM_KEEPALIVE))).int() === 1;
    // remote_connect_open_args { remote_string name; unsigned int flags; }
    await rpc.call(Proc.CONNECT_OPEN, (w) => {
      w.optional(this.uri.openName, (x, s) => x.string(s, STRING_MAX));
      w.uint(0);
    });
    if (keepalive) rpc.startKeepalive(this.opts.keepaliveIntervalMs, this.opts.keepaliveCount);
  }

  private onClosed(rpc: RpcClient, reason: Error): void {
    if (this.rpc !== rpc || this.stateValue === "closed") return;
    this.rpc = null;
    this.stateValue = "down";
    this.lastError = reason;
    this.log.warn(`libvirt: lost the connection to ${this.uri.original} (${reason.message}); reconnecting`);
    this.reconnectDelay = this.opts.reconnectInitialMs;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stateValue !== "down") return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, this.opts.reconnectMaxMs);
    this.reconnectTimer = this.clock.setTimer(delay, () => {
      this.reconnectTimer = null;
      this.reconnect();
    });
  }

  /**
   * A call arrived while the daemon is away and no attempt is under way: try
   * now rather than at the end of the back-off, so that the first query after
   * the daemon is back finds it (the back-off only paces attempts nobody waits for).
   */
  private reconnectNow(): void {
    if (this.stateValue !== "down" || this.reconnectTimer === null) return;
    this.reconnectTimer.cancel();
    this.reconnectTimer = null;
    this.reconnectDelay = this.opts.reconnectInitialMs;
    this.reconnect();
  }

  private reconnect(): void {
    if (this.stateValue !== "down") return;
    this.open().then(
      () => {
        this.stats.reconnects++;
        this.lastError = null;
        this.log.info(`libvirt: reconnected to ${this.uri.original}`);
        const waiting = this.queue.splice(0);
        for (const q of waiting) {
          q.timer.cancel();
          q.run();
        }
        for (const l of this.reconnectListeners) l();
      },
      (err: Error) => {
        this.lastError = err;
        this.log.debug(`libvirt: reconnecting to ${this.uri.original} failed: ${err.message}`);
        this.scheduleReconnect();
      },
    );
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what = "call"): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new TransportError(`timed out after ${ms} ms ${what}`)), ms);
    t.unref();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e as Error);
      },
    );
  });
}
