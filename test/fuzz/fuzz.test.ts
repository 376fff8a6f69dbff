/**
 * The fuzzer (bench/fuzz, `npm run fuzz`) as part of the suite: 100,000 cases
 * with a fixed seed at the built CLI forwarding to a local upstream double,
 * and 20,000 with forwarding off. jitsu must answer valid queries after every
 * 10,000, account for every datagram (answered, dropped on purpose, or
 * dropped by the kernel), log no error, decode-check every reply, and exit
 * cleanly. The totals are printed as test diagnostics.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatReport, runFuzz, type FuzzReport } from "../../bench/fuzz/fuzzer.js";
import { PacketGenerator, answerable, framedMessages, type FuzzCase } from "../../bench/fuzz/packets.js";
import { Prng } from "../../bench/fuzz/prng.js";
import { FUZZ_NAMES } from "../../bench/fuzz/target.js";

const SEED = 15;

function bytesOf(c: FuzzCase): Buffer {
  return c.transport === "udp" ? c.packet : Buffer.concat(c.chunks);
}

function cases(seed: number, n: number): FuzzCase[] {
  const gen = new PacketGenerator(new Prng(seed), FUZZ_NAMES);
  return Array.from({ length: n }, () => gen.next());
}

/** What every run must show, whatever the seed. */
function assertClean(r: FuzzReport, packets: number): void {
  assert.deepEqual(r.findings, [], formatReport(r));
  assert.equal(r.packets, packets);
  assert.equal(r.checksPassed, packets / 10_000);
  assert.equal(r.drops.unexplained, 0);
  assert.equal(r.jitsuLog.error, 0);
  assert.match(r.jitsuExit, /exited with code 0/);
  // jitsu answered most of it, and what it dropped it dropped on purpose.
  assert.ok(r.udp.answered > r.udp.sent * 0.8, formatReport(r));
  assert.equal(r.drops.jitsu, r.udp.shouldDrop + r.tcp.shouldDrop);
  assert.ok(r.rssMb.after - r.rssMb.before < 64, `RSS grew by ${r.rssMb.after - r.rssMb.before} MB`);
}

describe("fuzzer: cases", () => {
  it("the same seed gives the same cases, another seed others", () => {
    const a = cases(SEED, 2000).map(bytesOf);
    const b = cases(SEED, 2000).map(bytesOf);
    const c = cases(SEED + 1, 2000).map(bytesOf);
    assert.deepEqual(a, b);
    assert.ok(a.filter((x, i) => !x.equals(c[i]!)).length > 1900);
  });

  it("mixes valid queries, every kind of mutation and TCP streams", () => {
    const all = cases(SEED, 20_000);
    const kinds = new Set(all.flatMap((c) => c.kind.split(/[+]/)));
    for (const kind of [
      "valid",
      "random",
      "bitflip",
      "truncate",
      "counts",
      "flags",
      "compression-loop",
      "forward-pointer",
      "label-past-end",
      "opt-garbage",
      "splice",
      "tcp-junk",
      "tcp-partial-split",
    ]) {
      assert.ok(kinds.has(kind), `no '${kind}' case in 20,000`);
    }
    const udp = all.filter((c) => c.transport === "udp");
    assert.ok(
      udp.some((c) => !answerable(bytesOf(c))),
      "some datagrams are too short or responses",
    );
    assert.ok(udp.length > 19_000 && udp.length < 20_000);
  });

  it("reads a TCP stream into messages as the server does: what follows the last whole one is not one", () => {
    const m1 = Buffer.from("aabb0100000100000000000000", "hex"); // a header (QR clear) and one byte
    const stream = Buffer.concat([
      Buffer.from([0, m1.length]),
      m1,
      Buffer.from([0, 0]),
      Buffer.from([0, 9, 1, 2]),
    ]);
    const pieces = [stream.subarray(0, 1), stream.subarray(1, 7), stream.subarray(7)];
    const messages = framedMessages(pieces);
    assert.deepEqual(messages, [m1, Buffer.alloc(0)]);
    assert.deepEqual(messages.map(answerable), [true, false]);
  });
});

describe("fuzzer: against the built CLI", () => {
  it(`100,000 cases (seed ${SEED}), forwarding to a local upstream`, { timeout: 240_000 }, async (t) => {
    const r = await runFuzz({ packets: 100_000, seed: SEED });
    t.diagnostic(formatReport(r));
    assertClean(r, 100_000);
    for (const rcode of ["NOERROR", "FORMERR", "NOTIMP", "REFUSED", "BADVERS"])
      assert.ok((r.answers[rcode] ?? 0) > 0, `no ${rcode} answer`);
    assert.ok(r.tcp.streams > 1000 && r.tcp.answered > 0);
  });

  it(`20,000 cases (seed ${SEED + 1}), forwarding off (-f 0.0.0.0)`, { timeout: 120_000 }, async (t) => {
    const r = await runFuzz({ packets: 20_000, seed: SEED + 1, forward: false });
    t.diagnostic(formatReport(r));
    assertClean(r, 20_000);
    for (const rcode of ["NXDOMAIN", "REFUSED"]) assert.ok((r.answers[rcode] ?? 0) > 0, `no ${rcode} answer`);
  });
});
