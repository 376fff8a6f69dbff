/**
 * Value parsers shared by CONFIG keys, config files and command-line options.
 * Each returns the typed value or throws an Error whose message says what was
 * expected; callers wrap it with the option, VM and key.
 */
import { isIP } from "node:net";

export function parseIntStrict(text: string): number {
  if (!/^[+-]?\d+$/.test(text.trim())) throw new Error(`expected an integer, got '${text}'`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`integer '${text}' is out of range`);
  return n;
}

export function parseNonNegativeInt(text: string): number {
  const n = parseIntStrict(text);
  if (n < 0) throw new Error(`expected an integer of 0 or more, got '${text}'`);
  return n;
}

export function parseFloatStrict(text: string): number {
  const t = text.trim();
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) throw new Error(`expected a number, got '${text}'`);
  return Number(t);
}

export function parseSeconds(text: string): number {
  const n = parseFloatStrict(text);
  if (n < 0 || !Number.isFinite(n))
    throw new Error(`expected a number of seconds of 0 or more, got '${text}'`);
  return n;
}

export function parsePort(text: string): number {
  const n = parseIntStrict(text);
  if (n < 0 || n > 65535) throw new Error(`expected a port number from 0 to 65535, got '${text}'`);
  return n;
}

/** The original's booleans: true/false/1/0 (any case), plus yes/no/on/off. */
export function parseBool(text: string): boolean {
  switch (text.trim().toLowerCase()) {
    case "1":
    case "true":
    case "yes":
    case "on":
      return true;
    case "0":
    case "false":
    case "no":
    case "off":
      return false;
    default:
      throw new Error(`expected true/false/1/0, got '${text}'`);
  }
}

/**
 * Whether `t` is a dotted-quad IPv4 address as net.isIP accepts it: four
 * decimal octets of 0-255 without leading zeros. By hand rather than isIP's
 * regular expressions: 10,000 VMs check their addresses at start-up.
 */
function isIpv4(t: string): boolean {
  let octets = 0;
  let i = 0;
  while (i < t.length) {
    const start = i;
    let value = 0;
    while (i < t.length && i - start < 4) {
      const c = t.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      value = value * 10 + (c - 0x30);
      i++;
    }
    const len = i - start;
    if (len === 0 || len > 3 || value > 255 || (len > 1 && t.charCodeAt(start) === 0x30)) return false;
    octets++;
    if (i === t.length) break;
    if (t.charCodeAt(i) !== 0x2e || octets === 4) return false;
    i++;
    if (i === t.length) return false;
  }
  return octets === 4;
}

/** An IPv4 or IPv6 address, returned in canonical form. */
export function parseIp(text: string): { address: string; family: 4 | 6 } {
  const t = text.trim();
  // No leading zeros ("010.0.0.1" is not an address), so an IPv4 address is canonical as given.
  if (isIpv4(t)) return { address: t, family: 4 };
  // isIP's IPv4 is exactly isIpv4's (no leading zeros): only IPv6 is left to it.
  if (isIP(t) === 6) return { address: canonicalIpv6(t), family: 6 };
  throw new Error(`expected an IPv4 or IPv6 address, got '${text}'`);
}

/** RFC 5952 text form of an IPv6 address. */
export function canonicalIpv6(text: string): string {
  const bytes = ipv6ToBytes(text);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

export function ipv4ToBytes(text: string): Buffer {
  return Buffer.from(text.split(".").map((o) => Number(o)));
}

export function ipv6ToBytes(text: string): Buffer {
  let t = text;
  const tail: number[] = [];
  const lastColon = t.lastIndexOf(":");
  const last = t.slice(lastColon + 1);
  if (last.includes(".")) {
    // An embedded IPv4 address (RFC 4291 §2.2 form 3) fills the last two groups.
    const v4 = ipv4ToBytes(last);
    tail.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    t = t.slice(0, lastColon + 1);
    if (!t.endsWith("::")) t = t.slice(0, -1);
  }
  const groups = (s: string): number[] => (s === "" ? [] : s.split(":").map((g) => parseInt(g, 16)));
  const gap = t.indexOf("::");
  const head = groups(gap < 0 ? t : t.slice(0, gap));
  const rest = gap < 0 ? [] : groups(t.slice(gap + 2));
  const zeros = gap < 0 ? 0 : 8 - head.length - rest.length - tail.length;
  const all = [...head, ...new Array<number>(Math.max(0, zeros)).fill(0), ...rest, ...tail];
  const out = Buffer.alloc(16);
  all.slice(0, 8).forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** A DNS name: lower-cased, without the trailing dot, labels of 1–63 octets, 253 in all. */
export function parseDnsName(text: string): string {
  let t = text.trim().toLowerCase();
  if (t.endsWith(".")) t = t.slice(0, -1);
  if (t === "") throw new Error(`expected a domain name, got '${text}'`);
  if (t.length > 253) throw new Error(`domain name '${text}' is longer than 253 characters`);
  // Label by label without splitting (10,000 VMs at start-up): [a-z0-9_], and '-' inside.
  let start = 0;
  for (let i = 0; i <= t.length; i++) {
    if (i < t.length && t.charCodeAt(i) !== 0x2e) continue;
    const len = i - start;
    if (len === 0) throw new Error(`domain name '${text}' has an empty label`);
    if (len > 63) throw new Error(`domain name '${text}' has a label longer than 63 characters`);
    for (let k = start; k < i; k++) {
      const c = t.charCodeAt(k);
      const ok =
        (c >= 0x61 && c <= 0x7a) || // a-z
        (c >= 0x30 && c <= 0x39) || // 0-9
        c === 0x5f || // _
        (c === 0x2d && k !== start && k !== i - 1); // - inside a label
      if (!ok) {
        throw new Error(
          `domain name '${text}' has an invalid label '${t.slice(start, i)}' (letters, digits, '-' and '_')`,
        );
      }
    }
    start = i + 1;
  }
  return t;
}

/** A size with an optional unit (K, M, G, T; KiB, MB, ...), in bytes; a plain number is in `plainUnit` bytes. */
export function parseSize(text: string, plainUnit: number): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$/i.exec(text);
  if (m === null) throw new Error(`expected a size such as 65536 or 64M, got '${text}'`);
  const value = Number(m[1]);
  const unit = (m[2] ?? "").toLowerCase();
  const scale = unit === "" ? plainUnit : 1024 ** ("kmgt".indexOf(unit) + 1);
  const bytes = Math.round(value * scale);
  if (!Number.isSafeInteger(bytes)) throw new Error(`size '${text}' is out of range`);
  return bytes;
}
