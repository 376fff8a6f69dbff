/**
 * Network namespaces and veth pairs that a test creates and removes (needs root
 * and iproute2). Addresses exist only inside what the test made, so traffic to
 * them never leaves the machine (see /work/shared/NOTES.md, the network rule).
 * Names carry the pid and a random part, so parallel runs do not collide.
 */
import { randomBytes } from "node:crypto";
import { run } from "./index.js";

/** Runs `ip ARGS` (in `netns` when given); rejects with ip's own message on failure. */
export async function ip(args: readonly string[], netns?: string): Promise<string> {
  const full = netns === undefined ? [...args] : ["-n", netns, ...args];
  const res = await run("ip", full);
  if (res.code !== 0) throw new Error(`ip ${full.join(" ")}: ${res.stderr.trim() || `exit ${res.code}`}`);
  return res.stdout;
}

export class NetnsLab {
  /** Short and unique: in interface names (at most 15 characters) and namespace names. */
  readonly tag = `${(process.pid % 1000).toString(36)}${randomBytes(2).toString("hex")}`;
  private readonly namespaces: string[] = [];
  /** Root-namespace ends of veth pairs (removing one removes its peer). */
  private readonly rootLinks: string[] = [];

  /** A new namespace with loopback up; returns its name. */
  async namespace(name: string): Promise<string> {
    const ns = `jitsu-test-${this.tag}-${name}`;
    await ip(["netns", "add", ns]);
    this.namespaces.push(ns);
    await ip(["link", "set", "lo", "up"], ns);
    return ns;
  }

  /**
   * A veth pair `a` <-> `b`, each end in a namespace (null: the root one), up,
   * with the given addresses (CIDRs; IPv6 without duplicate address detection,
   * so they are usable at once). Returns the two interface names.
   */
  async veth(
    a: { ns: string | null; addrs: readonly string[] },
    b: { ns: string | null; addrs: readonly string[] },
  ): Promise<[string, string]> {
    const n = this.rootLinks.length + this.namespaces.length;
    const names: [string, string] = [`j${this.tag}${n}a`, `j${this.tag}${n}b`];
    const where = (ns: string | null): string[] => (ns === null ? [] : ["netns", ns]);
    await ip([
      "link",
      "add",
      names[0],
      ...where(a.ns),
      "type",
      "veth",
      "peer",
      "name",
      names[1],
      ...where(b.ns),
    ]);
    if (a.ns === null) this.rootLinks.push(names[0]);
    if (b.ns === null) this.rootLinks.push(names[1]);
    for (const [end, dev] of [
      [a, names[0]],
      [b, names[1]],
    ] as const) {
      const ns = end.ns ?? undefined;
      for (const addr of end.addrs) await this.addAddress(dev, addr, ns);
      await ip(["link", "set", dev, "up"], ns);
    }
    return names;
  }

  /**
   * An interface in the root namespace with `addrs` but no routes for them
   * (noprefixroute): addresses this host has, that nothing routes to. A veth
   * whose peer sits alone in a namespace of its own (containers often lack the
   * dummy device).
   */
  async stubInterface(addrs: readonly string[]): Promise<string> {
    const spare = await this.namespace(`spare${this.namespaces.length}`);
    const [name] = await this.veth({ ns: null, addrs: [] }, { ns: spare, addrs: [] });
    for (const addr of addrs) await this.addAddress(name, addr, undefined, ["noprefixroute"]);
    return name;
  }

  /** Removes one link made here (and its addresses) now. */
  async removeLink(name: string): Promise<void> {
    const i = this.rootLinks.indexOf(name);
    if (i >= 0) this.rootLinks.splice(i, 1);
    await ip(["link", "del", name]);
  }

  /** Adds an address (IPv6 with nodad); `extra` e.g. ["noprefixroute"]. */
  async addAddress(dev: string, cidr: string, ns?: string, extra: readonly string[] = []): Promise<void> {
    await ip(["addr", "add", cidr, "dev", dev, ...(cidr.includes(":") ? ["nodad"] : []), ...extra], ns);
  }

  /** Removes every namespace and root-side link made (whatever failed before); never throws. */
  async remove(): Promise<void> {
    for (const link of this.rootLinks.splice(0)) await ip(["link", "del", link]).catch(() => undefined);
    for (const ns of this.namespaces.splice(0)) await ip(["netns", "del", ns]).catch(() => undefined);
  }
}

/**
 * A number from 1 to 254 for the third octet (and an IPv6 group) of test
 * subnets, such that no address or route of this machine mentions
 * `10.<first>.N.` for any of `firsts` (nor `fd00:<first>:N:`).
 */
export async function freeSubnetNumber(firsts: readonly number[]): Promise<number> {
  const used =
    (await ip(["-4", "route", "show", "table", "all"])) +
    (await ip(["-6", "route", "show", "table", "all"])) +
    (await ip(["addr"]));
  for (let attempt = 0; attempt < 50; attempt++) {
    const n = 1 + (randomBytes(1)[0]! % 254);
    if (firsts.every((f) => !used.includes(`10.${f}.${n}.`) && !used.includes(`fd00:${f}:${n}:`))) return n;
  }
  throw new Error(`no free 10.x.N.0/24 test subnet found for ${firsts.join(", ")}`);
}
