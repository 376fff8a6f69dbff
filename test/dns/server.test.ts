/**
 * DnsServer on 127.0.0.1 (free port) queried with the real dig and kdig, plus
 * raw packets for what they will not send. The summoner is a fake SummonTarget:
 * that is the boundary between the DNS layer and the summoner.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { DnsServer, Forwarder, REFUSED, ZoneIndex, type SummonTarget } from "../../src/dns/index.js";
import { SummonRefusedError } from "../../src/errors/index.js";
import { silentLogger } from "../../src/log/index.js";
import { dig, digAt, kdig } from "./helpers/dig.js";
import { tcpClient } from "../support/dns-tcp.js";
import { sendRaw } from "../support/index.js";
import { specFrom } from "./helpers/specs.js";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";

const MANY = Array.from({ length: 40 }, (_, i) => `10.1.0.${i + 1}`);

class FakeSummoner implements SummonTarget {
  readonly calls: string[] = [];
  /** The client address each call was given. */
  readonly clients: (string | undefined)[] = [];
  readonly addresses = new Map<string, readonly string[]>([
    ["www", ["10.0.0.1", "fd00::1"]],
    ["v4only", ["10.0.0.2"]],
    ["slow", ["10.0.0.3"]],
    ["many", MANY],
  ]);
  request(label: string, client?: string): readonly string[] | Promise<readonly string[]> {
    this.calls.push(label);
    this.clients.push(client);
    // Admission control refusing the client: thrown (the Summoner) or as a rejection (a --workers worker).
    if (label === "refused") throw new SummonRefusedError("summon-rate", "client over its rate");
    if (label === "refusedlater") {
      return Promise.reject(new SummonRefusedError("summon-rate", "client over its rate"));
    }
    if (label === "slow") {
      return new Promise((resolve) => setTimeout(() => resolve(this.addresses.get("slow")!), 300));
    }
    if (label === "broken") return Promise.reject(new Error("backend exploded"));
    if (label === "throws") throw new Error("summoner bug");
    if (label === "badaddr") return ["not-an-address"];
    return this.addresses.get(label)!;
  }
  /** "slow", "broken" and "throws" are cold; the others are ready. */
  requestIfReady(label: string): readonly string[] | null {
    if (label === "slow" || label === "broken" || label === "throws") return null;
    this.calls.push(label);
    return this.addresses.get(label) ?? null;
  }
}

const SPECS = [
  specFrom("dns=www.example.org,ip=10.0.0.1,ip=fd00::1,name=www"),
  specFrom("dns=v4only.example.org,ip=10.0.0.2,name=v4only"),
  specFrom("dns=slow.example.org,ip=10.0.0.3,name=slow"),
  specFrom("dns=broken.example.org,ip=10.0.0.4,name=broken"),
  specFrom("dns=throws.example.org,ip=10.0.0.5,name=throws"),
  specFrom("dns=badaddr.example.org,ip=10.0.0.6,name=badaddr"),
  specFrom(`dns=many.example.org,${MANY.map((ip) => `ip=${ip}`).join(",")},name=many`),
  specFrom("dns=refused.example.org,ip=10.0.0.7,name=refused"),
  specFrom("dns=refusedlater.example.org,ip=10.0.0.8,name=refusedlater"),
];

function rawQuery(name: string, type: dnsPacket.RecordType, id = 0x4242): Buffer {
  return dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type }],
  });
}

function rcodeOf(buf: Buffer): number {
  return buf[3]! & 0x0f;
}

