/**
 * Packets the fuzzer (bench/fuzz, `npm run fuzz`) found mishandled, each sent
 * byte for byte as it was found (seed and case index given), at a DnsServer
 * that forwards to the upstream double, next to the wire-level rule it broke.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { DnsServer, Forwarder, ZoneIndex, type SummonTarget } from "../../src/dns/index.js";
import { decodeQuery, newQueryInfo } from "../../src/dns/wire.js";
import { silentLogger } from "../../src/log/index.js";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";
import { sendRaw } from "../support/index.js";
import { specFrom } from "./helpers/specs.js";

/** A query for `labels` (their lengths), every label filled with 'l', type A class IN. */
function queryWithLabels(lengths: readonly number[]): Buffer {
  const labels = lengths.map((n) => Buffer.concat([Buffer.from([n]), Buffer.alloc(n, 0x6c)]));
  return Buffer.concat([
    Buffer.from("123401000001000000000000", "hex"),
    ...labels,
    Buffer.from([0]),
    Buffer.from("00010001", "hex"),
  ]);
}

describe("fuzzer regressions: wire rules", () => {
  it("a question name of 255 bytes is read, one of 256 is FORMERR (RFC 1035 §3.1)", () => {
    // 63+1 + 63+1 + 63+1 + 61+1 + the root's 1 = 255 bytes
    assert.equal(decodeQuery(queryWithLabels([63, 63, 63, 61]), newQueryInfo()).status, "ok");
    const long = decodeQuery(queryWithLabels([63, 63, 63, 62]), newQueryInfo());
    assert.equal(long.status, "formerr");
    assert.match(long.problem, /longer than 255 bytes/);
  });
});

describe("fuzzer regressions: a DnsServer that forwards", () => {
  let up: TestUpstream;
  let server: DnsServer;
  let forwarder: Forwarder;
  let port: number;
  const summoner: SummonTarget = { request: () => ["10.0.0.1"], requestIfReady: () => ["10.0.0.1"] };

  before(async () => {
    up = await startUpstream("192.0.2.7");
    const log = silentLogger();
    forwarder = new Forwarder({ upstreams: [{ host: "127.0.0.1", port: up.port }], log });
    server = new DnsServer({
      zone: new ZoneIndex([specFrom("dns=www.example.org,ip=10.0.0.1,name=www")], 60, log),
      summoner,
      forwarder,
      log,
      ttlSeconds: 60,
    });
    await server.listen("127.0.0.1", 0);
    port = server.port;
  });
  after(async () => {
    await server.close();
    forwarder.close();
    await up.close();
  });

  it("answers FORMERR to a 256-byte question name, and does not forward it (seed 1, case 351)", async () => {
    // Labels of 60, 52, 41, 54 and 43 bytes: 255 bytes of labels, 256 with the root. It was
    // forwarded, and the upstream's FORMERR relayed with a question no decoder could read.
    const packet = Buffer.from(
      "43b9000000010000000000003c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c" +
        "6c6c6c6c6c6c6c6c6c6c6c6c6c6cc16c6c6c6c6c6c6c6c6c6c346c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c" +
        "6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c296c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c" +
        "6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c366c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c" +
        "6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c2b6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c" +
        "6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c6c00000ccd6d",
      "hex",
    );
    assert.equal(packet.length, 272);
    const forwardedBefore = up.received.length;
    const malformedBefore = server.counters.malformed;
    const reply = await sendRaw(port, packet);
    assert.ok(reply !== null, "answered");
    assert.equal(reply.length, 12, "header only");
    assert.equal(reply.readUInt16BE(0), 0x43b9);
    assert.equal(reply[3]! & 0x0f, 1, "FORMERR");
    assert.equal(server.counters.malformed, malformedBefore + 1);
    assert.equal(up.received.length, forwardedBefore, "not forwarded");
    // The longest legal name is still forwarded.
    const legal = await sendRaw(port, queryWithLabels([63, 63, 63, 61]));
    assert.equal((legal?.[3] ?? -1) & 0x0f, 0);
    assert.equal(up.received.length, forwardedBefore + 1);
  });
});
