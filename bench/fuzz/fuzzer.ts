/**
 * runFuzz: sends `packets` cases from the seeded generator at a jitsu it
 * starts itself, checks every `checkEvery` cases that valid queries are still
 * answered, and accounts for every datagram: answered (by rcode), dropped by
 * jitsu on purpose (shorter than a header, or a response: predicted here and
 * compared with jitsu_dns_dropped_total), or dropped by the kernel (the
 * `drops` of jitsu's socket and ours in /proc/net/udp). Anything else is a
 * finding, as are a crash, a hang, an error in jitsu's log and a reply that
 * does not decode. See README.md.
 */
import type { Socket } from "node:dgram";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import dnsPacket from "dns-packet";
import { encodeQuery } from "../dns-client.js";
import { PacketGenerator, answerable, framedMessages, type FuzzCase } from "./packets.js";
import { Prng } from "./prng.js";
import { FUZZ_NAMES, FuzzTarget, connectedUdp, udpSocketDrops, type JitsuCounters } from "./target.js";

export interface FuzzOptions {
  readonly packets: number;
  readonly seed: number;
  /** Forward to a local upstream double (default), or run with `-f 0.0.0.0`. */
  readonly forward?: boolean;
  /** Generate and skip this many cases first (to replay a stretch of a long run). */
  readonly skip?: number;
  /** Cases between liveness checks (default 10,000). */
  readonly checkEvery?: number;
  /** Progress lines; nothing by default. */
  readonly log?: (line: string) => void;
  /** Where the cases since the last passing check are written when something fails (default: the temp dir). */
  readonly dumpDir?: string;
}

export interface FuzzReport {
  readonly seed: number;
  readonly packets: number;
  readonly seconds: number;
  /** `sendErrors`: datagrams the fuzzer's own socket could not send (counted in `sent`, never in jitsu's). */
  readonly udp: { sent: number; answered: number; shouldDrop: number; sendErrors: number };
  readonly tcp: { streams: number; messages: number; answered: number; shouldDrop: number; errors: number };
  /** Answers by rcode name (UDP and TCP), BADVERS from the OPT's extended rcode. */
  readonly answers: Readonly<Record<string, number>>;
  /** Datagrams not answered, by who dropped them; `unexplained` must be 0. */
  readonly drops: { jitsu: number; kernel: number; ours: number; unexplained: number };
  /** jitsu_dns_malformed_total over the run. */
  readonly malformed: number;
  readonly checksPassed: number;
  readonly rssMb: { before: number; after: number; peak: number };
  /** jitsu's V8 heap in use (jitsu_nodejs_heap_size_used_bytes), MB: a leak grows it, a lazy GC does not for long. */
  readonly heapMb: { before: number; after: number };
  readonly jitsuLog: { warn: number; error: number };
  readonly jitsuExit: string;
  /** What went wrong; empty when jitsu survived and accounted for everything. */
  readonly findings: readonly string[];
  /** A file with the cases since the last passing check, when there are findings. */
  readonly dump: string | null;
}

interface TcpTally {
  streams: number;
  messages: number;
  answered: number;
  shouldDrop: number;
  errors: number;
  /** Complete queries (header, QR clear) that got no answer before the 3 s wait ended. */
  unanswered: number;
}

/**
 * UDP cases between two barrier queries: well under what jitsu's socket
 * buffer holds (4 MiB asked, capped by net.core.rmem_max: at the kernel's
 * default of 208 KiB still ~200 small datagrams).
 */
const BATCH = 128;
/** TCP streams open at once (a client may hold 8 at most once per-client limits apply). */
const MAX_STREAMS = 4;
const BARRIER_TIMEOUT_MS = 5_000;

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const target = await FuzzTarget.start(opts.forward !== false);
  const run = new FuzzRun(opts, target);
  let before: Snapshot;
  let after: Snapshot | null = null;
  let rss = { rss: NaN, peak: NaN };
  try {
    const first = await target.check(30_000); // summons www.fuzz.test
    if (first !== null) throw new Error(`jitsu does not answer before fuzzing: ${first}`);
    before = await snapshot(target);
    const ours = await run.send();
    if (target.proc.running) after = { ...(await snapshot(target)), ours: udpSocketDrops(ours) };
  } finally {
    if (target.proc.running) rss = target.rss();
    run.stopped(await target.stop());
  }
  return run.report(before, after, rss);
}

