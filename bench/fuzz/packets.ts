/**
 * What the fuzzer sends: DNS queries built byte by byte (so that nothing
 * stops a field from being wrong), then mutated. Every case comes from the
 * seeded Prng alone, so a seed and an index name one exact packet.
 *
 * UDP cases are one datagram: a well-formed query (a managed name, a name in
 * a managed zone, a forwarded name, a reverse name, odd names; with or without
 * EDNS) left as it is about one time in five, else one to three mutations:
 * bit flips, interesting bytes, truncation, wrong section counts, random
 * opcodes and flags, compression loops and forward pointers, label lengths
 * past the end, extended label types, names over 255 bytes, EDNS OPT records
 * with garbage options (or two OPTs, a non-root owner, a version above 0),
 * records in every section, inserted, deleted and appended bytes, two
 * messages spliced, and datagrams of random bytes.
 * TCP cases are one connection: a few such messages length-prefixed (RFC 1035
 * §4.2.2), then split into odd chunks, or with a wrong length, a zero-length
 * frame, a frame that never ends, or plain junk.
 */
import type { Prng } from "./prng.js";

/** The names the fuzzer builds its queries from; the target must give them these roles. */
export interface FuzzNames {
  /** Managed names (A/AAAA answered, other types from the zone). */
  readonly managed: readonly string[];
  /** Unmanaged names inside a managed zone (NXDOMAIN, or forwarded). */
  readonly inZone: readonly string[];
  /** Names outside every managed zone (forwarded, or REFUSED). */
  readonly outside: readonly string[];
  /** Reverse names of managed addresses (PTR). */
  readonly reverse: readonly string[];
}

export type FuzzCase =
  | { readonly transport: "udp"; readonly kind: string; readonly packet: Buffer }
  | { readonly transport: "tcp"; readonly kind: string; readonly chunks: readonly Buffer[] };

const HEADER = 12;
/** The largest UDP payload over IPv4 (65535 - 20 - 8): a longer datagram cannot be sent at all. */
const MAX_DATAGRAM = 65_507;
const T = {
  A: 1,
  NS: 2,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  OPT: 41,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
};
const QTYPES = [T.A, T.A, T.A, T.AAAA, T.AAAA, T.SOA, T.NS, T.PTR, T.MX, T.TXT, T.ANY, T.AXFR, T.IXFR, T.OPT];
const INTERESTING_BYTES = [0x00, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xfe, 0xff];
const INTERESTING_U16 = [0, 1, 2, 3, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xfffe, 0xffff];

/** A query as built, with the offsets the structure-aware mutations need. */
interface Built {
  bytes: Buffer;
  /** Offset just after the question name, and after the question. */
  nameEnd: number;
  questionEnd: number;
}

function u16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(n & 0xffff, 0);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** A name's labels as bytes; label lengths are written as they are (a 300-byte label is the caller's intent). */
function wireName(labels: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const l of labels) parts.push(Buffer.from([l.length & 0xff]), l);
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function labelsOf(name: string): Buffer[] {
  return name
    .split(".")
    .filter((l) => l !== "")
    .map((l) => Buffer.from(l, "latin1"));
}

export class PacketGenerator {
  constructor(
    private readonly rng: Prng,
    private readonly names: FuzzNames,
  ) {}

  /** The next case: about one in fifty is a TCP stream. */
  next(): FuzzCase {
    if (this.rng.chance(0.02)) return this.tcpCase();
    const { kind, packet } = this.udpPacket();
    return { transport: "udp", kind, packet };
  }

  private udpPacket(): { kind: string; packet: Buffer } {
    const rng = this.rng;
    if (rng.chance(0.03)) return { kind: "random", packet: rng.bytes(rng.int(rng.chance(0.5) ? 16 : 600)) };
    const base = this.query();
    if (rng.chance(0.2)) return { kind: "valid", packet: base.bytes.subarray(0, MAX_DATAGRAM) };
    const kinds: string[] = [];
    let bytes = base.bytes;
    const rounds = rng.range(1, 3);
    for (let i = 0; i < rounds; i++) {
      const [kind, mutate] = rng.pick(MUTATIONS);
      kinds.push(kind);
      bytes = mutate(rng, { ...base, bytes }, () => this.query());
    }
    return { kind: kinds.join("+"), packet: bytes.subarray(0, MAX_DATAGRAM) };
  }

