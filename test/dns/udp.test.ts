/**
 * UDP on a wildcard address: one socket per local address, so each answer
 * leaves from the address its query was sent to, and addresses that come and
 * go are followed. Loopback shows the bug it fixes: a socket bound to 0.0.0.0
 * answers a query sent to 127.0.0.2 from 127.0.0.1 (the route's source), and
 * dig discards that answer. The host's interfaces are a list the test edits
 * (any 127.x address is this host's); the network namespace test in
 * test/e2e/multi-homed.test.ts does the same with real interfaces.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import type os from "node:os";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { DnsServer, ZoneIndex } from "../../src/dns/index.js";
import { createLogger, type Logger } from "../../src/log/index.js";
import { run } from "../support/index.js";
import { specFrom } from "./helpers/specs.js";

function iface(address: string): os.NetworkInterfaceInfo {
  const v6 = address.includes(":");
  return v6
    ? {
        address,
        netmask: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        family: "IPv6",
        mac: "00:00:00:00:00:00",
        internal: true,
        cidr: `${address}/128`,
        scopeid: 0,
      }
    : {
        address,
        netmask: "255.0.0.0",
        family: "IPv4",
        mac: "00:00:00:00:00:00",
        internal: true,
        cidr: `${address}/8`,
      };
}

/** Sends one A query from 127.0.0.1 (::1) to `to`; resolves with who answered, or null after 700 ms. */
function ask(to: string, port: number): Promise<{ from: string; address: string } | null> {
  const v6 = to.includes(":");
  return new Promise((resolve) => {
    const sock = dgram.createSocket(v6 ? "udp6" : "udp4");
    const timer = setTimeout(() => {
      sock.close();
      resolve(null);
    }, 700);
    sock.on("error", () => undefined); // ICMP port unreachable: wait for the timer
    sock.on("message", (msg, rinfo) => {
      clearTimeout(timer);
      sock.close();
      const a = dnsPacket.decode(msg).answers?.[0] as dnsPacket.StringAnswer | undefined;
      resolve({ from: rinfo.address, address: a?.data ?? "" });
    });
    sock.bind(0, v6 ? "::1" : "127.0.0.1", () => {
      sock.send(
        dnsPacket.encode({ type: "query", id: 1, questions: [{ name: "www.example.org", type: "A" }] }),
        port,
        to,
      );
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A DnsServer for www.example.org (10.0.0.1) on `host`, port 0, with the test's interfaces. */
async function startServer(
  host: string,
  log: Logger,
  interfaces: () => string[],
  interfacePollMs?: number,
): Promise<DnsServer> {
  const server = new DnsServer({
    zone: new ZoneIndex([specFrom("dns=www.example.org,ip=10.0.0.1,name=www")], 60, log),
    summoner: { request: () => ["10.0.0.1"], requestIfReady: () => ["10.0.0.1"] },
    forwarder: null,
    log,
    ttlSeconds: 60,
    interfacePollMs,
    interfaces: () => ({ lo: interfaces().map(iface) }),
  });
  await server.listen(host, 0);
  return server;
}

describe("UDP on 0.0.0.0: a socket per local address", () => {
  const addresses = ["127.0.0.1", "127.0.0.2"];
  let server: DnsServer;
  let port: number;
  let logged = "";
  let blocker: dgram.Socket | null = null;
  before(async () => {
    const out = new PassThrough();
    out.on("data", (d: Buffer) => (logged += d.toString()));
    const log = createLogger({ level: "info", format: "text", destination: out });
    server = await startServer("0.0.0.0", log, () => addresses, 300);
    port = server.port;
  });
  after(async () => {
    blocker?.close();
    await server.close();
  });

  it("answers each query from the address it was sent to", async () => {
    assert.deepEqual(server.udpAddresses.sort(), ["127.0.0.1", "127.0.0.2"]);
    assert.deepEqual(await ask("127.0.0.2", port), { from: "127.0.0.2", address: "10.0.0.1" });
    assert.deepEqual(await ask("127.0.0.1", port), { from: "127.0.0.1", address: "10.0.0.1" });
    // dig checks the source: it would discard an answer from 127.0.0.1.
    const res = await run("dig", [
      "@127.0.0.2",
      "-b",
      "127.0.0.1",
      "-p",
      String(port),
      "+time=1",
      "+tries=1",
      "+short",
      "www.example.org",
    ]);
    assert.equal(res.stdout.trim(), "10.0.0.1", res.stdout + res.stderr);
  });

  it("follows an address that appears (refreshAddresses, as on SIGHUP) and one that goes", async () => {
    assert.equal(await ask("127.0.0.3", port), null);
    addresses.push("127.0.0.3");
    await server.refreshAddresses();
    assert.deepEqual(await ask("127.0.0.3", port), { from: "127.0.0.3", address: "10.0.0.1" });
    assert.match(logged, new RegExp(`listening on UDP 127\\.0\\.0\\.3:${port} too`));
    addresses.splice(addresses.indexOf("127.0.0.2"), 1);
    await server.refreshAddresses();
    assert.equal(await ask("127.0.0.2", port), null);
    assert.match(
      logged,
      new RegExp(`127\\.0\\.0\\.2 is gone; no longer listening on UDP 127\\.0\\.0\\.2:${port}`),
    );
    assert.deepEqual(server.udpAddresses.sort(), ["127.0.0.1", "127.0.0.3"]);
  });

  it("reads the addresses every few seconds by itself", async () => {
    addresses.push("127.0.0.4");
    await sleep(600); // two polls
    assert.deepEqual(await ask("127.0.0.4", port), { from: "127.0.0.4", address: "10.0.0.1" });
  });

  it("skips an address another program holds the port on (a warning), and takes it once freed", async () => {
    blocker = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => blocker!.bind(port, "127.0.0.5", () => resolve()));
    addresses.push("127.0.0.5");
    await server.refreshAddresses();
    assert.match(
      logged,
      new RegExp(`WARN.*cannot listen on UDP 127\\.0\\.0\\.5:${port}: the port is already in use`),
    );
    assert.ok(!server.udpAddresses.includes("127.0.0.5"));
    assert.deepEqual(await ask("127.0.0.1", port), { from: "127.0.0.1", address: "10.0.0.1" });
    await new Promise<void>((resolve) => blocker!.close(() => resolve()));
    blocker = null;
    await server.refreshAddresses();
    assert.deepEqual(await ask("127.0.0.5", port), { from: "127.0.0.5", address: "10.0.0.1" });
  });
});

describe("UDP on ::: both families' addresses", () => {
  let server: DnsServer;
  before(async () => {
    const log = createLogger({ level: "silent", format: "text" });
    server = await startServer("::", log, () => ["127.0.0.1", "127.0.0.6", "::1"]);
  });
  after(async () => {
    await server.close();
  });

  it("answers IPv4 and IPv6 queries, each from the address asked", async () => {
    assert.deepEqual(await ask("127.0.0.6", server.port), { from: "127.0.0.6", address: "10.0.0.1" });
    assert.deepEqual(await ask("::1", server.port), { from: "::1", address: "10.0.0.1" });
  });
});
