/**
 * Forwarder: sends a query we do not answer to the upstream resolvers and
 * relays the answer.
 *
 * Defences against spoofing (RFC 5452 §9): every upstream query gets a fresh
 * random ID and its own UDP socket bound to port 0 (a fresh random source
 * port); a reply counts only if it comes from the upstream's address and port
 * and matches the ID and the question (name case-insensitively, type, class).
 * Anything else is ignored and we keep waiting. A truncated reply (TC) is
 * retried over TCP (RFC 7766 §5). An upstream that errors or stays silent
 * past the attempt timeout is failed over to the next; when the overall
 * timeout passes, `forward` rejects and the server answers SERVFAIL.
 */
import { randomInt } from "node:crypto";
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
  /** Forwarded queries in flight at once (each holds a socket); beyond it, SERVFAIL at once (default 1000). */
  maxInFlight?: number;
  log: Logger;
}

/** EDNS COOKIE (RFC 7873) is between the client and us; it is not passed upstream. */
const OPTION_COOKIE = 10;

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
  private closed = false;
  private readonly maxInFlight: number;
  private inFlight = 0;

  constructor(opts: ForwarderOptions) {
    this.upstreams = opts.upstreams.map((u) => ({ host: u.host, port: u.port }));
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 2000;
    this.maxInFlight = opts.maxInFlight ?? 1000;
    this.log = opts.log;
  }

  /**
   * Forwards the query `query` (decoded into `q`) and resolves with the
   * upstream's reply bytes, the client's ID restored. Rejects with a
   * ForwardError when no upstream answered in time.
   */
  async forward(query: Uint8Array, q: QueryInfo): Promise<Buffer> {
    if (this.closed) throw new ForwardError("forwarder is closed");
    if (this.upstreams.length === 0) throw new ForwardError("no upstream resolver is configured");
    if (this.inFlight >= this.maxInFlight) {
      throw new ForwardError(`${this.inFlight} forwarded queries already in flight (the limit)`);
    }
    this.inFlight++;
    try {
      return await this.tryUpstreams(query, q);
    } finally {
      this.inFlight--;
    }
  }

  private async tryUpstreams(query: Uint8Array, q: QueryInfo): Promise<Buffer> {
    const deadline = Date.now() + this.timeoutMs;
    const problems: string[] = [];
    for (const up of this.upstreams) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      const attemptDeadline = Date.now() + Math.min(this.attemptTimeoutMs, remaining);
      try {
        let id = randomInt(0, 65536);
        let reply = await this.exchangeUdp(up, upstreamQuery(query, q, id), query, q, attemptDeadline);
        if ((reply[2]! & 0x02) !== 0) {
          id = randomInt(0, 65536);
          reply = await this.exchangeTcp(up, upstreamQuery(query, q, id), query, q, attemptDeadline);
        }
        reply[0] = query[0]!;
        reply[1] = query[1]!;
        return reply;
      } catch (err) {
        const why = `${up.host}#${up.port}: ${(err as Error).message}`;
        problems.push(why);
        this.log.debug(`forwarder: ${why}`);
        if (this.closed) break;
      }
    }
    throw new ForwardError(`no upstream answered (${problems.join("; ") || "timed out"})`);
  }

  private exchangeUdp(
    up: Upstream,
    packet: Buffer,
    query: Uint8Array,
    q: QueryInfo,
    deadline: number,
  ): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const family = net.isIPv6(up.host.replace(/%.*$/, "")) ? "udp6" : "udp4";
      const sock = dgram.createSocket(family);
      const expectedHost = canonicalHost(up.host);
      const handle = { close: () => finish(new ForwardError("forwarder closed")) };
      let done = false;
      const finish = (err: Error | null, reply?: Buffer): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.open.delete(handle);
        try {
          sock.close();
        } catch {
          // already closed
        }
        if (err !== null) reject(err);
        else resolve(reply!);
      };
      const timer = setTimeout(
        () => finish(new ForwardError("timed out")),
        Math.max(1, deadline - Date.now()),
      );
      this.open.add(handle);
      sock.on("error", (err) => finish(err));
      sock.on("message", (msg, rinfo) => {
        if (canonicalHost(rinfo.address) !== expectedHost || rinfo.port !== up.port) return;
        if (!replyMatches(msg, packet, query, q)) {
          this.log.debug(
            `forwarder: ignored a reply from ${up.host}#${up.port} that does not match the query`,
          );
          return;
        }
        finish(null, msg);
      });
      // A connected socket (bound to port 0 first: a fresh random port) also gets
      // ICMP port-unreachable as an error, so a dead upstream fails over at once.
      sock.bind(0, () => {
        if (done) return;
        sock.connect(up.port, up.host, () => {
          if (done) return;
          sock.send(packet, (err) => {
            if (err) finish(err);
          });
        });
      });
    });
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
  }
}

function canonicalHost(host: string): string {
  const h = host.replace(/%.*$/, "").toLowerCase();
  // dgram reports IPv4-mapped senders on dual-stack sockets as ::ffff:a.b.c.d.
  return h.startsWith("::ffff:") && net.isIPv4(h.slice(7)) ? h.slice(7) : h;
}

/**
 * The query we send upstream: fresh ID, opcode QUERY, RD/CD/AD copied from
 * the client, the question byte for byte, and the client's OPT (if any) with
 * our UDP size, its DO bit and its options except COOKIE.
 */
export function upstreamQuery(query: Uint8Array, q: QueryInfo, id: number): Buffer {
  const qEnd = q.questionEnd;
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
