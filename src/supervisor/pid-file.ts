/**
 * A pid file: the record that lets a jitsu started again find a process the
 * previous one left running. It holds the pid and what identifies the process
 * behind it (see identity.ts), plus fields of the owner's own.
 *
 * Format: one JSON object,
 * `{"pid":123,"startTime":"4567","bootId":"68d7...","cmdline":["sleep","600"],...}`.
 * Older formats are read too (see `parsePidFile`): JSON without `bootId` (and
 * the process backend's, without `cmdline` either), and a bare decimal pid
 * (what QEMU's `-pidfile` writes).
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { dirname } from "node:path";

export interface PidRecord {
  readonly pid: number;
  /** /proc/PID/stat field 22 when it was written; null in an older file without it. */
  readonly startTime: string | null;
  /** /proc/sys/kernel/random/boot_id when it was written; null in an older file without it. */
  readonly bootId: string | null;
  /** /proc/PID/cmdline when it was written (for humans: not part of the identity); null in an older file. */
  readonly cmdline: readonly string[] | null;
  /** The owner's own fields, kept beside (e.g. the configured command, the stop mode that paused it). */
  readonly extra: Readonly<Record<string, unknown>>;
}

const NO_EXTRA: Readonly<Record<string, unknown>> = Object.freeze({});

export class PidFile {
  constructor(readonly path: string) {}

  /**
   * Written synchronously, on a cold start's path: a hundred bytes to a local
   * file take less than one of the five trips through libuv's thread pool that
   * mkdir and writeFile took, each a wake-up of a pool thread and then of the
   * event loop (bench/: summon). The folder is made only when it is missing.
   *
   * Written to `<path>.tmp` and renamed over the file, so the file is always
   * whole: a jitsu killed mid-write, or a full disk, leaves the previous record
   * (the process is still found) rather than an empty file (an orphan).
   */
  write(record: PidRecord): void {
    const { pid, startTime, bootId, cmdline, extra } = record;
    const own = { pid, startTime, bootId, cmdline };
    // The supervisor's fields first for a reader, and never overwritten by an `extra` field of the same name.
    const text = `${JSON.stringify(Object.assign({ ...own }, extra, own))}\n`;
    const tmp = `${this.path}.tmp`;
    try {
      try {
        writeFileSync(tmp, text);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        mkdirSync(dirname(this.path), { recursive: true });
        writeFileSync(tmp, text);
      }
      renameSync(tmp, this.path);
    } catch (err) {
      try {
        rmSync(tmp, { force: true });
      } catch {
        // a read-only folder: nothing was written there either
      }
      throw err;
    }
  }

  /** The record, or null when there is no file or it is not a pid file. */
  async read(): Promise<PidRecord | null> {
    try {
      return parsePidFile(await readFile(this.path, "utf8"));
    } catch {
      return null;
    }
  }

  readSync(): PidRecord | null {
    try {
      return parsePidFile(readFileSync(this.path, "utf8"));
    } catch {
      return null;
    }
  }

  async remove(): Promise<void> {
    await rm(this.path, { force: true });
  }

  /**
   * Removes the file unless it names another pid (a process started since
   * wrote it). Synchronous, so no write can come between the check and the removal.
   */
  removeIfNames(pid: number): void {
    const record = this.readSync();
    if (record !== null && record.pid !== pid) return;
    rmSync(this.path, { force: true });
  }
}

export function parsePidFile(text: string): PidRecord | null {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) {
    const pid = Number(trimmed);
    return isPid(pid) ? { pid, startTime: null, bootId: null, cmdline: null, extra: NO_EXTRA } : null;
  }
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const { pid, startTime, bootId, cmdline, ...extra } = value as Record<string, unknown>;
  if (typeof pid !== "number" || !isPid(pid)) return null;
  return {
    pid,
    startTime: nonEmpty(startTime),
    bootId: nonEmpty(bootId),
    cmdline: Array.isArray(cmdline) && cmdline.every((w) => typeof w === "string") ? cmdline : null,
    extra,
  };
}

function nonEmpty(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

function isPid(n: number): boolean {
  return Number.isSafeInteger(n) && n > 1;
}
