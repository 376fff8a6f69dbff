/**
 * The UDP sockets one upstream's queries go out on (RFC 5452 §9.2, as
 * dnsmasq's 64 random-port sockets): `size` sockets, each bound to a random
 * port (port 0: the kernel's pick in its ephemeral range) and connected to the
 * upstream. Each query goes out on a socket drawn uniformly at random among
 * those not already waiting for the same question, with an ID drawn at random
 * among those not in flight on that socket. A socket is replaced by a fresh
 * one (a new random port) once it has sent `socketQueries` queries or is
 * `socketMs` old; the old one is closed when its last query is over.
 *
 * Connected sockets: the kernel hands us only datagrams from the upstream's
 * address and port (a forged reply from anywhere else is dropped there and
 * counted in the kernel's Udp NoPorts, not here); a probe of our ports from
 * any other address finds them all closed; and an ICMP error (the upstream's
 * port is closed) reaches the queries waiting on that socket, which fail over
 * at once. A datagram that does reach us but is not the reply of a query
 * waiting on that socket with that ID and question (a spoofer who got the
 * source right, or a late reply to a query already given up) is counted
 * (`onMismatched`) and ignored.
 *
 * With the batched UDP addon (../native-udp.ts) each socket is a plain
 * descriptor bound and connected at once (no queue while binding), a query is
 * one send(2), and replies are read with recvmmsg; without it (or for an
 * upstream given by name) each socket is a dgram socket, as before.
 */
import dgram from "node:dgram";
import type { Logger } from "../../log/index.js";
import { NativeSocket, type NativeUdp } from "../native-udp.js";
import type { RandomBytes } from "./random-bytes.js";
import type { Upstream } from "./resolv-conf.js";

export interface PoolOptions {
  /** Sockets in the pool. */
  readonly size: number;
  /** Queries one socket sends before it is replaced. */
  readonly socketQueries: number;
  /** Age (ms) after which a socket sends no more queries and is replaced. */
  readonly socketMs: number;
}

/** A query waiting on a pool socket for its reply. */
export interface PoolQuery {
  /**
   * Its question (a hash of the lower-cased name, type and class): no two
   * queries with one question value share a socket (a collision of two
   * questions only keeps them apart too).
   */
  readonly question: number;
  /** A datagram from the upstream on this query's socket with this query's ID: true if it is the reply. */
  reply(msg: Buffer): boolean;
  /** The socket failed (an ICMP error, a send error) or the pool closed: the query is over. */
  fail(err: Error): void;
}

/** Where a query waits: give it back to `UdpSocketPool.release` once the query is over. */
export interface Ticket {
  readonly socket: PoolSocket;
  readonly id: number;
}

export class PoolSocket {
  /** Its socket: a dgram one, or one of the addon's (set right after construction). */
  sock: dgram.Socket | null = null;
  native: NativeSocket | null = null;
  /** Queries waiting for their reply, by ID. */
  readonly waiting = new Map<number, PoolQuery>();
  /** Questions waiting, with how many queries each (normally one). */
  readonly questions = new Map<number, number>();
  sent = 0;
  /** Packets sent before the socket was connected, sent once it is. */
  queue: Buffer[] | null = [];
  retired = false;
  closed = false;

  constructor(
    readonly slot: number,
    readonly born: number,
  ) {}

  /** The local port, or 0 until bound. */
  get port(): number {
    if (this.native !== null) return this.native.port;
    try {
      return this.sock?.address().port ?? 0;
    } catch {
      return 0;
    }
  }
}

export class UdpSocketPool {
  private readonly slots: (PoolSocket | null)[];
  /** Sockets replaced in their slot whose queries are not all over yet. */
  private readonly retired = new Set<PoolSocket>();
  private closed = false;
  /** Sockets opened over the pool's life. */
  opened = 0;

