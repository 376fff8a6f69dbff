/**
 * Network namespaces a test creates and removes (needs root): a multi-homed
 * host and a client behind one of its interfaces. Every address lives only
 * inside these namespaces (10.201.x.y, fd20:201:x::y), so no packet leaves
 * the machine.
 *
 *   client  10.201.1.2 ──veth── 10.201.1.1  host  10.201.2.1 ──veth── 10.201.2.2  peer
 *           fd20:201:1::2        fd20:201:1::1     fd20:201:2::1        fd20:201:2::2
 *
 * The client routes 10.201.2.0/24 (and fd20:201:2::/64) through the host, so
 * a query to the host's far address (10.201.2.1) arrives on the near
 * interface, and the route back to the client leaves by that interface, whose
 * address is 10.201.1.1.
 */
import { randomBytes } from "node:crypto";
import { run, type RunResult } from "./index.js";

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

async function ip(args: readonly string[]): Promise<void> {
  const res = await run("ip", args);
  if (res.code !== 0) throw new Error(`ip ${args.join(" ")}: ${res.stderr.trim()}`);
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
    const n = (ns: string, args: readonly string[]): Promise<void> => ip(["-n", ns, ...args]);
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
    ip: (ns, args) => ip(["-n", ns, ...args]),
    remove,
  };
}
