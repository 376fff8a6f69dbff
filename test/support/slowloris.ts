/**
 * A slowloris against a DNS server's TCP port: N connections, each from its
 * own 127.x address (so a per-client limit does not stop them), half sending
 * nothing and half trickling a query a byte every 100 ms; each one the server
 * closes is opened again, at most `rate` new connections a second in all (a
 * slowloris holds connections; one that floods them is a different attack,
 * bounded by the server's accept rate), until stopped. It runs in a child
 * process (this file is also its entry point) whose soft limit on open files
 * is raised to the hard limit: thousands of sockets do not fit the usual 1024.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { fileURLToPath } from "node:url";

export interface SlowlorisStats {
  /** Connections established (reconnections included). */
  readonly connected: number;
  /** Connections the server closed. */
  readonly closedByServer: number;
  /** Connections open when the stats were taken. */
  readonly open: number;
}

export interface Slowloris {
  /** Resolves once every connection was tried once (connected or refused). */
  readonly ready: Promise<void>;
  readonly child: ChildProcess;
  /** Stops and resolves with the totals. */
  stop(): Promise<SlowlorisStats>;
}

const SELF = fileURLToPath(import.meta.url);

/** The soft limit on open files that `sh` would give a child, and the hard one. */
export async function fileLimits(): Promise<{ soft: number; hard: number }> {
  const out = await new Promise<string>((resolve, reject) => {
    const sh = spawn("sh", ["-c", "ulimit -S -n; ulimit -H -n"], { stdio: ["ignore", "pipe", "inherit"] });
    let text = "";
    sh.stdout.on("data", (d: Buffer) => (text += d.toString()));
    sh.once("error", reject);
    sh.once("exit", () => resolve(text));
  });
  const [soft, hard] = out
    .trim()
    .split("\n")
    .map((l) => (l.trim() === "unlimited" ? Infinity : Number(l)));
  return { soft: soft!, hard: hard! };
}

/** Starts `count` connections to 127.0.0.1:`port` in a child process with the soft file limit raised to the hard one. */
export function startSlowloris(port: number, count: number, rate = 1000): Slowloris {
  const child = spawn(
    "sh",
    [
      "-c",
      'ulimit -S -n "$(ulimit -H -n)" && exec "$0" "$@"',
      process.execPath,
      SELF,
      String(port),
      String(count),
      String(rate),
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  let out = "";
  const lines: ((line: string) => void)[] = [];
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    let nl: number;
    while ((nl = out.indexOf("\n")) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      for (const l of [...lines]) l(line);
    }
  });
  const next = (prefix: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const onLine = (line: string): void => {
        if (!line.startsWith(prefix)) return;
        lines.splice(lines.indexOf(onLine), 1);
        resolve(line.slice(prefix.length));
      };
      lines.push(onLine);
      child.once("exit", (code) => reject(new Error(`the slowloris exited (${code}) before '${prefix}'`)));
    });
  const ready = next("ready").then(() => undefined);
  return {
    ready,
    child,
    async stop() {
      const stats = next("stats ");
      child.stdin!.end("stop\n");
      const parsed = JSON.parse(await stats) as SlowlorisStats;
      if (child.exitCode === null) await new Promise((resolve) => child.once("exit", resolve));
      return parsed;
    },
  };
}

/** The child: holds the connections until "stop" on stdin, then prints its stats. */
function runChild(port: number, count: number, rate: number): void {
  let connected = 0;
  /** Connections to open again once the rate allows, in the order they closed. */
  const again: number[] = [];
  setInterval(() => {
    for (let n = Math.ceil(rate / 20); n > 0 && again.length > 0; n--) connect(again.shift()!);
  }, 50).unref();
  let closedByServer = 0;
  let tried = 0;
  let stopping = false;
  const open = new Set<net.Socket>();
  // A query's bytes, trickled one at a time: the length says 40, never all sent in time.
  const trickle = Buffer.from([0, 40, 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 119, 119, 119]);
  const connect = (i: number): void => {
    if (stopping) return;
    const localAddress = `127.20.${Math.floor(i / 250)}.${(i % 250) + 1}`;
    const sock = net.connect({ port, host: "127.0.0.1", localAddress });
    let timer: ReturnType<typeof setInterval> | null = null;
    let first = true;
    const settled = (): void => {
      if (!first) return;
      first = false;
      if (++tried === count) process.stdout.write("ready\n");
    };
    sock.on("connect", () => {
      connected++;
      open.add(sock);
      settled();
      if (i % 2 === 1) {
        let sent = 0;
        timer = setInterval(() => {
          if (sent < trickle.length) sock.write(trickle.subarray(sent, ++sent));
        }, 100);
      }
    });
    sock.on("error", () => undefined);
    sock.on("close", () => {
      settled();
      if (timer !== null) clearInterval(timer);
      if (open.delete(sock) && !stopping) closedByServer++;
      if (!stopping) again.push(i);
    });
  };
  for (let i = 0; i < count; i++) connect(i);
  process.stdin.on("data", () => {
    stopping = true;
    const stats: SlowlorisStats = { connected, closedByServer, open: open.size };
    for (const s of open) s.destroy();
    process.stdout.write(`stats ${JSON.stringify(stats)}\n`, () => process.exit(0));
  });
}

if (process.argv[1] === SELF)
  runChild(Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4]));
