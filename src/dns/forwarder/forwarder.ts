/**
 * Forwarder: sends a query we do not answer to the upstream resolvers and
 * relays the answer.
 *
 * Defences against spoofing (RFC 5452 §9): every upstream query gets a fresh
 * random ID and a UDP socket of its own, bound to a random port (port 0),
 * connected to the upstream and closed once that query is over. An off-path
 * attacker who gets a query of its own forwarded must not learn a port that
 * later queries reuse, so no port serves two queries even though sharing would
 * be faster (bench/ measured about 3x the forwarded QPS with 128 queries a
 * socket). A reply counts only if it comes from the
 * upstream's address and port (the socket is connected), and matches the ID
 * and the question (name case-insensitively, type, class). Anything else is
 * ignored and we keep waiting. Identical queries in flight at the same time
 * (same question bytes, flags and EDNS) share one upstream query (RFC 5452
 * §5: several outstanding queries for one question would let a spoofer
 * play the birthday paradox); each client gets the reply with its own ID.
 * A truncated reply (TC) is
 * retried over TCP (RFC 7766 §5). An upstream that errors or stays silent
 * past the attempt timeout is failed over to the next; when the overall
 * timeout passes, `forward` rejects and the server answers SERVFAIL.
 */
import { randomFillSync } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import type { Logger } from "../../log/index.js";
import { HEADER_LEN, OPT_LEN, OUR_UDP_SIZE, QTYPE, sameName, type QueryInfo } from "../wire.js";
import type { Upstream } from "./resolv-conf.js";

export interface ForwarderOptions {
  upstreams: Upstream[];
  /** Overall time for one forwarded query, all upstreams included (default 5000 ms). */
  timeoutMs?: number;
  /** Time given to one upstream before failing over to the next (default 2000 ms). */
  attemptTimeoutMs?: number;
  /**
   * Upstream queries in flight at once (each holds a socket); beyond it a query
   * that would need a new one gets SERVFAIL at once (default 1000). Client
   * queries joining one in flight hold no socket: up to 10 times as many wait.
   */
  maxInFlight?: number;
  log: Logger;
}

/** EDNS COOKIE (RFC 7873) is between the client and us; it is not passed upstream. */
const OPTION_COOKIE = 10;

/** Random 16-bit IDs from a buffer refilled from the CSPRNG (randomInt per query costs more). */
class RandomIds {
  private readonly buf = Buffer.alloc(2048);
  private off = this.buf.length;

  next(): number {
    if (this.off >= this.buf.length) {
      randomFillSync(this.buf);
      this.off = 0;
    }
    const id = (this.buf[this.off]! << 8) | this.buf[this.off + 1]!;
    this.off += 2;
    return id;
  }
}

const ids = new RandomIds();

/** How often waiting queries are checked against their deadlines (one timer, not one per query). */
const SWEEP_MS = 25;

type Done = (err: Error | null, reply?: Buffer) => void;

/** A client query that joined an identical one in flight: its ID, and its promise's ends. */
interface Waiter {
  readonly id0: number;
  readonly id1: number;
  readonly resolve: (reply: Buffer) => void;
  readonly reject: (err: Error) => void;
}

/**
 * One upstream query over UDP, on a socket of its own: bound to a random port
 * (port 0) and connected to the upstream, so it receives only the upstream's
 * datagrams and gets ICMP port-unreachable as an error (a dead upstream fails
 * over at once). Closed when the query is answered, fails or passes its deadline.
 */
class UdpExchange {
  private readonly sock: dgram.Socket;
  private finished = false;

  constructor(
    private readonly up: Upstream,
    family: "udp4" | "udp6",
    private readonly packet: Buffer,
    private readonly query: Uint8Array,
    private readonly q: QueryInfo,
    private readonly deadline: number,
    private readonly done: Done,
    private readonly log: Logger,
    private readonly onGone: (ex: UdpExchange) => void,
  ) {
    this.sock = dgram.createSocket(family);
    this.sock.on("error", (err) =>
      this.finish(err instanceof ForwardError ? err : new ForwardError(err.message)),
    );
    this.sock.on("message", (msg) => this.onMessage(msg));
    // exclusive: in a --workers worker, a socket of its own; without it node:cluster
    // would hand every exchange of every worker the one socket the primary bound for port 0.
    this.sock.bind({ port: 0, exclusive: true }, () => {
      if (this.finished) return;
      this.sock.connect(up.port, up.host, () => {
        // No callback: a send error is an 'error' event (above), and none saves a tick per query.
        if (!this.finished) this.sock.send(packet);
      });
    });
  }

