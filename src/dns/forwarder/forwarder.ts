/**
 * Forwarder: sends a query we do not answer to the upstream resolvers and
 * relays the answer.
 *
 * Defences against spoofing (RFC 5452 §9, README.md): each upstream query
 * goes out with a fresh random ID on a socket drawn at random from the
 * upstream's pool (socket-pool.ts: at least 64 sockets on random ports,
 * connected to the upstream, each replaced after a bounded number of queries
 * or seconds). A reply counts only if it comes from the upstream's address
 * and port (the socket is connected), on the socket the query went out on,
 * with its ID and question (name case-insensitively, or exactly with DNS
 * 0x20, type, class). Anything else is ignored and counted (`onMismatched`),
 * and we keep waiting. Identical queries in flight at the same time (same
 * question bytes, flags and EDNS) share one upstream query (RFC 5452 §5:
 * several outstanding queries for one question would let a spoofer play the
 * birthday paradox); each client gets the reply with its own ID. A truncated
 * reply (TC) is retried over TCP (RFC 7766 §5). An upstream that errors or
 * stays silent past the attempt timeout is failed over to the next; when the
 * overall timeout passes, `forward` rejects and the server answers SERVFAIL.
 */
import net from "node:net";
import type { Logger } from "../../log/index.js";
import { HEADER_LEN, OPT_LEN, OUR_UDP_SIZE, QTYPE, sameName, type QueryInfo } from "../wire.js";
import { RandomBytes } from "./random-bytes.js";
import type { Upstream } from "./resolv-conf.js";
import { UdpSocketPool, type PoolQuery, type Ticket } from "./socket-pool.js";
import { nativeUdp, type NativeUdp } from "../native-udp.js";

/** The defaults of the pool and 0x20 options (the CLI's --forward-* options show them in --help). */
export const FORWARD_DEFAULTS: ForwardingOptions = {
  /** UDP sockets per upstream (dnsmasq's default, RFC 5452 §9.2). */
  sockets: 64,
  /** Queries one socket sends before it is replaced by one on a new random port. */
  socketQueries: 100,
  /** Seconds after which a socket sends no more queries and is replaced. */
  socketSeconds: 30,
  /** DNS 0x20: random case in the upstream question, checked in the reply. */
  caseRandomization: false,
};

/** The socket pool and 0x20 settings (the CLI's --forward-* options; a --workers worker gets them in its init). */
export interface ForwardingOptions {
  /** UDP sockets per upstream. */
  readonly sockets: number;
  /** Queries per socket before it is replaced. */
  readonly socketQueries: number;
  /** Seconds a socket serves before it is replaced. */
  readonly socketSeconds: number;
  /** DNS 0x20. */
  readonly caseRandomization: boolean;
}

export interface ForwarderOptions extends Partial<ForwardingOptions> {
  upstreams: Upstream[];
  /** Overall time for one forwarded query, all upstreams included (default 5000 ms). */
  timeoutMs?: number;
  /** Time given to one upstream before failing over to the next (default 2000 ms). */
  attemptTimeoutMs?: number;
  /**
   * Upstream queries in flight at once; beyond it a query that would need a
   * new one gets SERVFAIL at once (default 1000). Client queries joining one in
   * flight send nothing: up to 10 times as many wait.
   */
  maxInFlight?: number;
  log: Logger;
  /** UDP sockets through the batched addon (../native-udp.ts) when it is built (default), or dgram ("dgram"). */
  udpIo?: "native" | "dgram";
}

/** EDNS COOKIE (RFC 7873) is between the client and us; it is not passed upstream. */
const OPTION_COOKIE = 10;

/** How often waiting queries are checked against their deadlines (one timer, not one per query). */
const SWEEP_MS = 25;
/** How often the pools' idle sockets are checked for age (on the sweep's ticks). */
const AGE_SWEEP_MS = 1000;

/** A client query that joined an identical one in flight: its ID, and its promise's ends. */
interface Waiter {
  readonly id0: number;
  readonly id1: number;
  readonly resolve: (reply: Buffer) => void;
  readonly reject: (err: Error) => void;
}