/** What is read from jitsu and the kernel before and after the cases. */
interface Snapshot {
  counters: JitsuCounters;
  rss: number;
  /** Drops on jitsu's socket so far, and (after) on the fuzzer's. */
  kernel: number;
  ours: number;
}

async function snapshot(target: FuzzTarget): Promise<Snapshot> {
  return { counters: await target.counters(), rss: target.rss().rss, kernel: target.kernelDrops(), ours: 0 };
}

/** One run's cases, sent and counted. */
class FuzzRun {
  private readonly log: (line: string) => void;
  private readonly gen: PacketGenerator;
  private readonly skip: number;
  private readonly findings: string[] = [];
  private readonly answers: Record<string, number> = {};
  private readonly undecodable: { reply: Buffer; query: number }[] = [];
  /** The index of the last UDP case sent with each ID, to find the query behind a bad reply. */
  private readonly lastById = new Int32Array(0x10000).fill(-1);
  private readonly udp = { sent: 0, answered: 0, shouldDrop: 0, sendErrors: 0 };
  private readonly tcp: TcpTally = {
    streams: 0,
    messages: 0,
    answered: 0,
    shouldDrop: 0,
    errors: 0,
    unanswered: 0,
  };
  /** The cases since the last passing check, for the dump. */
  private readonly since: { index: number; c: FuzzCase }[] = [];
  private readonly started = performance.now();
  private checksPassed = 0;
  private jitsuExit = "running";

  constructor(
    private readonly opts: FuzzOptions,
    private readonly target: FuzzTarget,
  ) {
    this.log = opts.log ?? (() => undefined);
    this.skip = opts.skip ?? 0;
    this.gen = new PacketGenerator(new Prng(opts.seed), FUZZ_NAMES);
    for (let i = 0; i < this.skip; i++) this.gen.next();
  }

  /** Sends every case (or until a finding stops the run); resolves with the fuzz socket's local port. */
  async send(): Promise<number> {
    const { target, opts, udp, tcp, since, skip } = this;
    const tally = (msg: Buffer): void => this.tally(msg);
    const fuzz = await connectedUdp(target.port, 4 << 20);
    const control = await connectedUdp(target.port);
    fuzz.on("message", (msg) => {
      udp.answered++;
      tally(msg);
    });
    fuzz.on("error", () => undefined); // ECONNREFUSED if jitsu died: the next check says so
    const barrier = barrierClient(control);
    const checkEvery = opts.checkEvery ?? 10_000;
    const streams = new Set<Promise<void>>();
    let batch = 0;
    for (let i = 0; i < opts.packets; i++) {
      const c = this.gen.next();
      since.push({ index: skip + i, c });
      if (c.transport === "udp") {
        udp.sent++;
        const dropped = !answerable(c.packet);
        if (dropped) udp.shouldDrop++;
        if (c.packet.length >= 2) this.lastById[c.packet.readUInt16BE(0)] = skip + i;
        fuzz.send(c.packet, (err) => {
          if (err === null) return;
          // Never reached jitsu: neither answered nor one of its drops.
          udp.sendErrors++;
          if (dropped) udp.shouldDrop--;
        });
        if (++batch === BATCH) {
          batch = 0;
          if (!(await barrier())) {
            this.findings.push(
              `no answer to a valid query within ${BARRIER_TIMEOUT_MS} ms after case ${skip + i}`,
            );
            break;
          }
        }
      } else {
        while (streams.size >= MAX_STREAMS) await Promise.race(streams);
        const p: Promise<void> = runStream(target.port, c.chunks, tcp, tally).then(
          () => void streams.delete(p),
        );
        streams.add(p);
      }
      if ((i + 1) % checkEvery === 0 || i + 1 === opts.packets) {
        await Promise.all(streams);
        const problem = await target.check();
        if (problem !== null) {
          this.findings.push(`after case ${skip + i}: ${problem}`);
          break;
        }
        this.checksPassed++;
        since.length = 0;
        const rate = (i + 1) / ((performance.now() - this.started) / 1000);
        this.log(
          `${i + 1} cases, ${udp.answered} UDP answers, RSS ${target.rss().rss.toFixed(1)} MB, ${rate.toFixed(0)}/s`,
        );
      }
    }
    await Promise.all(streams);
    // Forwarded answers may still be on their way: wait until the count stops moving.
    await settle(() => udp.answered, 300, 7_000);
    const port = fuzz.address().port;
    fuzz.close();
    control.close();
    return port;
  }