  /** Fails the query if its deadline has passed. */
  sweep(now: number): void {
    if (this.deadline <= now) this.finish(new ForwardError("timed out"));
  }

  private onMessage(msg: Buffer): void {
    if (!replyMatches(msg, this.packet, this.query, this.q)) {
      this.log.debug(
        `forwarder: ignored a reply from ${this.up.host}#${this.up.port} that does not match a query`,
      );
      return;
    }
    this.finish(null, msg);
  }

  /** Ends the exchange, once: closes the socket, then calls `done` (the caller may fail over). */
  finish(err: Error | null, reply?: Buffer): void {
    if (this.finished) return;
    this.finished = true;
    try {
      this.sock.close();
    } catch {
      // already closed
    }
    this.onGone(this);
    this.done(err, reply);
  }
}

export class ForwardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ForwardError";
  }
}

export class Forwarder {
  readonly upstreams: readonly Upstream[];
  private readonly timeoutMs: number;
  private readonly attemptTimeoutMs: number;
  private readonly log: Logger;
  private readonly open = new Set<{ close(): void }>();
  /** Per upstream (by index), its socket type. */
  private readonly families: ("udp4" | "udp6")[];
  private readonly exchanges = new Set<UdpExchange>();
  private sweeper: ReturnType<typeof setInterval> | null = null;
  private closed = false;
  private readonly maxInFlight: number;
  /** Upstream queries in flight (distinct questions), and client queries that joined one of them. */
  private inFlight = 0;
  private joinedCount = 0;
  /** Upstream queries in flight by their bytes after the ID, with the clients that joined them. */
  private readonly asked = new Map<string, Waiter[]>();
  /** Called for each client query that joins an identical upstream query in flight (a counter). */
  onCoalesced: (() => void) | undefined = undefined;

  constructor(opts: ForwarderOptions) {
    this.upstreams = opts.upstreams.map((u) => ({ host: u.host, port: u.port }));
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 2000;
    this.maxInFlight = opts.maxInFlight ?? 1000;
    this.log = opts.log;
    this.families = this.upstreams.map((u) => (net.isIPv6(u.host.replace(/%.*$/, "")) ? "udp6" : "udp4"));
  }

  /**
   * Forwards the query `query` (decoded into `q`) and resolves with the
   * upstream's reply bytes, the client's ID restored. Rejects with a
   * ForwardError when no upstream answered in time.
   */
  forward(query: Uint8Array, q: QueryInfo): Promise<Buffer> {
    if (this.closed) return Promise.reject(new ForwardError("forwarder is closed"));
    if (this.upstreams.length === 0)
      return Promise.reject(new ForwardError("no upstream resolver is configured"));
    // The upstream query without its ID: equal bytes mean the same question asked the same way.
    const packet = upstreamQuery(query, q, 0);
    const key = packet.toString("latin1", 2);
    const joined = this.asked.get(key);
    if (joined !== undefined) {
      if (this.joinedCount >= 10 * this.maxInFlight) {
        return Promise.reject(
          new ForwardError(
            `${this.joinedCount} queries already wait on identical ones in flight (the limit)`,
          ),
        );
      }
      this.joinedCount++;
      this.onCoalesced?.();
      return new Promise((resolve, reject) =>
        joined.push({ id0: query[0]!, id1: query[1]!, resolve, reject }),
      );
    }
    if (this.inFlight >= this.maxInFlight) {
      return Promise.reject(
        new ForwardError(`${this.inFlight} forwarded queries already in flight (the limit)`),
      );
    }
    this.inFlight++;
    const waiters: Waiter[] = [];
    this.asked.set(key, waiters);
    return new Promise((resolve, reject) => {
      const ok = (reply: Buffer): void => {
        this.asked.delete(key);
        this.inFlight--;
        this.joinedCount -= waiters.length;
        // Each joined client gets its own copy (sends are asynchronous), with its ID.
        for (const w of waiters) {
          const copy = Buffer.from(reply);
          copy[0] = w.id0;
          copy[1] = w.id1;
          w.resolve(copy);
        }
        reply[0] = query[0]!;
        reply[1] = query[1]!;
        resolve(reply);
      };
      const failed = (err: Error): void => {
        this.asked.delete(key);
        this.inFlight--;
        this.joinedCount -= waiters.length;
        for (const w of waiters) w.reject(err);
        reject(err);
      };
      this.attempt(0, packet, query, q, Date.now() + this.timeoutMs, [], ok, failed);
    });
  }

