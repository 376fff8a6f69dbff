/**
 * DNS wire helpers for the query path (RFC 1035 §4.1, RFC 6891 §6).
 *
 * `decodeQuery` reads a query into a caller-owned `QueryInfo` without
 * allocating: header fields, the one question's offsets, a hash of its
 * lower-cased name, and the EDNS OPT record if any. Answers are then either
 * patched from prepared bytes (`writeAnswer`, the hot path) or encoded with
 * dns-packet (`buildReply`, every other case). The question is always copied
 * from the query byte for byte, so it is echoed exactly as asked.
 */
import dnsPacket from "dns-packet";

export const HEADER_LEN = 12;
export const OPT_LEN = 11;
/**
 * RFC 1035 §3.1: a name is at most 255 bytes on the wire, length octets and
 * the root's zero included; so its labels (with their length octets) take at
 * most 254.
 */
const MAX_LABELS_LEN = 254;
/** What we advertise in our OPT (RFC 6891 §6.2.5; the DNS Flag Day 2020 value). */
export const OUR_UDP_SIZE = 1232;

export const QTYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  AAAA: 28,
  OPT: 41,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
} as const;
export const QCLASS_IN = 1;

export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  BADVERS: 16,
} as const;

const RCODE_NAMES: readonly string[] = [
  "NOERROR",
  "FORMERR",
  "SERVFAIL",
  "NXDOMAIN",
  "NOTIMP",
  "REFUSED",
  "YXDOMAIN",
  "YXRRSET",
  "NXRRSET",
  "NOTAUTH",
  "NOTZONE",
];
export function rcodeName(rcode: number): string {
  if (rcode === RCODE.BADVERS) return "BADVERS";
  return RCODE_NAMES[rcode] ?? `RCODE${rcode}`;
}

const TYPE_NAMES: string[] = [];
/** The query types known by name (a bounded set: counters give every other type one "other" slot). */
export const KNOWN_QTYPES: readonly number[] = [];
for (const [name, value] of Object.entries({
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  HINFO: 13,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  NAPTR: 35,
  DS: 43,
  RRSIG: 46,
  NSEC: 47,
  DNSKEY: 48,
  TLSA: 52,
  SVCB: 64,
  HTTPS: 65,
  NULL: 10,
  LOC: 29,
  DNAME: 39,
  SSHFP: 44,
  NSEC3: 50,
  NSEC3PARAM: 51,
  CDS: 59,
  CDNSKEY: 60,
  OPENPGPKEY: 61,
  SPF: 99,
  URI: 256,
  CAA: 257,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
})) {
  TYPE_NAMES[value] = name;
  (KNOWN_QTYPES as number[]).push(value);
}
/** A query type's mnemonic; constant strings for common types, so counting allocates nothing. */
export function qtypeName(qtype: number): string {
  return TYPE_NAMES[qtype] ?? `TYPE${qtype}`;
}

/** Why a packet could not be decoded (only the header could be read). */
export type DecodeStatus = "ok" | "short" | "response" | "formerr";

/** One decoded query. Mutable and reused by the server: copy it before any await. */
export interface QueryInfo {
  status: DecodeStatus;
  /** Why decoding failed, for debug logs. */
  problem: string;
  id: number;
  opcode: number;
  rd: boolean;
  cd: boolean;
  qdcount: number;
  /** Offset just after the first question (name, type, class); 0 if none. */
  questionEnd: number;
  /** Offset just after the first question's name. */
  nameEnd: number;
  qtype: number;
  qclass: number;
  /** FNV-1a of the lower-cased wire name (see `hashName`). */
  nameHash: number;
  hasOpt: boolean;
  udpSize: number;
  ednsVersion: number;
  dnssecOk: boolean;
  /** Offset and length of the OPT RDATA (its options), for the forwarder. */
  optRdata: number;
  optRdlen: number;
}

export function newQueryInfo(): QueryInfo {
  return {
    status: "ok",
    problem: "",
    id: 0,
    opcode: 0,
    rd: false,
    cd: false,
    qdcount: 0,
    questionEnd: 0,
    nameEnd: 0,
    qtype: 0,
    qclass: 0,
    nameHash: 0,
    hasOpt: false,
    udpSize: 512,
    ednsVersion: 0,
    dnssecOk: false,
    optRdata: 0,
    optRdlen: 0,
  };
}