/** What an Exchange needs from its Forwarder. */
interface ExchangeOwner {
  readonly upstreams: readonly Upstream[];
  readonly closed: boolean;
  readonly caseRandomization: boolean;
  readonly random: RandomBytes;
  readonly attemptTimeoutMs: number;
  readonly log: Logger;
  pool(upstream: number): UdpSocketPool;
  /** A UDP attempt begins (deadline sweeps) or is over. */
  waiting(ex: Exchange): void;
  waited(ex: Exchange): void;
  caseLost(upstream: number): void;
  exchangeTcp(
    up: Upstream,
    packet: Buffer,
    query: Uint8Array,
    q: QueryInfo,
    deadline: number,
  ): Promise<Buffer>;
  /** The exchange is over: its answer, or why there is none. */
  settle(ex: Exchange, err: Error | null, reply?: Buffer): void;
}

/**
 * One upstream query and the client queries waiting for it: tries the
 * upstreams in order, each over UDP on a pool socket (and TCP if the reply is
 * truncated), until one answers or the deadline passes. One object per
 * upstream query, with no closures: it is also the pool's PoolQuery for the
 * UDP attempt in flight (one at a time).
 */
class Exchange implements PoolQuery {
  /** Client queries that joined this one, or null while none has. */
  waiters: Waiter[] | null = null;
  /** The upstream being tried (index), its UDP attempt's socket and deadline. */
  private upstream = -1;
  private ticket: Ticket | null = null;
  private sent: Buffer | null = null;
  attemptDeadline = 0;
  private problems: string[] | null = null;

  constructor(
    private readonly owner: ExchangeOwner,
    readonly key: string,
    /** The upstream query with ID 0 (the first attempt sends it, the others copies). */
    private readonly packet: Buffer,
    readonly question: number,
    /** The client's query (its ID goes back into the reply). */
    readonly query: Uint8Array,
    private readonly q: QueryInfo,
    private readonly deadline: number,
    readonly resolve: (reply: Buffer) => void,
    readonly reject: (err: Error) => void,
  ) {}

  /** Tries the next upstream, after `err` from this one (null: the first). */
  next(err: Error | null): void {
    const owner = this.owner;
    if (err !== null) {
      const up = owner.upstreams[this.upstream]!;
      const why = `${up.host}#${up.port}: ${err.message}`;
      (this.problems ??= []).push(why);
      owner.log.debug(`forwarder: ${why}`);
    }
    const i = ++this.upstream;
    const now = Date.now();
    if (i >= owner.upstreams.length || now >= this.deadline || owner.closed) {
      const problems = this.problems?.join("; ") ?? "timed out";
      owner.settle(this, new ForwardError(`no upstream answered (${problems})`));
      return;
    }
    this.attemptDeadline = now + Math.min(owner.attemptTimeoutMs, this.deadline - now);
    // The pool writes its ID into the bytes sent, 0x20 its case: the first attempt sends
    // `packet` itself, a failover a copy (the first may still sit in a socket's queue).
    const sent = i === 0 ? this.packet : withId(this.packet, 0);
    if (owner.caseRandomization) randomizeCase(sent, this.q.nameEnd, owner.random);
    this.sent = sent;
    owner.waiting(this);
    this.ticket = owner.pool(i).send(sent, this);
  }

  reply(msg: Buffer): boolean {
    const exact = this.owner.caseRandomization;
    if (!replyMatches(msg, this.sent!, this.query, this.q, exact)) {
      if (exact && replyMatches(msg, this.sent!, this.query, this.q, false))
        this.owner.caseLost(this.upstream);
      return false;
    }
    this.endUdp();
    if ((msg[2]! & 0x02) === 0) {
      this.owner.settle(this, null, msg);
      return true;
    }
    // Truncated: the same question over TCP (RFC 7766 §5), matched whatever its case.
    const up = this.owner.upstreams[this.upstream]!;
    this.owner
      .exchangeTcp(up, withId(this.packet, this.owner.random.u16()), this.query, this.q, this.attemptDeadline)
      .then(
        (reply) => this.owner.settle(this, null, reply),
        (err: Error) => this.next(err),
      );
    return true;
  }

  fail(err: Error): void {
    if (this.ticket === null) return;
    this.endUdp();
    this.next(err instanceof ForwardError ? err : new ForwardError(err.message));
  }

  /** Fails the UDP attempt in flight if its deadline has passed. */
  sweep(now: number): void {
    if (this.attemptDeadline <= now) this.fail(new ForwardError("timed out"));
  }

