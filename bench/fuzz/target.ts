/**
 * The jitsu the fuzzer attacks: the built CLI with the process backend, two
 * managed VMs, `--http` for its counters, and forwarding to a local upstream
 * double (or `-f 0.0.0.0`), never to the machine's resolver. Also what the
 * fuzzer reads about it: whether it still answers, its RSS, its counters, and
 * what the kernel dropped on its UDP socket.
 */
import { createSocket, type Socket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startUpstream, type TestUpstream } from "../../test/doubles/dns-upstream.js";
import { httpCall, parsePrometheus } from "../../test/support/http.js";
import { encodeQuery, queryOnce } from "../dns-client.js";
import type { BenchProcess } from "../procs.js";
import { VM_EXEC, rssMb, startJitsu } from "../servers.js";
import { freePort } from "../tools.js";
import type { FuzzNames } from "./packets.js";

/** The addresses of the managed names, and what the upstream answers for every A query. */
const WWW_IP = "127.0.0.10";
const DB_IP = "127.0.0.11";
const DB_IP6 = "fd00::11";
const UPSTREAM_IP = "192.0.2.53";

export const FUZZ_NAMES: FuzzNames = {
  managed: ["www.fuzz.test", "db.fuzz.test", "fuzz.test"],
  inZone: ["nope.fuzz.test", "a.b.fuzz.test", "WWW.other.fuzz.test"],
  outside: ["fwd.example.net", "example.org", "x.y.z.example.com", "localhost", "arpa"],
  reverse: [
    "10.0.0.127.in-addr.arpa",
    "11.0.0.127.in-addr.arpa",
    `1.1.0.0.${"0.".repeat(24)}0.0.d.f.ip6.arpa`,
  ],
};

/** Counters read from jitsu's /metrics. */
export interface JitsuCounters {
  dropped: number;
  malformed: number;
  /** jitsu_nodejs_heap_size_used_bytes */
  heapUsed: number;
}

/** jitsu's log lines by level (--log-level warn: only warnings and worse are printed). */
export interface LogTally {
  warn: number;
  error: number;
  /** The first few error and fatal messages. */
  errors: string[];
}

export class FuzzTarget {
  readonly log: LogTally = { warn: 0, error: 0, errors: [] };

  private constructor(
    readonly proc: BenchProcess,
    readonly port: number,
    private readonly httpPort: number,
    private readonly upstream: TestUpstream | null,
    private readonly stateDir: string,
  ) {
    proc.onLine((line) => this.tally(line));
    for (const line of proc.lines) this.tally(line);
  }

