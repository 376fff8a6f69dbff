/**
 * Who may do what: `--allow-recursion` (have a query forwarded) and
 * `--allow-summon` (cause a VM to start).
 *
 * A list is comma-separated entries: CIDRs (`192.0.2.0/24`, `2001:db8::/32`),
 * bare addresses, and the words `localhost` (127.0.0.0/8, ::1), `localnets`
 * (the subnets of this host's interfaces, re-read on SIGHUP), `any` and
 * `none`. `parseAccessList` checks it at the edge (errors name the option and
 * the entry); a `ClientAccess` holds it with `localnets` expanded into tables
 * of numbers and answers `allows(address)` without allocating: the address
 * string is parsed in place into a reused array and compared word by word.
 * IPv4 clients on an IPv6 socket (`::ffff:a.b.c.d`) are matched as IPv4.
 */
import { networkInterfaces, type NetworkInterfaceInfo } from "node:os";
import { canonicalIpv6 } from "../config/index.js";
import { UsageError } from "../errors/index.js";

export const ACCESS_WORDS = ["localhost", "localnets", "any", "none"] as const;

/** What `localhost` stands for. */
const LOCALHOST = ["127.0.0.0/8", "::1/128"] as const;

/**
 * Parses `--allow-recursion` / `--allow-summon` text (or the config file's
 * list) into its entries: the words in lower case, each address or CIDR in
 * canonical form (`10.0.0.0/8`, `2001:db8::/32`; a bare address gets /32 or
 * /128). Throws a UsageError naming `option` and the bad entry.
 */
export function parseAccessList(option: string, text: string): string[] {
  const entries: string[] = [];
  const words = new Int32Array(4);
  for (const raw of text.split(",")) {
    const entry = raw.trim();
    if (entry === "") {
      throw new UsageError(
        `empty entry in '${text}' (expected comma-separated CIDRs, addresses, localhost, localnets, any or none)`,
        option,
      );
    }
    const word = entry.toLowerCase();
    if ((ACCESS_WORDS as readonly string[]).includes(word)) {
      if (!entries.includes(word)) entries.push(word);
      continue;
    }
    const cidr = parseCidr(entry, words);
    if (typeof cidr === "string") throw new UsageError(`entry '${entry}': ${cidr}`, option);
    const canonical = formatCidr(cidr.family, words, cidr.prefix);
    if (!entries.includes(canonical)) entries.push(canonical);
  }
  for (const word of ["any", "none"]) {
    if (entries.includes(word) && entries.length > 1) {
      throw new UsageError(`'${word}' cannot be combined with other entries (got '${text}')`, option);
    }
  }
  return entries;
}

/**
 * This host's subnets, as CIDRs with the host bits cleared (`192.0.2.0/24`,
 * `fe80::/64`), in interface order, each once. `interfaces` is
 * os.networkInterfaces() unless given (tests).
 */
export function localNetworks(
  interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces(),
): string[] {
  const out: string[] = [];
  const words = new Int32Array(4);
  for (const infos of Object.values(interfaces)) {
    for (const info of infos ?? []) {
      if (info.cidr === null) continue;
      const cidr = parseCidr(info.cidr, words, true);
      if (typeof cidr === "string") continue;
      const text = formatCidr(cidr.family, words, cidr.prefix);
      if (!out.includes(text)) out.push(text);
    }
  }
  return out;
}

/**
 * A parsed access list with `localnets` expanded: `allows(address)` for each
 * client, cheap enough for every forwarded query (no allocation, a short scan).
 */
export class ClientAccess {
  /** The entries as parsed (`parseAccessList`), for /status and --workers. */
  readonly entries: readonly string[];
  /** `any`: every client; allows() returns at once. */
  readonly all: boolean;
  private readonly usesLocalnets: boolean;
  private localnets: readonly string[] = [];
  /** IPv4 networks as [network, mask] pairs, network already masked. */
  private v4 = new Int32Array(0);
  /** IPv6 networks as 8 words each: network[4] then mask[4]. */
  private v6 = new Int32Array(0);
  /** The client's address, parsed in place (reused for every call). */
  private readonly scratch = new Int32Array(4);

  constructor(entries: readonly string[], localnets: readonly string[] = []) {
    this.entries = Object.freeze([...entries]);
    this.all = entries.includes("any");
    this.usesLocalnets = entries.includes("localnets");
    this.setLocalnets(localnets);
  }

