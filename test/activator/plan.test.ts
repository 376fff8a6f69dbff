/** hold= and hold_address= keys, and the hold plan's start-up checks. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { holdPlan, zoneVms } from "../../src/activator/index.js";
import { parseHoldPort } from "../../src/config/index.js";
import { spec } from "../doubles/test-backend.js";

describe("hold= ports", () => {
  it("parses PORT and PORT:VMPORT", () => {
    assert.deepEqual(parseHoldPort("8080"), { port: 8080, vmPort: 8080 });
    assert.deepEqual(parseHoldPort("8080:80"), { port: 8080, vmPort: 80 });
    for (const bad of ["", "x", "0", "70000", "80:", ":80", "80:0", "1:2:3", "-1"]) {
      assert.throws(() => parseHoldPort(bad), /expected (PORT or PORT:VMPORT|ports from 1 to 65535)/, bad);
    }
  });

  it("reads the keys into the spec, and names the VM and key on a bad value", () => {
    const s = spec("dns=www.example.org,ip=10.0.0.1,name=www,hold=80,hold=8443:443,hold_address=127.0.0.9");
    assert.deepEqual(s.hold, [
      { port: 80, vmPort: 80 },
      { port: 8443, vmPort: 443 },
    ]);
    assert.equal(s.holdAddress, "127.0.0.9");
    assert.deepEqual(spec("dns=a.example.org,ip=10.0.0.1,name=a").hold, []);
    assert.throws(() => spec("dns=www.example.org,ip=10.0.0.1,name=www,hold=http"), /VM 'www'.*'hold'.*PORT/);
    assert.throws(
      () => spec("dns=www.example.org,ip=10.0.0.1,name=www,hold=80,hold=80:81"),
      /port 80 is given twice/,
    );
    assert.throws(
      () => spec("dns=www.example.org,ip=10.0.0.1,name=www,hold_address=nowhere"),
      /'hold_address'/,
    );
  });

  it("plans each VM's hold address: hold_address=, else --hold-address, else -b", () => {
    const specs = [
      spec("dns=a.example.org,ip=10.0.0.1,name=a,hold=80"),
      spec("dns=b.example.org,ip=10.0.0.2,name=b,hold=80,hold_address=127.0.0.3"),
      spec("dns=c.example.org,ip=10.0.0.3,name=c"),
    ];
    assert.deepEqual(
      holdPlan(specs, undefined, "127.0.0.1").map((h) => [h.label, h.address]),
      [
        ["a", "127.0.0.1"],
        ["b", "127.0.0.3"],
      ],
    );
    assert.equal(holdPlan(specs, "127.0.0.2", "127.0.0.1")[0]!.address, "127.0.0.2");
    const zone = zoneVms(specs, holdPlan(specs, undefined, "127.0.0.1"));
    assert.deepEqual(
      zone.map((z) => z.holdIps),
      [["127.0.0.1"], ["127.0.0.3"], undefined],
    );
  });

  it("refuses two VMs on one hold address and port, naming both", () => {
    const specs = [
      spec("dns=a.example.org,ip=10.0.0.1,name=a,hold=80"),
      spec("dns=b.example.org,ip=10.0.0.2,name=b,hold=8080:80,hold=80"),
    ];
    assert.throws(
      () => holdPlan(specs, undefined, "127.0.0.1"),
      /VM 'b'.*'hold'.*127\.0\.0\.1:80 is already the hold port of VM 'a'/,
    );
    // Different ports, or different addresses: fine.
    assert.equal(
      holdPlan([specs[0]!, spec("dns=c.example.org,ip=10.0.0.3,name=c,hold=81")], undefined, "127.0.0.1")
        .length,
      2,
    );
    assert.equal(
      holdPlan(
        [specs[0]!, spec("dns=d.example.org,ip=10.0.0.3,name=d,hold=80,hold_address=127.0.0.4")],
        undefined,
        "127.0.0.1",
      ).length,
      2,
    );
  });

  it("refuses a wildcard hold address (it is a DNS answer), saying what to set", () => {
    const specs = [spec("dns=a.example.org,ip=10.0.0.1,name=a,hold=80")];
    assert.throws(
      () => holdPlan(specs, undefined, "0.0.0.0"),
      /VM 'a'.*wildcard.*-b is 0\.0\.0\.0: set --hold-address/,
    );
    assert.throws(() => holdPlan(specs, "::", "127.0.0.1"), /--hold-address.*wildcard/);
    assert.equal(holdPlan(specs, "127.0.0.1", "0.0.0.0")[0]!.address, "127.0.0.1");
    // No hold ports: a wildcard -b is fine.
    assert.deepEqual(holdPlan([spec("dns=b.example.org,ip=10.0.0.1,name=b")], undefined, "0.0.0.0"), []);
  });
});
