/** The IPC messages' checks: well-formed messages pass as they are, anything else is named and refused. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseToPrimary, parseToWorker } from "../../src/cluster/index.js";
import { DnsCounters } from "../../src/dns/index.js";

describe("cluster IPC messages", () => {
  it("passes well-formed messages in both directions", () => {
    const counters = new DnsCounters();
    counters.countType(1);
    counters.countRcode(0);
    counters.observeForwardLatency(0.002);
    const counts = { t: "counts", id: 3, requests: [["www", 5]], dns: counters.snapshot() };
    // Through JSON, as node:cluster's channel carries it.
    const parsed = parseToPrimary(JSON.parse(JSON.stringify(counts)));
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.msg, counts);
    const init = {
      t: "init",
      index: 2,
      bind: "127.0.0.1",
      port: 5353,
      ttl: 60,
      logLevel: "info",
      logFormat: "json",
      upstreams: [{ host: "127.0.0.1", port: 53 }],
      forwarding: { sockets: 64, socketQueries: 100, socketSeconds: 0.5, caseRandomization: true },
      tcpPerClient: 8,
      zone: [{ label: "www", dns: ["www.example.org"], ips: ["10.0.0.1"] }],
      allowRecursion: ["localhost", "localnets"],
      allowSummon: ["any"],
      localnets: ["192.0.2.0/24", "fd00::/64"],
      ready: [["www", ["10.0.0.1"]]],
    };
    const w = parseToWorker(init);
    assert.ok(w.ok);
    assert.deepEqual(w.msg, init);
    for (const m of [
      { t: "ready", set: [], unset: ["www"] },
      { t: "summoned", id: 1, addresses: [] },
      { t: "summon-failed", id: 1, error: "boom" },
      { t: "summon-failed", id: 1, error: "over its rate", refused: "summon-rate" },
      { t: "flush", id: 7 },
      { t: "zone", zone: [] },
      { t: "localnets", cidrs: ["10.0.0.0/8"] },
      { t: "tcp-acquired", id: 4, granted: false },
      { t: "refresh-addresses" },
      { t: "close" },
    ]) {
      assert.ok(parseToWorker(m).ok, JSON.stringify(m));
    }
    for (const m of [
      { t: "hello" },
      { t: "listening", port: 53 },
      { t: "listen-failed", error: "EADDRINUSE" },
      { t: "summon", id: 1, label: "www" },
      { t: "summon", id: 1, label: "www", client: "192.0.2.1" },
      { t: "summon", id: 1, label: "www", client: "fe80::1%eth0" },
      { t: "tcp-acquire", id: 4, client: "192.0.2.1" },
      { t: "tcp-release", client: "2001:db8::1" },
    ]) {
      const r = parseToPrimary(m);
      assert.ok(r.ok, JSON.stringify(m));
      assert.deepEqual(r.msg, m);
    }
  });

  it("names what is wrong with a malformed message", () => {
    const bad: [unknown, RegExp][] = [
      [null, /expected an object/],
      ["close", /expected an object/],
      [{}, /no message type/],
      [{ t: "explode" }, /unknown message type 'explode'/],
      [{ t: "summon", id: 0, label: "www" }, /'id'/],
      [{ t: "summon", id: 1, label: "" }, /label/],
      [{ t: "summon", id: 1 }, /label/],
      [{ t: "summon", id: 1, label: "www", client: "" }, /'client': expected an address/],
      [{ t: "summon", id: 1, label: "www", client: "x".repeat(65) }, /'client'/],
      [{ t: "summon", id: 1, label: "www", client: 7 }, /'client'/],
      [{ t: "listening", port: 70000 }, /'port'/],
      [
        { t: "counts", id: null, requests: [["www", -1]], dns: new DnsCounters().snapshot() },
        /requests\[0\]\[1\]: expected a count/,
      ],
      [{ t: "counts", id: null, requests: [], dns: { types: "many" } }, /dns\.types/],
      [{ t: "tcp-acquire", id: 1, client: "" }, /'client': expected an address/],
      [{ t: "tcp-release" }, /'client'/],
    ];
    for (const [msg, message] of bad) {
      const r = parseToPrimary(msg);
      assert.ok(!r.ok, JSON.stringify(msg));
      assert.match(r.error, message);
    }
    const toWorker: [unknown, RegExp][] = [
      [{ t: "ready", set: [["www", [1]]], unset: [] }, /set\[0\]\[1\]\[0\]: expected a string/],
      [{ t: "init", logLevel: "loud" }, /logLevel/],
      [{ t: "summon-failed", id: 1, error: "no", refused: "mood" }, /'refused'/],
      [{ t: "tcp-acquired", id: 1, granted: "yes" }, /'granted': expected true or false/],
      [
        { t: "zone", zone: [{ label: "www", dns: "www.example.org", ips: [] }] },
        /zone\[0\]\.dns: expected a list/,
      ],
      [{ t: "localnets", cidrs: "10.0.0.0/8" }, /cidrs: expected a list/],
    ];
    for (const [msg, message] of toWorker) {
      const r = parseToWorker(msg);
      assert.ok(!r.ok, JSON.stringify(msg));
      assert.match(r.error, message);
    }
  });
});