export function copyQueryInfo(q: QueryInfo): QueryInfo {
  return { ...q };
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function lower(b: number): number {
  return b >= 0x41 && b <= 0x5a ? b | 0x20 : b;
}

/** FNV-1a over the wire name's bytes (length octets included), ASCII letters folded to lower case. */
export function hashName(buf: Uint8Array, start: number, end: number): number {
  let h = FNV_OFFSET;
  for (let i = start; i < end; i++) {
    h = Math.imul(h ^ lower(buf[i]!), FNV_PRIME);
  }
  // Kept within V8's small-integer range, so the Map lookup on the hot path allocates nothing.
  return h & 0x3fffffff;
}

/** Case-insensitive comparison of two uncompressed wire names. */
export function sameName(
  a: Uint8Array,
  aStart: number,
  aEnd: number,
  b: Uint8Array,
  bStart: number,
  bEnd: number,
): boolean {
  if (aEnd - aStart !== bEnd - bStart) return false;
  for (let i = 0; i < aEnd - aStart; i++) {
    if (lower(a[aStart + i]!) !== lower(b[bStart + i]!)) return false;
  }
  return true;
}

/** Encodes a presentation name ("www.example.org") as uncompressed wire bytes, lower-cased. */
export function encodeName(name: string): Buffer {
  const text = name === "." ? "" : name.endsWith(".") ? name.slice(0, -1) : name;
  // One allocation: a label's bytes are its characters (latin1), each label gains a length octet.
  const out = Buffer.allocUnsafe(text.length + (text === "" ? 1 : 2));
  let o = 0;
  let start = 0;
  for (let i = 0; i <= text.length && text !== ""; i++) {
    if (i < text.length && text.charCodeAt(i) !== 0x2e) continue;
    const len = i - start;
    if (len === 0 || len > 63) throw new Error(`bad DNS label in '${name}'`);
    out[o++] = len;
    for (let k = start; k < i; k++) {
      const c = text.charCodeAt(k) & 0xff;
      out[o++] = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
    }
    start = i + 1;
  }
  out[o++] = 0;
  if (o > 255) throw new Error(`DNS name '${name}' is longer than 255 bytes`);
  return out;
}

/** Decodes an uncompressed wire name into a lower-cased presentation name without trailing dot. */
export function nameToString(buf: Uint8Array, start: number, end: number): string {
  let out = "";
  let i = start;
  while (i < end) {
    const len = buf[i]!;
    if (len === 0) break;
    if (out !== "") out += ".";
    for (let j = i + 1; j <= i + len; j++) {
      const c = lower(buf[j]!);
      // RFC 4343 §2.1: escape what would change the name's meaning ("a.b" as one label).
      if (c === 0x2e || c === 0x5c) out += `\\${String.fromCharCode(c)}`;
      else if (c <= 0x20 || c >= 0x7f) out += `\\${c.toString().padStart(3, "0")}`;
      else out += String.fromCharCode(c);
    }
    i += len + 1;
  }
  return out;
}

/** Skips a possibly compressed name; returns the offset after it, or -1 if malformed. */
function skipName(buf: Uint8Array, off: number): number {
  let total = 0;
  for (;;) {
    if (off >= buf.length) return -1;
    const len = buf[off]!;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2 <= buf.length ? off + 2 : -1;
    if ((len & 0xc0) !== 0) return -1; // RFC 6891 §5: extended label types are gone
    total += len + 1;
    if (total > MAX_LABELS_LEN) return -1;
    off += len + 1;
  }
}

function fail(q: QueryInfo, problem: string): QueryInfo {
  q.status = "formerr";
  q.problem = problem;
  return q;
}

/**
 * Decodes a query into `q` (RFC 1035 §4.1). Status "short" and "response"
 * packets are dropped by the caller; "formerr" gets FORMERR (the header was read).
 */
export function decodeQuery(buf: Uint8Array, q: QueryInfo): QueryInfo {
  q.problem = "";
  q.hasOpt = false;
  q.udpSize = 512;
  q.ednsVersion = 0;
  q.dnssecOk = false;
  q.questionEnd = 0;
  q.nameEnd = 0;
  q.qtype = 0;
  q.qclass = 0;
  if (buf.length < HEADER_LEN) {
    q.status = "short";
    return q;
  }
  const b2 = buf[2]!;
  q.id = (buf[0]! << 8) | buf[1]!;
  q.opcode = (b2 >> 3) & 0x0f;
  q.rd = (b2 & 0x01) !== 0;
  q.cd = (buf[3]! & 0x10) !== 0;
  if ((b2 & 0x80) !== 0) {
    q.status = "response";
    return q;
  }
  q.status = "ok";
  const qd = (buf[4]! << 8) | buf[5]!;
  const an = (buf[6]! << 8) | buf[7]!;
  const ns = (buf[8]! << 8) | buf[9]!;
  const ar = (buf[10]! << 8) | buf[11]!;
  q.qdcount = qd;
  let off = HEADER_LEN;
  for (let i = 0; i < qd; i++) {
    const start = off;
    // The question name is the first name in the message: a pointer can only be bogus.
    let total = 0;
    for (;;) {
      if (off >= buf.length) return fail(q, "question name runs past the end");
      const len = buf[off]!;
      if (len === 0) {
        off += 1;
        break;
      }
      if ((len & 0xc0) !== 0) return fail(q, "compressed or extended label in the question");
      total += len + 1;
      if (total > MAX_LABELS_LEN) return fail(q, "question name longer than 255 bytes");
      off += len + 1;
    }
    if (off + 4 > buf.length) return fail(q, "question type/class missing");
    if (i === 0) {
      q.nameEnd = off;
      q.nameHash = hashName(buf, start, off);
      q.qtype = (buf[off]! << 8) | buf[off + 1]!;
      q.qclass = (buf[off + 2]! << 8) | buf[off + 3]!;
      q.questionEnd = off + 4;
    }
    off += 4;
  }
  // Answer and authority sections (empty in ordinary queries): skip them.
  for (let i = 0; i < an + ns; i++) {
    off = skipName(buf, off);
    if (off < 0 || off + 10 > buf.length) return fail(q, "truncated resource record");
    const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!;
    off += 10 + rdlen;
    if (off > buf.length) return fail(q, "resource record data runs past the end");
  }
  for (let i = 0; i < ar; i++) {
    const nameStart = off;
    off = skipName(buf, off);
    if (off < 0 || off + 10 > buf.length) return fail(q, "truncated additional record");
    const type = (buf[off]! << 8) | buf[off + 1]!;
    const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!;
    if (off + 10 + rdlen > buf.length) return fail(q, "additional record data runs past the end");
    if (type === QTYPE.OPT) {
      // RFC 6891 §6.1.1: one OPT, owner is the root.
      if (q.hasOpt) return fail(q, "more than one OPT record");
      if (buf[nameStart] !== 0 || off !== nameStart + 1) return fail(q, "OPT owner is not the root");
      q.hasOpt = true;
      q.udpSize = Math.max(512, (buf[off + 2]! << 8) | buf[off + 3]!);
      q.ednsVersion = buf[off + 5]!;
      q.dnssecOk = (buf[off + 6]! & 0x80) !== 0;
      q.optRdata = off + 10;
      q.optRdlen = rdlen;
      // Options are TLVs; check they are well formed, ignore their meaning (§6.1.2).
      let o = off + 10;
      const end = o + rdlen;
      while (o < end) {
        if (o + 4 > end) return fail(q, "truncated EDNS option");
        o += 4 + ((buf[o + 2]! << 8) | buf[o + 3]!);
        if (o > end) return fail(q, "EDNS option runs past the OPT record");
      }
    }
    off += 10 + rdlen;
  }
  if (off !== buf.length) return fail(q, `${buf.length - off} bytes after the last record`);
  return q;
}

/** Writes our OPT record (RFC 6891 §6.1.2): root owner, our UDP size, Z bits clear, DO copied (RFC 3225 §3). */
export function writeOpt(out: Uint8Array, off: number, extendedRcode: number, dnssecOk: boolean): number {
  out[off] = 0;
  out[off + 1] = 0;
  out[off + 2] = QTYPE.OPT;
  out[off + 3] = OUR_UDP_SIZE >> 8;
  out[off + 4] = OUR_UDP_SIZE & 0xff;
  out[off + 5] = extendedRcode;
  out[off + 6] = 0; // version 0
  out[off + 7] = dnssecOk ? 0x80 : 0;
  out[off + 8] = 0;
  out[off + 9] = 0;
  out[off + 10] = 0;
  return off + OPT_LEN;
}

export interface ReplyFlags {
  aa: boolean;
  ra: boolean;
}

function writeHeader(
  out: Uint8Array,
  query: Uint8Array,
  q: QueryInfo,
  flags: ReplyFlags,
  rcode: number,
  tc: boolean,
  counts: { qd: number; an: number; ns: number; ar: number },
): void {
  out[0] = query[0]!;
  out[1] = query[1]!;
  out[2] = 0x80 | (q.opcode << 3) | (flags.aa ? 0x04 : 0) | (tc ? 0x02 : 0) | (q.rd ? 0x01 : 0);
  out[3] = (flags.ra ? 0x80 : 0) | (q.cd ? 0x10 : 0) | (rcode & 0x0f);
  out[4] = counts.qd >> 8;
  out[5] = counts.qd & 0xff;
  out[6] = counts.an >> 8;
  out[7] = counts.an & 0xff;
  out[8] = counts.ns >> 8;
  out[9] = counts.ns & 0xff;
  out[10] = counts.ar >> 8;
  out[11] = counts.ar & 0xff;
}

/**
 * Prepared answer RRs for one name and type. Owner names are a compression
 * pointer to offset 12 (the question's name), so the bytes fit any spelling
 * of the question.
 */
export interface AnswerTemplate {
  /** The address array these bytes were built from (identity is the cache key). */
  readonly source: readonly string[];
  readonly count: number;
  readonly bytes: Buffer;
}

/** Builds A or AAAA RRs for the addresses of the right family (others are skipped). */
export function buildAddressTemplate(source: readonly string[], qtype: number, ttl: number): AnswerTemplate {
  const parts: Buffer[] = [];
  for (const ip of source) {
    const v6 = ip.includes(":");
    if (v6 !== (qtype === QTYPE.AAAA)) continue;
    const rdata = v6 ? ipv6Bytes(ip) : ipv4Bytes(ip);
    const rr = Buffer.alloc(12 + rdata.length);
    rr.writeUInt16BE(0xc00c, 0);
    rr.writeUInt16BE(qtype, 2);
    rr.writeUInt16BE(QCLASS_IN, 4);
    rr.writeUInt32BE(ttl >>> 0, 6);
    rr.writeUInt16BE(rdata.length, 10);
    rdata.copy(rr, 12);
    parts.push(rr);
  }
  return { source, count: parts.length, bytes: Buffer.concat(parts) };
}

function ipv4Bytes(ip: string): Buffer {
  const parts = ip.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255)))
    throw new Error(`bad IPv4 address '${ip}'`);
  return Buffer.from(parts);
}

