import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { ZoneIndex, reverseName } from "../../src/dns/index.js";
import { encodeName, hashName } from "../../src/dns/wire.js";
import { createLogger } from "../../src/log/index.js";
import { specFrom } from "./helpers/specs.js";

function capture(): { lines: string[]; log: ReturnType<typeof createLogger> } {
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
  return { lines, log: createLogger({ level: "info", format: "json", destination: dest }) };
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
});