  /** One well-formed query (perhaps with records in the other sections). */
  private query(): Built {
    const rng = this.rng;
    const labels = this.name();
    const qtype = rng.chance(0.9) ? rng.pick(QTYPES) : rng.int(0x10000);
    const qclass = rng.chance(0.9) ? 1 : rng.pick([3, 4, 254, 255, rng.int(0x10000)]);
    const name = wireName(labels);
    const question = Buffer.concat([name, u16(qtype), u16(qclass)]);
    const an: Buffer[] = [];
    const ns: Buffer[] = [];
    const ar: Buffer[] = [];
    if (rng.chance(0.05)) an.push(record(rng));
    if (rng.chance(0.05)) ns.push(record(rng));
    if (rng.chance(0.05)) ar.push(record(rng));
    if (rng.chance(0.5)) ar.push(optRecord(rng, { version: rng.chance(0.05) ? rng.range(1, 255) : 0 }));
    const b2 = (rng.chance(0.9) ? 0x01 : 0) | (rng.chance(0.05) ? 0x02 : 0); // RD, sometimes TC
    const b3 = (rng.chance(0.1) ? 0x20 : 0) | (rng.chance(0.1) ? 0x10 : 0); // AD, CD
    const header = Buffer.concat([
      u16(rng.int(0x10000)),
      Buffer.from([b2, b3]),
      u16(1),
      u16(an.length),
      u16(ns.length),
      u16(ar.length),
    ]);
    const bytes = Buffer.concat([header, question, ...an, ...ns, ...ar]);
    return { bytes, nameEnd: HEADER + name.length, questionEnd: HEADER + question.length };
  }

  /** A question name: one of the target's, often in odd case, or an odd name. */
  private name(): Buffer[] {
    const rng = this.rng;
    const n = this.names;
    const roll = rng.int(100);
    let labels: Buffer[];
    if (roll < 35) labels = labelsOf(rng.pick(n.managed));
    else if (roll < 50) labels = labelsOf(rng.pick(n.inZone));
    else if (roll < 70) labels = labelsOf(rng.pick(n.outside));
    else if (roll < 78) labels = labelsOf(rng.pick(n.reverse));
    else labels = this.oddName();
    if (rng.chance(0.3)) {
      // 0x20 mixed case (names compare case-insensitively)
      labels = labels.map((l) =>
        Buffer.from(l.map((c) => (c >= 0x61 && c <= 0x7a && rng.chance(0.5) ? c - 32 : c))),
      );
    }
    return labels;
  }

  private oddName(): Buffer[] {
    const rng = this.rng;
    const zone = labelsOf(rng.pick(this.names.managed)).slice(1);
    switch (rng.int(9)) {
      case 0:
        return []; // the root
      case 1:
        return [Buffer.alloc(63, 0x61), ...zone];
      case 2: // just under and over 255 bytes in all
        return Array.from({ length: rng.range(3, 5) }, () => Buffer.alloc(63, 0x62));
      case 3: // bytes that need escaping in presentation form: '.', '\', NUL, high bytes
        return [Buffer.from([0x2e, 0x5c, 0x00, 0xff, 0x20, 0x22]), ...zone];
      case 4:
        return [rng.bytes(rng.range(1, 63)), ...zone];
      case 5: // reverse names that are not addresses
        return labelsOf(
          rng.pick([
            "999.0.0.127.in-addr.arpa",
            "1.2.in-addr.arpa",
            "in-addr.arpa",
            "x.y.z.w.in-addr.arpa",
            "01.0.0.127.in-addr.arpa",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
            "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
            "ip6.arpa",
          ]),
        );
      case 6:
        return Array.from({ length: rng.range(1, 127) }, () => Buffer.from("a"));
      case 7:
        return [Buffer.from("*"), ...zone];
      default:
        return [Buffer.from(`n${rng.int(1000)}`), ...zone];
    }
  }

