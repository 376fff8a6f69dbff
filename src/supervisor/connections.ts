/**
 * How many TCP connections clients hold to a process group: the established
 * sockets of its processes whose local port is one they listen on (inbound:
 * a process's own outgoing connections do not count). Read from /proc, the
 * way `ss -tnp` does: each process's fds name socket inodes
 * (`/proc/PID/fd/N -> socket:[INODE]`), and /proc/net/tcp and tcp6 give each
 * inode's local port and state (include/net/tcp_states.h: 01 ESTABLISHED,
 * 0A LISTEN). Needs the processes to be ours (or root).
 */
import { readFile, readdir, readlink } from "node:fs/promises";

const ESTABLISHED = "01";
const LISTEN = "0A";

/** The pids in process group `pgid` (its leader included), from /proc/PID/stat field 5. */
export async function groupMembers(pgid: number): Promise<number[]> {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return [pgid];
  }
  await Promise.all(
    entries.map(async (name) => {
      if (!/^\d+$/.test(name)) return;
      try {
        const stat = await readFile(`/proc/${name}/stat`, "latin1");
        // Field 2 (comm) may hold spaces and parentheses: count from the last ')'.
        const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (Number(rest[2]) === pgid) out.push(Number(name));
      } catch {
        // gone meanwhile
      }
    }),
  );
  return out;
}

/** The socket inodes the processes hold open. */
async function socketInodes(pids: readonly number[]): Promise<Set<string>> {
  const inodes = new Set<string>();
  await Promise.all(
    pids.map(async (pid) => {
      let fds: string[];
      try {
        fds = await readdir(`/proc/${pid}/fd`);
      } catch {
        return;
      }
      await Promise.all(
        fds.map(async (fd) => {
          try {
            const link = await readlink(`/proc/${pid}/fd/${fd}`);
            if (link.startsWith("socket:[")) inodes.add(link.slice(8, -1));
          } catch {
            // closed meanwhile
          }
        }),
      );
    }),
  );
  return inodes;
}

interface TcpSocket {
  readonly localPort: number;
  readonly state: string;
  readonly inode: string;
}

/** The rows of /proc/net/tcp and tcp6 (`sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`). */
export function parseProcNetTcp(text: string): TcpSocket[] {
  const out: TcpSocket[] = [];
  const lines = text.split("\n");
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i]!.trim().split(/\s+/);
    if (f.length < 10) continue;
    const local = f[1]!;
    out.push({ localPort: parseInt(local.slice(local.indexOf(":") + 1), 16), state: f[3]!, inode: f[9]! });
  }
  return out;
}

/**
 * Established inbound connections of `pids`: to a port one of them listens
 * on, or (`ports`) to one of those ports whether or not it listens there.
 */
export async function countInboundConnections(
  pids: readonly number[],
  ports: ReadonlySet<number> = new Set(),
): Promise<number> {
  const inodes = await socketInodes(pids);
  if (inodes.size === 0) return 0;
  const rows: TcpSocket[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    try {
      rows.push(...parseProcNetTcp(await readFile(file, "latin1")));
    } catch {
      // no IPv6
    }
  }
  const listening = new Set(ports);
  for (const r of rows) if (r.state === LISTEN && inodes.has(r.inode)) listening.add(r.localPort);
  let n = 0;
  for (const r of rows) if (r.state === ESTABLISHED && inodes.has(r.inode) && listening.has(r.localPort)) n++;
  return n;
}
