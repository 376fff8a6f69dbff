/**
 * Pid files under `<state-dir>/process/`, so a jitsu started again finds the
 * processes the previous one left running (without --stop-on-exit) instead of
 * starting a second copy. A pid is trusted only if the process still has the
 * start time recorded with it (proc(5): /proc/PID/stat field 22), so a reused
 * pid is never mistaken for our VM.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";

export interface PidRecord {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat: start time in clock ticks since boot. */
  readonly startTime: string;
  readonly command: string;
  readonly stoppedAs: "paused" | "suspended" | null;
}

export function pidFileDir(stateDir: string): string {
  return join(stateDir, "process");
}

export function pidFileName(label: string): string {
  return `${encodeURIComponent(label)}.json`;
}

export function pidFilePath(stateDir: string, label: string): string {
  return join(pidFileDir(stateDir), pidFileName(label));
}

/**
 * Written synchronously, on a cold start's path: a hundred bytes to a local
 * file take less than one of the five trips through libuv's thread pool that
 * mkdir and writeFile took, each a wake-up of a pool thread and then of the
 * event loop (bench/: summon). The folder is made only when it is missing.
 */
export function writePidFile(path: string, record: PidRecord): void {
  const text = `${JSON.stringify(record)}\n`;
  try {
    writeFileSync(path, text);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
}

export async function readPidFile(path: string): Promise<PidRecord | null> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return null;
  }
  try {
    const r = JSON.parse(text) as Partial<PidRecord>;
    if (typeof r.pid !== "number" || typeof r.startTime !== "string" || typeof r.command !== "string")
      return null;
    const stoppedAs = r.stoppedAs === "paused" || r.stoppedAs === "suspended" ? r.stoppedAs : null;
    return { pid: r.pid, startTime: r.startTime, command: r.command, stoppedAs };
  } catch {
    return null;
  }
}

export async function removePidFile(path: string): Promise<void> {
  await rm(path, { force: true });
}

export interface ProcStat {
  readonly state: string;
  readonly startTime: string;
}

/** The process's state letter and start time from /proc/PID/stat, or null when it is gone. */
export async function procStat(pid: number): Promise<ProcStat | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  return parseProcStat(text);
}

/**
 * procStat, read synchronously: for the start time of a process just spawned,
 * on a cold start's path (procfs answers from memory; readFile would take
 * five trips through the thread pool: open, fstat, read, read, close).
 */
export function procStatSync(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  return parseProcStat(text);
}

function parseProcStat(text: string): ProcStat | null {
  // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = fields[0] ?? "";
  const startTime = fields[19] ?? "";
  if (state === "Z" || state === "X") return null;
  return { state, startTime };
}