  stopped(exit: string): void {
    this.jitsuExit = exit;
  }

  /** The totals and the findings; `after` is null if jitsu was gone by then. */
  report(before: Snapshot, after: Snapshot | null, rss: { rss: number; peak: number }): FuzzReport {
    const { udp, tcp, findings, target } = this;
    const end = after ?? { ...before, ours: 0 };
    const jitsuDropped = end.counters.dropped - before.counters.dropped;
    const kernel = end.kernel - before.kernel;
    const unexplained = udp.sent - udp.sendErrors - udp.answered - udp.shouldDrop - kernel - end.ours;
    if (findings.length === 0) {
      if (unexplained !== 0)
        findings.push(
          `${unexplained} UDP datagrams neither answered nor dropped on purpose or by the kernel`,
        );
      if (jitsuDropped !== udp.shouldDrop + tcp.shouldDrop)
        findings.push(
          `jitsu_dns_dropped_total grew by ${jitsuDropped}, but ${udp.shouldDrop + tcp.shouldDrop} messages were too short or responses`,
        );
      if (tcp.unanswered !== 0) findings.push(`${tcp.unanswered} complete TCP queries got no answer`);
    }
    for (const { reply, query } of this.undecodable)
      findings.push(
        `a reply that does not decode: ${reply.toString("hex")} (to UDP case ${query}, probably)`,
      );
    if (target.log.error > 0)
      findings.push(`jitsu logged ${target.log.error} errors, e.g. ${target.log.errors.join(" | ")}`);
    if (!/exited with code 0/.test(this.jitsuExit)) findings.push(`jitsu ${this.jitsuExit} on SIGTERM`);
    const suspects = regenerate(
      this.opts.seed,
      this.undecodable.map((u) => u.query),
    );
    return {
      seed: this.opts.seed,
      packets: udp.sent + tcp.streams,
      seconds: (performance.now() - this.started) / 1000,
      udp,
      tcp: {
        streams: tcp.streams,
        messages: tcp.messages,
        answered: tcp.answered,
        shouldDrop: tcp.shouldDrop,
        errors: tcp.errors,
      },
      answers: this.answers,
      drops: { jitsu: jitsuDropped, kernel, ours: end.ours, unexplained },
      malformed: end.counters.malformed - before.counters.malformed,
      checksPassed: this.checksPassed,
      rssMb: { before: before.rss, after: rss.rss, peak: rss.peak },
      heapMb: { before: before.counters.heapUsed / 2 ** 20, after: end.counters.heapUsed / 2 ** 20 },
      jitsuLog: { warn: target.log.warn, error: target.log.error },
      jitsuExit: this.jitsuExit,
      findings,
      dump: findings.length === 0 ? null : writeDump(this.opts, [...suspects, ...this.since]),
    };
  }

  private tally(msg: Buffer): void {
    const name = rcodeOf(msg);
    if (name !== null) this.answers[name] = (this.answers[name] ?? 0) + 1;
    else if (this.undecodable.length < 20)
      this.undecodable.push({ reply: msg, query: this.lastById[msg.readUInt16BE(0)]! });
  }
}

