#!/usr/bin/env node
/**
 * A double of Xen's vchan-socket-proxy (tools/libvchan/vchan-socket-proxy.c)
 * in client mode, for the Synjitsu tests: same arguments
 * (`[-m client|server] [-v] [-s state-path] domainid nodepath socket-path`,
 * usage and exit 1 otherwise), listens on socket-path, and for each accepted
 * connection opens the "vchan" at nodepath: like libxenvchan_client_init it
 * reads nodepath/ring-ref and nodepath/event-channel from xenstore (the
 * xenstored double at $XENSTORED_PATH). The real proxy waits with a watch
 * until they appear (or the domain dies); the double exits at once with the
 * real "vchan client init" error, so tests reach the failure path quickly. The vchan itself is the Synjitsu
 * listener double's unix socket, $SYNJITSU_DOUBLE_SOCKET. Its argv is appended
 * to $SYNJITSU_PROXY_LOG.
 */
import { appendFileSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { T, xsRequests } from "./xenstored-wire.js";

function usage(): never {
  process.stderr.write("usage:\n\tvchan-socket-proxy [options] domainid nodepath [socket-path|file-no|-]\n");
  process.exit(1);
}

const argv = process.argv.slice(2);
if (process.env.SYNJITSU_PROXY_LOG !== undefined)
  appendFileSync(process.env.SYNJITSU_PROXY_LOG, `${JSON.stringify(argv)}\n`);
let mode = "client";
const positional: string[] = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]!;
  if (a === "-m" || a === "--mode") mode = argv[++i] ?? usage();
  else if (a.startsWith("--mode=")) mode = a.slice(7);
  else if (a === "-s" || a === "--state-path") i++;
  else if (a === "-v" || a === "--verbose") continue;
  else if (a.startsWith("-") && a !== "-") usage();
  else positional.push(a);
}
if (mode !== "client" && mode !== "server") {
  process.stderr.write(`invalid argument for --mode: ${mode}\n`);
  usage();
}
if (positional.length !== 3) usage();
const [domidText, nodepath, socketPath] = positional as [string, string, string];
if (mode !== "client" || socketPath === "-" || !/^\d+$/.test(domidText)) {
  process.stderr.write("vchan-socket-proxy double: only client mode with a socket path is supported\n");
  process.exit(1);
}

const server = createServer((local) => {
  void (async () => {
    const xs = process.env.XENSTORED_PATH;
    const replies =
      xs === undefined
        ? []
        : await xsRequests(xs, [
            { type: T.READ, payload: Buffer.from(`${nodepath}/ring-ref\0`) },
            { type: T.READ, payload: Buffer.from(`${nodepath}/event-channel\0`) },
          ]);
    if (replies.length !== 2 || replies.some((r) => r.type === T.ERROR)) {
      process.stderr.write("vchan client init: No such file or directory\n");
      process.exit(1);
    }
    const vchan = connect({ path: process.env.SYNJITSU_DOUBLE_SOCKET ?? "" });
    vchan.on("error", () => process.exit(1));
    local.pipe(vchan);
    vchan.pipe(local);
    local.on("close", () => vchan.end());
    vchan.on("close", () => local.destroy());
  })();
});
rmSync(socketPath, { force: true });
server.listen(socketPath);
process.on("SIGTERM", () => {
  rmSync(socketPath, { force: true });
  process.exit(0);
});
