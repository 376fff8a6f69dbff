/**
 * Pid files in --state-dir, so a jitsu that restarts (or was killed with -9)
 * finds the processes the previous one started and can stop them on schedule,
 * instead of leaving them running forever and starting a second copy.
 *
 * A pid alone can be reused by an unrelated process, so the file also keeps the
 * process's start time (field 22 of /proc/PID/stat, proc(5)); a pid whose start
 * time differs is not ours.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface PidRecord {
  readonly pid: number;
  /** Clock ticks after boot (proc(5) starttime); null where /proc is not available. */
  readonly startTime: number | null;
  readonly command: string;
  /** Set while the group is stopped with SIGSTOP by pause or suspend. */
  readonly stoppedAs: "paused" | "suspended" | null;
}

export function pidFilePath(stateDir: string, label: string): string {
  return join(stateDir, "process", `${encodeURIComponent(label)}.json`);
}

/** Writes atomically (temporary file, then rename). */
export function writePidFile(path: string, record: PidRecord): void {
  mkdirSync(join(path, ".."), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(record)}\n`);
  renameSync(tmp, path);
}

export function removePidFile(path: string): void {
  rmSync(path, { force: true });
}

/** The record if the file exists and is well formed, else null. */
export function readPidFile(path: string): PidRecord | null {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch {
    return null;
  }
  const r = value as Partial<PidRecord>;
  if (typeof r !== "object" || r === null || !Number.isSafeInteger(r.pid) || (r.pid ?? 0) <= 1) return null;
  return {
    pid: r.pid!,
    startTime: typeof r.startTime === "number" ? r.startTime : null,
    command: typeof r.command === "string" ? r.command : "",
    stoppedAs: r.stoppedAs === "paused" || r.stoppedAs === "suspended" ? r.stoppedAs : null,
  };
}

/** proc(5) /proc/PID/stat: the state letter and the start time, or null if there is no such process. */
export function procStat(pid: number): { state: string; startTime: number } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const startTime = Number(fields[19]);
  if (fields[0] === undefined || !Number.isFinite(startTime)) return null;
  return { state: fields[0], startTime };
}

/** Whether the process in the record is still the one we started (and not a zombie). */
export function stillRunning(record: PidRecord): boolean {
  const stat = procStat(record.pid);
  if (stat === null) return false;
  if (stat.state === "Z" || stat.state === "X") return false;
  return record.startTime === null || stat.startTime === record.startTime;
}
