/**
 * A small bounded DNS client for the measurements dnsperf cannot make: one
 * timed query at a time (summon), a burst of concurrent queries (storm), and
 * "is the server answering yet" polls. Loopback only; every wait is bounded.
 */
import { createSocket, type Socket } from "node:dgram";
import packet from "dns-packet";

export interface Answer {
  rcode: string;
  addresses: string[];
  /** Query to answer, in ms (monotonic clock). */
  ms: number;
}

let nextId = 1;
function id(): number {
  nextId = (nextId % 65535) + 1;
  return nextId;
}

export function encodeQuery(name: string, type: "A" | "SOA" = "A", queryId = id()): Buffer {
  return packet.encode({
    type: "query",
    id: queryId,
    flags: packet.RECURSION_DESIRED,
    questions: [{ type, class: "IN", name }],
  });
}

function decode(msg: Buffer): { id: number; rcode: string; addresses: string[] } {
  const res = packet.decode(msg);
  const addresses: string[] = [];
  for (const a of res.answers ?? []) if (a.type === "A" || a.type === "AAAA") addresses.push(String(a.data));
  return { id: res.id ?? 0, rcode: (res as { rcode?: string }).rcode ?? "NOERROR", addresses };
}

/** One UDP query; resolves null on timeout. */
export function queryOnce(
  port: number,
  name: string,
  type: "A" | "SOA" = "A",
  timeoutMs = 5_000,
): Promise<Answer | null> {
  return new Promise((resolve) => {
    const sock = createSocket("udp4");
    const q = encodeQuery(name, type);
    const qid = q.readUInt16BE(0);
    let started = 0;
    const timer = setTimeout(() => finish(null), timeoutMs);
    const finish = (a: Answer | null): void => {
      clearTimeout(timer);
      sock.close();
      resolve(a);
    };
    sock.on("error", () => finish(null));
    sock.on("message", (msg) => {
      const ms = Number(process.hrtime.bigint() - BigInt(started)) / 1e6;
      try {
        const r = decode(msg);
        if (r.id !== qid) return;
        finish({ rcode: r.rcode, addresses: r.addresses, ms });
      } catch {
        finish(null);
      }
    });
    // Connected, so a port nobody listens on yet fails at once (ECONNREFUSED from the ICMP
    // port unreachable) instead of after the timeout: waitForDns's start-up times are then
    // accurate to its 5 ms retry, not to its 200 ms timeout.
    sock.connect(port, "127.0.0.1", () => {
      started = Number(process.hrtime.bigint());
      sock.send(q);
    });
  });
}

/** Polls until the server answers `name` (any rcode but a timeout), or throws after `timeoutMs`. */
export async function waitForDns(
  port: number,
  name: string,
  type: "A" | "SOA",
  timeoutMs: number,
): Promise<Answer> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const a = await queryOnce(port, name, type, 200);
    if (a !== null) return a;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`bench: nothing answered ${name} ${type} on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

export interface StormResult {
  sent: number;
  answered: number;
  /** Answered with the VM's address (NOERROR with an A record). */
  ok: number;
  /** Queries re-sent because no answer came within `resendMs` (UDP loss). */
  resent: number;
  /** From the first send to the last answer, ms. */
  allAnsweredMs: number;
  /** Per-query latency, ms (from its first send). */
  latenciesMs: number[];
}

/**
 * `count` concurrent queries for one name from one socket, each with its own
 * ID; a query unanswered after `resendMs` is re-sent (as a stub resolver
 * would), at most `maxTries` times. Bounded by `timeoutMs`.
 */
export function storm(
  port: number,
  name: string,
  count: number,
  resendMs = 1_000,
  timeoutMs = 30_000,
): Promise<StormResult> {
  const maxTries = 5;
  return new Promise((resolve, reject) => {
    const sock: Socket = createSocket({ type: "udp4", recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
    const queries = Array.from({ length: count }, (_, i) => encodeQuery(name, "A", i + 1));
    const sentAt = new Array<number>(count).fill(0);
    const answeredAt = new Array<number>(count).fill(0);
    const lastSent = new Array<number>(count).fill(0);
    const tries = new Array<number>(count).fill(0);
    let answered = 0;
    let ok = 0;
    let resent = 0;
    let t0 = 0;
    const now = (): number => Number(process.hrtime.bigint()) / 1e6;
    const finish = (): void => {
      clearInterval(resender);
      clearTimeout(timer);
      sock.close();
      const latenciesMs = answeredAt.flatMap((t, i) => (t > 0 ? [t - sentAt[i]!] : []));
      resolve({
        sent: count,
        answered,
        ok,
        resent,
        allAnsweredMs: Math.max(...answeredAt) - t0,
        latenciesMs,
      });
    };
    const timer = setTimeout(finish, timeoutMs);
    const resender = setInterval(() => {
      const t = now();
      for (let i = 0; i < count; i++) {
        if (answeredAt[i] === 0 && tries[i]! < maxTries && t - lastSent[i]! >= resendMs) {
          tries[i]!++;
          lastSent[i] = t;
          resent++;
          sock.send(queries[i]!);
        }
      }
    }, 50);
    sock.on("error", (err) => {
      clearInterval(resender);
      clearTimeout(timer);
      sock.close();
      reject(err);
    });
    // Only the header is read (ID, rcode, answer count), and the socket is connected (no
    // address lookup per send): the client on the load CPU must keep up with a thousand
    // answers arriving at once, or its own backlog is what "all in" measures.
    sock.on("message", (msg) => {
      const t = now();
      if (msg.length < 12 || (msg[2]! & 0x80) === 0) return;
      const i = msg.readUInt16BE(0) - 1;
      if (i < 0 || i >= count || answeredAt[i] !== 0) return;
      answeredAt[i] = t;
      answered++;
      // NOERROR with at least one answer record: the storm's name has only its A record.
      if ((msg[3]! & 0x0f) === 0 && msg.readUInt16BE(6) > 0) ok++;
      if (answered === count) finish();
    });
    sock.connect(port, "127.0.0.1", () => {
      t0 = now();
      for (let i = 0; i < count; i++) {
        sentAt[i] = lastSent[i] = now();
        tries[i] = 1;
        sock.send(queries[i]!);
      }
    });
  });
}
