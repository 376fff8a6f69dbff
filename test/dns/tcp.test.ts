/**
 * DNS over TCP and its limits (RFC 7766 §6.2): a DnsServer on 127.0.0.1 with
 * short timeouts, real client sockets (from 127.0.0.1 and 127.0.0.2, both this
 * host's), a summoner whose slow VM the test releases by hand, and a local
 * upstream for forwarded names.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { DnsServer, Forwarder, ZoneIndex, type SummonTarget } from "../../src/dns/index.js";
import { silentLogger } from "../../src/log/index.js";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";
import { tcpClient } from "../support/dns-tcp.js";
import { specFrom } from "./helpers/specs.js";

const SPECS = [
  specFrom("dns=www.example.org,ip=10.0.0.1,name=www"),
  specFrom("dns=held.example.org,ip=10.0.0.2,name=held"),
  specFrom(
    `dns=many.example.org,${Array.from({ length: 40 }, (_, i) => `ip=10.1.0.${i + 1}`).join(",")},name=many`,
  ),
];

/** www and many are ready; held is answered when the test calls release(). */
class HeldSummoner implements SummonTarget {
  private waiting: (() => void)[] = [];
  request(label: string): readonly string[] | Promise<readonly string[]> {
    if (label === "held") return new Promise((resolve) => this.waiting.push(() => resolve(["10.0.0.2"])));
    if (label === "many") return Array.from({ length: 40 }, (_, i) => `10.1.0.${i + 1}`);
    return ["10.0.0.1"];
  }
  requestIfReady(label: string): readonly string[] | null {
    const r = label === "held" ? null : this.request(label);
    return Array.isArray(r) ? (r as readonly string[]) : null;
  }
  release(): void {
    for (const w of this.waiting.splice(0)) w();
  }
}

function query(name: string, id: number, type: dnsPacket.RecordType = "A"): Buffer {
  return dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type }],
  });
}