describe("DnsServer, forwarding disabled (-f 0.0.0.0)", () => {
  const summoner = new FakeSummoner();
  let server: DnsServer;
  let port: number;
  before(async () => {
    const log = silentLogger();
    server = new DnsServer({
      zone: new ZoneIndex(SPECS, 60, log),
      summoner,
      forwarder: null,
      log,
      ttlSeconds: 60,
    });
    await server.listen("127.0.0.1", 0);
    port = server.port;
  });
  after(async () => {
    await server.close();
  });

  it("answers A for a ready VM at once, authoritative, TTL = ttl, question echoed as asked", async () => {
    const r = await dig(port, "WwW.Example.ORG", "A");
    assert.equal(r.status, "NOERROR");
    assert.ok(r.flags.includes("aa"), r.raw);
    assert.equal(r.question, ";WwW.Example.ORG. IN A");
    assert.deepEqual(r.answers, ["WwW.Example.ORG. 60 IN A 10.0.0.1"]);
    assert.equal(summoner.calls.at(-1), "www");
  });

  it("answers AAAA with the v6 addresses, and NODATA with the SOA for a v4-only VM", async () => {
    const r = await dig(port, "www.example.org", "AAAA");
    assert.deepEqual(r.answers, ["www.example.org. 60 IN AAAA fd00::1"]);
    const n = await dig(port, "v4only.example.org", "AAAA");
    assert.equal(n.status, "NOERROR");
    assert.deepEqual(n.answers, []);
    assert.match(
      n.authority[0] ?? "",
      /^example\.org\. 60 IN SOA ns\.example\.org\. hostmaster\.example\.org\. \d+ 3600 600 86400 60$/,
    );
  });

  it("waits for a VM that is starting (UDP and TCP), SERVFAIL when it cannot start", async () => {
    const [u, t] = await Promise.all([dig(port, "slow.example.org"), dig(port, "slow.example.org", "+tcp")]);
    assert.deepEqual(u.answers, ["slow.example.org. 60 IN A 10.0.0.3"]);
    assert.deepEqual(t.answers, ["slow.example.org. 60 IN A 10.0.0.3"]);
    assert.equal((await dig(port, "broken.example.org")).status, "SERVFAIL");
    assert.equal((await dig(port, "throws.example.org")).status, "SERVFAIL");
    assert.equal((await dig(port, "badaddr.example.org")).status, "SERVFAIL");
  });

  it("gives the summoner the client's address (UDP and TCP)", async () => {
    await dig(port, "www.example.org");
    assert.equal(summoner.clients.at(-1), "127.0.0.1");
    await dig(port, "+tcp", "www.example.org");
    assert.equal(summoner.clients.at(-1), "127.0.0.1");
  });

  it("answers REFUSED (not SERVFAIL) when admission control refuses the client, and counts it", async () => {
    const before = server.counters.refusedByReason.get("summon-rate")!;
    const u = await dig(port, "+ednsopt=65001:abcd", "refused.example.org");
    assert.equal(u.status, "REFUSED");
    assert.equal(u.question, ";refused.example.org. IN A");
    assert.match(u.edns ?? "", /version: 0/, "the query's OPT is answered with ours");
    assert.deepEqual(u.answers, []);
    assert.equal((await dig(port, "+tcp", "refused.example.org")).status, "REFUSED");
    assert.equal((await dig(port, "refusedlater.example.org", "AAAA")).status, "REFUSED");
    assert.equal(server.counters.refusedByReason.get("summon-rate"), before + 3);
    assert.equal(server.counters.snapshot().refused[REFUSED["summon-rate"]], before + 3);
  });

  it("answers other types for managed names from the zone without summoning", async () => {
    const before = summoner.calls.length;
    const mx = await dig(port, "www.example.org", "MX");
    assert.equal(mx.status, "NOERROR");
    assert.ok(mx.flags.includes("aa"));
    assert.deepEqual(mx.answers, []);
    assert.match(mx.authority[0] ?? "", /^example\.org\. 60 IN SOA /);
    const any = await dig(port, "www.example.org", "ANY");
    assert.equal(any.status, "NOERROR");
    assert.equal(summoner.calls.length, before);
  });

  it("synthesises SOA and NS for the zone, authoritative", async () => {
    const soa = await dig(port, "example.org", "SOA");
    assert.ok(soa.flags.includes("aa"));
    assert.match(soa.answers[0] ?? "", /^example\.org\. 60 IN SOA ns\.example\.org\. /);
    const ns = await dig(port, "Example.Org", "NS");
    assert.deepEqual(ns.answers, ["example.org. 60 IN NS ns.example.org."]);
    assert.equal(ns.question, ";Example.Org. IN NS");
  });

  it("answers PTR for managed addresses (in-addr.arpa and ip6.arpa)", async () => {
    const v4 = await dig(port, "-x", "10.0.0.1");
    assert.ok(v4.flags.includes("aa"));
    assert.deepEqual(v4.answers, ["1.0.0.10.in-addr.arpa. 60 IN PTR www.example.org."]);
    const v6 = await dig(port, "-x", "fd00::1");
    assert.equal(v6.answers.length, 1);
    assert.match(v6.answers[0]!, /\.ip6\.arpa\. 60 IN PTR www\.example\.org\.$/);
  });

  it("answers NXDOMAIN with the SOA inside a managed zone, REFUSED outside", async () => {
    const nx = await dig(port, "nope.example.org", "A");
    assert.equal(nx.status, "NXDOMAIN");
    assert.ok(nx.flags.includes("aa"));
    assert.match(nx.authority[0] ?? "", /^example\.org\. 60 IN SOA /);
    const out = await kdig(port, "www.example.com", "A");
    assert.equal(out.status, "REFUSED");
    const unmanagedPtr = await dig(port, "-x", "10.9.9.9");
    assert.equal(unmanagedPtr.status, "REFUSED");
  });

  it("works over TCP with dig +tcp and kdig +tcp, and with +norec", async () => {
    assert.deepEqual((await dig(port, "+tcp", "www.example.org")).answers, [
      "www.example.org. 60 IN A 10.0.0.1",
    ]);
    const k = await kdig(port, "+tcp", "www.example.org");
    assert.deepEqual(k.answers, ["www.example.org. 60 IN A 10.0.0.1"]);
    const nr = await dig(port, "+norec", "www.example.org");
    assert.ok(nr.flags.includes("aa") && !nr.flags.includes("rd"), nr.flags.join(" "));
    assert.deepEqual(nr.answers, ["www.example.org. 60 IN A 10.0.0.1"]);
  });

  it("truncates big UDP answers with TC (OPT kept), full over TCP; honours +bufsize", async () => {
    const cut = await dig(port, "+bufsize=512", "+ignore", "many.example.org");
    assert.ok(cut.flags.includes("tc"), cut.raw);
    assert.deepEqual(cut.answers, []);
    assert.match(cut.edns ?? "", /version: 0/);
    const noEdns = await dig(port, "+noedns", "+ignore", "many.example.org");
    assert.ok(noEdns.flags.includes("tc"));
    assert.equal(noEdns.edns, undefined);
    const big = await dig(port, "+bufsize=4096", "many.example.org");
    assert.equal(big.answers.length, 40);
    assert.ok(!big.flags.includes("tc"));
    const retried = await dig(port, "+bufsize=512", "many.example.org"); // dig retries over TCP
    assert.equal(retried.answers.length, 40);
  });

  it("answers EDNS queries with our OPT, BADVERS for version 1, unknown options ignored", async () => {
    const r = await dig(port, "+ednsopt=65001:abcd", "+cookie", "www.example.org");
    assert.match(r.edns ?? "", /version: 0, flags:; udp: 1232/);
    assert.deepEqual(r.answers, ["www.example.org. 60 IN A 10.0.0.1"]);
    const bad = await dig(port, "+edns=1", "+noednsnegotiation", "www.example.org");
    assert.equal(bad.status, "BADVERS");
    assert.match(bad.edns ?? "", /version: 0/);
    const kbad = await kdig(port, "+edns=1", "www.example.org");
    assert.equal(kbad.status, "BADVERS");
  });

  it("refuses zone transfers", async () => {
    const r = await sendRaw(port, rawQuery("example.org", "AXFR"));
    assert.equal(rcodeOf(r!), 5);
    const t = await tcpClient(port);
    t.send(rawQuery("example.org", "IXFR"));
    const [m] = await t.waitFor(1);
    assert.equal(rcodeOf(m!), 5);
    t.sock.destroy();
  });

  it("drops or rejects bad packets, counts them, and keeps answering", async () => {
    const c = server.counters;
    const dropped = c.dropped;
    const malformed = c.malformed;
    // Shorter than a header: dropped.
    assert.equal(await sendRaw(port, Buffer.from([1, 2, 3, 4, 5]), 400), null);
    // Header then garbage: FORMERR with the ID.
    const garbage = Buffer.concat([
      rawQuery("a.b", "A", 0x0102).subarray(0, 12),
      Buffer.from("\xff\xfe garbage", "latin1"),
    ]);
    const fe = await sendRaw(port, garbage);
    assert.equal(fe!.readUInt16BE(0), 0x0102);
    assert.equal(rcodeOf(fe!), 1);
    assert.equal(fe![2]! & 0x80, 0x80);
    // A response sent to us: dropped.
    const resp = rawQuery("www.example.org", "A");
    resp[2] = resp[2]! | 0x80;
    assert.equal(await sendRaw(port, resp, 400), null);
    // Opcode 2 (STATUS): NOTIMP.
    const status = rawQuery("www.example.org", "A");
    status[2] = (status[2]! & 0x87) | (2 << 3);
    const ni = await sendRaw(port, status);
    assert.equal(rcodeOf(ni!), 4);
    assert.equal((ni![2]! >> 3) & 0x0f, 2);
    // Two questions: FORMERR.
    const two = dnsPacket.encode({
      type: "query",
      id: 9,
      questions: [
        { name: "www.example.org", type: "A" },
        { name: "v4only.example.org", type: "A" },
      ],
    });
    assert.equal(rcodeOf((await sendRaw(port, two))!), 1);
    // Zero questions: FORMERR.
    assert.equal(
      rcodeOf((await sendRaw(port, dnsPacket.encode({ type: "query", id: 10, questions: [] })))!),
      1,
    );
    // Bad packets over TCP too, on one connection, then a good query on it.
    const t = await tcpClient(port);
    t.send(Buffer.from([9, 9, 9]));
    t.send(garbage);
    t.send(rawQuery("www.example.org", "A", 77));
    const msgs = await t.waitFor(2);
    assert.equal(rcodeOf(msgs[0]!), 1);
    assert.equal(msgs[1]!.readUInt16BE(0), 77);
    t.sock.destroy();
    assert.equal(c.dropped - dropped, 3);
    assert.ok(c.malformed - malformed >= 4, `malformed ${c.malformed - malformed}`);
    assert.deepEqual((await dig(port, "www.example.org")).answers, ["www.example.org. 60 IN A 10.0.0.1"]);
  });

  it("pipelines TCP queries: a fast answer overtakes a slow one on the same connection", async () => {
    const t = await tcpClient(port);
    t.send(rawQuery("slow.example.org", "A", 1));
    t.send(rawQuery("www.example.org", "A", 2));
    t.send(rawQuery("www.example.org", "AAAA", 3));
    const msgs = await t.waitFor(3);
    assert.deepEqual(
      msgs.map((m) => m.readUInt16BE(0)),
      [2, 3, 1],
    );
    t.sock.destroy();
  });

  it("counts queries by type and result", () => {
    const c = server.counters;
    assert.ok((c.queriesByType.get("A") ?? 0) > 5);
    assert.ok((c.queriesByType.get("AAAA") ?? 0) >= 2);
    assert.ok((c.queriesByResult.get("NOERROR") ?? 0) > 5);
    assert.ok((c.queriesByResult.get("NXDOMAIN") ?? 0) >= 1);
    assert.ok((c.queriesByResult.get("REFUSED") ?? 0) >= 2);
    assert.ok((c.queriesByResult.get("SERVFAIL") ?? 0) >= 2);
    assert.ok(c.truncated >= 2);
  });
});

