/**
 * The soak's client: A queries for random names over UDP (one socket each,
 * as a stub resolver does), each answer kept with its rcode, its time and the
 * chaos step it was sent in, to judge "an address or SERVFAIL within
 * --start-timeout + 1 s" afterwards.
 */
import { createSocket } from "node:dgram";
import packet from "dns-packet";

export interface QueryResult {
  readonly instance: number;
  readonly name: string;
  readonly sentAt: number;
  /** Milliseconds to the answer, or null when none came within the client's limit. */
  readonly ms: number | null;
  /** NOERROR, SERVFAIL, ... or "none". */
  readonly rcode: string;
  /** The A record's address, if any. */
  readonly address: string | null;
  /** The chaos step in progress when it was sent. */
  readonly step: number;
}

let nextId = 1;

/** One query; resolves when answered or after `limitMs` (then `ms` is null). */
export function query(
  port: number,
  name: string,
  limitMs: number,
): Promise<{ ms: number | null; rcode: string; address: string | null }> {
  return new Promise((resolve) => {
    const sock = createSocket("udp4");
    const t0 = performance.now();
    let done = false;
    const finish = (r: { ms: number | null; rcode: string; address: string | null }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ms: null, rcode: "none", address: null }), limitMs);
    sock.on("message", (msg) => {
      try {
        const res = packet.decode(msg) as { rcode?: string; answers?: { type: string; data?: unknown }[] };
        const a = res.answers?.find((r) => r.type === "A");
        finish({
          ms: performance.now() - t0,
          rcode: res.rcode ?? "NOERROR",
          address: a === undefined ? null : String(a.data),
        });
      } catch {
        finish({ ms: performance.now() - t0, rcode: "undecodable", address: null });
      }
    });
    // ECONNREFUSED (nothing listens: a jitsu killed) ends the wait at once; counted as no answer.
    sock.on("error", () => finish({ ms: null, rcode: "none", address: null }));
    nextId = (nextId % 65535) + 1;
    const bytes = packet.encode({
      type: "query",
      id: nextId,
      flags: packet.RECURSION_DESIRED,
      questions: [{ type: "A", name }],
    });
    sock.connect(port, "127.0.0.1", () => sock.send(bytes));
  });
}

export interface ClientTarget {
  readonly port: number;
  readonly names: readonly string[];
  /** The client waits this long for an answer (more than --start-timeout + 1 s, to measure lateness). */
  readonly limitMs: number;
}

/** Queries random names until `stop()`; every result kept. */
export class ChaosClient {
  readonly results: QueryResult[] = [];
  private running = true;
  private readonly inFlight = new Set<Promise<void>>();
  private loop: Promise<void> | null = null;

  constructor(
    private readonly targets: readonly ClientTarget[],
    private readonly random: () => number,
    private readonly step: () => number,
    private readonly gapMs: [number, number],
  ) {}

  start(): void {
    this.loop = (async () => {
      while (this.running) {
        const t = Math.floor(this.random() * this.targets.length);
        const target = this.targets[t]!;
        const name = target.names[Math.floor(this.random() * target.names.length)]!;
        const sentAt = Date.now();
        const step = this.step();
        const p = query(target.port, name, target.limitMs).then((r) => {
          this.results.push({ instance: t, name, sentAt, step, ...r });
        });
        this.inFlight.add(p);
        void p.finally(() => this.inFlight.delete(p));
        const [lo, hi] = this.gapMs;
        await new Promise((r) => setTimeout(r, lo + this.random() * (hi - lo)));
      }
    })();
  }

  /** Stops sending and waits for the answers in flight. */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await Promise.all([...this.inFlight]);
  }
}
