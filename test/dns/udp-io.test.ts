/**
 * DNS over UDP through the batched addon (src/dns/native-udp.ts: recvmmsg,
 * sendmmsg) and through dgram, its fallback (JITSU_UDP_IO=dgram, or no
 * compiler at build time): the same answers to good and bad input. Short and
 * garbage packets, responses, a 64 KB datagram, a burst sent at once (several
 * datagrams per batch), answers made later (a summon), and a datagram from
 * port 0 (sent through a raw socket by python3, as only root can): each is
 * answered, or not, alike on both paths.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import dgram from "node:dgram";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { DnsServer, UDP_IO_ADDON, UDP_IO_ENV, ZoneIndex, nativeUdp } from "../../src/dns/index.js";
import { silentLogger } from "../../src/log/index.js";
import { specFrom } from "./helpers/specs.js";

type Io = "native" | "dgram";

function query(name: string, id = 7): Buffer {
  return dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: "A", class: "IN" }],
  });
}

/** Starts a server for www.example.org (ready, 10.0.0.1) and slow.example.org (ready after 30 ms, 10.0.0.2) on `io`. */
async function startServer(io: Io): Promise<DnsServer> {
  const log = silentLogger();
  const server = new DnsServer({
    zone: new ZoneIndex(
      [
        specFrom("dns=www.example.org,ip=10.0.0.1,name=www"),
        specFrom("dns=slow.example.org,ip=10.0.0.2,name=slow"),
      ],
      60,
      log,
    ),
    summoner: {
      request: (vm) =>
        vm === "www" ? ["10.0.0.1"] : new Promise((resolve) => setTimeout(() => resolve(["10.0.0.2"]), 30)),
      requestIfReady: (vm) => (vm === "www" ? ["10.0.0.1"] : null),
    },
    forwarder: null,
    log,
    ttlSeconds: 60,
  });
  const saved = process.env[UDP_IO_ENV];
  if (io === "dgram") process.env[UDP_IO_ENV] = "dgram";
  try {
    await server.listen("127.0.0.1", 0);
  } finally {
    if (saved === undefined) delete process.env[UDP_IO_ENV];
    else process.env[UDP_IO_ENV] = saved;
  }
  return server;
}

