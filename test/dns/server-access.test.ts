/**
 * DnsServer with --allow-recursion / --allow-summon lists and RD clear, through
 * real dig on 127.0.0.1 and ::1 (the routed and local clients of a real network
 * are in test/e2e/access-netns.test.ts).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ClientAccess, DnsServer, Forwarder, ZoneIndex, type SummonTarget } from "../../src/dns/index.js";
import { silentLogger } from "../../src/log/index.js";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";
import { digAt } from "./helpers/dig.js";
import { specFrom } from "./helpers/specs.js";

/** "www" is ready; "cold" starts when request() is called (answered 10.0.0.3). */
class Target implements SummonTarget {
  readonly requests: string[] = [];
  readonly ready = new Map<string, readonly string[]>([["www", ["10.0.0.1"]]]);
  request(label: string): readonly string[] | Promise<readonly string[]> {
    this.requests.push(label);
    return this.ready.get(label) ?? Promise.resolve(["10.0.0.3"]);
  }
  requestIfReady(label: string): readonly string[] | null {
    return this.ready.get(label) ?? null;
  }
}

const SPECS = [
  specFrom("dns=www.example.org,ip=10.0.0.1,name=www"),
  specFrom("dns=cold.example.org,ip=10.0.0.3,name=cold"),
];

interface Served {
  server: DnsServer;
  target: Target;
  forwarder: Forwarder;
}

async function serve(
  up: TestUpstream,
  host: string,
  lists: { recursion?: string; summon?: string },
): Promise<Served> {
  const log = silentLogger();
  const target = new Target();
  const forwarder = new Forwarder({ upstreams: [{ host: "127.0.0.1", port: up.port }], log });
  const server = new DnsServer({
    zone: new ZoneIndex(SPECS, 60, log),
    summoner: target,
    forwarder,
    log,
    ttlSeconds: 60,
    allowRecursion: ClientAccess.parse("--allow-recursion", lists.recursion ?? "localhost"),
    allowSummon: ClientAccess.parse("--allow-summon", lists.summon ?? "any"),
  });
  await server.listen(host, 0);
  return { server, target, forwarder };
}

async function stop(s: Served): Promise<void> {
  await s.server.close();
  s.forwarder.close();
}