  constructor(
    private readonly up: Upstream,
    private readonly family: "udp4" | "udp6",
    private readonly opts: PoolOptions,
    private readonly random: RandomBytes,
    private readonly onMismatched: () => void,
    private readonly log: Logger,
    /** The batched UDP addon, or null for dgram sockets. */
    private readonly io: NativeUdp | null = null,
  ) {
    this.slots = new Array<PoolSocket | null>(opts.size).fill(null);
  }

  /**
   * Sends `packet` for `query` from a socket drawn at random among those not
   * waiting for its question, first writing into it an ID that no other query
   * waiting on that socket has. The caller releases the ticket when the query is over.
   */
  send(packet: Buffer, query: PoolQuery): Ticket {
    if (this.closed) throw new Error("forwarder is closed");
    const s = this.pick(query.question, Date.now());
    let id = this.random.u16();
    while (s.waiting.has(id)) id = this.random.u16();
    packet[0] = id >> 8;
    packet[1] = id & 0xff;
    s.waiting.set(id, query);
    s.questions.set(query.question, (s.questions.get(query.question) ?? 0) + 1);
    s.sent++;
    if (s.queue !== null) s.queue.push(packet);
    // No callback: a send error is an 'error' event (it fails the socket's queries), and none saves a tick.
    else if (s.sock !== null) s.sock.send(packet);
    else if (s.native !== null) {
      const err = s.native.send(packet);
      // As dgram's 'error' event: after the caller holds its ticket, so its query fails over.
      if (err !== null) queueMicrotask(() => this.socketError(s, err));
    }
    // Else a socket the addon could not open: its queries fail over (socketError, queued by openNative).
    if (s.sent >= this.opts.socketQueries) this.retire(s);
    return { socket: s, id };
  }

  /** The query of `ticket` is over (answered, failed or given up): its ID and question leave the socket. */
  release(ticket: Ticket, query: PoolQuery): void {
    const s = ticket.socket;
    if (s.waiting.get(ticket.id) !== query) return;
    s.waiting.delete(ticket.id);
    const n = s.questions.get(query.question)!;
    if (n <= 1) s.questions.delete(query.question);
    else s.questions.set(query.question, n - 1);
    if (s.waiting.size === 0 && s.retired) this.closeSocket(s);
  }

  /** Replaces the sockets `socketMs` old that wait for nothing (the forwarder's sweep calls it). */
  sweep(now: number): void {
    for (const s of this.slots) {
      if (s !== null && s.waiting.size === 0 && now - s.born >= this.opts.socketMs) this.retire(s);
    }
  }

  /** The local ports of the sockets in use now (tests, logs). */
  ports(): number[] {
    return this.slots.filter((s): s is PoolSocket => s !== null).map((s) => s.port);
  }

  /** Closes every socket; their waiting queries fail. */
  close(): void {
    this.closed = true;
    const all = [...this.slots.filter((s): s is PoolSocket => s !== null), ...this.retired];
    this.slots.fill(null);
    this.retired.clear();
    const err = new Error("forwarder closed");
    for (const s of all) this.failSocket(s, err);
  }

  /**
   * A socket drawn uniformly among the slots whose socket does not wait for
   * `question` (rejection sampling: a redraw keeps the draw uniform among the
   * rest). An empty slot, or one whose socket is too old, gets a fresh socket.
   */
  private pick(question: number, now: number): PoolSocket {
    const n = this.slots.length;
    for (let tries = 0; tries < 16; tries++) {
      const s = this.socketAt(this.random.below(n), now);
      if (!s.questions.has(question)) return s;
    }
    // Many of them wait for this question (or bad luck): draw among the others by scanning.
    const free: number[] = [];
    for (let i = 0; i < n; i++) if (!this.socketAt(i, now).questions.has(question)) free.push(i);
    return this.socketAt(free.length > 0 ? free[this.random.below(free.length)]! : this.random.below(n), now);
  }

