import assert from "node:assert/strict";
import { describe, it } from "node:test";
import dnsPacket from "dns-packet";
import {
  QTYPE,
  buildAddressTemplate,
  buildReply,
  decodeQuery,
  encodeName,
  hashName,
  headerOnlyReply,
  ipv6Bytes,
  appendOpt,
  hasOpt,
  nameToString,
  newQueryInfo,
  truncateRelayed,
  writeAnswer,
} from "../../src/dns/wire.js";

function query(
  name: string,
  type: dnsPacket.RecordType,
  opts: { id?: number; rd?: boolean; opt?: Partial<{ udp: number; version: number; do: boolean }> } = {},
): Buffer {
  const buf = dnsPacket.encode({
    type: "query",
    id: opts.id ?? 0xabcd,
    flags: opts.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: "IN" }],
    additionals:
      opts.opt === undefined
        ? []
        : [
            {
              type: "OPT",
              name: ".",
              udpPayloadSize: opts.opt.udp ?? 1232,
              ednsVersion: opts.opt.version ?? 0,
              flags: opts.opt.do === true ? dnsPacket.DNSSEC_OK : 0,
              options: [{ code: 65002, data: Buffer.from("x") }],
            } as unknown as dnsPacket.Answer,
          ],
  });
  return buf;
}

describe("decodeQuery", () => {
  it("reads the header, the question and the OPT record", () => {
    const q = decodeQuery(query("WWW.example.org", "AAAA", { opt: { udp: 4000, do: true } }), newQueryInfo());
    assert.equal(q.status, "ok");
    assert.equal(q.id, 0xabcd);
    assert.equal(q.qtype, QTYPE.AAAA);
    assert.equal(q.qclass, 1);
    assert.equal(q.rd, true);
    assert.equal(q.hasOpt, true);
    assert.equal(q.udpSize, 4000);
    assert.equal(q.dnssecOk, true);
    assert.equal(q.ednsVersion, 0);
    assert.equal(q.nameEnd, 12 + "WWW.example.org".length + 2);
  });

  it("honours a buffer size below 512 as 512 and reads the EDNS version", () => {
    const q = decodeQuery(query("a.b", "A", { opt: { udp: 100, version: 1 } }), newQueryInfo());
    assert.equal(q.udpSize, 512);
    assert.equal(q.ednsVersion, 1);
  });

  it("hashes names case-insensitively", () => {
    const a = decodeQuery(query("WwW.Example.ORG", "A"), newQueryInfo()).nameHash;
    const b = decodeQuery(query("www.example.org", "A"), newQueryInfo()).nameHash;
    const wire = encodeName("www.example.org");
    assert.equal(a, b);
    assert.equal(a, hashName(wire, 0, wire.length));
    assert.notEqual(a, decodeQuery(query("www.example.com", "A"), newQueryInfo()).nameHash);
  });

  it("classifies short packets, responses and garbage", () => {
    assert.equal(decodeQuery(Buffer.alloc(11), newQueryInfo()).status, "short");
    const resp = query("a.b", "A");
    resp[2] = resp[2]! | 0x80;
    assert.equal(decodeQuery(resp, newQueryInfo()).status, "response");
    const garbage = Buffer.concat([query("a.b", "A").subarray(0, 12), Buffer.from([0xff, 0xfe, 0x01])]);
    assert.equal(decodeQuery(garbage, newQueryInfo()).status, "formerr");
    const trailing = Buffer.concat([query("a.b", "A"), Buffer.from([0])]);
    assert.match(decodeQuery(trailing, newQueryInfo()).problem, /after the last record/);
    const pointer = Buffer.from(query("a.b", "A"));
    pointer[12] = 0xc0;
    assert.equal(decodeQuery(pointer, newQueryInfo()).status, "formerr");
    const twoOpt = query("a.b", "A", { opt: {} });
    const optRr = twoOpt.subarray(twoOpt.length - 16);
    const doubled = Buffer.concat([twoOpt, optRr]);
    doubled.writeUInt16BE(2, 10);
    assert.match(decodeQuery(doubled, newQueryInfo()).problem, /more than one OPT/);
  });
});

describe("hot-path answer patching", () => {
  const tmpl = buildAddressTemplate(["10.0.0.1", "fd00::1", "10.0.0.2"], QTYPE.A, 60);

  it("prepares only the addresses of the asked family", () => {
    assert.equal(tmpl.count, 2);
    assert.equal(buildAddressTemplate(["10.0.0.1", "fd00::1"], QTYPE.AAAA, 60).count, 1);
    assert.equal(buildAddressTemplate(["10.0.0.1"], QTYPE.AAAA, 60).count, 0);
  });

  it("patches ID, RD and the question as asked (case preserved), sets QR and AA", () => {
    for (const [id, rd] of [
      [1, true],
      [0xfffe, false],
    ] as const) {
      const qbuf = query("WwW.ExAmPlE.org", "A", { id, rd });
      const q = decodeQuery(qbuf, newQueryInfo());
      const out = writeAnswer(qbuf, q, tmpl, true, 512)!;
      const p = dnsPacket.decode(out);
      assert.equal(p.id, id);
      assert.equal(p.type, "response");
      assert.equal(p.flag_aa, true);
      assert.equal(p.flag_rd, rd);
      assert.equal(p.flag_ra, true);
      assert.equal(p.flags! & 0x0f, 0);
      assert.equal(p.questions![0]!.name, "WwW.ExAmPlE.org");
      assert.deepEqual(
        p.answers!.map((a) => [a.name, a.type, (a as { ttl: number }).ttl, (a as { data: string }).data]),
        [
          ["WwW.ExAmPlE.org", "A", 60, "10.0.0.1"],
          ["WwW.ExAmPlE.org", "A", 60, "10.0.0.2"],
        ],
      );
      assert.equal(p.additionals!.length, 0);
    }
  });

  it("adds our OPT (version 0, Z clear, DO copied) when the query had one", () => {
    const qbuf = query("www.example.org", "A", { opt: { do: true } });
    const out = writeAnswer(qbuf, decodeQuery(qbuf, newQueryInfo()), tmpl, false, 1232)!;
    const opt = dnsPacket.decode(out).additionals![0] as unknown as dnsPacket.OptAnswer;
    assert.equal(opt.type, "OPT");
    assert.equal(opt.udpPayloadSize, 1232);
    assert.equal(opt.ednsVersion, 0);
    assert.equal(opt.flags, dnsPacket.DNSSEC_OK);
    assert.equal(out.length, qbuf.length - 16 + 11 + 2 * 16);
  });

  it("returns null when the answer does not fit the limit", () => {
    const qbuf = query("www.example.org", "A");
    assert.equal(writeAnswer(qbuf, decodeQuery(qbuf, newQueryInfo()), tmpl, false, 40), null);
  });
});

