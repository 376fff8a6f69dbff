/**
 * `npm run demo`: jitsu on 127.0.0.1:5353 with the process backend, serving a
 * few names backed by small local HTTP servers (demo-service). No root, no
 * hypervisor, no traffic leaves the machine: forwarding is off unless you add
 * -f ADDR. Extra arguments are passed to jitsu (e.g. `npm run demo -- -t 30`).
 */
import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import dnsPacket from "dns-packet";

const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, "..", "src", "cli", "main.js");
const service = join(here, "demo-service.js");
const userArgs = process.argv.slice(2);
const has = (flag: string, long: string): boolean =>
  userArgs.some((a) => a === flag || a === long || a.startsWith(`${long}=`));
const optionValue = (flag: string, long: string): string | undefined => {
  const i = userArgs.findIndex((a) => a === flag || a === long);
  if (i >= 0) return userArgs[i + 1];
  return userArgs.find((a) => a.startsWith(`${long}=`))?.slice(long.length + 1);
};
const preferred = Number(process.env.JITSU_DEMO_PORT ?? "5353");

interface DemoVm {
  name: string;
  ip: string;
  boot: number;
  probe: "http" | "tcp";
}
const vms: DemoVm[] = [
  { name: "hello", ip: "127.0.0.11", boot: 0, probe: "http" },
  { name: "slow", ip: "127.0.0.12", boot: 2, probe: "http" },
  { name: "tcp", ip: "127.0.0.13", boot: 0.5, probe: "tcp" },
];
const configs = vms.map((vm) =>
  [
    `dns=${vm.name}.jitsu.test`,
    `ip=${vm.ip}`,
    `name=${vm.name}`,
    `exec='${process.execPath}' '${service}' ${vm.ip} 8080 ${vm.name} ${vm.boot}`,
    vm.probe === "http" ? `ready=http://${vm.ip}:8080/` : `ready=tcp:${vm.ip}:8080`,
  ].join(","),
);

/** Whether UDP and TCP `port` on 127.0.0.1 can both be bound now. */
async function free(port: number): Promise<boolean> {
  const udp = createSocket("udp4");
  const udpOk = await new Promise<boolean>((resolve) => {
    udp.once("error", () => resolve(false));
    udp.bind(port, "127.0.0.1", () => resolve(true));
  });
  if (!udpOk) return false;
  const tcp = createServer();
  const tcpOk = await new Promise<boolean>((resolve) => {
    tcp.once("error", () => resolve(false));
    tcp.listen({ port, host: "127.0.0.1", exclusive: true }, () => resolve(true));
  });
  await new Promise<void>((resolve) => udp.close(() => resolve()));
  if (tcpOk) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  return tcpOk;
}

/**
 * The port to serve on: -l if given (jitsu reports it if it is taken), else
 * JITSU_DEMO_PORT or 5353, else (mDNS often holds 5353) the next free one.
 */
async function choosePort(): Promise<string> {
  const given = optionValue("-l", "--listen");
  if (given !== undefined) return given;
  for (let port = preferred; port < preferred + 50 && port < 65536; port++) {
    if (await free(port)) {
      if (port !== preferred)
        console.log(`jitsu demo: port ${preferred} is taken (mDNS, or another demo?); using ${port}.`);
      return String(port);
    }
  }
  throw new Error(`no free port from ${preferred} to ${preferred + 49} on 127.0.0.1; pass one with -l PORT`);
}

const port = await choosePort();
const stateDir = mkdtempSync(join(tmpdir(), "jitsu-demo-"));
const args = [
  cli,
  "-x",
  "process",
  "-b",
  "127.0.0.1",
  ...(has("-l", "--listen") ? [] : ["-l", port]),
  ...(has("-f", "--forwarder") ? [] : ["-f", "0.0.0.0"]),
  ...(has("-t", "--ttl") ? [] : ["-t", "15"]),
  ...(has("-d", "--delay") ? [] : ["-d", "0"]),
  "--state-dir",
  stateDir,
  "--stop-on-exit",
  ...userArgs,
  ...configs,
];

const ttl = userArgs[userArgs.findIndex((a) => a === "-t" || a === "--ttl") + 1] ?? "15";
const tryThis = `jitsu demo: DNS on 127.0.0.1:${port}, ${vms.length} names backed by local HTTP servers started on demand.
Try, in another terminal:
${vms.map((vm) => `  dig @127.0.0.1 -p ${port} ${vm.name}.jitsu.test     # starts '${vm.name}' (${vm.boot} s boot), then answers ${vm.ip}\n  curl http://${vm.ip}:8080/`).join("\n")}
  dig @127.0.0.1 -p ${port} jitsu.test SOA        # the zone jitsu synthesises
  dig @127.0.0.1 -p ${port} -x 127.0.0.11         # PTR for a managed address
  dig @127.0.0.1 -p ${port} other.jitsu.test      # not managed: NXDOMAIN (forwarding is off unless you add -f ADDR)
A VM nobody asks for during 2 x TTL (${Number(ttl) * 2} s) is stopped again; watch the log and the stats table.
Ctrl-C stops jitsu and the services it started.
`;

/**
 * Resolves once jitsu answers on 127.0.0.1:`port` (the zone's SOA), so that
 * what to try is printed when it works (a first start on a busy machine takes
 * seconds); false if it has not answered within `ms` or `child` exited.
 */
async function answering(ms: number): Promise<boolean> {
  const query = dnsPacket.encode({
    type: "query",
    id: 1,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "SOA", name: "jitsu.test" }],
  });
  const socket = createSocket("udp4");
  socket.on("error", () => undefined); // refused while nothing listens: tried again
  const answered = new Promise<void>((resolve) => socket.once("message", () => resolve()));
  const end = Date.now() + ms;
  try {
    while (Date.now() < end && child.exitCode === null && child.signalCode === null) {
      socket.send(query, Number(port), "127.0.0.1");
      const got = await Promise.race([answered.then(() => true), sleep(200).then(() => false)]);
      if (got) return true;
    }
    return false;
  } finally {
    socket.close();
  }
}

// jitsu runs in its own process group, so Ctrl-C reaches it once, through us.
const child = spawn(process.execPath, args, { stdio: "inherit", detached: true });
let forwarded = false;
const forward = (signal: NodeJS.Signals): void => {
  if (forwarded) return;
  forwarded = true;
  child.kill(signal);
};
process.on("SIGINT", forward);
process.on("SIGTERM", forward);
child.on("exit", (code, signal) => {
  rmSync(stateDir, { recursive: true, force: true });
  process.exit(code ?? (signal === null ? 0 : 1));
});
if (await answering(60_000)) console.log(`\n${tryThis}`);
else if (child.exitCode === null && child.signalCode === null)
  console.log(
    `jitsu demo: jitsu has not answered on 127.0.0.1:${port} after 60 s; see its log above.\n\n${tryThis}`,
  );