  private tcpCase(): FuzzCase {
    const rng = this.rng;
    if (rng.chance(0.15))
      return { transport: "tcp", kind: "tcp-junk", chunks: [rng.bytes(rng.range(1, 2000))] };
    const messages = Array.from({ length: rng.range(1, 6) }, () => this.udpPacket().packet);
    const frames: Buffer[] = messages.map((m) => Buffer.concat([u16(m.length), m]));
    let kind = "tcp";
    switch (rng.int(8)) {
      case 0: {
        kind = "tcp-bad-length";
        const i = rng.int(frames.length);
        frames[i]!.writeUInt16BE(rng.pick([0, 1, 11, 12, rng.int(frames[i]!.length + 20), 0xffff]), 0);
        break;
      }
      case 1:
        kind = "tcp-zero-length";
        frames.splice(rng.int(frames.length + 1), 0, u16(0));
        break;
      case 2: {
        kind = "tcp-partial";
        const last = frames.length - 1;
        frames[last] = frames[last]!.subarray(0, rng.int(frames[last]!.length));
        break;
      }
      case 3:
        kind = "tcp-huge-length";
        frames.push(Buffer.concat([u16(0xffff), rng.bytes(rng.int(100))]));
        break;
      default:
        break;
    }
    const stream = Buffer.concat(frames);
    // Often in odd pieces (one byte, a split length prefix): the server must reassemble.
    if (rng.chance(0.5)) {
      kind += "-split";
      const chunks: Buffer[] = [];
      for (let o = 0; o < stream.length;) {
        const n = rng.chance(0.3) ? 1 : rng.range(1, 64);
        chunks.push(stream.subarray(o, o + n));
        o += n;
      }
      return { transport: "tcp", kind, chunks };
    }
    return { transport: "tcp", kind, chunks: [stream] };
  }
}

/** An RR with a pointer, the root or a short name as owner, and random RDATA. */
function record(rng: Prng): Buffer {
  const owner = rng.pick([Buffer.from([0xc0, 0x0c]), Buffer.from([0]), wireName([Buffer.from("x")])]);
  const rdata = rng.bytes(rng.int(40));
  return Buffer.concat([owner, u16(rng.pick(QTYPES)), u16(1), u32(rng.u32()), u16(rdata.length), rdata]);
}

/** EDNS OPT (RFC 6891 §6.1.2) with a mix of real and garbage options. */
function optRecord(rng: Prng, o: { version: number; owner?: Buffer }): Buffer {
  const options: Buffer[] = [];
  const count = rng.chance(0.5) ? 0 : rng.range(1, 4);
  for (let i = 0; i < count; i++) options.push(ednsOption(rng));
  const rdata = Buffer.concat(options);
  const udpSize = rng.pick([0, 1, 511, 512, 1232, 1400, 4096, 65535, rng.int(0x10000)]);
  const extRcode = rng.chance(0.9) ? 0 : rng.int(256);
  const flags = rng.chance(0.9) ? (rng.chance(0.3) ? 0x8000 : 0) : rng.int(0x10000);
  return Buffer.concat([
    o.owner ?? Buffer.from([0]),
    u16(T.OPT),
    u16(udpSize),
    Buffer.from([extRcode, o.version]),
    u16(flags),
    u16(rdata.length),
    rdata,
  ]);
}

function ednsOption(rng: Prng): Buffer {
  const opt = (code: number, data: Buffer): Buffer => Buffer.concat([u16(code), u16(data.length), data]);
  switch (rng.int(8)) {
    case 0: // COOKIE (RFC 7873): client cookie, with a server cookie, or a bad length
      return opt(10, rng.bytes(rng.pick([8, 16, 24, 40, 0, 7, 41])));
    case 1: {
      // Client subnet (RFC 7871), sometimes inconsistent
      const family = rng.pick([1, 2, 0, 3]);
      const source = rng.chance(0.8) ? rng.int(family === 2 ? 129 : 33) : rng.int(256);
      const addr = rng.bytes(rng.chance(0.8) ? Math.ceil(source / 8) : rng.int(20));
      return opt(8, Buffer.concat([u16(family), Buffer.from([source, rng.int(256)]), addr]));
    }
    case 2: // padding (RFC 7830); now and then a query of many kilobytes
      return opt(12, Buffer.alloc(rng.chance(0.02) ? rng.range(4000, 60_000) : rng.int(200)));
    case 3: // TCP keepalive (RFC 7828)
      return opt(11, rng.bytes(rng.pick([0, 2, 1])));
    case 4: // NSID (RFC 5001)
      return opt(3, rng.bytes(rng.pick([0, 0, 4])));
    case 5: // extended error (RFC 8914): only responses carry it
      return opt(15, rng.bytes(rng.range(2, 30)));
    case 6: // an option header whose length runs past the OPT's RDATA
      return Buffer.concat([u16(rng.int(0x10000)), u16(rng.range(1, 0xffff)), rng.bytes(rng.int(4))]);
    default:
      return opt(rng.int(0x10000), rng.bytes(rng.int(50)));
  }
}

