/**
 * A stand-in for a VM in the demo: a small HTTP server that takes a while to
 * "boot", then says who it is. Usage: demo-service HOST PORT NAME [BOOT_SECONDS [STAMP_FILE]]
 * With STAMP_FILE, it appends `start MS` when it begins and `ready MS` once it
 * listens (Unix ms): tests see when VMs were booting from the VMs' own side.
 */
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";

const [host = "127.0.0.1", portText = "8080", name = "demo", bootText = "0", stampFile] =
  process.argv.slice(2);
const started = Date.now();
const stamp = (what: string): void => {
  if (stampFile !== undefined) appendFileSync(stampFile, `${what} ${Date.now()}\n`);
};
stamp("start");

setTimeout(
  () => {
    const server = createServer((_req, res) => {
      const up = ((Date.now() - started) / 1000).toFixed(1);
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`Hello from '${name}' (pid ${process.pid}), summoned ${up} s ago by a DNS query\n`);
    });
    server.listen(Number(portText), host, () => {
      stamp("ready");
      console.log(`serving http://${host}:${portText}/`);
    });
    process.on("SIGTERM", () => {
      console.log("SIGTERM: shutting down");
      server.close(() => process.exit(0));
    });
  },
  Number(bootText) * 1000,
);