  /** Tries upstream `i`, then the next ones on failure, until the deadline (callbacks: no promise per step). */
  private attempt(
    i: number,
    packet: Buffer,
    query: Uint8Array,
    q: QueryInfo,
    deadline: number,
    problems: string[],
    resolve: (reply: Buffer) => void,
    reject: (err: Error) => void,
  ): void {
    const now = Date.now();
    if (i >= this.upstreams.length || now >= deadline || this.closed) {
      reject(new ForwardError(`no upstream answered (${problems.join("; ") || "timed out"})`));
      return;
    }
    const up = this.upstreams[i]!;
    const attemptDeadline = now + Math.min(this.attemptTimeoutMs, deadline - now);
    const next = (err: Error): void => {
      const why = `${up.host}#${up.port}: ${err.message}`;
      problems.push(why);
      this.log.debug(`forwarder: ${why}`);
      this.attempt(i + 1, packet, query, q, deadline, problems, resolve, reject);
    };
    const onDone: Done = (err, reply) => {
      if (err !== null) return next(err);
      if ((reply![2]! & 0x02) === 0) return resolve(reply!);
      // Truncated: the same question over TCP (RFC 7766 §5).
      this.exchangeTcp(up, withId(packet, ids.next()), query, q, attemptDeadline).then(resolve, next);
    };
    const ex = new UdpExchange(
      up,
      this.families[i]!,
      withId(packet, ids.next()),
      query,
      q,
      attemptDeadline,
      onDone,
      this.log,
      (gone) => {
        this.exchanges.delete(gone);
        // Nothing in flight: no timer either (an idle jitsu wakes up for nothing).
        if (this.exchanges.size === 0 && this.sweeper !== null) {
          clearInterval(this.sweeper);
          this.sweeper = null;
        }
      },
    );
    this.exchanges.add(ex);
    this.sweeper ??= setInterval(() => {
      const now = Date.now();
      for (const x of [...this.exchanges]) x.sweep(now);
    }, SWEEP_MS).unref();
  }

  private exchangeTcp(
    up: Upstream,
    packet: Buffer,
    query: Uint8Array,
    q: QueryInfo,
    deadline: number,
  ): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: up.host, port: up.port });
      const handle = { close: () => finish(new ForwardError("forwarder closed")) };
      let done = false;
      let buffered = Buffer.alloc(0);
      const finish = (err: Error | null, reply?: Buffer): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.open.delete(handle);
        sock.destroy();
        if (err !== null) reject(err);
        else resolve(reply!);
      };
      const timer = setTimeout(
        () => finish(new ForwardError("timed out over TCP")),
        Math.max(1, deadline - Date.now()),
      );
      this.open.add(handle);
      sock.on("error", (err) => finish(err));
      sock.on("close", () => finish(new ForwardError("TCP connection closed before an answer")));
      sock.on("connect", () => {
        const framed = Buffer.alloc(2 + packet.length);
        framed.writeUInt16BE(packet.length, 0);
        packet.copy(framed, 2);
        sock.write(framed);
      });
      sock.on("data", (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 2) {
          const len = buffered.readUInt16BE(0);
          if (buffered.length < 2 + len) return;
          const msg = Buffer.from(buffered.subarray(2, 2 + len));
          buffered = buffered.subarray(2 + len);
          if (replyMatches(msg, packet, query, q)) {
            finish(null, msg);
            return;
          }
          this.log.debug(
            `forwarder: ignored a TCP reply from ${up.host}#${up.port} that does not match the query`,
          );
        }
      });
    });
  }

  /** Abandons every upstream exchange in flight (their queries get SERVFAIL). */
  close(): void {
    this.closed = true;
    for (const h of [...this.open]) h.close();
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const ex of [...this.exchanges]) ex.finish(new ForwardError("forwarder closed"));
  }
}