  /** Starts the upstream double (with `forward`) and jitsu, and waits until both answer. */
  static async start(forward: boolean): Promise<FuzzTarget> {
    const upstream = forward ? await startUpstream(UPSTREAM_IP, { record: false }) : null;
    const stateDir = mkdtempSync(join(tmpdir(), "jitsu-fuzz-"));
    try {
      const httpPort = await freePort();
      const jitsu = await startJitsu({
        label: "jitsu",
        configs: [
          `name=www,dns=www.fuzz.test,ip=${WWW_IP},exec=${VM_EXEC}`,
          `name=db,dns=db.fuzz.test,dns=fuzz.test,ip=${DB_IP},ip=${DB_IP6},exec=${VM_EXEC}`,
        ],
        upstreamPort: upstream?.port ?? null,
        logLevel: "warn",
        probe: { name: "fuzz.test", type: "SOA" },
        extraArgs: ["--state-dir", stateDir, "--http", `127.0.0.1:${httpPort}`],
        readyTimeoutMs: 30_000,
      });
      const proc = jitsu.proc;
      const target = new FuzzTarget(proc, jitsu.port, httpPort, upstream, stateDir);
      const exited = proc.exited.then(() => {
        throw new Error(`jitsu ${proc.describeExit()} at start-up: ${proc.lines.slice(-3).join(" | ")}`);
      });
      await Promise.race([waitForHttp(httpPort, 10_000), exited]);
      void exited.catch(() => undefined);
      return target;
    } catch (err) {
      await upstream?.close();
      rmSync(stateDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Stops jitsu (SIGTERM, as a user would) and the upstream; the exit as jitsu reported it. */
  async stop(): Promise<string> {
    await this.proc.stop(10_000);
    await this.upstream?.close();
    rmSync(this.stateDir, { recursive: true, force: true });
    return this.proc.describeExit();
  }

  /**
   * A valid query still answered: A for a managed name over UDP and TCP, and
   * (when forwarding) A for a forwarded name. Null when all is well, else what
   * went wrong. The first check summons the VM, so it may take a while.
   */
  async check(timeoutMs = 3000): Promise<string | null> {
    if (!this.proc.running) return `jitsu ${this.proc.describeExit()}`;
    const udp = await queryOnce(this.port, "www.fuzz.test", "A", timeoutMs);
    if (udp === null) return "no answer over UDP to www.fuzz.test A";
    if (udp.rcode !== "NOERROR" || !udp.addresses.includes(WWW_IP))
      return `www.fuzz.test A over UDP answered ${udp.rcode} ${udp.addresses.join(",")}`;
    const tcp = await tcpQuery(this.port, "www.fuzz.test", timeoutMs);
    if (tcp !== "NOERROR") return `www.fuzz.test A over TCP: ${tcp}`;
    if (this.upstream !== null) {
      const fwd = await queryOnce(this.port, "live.example.net", "A", timeoutMs);
      if (fwd === null) return "no answer to the forwarded live.example.net A";
      if (fwd.rcode !== "NOERROR" || !fwd.addresses.includes(UPSTREAM_IP))
        return `forwarded live.example.net A answered ${fwd.rcode} ${fwd.addresses.join(",")}`;
    }
    return null;
  }

  /** jitsu's resident set size and its peak, MB. */
  rss(): { rss: number; peak: number } {
    return rssMb(this.proc.pid);
  }

  async counters(): Promise<JitsuCounters> {
    const res = await httpCall(this.httpPort, "GET", "/metrics");
    const m = parsePrometheus(res.body);
    return {
      dropped: m.get("jitsu_dns_dropped_total") ?? 0,
      malformed: m.get("jitsu_dns_malformed_total") ?? 0,
      heapUsed: m.get("jitsu_nodejs_heap_size_used_bytes") ?? NaN,
    };
  }

  /** Datagrams the kernel dropped on jitsu's UDP socket (its receive buffer was full), from /proc/net/udp. */
  kernelDrops(): number {
    return udpSocketDrops(this.port);
  }

  private tally(line: string): void {
    if (!line.startsWith("{")) return;
    let entry: { level?: unknown; msg?: unknown };
    try {
      entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
    } catch {
      return;
    }
    if (typeof entry.level !== "number") return;
    if (entry.level >= 50) {
      this.log.error++;
      if (this.log.errors.length < 5) this.log.errors.push(String(entry.msg));
    } else if (entry.level >= 40) this.log.warn++;
  }
}

/** Polls GET /healthz until it answers 200, or throws after `timeoutMs`. */
async function waitForHttp(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await httpCall(port, "GET", "/healthz").then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    if (Date.now() > until)
      throw new Error(`jitsu's --http on 127.0.0.1:${port} did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The `drops` column of /proc/net/udp (proc(5)) for the socket bound to
 * 127.0.0.1:`port`: datagrams that arrived with its receive buffer full.
 */
export function udpSocketDrops(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const line of readFileSync("/proc/net/udp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local) return Number(f[12] ?? 0);
  }
  return 0;
}

/** One A query over TCP: the rcode, or what went wrong. */
function tcpQuery(port: number, name: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const q = encodeQuery(name, "A");
    const sock = net.connect(port, "127.0.0.1");
    let buf: Buffer = Buffer.alloc(0);
    const finish = (result: string): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish("no answer"), timeoutMs);
    sock.on("error", (err) => finish(`error ${err.message}`));
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const reply = buf.subarray(2, 2 + buf.readUInt16BE(0));
      const rcode = reply.length >= 4 ? reply[3]! & 0x0f : -1;
      finish(
        reply.readUInt16BE(0) !== q.readUInt16BE(0) ? "wrong ID" : rcode === 0 ? "NOERROR" : `rcode ${rcode}`,
      );
    });
    sock.write(Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]));
  });
}

/** A UDP socket connected to jitsu, for the fuzz datagrams or the barrier queries. */
export function connectedUdp(port: number, recvBufferSize?: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createSocket({ type: "udp4", ...(recvBufferSize === undefined ? {} : { recvBufferSize }) });
    sock.once("error", reject);
    sock.connect(port, "127.0.0.1", () => {
      sock.off("error", reject);
      resolve(sock);
    });
  });
}
