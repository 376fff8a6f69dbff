/**
 * DNS over TCP (RFC 7766): length-prefixed messages, pipelined queries
 * answered as each is ready, and the connection limits of §6.2.3 that keep
 * a few slow or idle clients from locking the others out:
 *  - a deadline, not an inactivity timer: a message must arrive whole within
 *    the idle timeout of its first byte, and the next must begin within the
 *    idle timeout of the last message or answer (trickling bytes keeps
 *    nothing alive); a connection waiting for our answer is not idle;
 *  - at most `perClient` connections per client address (ClientSlots: this
 *    process's, or with --workers the primary's count over every worker);
 *  - at `maxConnections`, a new connection is admitted and the one idle
 *    longest closed, instead of the new one refused.
 */
import type net from "node:net";
import { describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import type { DnsCounters, TcpCloseReason } from "./counters.js";

type Reply = Buffer | null;

/**
 * Open connections per client address, for one DNS port: this process's
 * (LocalClientSlots), or with --workers the primary's over every worker.
 */
export interface ClientSlots {
  /** Takes a slot for `client`: false when it holds its limit already. */
  acquire(client: string): boolean | Promise<boolean>;
  /** Gives back a slot `acquire` granted. */
  release(client: string): void;
}

/** ClientSlots counted in this process; `limit` 0 is no limit. */
export class LocalClientSlots implements ClientSlots {
  private readonly held = new Map<string, number>();

  constructor(private readonly limit: number) {}

  acquire(client: string): boolean {
    const n = this.held.get(client) ?? 0;
    if (this.limit > 0 && n >= this.limit) return false;
    this.held.set(client, n + 1);
    return true;
  }

  release(client: string): void {
    const n = this.held.get(client);
    if (n === undefined) return;
    if (n <= 1) this.held.delete(client);
    else this.held.set(client, n - 1);
  }

  /** Connections held by `client` (tests, and the primary's per-worker tally). */
  count(client: string): number {
    return this.held.get(client) ?? 0;
  }

  /** Every client with its count. */
  entries(): IterableIterator<[string, number]> {
    return this.held.entries();
  }
}

/** An IPv4 client on an IPv6 socket (`::ffff:192.0.2.1`) is the IPv4 client. */
export function clientKey(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

export interface TcpConnectionsOptions {
  /** The deadline for a message, and for the gap between messages (RFC 7766 §6.2.3). */
  readonly idleTimeoutMs: number;
  /** At this many open connections, a new one closes the one idle longest. */
  readonly maxConnections: number;
  readonly slots: ClientSlots;
  readonly counters: DnsCounters;
  readonly log: Logger;
  /** The answer to one message from `client` (the server's query path). */
  readonly answer: (msg: Buffer, client: string) => Reply | Promise<Reply>;
}

/** One accepted connection. */
interface Connection {
  readonly socket: net.Socket;
  /** The client's address (clientKey), whose slot it holds once admitted. */
  readonly client: string;
  /** Bytes of a message not yet complete (empty between messages). */
  buffered: Buffer;
  /** Queries read whose answer is not written yet. */
  outstanding: number;
  /** When it last did something at the message level (admitted, a message read, an answer written), as a tick: the eviction order. */
  active: number;
  /** Our answers wait for the client to read them: reading is paused meanwhile. */
  blocked: boolean;
  /** Admitted: holds a client slot and counts towards maxConnections. */
  admitted: boolean;
  /** Closed by us or the peer: its slot given back, out of `open`. */
  gone: boolean;
  timer: ReturnType<typeof setTimeout> | null;
}

export class TcpConnections {
  private readonly opts: TcpConnectionsOptions;
  /** Admitted connections, in admission order. */
  private readonly open = new Set<Connection>();
  /** Waiting for a client slot (--workers: the primary's answer). */
  private readonly admitting = new Set<Connection>();
  private tick = 0;
  private closing = false;

  constructor(opts: TcpConnectionsOptions) {
    this.opts = opts;
  }

  /** Open connections (admitted ones). */
  get size(): number {
    return this.open.size;
  }

  /** A connection the listener accepted. */
  accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.opts.counters.tcpConnections++;
    const c: Connection = {
      socket,
      client: clientKey(socket.remoteAddress ?? ""),
      buffered: EMPTY,
      outstanding: 0,
      active: 0,
      blocked: false,
      admitted: false,
      gone: false,
      timer: null,
    };
    socket.on("error", (err) => this.opts.log.debug(`DNS TCP connection error: ${describeError(err)}`));
    socket.on("close", () => this.gone(c));
    // Until admitted nothing is read: the bytes wait in the socket.
    socket.pause();
    const granted = this.opts.slots.acquire(c.client);
    if (granted === true || granted === false) {
      this.admit(c, granted);
      return;
    }
    this.admitting.add(c);
    c.timer = setTimeout(() => this.drop(c, "idle"), this.opts.idleTimeoutMs);
    c.timer.unref();
    granted.then(
      (ok) => {
        this.admitting.delete(c);
        if (c.gone) {
          if (ok) this.opts.slots.release(c.client);
          return;
        }
        this.admit(c, ok);
      },
      (err: unknown) => {
        this.admitting.delete(c);
        this.opts.log.debug(`DNS TCP: no client slot for ${c.client}: ${describeError(err)}`);
        c.socket.destroy();
      },
    );
  }

  /**
   * Stops reading new queries (those read are still answered): the server
   * is closing. `end()` then closes what is left.
   */
  stop(): void {
    this.closing = true;
    for (const c of this.admitting) c.socket.destroy();
  }

  /** Closes every connection gracefully (what is written is flushed; destroyed if the peer does not close within 1 s). */
  async end(): Promise<void> {
    const ends = [...this.open].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.socket.destroyed) {
            resolve();
            return;
          }
          const timer = setTimeout(() => c.socket.destroy(), 1000);
          c.socket.once("close", () => {
            clearTimeout(timer);
            resolve();
          });
          c.socket.end();
        }),
    );
    await Promise.all(ends);
  }

  private admit(c: Connection, granted: boolean): void {
    if (!granted) {
      this.drop(c, "per-client");
      return;
    }
    c.admitted = true;
    if (this.open.size >= this.opts.maxConnections) this.evictOne();
    this.open.add(c);
    c.active = ++this.tick;
    if (c.timer !== null) clearTimeout(c.timer);
    c.timer = setTimeout(() => this.expired(c), this.opts.idleTimeoutMs);
    c.timer.unref();
    c.socket.setNoDelay(true);
    c.socket.on("data", (chunk: Buffer) => this.onData(c, chunk));
    c.socket.resume();
  }

  /** The connection idle longest is closed; one waiting for our answer only if every one is. */
  private evictOne(): void {
    let idle: Connection | undefined;
    let waiting: Connection | undefined;
    for (const c of this.open) {
      if (c.outstanding === 0) {
        if (idle === undefined || c.active < idle.active) idle = c;
      } else if (waiting === undefined || c.active < waiting.active) {
        waiting = c;
      }
    }
    const victim = idle ?? waiting;
    if (victim !== undefined) this.drop(victim, "evicted");
  }

  private onData(c: Connection, chunk: Buffer): void {
    const first = c.buffered.length === 0;
    c.buffered = first ? chunk : Buffer.concat([c.buffered, chunk]);
    let read = false;
    while (c.buffered.length >= 2) {
      const len = c.buffered.readUInt16BE(0);
      if (c.buffered.length < 2 + len) break;
      const msg = c.buffered.subarray(2, 2 + len);
      c.buffered = c.buffered.subarray(2 + len);
      read = true;
      if (!this.closing) this.query(c, msg);
    }
    if (read) c.active = ++this.tick;
    // The deadline restarts at a message's first byte and after a whole one: never for the
    // bytes in between, so a message trickled a byte at a time still has to end in time.
    if (first || read) c.timer?.refresh();
  }

  private query(c: Connection, msg: Buffer): void {
    const r = this.opts.answer(msg, c.client);
    if (r === null) return;
    if (r instanceof Buffer) {
      this.write(c, r);
      return;
    }
    // Pipelining (RFC 7766 §6.2.1.1): each answer goes out when ready, later queries' first.
    c.outstanding++;
    void (r as Promise<Reply>).then((buf) => {
      c.outstanding--;
      if (buf !== null) this.write(c, buf);
      // An answer written: the wait for the next message starts now (not if one is under way).
      if (c.buffered.length === 0 && !c.gone) {
        c.active = ++this.tick;
        c.timer?.refresh();
      }
    });
  }

  private write(c: Connection, buf: Buffer): void {
    const socket = c.socket;
    if (c.gone || socket.destroyed) return;
    const framed = Buffer.allocUnsafe(2 + buf.length);
    framed.writeUInt16BE(buf.length, 0);
    buf.copy(framed, 2);
    if (socket.write(framed) || c.blocked) return;
    // The client does not read its answers: read no more queries until it does
    // (memory stays bounded); the deadline closes it if it never does.
    c.blocked = true;
    socket.pause();
    socket.once("drain", () => {
      c.blocked = false;
      if (c.gone) return;
      socket.resume();
      if (c.buffered.length === 0) c.timer?.refresh();
    });
  }

  private expired(c: Connection): void {
    if (c.gone) return;
    if (c.buffered.length > 0 || c.blocked) this.drop(c, "slow");
    // Waiting for our answer is not idle: the deadline restarts when it is written.
    else if (c.outstanding === 0) this.drop(c, "idle");
  }

  /** Closes a connection for `reason`, counted; its slot is free at once. */
  private drop(c: Connection, reason: TcpCloseReason): void {
    if (c.gone) return;
    this.opts.counters.countTcpClosed(reason);
    this.gone(c);
    c.socket.destroy();
  }

  private gone(c: Connection): void {
    if (c.gone) return;
    c.gone = true;
    if (c.timer !== null) clearTimeout(c.timer);
    if (c.admitted) {
      this.open.delete(c);
      this.opts.slots.release(c.client);
    }
  }
}

const EMPTY = Buffer.alloc(0);