describe("DnsServer with a forwarder", () => {
  let up: TestUpstream;
  let server: DnsServer;
  let forwarder: Forwarder;
  const latencies: number[] = [];
  before(async () => {
    up = await startUpstream("192.0.2.7");
    const log = silentLogger();
    forwarder = new Forwarder({
      upstreams: [{ host: "127.0.0.1", port: up.port }],
      timeoutMs: 800,
      attemptTimeoutMs: 800,
      log,
    });
    server = new DnsServer({
      zone: new ZoneIndex(SPECS, 60, log),
      summoner: new FakeSummoner(),
      forwarder,
      log,
      ttlSeconds: 60,
    });
    server.counters.onForwardLatency = (seconds) => latencies.push(seconds);
    await server.listen("127.0.0.1", 0);
  });
  after(async () => {
    await server.close();
    forwarder.close();
    await up.close();
  });

  it("forwards unmanaged names in a managed zone and outside it, question echoed as asked", async () => {
    up.mode = "answer";
    const inZone = await dig(server.port, "FtP.Example.Org");
    assert.equal(inZone.status, "NOERROR");
    assert.equal(inZone.question, ";FtP.Example.Org. IN A");
    assert.deepEqual(inZone.answers, ["FtP.Example.Org. 30 IN A 192.0.2.7"]);
    assert.ok(inZone.flags.includes("ra"));
    const outside = await kdig(server.port, "www.example.com");
    assert.deepEqual(outside.answers, ["www.example.com. 30 IN A 192.0.2.7"]);
    assert.ok(server.counters.forwarded >= 2);
    assert.ok(server.counters.forwardLatencyCount >= 2);
    assert.ok(server.counters.forwardLatencySum > 0);
    assert.ok(latencies.length >= 2 && latencies.every((s) => s > 0 && s < 5));
    assert.equal(server.counters.queriesByResult.get("forwarded"), server.counters.forwardLatencyCount);
  });

  it("still answers managed names itself", async () => {
    const before = up.received.length;
    assert.deepEqual((await dig(server.port, "www.example.org")).answers, [
      "www.example.org. 60 IN A 10.0.0.1",
    ]);
    assert.equal(up.received.length, before);
  });

  it("relays an answer the upstream first truncated, fetched over TCP", async () => {
    up.mode = "truncate";
    const r = await dig(server.port, "tc.example.net");
    assert.deepEqual(r.answers, ["tc.example.net. 30 IN A 192.0.2.7"]);
    assert.equal(up.received.at(-1)?.transport, "tcp");
  });

  it("answers SERVFAIL when the upstream stays silent", async () => {
    up.mode = "silent";
    const failures = server.counters.forwardFailures;
    const r = await dig(server.port, "quiet.example.net");
    assert.equal(r.status, "SERVFAIL");
    assert.equal(server.counters.forwardFailures, failures + 1);
  });

  it("passes the client's EDNS on and answers with an OPT", async () => {
    up.mode = "answer";
    const r = await dig(server.port, "+bufsize=1400", "+dnssec", "edns.example.net");
    assert.deepEqual(r.answers, ["edns.example.net. 30 IN A 192.0.2.7"]);
    assert.ok(r.edns !== undefined);
    const sent = up.received
      .at(-1)!
      .packet.additionals!.find((a) => a.type === "OPT") as unknown as dnsPacket.OptAnswer;
    assert.equal(sent.flags & dnsPacket.DNSSEC_OK, dnsPacket.DNSSEC_OK);
  });
});