describe("DnsServer access control", () => {
  let up: TestUpstream;
  before(async () => {
    up = await startUpstream("192.0.2.7");
  });
  after(async () => {
    await up.close();
  });

  it("--allow-recursion none: forwarded names REFUSED (question echoed, OPT kept, RA clear), our own data answered", async () => {
    const s = await serve(up, "127.0.0.1", { recursion: "none" });
    try {
      const port = s.server.port;
      const sent = up.received.length;
      const out = await digAt("127.0.0.1", port, "WwW.Example.COM");
      assert.equal(out.status, "REFUSED");
      assert.equal(out.question, ";WwW.Example.COM. IN A");
      assert.match(out.edns ?? "", /version: 0/);
      assert.ok(!out.flags.includes("ra"), out.flags.join(" "));
      const noEdns = await digAt("127.0.0.1", port, "+noedns", "www.example.com");
      assert.equal(noEdns.status, "REFUSED");
      assert.equal(noEdns.edns, undefined);
      // Inside a managed zone, a name we do not manage would be forwarded too.
      assert.equal((await digAt("127.0.0.1", port, "ftp.example.org")).status, "REFUSED");
      assert.equal((await digAt("127.0.0.1", port, "+tcp", "www.example.net")).status, "REFUSED");
      assert.equal(up.received.length, sent, "nothing reached the upstream");

      assert.deepEqual((await digAt("127.0.0.1", port, "www.example.org")).answers, [
        "www.example.org. 60 IN A 10.0.0.1",
      ]);
      assert.match(
        (await digAt("127.0.0.1", port, "example.org", "SOA")).answers[0] ?? "",
        /IN SOA ns\.example\.org\./,
      );
      assert.deepEqual((await digAt("127.0.0.1", port, "example.org", "NS")).answers, [
        "example.org. 60 IN NS ns.example.org.",
      ]);
      assert.deepEqual((await digAt("127.0.0.1", port, "-x", "10.0.0.1")).answers, [
        "1.0.0.10.in-addr.arpa. 60 IN PTR www.example.org.",
      ]);
      assert.equal(s.server.counters.refusedByReason.get("recursion"), 4);
      assert.equal(s.server.counters.queriesByResult.get("REFUSED"), 4);
    } finally {
      await stop(s);
    }
  });

  it("RD clear (dig +norec) on a name we would forward: REFUSED, not forwarded; managed names answered", async () => {
    const s = await serve(up, "127.0.0.1", { recursion: "localhost" });
    try {
      const port = s.server.port;
      up.mode = "answer";
      assert.deepEqual((await digAt("127.0.0.1", port, "www.example.com")).answers, [
        "www.example.com. 30 IN A 192.0.2.7",
      ]);
      const sent = up.received.length;
      const norec = await digAt("127.0.0.1", port, "+norec", "www.example.com");
      assert.equal(norec.status, "REFUSED");
      assert.equal(norec.question, ";www.example.com. IN A");
      assert.equal((await digAt("127.0.0.1", port, "+norec", "+tcp", "ftp.example.org")).status, "REFUSED");
      assert.equal(up.received.length, sent);
      const managed = await digAt("127.0.0.1", port, "+norec", "www.example.org");
      assert.deepEqual(managed.answers, ["www.example.org. 60 IN A 10.0.0.1"]);
      assert.equal(s.server.counters.refusedByReason.get("norec"), 2);
      assert.equal(s.server.counters.refusedByReason.get("recursion"), 0);
    } finally {
      await stop(s);
    }
  });

  it("--allow-summon none: a ready VM is answered, a cold one REFUSED and never started", async () => {
    const s = await serve(up, "127.0.0.1", { summon: "none" });
    try {
      const port = s.server.port;
      assert.deepEqual((await digAt("127.0.0.1", port, "www.example.org")).answers, [
        "www.example.org. 60 IN A 10.0.0.1",
      ]);
      const cold = await digAt("127.0.0.1", port, "cold.example.org");
      assert.equal(cold.status, "REFUSED");
      assert.equal(cold.question, ";cold.example.org. IN A");
      assert.equal((await digAt("127.0.0.1", port, "+tcp", "cold.example.org", "AAAA")).status, "REFUSED");
      assert.deepEqual(s.target.requests, [], "request() (which starts VMs) was never called");
      assert.equal(s.server.counters.refusedByReason.get("summon"), 2);
      // Once it is ready (started by someone allowed to), it is answered.
      s.target.ready.set("cold", ["10.0.0.3"]);
      assert.deepEqual((await digAt("127.0.0.1", port, "cold.example.org")).answers, [
        "cold.example.org. 60 IN A 10.0.0.3",
      ]);
    } finally {
      await stop(s);
    }
  });

  it("--allow-summon with a CIDR: a client inside it starts the VM", async () => {
    const s = await serve(up, "127.0.0.1", { summon: "127.0.0.0/8" });
    try {
      assert.deepEqual((await digAt("127.0.0.1", s.server.port, "cold.example.org")).answers, [
        "cold.example.org. 60 IN A 10.0.0.3",
      ]);
      assert.deepEqual(s.target.requests, ["cold"]);
    } finally {
      await stop(s);
    }
  });

  it("IPv6 clients are matched by their IPv6 address", async () => {
    up.mode = "answer";
    const v4only = await serve(up, "::1", { recursion: "127.0.0.0/8", summon: "127.0.0.0/8" });
    try {
      const port = v4only.server.port;
      assert.equal((await digAt("::1", port, "www.example.com")).status, "REFUSED");
      assert.equal((await digAt("::1", port, "cold.example.org")).status, "REFUSED");
      assert.deepEqual((await digAt("::1", port, "www.example.org")).answers, [
        "www.example.org. 60 IN A 10.0.0.1",
      ]);
    } finally {
      await stop(v4only);
    }
    const v6 = await serve(up, "::1", { recursion: "::1", summon: "::/0" });
    try {
      const port = v6.server.port;
      assert.deepEqual((await digAt("::1", port, "www.example.com")).answers, [
        "www.example.com. 30 IN A 192.0.2.7",
      ]);
      assert.deepEqual((await digAt("::1", port, "cold.example.org")).answers, [
        "cold.example.org. 60 IN A 10.0.0.3",
      ]);
    } finally {
      await stop(v6);
    }
  });
});
