/**
 * What kind of socket a file descriptor passed to us is (socket activation,
 * src/systemd): Node adopts a descriptor into dgram only as "udp4" or "udp6"
 * and must be told which before it can use it, and a wrong guess cannot be
 * undone (closing the wrapper closes the descriptor). Linux answers without
 * touching the socket: /proc/self/fd/N links to socket:[INODE], and that inode
 * is listed in /proc/net/{udp,udp6,tcp,tcp6}.
 */
import { readFileSync, readlinkSync } from "node:fs";

export type SocketKind = "udp4" | "udp6" | "tcp4" | "tcp6";

const TABLES: readonly [SocketKind, string][] = [
  ["udp4", "/proc/net/udp"],
  ["udp6", "/proc/net/udp6"],
  ["tcp4", "/proc/net/tcp"],
  ["tcp6", "/proc/net/tcp6"],
];

/** The kind of `fd`, or null when it is not an inet socket (a unix socket, a file, closed). */
export function socketKind(fd: number, proc = "/proc"): SocketKind | null {
  let link: string;
  try {
    link = readlinkSync(`${proc}/self/fd/${fd}`);
  } catch {
    return null;
  }
  const m = /^socket:\[(\d+)\]$/.exec(link);
  if (m === null) return null;
  const inode = m[1]!;
  for (const [kind, table] of TABLES) {
    let text: string;
    try {
      text = readFileSync(table.replace("/proc", proc), "latin1");
    } catch {
      continue; // no IPv6 in this kernel
    }
    // Columns: sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[9] === inode) return kind;
    }
  }
  return null;
}
