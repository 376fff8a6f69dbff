/**
 * What Linux says about a pid now (proc(5)): its state letter, its start time,
 * its command line, and the boot it runs in. A pid that is free, or a zombie,
 * is null: the process is gone.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

export interface ProcessInfo {
  /** /proc/PID/stat field 3: R running, S sleeping, T stopped, ... (never Z or X: those are null). */
  readonly state: string;
  /** /proc/PID/stat field 22: start time in clock ticks since boot. With the pid, it names one process. */
  readonly startTime: string;
  /** /proc/PID/cmdline: the argv it runs with now (a `#!` script's is its interpreter's; an exec changes it). */
  readonly cmdline: readonly string[];
  /** This boot's id (see `bootId`): with the pid and the start time, it names one process across reboots. */
  readonly bootId: string | null;
}

let cachedBootId: string | null | undefined;

/**
 * /proc/sys/kernel/random/boot_id, a random UUID the kernel draws at each
 * boot; null when it cannot be read. Read once (it does not change while we
 * run), synchronously: a few dozen bytes procfs answers from memory.
 */
export function bootId(): string | null {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim() || null;
    } catch {
      cachedBootId = null;
    }
  }
  return cachedBootId;
}

export async function readProcess(pid: number): Promise<ProcessInfo | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return parseProcess(stat, await readFile(`/proc/${pid}/cmdline`, "utf8"));
  } catch {
    return null;
  }
}

/**
 * readProcess, synchronously: for a process just spawned, on a cold start's
 * path (procfs answers from memory; readFile would take five trips through
 * the thread pool each: open, fstat, read, read, close).
 */
export function readProcessSync(pid: number): ProcessInfo | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return parseProcess(stat, readFileSync(`/proc/${pid}/cmdline`, "utf8"));
  } catch {
    return null;
  }
}

/** The start time alone (one read): enough to tell that a process we know is still there. */
export async function readStartTime(pid: number): Promise<string | null> {
  try {
    return parseStat(await readFile(`/proc/${pid}/stat`, "utf8"))?.startTime ?? null;
  } catch {
    return null;
  }
}

function parseProcess(stat: string, cmdline: string): ProcessInfo | null {
  const fields = parseStat(stat);
  if (fields === null) return null;
  // NUL-terminated words; a process that rewrote its argv may leave no final NUL.
  const words = cmdline.split("\0");
  if (words.at(-1) === "") words.pop();
  return { ...fields, cmdline: words, bootId: bootId() };
}

function parseStat(text: string): { state: string; startTime: string } | null {
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = fields[0] ?? "";
  const startTime = fields[19] ?? "";
  if (state === "" || state === "Z" || state === "X") return null;
  return { state, startTime };
}