/** A copy of `packet` with ID `id` (each attempt and each socket gets its own bytes). */
function withId(packet: Buffer, id: number): Buffer {
  const out = Buffer.allocUnsafe(packet.length);
  packet.copy(out);
  out[0] = id >> 8;
  out[1] = id & 0xff;
  return out;
}

/**
 * The query we send upstream: fresh ID, opcode QUERY, RD/CD/AD copied from
 * the client, the question byte for byte, and the client's OPT (if any) with
 * our UDP size, its DO bit and its options except COOKIE.
 */
export function upstreamQuery(query: Uint8Array, q: QueryInfo, id: number): Buffer {
  const qEnd = q.questionEnd;
  if (!q.hasOpt) {
    const out = Buffer.allocUnsafe(qEnd);
    out[0] = id >> 8;
    out[1] = id & 0xff;
    out[2] = q.rd ? 0x01 : 0;
    out[3] = query[3]! & 0x30; // AD, CD
    out[4] = 0;
    out[5] = 1;
    out.fill(0, 6, HEADER_LEN);
    for (let i = HEADER_LEN; i < qEnd; i++) out[i] = query[i]!;
    return out;
  }
  const options: Buffer[] = [];
  if (q.hasOpt) {
    let o = q.optRdata;
    const end = o + q.optRdlen;
    while (o + 4 <= end) {
      const code = (query[o]! << 8) | query[o + 1]!;
      const len = (query[o + 2]! << 8) | query[o + 3]!;
      if (code !== OPTION_COOKIE) options.push(Buffer.from(query.subarray(o, o + 4 + len)));
      o += 4 + len;
    }
  }
  const optData = Buffer.concat(options);
  const out = Buffer.alloc(qEnd + (q.hasOpt ? OPT_LEN + optData.length : 0));
  out.writeUInt16BE(id, 0);
  out[2] = q.rd ? 0x01 : 0;
  out[3] = query[3]! & 0x30; // AD, CD
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(q.hasOpt ? 1 : 0, 10);
  out.set(query.subarray(HEADER_LEN, qEnd), HEADER_LEN);
  if (q.hasOpt) {
    let o = qEnd;
    out[o] = 0;
    out.writeUInt16BE(QTYPE.OPT, o + 1);
    out.writeUInt16BE(OUR_UDP_SIZE, o + 3);
    out[o + 5] = 0;
    out[o + 6] = 0;
    out[o + 7] = q.dnssecOk ? 0x80 : 0;
    out[o + 8] = 0;
    out.writeUInt16BE(optData.length, o + 9);
    o += OPT_LEN;
    optData.copy(out, o);
  }
  return out;
}

/**
 * Whether `reply` answers `sent`: a response, same ID, one question with the
 * same name (case-insensitive), type and class as the client's.
 */
export function replyMatches(reply: Uint8Array, sent: Uint8Array, query: Uint8Array, q: QueryInfo): boolean {
  if (reply.length < HEADER_LEN) return false;
  if ((reply[2]! & 0x80) === 0) return false;
  if (reply[0] !== sent[0] || reply[1] !== sent[1]) return false;
  if (((reply[4]! << 8) | reply[5]!) !== 1) return false;
  const nameLen = q.nameEnd - HEADER_LEN;
  const rEnd = HEADER_LEN + nameLen;
  if (rEnd + 4 > reply.length) return false;
  if (!sameName(reply, HEADER_LEN, rEnd, query, HEADER_LEN, q.nameEnd)) return false;
  for (let i = 0; i < 4; i++) if (reply[rEnd + i] !== query[q.nameEnd + i]) return false;
  return true;
}
