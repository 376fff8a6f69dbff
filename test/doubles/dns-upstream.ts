/**
 * A small upstream DNS server for forwarding tests (UDP + TCP on 127.0.0.1),
 * built on dns-packet. Its behaviour is switched per test:
 *  - "answer": answers A queries with `address` (and echoes the question);
 *  - "truncate": over UDP answers with TC set and no records; over TCP answers normally;
 *  - "wrong-id-first": first sends a reply with a wrong ID, then one with a
 *    wrong question, then one from another source port, then the right one;
 *  - "spoof": a spoofing upstream: for each UDP query, first `spoof.wrongIds`
 *    forged replies with other IDs and one with the right ID and another
 *    question, all from its own address and port to the query's source port,
 *    and `spoof.wrongPorts` with everything right but sent from another port;
 *    then, `spoof.delayMs` later, the true answer. Forged replies carry
 *    203.0.113.x addresses; `forged` counts what was sent;
 *  - "lowercase": answers with the question name lower-cased (an upstream
 *    that does not keep the case, as DNS 0x20 must notice);
 *  - "silent": never answers.
 * A query it cannot decode (or without a question) is answered FORMERR with
 * the question echoed, as a real server would (unless "silent").
 */
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket from "dns-packet";

export type UpstreamMode = "answer" | "truncate" | "wrong-id-first" | "spoof" | "lowercase" | "silent";

export interface TestUpstream {
  readonly port: number;
  mode: UpstreamMode;
  address: string;
  /** Leave the OPT out of replies even when the query had one (an EDNS-unaware upstream). */
  omitOpt: boolean;
  /** "spoof": forged replies per query (wrong IDs, wrong source port) and the delay of the true answer. */
  spoof: { wrongIds: number; wrongPorts: number; delayMs: number };
  /** Forged replies sent in "spoof" mode, by kind. */
  readonly forged: { wrongId: number; wrongQuestion: number; wrongPort: number };
  /** Every query received, decoded, with the transport (unless started with `record: false`). */
  readonly received: { transport: "udp" | "tcp"; packet: dnsPacket.Packet; raw: Buffer; srcPort: number }[];
  close(): Promise<void>;
}

function answerFor(
  query: dnsPacket.Packet,
  address: string,
  opts: { tc?: boolean; id?: number; name?: string; omitOpt?: boolean; raw?: Buffer },
): Buffer {
  const q = query.questions![0]!;
  const name = opts.name ?? q.name;
  // With the raw query (and no name of our own), its question is echoed byte for byte, as a
  // real server does: dns-packet's decode and encode do not keep every name as it was (a '.'
  // or a byte above 0x7f inside a label). A placeholder question is encoded, then replaced,
  // and the A record's owner is a pointer to the question (RFC 1035 §4.1.4).
  const rawEnd = opts.raw === undefined || opts.name !== undefined ? -1 : questionEnd(opts.raw);
  const answers: dnsPacket.Answer[] =
    opts.tc === true ? [] : q.type === "A" ? [{ type: "A", name, ttl: 30, class: "IN", data: address }] : [];
  const reply = dnsPacket.encode({
    type: "response",
    id: opts.id ?? query.id!,
    flags:
      (opts.tc === true ? dnsPacket.TRUNCATED_RESPONSE : 0) |
      dnsPacket.RECURSION_AVAILABLE |
      (query.flags! & 0x100),
    questions: [{ ...q, name: rawEnd < 0 ? name : "q" }],
    answers: rawEnd < 0 ? answers : [],
    additionals:
      opts.omitOpt !== true && query.additionals?.some((a) => a.type === "OPT")
        ? [
            {
              type: "OPT",
              name: ".",
              udpPayloadSize: 4096,
              flags: 0,
              options: [],
            } as unknown as dnsPacket.Answer,
          ]
        : [],
  });
  if (rawEnd < 0) return reply;
  const header = Buffer.from(reply.subarray(0, 12));
  header.writeUInt16BE(answers.length, 6);
  const rrs = answers.map(() => {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(1, 2); // A
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(30, 6);
    rr.writeUInt16BE(4, 10);
    Buffer.from(address.split(".").map(Number)).copy(rr, 12);
    return rr;
  });
  const placeholderEnd = 12 + 3 + 4; // "q": 01 71 00, type, class
  return Buffer.concat([header, opts.raw!.subarray(12, rawEnd), ...rrs, reply.subarray(placeholderEnd)]);
}

/** The offset just after the first question (uncompressed name, type, class), or -1. */
function questionEnd(msg: Buffer): number {
  let o = 12;
  while (o < msg.length && msg[o]! !== 0) {
    if ((msg[o]! & 0xc0) !== 0) return -1;
    o += msg[o]! + 1;
  }
  return o + 5 <= msg.length ? o + 5 : -1;
}

/** The query decoded, or null if dns-packet cannot read it or it has no question. */
function decodeQuery(raw: Buffer): dnsPacket.Packet | null {
  try {
    const packet = dnsPacket.decode(raw);
    return (packet.questions?.length ?? 0) > 0 ? packet : null;
  } catch {
    return null;
  }
}

