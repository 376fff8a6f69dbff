/**
 * The original Jitsu's CONFIG grammar and option parsing (its
 * lib_test/test_options.ml cases): ints, strings, repeated keys in order,
 * booleans, `a@b` tuples, and bad values that name the VM and key.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  VmOptions,
  buildVmSpec,
  closest,
  distinctVms,
  parseBool,
  parseConfigString,
  parseDnsName,
  parseIp,
  parseSize,
  parseTuple,
  type KeySpec,
  type VmSpec,
} from "../../src/config/index.js";
import { ConfigError } from "../../src/errors/index.js";

const KEYS: readonly KeySpec[] = [
  { key: "name", type: "string", doc: "" },
  { key: "count", type: "int", doc: "" },
  { key: "flag", type: "bool", doc: "" },
  { key: "disk", type: "tuple", repeatable: true, doc: "" },
  { key: "nic", type: "string", repeatable: true, doc: "" },
  { key: "memory", type: "size-kib", doc: "" },
];
const build = (text: string, keys = KEYS, check?: (spec: VmSpec) => void) =>
  buildVmSpec(parseConfigString(text, "CONFIG #1"), "CONFIG #1", {
    backendKeys: keys,
    backendName: "test",
    check,
  });

describe("CONFIG grammar", () => {
  it("splits entries at commas and each at its first '='", () => {
    assert.deepEqual(parseConfigString("dns=a.example.org,ip=10.0.0.1,cmdline=a=b c=d", "C"), [
      ["dns", "a.example.org"],
      ["ip", "10.0.0.1"],
      ["cmdline", "a=b c=d"],
    ]);
  });

  it("keeps repeated keys in the order given", () => {
    const o = new VmOptions(parseConfigString("nic=br0,disk=a@xvda,nic=br1,disk=b@xvdb,nic=br2", "C"), "vm");
    assert.deepEqual(o.all("nic"), ["br0", "br1", "br2"]);
    assert.deepEqual(o.tuples("disk"), [
      { left: "a", right: "xvda" },
      { left: "b", right: "xvdb" },
    ]);
  });

  it("reads ints, strings and booleans", () => {
    const o = new VmOptions(parseConfigString("count=42,name=www,flag=1", "C"), "vm");
    assert.equal(o.int("count"), 42);
    assert.equal(o.str("name"), "www");
    assert.equal(o.bool("flag"), true);
    for (const [text, value] of [
      ["true", true],
      ["TRUE", true],
      ["1", true],
      ["false", false],
      ["0", false],
    ] as const) {
      assert.equal(parseBool(text), value);
    }
    assert.throws(() => parseBool("maybe"), /expected true\/false\/1\/0/);
  });

  it("reads a@b tuples with either side absent, as the original's get_tuple_list", () => {
    assert.deepEqual(parseTuple("file.img@xvda", "@"), { left: "file.img", right: "xvda" });
    assert.deepEqual(parseTuple("file.img", "@"), { left: "file.img" });
    assert.deepEqual(parseTuple("file.img@", "@"), { left: "file.img" });
    assert.deepEqual(parseTuple("@xvda", "@"), { right: "xvda" });
    assert.deepEqual(parseTuple("", "@"), {});
  });

  it("rejects an entry without '=' and an empty CONFIG, naming the entry", () => {
    assert.throws(
      () => parseConfigString("dns=a.example.org,oops", "CONFIG #3"),
      /CONFIG #3: entry 2 'oops' has no '='/,
    );
    assert.throws(() => parseConfigString("", "CONFIG #1"), /CONFIG #1 is empty/);
    assert.throws(() => parseConfigString("=x", "CONFIG #1"), /empty key/);
  });

  it("calls an empty entry what it is: a trailing comma (often a line break the shell split) or two commas", () => {
    assert.throws(
      () => parseConfigString("dns=a.example.org,name=a,", "CONFIG #1"),
      /^ConfigError: CONFIG #1: entry 3 is empty \(a trailing comma\? A CONFIG string continued on the next line must not be indented/,
    );
    assert.throws(
      () => parseConfigString("dns=a.example.org,,name=a", "CONFIG #2"),
      /CONFIG #2: entry 2 is empty \(two commas in a row\?\)/,
    );
  });
});

describe("VmSpec validation", () => {
  it("builds a spec with common keys, lower-cased names and canonical addresses", () => {
    const spec = build(
      "dns=WWW.Example.org.,dns=alias.example.org,ip=10.0.0.1,ip=2001:DB8:0:0::1,name=www,response_delay=0.5,use_synjitsu=1,ready=tcp:8080",
    );
    assert.equal(spec.label, "www");
    assert.deepEqual(spec.dns, ["www.example.org", "alias.example.org"]);
    assert.deepEqual(spec.ips, ["10.0.0.1", "2001:db8::1"]);
    assert.equal(spec.responseDelay, 0.5);
    assert.equal(spec.useSynjitsu, true);
    assert.deepEqual(spec.ready, [{ kind: "tcp", host: "127.0.0.1", port: 8080 }]);
  });

  const bad: [string, RegExp][] = [
    [
      "dns=www.example.org,ip=10.0.0.1,name=www,count=many",
      /VM 'www', key 'count': expected an integer, got 'many'/,
    ],
    [
      "dns=www.example.org,ip=10.0.0.1,name=www,flag=perhaps",
      /VM 'www', key 'flag': expected true\/false\/1\/0/,
    ],
    ["dns=www.example.org,ip=10.0.0.256,name=www", /VM 'www', key 'ip': expected an IPv4 or IPv6 address/],
    ["dns=www..example.org,ip=10.0.0.1,name=www", /VM 'www', key 'dns': .*empty label/],
    [
      "dns=www.example.org,ip=10.0.0.1,name=www,colour=red",
      /VM 'www', key 'colour': unknown key for the test backend/,
    ],
    ["dns=www.example.org,ip=10.0.0.1,name=www,name=web", /VM 'web', key 'name': given more than once/],
    ["ip=10.0.0.1,name=www", /VM 'www', key 'dns': required key is missing/],
    ["dns=www.example.org,ip=10.0.0.1,name=www,response_delay=-1", /VM 'www', key 'response_delay'/],
    ["dns=www.example.org,ip=10.0.0.1,name=www,ready=udp:53", /VM 'www', key 'ready': expected tcp:PORT/],
    ["dns=www.example.org,ip=10.0.0.1,name=www,memory=lots", /VM 'www', key 'memory': expected a size/],
  ];
  for (const [text, message] of bad) {
    it(`rejects ${text}`, () => {
      assert.throws(
        () => build(text),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
      );
    });
  }

  it("checks repeats and required keys the same way for backends with more than 31 keys", () => {
    const many: KeySpec[] = Array.from({ length: 40 }, (_, i) => ({ key: `k${i}`, type: "string", doc: "" }));
    many.push({ key: "must", type: "string", required: true, doc: "" });
    many.push({ key: "multi", type: "string", repeatable: true, doc: "" });
    const ok = build("dns=www.example.org,ip=10.0.0.1,k39=a,must=b,multi=c,multi=d,k0=e", many);
    assert.deepEqual(ok.options.all("multi"), ["c", "d"]);
    assert.throws(
      () => build("dns=www.example.org,ip=10.0.0.1,k39=a,k39=b,must=c", many),
      /key 'k39': given more than once/,
    );
    assert.throws(
      () => build("dns=www.example.org,ip=10.0.0.1,k39=a", many),
      /key 'must': required key is missing/,
    );
  });

  it("leaves `ip` optional, and runs the backend's check on each VM built", () => {
    // Whether a VM may go without `ip` is the backend's to say (src/backends checkVmSpec).
    assert.deepEqual(build("dns=www.example.org,name=www").ips, []);
    const seen: string[] = [];
    const ok = build("dns=www.example.org,ip=10.0.0.1,name=www", KEYS, (spec) => seen.push(spec.label));
    assert.deepEqual(seen, ["www"]);
    assert.deepEqual(ok.ips, ["10.0.0.1"]);
    assert.throws(
      () =>
        build("dns=www.example.org,name=www", KEYS, (spec) => {
          throw new ConfigError("the test backend cannot discover addresses", { vm: spec.label, key: "ip" });
        }),
      /VM 'www', key 'ip': the test backend cannot discover addresses/,
    );
  });

  it("rejects a DNS name used by two VMs, naming both", () => {
    const a = build("dns=www.example.org,ip=10.0.0.1,name=a");
    const b = build("dns=WWW.example.org,ip=10.0.0.2,name=b");
    assert.throws(
      () => distinctVms([a, b]),
      /VM 'b', key 'dns': DNS name 'www.example.org' is already used by VM 'a'/,
    );
  });

  it("suggests the nearest key for a typo, and nothing for a word unlike any", () => {
    const keys = ["dns", "ip", "name", "exec", "response_delay", "wait_for_key"];
    assert.equal(closest("dsn", keys), "dns");
    assert.equal(closest("nmae", keys), "name");
    assert.equal(closest("respons_delay", keys), "response_delay");
    assert.equal(closest("ipp", keys), "ip");
    assert.equal(closest("colour", keys), undefined);
    assert.equal(closest("x", keys), undefined);
  });

  it("rejects two different VMs with the same name (or uuid), and takes one described twice identically once", () => {
    const one = build("dns=a.test,ip=127.0.0.5,name=one");
    assert.throws(
      () => distinctVms([one, build("dns=b.test,ip=127.0.0.6,name=one")]),
      /^ConfigError: VM 'one', key 'name': another VM is configured with the same name and different settings; give each VM its own name/,
    );
    const u = "7f5e1c4e-0000-4000-8000-000000000001";
    const withUuid: readonly KeySpec[] = [...KEYS, { key: "uuid", type: "string", doc: "" }];
    assert.throws(
      () =>
        distinctVms([
          build(`dns=a.test,ip=127.0.0.5,uuid=${u}`, withUuid),
          build(`dns=b.test,ip=127.0.0.6,uuid=${u}`, withUuid),
        ]),
      /key 'uuid': another VM is configured with the same uuid/,
    );
    const twice = distinctVms([
      one,
      build("dns=a.test,ip=127.0.0.5,name=one"),
      build("dns=c.test,ip=127.0.0.7"),
    ]);
    assert.deepEqual(
      twice.map((s) => s.label),
      ["one", "c.test"],
    );
  });
});

describe("value parsers", () => {
  it("sizes: a plain number in the given unit, or with K/M/G units", () => {
    assert.equal(parseSize("64000", 1024), 64000 * 1024);
    assert.equal(parseSize("64M", 1024), 64 * 1024 * 1024);
    assert.equal(parseSize("1GiB", 1), 1024 ** 3);
    assert.throws(() => parseSize("-1", 1024), /expected a size/);
  });

  it("addresses: IPv4 and IPv6 in canonical form", () => {
    assert.deepEqual(parseIp("::ffff:10.0.0.1"), { address: "::ffff:a00:1", family: 6 });
    assert.deepEqual(parseIp("fe80:0:0:0:0:0:0:1"), { address: "fe80::1", family: 6 });
    assert.throws(() => parseIp("www"), /expected an IPv4 or IPv6 address/);
    assert.deepEqual(parseIp(" 10.0.0.1 "), { address: "10.0.0.1", family: 4 });
    assert.throws(() => parseIp("010.0.0.1"), /expected an IPv4 or IPv6 address/);
    assert.deepEqual(parseIp("0.0.0.0"), { address: "0.0.0.0", family: 4 });
    assert.deepEqual(parseIp("255.255.255.255"), { address: "255.255.255.255", family: 4 });
    for (const bad of [
      "256.0.0.1",
      "1.2.3",
      "1.2.3.4.5",
      "1.2.3.",
      ".1.2.3",
      "1..2.3",
      "1.2.3.04",
      "1234.1.1.1",
      "+1.2.3.4",
    ]) {
      assert.throws(() => parseIp(bad), /expected an IPv4 or IPv6 address/, bad);
    }
  });

  it("DNS names: 63-octet labels and 253 octets at most", () => {
    assert.equal(parseDnsName("a".repeat(63) + ".org"), "a".repeat(63) + ".org");
    assert.throws(() => parseDnsName("a".repeat(64) + ".org"), /longer than 63/);
    assert.throws(() => parseDnsName(`${"abcdefghi.".repeat(26)}org`), /longer than 253/);
    assert.throws(() => parseDnsName("bad!name.org"), /invalid label/);
  });

  it("DNS names: letters, digits and '_' anywhere, '-' inside a label, lower-cased", () => {
    assert.equal(parseDnsName(" WWW.Example.ORG. "), "www.example.org");
    assert.equal(parseDnsName("_srv.a-b.0.x_"), "_srv.a-b.0.x_");
    assert.throws(() => parseDnsName("-a.org"), /invalid label '-a'/);
    assert.throws(() => parseDnsName("a-.org"), /invalid label 'a-'/);
    assert.throws(() => parseDnsName("a.-"), /invalid label '-'/);
    assert.throws(() => parseDnsName("a..org"), /empty label/);
    assert.throws(() => parseDnsName(".org"), /empty label/);
    assert.throws(() => parseDnsName("."), /expected a domain name/);
    assert.throws(() => parseDnsName("caf\u00e9.org"), /invalid label 'caf\u00e9'/);
  });
});
