/**
 * ZoneIndex: what jitsu answers with authority. Built once from the VM specs
 * (and rebuilt on reload); never changes afterwards.
 *
 * - every managed name (a VM's `dns` keys), found by the hash of its wire form
 *   so the hot path looks it up without allocating;
 * - one zone per managed name's parent (www.example.org -> example.org), with
 *   a synthesised SOA and NS, as the original Jitsu added an SOA;
 * - PTR records for the VM addresses given in the specs (in-addr.arpa, ip6.arpa).
 */
import type dnsPacket from "dns-packet";
import { perVmLevel, type Logger } from "../log/index.js";
import { encodeName, hashName, ipv6Bytes, sameName, type AnswerTemplate } from "./wire.js";

/** One managed DNS name. The template fields are the hot path's cache. */
export class ManagedName {
  /** Lower-cased, no trailing dot. */
  readonly name: string;
  readonly wire: Buffer;
  /** The VM's label: what `SummonTarget.request` takes. */
  readonly vm: string;
  readonly zone: Zone;
  /** The zone this name is the apex of, if any (a managed "example.org" next to "www.example.org"). */
  apexOf: Zone | undefined;
  /** Prepared A / AAAA answers, keyed by the identity of the address array they came from. */
  a: AnswerTemplate | undefined;
  aaaa: AnswerTemplate | undefined;
  /**
   * The VM's hold address (src/activator), answered at once while it is not
   * ready; null when it holds no connections. Its templates are cached apart,
   * so the ready VM's own (`a`, `aaaa`) are never rebuilt because of it.
   */
  readonly hold: readonly string[] | null;
  holdA: AnswerTemplate | undefined;
  holdAaaa: AnswerTemplate | undefined;

  constructor(name: string, vm: string, zone: Zone, hold: readonly string[] | null = null) {
    this.name = name;
    this.wire = encodeName(name);
    this.vm = vm;
    this.zone = zone;
    this.apexOf = undefined;
    this.a = undefined;
    this.aaaa = undefined;
    this.hold = hold;
    this.holdA = undefined;
    this.holdAaaa = undefined;
  }
}

export class Zone {
  readonly name: string;
  readonly soa: dnsPacket.Answer;
  readonly ns: dnsPacket.Answer;

  constructor(name: string, ttl: number, serial: number) {
    this.name = name;
    const mname = name === "" ? "ns" : `ns.${name}`;
    this.soa = {
      type: "SOA",
      name,
      ttl,
      class: "IN",
      data: {
        mname,
        rname: name === "" ? "hostmaster" : `hostmaster.${name}`,
        serial,
        refresh: 3600,
        retry: 600,
        expire: 86400,
        // RFC 2308 §4: the negative-caching TTL; we never want it longer than our answers.
        minimum: ttl,
      },
    };
    this.ns = { type: "NS", name, ttl, class: "IN", data: mname };
  }
}

export interface PtrEntry {
  readonly name: string;
  readonly targets: readonly string[];
}

/** The reverse-lookup name of an address (RFC 1035 §3.5, RFC 3596 §2.5). */
export function reverseName(ip: string): string {
  if (ip.includes(":")) {
    const hex = ipv6Bytes(ip).toString("hex");
    return `${[...hex].reverse().join(".")}.ip6.arpa`;
  }
  const o = ip.split(".");
  return `${o[3]}.${o[2]}.${o[1]}.${o[0]}.in-addr.arpa`;
}

function parentOf(name: string): string {
  const dot = name.indexOf(".");
  // A single-label name is its own zone: never claim authority for the root.
  return dot < 0 ? name : name.slice(dot + 1);
}

/**
 * What the zone needs of a VM (a VmSpec has it). Plain data, so a --workers
 * worker builds its zone from what the primary sends it over IPC.
 */
export interface ZoneVm {
  readonly label: string;
  readonly dns: readonly string[];
  readonly ips: readonly string[];
  /** The hold address (src/activator) to answer while the VM is not ready; absent: none. */
  readonly holdIps?: readonly string[];
}

export class ZoneIndex {
  readonly ttl: number;
  /** A name by its wire hash; a list only where hashes collide (one array less per name). */
  private readonly byHash = new Map<number, ManagedName | ManagedName[]>();
  private readonly byName = new Map<string, ManagedName>();
  private readonly zones = new Map<string, Zone>();
  private readonly ptrs = new Map<string, { name: string; targets: string[] }>();

