/**
 * A start the engine lost track of. When Podman's service is killed after
 * the OCI runtime started a container's process but before it recorded the
 * start, the restarted service reports the container as `created` (libpod:
 * `initialized`) for good, with the pid of a process that runs the
 * container's command; a start then fails (`runc start` on a running
 * container), and a kill is refused ("can only kill running containers").
 * Podman's own sync (`ps --sync`) does not mend it (seen with Podman 4.3 and
 * runc 1.1). Before a start, the same report with a pid is the runtime's
 * init waiting to exec the command (`runc init`). The API cannot tell the
 * two apart; this host's /proc can, for an engine on this host (a unix
 * socket), which is where jitsu's process and the container share a pid
 * namespace.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";

/** Programs whose process is a runtime's init, not yet the container's command. */
const RUNTIMES = new Set(["runc", "crun", "youki", "runsc", "krun", "conmon"]);

/**
 * Whether `pid`, given by the engine for a container it calls created, is a
 * live process running something other than an OCI runtime: the container's
 * own command, started behind the engine's back.
 */
export function startedBehindEngine(pid: number | undefined): boolean {
  if (pid === undefined || !Number.isSafeInteger(pid) || pid <= 0) return false;
  let cmdline: string;
  let stat: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, "latin1");
    stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  } catch {
    return false; // gone (or not ours to read): nothing runs there
  }
  // A zombie (state Z after the last ')') has exited.
  if (/\)\s+Z\s/.test(stat)) return false;
  const argv0 = cmdline.split("\0")[0] ?? "";
  if (argv0 === "") return false; // a kernel thread or a process on its way out
  return !RUNTIMES.has(basename(argv0));
}
