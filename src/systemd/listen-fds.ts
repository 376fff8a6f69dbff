/**
 * Socket activation (sd_listen_fds(3)): systemd binds the sockets of
 * jitsu.socket (port 53 needs no root then) and passes them as file
 * descriptors 3, 4, ... with LISTEN_FDS=N, LISTEN_PID=<our pid> and
 * LISTEN_FDNAMES=a:b (FileDescriptorName= in the socket unit). Whether a
 * descriptor is UDP or TCP is asked of the descriptor itself when it is
 * adopted (dns/server.ts); the names only say which are for --http.
 */
import { UsageError } from "../errors/index.js";

/** The first passed descriptor (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

export interface ListenFd {
  readonly fd: number;
  /** FileDescriptorName= of the socket unit ("unknown" when systemd gave no names). */
  readonly name: string;
}

/** The name that sends a descriptor to the --http server instead of DNS. */
export const HTTP_FD_NAME = "http";

/**
 * The descriptors passed to this process, or [] when none were (no
 * LISTEN_FDS, or LISTEN_PID names another process). The variables are taken
 * out of `env`, so the VMs jitsu spawns do not think the sockets are theirs.
 */
export function listenFds(env: NodeJS.ProcessEnv, pid: number = process.pid): ListenFd[] {
  const countText = env.LISTEN_FDS;
  const pidText = env.LISTEN_PID;
  const namesText = env.LISTEN_FDNAMES;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (countText === undefined || countText === "") return [];
  if (pidText !== undefined && pidText !== "" && pidText !== String(pid)) return [];
  if (!/^\d+$/.test(countText) || Number(countText) > 1024) {
    throw new UsageError(`LISTEN_FDS is '${countText}', expected a number of sockets passed by systemd`);
  }
  const count = Number(countText);
  const names = namesText === undefined || namesText === "" ? [] : namesText.split(":");
  const out: ListenFd[] = [];
  for (let i = 0; i < count; i++) out.push({ fd: LISTEN_FDS_START + i, name: names[i] ?? "unknown" });
  return out;
}
