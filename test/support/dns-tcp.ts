/** DNS over TCP from a test: raw length-prefixed messages (what dig will not send; over UDP: sendRaw in index.ts). */
import net from "node:net";

/**
 * Opens a TCP connection (to 127.0.0.1, from `localAddress` if given: any
 * 127.x address is this host's) and collects length-prefixed messages as they arrive.
 */
export async function tcpClient(
  port: number,
  opts: { localAddress?: string } = {},
): Promise<{
  sock: net.Socket;
  messages: Buffer[];
  send(packet: Buffer): void;
  waitFor(n: number, ms?: number): Promise<Buffer[]>;
  closed: Promise<void>;
}> {
  const sock = net.connect({ port, host: "127.0.0.1", localAddress: opts.localAddress });
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", () => resolve());
    sock.once("error", reject);
  });
  const messages: Buffer[] = [];
  let buf = Buffer.alloc(0);
  const waiters: (() => void)[] = [];
  sock.on("error", () => {});
  sock.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      messages.push(Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      buf = buf.subarray(2 + buf.readUInt16BE(0));
    }
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
  return {
    sock,
    messages,
    closed,
    send(packet: Buffer) {
      const framed = Buffer.alloc(2 + packet.length);
      framed.writeUInt16BE(packet.length, 0);
      packet.copy(framed, 2);
      sock.write(framed);
    },
    async waitFor(n: number, ms = 5000) {
      const deadline = Date.now() + ms;
      while (messages.length < n && Date.now() < deadline) {
        await Promise.race([
          new Promise<void>((resolve) => waiters.push(resolve)),
          new Promise<void>((resolve) => setTimeout(resolve, 50)),
        ]);
      }
      return messages;
    },
  };
}