function framed(packet: Buffer): Buffer {
  const out = Buffer.alloc(2 + packet.length);
  out.writeUInt16BE(packet.length, 0);
  packet.copy(out, 2);
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function startServer(opts: {
  idleMs: number;
  max?: number;
  perClient?: number;
  upstream?: TestUpstream;
}): Promise<{ server: DnsServer; summoner: HeldSummoner; forwarder: Forwarder | null }> {
  const log = silentLogger();
  const summoner = new HeldSummoner();
  const forwarder =
    opts.upstream === undefined
      ? null
      : new Forwarder({ upstreams: [{ host: "127.0.0.1", port: opts.upstream.port }], log });
  const server = new DnsServer({
    zone: new ZoneIndex(SPECS, 60, log),
    summoner,
    forwarder,
    log,
    ttlSeconds: 60,
    tcpIdleTimeoutMs: opts.idleMs,
    maxTcpConnections: opts.max,
    tcpPerClient: opts.perClient,
  });
  await server.listen("127.0.0.1", 0);
  return { server, summoner, forwarder };
}

describe("DNS TCP: deadlines (RFC 7766 §6.2.3)", () => {
  let server: DnsServer;
  let summoner: HeldSummoner;
  before(async () => {
    ({ server, summoner } = await startServer({ idleMs: 1000 }));
  });
  after(async () => {
    summoner.release();
    await server.close();
  });

  it("closes a connection that sends nothing at the idle timeout", async () => {
    const idle = await tcpClient(server.port);
    const t0 = Date.now();
    await idle.closed;
    const took = Date.now() - t0;
    assert.ok(took >= 950 && took < 1500, `closed after ${took} ms`);
    assert.equal(server.counters.tcpClosedByReason.get("idle"), 1);
  });

  it("closes a connection trickling a message a byte every 100 ms at the idle timeout", async () => {
    const slowBefore = server.counters.tcpClosedByReason.get("slow")!;
    const t = await tcpClient(server.port);
    const bytes = framed(query("www.example.org", 7));
    let sent = 0;
    const t0 = Date.now();
    // 33 bytes at 10 a second would take 3.3 s: the deadline is 1 s from the first.
    const timer = setInterval(() => {
      if (sent < bytes.length && !t.sock.destroyed) t.sock.write(bytes.subarray(sent, ++sent));
    }, 100);
    await t.closed;
    clearInterval(timer);
    const took = Date.now() - t0;
    assert.ok(took >= 950 && took < 1500, `closed after ${took} ms, ${sent} bytes sent`);
    assert.ok(sent >= 9, `only ${sent} bytes were sent`);
    assert.equal(t.messages.length, 0);
    assert.equal(server.counters.tcpClosedByReason.get("slow"), slowBefore + 1);
  });

  it("keeps a connection that completes a query every 600 ms open past 3 idle timeouts", async () => {
    const t = await tcpClient(server.port);
    for (let i = 1; i <= 6; i++) {
      await sleep(600);
      t.send(query("www.example.org", i));
      assert.equal((await t.waitFor(i))[i - 1]?.readUInt16BE(0), i);
    }
    assert.equal(t.sock.destroyed, false);
    t.sock.destroy();
  });

  it("does not close a connection waiting for an answer, then runs the idle timeout from the answer", async () => {
    const t = await tcpClient(server.port);
    t.send(query("held.example.org", 9));
    await sleep(1500);
    assert.equal(t.sock.destroyed, false, "closed while waiting for its answer");
    summoner.release();
    assert.equal((await t.waitFor(1))[0]?.readUInt16BE(0), 9);
    const answered = Date.now();
    await t.closed;
    const took = Date.now() - answered;
    assert.ok(took >= 900 && took < 1500, `closed ${took} ms after the answer`);
  });

  it("closes a connection that does not read its answers at the idle timeout", async () => {
    const slowBefore = server.counters.tcpClosedByReason.get("slow")!;
    const t = await tcpClient(server.port);
    t.sock.pause(); // reads nothing: the answers fill both sockets' buffers
    const q = framed(query("many.example.org", 1)); // ~700 bytes of answer each
    const batch = Buffer.concat(Array.from({ length: 1000 }, () => q));
    for (let i = 0; i < 40 && !t.sock.destroyed; i++) {
      t.sock.write(batch);
      await sleep(10);
    }
    // A paused socket does not see its end: the server's count says it closed it.
    const deadline = Date.now() + 5000;
    while (server.counters.tcpClosedByReason.get("slow") === slowBefore && Date.now() < deadline)
      await sleep(50);
    assert.equal(server.counters.tcpClosedByReason.get("slow"), slowBefore + 1);
    t.sock.resume(); // reads what was sent, then the end
    await Promise.race([t.closed, sleep(5000)]);
    assert.equal(t.sock.destroyed, true, "still open");
  });
});

describe("DNS TCP: per-client and global limits", () => {
  let server: DnsServer;
  before(async () => {
    ({ server } = await startServer({ idleMs: 5000, max: 12, perClient: 8 }));
  });
  after(async () => {
    await server.close();
  });

  it("closes a 9th connection from one address; another address is still served", async () => {
    const eight = await Promise.all(Array.from({ length: 8 }, () => tcpClient(server.port)));
    const ninth = await tcpClient(server.port);
    await Promise.race([ninth.closed, sleep(2000)]);
    assert.equal(ninth.sock.destroyed, true, "the 9th connection from 127.0.0.1 is open");
    assert.equal(server.counters.tcpClosedByReason.get("per-client"), 1);
    const other = await tcpClient(server.port, { localAddress: "127.0.0.2" });
    other.send(query("www.example.org", 2));
    assert.equal((await other.waitFor(1))[0]?.readUInt16BE(0), 2);
    // The eight still work; one closed frees a slot.
    eight[0]!.send(query("www.example.org", 3));
    assert.equal((await eight[0]!.waitFor(1))[0]?.readUInt16BE(0), 3);
    eight[7]!.sock.destroy();
    await eight[7]!.closed;
    await sleep(50);
    const again = await tcpClient(server.port);
    again.send(query("www.example.org", 4));
    assert.equal((await again.waitFor(1))[0]?.readUInt16BE(0), 4);
    for (const t of [...eight, other, again]) t.sock.destroy();
    await sleep(50);
  });

  it("at the limit, closes the connection idle longest to admit a new one", async () => {
    const evictedBefore = server.counters.tcpClosedByReason.get("evicted")!;
    // 12 connections from 12 addresses (so the per-client limit stays out of it).
    const conns = [];
    for (let i = 0; i < 12; i++)
      conns.push(await tcpClient(server.port, { localAddress: `127.0.1.${i + 1}` }));
    // All but the first send a query: the first is the one idle longest.
    for (let i = 1; i < 12; i++) {
      conns[i]!.send(query("www.example.org", i));
      await conns[i]!.waitFor(1);
    }
    const newcomer = await tcpClient(server.port, { localAddress: "127.0.1.100" });
    newcomer.send(query("www.example.org", 100));
    assert.equal((await newcomer.waitFor(1))[0]?.readUInt16BE(0), 100);
    await Promise.race([conns[0]!.closed, sleep(2000)]);
    assert.equal(conns[0]!.sock.destroyed, true, "the idle-longest connection is open");
    for (let i = 1; i < 12; i++) assert.equal(conns[i]!.sock.destroyed, false, `connection ${i} closed`);
    assert.equal(server.counters.tcpClosedByReason.get("evicted"), evictedBefore + 1);
    for (const t of [...conns, newcomer]) t.sock.destroy();
    await sleep(50);
  });
});

describe("DNS TCP: pipelining (RFC 7766 §6.2.1.1)", () => {
  let upstream: TestUpstream;
  let server: DnsServer;
  let summoner: HeldSummoner;
  let forwarder: Forwarder | null;
  before(async () => {
    upstream = await startUpstream("192.0.2.7");
    ({ server, summoner, forwarder } = await startServer({ idleMs: 5000, upstream }));
  });
  after(async () => {
    summoner.release();
    await server.close();
    forwarder?.close();
    await upstream.close();
  });

  it("answers forwarded and ready queries while a summon on the same connection is still under way", async () => {
    const t = await tcpClient(server.port);
    // One write: three pipelined queries in one segment.
    t.sock.write(
      Buffer.concat([
        framed(query("held.example.org", 1)),
        framed(query("elsewhere.example.com", 2)),
        framed(query("www.example.org", 3)),
      ]),
    );
    const first = await t.waitFor(2);
    assert.deepEqual(first.map((m) => m.readUInt16BE(0)).sort(), [2, 3]);
    const fwd = dnsPacket.decode(first.find((m) => m.readUInt16BE(0) === 2)!);
    assert.deepEqual(
      fwd.answers?.map((a) => (a as dnsPacket.StringAnswer).data),
      ["192.0.2.7"],
    );
    assert.equal(t.messages.length, 2, "the held summon was answered before its VM was ready");
    summoner.release();
    const all = await t.waitFor(3);
    assert.equal(all[2]?.readUInt16BE(0), 1);
    assert.deepEqual(
      dnsPacket.decode(all[2]!).answers?.map((a) => (a as dnsPacket.StringAnswer).data),
      ["10.0.0.2"],
    );
    t.sock.destroy();
  });
});