  private endUdp(): void {
    if (this.ticket === null) return;
    this.owner.pool(this.upstream).release(this.ticket, this);
    this.ticket = null;
    this.owner.waited(this);
  }
}

export class ForwardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ForwardError";
  }
}

export class Forwarder implements ExchangeOwner {
  readonly upstreams: readonly Upstream[];
  private readonly timeoutMs: number;
  readonly attemptTimeoutMs: number;
  readonly log: Logger;
  private readonly open = new Set<{ close(): void }>();
  /** Per upstream (by index), its socket type, and its socket pool once a query went to it. */
  private readonly families: ("udp4" | "udp6")[];
  private readonly pools: (UdpSocketPool | null)[];
  private readonly poolOptions: { size: number; socketQueries: number; socketMs: number };
  readonly caseRandomization: boolean;
  readonly random = new RandomBytes();
  private readonly io: NativeUdp | null;
  /** Exchanges with a UDP attempt in flight (checked against its deadline by the sweep). */
  private readonly attempts = new Set<Exchange>();
  private sweeper: ReturnType<typeof setInterval> | null = null;
  private lastAgeSweep = 0;
  closed = false;
  private readonly maxInFlight: number;
  /** Upstream queries in flight (distinct questions), and client queries that joined one of them. */
  private inFlight = 0;
  private joinedCount = 0;
  /** Upstream queries in flight by their bytes after the ID. */
  private readonly asked = new Map<string, Exchange>();
  /** Upstreams (by index) already warned about for not keeping the 0x20 case. */
  private readonly caseWarned = new Set<number>();
  /** Called for each client query that joins an identical upstream query in flight (a counter). */
  onCoalesced: (() => void) | undefined = undefined;
  /** Called for each datagram on a pool socket that answers no query in flight (a counter). */
  onMismatched: (() => void) | undefined = undefined;

  constructor(opts: ForwarderOptions) {
    this.upstreams = opts.upstreams.map((u) => ({ host: u.host, port: u.port }));
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 2000;
    this.maxInFlight = opts.maxInFlight ?? 1000;
    this.log = opts.log;
    this.families = this.upstreams.map((u) => (net.isIPv6(u.host.replace(/%.*$/, "")) ? "udp6" : "udp4"));
    this.pools = this.upstreams.map(() => null);
    this.poolOptions = {
      size: opts.sockets ?? FORWARD_DEFAULTS.sockets,
      socketQueries: opts.socketQueries ?? FORWARD_DEFAULTS.socketQueries,
      socketMs: (opts.socketSeconds ?? FORWARD_DEFAULTS.socketSeconds) * 1000,
    };
    this.caseRandomization = opts.caseRandomization ?? FORWARD_DEFAULTS.caseRandomization;
    this.io = opts.udpIo === "dgram" ? null : nativeUdp();
  }

  /** How the pools' sockets are read and written: the batched addon, or dgram. */
  get udpIo(): "native" | "dgram" {
    return this.io === null ? "dgram" : "native";
  }

