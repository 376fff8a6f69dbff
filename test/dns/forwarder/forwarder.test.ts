import assert from "node:assert/strict";
import dgram from "node:dgram";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { Forwarder, parseResolvConf, upstreamsFromResolvConf } from "../../../src/dns/index.js";
import { replyMatches, upstreamQuery } from "../../../src/dns/forwarder/index.js";
import { decodeQuery, newQueryInfo } from "../../../src/dns/wire.js";
import { createLogger, silentLogger } from "../../../src/log/index.js";
import { startUpstream, type TestUpstream } from "../../doubles/dns-upstream.js";
import { countMatches } from "../../support/index.js";

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

  it("relays the answer with the client's ID, sent with a fresh ID from a socket of the pool", async () => {
    up.mode = "answer";
    up.received.length = 0;
    const f = forwarder([{ host: "127.0.0.1", port: up.port }]);
    const c = query("www.example.net");
    const r1 = dnsPacket.decode(await f.forward(c, decoded(c)));
    const r2 = dnsPacket.decode(await f.forward(c, decoded(c)));
    // Nothing in flight any more: no deadline timer is left waking it up.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal((f as unknown as { sweeper: unknown }).sweeper, null);
    const ports = f.poolPorts(0);
    f.close();
    assert.equal(r1.id, 0x1234);
    assert.equal(r2.id, 0x1234);
    assert.deepEqual(addresses(r1), ["192.0.2.7"]);
    assert.equal(up.received.length, 2);
    const [a, b] = up.received;
    assert.notEqual(a!.packet.id, 0x1234);
    // Two fresh IDs: equal twice in a row has a chance of 1 in 2^16.
    assert.notEqual(a!.packet.id, b!.packet.id);
    for (const x of [a!, b!]) assert.ok(ports.includes(x.srcPort), `${x.srcPort} is not a pool port`);
  });

  it("gives each of many concurrent queries its own reply, spread over the pool's 64 ports", async () => {
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
    // 1500 queries drawn uniformly over 64 sockets (about 23 each, none rotated at 100): every
    // socket is used (a socket missed has a chance of 64 x (63/64)^1500, about 1e-9), none
    // beyond the rotation count, and no one socket takes a share a fair draw would not give.
    assert.equal(perPort.size, 64, `${perPort.size} source ports`);
    const counts = [...perPort.values()];
    assert.ok(Math.max(...counts) <= 60, `a socket sent ${Math.max(...counts)} of 1500`);
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

/** The kernel's count of UDP datagrams that found no socket (/proc/net/snmp "Udp: ... NoPorts"). */
function udpNoPorts(): number {
  const lines = readFileSync("/proc/net/snmp", "utf8")
    .split("\n")
    .filter((l) => l.startsWith("Udp:"));
  const names = lines[0]!.split(/\s+/);
  return Number(lines[1]!.split(/\s+/)[names.indexOf("NoPorts")]);
}

/** Forwards `names` (A queries), `window` at a time; resolves with each name's reply decoded. */
async function forwardAll(f: Forwarder, names: readonly string[], window = 50): Promise<dnsPacket.Packet[]> {
  const out: dnsPacket.Packet[] = [];
  for (let i = 0; i < names.length; i += window) {
    const batch = await Promise.all(
      names.slice(i, i + window).map(async (name) => {
        const c = query(name);
        return dnsPacket.decode(await f.forward(c, decoded(c)));
      }),
    );
    out.push(...batch);
  }
  return out;
}

// The pool's sockets through the batched UDP addon and through dgram (its fallback): the same behaviour.
for (const udpIo of ["native", "dgram"] as const) {
  describe(`Forwarder's socket pool (${udpIo})`, () => {
    let up: TestUpstream;
    before(async () => {
      up = await startUpstream("192.0.2.7");
    });
    after(async () => {
      await up.close();
    });

    it("relays no forged reply from a spoofing upstream while real queries are in flight, and counts those that reach it", async () => {
      const spoofer = await startUpstream("192.0.2.9");
      spoofer.mode = "spoof";
      const f = new Forwarder({
        udpIo,
        upstreams: [{ host: "127.0.0.1", port: spoofer.port }],
        log: silentLogger(),
      });
      let mismatched = 0;
      f.onMismatched = () => void mismatched++;
      const noPorts = udpNoPorts();
      try {
        const names = Array.from({ length: 300 }, (_, i) => `s${i}.example.net`);
        const replies = await forwardAll(f, names);
        replies.forEach((r, i) => {
          assert.equal(r.questions![0]!.name, names[i]);
          assert.deepEqual(addresses(r), ["192.0.2.9"], `a forged answer for ${names[i]} was relayed`);
        });
        const { wrongId, wrongQuestion, wrongPort } = spoofer.forged;
        assert.equal(wrongId, 300 * 8);
        assert.equal(wrongQuestion, 300);
        assert.equal(wrongPort, 300 * 2);
        // From the upstream's address and port to the right socket: each seen, ignored and counted.
        assert.equal(mismatched, wrongId + wrongQuestion);
        // From another port: the connected sockets never see them; the kernel drops and counts
        // them (machine-wide, so other traffic may add to it, never take away).
        assert.ok(udpNoPorts() - noPorts >= wrongPort, `NoPorts grew by ${udpNoPorts() - noPorts}`);
        // The forged replies went to the pool's own ports, and no more than 64 of them.
        const ports = new Set(spoofer.received.map((x) => x.srcPort));
        assert.ok(ports.size <= 64, `${ports.size} source ports`);
        for (const p of f.poolPorts(0)) assert.ok(ports.has(p) || f.poolPorts(0).length <= 64);
      } finally {
        f.close();
        await spoofer.close();
      }
    });

    it("replaces a socket by one on a new port after the configured number of queries (seen at the upstream)", async () => {
      up.mode = "answer";
      up.received.length = 0;
      // One socket, so the sequence of source ports shows each rotation exactly.
      const f = new Forwarder({
        udpIo,
        upstreams: [{ host: "127.0.0.1", port: up.port }],
        sockets: 1,
        socketQueries: 3,
        log: silentLogger(),
      });
      try {
        for (let i = 0; i < 15; i++) {
          const c = query(`r${i}.example.net`);
          await f.forward(c, decoded(c));
        }
      } finally {
        f.close();
      }
      const ports = up.received.map((x) => x.srcPort);
      assert.equal(ports.length, 15);
      for (let i = 0; i < 15; i++) {
        // Three queries from one port, then a new socket: the kernel could hand out the same port
        // again (about 1 in 28,000 per rotation here), which this would report as a failure.
        if (i % 3 === 0) {
          if (i > 0)
            assert.notEqual(ports[i], ports[i - 1], `query ${i} still went out from ${ports[i - 1]}`);
        } else assert.equal(ports[i], ports[i - 1], `query ${i} changed port early: ${ports.join(" ")}`);
      }
    });

    it("rotates all 64 sockets: each port sends at most the configured count (many queries at once)", async () => {
      up.mode = "answer";
      up.received.length = 0;
      const f = new Forwarder({
        udpIo,
        upstreams: [{ host: "127.0.0.1", port: up.port }],
        socketQueries: 5,
        log: silentLogger(),
      });
      try {
        await forwardAll(
          f,
          Array.from({ length: 960 }, (_, i) => `m${i}.example.net`),
          32,
        );
      } finally {
        f.close();
      }
      const perPort = new Map<number, number>();
      for (const x of up.received) perPort.set(x.srcPort, (perPort.get(x.srcPort) ?? 0) + 1);
      // 960 queries, 5 a socket: at least 192 sockets. The kernel may give a closed socket's port
      // to a later one (a few times among ~200 ports out of ~28,000): at most twice the count then.
      assert.ok(perPort.size >= 180, `${perPort.size} source ports`);
      const over = [...perPort.values()].filter((n) => n > 5);
      assert.ok(over.length <= 3 && over.every((n) => n <= 10), `counts over 5: ${over.join(" ")}`);
    });

    it("replaces a socket after the configured seconds", async () => {
      up.mode = "answer";
      up.received.length = 0;
      const f = new Forwarder({
        udpIo,
        upstreams: [{ host: "127.0.0.1", port: up.port }],
        sockets: 1,
        socketSeconds: 0.3,
        log: silentLogger(),
      });
      try {
        for (const name of ["t1.example.net", "t2.example.net"]) {
          const c = query(name);
          await f.forward(c, decoded(c));
        }
        await new Promise((resolve) => setTimeout(resolve, 350));
        const c = query("t3.example.net");
        await f.forward(c, decoded(c));
      } finally {
        f.close();
      }
      const [a, b, c] = up.received.map((x) => x.srcPort);
      assert.equal(a, b);
      assert.notEqual(c, b);
    });

    it("never has two queries for one question waiting on the same socket", async () => {
      up.mode = "answer";
      up.received.length = 0;
      // Two sockets; the same question asked two ways (plain, and with EDNS + DO) are two upstream
      // queries in flight at once: by chance they would share a socket every other round.
      const f = new Forwarder({
        udpIo,
        upstreams: [{ host: "127.0.0.1", port: up.port }],
        sockets: 2,
        log: silentLogger(),
      });
      try {
        for (let round = 0; round < 20; round++) {
          const plain = query("same.example.net");
          const withDo = query("same.example.net", "A", true);
          await Promise.all([f.forward(plain, decoded(plain)), f.forward(withDo, decoded(withDo))]);
        }
      } finally {
        f.close();
      }
      assert.equal(up.received.length, 40);
      for (let i = 0; i < 40; i += 2) {
        assert.notEqual(up.received[i]!.srcPort, up.received[i + 1]!.srcPort, `round ${i / 2}`);
      }
    });

    it("fails over from a silent upstream, from a refusing one, and retries TC over TCP, all through the pool", async () => {
      const spare = await startUpstream("192.0.2.8");
      const closed = dgram.createSocket("udp4");
      await new Promise<void>((resolve) => closed.bind(0, "127.0.0.1", () => resolve()));
      const deadPort = closed.address().port;
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      up.mode = "silent";
      const f = new Forwarder({
        udpIo,
        upstreams: [
          { host: "127.0.0.1", port: deadPort },
          { host: "127.0.0.1", port: up.port },
          { host: "127.0.0.1", port: spare.port },
        ],
        attemptTimeoutMs: 300,
        log: silentLogger(),
      });
      try {
        // Many at once: the ICMP error of one socket fails over only the queries waiting on it.
        const names = Array.from({ length: 40 }, (_, i) => `fo${i}.example.net`);
        const t0 = Date.now();
        const replies = await forwardAll(f, names, 40);
        for (const r of replies) assert.deepEqual(addresses(r), ["192.0.2.8"]);
        assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
        spare.mode = "truncate";
        spare.received.length = 0;
        const c = query("big.example.net");
        const r = dnsPacket.decode(await f.forward(c, decoded(c)));
        assert.deepEqual(addresses(r), ["192.0.2.8"]);
        assert.deepEqual(
          spare.received.map((x) => x.transport),
          ["udp", "tcp"],
        );
      } finally {
        f.close();
        up.mode = "answer";
        await spare.close();
      }
    });
  });

  describe(`DNS 0x20 (--forward-random-case, ${udpIo})`, () => {
    let up: TestUpstream;
    before(async () => {
      up = await startUpstream("192.0.2.7");
    });
    after(async () => {
      await up.close();
    });

    it("sends the question in random case and takes the reply that echoes it", async () => {
      up.mode = "answer";
      up.received.length = 0;
      const f = new Forwarder({
        udpIo,
        upstreams: [{ host: "127.0.0.1", port: up.port }],
        caseRandomization: true,
        log: silentLogger(),
      });
      try {
        const names = Array.from({ length: 40 }, (_, i) => `casetest${i}.example.net`);
        const replies = await forwardAll(f, names, 20);
        for (const r of replies) assert.deepEqual(addresses(r), ["192.0.2.7"]);
      } finally {
        f.close();
      }
      const sent = up.received.map((x) => x.packet.questions![0]!.name);
      // Each of the 40 names has 20 letters: all lower case by chance has odds of 2^-20 each.
      for (const name of sent) assert.notEqual(name, name.toLowerCase(), `${name} went out in lower case`);
      assert.equal(new Set(sent.map((n) => n.replace(/\d+/, ""))).size > 30, true);
    });

    it("ignores (and counts) replies from an upstream that does not keep the case, with one warning", async () => {
      up.mode = "lowercase";
      const out = new PassThrough();
      let logged = "";
      out.on("data", (d: Buffer) => (logged += d.toString()));
      const f = new Forwarder({
        udpIo,
        upstreams: [{ host: "127.0.0.1", port: up.port }],
        caseRandomization: true,
        timeoutMs: 400,
        attemptTimeoutMs: 400,
        log: createLogger({ level: "warn", format: "text", destination: out }),
      });
      let mismatched = 0;
      f.onMismatched = () => void mismatched++;
      try {
        const asked = ["lower1.example.net", "lower2.example.net"].map((n) => {
          const c = query(n);
          return f.forward(c, decoded(c));
        });
        for (const p of asked) await assert.rejects(p, /no upstream answered/);
      } finally {
        f.close();
        up.mode = "answer";
      }
      assert.equal(mismatched, 2);
      assert.equal(countMatches(logged, /does not keep the case/), 1, logged);
      // Without 0x20 the same upstream is fine.
      up.mode = "lowercase";
      const plain = forwarderPlain(up.port, udpIo);
      try {
        const c = query("Lower3.Example.Net");
        assert.deepEqual(addresses(dnsPacket.decode(await plain.forward(c, decoded(c)))), ["192.0.2.7"]);
      } finally {
        plain.close();
        up.mode = "answer";
      }
    });
  });
}

function forwarderPlain(port: number, udpIo: "native" | "dgram"): Forwarder {
  return new Forwarder({ udpIo, upstreams: [{ host: "127.0.0.1", port }], log: silentLogger() });
}
