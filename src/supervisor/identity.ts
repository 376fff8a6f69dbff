/**
 * The one identity policy: whether a pid is still the process a pid file
 * describes. A pid is reused once its process is gone, and a pid file may
 * outlive a reboot, so the pid alone proves nothing. Both of these must match
 * what /proc says now:
 *
 * - the start time (proc(5): /proc/PID/stat field 22), which with the pid
 *   names one process since boot;
 * - the command line (/proc/PID/cmdline), which tells our process from
 *   another one that got the same pid and start tick after a reboot.
 *
 * A pid file written before both were recorded is judged by the one it has
 * (the process backend's older files have the start time); one with neither
 * (a bare pid, as QEMU's `-pidfile` writes) only by the owner's `expect`.
 */
import type { PidRecord } from "./pid-file.js";
import type { ProcessInfo } from "./proc.js";

/** The owner's own test of the process behind a pid file (the command it would run, QEMU's -pidfile). */
export type ExpectProcess = (record: PidRecord, now: ProcessInfo) => boolean;

/** Whether `now` (what /proc says about `record.pid`, null when it is gone) is the recorded process. */
export function isRecordedProcess(
  record: PidRecord,
  now: ProcessInfo | null,
  expect?: ExpectProcess,
): boolean {
  if (now === null) return false;
  if (record.startTime === null && record.cmdline === null && expect === undefined) return false;
  if (record.startTime !== null && record.startTime !== now.startTime) return false;
  if (record.cmdline !== null && !sameWords(record.cmdline, now.cmdline)) return false;
  return expect === undefined || expect(record, now);
}

function sameWords(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((w, i) => w === b[i]);
}
