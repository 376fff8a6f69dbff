import assert from "node:assert/strict";
import dgram from "node:dgram";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { Forwarder, parseResolvConf, upstreamsFromResolvConf } from "../../../src/dns/index.js";
import { replyMatches, upstreamQuery } from "../../../src/dns/forwarder/index.js";
import { decodeQuery, newQueryInfo } from "../../../src/dns/wire.js";
import { silentLogger } from "../../../src/log/index.js";
import { startUpstream, type TestUpstream } from "../../doubles/dns-upstream.js";

function query(name: string, type: dnsPacket.RecordType = "A", edns = false): Buffer {
  return dnsPacket.encode({
    type: "query",
    id: 0x1234,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: "IN" }],
    additionals: edns
      ? [
          {
            type: "OPT",
            name: ".",
            udpPayloadSize: 4000,
            flags: dnsPacket.DNSSEC_OK,
            options: [
              { code: 10, data: Buffer.alloc(8, 1) },
              { code: 65001, data: Buffer.from("hi") },
            ],
          } as unknown as dnsPacket.Answer,
        ]
      : [],
  });
}

function addresses(p: dnsPacket.Packet): string[] {
  return (p.answers ?? []).map((a) => (a as { data: string }).data);
}

function decoded(buf: Buffer) {
  return decodeQuery(buf, newQueryInfo());
}

describe("forwarder matching rules", () => {
  const client = query("WWW.Example.NET");
  const q = decoded(client);
  const sent = upstreamQuery(client, q, 0xbeef);
  const reply = (
    over: Partial<dnsPacket.Packet>,
    name = "www.example.net",
    type: dnsPacket.RecordType = "A",
  ) =>
    dnsPacket.encode({
      type: "response",
      id: 0xbeef,
      flags: 0,
      questions: [{ name, type, class: "IN" }],
      ...over,
    });

  it("builds the upstream query with the fresh ID, RD copied and the question byte for byte", () => {
    assert.equal(sent.readUInt16BE(0), 0xbeef);
    assert.equal(sent[2]! & 0x01, 1);
    assert.deepEqual(sent.subarray(12), client.subarray(12));
  });

  it("passes EDNS on with our buffer size, the DO bit and options except COOKIE", () => {
    const c = query("www.example.net", "A", true);
    const up = dnsPacket.decode(upstreamQuery(c, decoded(c), 7));
    const opt = up.additionals![0] as unknown as {
      udpPayloadSize: number;
      flags: number;
      options: { code: number }[];
    };
    assert.equal(opt.udpPayloadSize, 1232);
    assert.equal(opt.flags & dnsPacket.DNSSEC_OK, dnsPacket.DNSSEC_OK);
    assert.deepEqual(
      opt.options.map((o) => o.code),
      [65001],
    );
  });

  it("accepts the matching reply, whatever the case of the name", () => {
    assert.equal(replyMatches(reply({}), sent, client, q), true);
    assert.equal(replyMatches(reply({}, "WWW.EXAMPLE.NET"), sent, client, q), true);
  });

  it("ignores a spoofed ID, another name, another type, another class, a query", () => {
    assert.equal(replyMatches(reply({ id: 0xbeee }), sent, client, q), false);
    assert.equal(replyMatches(reply({}, "ww.example.net"), sent, client, q), false);
    assert.equal(replyMatches(reply({}, "www.example.net", "AAAA"), sent, client, q), false);
    const chaos = reply({});
    chaos.writeUInt16BE(3, chaos.length - 2);
    assert.equal(replyMatches(chaos, sent, client, q), false);
    assert.equal(replyMatches(reply({ type: "query" }), sent, client, q), false);
    assert.equal(replyMatches(reply({}).subarray(0, 20), sent, client, q), false);
  });
});

