/**
 * A small upstream DNS server for forwarding tests (UDP + TCP on 127.0.0.1),
 * built on dns-packet. Its behaviour is switched per test:
 *  - "answer": answers A queries with `address` (and echoes the question);
 *  - "truncate": over UDP answers with TC set and no records; over TCP answers normally;
 *  - "wrong-id-first": first sends a reply with a wrong ID, then one with a
 *    wrong question, then one from another source port, then the right one;
 *  - "silent": never answers.
 */
import dgram from "node:dgram";
import net from "node:net";
import dnsPacket from "dns-packet";

export type UpstreamMode = "answer" | "truncate" | "wrong-id-first" | "silent";

export interface TestUpstream {
  readonly port: number;
  mode: UpstreamMode;
  address: string;
  /** Leave the OPT out of replies even when the query had one (an EDNS-unaware upstream). */
  omitOpt: boolean;
  /** Every query received, decoded, with the transport. */
  readonly received: { transport: "udp" | "tcp"; packet: dnsPacket.Packet; raw: Buffer; srcPort: number }[];
  close(): Promise<void>;
}

function answerFor(
  query: dnsPacket.Packet,
  address: string,
  opts: { tc?: boolean; id?: number; name?: string; omitOpt?: boolean },
): Buffer {
  const q = query.questions![0]!;
  const name = opts.name ?? q.name;
  const answers: dnsPacket.Answer[] =
    opts.tc === true ? [] : q.type === "A" ? [{ type: "A", name, ttl: 30, class: "IN", data: address }] : [];
  return dnsPacket.encode({
    type: "response",
    id: opts.id ?? query.id!,
    flags:
      (opts.tc === true ? dnsPacket.TRUNCATED_RESPONSE : 0) |
      dnsPacket.RECURSION_AVAILABLE |
      (query.flags! & 0x100),
    questions: [{ ...q, name }],
    answers,
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
}

export async function startUpstream(address = "192.0.2.7"): Promise<TestUpstream> {
  const udp = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", () => resolve()));
  const port = udp.address().port;
  const tcp = net.createServer();
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, "127.0.0.1", () => resolve());
  });
  const spoofer = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => spoofer.bind(0, "127.0.0.1", () => resolve()));
  const conns = new Set<net.Socket>();
  const state: TestUpstream = {
    port,
    mode: "answer",
    address,
    omitOpt: false,
    received: [],
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      await new Promise<void>((resolve) => spoofer.close(() => resolve()));
    },
  };
  udp.on("message", (raw, rinfo) => {
    const packet = dnsPacket.decode(raw);
    state.received.push({ transport: "udp", packet, raw, srcPort: rinfo.port });
    const send = (buf: Buffer, from = udp): void => {
      from.send(buf, rinfo.port, rinfo.address);
    };
    switch (state.mode) {
      case "silent":
        return;
      case "truncate":
        send(answerFor(packet, state.address, { tc: true }));
        return;
      case "wrong-id-first":
        send(answerFor(packet, "203.0.113.66", { id: (packet.id! + 1) & 0xffff }));
        send(answerFor(packet, "203.0.113.67", { name: "other.example.net" }));
        send(answerFor(packet, "203.0.113.68", {}), spoofer);
        setTimeout(() => send(answerFor(packet, state.address, {})), 50);
        return;
      case "answer":
        send(answerFor(packet, state.address, { omitOpt: state.omitOpt }));
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
        const packet = dnsPacket.decode(raw);
        state.received.push({
          transport: "tcp",
          packet,
          raw: Buffer.from(raw),
          srcPort: conn.remotePort ?? 0,
        });
        if (state.mode === "silent") continue;
        const reply = answerFor(packet, state.address, {});
        const framed = Buffer.alloc(2 + reply.length);
        framed.writeUInt16BE(reply.length, 0);
        reply.copy(framed, 2);
        conn.write(framed);
      }
    });
  });
  return state;
}
