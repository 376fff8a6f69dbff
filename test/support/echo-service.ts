/**
 * A VM program for the hold tests: after BOOT_SECONDS, a TCP echo server on
 * HOST:PORT that sends back every byte it reads, in order, and half-closes
 * when the client does (so a client can send all, end, and read it all back).
 * Usage: echo-service HOST PORT BOOT_SECONDS
 */
import net from "node:net";

const [host = "127.0.0.1", portText = "0", bootText = "0"] = process.argv.slice(2);

setTimeout(
  () => {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => socket.destroy());
      socket.pipe(socket);
    });
    server.listen(Number(portText), host, () => console.log(`echo on ${host}:${portText}`));
    process.on("SIGTERM", () => process.exit(0));
  },
  Number(bootText) * 1000,
);
