/**
 * The service behind both proxies in the hold bench (bench/hold.ts): one
 * TCP port, what a connection gets decided by its first byte:
 * - 'B': `bulk` bytes are sent back (a 1 MiB buffer over and over, with
 *   backpressure), then the connection is ended;
 * - 'C': the first chunk echoed, then the connection ended (the service
 *   closes first, as an HTTP/1.0 server does);
 * - anything else: an echo of every byte read (the first included), ended
 *   when the client ends.
 * Usage: tcp-backend HOST PORT BULK_BYTES; prints "listening" when it listens.
 */
import net from "node:net";

const [host = "127.0.0.1", portText = "0", bulkText = "0"] = process.argv.slice(2);
const bulk = Number(bulkText);
const block = Buffer.alloc(1024 * 1024, 0x61);

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  socket.on("error", () => socket.destroy());
  socket.once("data", (first: Buffer) => {
    if (first[0] === 0x42) {
      let left = bulk;
      const write = (): void => {
        while (left > 0) {
          const n = Math.min(left, block.length);
          left -= n;
          if (!socket.write(n === block.length ? block : block.subarray(0, n)))
            return void socket.once("drain", write);
        }
        socket.end();
      };
      socket.resume(); // the rest (nothing, then the client's FIN) is ignored
      write();
      return;
    }
    if (first[0] === 0x43) {
      socket.resume();
      socket.end(first);
      return;
    }
    socket.write(first);
    socket.pipe(socket);
  });
});
server.listen(Number(portText), host, () => console.log("listening"));
process.on("SIGTERM", () => process.exit(0));