/** The rcode name of a reply (BADVERS and others above 15 through the OPT), or null if it does not decode. */
function rcodeOf(msg: Buffer): string | null {
  let p: dnsPacket.Packet;
  try {
    p = dnsPacket.decode(msg);
  } catch {
    return null;
  }
  const opt = p.additionals?.find((a) => a.type === "OPT") as { extendedRcode?: number } | undefined;
  const ext = opt?.extendedRcode ?? 0;
  if (ext === 0) return (p as { rcode?: string }).rcode ?? "NOERROR";
  const full = (ext << 4) | (msg[3]! & 0x0f);
  return full === 16 ? "BADVERS" : `RCODE${full}`;
}

/**
 * The pacing: a SOA query for the managed zone on a socket of its own, after
 * every BATCH datagrams. jitsu reads its socket in order and answers a SOA at
 * once, so when this answer is back every datagram before it has been read.
 */
function barrierClient(sock: Socket): () => Promise<boolean> {
  let waiting: { id: number; done: (ok: boolean) => void } | null = null;
  let id = 0;
  sock.on("message", (msg) => {
    if (waiting !== null && msg.length >= 2 && msg.readUInt16BE(0) === waiting.id) waiting.done(true);
  });
  return () =>
    new Promise<boolean>((resolve) => {
      id = (id + 1) & 0xffff;
      const timer = setTimeout(() => finish(false), BARRIER_TIMEOUT_MS);
      const finish = (ok: boolean): void => {
        clearTimeout(timer);
        waiting = null;
        resolve(ok);
      };
      waiting = { id, done: finish };
      sock.send(encodeQuery("fuzz.test", "SOA", id));
    });
}

/**
 * One TCP case: connect, write its chunks (one per turn of the event loop, so
 * they leave as separate segments), read the answers until every complete
 * query has one (or 3 s), then close.
 */
async function runStream(
  port: number,
  chunks: readonly Buffer[],
  tcp: TcpTally,
  tally: (msg: Buffer) => void,
): Promise<void> {
  const messages = framedMessages(chunks);
  const expected = messages.filter(answerable).length;
  tcp.streams++;
  tcp.messages += messages.length;
  tcp.shouldDrop += messages.length - expected;
  const sock = net.connect(port, "127.0.0.1");
  sock.setNoDelay(true);
  let answered = 0;
  let buf: Buffer = Buffer.alloc(0);
  let failed = false;
  let allIn: () => void = () => undefined;
  const answeredAll = new Promise<void>((resolve) => (allIn = resolve));
  const closed = new Promise<void>((resolve) => sock.once("close", () => resolve()));
  void closed.then(() => allIn());
  sock.on("error", () => {
    failed = true;
  });
  sock.on("data", (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      tally(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      answered++;
      buf = buf.subarray(2 + buf.readUInt16BE(0));
    }
    if (answered >= expected) allIn();
  });
  await new Promise<void>((resolve) => {
    sock.once("connect", () => resolve());
    sock.once("error", () => resolve());
  });
  for (const chunk of chunks) {
    if (failed || sock.destroyed) break;
    sock.write(chunk);
    if (chunks.length > 1) await new Promise((r) => setImmediate(r));
  }
  if (answered < expected) {
    const timer = setTimeout(allIn, 3_000);
    await answeredAll;
    clearTimeout(timer);
  }
  sock.end();
  const timer = setTimeout(() => sock.destroy(), 3_000);
  await closed;
  clearTimeout(timer);
  tcp.answered += answered;
  if (failed) tcp.errors++;
  else if (answered < expected) tcp.unanswered += expected - answered;
}