/** Sends each of `packets` at once from one socket; resolves with the replies by ID (null: none within `ms`). */
async function exchange(port: number, packets: Buffer[], ms = 800): Promise<Buffer[]> {
  const sock = dgram.createSocket({ type: "udp4", recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  const got: Buffer[] = [];
  sock.on("message", (msg) => got.push(msg));
  await new Promise<void>((resolve) => sock.bind(0, "127.0.0.1", () => resolve()));
  for (const p of packets) sock.send(p, port, "127.0.0.1");
  await new Promise((resolve) => setTimeout(resolve, ms));
  sock.close();
  return got;
}

/** What came back for one probe, comparable across paths. */
function summary(replies: Buffer[]): string[] {
  return replies
    .map((r) => {
      if (r.length < 12) return `short ${r.length}`;
      const rcode = r[3]! & 0x0f;
      try {
        const p = dnsPacket.decode(r);
        const a = (p.answers ?? []).map((x) => (x as { data: string }).data).join(",");
        return `id ${p.id} rcode ${rcode} ${a}`;
      } catch {
        return `id ${r.readUInt16BE(0)} rcode ${rcode} (undecodable, ${r.length} bytes)`;
      }
    })
    .sort();
}

/** One datagram from 127.0.0.1 port `from` (0 included) to `port` (a raw socket: root only). */
function sendFromPort(from: number, port: number, payload: Buffer): void {
  const script = `
import socket, struct, sys
payload = bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.sendto(struct.pack("!HHHH", int(sys.argv[3]), int(sys.argv[1]), 8 + len(payload), 0) + payload, ("127.0.0.1", 0))
`;
  const res = spawnSync("python3", ["-c", script, String(port), payload.toString("hex"), String(from)], {
    encoding: "utf8",
  });
  assert.equal(res.status, 0, `python3 raw socket: ${res.stderr}`);
}

const garbage = Buffer.from("this is not DNS at all, but long enough for a header");
const response = Buffer.from(query("www.example.org", 9));
response[2]! |= 0x80;
/** A query for www.example.org padded to 65,507 bytes (the largest UDP datagram over IPv4). */
const huge = Buffer.concat([
  query("www.example.org", 11),
  Buffer.alloc(65507 - query("www.example.org").length, 0xab),
]);
/** Header says one question, but the packet ends inside the name. */
const cut = query("www.example.org", 12).subarray(0, 20);

const PROBES: Record<string, Buffer[]> = {
  "an ordinary query": [query("www.example.org", 1)],
  "an answer made later (a summon)": [query("slow.example.org", 2)],
  "a packet shorter than a header": [Buffer.from([1, 2, 3, 4, 5])],
  "an empty datagram": [Buffer.alloc(0)],
  garbage: [garbage],
  "a response (QR set)": [response],
  "a question cut short": [cut],
  "a 64 KB datagram": [huge],
  "a burst of 300 queries, half answered later": Array.from({ length: 300 }, (_, i) =>
    query(i % 2 === 0 ? "www.example.org" : "slow.example.org", 1000 + i),
  ),
};

describe("DNS over UDP: the batched addon and dgram answer alike", () => {
  const servers = new Map<Io, DnsServer>();
  const results = new Map<Io, Map<string, string[]>>();
  before(async () => {
    for (const io of ["native", "dgram"] as const) {
      servers.set(io, await startServer(io));
      results.set(io, new Map());
    }
  });
  after(async () => {
    for (const s of servers.values()) await s.close();
  });

  it("the addon is built here (a C compiler is on this machine), and JITSU_UDP_IO=dgram turns it off", () => {
    assert.notEqual(
      nativeUdp(),
      null,
      `${UDP_IO_ADDON} is missing: npm run build (python3, make, a C compiler)`,
    );
    assert.equal(nativeUdp({ [UDP_IO_ENV]: "dgram" }), null);
    assert.equal(servers.get("native")!.udpIo, "native");
    assert.equal(servers.get("dgram")!.udpIo, "dgram");
  });

  for (const io of ["native", "dgram"] as const) {
    it(`${io}: answers or drops each probe`, async () => {
      const server = servers.get(io)!;
      for (const [name, packets] of Object.entries(PROBES)) {
        results.get(io)!.set(name, summary(await exchange(server.port, packets)));
      }
      const r = results.get(io)!;
      assert.deepEqual(r.get("an ordinary query"), ["id 1 rcode 0 10.0.0.1"]);
      assert.deepEqual(r.get("an answer made later (a summon)"), ["id 2 rcode 0 10.0.0.2"]);
      for (const dropped of ["a packet shorter than a header", "an empty datagram", "a response (QR set)"])
        assert.deepEqual(r.get(dropped), [], dropped);
      assert.equal(
        r.get("garbage")!.length,
        1,
        "garbage with a query header is answered (FORMERR or the like)",
      );
      assert.equal(r.get("a question cut short")!.length, 1);
      assert.equal(r.get("a 64 KB datagram")!.length, 1, "the 64 KB datagram got no answer");
      const burst = r.get("a burst of 300 queries, half answered later")!;
      assert.equal(burst.length, 300, `${burst.length} of 300 answered`);
      assert.ok(burst.every((line) => /rcode 0 10\.0\.0\.[12]$/.test(line)));
    });
  }

  it("both paths gave the same answers", () => {
    assert.deepEqual(Object.fromEntries(results.get("native")!), Object.fromEntries(results.get("dgram")!));
  });

  for (const io of ["native", "dgram"] as const) {
    it(`${io}: a datagram from port 0 is not answered (nor counted), the next one is`, async () => {
      const server = servers.get(io)!;
      const count = (): number => server.counters.queriesByType.get("A") ?? 0;
      // The same raw datagram from port 9 is handled: what the raw socket sends does arrive.
      const before = count();
      sendFromPort(9, server.port, query("www.example.org", 20));
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(count(), before + 1, "the raw datagram from port 9 was not handled");
      sendFromPort(0, server.port, query("www.example.org", 21));
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(count(), before + 1, "the port-0 query was handled");
      assert.deepEqual(summary(await exchange(server.port, [query("www.example.org", 22)])), [
        "id 22 rcode 0 10.0.0.1",
      ]);
      assert.equal(count(), before + 2);
    });
  }
});
