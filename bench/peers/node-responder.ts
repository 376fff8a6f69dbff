/**
 * The minimal Node DNS responder: one UDP socket, one prebuilt answer, the
 * query's ID copied in. It does no parsing at all, so it is the single-process
 * ceiling for Node on this machine, the reference the hot-path target is
 * measured against. It answers every query with the same name and address
 * (it is only ever asked for that name).
 *
 * TCP (RFC 7766 framing, pipelined queries) on the same port, so the TCP
 * rows have a Node ceiling too.
 *
 * Usage: node node-responder.js PORT NAME IP    (prints "ready PORT" when bound)
 */
import dgram from "node:dgram";
import net from "node:net";
import packet from "dns-packet";

export function prebuiltAnswer(name: string, ip: string): Buffer {
  return packet.encode({
    type: "response",
    id: 0,
    flags: packet.AUTHORITATIVE_ANSWER | packet.RECURSION_DESIRED,
    questions: [{ type: "A", class: "IN", name }],
    answers: [{ type: "A", class: "IN", name, ttl: 60, data: ip }],
  });
}

function main(): void {
  const [portArg, name, ip] = process.argv.slice(2);
  if (portArg === undefined || name === undefined || ip === undefined) {
    process.stderr.write("usage: node-responder PORT NAME IP\n");
    process.exit(2);
  }
  const answer = prebuiltAnswer(name, ip);
  const sock = dgram.createSocket("udp4");
  sock.on("message", (msg, rinfo) => {
    if (msg.length < 12) return;
    const out = Buffer.allocUnsafe(answer.length);
    answer.copy(out);
    out[0] = msg[0]!;
    out[1] = msg[1]!;
    sock.send(out, rinfo.port, rinfo.address);
  });
  const tcp = net.createServer((conn) => {
    conn.setNoDelay(true);
    let buffered: Buffer = Buffer.alloc(0);
    conn.on("error", () => conn.destroy());
    conn.on("data", (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const len = buffered.readUInt16BE(0);
        if (buffered.length < 2 + len) break;
        const out = Buffer.allocUnsafe(2 + answer.length);
        out.writeUInt16BE(answer.length, 0);
        answer.copy(out, 2);
        out[2] = buffered[2]!;
        out[3] = buffered[3]!;
        conn.write(out);
        buffered = buffered.subarray(2 + len);
      }
    });
  });
  const port = Number(portArg);
  sock.bind(port, "127.0.0.1", () => {
    tcp.listen(port, "127.0.0.1", () => process.stdout.write(`ready ${port}\n`));
  });
  const stop = (): void => {
    tcp.close();
    sock.close(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main();