/** FORMERR for an undecodable query: its header and (if it can be found) its first question, echoed. */
function formerrFor(raw: Buffer): Buffer {
  const end = raw.readUInt16BE(4) > 0 ? questionEnd(raw) : -1;
  const qEnd = end < 0 ? 12 : end;
  const out = Buffer.alloc(Math.max(12, qEnd));
  raw.copy(out, 0, 0, Math.min(raw.length, qEnd));
  out[2] = 0x80 | (out[2]! & 0x79); // QR, opcode and RD kept, AA and TC clear
  out[3] = 0x80 | 1; // RA, FORMERR
  out.writeUInt16BE(qEnd > 12 ? 1 : 0, 4);
  out.fill(0, 6, 12);
  return out;
}

/**
 * A UDP socket on a free loopback port and a TCP server on the same port. The
 * UDP port is free for TCP most of the time, not always (another test's
 * connection may hold it): then both go and another port is tried, so a
 * failed start leaves no socket open to keep the test process alive.
 */
async function bindBoth(): Promise<{ udp: dgram.Socket; tcp: net.Server; port: number }> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", () => resolve()));
    const port = udp.address().port;
    const tcp = net.createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, "127.0.0.1", () => resolve());
      });
      return { udp, tcp, port };
    } catch (err) {
      udp.close();
      if (attempt === 9) throw err;
    }
  }
}

export async function startUpstream(
  address = "192.0.2.7",
  { record = true }: { record?: boolean } = {},
): Promise<TestUpstream> {
  const { udp, tcp, port } = await bindBoth();
  const spoofer = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => spoofer.bind(0, "127.0.0.1", () => resolve()));
  const conns = new Set<net.Socket>();
  const state: TestUpstream = {
    port,
    mode: "answer",
    address,
    omitOpt: false,
    spoof: { wrongIds: 8, wrongPorts: 2, delayMs: 40 },
    forged: { wrongId: 0, wrongQuestion: 0, wrongPort: 0 },
    received: [],
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      await new Promise<void>((resolve) => spoofer.close(() => resolve()));
    },
  };
  udp.on("message", (raw, rinfo) => {
    const send = (buf: Buffer, from = udp): void => {
      from.send(buf, rinfo.port, rinfo.address);
    };
    if (raw.length < 12) return;
    const packet = decodeQuery(raw);
    if (packet === null) {
      if (state.mode !== "silent") send(formerrFor(raw));
      return;
    }
    if (record) state.received.push({ transport: "udp", packet, raw, srcPort: rinfo.port });
    switch (state.mode) {
      case "silent":
        return;
      case "truncate":
        send(answerFor(packet, state.address, { tc: true, raw }));
        return;
      case "wrong-id-first":
        send(answerFor(packet, "203.0.113.66", { id: (packet.id! + 1) & 0xffff, raw }));
        send(answerFor(packet, "203.0.113.67", { name: "other.example.net" }));
        send(answerFor(packet, "203.0.113.68", { raw }), spoofer);
        setTimeout(() => send(answerFor(packet, state.address, { raw })), 50);
        return;
      case "spoof": {
        const { wrongIds, wrongPorts, delayMs } = state.spoof;
        for (let i = 1; i <= wrongIds; i++) {
          send(answerFor(packet, "203.0.113.66", { id: (packet.id! + i * 4099) & 0xffff, raw }));
          state.forged.wrongId++;
        }
        send(answerFor(packet, "203.0.113.67", { name: "other.example.net" }));
        state.forged.wrongQuestion++;
        for (let i = 0; i < wrongPorts; i++) {
          send(answerFor(packet, "203.0.113.68", { raw }), spoofer);
          state.forged.wrongPort++;
        }
        setTimeout(() => send(answerFor(packet, state.address, { raw })), delayMs);
        return;
      }
      case "lowercase": {
        const reply = answerFor(packet, state.address, { raw });
        for (let i = 12; i < questionEnd(raw) - 4; i++) {
          if (reply[i]! >= 0x41 && reply[i]! <= 0x5a) reply[i] = reply[i]! | 0x20;
        }
        send(reply);
        return;
      }
      case "answer":
        send(answerFor(packet, state.address, { omitOpt: state.omitOpt, raw }));
    }
  });
  tcp.on("connection", (conn) => {
    conns.add(conn);
    conn.on("close", () => conns.delete(conn));
    conn.on("error", () => {});
    let buf = Buffer.alloc(0);
    conn.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const raw = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + raw.length);
        if (raw.length < 12) continue;
        const packet = decodeQuery(raw);
        if (packet !== null && record) {
          state.received.push({
            transport: "tcp",
            packet,
            raw: Buffer.from(raw),
            srcPort: conn.remotePort ?? 0,
          });
        }
        if (state.mode === "silent") continue;
        const reply = packet === null ? formerrFor(raw) : answerFor(packet, state.address, { raw });
        const framed = Buffer.alloc(2 + reply.length);
        framed.writeUInt16BE(reply.length, 0);
        reply.copy(framed, 2);
        conn.write(framed);
      }
    });
  });
  return state;
}