type Mutation = (rng: Prng, q: Built, another: () => Built) => Buffer;

function setU16(b: Buffer, off: number, v: number): Buffer {
  if (off + 2 <= b.length) b.writeUInt16BE(v & 0xffff, off);
  return b;
}

/** The question name replaced by `name` (everything after it kept). */
function withQuestionName(q: Built, name: Buffer): Buffer {
  return Buffer.concat([q.bytes.subarray(0, HEADER), name, q.bytes.subarray(q.nameEnd)]);
}

/** Appends records and counts them in ARCOUNT (or ANCOUNT). */
function withRecords(q: Built, records: readonly Buffer[], section: "an" | "ar" = "ar"): Buffer {
  const out = Buffer.concat([q.bytes, ...records]);
  const off = section === "an" ? 6 : 10;
  if (out.length >= HEADER) out.writeUInt16BE((out.readUInt16BE(off) + records.length) & 0xffff, off);
  return out;
}

const MUTATIONS: readonly (readonly [string, Mutation])[] = [
  [
    "bitflip",
    (rng, q) => {
      const b = Buffer.from(q.bytes);
      for (let i = rng.range(1, 8); i > 0 && b.length > 0; i--) b[rng.int(b.length)]! ^= 1 << rng.int(8);
      return b;
    },
  ],
  [
    "bytes",
    (rng, q) => {
      const b = Buffer.from(q.bytes);
      for (let i = rng.range(1, 4); i > 0 && b.length > 0; i--)
        b[rng.int(b.length)] = rng.pick(INTERESTING_BYTES);
      return b;
    },
  ],
  ["truncate", (rng, q) => Buffer.from(q.bytes.subarray(0, rng.int(q.bytes.length)))],
  ["append", (rng, q) => Buffer.concat([q.bytes, rng.bytes(rng.range(1, 64))])],
  [
    "insert",
    (rng, q) => {
      const at = rng.int(q.bytes.length + 1);
      return Buffer.concat([q.bytes.subarray(0, at), rng.bytes(rng.range(1, 16)), q.bytes.subarray(at)]);
    },
  ],
  [
    "delete",
    (rng, q) => {
      const at = rng.int(q.bytes.length);
      return Buffer.concat([q.bytes.subarray(0, at), q.bytes.subarray(at + rng.range(1, 16))]);
    },
  ],
  [
    "counts",
    (rng, q) => {
      const b = Buffer.from(q.bytes);
      for (let i = rng.range(1, 4); i > 0; i--) setU16(b, 4 + 2 * rng.int(4), rng.pick(INTERESTING_U16));
      return b;
    },
  ],
  [
    "flags",
    (rng, q) => {
      const b = Buffer.from(q.bytes);
      if (b.length < 4) return b;
      // A random opcode (0-15) most of the time, and any other bits of the two flag bytes.
      b[2] = rng.chance(0.7) ? (b[2]! & 0x87) | (rng.int(16) << 3) : rng.int(256);
      if (rng.chance(0.5)) b[3] = rng.int(256);
      return b;
    },
  ],
  [
    "qtype",
    (rng, q) => setU16(Buffer.from(q.bytes), q.nameEnd, rng.pick([...QTYPES, 0, 0xffff, rng.int(0x10000)])),
  ],
  [
    "qclass",
    (rng, q) => setU16(Buffer.from(q.bytes), q.nameEnd + 2, rng.pick([0, 2, 3, 4, 254, 255, 0xffff])),
  ],
  [
    "question-twice",
    (_rng, q) => {
      const question = q.bytes.subarray(HEADER, q.questionEnd);
      const out = Buffer.concat([
        q.bytes.subarray(0, q.questionEnd),
        question,
        q.bytes.subarray(q.questionEnd),
      ]);
      return setU16(out, 4, 2);
    },
  ],
  [
    // A pointer to itself, to the header, or a pair pointing at each other (RFC 1035 §4.1.4 loops).
    "compression-loop",
    (rng, q) => {
      if (rng.chance(0.5)) return withQuestionName(q, Buffer.from([0xc0, rng.pick([HEADER, 0, 2])]));
      const at = q.bytes.length;
      const pair = [
        Buffer.concat([
          Buffer.from([0xc0 | ((at + 12) >> 8), (at + 12) & 0xff]),
          u16(T.A),
          u16(1),
          u32(0),
          u16(0),
        ]),
        Buffer.concat([Buffer.from([0xc0 | (at >> 8), at & 0xff]), u16(T.A), u16(1), u32(0), u16(0)]),
      ];
      return withRecords(q, pair, rng.chance(0.5) ? "an" : "ar");
    },
  ],
  [
    "forward-pointer",
    (rng, q) => {
      const target = q.bytes.length + rng.range(-4, 40);
      const ptr = Buffer.from([0xc0 | ((target >> 8) & 0x3f), target & 0xff]);
      if (rng.chance(0.5))
        return withQuestionName(q, Buffer.concat([wireName([Buffer.from("www")]).subarray(0, 4), ptr]));
      const rr = Buffer.concat([ptr, u16(T.TXT), u16(1), u32(0), u16(0)]);
      return withRecords(q, [rr], "an");
    },
  ],
  [
    "label-past-end",
    (rng, q) => {
      const b = Buffer.from(q.bytes);
      // The first label's length (or a later one's) made longer than what is left.
      let at = HEADER;
      while (at < q.nameEnd - 1 && b[at]! > 0 && rng.chance(0.5)) at += b[at]! + 1;
      if (at < b.length) b[at] = Math.min(63, b.length - at + rng.range(0, 20));
      return rng.chance(0.5) ? b.subarray(0, Math.max(HEADER + 1, at + 1 + rng.int(4))) : b;
    },
  ],
  [
    // 0x40 and 0x80: the extended label types RFC 6891 §5 retired.
    "label-type",
    (rng, q) => {
      const b = Buffer.from(q.bytes);
      if (b.length > HEADER) b[HEADER] = rng.range(0x40, 0xbf);
      return b;
    },
  ],
  [
    "long-name",
    (rng, q) =>
      withQuestionName(
        q,
        wireName(Array.from({ length: rng.range(4, 9) }, () => Buffer.alloc(rng.range(40, 63), 0x6c))),
      ),
  ],
  [
    "opt-garbage",
    (rng, q) => {
      switch (rng.int(6)) {
        case 0: // two OPTs
          return withRecords(q, [optRecord(rng, { version: 0 }), optRecord(rng, { version: 0 })]);
        case 1: // owner not the root
          return withRecords(q, [
            optRecord(rng, {
              version: 0,
              owner: rng.pick([Buffer.from([0xc0, 0x0c]), wireName([Buffer.from("a")])]),
            }),
          ]);
        case 2: // in the answer section
          return withRecords(q, [optRecord(rng, { version: 0 })], "an");
        case 3: {
          // RDLENGTH past the end of the packet
          const opt = optRecord(rng, { version: 0 });
          opt.writeUInt16BE(opt.readUInt16BE(9) + rng.range(1, 300), 9);
          return withRecords(q, [opt]);
        }
        case 4: // a version above 0 (BADVERS) with options
          return withRecords(q, [optRecord(rng, { version: rng.range(1, 255) })]);
        default: // only garbage options
          return withRecords(q, [
            Buffer.concat([Buffer.from([0]), u16(T.OPT), u16(4096), u32(0), u16(8), rng.bytes(8)]),
          ]);
      }
    },
  ],
  ["splice", (_rng, q, another) => Buffer.concat([q.bytes, another().bytes])],
];

/**
 * The messages a server reading `chunks` as one TCP stream takes out of it
 * (RFC 1035 §4.2.2: a two-byte length, then that many bytes), as the server
 * does: whatever follows the last complete one is never a message.
 */
export function framedMessages(chunks: readonly Buffer[]): Buffer[] {
  const stream = Buffer.concat(chunks);
  const out: Buffer[] = [];
  let o = 0;
  while (o + 2 <= stream.length) {
    const len = stream.readUInt16BE(o);
    if (o + 2 + len > stream.length) break;
    out.push(stream.subarray(o + 2, o + 2 + len));
    o += 2 + len;
  }
  return out;
}

/** Whether a DNS server answers this message at all: at least a header, and not a response (QR clear). */
export function answerable(msg: Buffer): boolean {
  return msg.length >= HEADER && (msg[2]! & 0x80) === 0;
}