  /** `parseAccessList`, then a matcher (throws a UsageError naming `option`). */
  static parse(option: string, text: string, localnets: readonly string[] = []): ClientAccess {
    return new ClientAccess(parseAccessList(option, text), localnets);
  }

  /** The subnets `localnets` stands for (start-up, then SIGHUP); ignored by a list without it. */
  setLocalnets(cidrs: readonly string[]): void {
    this.localnets = Object.freeze([...cidrs]);
    const nets: string[] = [];
    for (const entry of this.entries) {
      if (entry === "localhost") nets.push(...LOCALHOST);
      else if (entry === "localnets") nets.push(...cidrs);
      else if (entry !== "any" && entry !== "none") nets.push(entry);
    }
    const v4: number[] = [];
    const v6: number[] = [];
    const words = new Int32Array(4);
    for (const net of nets) {
      const cidr = parseCidr(net, words, true);
      if (typeof cidr === "string") continue; // a local network Node reported oddly: leave it out
      if (cidr.family === 4) v4.push(words[3]!, maskWord(cidr.prefix, 0, 32));
      else {
        v6.push(words[0]!, words[1]!, words[2]!, words[3]!);
        for (let w = 0; w < 4; w++) v6.push(maskWord(cidr.prefix, w * 32, 128));
      }
    }
    this.v4 = Int32Array.from(v4);
    this.v6 = Int32Array.from(v6);
  }

  /** The subnets `localnets` stands for now (empty if the list does not use it). */
  get localNetworks(): readonly string[] {
    return this.usesLocalnets ? this.localnets : [];
  }

  /** Whether a client at `address` (as node:dgram and node:net give it) is in the list. */
  allows(address: string): boolean {
    if (this.all) return true;
    const a = this.scratch;
    const family = parseAddress(address, 0, address.length, a, true);
    if (family === 4) {
      const v4 = this.v4;
      const ip = a[3]!;
      for (let i = 0; i < v4.length; i += 2) if ((ip & v4[i + 1]!) === v4[i]!) return true;
      return false;
    }
    if (family !== 6) return false;
    const v6 = this.v6;
    for (let i = 0; i < v6.length; i += 8) {
      if (
        (a[0]! & v6[i + 4]!) === v6[i]! &&
        (a[1]! & v6[i + 5]!) === v6[i + 1]! &&
        (a[2]! & v6[i + 6]!) === v6[i + 2]! &&
        (a[3]! & v6[i + 7]!) === v6[i + 3]!
      )
        return true;
    }
    return false;
  }
}

/** The 32-bit mask word starting at bit `offset` of a `bits`-bit address with this prefix. */
function maskWord(prefix: number, offset: number, bits: number): number {
  const n = Math.min(32, Math.max(0, prefix - offset));
  if (offset >= bits) return 0;
  return n === 0 ? 0 : -1 << (32 - n);
}

/**
 * `ADDR` or `ADDR/PREFIX` into `words` (IPv4 in words[3], the others zero),
 * host bits cleared when `mask` (else they are an error: `10.0.0.1/8` is
 * more likely a typo than meant). An IPv4-mapped IPv6 network
 * (`::ffff:10.0.0.0/104`) becomes the IPv4 one. A string is what is wrong.
 */
function parseCidr(
  text: string,
  words: Int32Array,
  mask = false,
): { family: 4 | 6; prefix: number } | string {
  const slash = text.indexOf("/");
  const addrEnd = slash < 0 ? text.length : slash;
  let family = parseAddress(text, 0, addrEnd, words, false);
  if (family === 0 || text.includes("%")) {
    return "expected an IPv4 or IPv6 address or CIDR (192.0.2.0/24, 2001:db8::/32), or one of localhost, localnets, any, none";
  }
  let bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits)
      return `expected a prefix length from 0 to ${bits} after '/'`;
    prefix = Number(p);
  }
  if (family === 6 && words[0] === 0 && words[1] === 0 && words[2] === 0xffff && prefix >= 96) {
    family = 4;
    bits = 32;
    prefix -= 96;
    words[2] = 0;
  }
  let hostBits = false;
  const first = family === 4 ? 3 : 0;
  for (let w = first; w < 4; w++) {
    const m = maskWord(prefix, (w - first) * 32, bits);
    if ((words[w]! & ~m) !== 0) hostBits = true;
    words[w] = words[w]! & m;
  }
  if (hostBits && !mask) {
    return `the address has bits set past the /${prefix} prefix; did you mean ${formatCidr(family, words, prefix)}?`;
  }
  return { family, prefix };
}