describe("resolv.conf", () => {
  it("reads nameserver lines in order, skipping comments and junk", () => {
    const text =
      "# comment\nsearch example.org\nnameserver 127.0.0.53\nnameserver ::1 # local\nnameserver not-an-ip\n;nameserver 1.2.3.4\n";
    assert.deepEqual(parseResolvConf(text, 5353), [
      { host: "127.0.0.53", port: 5353 },
      { host: "::1", port: 5353 },
    ]);
  });

  it("reads a file, and gives no upstreams for a missing one", async () => {
    const dir = await mkdtemp(join(tmpdir(), "jitsu-resolv-"));
    try {
      await writeFile(join(dir, "resolv.conf"), "nameserver 127.0.0.9\n");
      assert.deepEqual(upstreamsFromResolvConf(join(dir, "resolv.conf")), [{ host: "127.0.0.9", port: 53 }]);
      assert.deepEqual(upstreamsFromResolvConf(join(dir, "missing")), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("Forwarder against a local upstream", () => {
  let up: TestUpstream;
  let spare: TestUpstream;
  before(async () => {
    up = await startUpstream("192.0.2.7");
    spare = await startUpstream("192.0.2.8");
  });
  after(async () => {
    await up.close();
    await spare.close();
  });

  function forwarder(upstreams: { host: string; port: number }[], timeoutMs = 3000, attemptTimeoutMs = 1000) {
    return new Forwarder({ upstreams, timeoutMs, attemptTimeoutMs, log: silentLogger() });
  }

  it("relays the answer with the client's ID, from a fresh ID and source port each time", async () => {
    up.mode = "answer";
    up.received.length = 0;
    const f = forwarder([{ host: "127.0.0.1", port: up.port }]);
    const c = query("www.example.net");
    const r1 = dnsPacket.decode(await f.forward(c, decoded(c)));
    const r2 = dnsPacket.decode(await f.forward(c, decoded(c)));
    // Nothing in flight any more: its sockets closed, and no deadline timer is left waking it up.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal((f as unknown as { sweeper: unknown }).sweeper, null);
    f.close();
    assert.equal(r1.id, 0x1234);
    assert.equal(r2.id, 0x1234);
    assert.deepEqual(addresses(r1), ["192.0.2.7"]);
    assert.equal(up.received.length, 2);
    const [a, b] = up.received;
    assert.notEqual(a!.packet.id, 0x1234);
    // Two fresh IDs and ports: equal twice in a row has a chance of 1 in 2^16 each.
    assert.ok(a!.packet.id !== b!.packet.id || a!.srcPort !== b!.srcPort);
    assert.notEqual(a!.srcPort, b!.srcPort);
  });

  it("gives each of many concurrent queries its own reply, from source ports that keep changing", async () => {
    up.mode = "answer";
    up.received.length = 0;
    const f = forwarder([{ host: "127.0.0.1", port: up.port }]);
    const names = Array.from({ length: 1500 }, (_, i) => `n${i}.example.net`);
    try {
      // 100 at a time: more would overflow the test upstream's receive buffer (UDP loss, not our bug).
      for (let batch = 0; batch < names.length; batch += 100) {
        const replies = await Promise.all(
          names.slice(batch, batch + 100).map(async (name) => {
            const c = query(name);
            return { name, r: dnsPacket.decode(await f.forward(c, decoded(c))) };
          }),
        );
        for (const { name, r } of replies) {
          assert.equal(r.id, 0x1234);
          assert.equal(r.questions![0]!.name, name);
        }
      }
    } finally {
      f.close();
    }
    assert.equal(up.received.length, names.length);
    const perPort = new Map<number, number>();
    for (const x of up.received) perPort.set(x.srcPort, (perPort.get(x.srcPort) ?? 0) + 1);
    // A fresh socket per upstream query: no port serves two queries in a row... and the kernel
    // may hand out a port again later, so allow a few reuses over 1500 queries.
    assert.ok(perPort.size >= 1400, `${perPort.size} source ports`);
  });

  it("sends identical queries in flight upstream once, and gives each client the reply with its own ID", async () => {
    up.mode = "answer";
    up.received.length = 0;
    const f = forwarder([{ host: "127.0.0.1", port: up.port }]);
    let coalesced = 0;
    f.onCoalesced = () => void coalesced++;
    try {
      const asked = Array.from({ length: 50 }, (_, i) => {
        const c = query("same.example.net");
        c.writeUInt16BE(i + 1, 0);
        return f.forward(c, decoded(c));
      });
      // Another case, another type, or the DO bit make a different upstream query.
      const other = [
        query("SAME.example.net"),
        query("same.example.net", "AAAA"),
        query("same.example.net", "A", true),
      ];
      const others = other.map((c) => f.forward(c, decoded(c)));
      const replies = (await Promise.all(asked)).map((r) => dnsPacket.decode(r));
      await Promise.all(others);
      replies.forEach((r, i) => {
        assert.equal(r.id, i + 1);
        assert.deepEqual(addresses(r), ["192.0.2.7"]);
      });
      assert.equal(coalesced, 49);
      assert.equal(up.received.length, 4);
      // Once answered, the next identical query goes upstream again.
      const c = query("same.example.net");
      await f.forward(c, decoded(c));
      assert.equal(up.received.length, 5);
    } finally {
      f.close();
    }
  });

  it("fails every client that joined a query no upstream answers", async () => {
    up.mode = "silent";
    up.received.length = 0;
    const f = forwarder([{ host: "127.0.0.1", port: up.port }], 400, 400);
    try {
      const asked = Array.from({ length: 5 }, () => {
        const c = query("lost.example.net");
        return f.forward(c, decoded(c));
      });
      for (const p of asked) await assert.rejects(p, /no upstream answered/);
      assert.equal(up.received.length, 1);
    } finally {
      f.close();
      up.mode = "answer";
    }
  });

  it("ignores replies with a wrong ID, a wrong question or from another port, and takes the right one", async () => {
    up.mode = "wrong-id-first";
    const f = forwarder([{ host: "127.0.0.1", port: up.port }]);
    const c = query("www.example.net");
    const r = dnsPacket.decode(await f.forward(c, decoded(c)));
    f.close();
    assert.deepEqual(addresses(r), ["192.0.2.7"]);
  });

  it("retries a truncated reply over TCP", async () => {
    up.mode = "truncate";
    up.received.length = 0;
    const f = forwarder([{ host: "127.0.0.1", port: up.port }]);
    const c = query("big.example.net");
    const r = dnsPacket.decode(await f.forward(c, decoded(c)));
    f.close();
    assert.deepEqual(
      up.received.map((x) => x.transport),
      ["udp", "tcp"],
    );
    assert.equal(r.flags! & dnsPacket.TRUNCATED_RESPONSE, 0);
    assert.deepEqual(addresses(r), ["192.0.2.7"]);
  });

  it("fails over from a silent upstream to the next", async () => {
    up.mode = "silent";
    spare.mode = "answer";
    const f = forwarder([
      { host: "127.0.0.1", port: up.port },
      { host: "127.0.0.1", port: spare.port },
    ]);
    const c = query("www.example.net");
    const t0 = Date.now();
    const r = dnsPacket.decode(await f.forward(c, decoded(c)));
    f.close();
    assert.deepEqual(addresses(r), ["192.0.2.8"]);
    assert.ok(Date.now() - t0 >= 900, "waited for the first upstream's attempt timeout");
  });

  it("fails over from an upstream that refuses the packet (closed port)", async () => {
    const closed = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => closed.bind(0, "127.0.0.1", () => resolve()));
    const deadPort = closed.address().port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    spare.mode = "answer";
    const f = forwarder([
      { host: "127.0.0.1", port: deadPort },
      { host: "127.0.0.1", port: spare.port },
    ]);
    const c = query("www.example.net");
    const t0 = Date.now();
    const r = dnsPacket.decode(await f.forward(c, decoded(c)));
    f.close();
    assert.deepEqual(addresses(r), ["192.0.2.8"]);
    assert.ok(Date.now() - t0 < 900, "failed over on the ICMP error, before the attempt timeout");
  });

  it("rejects when no upstream answers within the overall timeout", async () => {
    up.mode = "silent";
    spare.mode = "silent";
    const f = forwarder(
      [
        { host: "127.0.0.1", port: up.port },
        { host: "127.0.0.1", port: spare.port },
      ],
      600,
      400,
    );
    const c = query("www.example.net");
    const t0 = Date.now();
    await assert.rejects(f.forward(c, decoded(c)), /no upstream answered/);
    const took = Date.now() - t0;
    assert.ok(took >= 550 && took < 2000, `took ${took} ms`);
    f.close();
  });

  it("refuses at once a new upstream query beyond the in-flight limit, but lets identical ones join", async () => {
    up.mode = "silent";
    const f = new Forwarder({
      upstreams: [{ host: "127.0.0.1", port: up.port }],
      timeoutMs: 500,
      maxInFlight: 1,
      log: silentLogger(),
    });
    const c = query("www.example.net");
    const first = f.forward(c, decoded(c));
    // The same question joins the one in flight (no socket of its own) ...
    const joined = f.forward(c, decoded(c));
    // ... another one would need a second upstream query: refused at once.
    const other = query("other.example.net");
    await assert.rejects(f.forward(other, decoded(other)), /already in flight/);
    await assert.rejects(first, /no upstream answered/);
    await assert.rejects(joined, /no upstream answered/);
    up.mode = "answer";
    const r = dnsPacket.decode(await f.forward(other, decoded(other)));
    assert.deepEqual(addresses(r), ["192.0.2.7"]);
    f.close();
  });
});