/** The 16 bytes of an IPv6 address (RFC 4291 §2.2 text forms, embedded IPv4 included). */
export function ipv6Bytes(ip: string): Buffer {
  let text = ip.replace(/%.*$/, "");
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const b = ipv4Bytes(v4[1]!);
    text =
      text.slice(0, -v4[1]!.length) +
      `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) throw new Error(`bad IPv6 address '${ip}'`);
  const head = halves[0] === "" ? [] : halves[0]!.split(":");
  const tail = halves.length === 2 && halves[1] !== "" ? halves[1]!.split(":") : [];
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 2 && missing < 1) || (halves.length === 1 && missing !== 0)) {
    throw new Error(`bad IPv6 address '${ip}'`);
  }
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`bad IPv6 address '${ip}'`);
    out.writeUInt16BE(parseInt(g, 16), i * 2);
  });
  return out;
}

/**
 * The hot path: header + question (copied as asked) + prepared answers + OPT.
 * Returns null when the answer does not fit `limit` (the caller truncates).
 */
export function writeAnswer(
  query: Uint8Array,
  q: QueryInfo,
  tmpl: AnswerTemplate,
  ra: boolean,
  limit: number,
): Buffer | null {
  const qEnd = q.questionEnd;
  const optLen = q.hasOpt ? OPT_LEN : 0;
  const total = qEnd + tmpl.bytes.length + optLen;
  if (total > limit) return null;
  const out = Buffer.allocUnsafe(total);
  out[0] = query[0]!;
  out[1] = query[1]!;
  out[2] = 0x84 | (query[2]! & 0x01); // QR, AA, RD copied; opcode QUERY
  out[3] = (ra ? 0x80 : 0) | (query[3]! & 0x10); // RA, CD copied; NOERROR
  out[4] = 0;
  out[5] = 1;
  out[6] = tmpl.count >> 8;
  out[7] = tmpl.count & 0xff;
  out[8] = 0;
  out[9] = 0;
  out[10] = 0;
  out[11] = q.hasOpt ? 1 : 0;
  // A loop rather than subarray(): a question is a few dozen bytes and a view would be one more allocation.
  for (let i = HEADER_LEN; i < qEnd; i++) out[i] = query[i]!;
  out.set(tmpl.bytes, qEnd);
  if (q.hasOpt) writeOpt(out, qEnd + tmpl.bytes.length, 0, q.dnssecOk);
  return out;
}

export interface ReplySections {
  rcode: number;
  aa: boolean;
  ra: boolean;
  answers?: dnsPacket.Answer[];
  authorities?: dnsPacket.Answer[];
}

/**
 * Encodes a reply off the hot path. The question is copied from the query when
 * it was read; RRs are encoded by dns-packet; OPT is added when the query had
 * one (with BADVERS's upper bits for rcode 16). Truncates to `limit` with TC.
 */
export function buildReply(query: Uint8Array, q: QueryInfo, sections: ReplySections, limit: number): Buffer {
  const answers = sections.answers ?? [];
  const authorities = sections.authorities ?? [];
  let body: Buffer = Buffer.alloc(0);
  if (answers.length > 0 || authorities.length > 0) {
    const encoded = dnsPacket.encode({ type: "response", id: 0, flags: 0, answers, authorities });
    body = encoded.subarray(HEADER_LEN);
  }
  const qEnd = q.status === "ok" && q.questionEnd > 0 && q.qdcount === 1 ? q.questionEnd : HEADER_LEN;
  const optLen = q.hasOpt ? OPT_LEN : 0;
  let tc = false;
  let an = answers.length;
  let ns = authorities.length;
  if (qEnd + body.length + optLen > limit) {
    tc = true;
    body = Buffer.alloc(0);
    an = 0;
    ns = 0;
  }
  const out = Buffer.alloc(qEnd + body.length + optLen);
  writeHeader(out, query, q, sections, sections.rcode, tc, {
    qd: qEnd > HEADER_LEN ? 1 : 0,
    an,
    ns,
    ar: q.hasOpt ? 1 : 0,
  });
  out.set(query.subarray(HEADER_LEN, qEnd), HEADER_LEN);
  out.set(body, qEnd);
  if (q.hasOpt) writeOpt(out, qEnd + body.length, sections.rcode >> 4, q.dnssecOk);
  return out;
}

/** A header-only reply (FORMERR for undecodable queries): ID, opcode and RD copied. */
export function headerOnlyReply(query: Uint8Array, q: QueryInfo, rcode: number, ra: boolean): Buffer {
  const out = Buffer.alloc(HEADER_LEN);
  writeHeader(out, query, { ...q, hasOpt: false }, { aa: false, ra }, rcode, false, {
    qd: 0,
    an: 0,
    ns: 0,
    ar: 0,
  });
  return out;
}

/**
 * Fits a relayed upstream reply into `limit`: when too big, keeps the header
 * and question, sets TC, and adds our OPT if the client sent one.
 */
export function truncateRelayed(reply: Buffer, q: QueryInfo, limit: number): Buffer {
  if (reply.length <= limit) return reply;
  const qEnd = q.questionEnd;
  const out = Buffer.alloc(qEnd + (q.hasOpt ? OPT_LEN : 0));
  reply.copy(out, 0, 0, HEADER_LEN);
  out[2] = out[2]! | 0x02;
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(q.hasOpt ? 1 : 0, 10);
  reply.copy(out, HEADER_LEN, HEADER_LEN, qEnd);
  if (q.hasOpt) writeOpt(out, qEnd, 0, q.dnssecOk);
  return out;
}

/** Whether a message (e.g. an upstream reply) has an OPT record in its additional section. */
export function hasOpt(msg: Uint8Array): boolean {
  if (msg.length < HEADER_LEN) return false;
  const counts = [(msg[4]! << 8) | msg[5]!, (msg[6]! << 8) | msg[7]!, (msg[8]! << 8) | msg[9]!];
  const ar = (msg[10]! << 8) | msg[11]!;
  let off = HEADER_LEN;
  for (let i = 0; i < counts[0]!; i++) {
    off = skipName(msg, off);
    if (off < 0) return false;
    off += 4;
  }
  for (let i = 0; i < counts[1]! + counts[2]! + ar; i++) {
    off = skipName(msg, off);
    if (off < 0 || off + 10 > msg.length) return false;
    const type = (msg[off]! << 8) | msg[off + 1]!;
    if (i >= counts[1]! + counts[2]! && type === QTYPE.OPT) return true;
    off += 10 + ((msg[off + 8]! << 8) | msg[off + 9]!);
  }
  return false;
}

/** Appends our OPT to a message and counts it in ARCOUNT. */
export function appendOpt(msg: Buffer, q: QueryInfo): Buffer {
  const out = Buffer.alloc(msg.length + OPT_LEN);
  msg.copy(out);
  writeOpt(out, msg.length, 0, q.dnssecOk);
  out.writeUInt16BE(((msg[10]! << 8) | msg[11]!) + 1, 10);
  return out;
}