function formatCidr(family: 4 | 6, words: Int32Array, prefix: number): string {
  if (family === 4) {
    const ip = words[3]!;
    return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}/${prefix}`;
  }
  const groups: string[] = [];
  for (let w = 0; w < 4; w++) groups.push((words[w]! >>> 16).toString(16), (words[w]! & 0xffff).toString(16));
  return `${canonicalIpv6(groups.join(":"))}/${prefix}`;
}

/**
 * Parses the address in `s[start, end)` into `out` without allocating:
 * returns 4 (the address in out[3]) or 6 (four big-endian words), 0 if it is
 * not an address. `mapped`: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is
 * returned as IPv4. A zone (`fe80::1%eth0`) is ignored.
 */
export function parseAddress(
  s: string,
  start: number,
  end: number,
  out: Int32Array,
  mapped: boolean,
): 0 | 4 | 6 {
  // An IPv6 address fails as IPv4 within its first five characters.
  if (parseIpv4(s, start, end, out, 3)) {
    out[0] = 0;
    out[1] = 0;
    out[2] = 0;
    return 4;
  }
  if (!parseIpv6(s, start, end, out)) return 0;
  if (mapped && out[0] === 0 && out[1] === 0 && out[2] === 0xffff) {
    out[2] = 0;
    return 4;
  }
  return 6;
}

/**
 * Dotted-quad IPv4 in `s[start, end)` into out[at] (as a 32-bit pattern);
 * false if it is not one. Int32 arithmetic throughout: a number past 2^31
 * would be a heap number (an allocation) once it leaves a register.
 */
function parseIpv4(s: string, start: number, end: number, out: Int32Array, at: number): boolean {
  let ip = 0;
  let octets = 0;
  let i = start;
  while (true) {
    let value = 0;
    let digits = 0;
    while (i < end) {
      const c = s.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      value = value * 10 + (c - 0x30);
      digits++;
      i++;
    }
    if (digits === 0 || digits > 3 || value > 255) return false;
    ip = (ip << 8) | value;
    octets++;
    if (octets === 4) {
      if (i !== end) return false;
      out[at] = ip;
      return true;
    }
    if (i >= end || s.charCodeAt(i) !== 0x2e) return false;
    i++;
  }
}

/** parseIpv6's groups and embedded IPv4, reused (one thread, no reentrancy): no allocation per address. */
const GROUPS = new Uint16Array(8);
const QUAD = new Int32Array(1);

/**
 * IPv6 text (RFC 4291 §2.2: groups, one `::`, a trailing dotted quad; a
 * `%zone` suffix ignored) into four words. False if it is not an address.
 */
function parseIpv6(s: string, start: number, end: number, out: Int32Array): boolean {
  for (let i = start; i < end; i++) {
    if (s.charCodeAt(i) === 0x25) {
      end = i;
      break;
    }
  }
  const g = GROUPS;
  let n = 0;
  /** Where "::" stands: the number of groups before it, or -1. */
  let gap = -1;
  let i = start;
  if (end - start >= 2 && s.charCodeAt(start) === 0x3a && s.charCodeAt(start + 1) === 0x3a) {
    gap = 0;
    i = start + 2;
  }
  while (i < end) {
    const groupStart = i;
    let value = 0;
    let digits = 0;
    while (i < end && digits <= 4) {
      const d = hexDigit(s.charCodeAt(i));
      if (d < 0) break;
      value = value * 16 + d;
      digits++;
      i++;
    }
    if (i < end && s.charCodeAt(i) === 0x2e) {
      // A trailing dotted quad fills the last two groups.
      if (n > 6 || !parseIpv4(s, groupStart, end, QUAD, 0)) return false;
      g[n++] = QUAD[0]! >>> 16;
      g[n++] = QUAD[0]! & 0xffff;
      break;
    }
    if (digits === 0 || digits > 4 || n === 8) return false;
    g[n++] = value;
    if (i === end) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i < end && s.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return false; // a second "::"
      gap = n;
      i++;
    } else if (i === end) {
      return false; // a single ":" at the end
    }
  }
  if (gap < 0 ? n !== 8 : n > 7) return false;
  if (gap >= 0) {
    // Move the groups after "::" to the end and zero the gap.
    const shift = 8 - n;
    for (let k = n - 1; k >= gap; k--) g[k + shift] = g[k]!;
    for (let k = gap; k < gap + shift; k++) g[k] = 0;
  }
  for (let w = 0; w < 4; w++) out[w] = (g[2 * w]! << 16) | g[2 * w + 1]!;
  return true;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