describe("DnsServer reload and shutdown", () => {
  it("serves the new zone after setZone, and the old names no more", async () => {
    const log = silentLogger();
    const summoner = new FakeSummoner();
    summoner.addresses.set("new", ["10.0.0.9"]);
    const server = new DnsServer({
      zone: new ZoneIndex(SPECS, 60, log),
      summoner,
      forwarder: null,
      log,
      ttlSeconds: 60,
    });
    await server.listen("127.0.0.1", 0);
    try {
      assert.deepEqual((await dig(server.port, "www.example.org")).answers, [
        "www.example.org. 60 IN A 10.0.0.1",
      ]);
      server.setZone(new ZoneIndex([specFrom("dns=new.example.net,ip=10.0.0.9,name=new")], 60, log));
      assert.deepEqual((await dig(server.port, "new.example.net")).answers, [
        "new.example.net. 60 IN A 10.0.0.9",
      ]);
      assert.equal((await dig(server.port, "www.example.org")).status, "REFUSED");
    } finally {
      await server.close();
    }
  });

  it("answers queries in flight before closing, then stops answering", async () => {
    const log = silentLogger();
    const server = new DnsServer({
      zone: new ZoneIndex(SPECS, 60, log),
      summoner: new FakeSummoner(),
      forwarder: null,
      log,
      ttlSeconds: 60,
    });
    await server.listen("127.0.0.1", 0);
    const port = server.port;
    const answer = sendRaw(port, rawQuery("slow.example.org", "A", 31), 3000);
    const tcp = await tcpClient(port);
    tcp.send(rawQuery("slow.example.org", "A", 32));
    await new Promise((resolve) => setTimeout(resolve, 100)); // both are waiting for the VM
    await server.close();
    const udpReply = await answer;
    assert.equal(udpReply?.readUInt16BE(0), 31);
    assert.equal(tcp.messages[0]?.readUInt16BE(0), 32);
    await tcp.closed;
    assert.equal(await sendRaw(port, rawQuery("www.example.org", "A"), 400), null);
  });
});

describe("DnsServer on IPv6 loopback", () => {
  it("answers over UDP and TCP on ::1", async () => {
    const log = silentLogger();
    const server = new DnsServer({
      zone: new ZoneIndex(SPECS, 60, log),
      summoner: new FakeSummoner(),
      forwarder: null,
      log,
      ttlSeconds: 60,
    });
    await server.listen("::1", 0);
    try {
      assert.deepEqual((await digAt("::1", server.port, "www.example.org", "AAAA")).answers, [
        "www.example.org. 60 IN AAAA fd00::1",
      ]);
      assert.deepEqual((await digAt("::1", server.port, "+tcp", "www.example.org")).answers, [
        "www.example.org. 60 IN A 10.0.0.1",
      ]);
    } finally {
      await server.close();
    }
  });
});