describe("buildReply", () => {
  it("encodes sections after the question as asked, with OPT carrying BADVERS's upper bits", () => {
    const qbuf = query("Nope.Example.org", "A", { opt: { version: 1 } });
    const q = decodeQuery(qbuf, newQueryInfo());
    const out = buildReply(qbuf, q, { rcode: 16, aa: false, ra: false }, 512);
    assert.equal(out[3]! & 0x0f, 0);
    const p = dnsPacket.decode(out);
    assert.equal(p.questions![0]!.name, "Nope.Example.org");
    const opt = p.additionals![0] as unknown as dnsPacket.OptAnswer;
    assert.equal(opt.extendedRcode, 1);
    assert.equal(opt.ednsVersion, 0);
  });

  it("truncates with TC set, keeping the question and the OPT", () => {
    const qbuf = query("example.org", "SOA", { opt: {} });
    const q = decodeQuery(qbuf, newQueryInfo());
    const soa: dnsPacket.Answer = {
      type: "SOA",
      name: "example.org",
      ttl: 60,
      data: { mname: "ns.example.org", rname: "hostmaster.example.org", serial: 1, minimum: 60 },
    };
    const full = dnsPacket.decode(
      buildReply(qbuf, q, { rcode: 0, aa: true, ra: false, answers: [soa] }, 512),
    );
    assert.equal(full.answers!.length, 1);
    assert.equal(full.flag_tc, false);
    const cut = dnsPacket.decode(buildReply(qbuf, q, { rcode: 0, aa: true, ra: false, answers: [soa] }, 40));
    assert.equal(cut.flag_tc, true);
    assert.equal(cut.answers!.length, 0);
    assert.equal(cut.additionals![0]!.type, "OPT");
  });

  it("answers header-only FORMERR with the ID, opcode and RD copied", () => {
    const qbuf = Buffer.from([0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff]);
    const out = headerOnlyReply(qbuf, decodeQuery(qbuf, newQueryInfo()), 1, false);
    assert.deepEqual([...out], [0x12, 0x34, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("truncates a relayed upstream reply that is too big for the client", () => {
    const qbuf = query("big.example.net", "A");
    const q = decodeQuery(qbuf, newQueryInfo());
    const answers: dnsPacket.Answer[] = Array.from({ length: 40 }, (_, i) => ({
      type: "A",
      name: "big.example.net",
      ttl: 1,
      data: `192.0.2.${i}`,
    }));
    const reply = dnsPacket.encode({
      type: "response",
      id: 0xabcd,
      questions: [{ name: "big.example.net", type: "A" }],
      answers,
    });
    assert.ok(reply.length > 512);
    const p = dnsPacket.decode(truncateRelayed(reply, q, 512));
    assert.equal(p.flag_tc, true);
    assert.equal(p.id, 0xabcd);
    assert.equal(p.answers!.length, 0);
    assert.equal(truncateRelayed(reply, q, 65535), reply);
  });
});

describe("ipv6Bytes", () => {
  it("reads the RFC 4291 text forms", () => {
    assert.equal(ipv6Bytes("fd00::1").toString("hex"), "fd000000000000000000000000000001");
    assert.equal(ipv6Bytes("::").toString("hex"), "0".repeat(32));
    assert.equal(ipv6Bytes("::ffff:10.0.0.1").toString("hex"), "00000000000000000000ffff0a000001");
    assert.equal(ipv6Bytes("2001:db8:1:2:3:4:5:6").toString("hex"), "20010db8000100020003000400050006");
    assert.throws(() => ipv6Bytes("1::2::3"), /bad IPv6/);
  });
});

describe("names and OPT helpers", () => {
  it("lower-cases names and escapes dots and odd bytes inside labels", () => {
    const wire = Buffer.from([3, 0x57, 0x77, 0x57, 3, 0x61, 0x2e, 0x62, 2, 0x20, 0x5c, 0]);
    assert.equal(nameToString(wire, 0, wire.length), "www.a\\.b.\\032\\\\");
  });

  it("finds an OPT in a reply and appends one when missing", () => {
    const plain = dnsPacket.encode({
      type: "response",
      id: 1,
      questions: [{ name: "a.example", type: "A" }],
      answers: [{ type: "A", name: "a.example", ttl: 5, data: "192.0.2.1" }],
    });
    assert.equal(hasOpt(plain), false);
    const q = decodeQuery(query("a.example", "A", { opt: { do: true } }), newQueryInfo());
    const withOpt = appendOpt(plain, q);
    assert.equal(hasOpt(withOpt), true);
    const p = dnsPacket.decode(withOpt);
    assert.equal(p.answers!.length, 1);
    assert.equal(p.additionals![0]!.type, "OPT");
  });
});