/** Waits until `value()` has not changed for `quietMs` (or is Infinity), at most `maxMs`. */
async function settle(value: () => number, quietMs: number, maxMs: number): Promise<void> {
  const until = Date.now() + maxMs;
  let seen = value();
  let since = Date.now();
  while (Date.now() < until && seen !== Infinity) {
    await new Promise((r) => setTimeout(r, 20));
    const now = value();
    if (now !== seen) {
      seen = now;
      since = Date.now();
    } else if (quietMs > 0 && Date.now() - since >= quietMs) return;
  }
}

/** The cases at these indices, generated again from the seed (each case depends only on the seed and its index). */
function regenerate(seed: number, indices: readonly number[]): { index: number; c: FuzzCase }[] {
  const wanted = new Set(indices.filter((i) => i >= 0));
  const out: { index: number; c: FuzzCase }[] = [];
  const gen = new PacketGenerator(new Prng(seed), FUZZ_NAMES);
  const last = Math.max(-1, ...wanted);
  for (let i = 0; i <= last; i++) {
    const c = gen.next();
    if (wanted.has(i)) out.push({ index: i, c });
  }
  return out;
}

/** The cases since the last passing check, one a line: index, transport, kind, hex (TCP chunks split by '|'). */
function writeDump(opts: FuzzOptions, cases: readonly { index: number; c: FuzzCase }[]): string {
  const from = cases[0]?.index ?? opts.skip ?? 0;
  const path = join(opts.dumpDir ?? tmpdir(), `jitsu-fuzz-seed${opts.seed}-from${from}.txt`);
  const lines = cases.map(({ index, c }) =>
    [
      index,
      c.transport,
      c.kind,
      c.transport === "udp" ? c.packet.toString("hex") : c.chunks.map((b) => b.toString("hex")).join("|"),
    ].join(" "),
  );
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

/** The report as the fuzz command prints it. */
export function formatReport(r: FuzzReport): string {
  const n = (x: number): string => x.toLocaleString("en-US");
  const answered = Object.entries(r.answers)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${n(v)}`)
    .join(", ");
  const growth = r.rssMb.after - r.rssMb.before;
  return [
    `seed ${r.seed}: ${n(r.packets)} packets in ${r.seconds.toFixed(1)} s (${n(Math.round(r.packets / r.seconds))}/s): ${n(r.udp.sent)} UDP datagrams, ${n(r.tcp.streams)} TCP streams carrying ${n(r.tcp.messages)} messages`,
    `answers: ${answered || "none"} (UDP ${n(r.udp.answered)}, TCP ${n(r.tcp.answered)}); malformed (jitsu_dns_malformed_total) ${n(r.malformed)}`,
    `not answered: ${n(r.udp.sent - r.udp.answered)} UDP: dropped by jitsu on purpose ${n(r.udp.shouldDrop)} (too short or QR set; jitsu_dns_dropped_total +${n(r.drops.jitsu)} with ${n(r.tcp.shouldDrop)} TCP), by the kernel on jitsu's socket ${n(r.drops.kernel)}, on ours ${n(r.drops.ours)}, not sent (our socket's error) ${n(r.udp.sendErrors)}, unexplained ${n(r.drops.unexplained)}; TCP connection errors ${n(r.tcp.errors)}`,
    `liveness checks passed: ${r.checksPassed}; jitsu logged ${n(r.jitsuLog.warn)} warnings, ${n(r.jitsuLog.error)} errors; ${r.jitsuExit} on SIGTERM`,
    `jitsu RSS: ${r.rssMb.before.toFixed(1)} MB before, ${r.rssMb.after.toFixed(1)} MB after (${growth >= 0 ? "+" : ""}${growth.toFixed(1)} MB), peak ${r.rssMb.peak.toFixed(1)} MB; V8 heap used ${r.heapMb.before.toFixed(1)} MB before, ${r.heapMb.after.toFixed(1)} MB after`,
    r.findings.length === 0
      ? "findings: none"
      : `FINDINGS:\n${r.findings.map((f) => `  - ${f}`).join("\n")}${r.dump === null ? "" : `\n  cases since the last passing check: ${r.dump}`}`,
  ].join("\n");
}