  constructor(specs: readonly ZoneVm[], ttlSeconds: number, log: Logger) {
    this.ttl = ttlSeconds;
    const serial = Math.floor(Date.now() / 1000) >>> 0;
    // One line per record as the original prints them, at info for a small configuration,
    // at debug (plus a summary at info) for a large one: see PER_VM_LINES_MAX.
    const level = perVmLevel(specs.length);
    const each = log.isLevelEnabled(level);
    let ptrA = 0;
    let ptrAaaa = 0;
    for (const spec of specs) {
      for (const name of spec.dns) {
        const zoneName = parentOf(name);
        let zone = this.zones.get(zoneName);
        if (zone === undefined) {
          zone = new Zone(zoneName, ttlSeconds, serial);
          this.zones.set(zoneName, zone);
          if (each) log[level](`Adding SOA '${zoneName}' with ttl=${ttlSeconds}`);
        }
        const hold = spec.holdIps === undefined || spec.holdIps.length === 0 ? null : spec.holdIps;
        const entry = new ManagedName(name, spec.label, zone, hold);
        this.byName.set(name, entry);
        const hash = hashName(entry.wire, 0, entry.wire.length);
        const other = this.byHash.get(hash);
        if (other === undefined) this.byHash.set(hash, entry);
        else if (Array.isArray(other)) other.push(entry);
        else this.byHash.set(hash, [other, entry]);
        if (each) {
          log[level](
            `Adding domain '${name}' for VM '${spec.label}' with ip ${spec.ips.length === 0 ? "(discovered)" : spec.ips.join(", ")}` +
              (hold === null ? "" : ` (hold address ${hold.join(", ")} while it starts)`),
          );
        }
        for (const ip of spec.ips) {
          const v6 = ip.includes(":");
          const rev = reverseName(ip);
          const ptr = this.ptrs.get(rev);
          if (ptr === undefined) this.ptrs.set(rev, { name: rev, targets: [name] });
          else if (!ptr.targets.includes(name)) ptr.targets.push(name);
          if (v6) ptrAaaa++;
          else ptrA++;
          if (each) {
            log[level](`Adding ${v6 ? "AAAA" : "A"} PTR for '${name}' with ttl=${ttlSeconds} and ip=${ip}`);
          }
        }
      }
    }
    for (const entry of this.byName.values()) entry.apexOf = this.zones.get(entry.name);
    if (level !== "info") {
      const zones = [...this.zones.keys()];
      const shown = zones.slice(0, 3).map((z) => `'${z}'`);
      if (zones.length > shown.length) shown.push(`${zones.length - shown.length} more`);
      log.info(
        `Added ${zones.length} SOA${zones.length === 1 ? "" : "s"} with ttl=${ttlSeconds} (${shown.join(", ")})`,
      );
      log.info(
        `Added ${this.byName.size} domains for ${specs.length} VMs (one line each at --log-level debug)`,
      );
      log.info(`Added ${ptrA} A and ${ptrAaaa} AAAA PTRs with ttl=${ttlSeconds}`);
    }
  }

  /** Hot path: the managed name matching the query's question, or undefined. No allocation. */
  lookupWire(buf: Uint8Array, start: number, end: number, hash: number): ManagedName | undefined {
    const hit = this.byHash.get(hash);
    if (hit === undefined) return undefined;
    if (!Array.isArray(hit)) {
      return sameName(buf, start, end, hit.wire, 0, hit.wire.length) ? hit : undefined;
    }
    for (const entry of hit) {
      if (sameName(buf, start, end, entry.wire, 0, entry.wire.length)) return entry;
    }
    return undefined;
  }

  /** A managed name by its lower-cased presentation form. */
  lookup(name: string): ManagedName | undefined {
    return this.byName.get(name);
  }

  /** The zone whose apex is exactly `name`. */
  zone(name: string): Zone | undefined {
    return this.zones.get(name);
  }

  /** The closest managed zone containing `name` (itself or an ancestor), if any. */
  enclosingZone(name: string): Zone | undefined {
    let n = name;
    for (;;) {
      const z = this.zones.get(n);
      if (z !== undefined) return z;
      const dot = n.indexOf(".");
      if (dot < 0) return undefined;
      n = n.slice(dot + 1);
    }
  }

  ptr(name: string): PtrEntry | undefined {
    return this.ptrs.get(name);
  }

  /** Managed names, for status pages and tests. */
  names(): string[] {
    return [...this.byName.keys()];
  }

  zoneNames(): string[] {
    return [...this.zones.keys()];
  }
}
