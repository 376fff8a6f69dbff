/**
 * The one identity policy: whether a pid is still the process a pid file
 * describes. A pid is reused once its process is gone, and a pid file may
 * outlive a reboot (it can live in a persistent --state-dir), so the pid alone
 * proves nothing. The pid names one process exactly with:
 *
 * - its start time (proc(5): /proc/PID/stat field 22, clock ticks since
 *   boot), which tells it from a later process given the same pid;
 * - the boot id (/proc/sys/kernel/random/boot_id, drawn anew at each boot),
 *   which tells it from a process of another boot that got the same pid and
 *   start tick.
 *
 * Neither changes when the process execs or rewrites its argv. The command
 * line does: a wrapper that ends in `exec foo` (a `#!/bin/sh` script,
 * `sh -c 'exec ...'`), or a program that rewrites its argv (nginx, postgres,
 * node's process.title). So the command line, though recorded for humans, is
 * no part of the identity: were it, a jitsu started again would not adopt
 * such a process, and would start a second copy while the first still holds
 * its port.
 *
 * An older pid file is judged by what it has: without the boot id, by the
 * start time alone; a bare pid (what QEMU's `-pidfile` writes) only by the
 * owner's `expect`, which is asked in every case when given.
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
  if (record.startTime === null) return expect !== undefined && expect(record, now);
  if (record.startTime !== now.startTime) return false;
  if (record.bootId !== null && record.bootId !== now.bootId) return false;
  return expect === undefined || expect(record, now);
}
