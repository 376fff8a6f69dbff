import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { ZoneIndex, reverseName } from "../../src/dns/index.js";
import { encodeName, hashName } from "../../src/dns/wire.js";
import { createLogger } from "../../src/log/index.js";
import { specFrom } from "./helpers/specs.js";

function capture(level: "info" | "debug" = "info"): {
  lines: string[];
  log: ReturnType<typeof createLogger>;
} {
  const lines: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(
        ...chunk
          .toString()
          .split("\n")
          .filter((l) => l !== ""),
      );
      cb();
    },
  });
  return { lines, log: createLogger({ level, format: "json", destination: dest }) };
}

describe("ZoneIndex", () => {
  const specs = [
    specFrom("dns=www.example.org,ip=10.0.0.1,name=www"),
    specFrom("dns=example.org,dns=api.example.org,ip=10.0.0.2,ip=fd00::2,name=apex", "CONFIG #2"),
    specFrom("dns=solo,ip=10.0.0.3,name=solo", "CONFIG #3"),
  ];

  it("logs what it adds, as the original did", () => {
    const { lines, log } = capture();
    new ZoneIndex(specs, 60, log);
    const msgs = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    assert.ok(msgs.includes("Adding SOA 'example.org' with ttl=60"));
    assert.ok(msgs.includes("Adding domain 'www.example.org' for VM 'www' with ip 10.0.0.1"));
    assert.ok(msgs.includes("Adding A PTR for 'www.example.org' with ttl=60 and ip=10.0.0.1"));
    assert.ok(msgs.includes("Adding AAAA PTR for 'example.org' with ttl=60 and ip=fd00::2"));
    assert.ok(msgs.includes("Adding SOA 'org' with ttl=60"));
  });

  const zone = new ZoneIndex(specs, 60, capture().log);

  it("finds managed names from wire bytes in any case", () => {
    const wire = Buffer.from(encodeName("www.example.org"));
    wire[1] = 0x57; // 'W'
    const entry = zone.lookupWire(wire, 0, wire.length, hashName(wire, 0, wire.length));
    assert.equal(entry?.vm, "www");
    assert.equal(entry?.zone.name, "example.org");
    const other = encodeName("ftp.example.org");
    assert.equal(zone.lookupWire(other, 0, other.length, hashName(other, 0, other.length)), undefined);
  });

  it("synthesises SOA and NS for each parent zone, minimum = ttl", () => {
    assert.deepEqual(zone.zoneNames().sort(), ["example.org", "org", "solo"]);
    const soa = zone.zone("example.org")!.soa as { data: { mname: string; minimum: number }; ttl: number };
    assert.equal(soa.data.mname, "ns.example.org");
    assert.equal(soa.data.minimum, 60);
    assert.equal(soa.ttl, 60);
    assert.equal((zone.zone("example.org")!.ns as { data: string }).data, "ns.example.org");
    // A managed name that is also a zone apex knows it.
    assert.equal(zone.lookup("example.org")?.apexOf?.name, "example.org");
    assert.equal(zone.lookup("www.example.org")?.apexOf, undefined);
  });

  it("finds the enclosing zone of unmanaged names, and none outside", () => {
    assert.equal(zone.enclosingZone("ftp.example.org")?.name, "example.org");
    assert.equal(zone.enclosingZone("a.b.example.org")?.name, "example.org");
    assert.equal(zone.enclosingZone("example.com"), undefined);
    assert.equal(zone.enclosingZone("foo.org")?.name, "org");
  });

  it("holds PTR records for managed addresses", () => {
    assert.equal(reverseName("10.0.0.1"), "1.0.0.10.in-addr.arpa");
    assert.equal(reverseName("fd00::2"), `2.${"0.".repeat(29)}d.f.ip6.arpa`);
    assert.deepEqual(zone.ptr("1.0.0.10.in-addr.arpa")?.targets, ["www.example.org"]);
    assert.deepEqual(zone.ptr("2.0.0.10.in-addr.arpa")?.targets, ["example.org", "api.example.org"]);
    assert.deepEqual(zone.ptr(reverseName("fd00::2"))?.targets, ["example.org", "api.example.org"]);
    assert.equal(zone.ptr("9.0.0.10.in-addr.arpa"), undefined);
  });

  describe("above 100 VMs", () => {
    const many = Array.from({ length: 101 }, (_, i) =>
      specFrom(`dns=h${i}.many.test,ip=10.1.0.${i},ip=fd00::${i.toString(16)},name=m${i}`, `CONFIG #${i}`),
    );
    const msgs = (lines: string[], level: number): string[] =>
      lines
        .map((l) => JSON.parse(l) as { msg: string; level: number })
        .filter((l) => l.level === level)
        .map((l) => l.msg);

    it("logs one summary line per kind at info, and the per-record lines at debug", () => {
      const info = capture("info");
      new ZoneIndex(many, 60, info.log);
      assert.deepEqual(msgs(info.lines, 30), [
        "Added 1 SOA with ttl=60 ('many.test')",
        "Added 101 domains for 101 VMs (one line each at --log-level debug)",
        "Added 101 A and 101 AAAA PTRs with ttl=60",
      ]);
      assert.equal(info.lines.length, 3);

      const debug = capture("debug");
      new ZoneIndex(many, 60, debug.log);
      const lines = msgs(debug.lines, 20);
      assert.equal(lines.length, 1 + 101 + 202);
      assert.ok(lines.includes("Adding SOA 'many.test' with ttl=60"));
      assert.ok(lines.includes("Adding domain 'h100.many.test' for VM 'm100' with ip 10.1.0.100, fd00::64"));
      assert.ok(lines.includes("Adding AAAA PTR for 'h7.many.test' with ttl=60 and ip=fd00::7"));
      assert.equal(msgs(debug.lines, 30).length, 3);
    });

    it("lists the first zones in its SOA summary", () => {
      const zones = Array.from({ length: 101 }, (_, i) =>
        specFrom(`dns=www.z${i}.test,ip=10.2.0.1`, `CONFIG #${i}`),
      );
      const { lines, log } = capture();
      new ZoneIndex(zones, 5, log);
      assert.ok(
        msgs(lines, 30).includes("Added 101 SOAs with ttl=5 ('z0.test', 'z1.test', 'z2.test', 98 more)"),
      );
    });
  });

  it("finds names whose wire hashes collide", () => {
    // Two names with the same 30-bit FNV-1a hash (found by search), and a third name.
    const names = ["xgrp8q93.org", "xio3qq49.org", "other.org"];
    const wires = names.map((n) => encodeName(n));
    assert.equal(hashName(wires[0]!, 0, wires[0]!.length), hashName(wires[1]!, 0, wires[1]!.length));
    const index = new ZoneIndex(
      names.map((n, i) => specFrom(`dns=${n},ip=10.3.0.${i + 1},name=v${i}`, `CONFIG #${i}`)),
      60,
      capture().log,
    );
    names.forEach((name, i) => {
      const w = wires[i]!;
      assert.equal(index.lookupWire(w, 0, w.length, hashName(w, 0, w.length))?.vm, `v${i}`);
    });
    const missing = encodeName("xgrp8q94.org");
    assert.equal(
      index.lookupWire(missing, 0, missing.length, hashName(wires[0]!, 0, wires[0]!.length)),
      undefined,
    );
  });
});
