/**
 * What Linux says about a pid now (proc(5)): its state letter, its start time,
 * its command line, and the boot it runs in. A pid that is free, or a zombie,
 * is null: the process is gone.
 */
import { readFileSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";

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

/** A process found by its environment (see `findByEnvironment`). */
export interface MarkedProcess {
  readonly pid: number;
  /** Its environment as it was at exec (/proc/PID/environ). */
  readonly env: ReadonlyMap<string, string>;
}

/**
 * The process-group leaders (what the supervisor spawns: each a group of its
 * own) whose environment has `name=value`. One pass over /proc: a few
 * milliseconds for a few hundred processes, at start-up only. Processes of
 * other users, whose environ cannot be read, are skipped.
 */
export async function findByEnvironment(name: string, value: string): Promise<MarkedProcess[]> {
  const wanted = `${name}=${value}`;
  const out: MarkedProcess[] = [];
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      const environ = await readFile(`/proc/${pid}/environ`, "utf8");
      const vars = environ.split("\0");
      if (!vars.includes(wanted)) continue;
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      // Field 5 (the process group): only a group's leader is a process we spawned.
      const pgrp = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2];
      if (Number(pgrp) !== pid || parseStat(stat) === null) continue;
      const env = new Map<string, string>();
      for (const v of vars) {
        const eq = v.indexOf("=");
        if (eq > 0) env.set(v.slice(0, eq), v.slice(eq + 1));
      }
      out.push({ pid, env });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out;
}
