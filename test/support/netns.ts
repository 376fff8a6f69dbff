/**
 * Network namespaces a test creates and removes (needs root and iproute2).
 * Every address lives only inside what the test made, so no packet leaves the
 * machine (see the network rule in the shared notes). Names carry a random
 * part, so parallel runs do not collide.
 *
 * - `NetnsLab`: namespaces and veth pairs one by one (an end may be in the
 *   root namespace, where jitsu runs), e.g. a local and a routed client
 *   (test/e2e/access-netns.test.ts).
 * - `multiHomedHost()`: a multi-homed host and a client behind one of its
 *   interfaces, jitsu inside the host namespace:
 *
 *   client  10.201.1.2 ──veth── 10.201.1.1  host  10.201.2.1 ──veth── 10.201.2.2  peer
 *           fd20:201:1::2        fd20:201:1::1     fd20:201:2::1        fd20:201:2::2
 *
 *   The client routes 10.201.2.0/24 (and fd20:201:2::/64) through the host, so
 *   a query to the host's far address (10.201.2.1) arrives on the near
 *   interface, and the route back to the client leaves by that interface, whose
 *   address is 10.201.1.1.
 */
import { randomBytes } from "node:crypto";
import { run, type RunResult } from "./index.js";

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

export interface MultiHomedHost {
  /** The namespaces' names. */
  readonly host: string;
  readonly client: string;
  readonly peer: string;
  /** The host's address on the client's link, and on the other link (the far one). */
  readonly near: string;
  readonly far: string;
  readonly nearV6: string;
  readonly farV6: string;
  /** The host's interface on the far link (to add addresses to). */
  readonly farDevice: string;
  /** Runs a command inside namespace `ns`. */
  exec(ns: string, cmd: string, args: readonly string[]): Promise<RunResult>;
  /** `ip ARGS` inside `ns`; throws with ip's error if it fails. */
  ip(ns: string, args: readonly string[]): Promise<void>;
  /** Deletes the namespaces (and with them their interfaces). */
  remove(): Promise<void>;
}

export async function multiHomedHost(): Promise<MultiHomedHost> {
  const id = randomBytes(3).toString("hex");
  const host = `jitsu-mh-${id}-host`;
  const client = `jitsu-mh-${id}-client`;
  const peer = `jitsu-mh-${id}-peer`;
  // Interface names: at most 15 characters.
  const [hn, cn, hf, pf] = ["hn", "cn", "hf", "pf"].map((s) => `jm${id}${s}`) as [
    string,
    string,
    string,
    string,
  ];
  const created: string[] = [];
  const remove = async (): Promise<void> => {
    for (const ns of created) await run("ip", ["netns", "del", ns]);
  };
  try {
    for (const ns of [host, client, peer]) {
      await ip(["netns", "add", ns]);
      created.push(ns);
    }
    await ip(["link", "add", hn, "netns", host, "type", "veth", "peer", "name", cn, "netns", client]);
    await ip(["link", "add", hf, "netns", host, "type", "veth", "peer", "name", pf, "netns", peer]);
    const n = async (ns: string, args: readonly string[]): Promise<void> => void (await ip(args, ns));
    await n(host, ["addr", "add", "10.201.1.1/24", "dev", hn]);
    await n(host, ["addr", "add", "fd20:201:1::1/64", "dev", hn, "nodad"]);
    await n(host, ["addr", "add", "10.201.2.1/24", "dev", hf]);
    await n(host, ["addr", "add", "fd20:201:2::1/64", "dev", hf, "nodad"]);
    await n(client, ["addr", "add", "10.201.1.2/24", "dev", cn]);
    await n(client, ["addr", "add", "fd20:201:1::2/64", "dev", cn, "nodad"]);
    await n(peer, ["addr", "add", "10.201.2.2/24", "dev", pf]);
    await n(peer, ["addr", "add", "fd20:201:2::2/64", "dev", pf, "nodad"]);
    for (const [ns, dev] of [
      [host, hn],
      [host, hf],
      [client, cn],
      [peer, pf],
    ] as const) {
      await n(ns, ["link", "set", dev, "up"]);
    }
    for (const ns of [host, client, peer]) await n(ns, ["link", "set", "lo", "up"]);
    await n(client, ["route", "add", "10.201.2.0/24", "via", "10.201.1.1"]);
    await n(client, ["-6", "route", "add", "fd20:201:2::/64", "via", "fd20:201:1::1"]);
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    host,
    client,
    peer,
    near: "10.201.1.1",
    far: "10.201.2.1",
    nearV6: "fd20:201:1::1",
    farV6: "fd20:201:2::1",
    farDevice: hf,
    exec: (ns, cmd, args) => run("ip", ["netns", "exec", ns, cmd, ...args]),
    ip: async (ns, args) => void (await ip(args, ns)),
    remove,
  };
}