  /** The local ports of upstream `i`'s pool sockets now (empty before its first query). */
  poolPorts(i: number): number[] {
    return this.pools[i]?.ports() ?? [];
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
        (joined.waiters ??= []).push({ id0: query[0]!, id1: query[1]!, resolve, reject }),
      );
    }
    if (this.inFlight >= this.maxInFlight) {
      return Promise.reject(
        new ForwardError(`${this.inFlight} forwarded queries already in flight (the limit)`),
      );
    }
    this.inFlight++;
    // The question whatever its case (type and class too): no socket waits twice for one.
    const question = (q.nameHash ^ Math.imul(q.qtype, 0x9e3779b1) ^ (q.qclass << 7)) >>> 0;
    return new Promise((resolve, reject) => {
      const ex = new Exchange(
        this,
        key,
        packet,
        question,
        query,
        q,
        Date.now() + this.timeoutMs,
        resolve,
        reject,
      );
      this.asked.set(key, ex);
      ex.next(null);
    });
  }

  settle(ex: Exchange, err: Error | null, reply?: Buffer): void {
    if (this.asked.get(ex.key) !== ex) return;
    this.asked.delete(ex.key);
    this.inFlight--;
    const waiters = ex.waiters;
    if (waiters !== null) this.joinedCount -= waiters.length;
    if (err !== null) {
      if (waiters !== null) for (const w of waiters) w.reject(err);
      ex.reject(err);
      return;
    }
    // Each joined client gets its own copy (sends are asynchronous), with its ID.
    if (waiters !== null) {
      for (const w of waiters) {
        const copy = Buffer.from(reply!);
        copy[0] = w.id0;
        copy[1] = w.id1;
        w.resolve(copy);
      }
    }
    reply![0] = ex.query[0]!;
    reply![1] = ex.query[1]!;
    ex.resolve(reply!);
  }

  pool(i: number): UdpSocketPool {
    return (this.pools[i] ??= new UdpSocketPool(
      this.upstreams[i]!,
      this.families[i]!,
      this.poolOptions,
      this.random,
      () => this.onMismatched?.(),
      this.log,
      this.io,
    ));
  }

  waiting(ex: Exchange): void {
    this.attempts.add(ex);
    // Ref'd while queries wait (the pool's sockets are not): a process with a query in flight stays up.
    this.sweeper ??= setInterval(() => this.sweep(), SWEEP_MS);
  }

  waited(ex: Exchange): void {
    this.attempts.delete(ex);
    // Nothing in flight: no timer either (an idle jitsu wakes up for nothing).
    if (this.attempts.size === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const x of [...this.attempts]) x.sweep(now);
    if (now - this.lastAgeSweep >= AGE_SWEEP_MS) {
      this.lastAgeSweep = now;
      for (const p of this.pools) p?.sweep(now);
    }
  }

  /** A reply from upstream `i` right but for the case of its question (0x20): warned once per upstream. */
  caseLost(i: number): void {
    if (this.caseWarned.has(i)) return;
    this.caseWarned.add(i);
    const up = this.upstreams[i]!;
    this.log.warn(
      `forwarder: ${up.host}#${up.port} answered with the question in another case than asked (--forward-random-case): such replies are ignored (counted as mismatched), so queries to it time out; turn --forward-random-case off if this upstream does not keep the case`,
    );
  }

  exchangeTcp(
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
    for (const ex of [...this.attempts]) ex.fail(new ForwardError("forwarder closed"));
    for (const p of this.pools) p?.close();
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
 * same name (case-insensitive; with `exactCase`, the very bytes of `sent`, as
 * DNS 0x20 checks), type and class as the client's.
 */
export function replyMatches(
  reply: Uint8Array,
  sent: Uint8Array,
  query: Uint8Array,
  q: QueryInfo,
  exactCase = false,
): boolean {
  if (reply.length < HEADER_LEN) return false;
  if ((reply[2]! & 0x80) === 0) return false;
  if (reply[0] !== sent[0] || reply[1] !== sent[1]) return false;
  if (((reply[4]! << 8) | reply[5]!) !== 1) return false;
  const nameLen = q.nameEnd - HEADER_LEN;
  const rEnd = HEADER_LEN + nameLen;
  if (rEnd + 4 > reply.length) return false;
  if (exactCase) {
    for (let i = HEADER_LEN; i < rEnd; i++) if (reply[i] !== sent[i]) return false;
  } else if (!sameName(reply, HEADER_LEN, rEnd, query, HEADER_LEN, q.nameEnd)) return false;
  for (let i = 0; i < 4; i++) if (reply[rEnd + i] !== query[q.nameEnd + i]) return false;
  return true;
}

/**
 * DNS 0x20 (draft-vixie-dnsext-dns0x20): each ASCII letter of the question
 * name in `packet` (an uncompressed name from HEADER_LEN to `nameEnd`) gets a
 * random case, so a forged reply must also guess one bit per letter.
 */
export function randomizeCase(packet: Buffer, nameEnd: number, random: RandomBytes): void {
  let bits = 0;
  let left = 0;
  let o = HEADER_LEN;
  while (o < nameEnd) {
    const len = packet[o]!;
    if (len === 0 || (len & 0xc0) !== 0) return;
    for (let i = o + 1; i <= o + len && i < nameEnd; i++) {
      const c = packet[i]! | 0x20;
      if (c < 0x61 || c > 0x7a) continue;
      if (left === 0) {
        bits = random.byte();
        left = 8;
      }
      packet[i] = bits & 1 ? c & ~0x20 : c;
      bits >>= 1;
      left--;
    }
    o += len + 1;
  }
}