  private socketAt(i: number, now: number): PoolSocket {
    const s = this.slots[i]!;
    if (s !== null && now - s.born < this.opts.socketMs) return s;
    if (s !== null) this.retire(s);
    return this.open(i, now);
  }

  private open(slot: number, now: number): PoolSocket {
    const s = new PoolSocket(slot, now);
    this.slots[slot] = s;
    this.opened++;
    const up = this.up;
    // The addon takes addresses only (an upstream is one, unless a test names a host).
    const io = this.io !== null && /^[0-9.]+$|:/.test(up.host) ? this.io : null;
    if (io !== null) this.openNative(s, io);
    else this.openDgram(s);
    return s;
  }

  /** The datagram `msg` from the upstream on `s`: the reply of one of its queries, or counted and ignored. */
  private received(s: PoolSocket, msg: Buffer): void {
    const w = msg.length >= 12 ? s.waiting.get((msg[0]! << 8) | msg[1]!) : undefined;
    if (w === undefined || !w.reply(msg)) {
      this.onMismatched();
      this.log.debug(
        `forwarder: ignored a datagram from ${this.up.host}#${this.up.port} on port ${s.port} that answers no query in flight`,
      );
    }
  }

  private socketError(s: PoolSocket, err: Error): void {
    this.log.debug(`forwarder: socket to ${this.up.host}#${this.up.port}: ${err.message}`);
    this.failSocket(s, err);
  }

  private openNative(s: PoolSocket, io: NativeUdp): void {
    s.queue = null;
    try {
      const v6 = this.family === "udp6";
      const fd = io.addon.open(v6 ? 6 : 4, v6 ? "::" : "0.0.0.0", 0, 0, this.up.host, this.up.port);
      s.native = new NativeSocket(
        io,
        fd,
        (n) => {
          for (let i = 0; i < n && !s.closed; i++) this.received(s, io.datagram(i));
        },
        (err) => this.socketError(s, err),
      );
    } catch (err) {
      // As a dgram socket's bind or connect error: its queries fail over, after the caller holds its ticket.
      queueMicrotask(() => this.socketError(s, err as Error));
      return;
    }
    // Never what keeps the process alive: the forwarder's sweep timer is, while queries wait.
    s.native.unref();
  }

  private openDgram(s: PoolSocket): void {
    const sock = dgram.createSocket(this.family);
    s.sock = sock;
    // Never what keeps the process alive: the forwarder's sweep timer is, while queries wait.
    sock.unref();
    sock.on("message", (msg: Buffer) => this.received(s, msg));
    sock.on("error", (err) => this.socketError(s, err));
    // exclusive: in a --workers worker, a socket of its own; without it node:cluster would hand
    // every port-0 socket of every worker the one socket the primary bound for port 0.
    sock.bind({ port: 0, exclusive: true }, () => {
      if (s.closed) return;
      sock.connect(this.up.port, this.up.host, () => {
        if (s.closed) return;
        const queued = s.queue!;
        s.queue = null;
        for (const p of queued) sock.send(p);
      });
    });
  }

  /** Takes `s` out of its slot (the next query there gets a fresh socket); closed once its queries are over. */
  private retire(s: PoolSocket): void {
    if (s.retired) return;
    s.retired = true;
    if (this.slots[s.slot] === s) this.slots[s.slot] = null;
    if (s.waiting.size === 0) this.closeSocket(s);
    else this.retired.add(s);
  }

  /** An error on `s` (or the pool closing): it leaves its slot, its queries fail (they may fail over). */
  private failSocket(s: PoolSocket, err: Error): void {
    this.retire(s);
    for (const w of [...s.waiting.values()]) w.fail(err);
    this.closeSocket(s);
  }

  private closeSocket(s: PoolSocket): void {
    if (s.closed) return;
    s.closed = true;
    this.retired.delete(s);
    s.native?.close();
    try {
      s.sock?.close();
    } catch {
      // already closed
    }
  }
}
