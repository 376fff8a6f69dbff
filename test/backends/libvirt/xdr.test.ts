import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { XdrError, XdrReader, XdrWriter } from "../../../src/backends/libvirt/xdr.js";
import {
  MessageType,
  Proc,
  REMOTE_PROGRAM,
  readDomain,
  readHeader,
  readInterfaceAddresses,
  readLifecycleMessage,
  readRemoteError,
  uuidFromString,
  uuidToString,
  writeDomain,
  writeRemoteError,
} from "../../../src/backends/libvirt/protocol.js";
import { encodePacket } from "../../../src/backends/libvirt/rpc.js";

const hex = (b: Buffer): string => b.toString("hex");

describe("XDR codec (RFC 4506)", () => {
  it("encodes ints, unsigned ints and hypers big-endian", () => {
    const w = new XdrWriter(4).int(-2).uint(0xdeadbeef).hyper(-1n).uhyper(0x0102030405060708n);
    assert.equal(hex(w.bytes()), "fffffffe" + "deadbeef" + "ffffffffffffffff" + "0102030405060708");
    const r = new XdrReader(Buffer.from(w.bytes()));
    assert.equal(r.int(), -2);
    assert.equal(r.uint(), 0xdeadbeef);
    assert.equal(r.hyper(), -1n);
    assert.equal(r.uhyper(), 0x0102030405060708n);
    r.done("test");
  });

  it("pads strings and opaque data to 4 bytes (§4.10, §4.11)", () => {
    const w = new XdrWriter()
      .string("abc")
      .string("")
      .string("abcd")
      .opaque(Buffer.from([1, 2, 3, 4, 5]));
    assert.equal(
      hex(w.bytes()),
      "00000003616263" + "00" + "00000000" + "0000000461626364" + "000000050102030405000000",
    );
    const r = new XdrReader(Buffer.from(w.bytes()));
    assert.equal(r.string(), "abc");
    assert.equal(r.string(), "");
    assert.equal(r.string(), "abcd");
    assert.deepEqual([...r.opaque()], [1, 2, 3, 4, 5]);
    r.done("test");
  });

  it("round-trips UTF-8 strings, optional data and arrays", () => {
    const w = new XdrWriter()
      .string("é—ü")
      .optional<string>(null, (x, v) => x.string(v))
      .optional("x", (x, v) => x.string(v))
      .array([1, 2, 3], (x, v) => x.int(v));
    const r = new XdrReader(Buffer.from(w.bytes()));
    assert.equal(r.string(), "é—ü");
    assert.equal(
      r.optional((x) => x.string()),
      null,
    );
    assert.equal(
      r.optional((x) => x.string()),
      "x",
    );
    assert.deepEqual(
      r.array((x) => x.int()),
      [1, 2, 3],
    );
  });

  it("rejects truncated data, bad bools, over-long strings and arrays, trailing bytes", () => {
    assert.throws(() => new XdrReader(Buffer.from([0, 0, 1])).int(), XdrError);
    assert.throws(() => new XdrReader(Buffer.from([0, 0, 0, 2])).bool(), /bool must be 0 or 1/);
    assert.throws(() => new XdrReader(Buffer.from("0000000a6162", "hex")).string(), /truncated string/);
    assert.throws(
      () => new XdrReader(Buffer.from("00000005616263646500000", "hex")).string(4),
      /exceeds its maximum 4/,
    );
    assert.throws(
      () => new XdrReader(Buffer.from("7fffffff", "hex")).array((r) => r.int()),
      /exceeds the data left/,
    );
    assert.throws(
      () => new XdrReader(Buffer.from("0000000100000002", "hex")).array((r) => r.int(), 0),
      /maximum 0/,
    );
    const r = new XdrReader(Buffer.from("0000000100000002", "hex"));
    r.int();
    assert.throws(() => r.done("reply"), /4 unexpected bytes after reply/);
    assert.throws(() => new XdrWriter().int(2 ** 31), /out of range/);
    assert.throws(() => new XdrWriter().uint(-1), /out of range/);
    assert.throws(() => new XdrWriter().fixedOpaque(Buffer.alloc(3), 16), /needs 16 bytes/);
  });
});

describe("libvirt remote protocol structures", () => {
  it("frames a call as virsh does: AUTH_LIST serial 0 is 28 bytes", () => {
    const p = encodePacket({
      prog: REMOTE_PROGRAM,
      vers: 1,
      proc: Proc.AUTH_LIST,
      type: 0,
      serial: 0,
      status: 0,
    });
    assert.equal(
      hex(p),
      "0000001c" + "20008086" + "00000001" + "00000042" + "00000000" + "00000000" + "00000000",
    );
    const h = readHeader(new XdrReader(p, 4));
    assert.deepEqual(h, {
      prog: REMOTE_PROGRAM,
      vers: 1,
      proc: 66,
      type: MessageType.Call,
      serial: 0,
      status: 0,
    });
  });

  it("converts UUIDs both ways and rejects bad ones", () => {
    const s = "6695eb01-f6a4-8304-79aa-97f2502e193f";
    assert.equal(uuidToString(uuidFromString(s)), s);
    assert.equal(uuidToString(uuidFromString(s.toUpperCase().replace(/-/g, ""))), s);
    assert.throws(() => uuidFromString("not-a-uuid"), /not a UUID/);
  });

  it("round-trips remote_nonnull_domain and lifecycle messages", () => {
    const dom = { name: "www", uuid: uuidFromString("6695eb01-f6a4-8304-79aa-97f2502e193f"), id: -1 };
    const w = new XdrWriter().int(7);
    writeDomain(w, dom);
    w.int(5).int(1);
    const msg = readLifecycleMessage(new XdrReader(Buffer.from(w.bytes())));
    assert.equal(msg.callbackID, 7);
    assert.deepEqual(msg.dom, dom);
    assert.equal(msg.event, 5);
    assert.equal(msg.detail, 1);
    const w2 = new XdrWriter();
    writeDomain(w2, dom);
    // name "www" (4 + 4 bytes), uuid (16), id (4)
    assert.equal(w2.length, 28);
    assert.deepEqual(readDomain(new XdrReader(Buffer.from(w2.bytes()))), dom);
  });

  it("decodes remote_error with its optional fields", () => {
    const e = {
      code: 42,
      domain: 10,
      message: "Domain not found: no domain with matching name 'x'",
      level: 2,
      str1: "Domain not found",
      str2: null,
      str3: null,
      int1: 0,
      int2: 0,
    };
    const w = new XdrWriter();
    writeRemoteError(w, e);
    const r = new XdrReader(Buffer.from(w.bytes()));
    assert.deepEqual(readRemoteError(r), e);
    r.done("remote_error");
  });

  it("decodes remote_domain_interface_addresses_ret", () => {
    const w = new XdrWriter()
      .uint(1)
      .string("vnet0")
      .optional("52:54:00:aa:bb:cc", (x, v) => x.string(v));
    w.uint(2).int(0).string("192.0.2.7").uint(24).int(1).string("2001:db8::7").uint(64);
    const ifaces = readInterfaceAddresses(new XdrReader(Buffer.from(w.bytes())));
    assert.deepEqual(ifaces, [
      {
        name: "vnet0",
        hwaddr: "52:54:00:aa:bb:cc",
        addrs: [
          { type: 0, addr: "192.0.2.7", prefix: 24 },
          { type: 1, addr: "2001:db8::7", prefix: 64 },
        ],
      },
    ]);
  });
});
