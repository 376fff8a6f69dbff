/**
 * SqliteStore: the Store contract kept in a SQLite database (`--persistdb PATH`).
 *
 * - WAL journal with synchronous=NORMAL: a write is one short transaction that
 *   appends to the WAL without an fsync, so the reaper's flush stays cheap; a
 *   process crash (kill -9) loses nothing that was committed.
 * - The database belongs to one jitsu at a time: the connection runs with
 *   locking_mode=EXCLUSIVE and takes the write lock at open, so a second jitsu
 *   on the same file gets a clear "locked" error instead of interleaving writes.
 * - The schema is versioned with PRAGMA user_version and upgraded by the
 *   migrations below, each in its own transaction. A database from a newer
 *   jitsu, a corrupt file or a SQLite database that is not jitsu's is an error;
 *   it is never replaced or "repaired".
 */
import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createRequire } from "node:module";
import type Database from "better-sqlite3";
import { StoreError } from "../errors/index.js";
import type { Store, VmRecord } from "./contract.js";

/** 'JITS' in PRAGMA application_id marks a database as jitsu's (see sqlite.org/fileformat.html §1.3.16). */
export const APPLICATION_ID = 0x4a495453;

/** One migration: moves the schema from version `index` to `index + 1`. */
export type Migration = (db: Database.Database) => void;

export const MIGRATIONS: readonly Migration[] = [
  // 0 -> 1: one row per VM with the VmRecord fields; names and ips as JSON arrays.
  (db) => {
    db.exec(`
      CREATE TABLE vms (
        label          TEXT PRIMARY KEY NOT NULL,
        names          TEXT NOT NULL,
        ips            TEXT NOT NULL,
        backend        TEXT NOT NULL,
        backend_ref    TEXT NOT NULL,
        state          TEXT NOT NULL,
        started_at     INTEGER,
        total_starts   INTEGER NOT NULL,
        total_requests INTEGER NOT NULL,
        last_request   INTEGER,
        stop_mode      TEXT NOT NULL,
        written_at     INTEGER NOT NULL
      ) STRICT`);
  },
];

export interface SqliteStoreOptions {
  /** How long to wait for another connection's lock before failing (default 2000 ms). */
  readonly busyTimeoutMs?: number;
  /** The migrations to apply (tests); default MIGRATIONS. */
  readonly migrations?: readonly Migration[];
  /** Time of writes, for `written_at` (default Date.now). */
  readonly now?: () => number;
}

interface Row {
  label: string;
  names: string;
  ips: string;
  backend: string;
  backend_ref: string;
  state: string;
  started_at: number | null;
  total_starts: number;
  total_requests: number;
  last_request: number | null;
  stop_mode: string;
}

/** Checkpoint the WAL every this many pages (4 KB each). */
const WAL_PAGES = 100;
/** After a checkpoint, the WAL file is truncated to at most this. */
const WAL_LIMIT_BYTES = 1024 * 1024;

function isFull(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && code.startsWith("SQLITE_FULL");
}

/** The database's name inside a directory given as --persistdb. */
export const DB_FILE = "jitsu.db";

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

export class SqliteStore implements Store {
  readonly path: string;
  private readonly db: Database.Database;
  private readonly upsert: Database.Statement;
  private readonly writeAll: (records: readonly VmRecord[]) => void;
  private readonly now: () => number;
  private closed = false;

  private constructor(path: string, db: Database.Database, now: () => number) {
    this.path = path;
    this.db = db;
    this.now = now;
    this.upsert = db.prepare(`
      INSERT INTO vms (label, names, ips, backend, backend_ref, state, started_at, total_starts,
                       total_requests, last_request, stop_mode, written_at)
      VALUES (@label, @names, @ips, @backend, @backend_ref, @state, @started_at, @total_starts,
              @total_requests, @last_request, @stop_mode, @written_at)
      ON CONFLICT (label) DO UPDATE SET
        names = excluded.names, ips = excluded.ips, backend = excluded.backend,
        backend_ref = excluded.backend_ref, state = excluded.state, started_at = excluded.started_at,
        total_starts = excluded.total_starts, total_requests = excluded.total_requests,
        last_request = excluded.last_request, stop_mode = excluded.stop_mode, written_at = excluded.written_at`);
    this.writeAll = db.transaction((records: readonly VmRecord[]) => {
      const writtenAt = this.now();
      for (const r of records) {
        this.upsert.run({
          label: r.label,
          names: JSON.stringify(r.names),
          ips: JSON.stringify(r.ips),
          backend: r.backend,
          backend_ref: r.backendRef,
          state: r.state,
          started_at: r.startedAt,
          total_starts: r.totalStarts,
          total_requests: r.totalRequests,
          last_request: r.lastRequest,
          stop_mode: r.stopMode,
          written_at: writtenAt,
        });
      }
    });
  }

  /**
   * Opens (creating if absent) and upgrades the database. Throws StoreError when
   * it is locked by another process, corrupt, not jitsu's, or from a newer jitsu.
   * `given` may be a directory (what the original Jitsu's --persistdb took):
   * the database is then `DB_FILE` inside it.
   */
  static open(given: string, options: SqliteStoreOptions = {}): SqliteStore {
    const migrations = options.migrations ?? MIGRATIONS;
    const path = isDirectory(given) ? join(given, DB_FILE) : given;
    const full = resolve(path);
    if (!existsSync(dirname(full))) {
      throw new StoreError(path, `its directory '${dirname(full)}' does not exist; create it first`);
    }
    let db: Database.Database;
    try {
      // Loaded here, not at import: a jitsu without --persistdb does not pay its ~8 MB of RSS.
      const Sqlite = createRequire(import.meta.url)("better-sqlite3") as typeof Database;
      db = new Sqlite(full, { timeout: options.busyTimeoutMs ?? 2000 });
    } catch (err) {
      throw openError(path, err);
    }
    try {
      // Exclusive locking first: then WAL keeps its index in our memory (no -shm file) and
      // the write lock, taken by the migration transaction below, is held until close.
      db.pragma("locking_mode = EXCLUSIVE");
      const mode = db.pragma("journal_mode = WAL", { simple: true }) as string;
      if (mode !== "wal")
        throw new StoreError(path, `cannot use a write-ahead log (journal mode is ${mode})`);
      db.pragma("synchronous = NORMAL");
      // A small WAL: the table is one row per VM, so checkpoint every WAL_PAGES pages (not
      // SQLite's 1000, 4 MB) and truncate the log to WAL_LIMIT_BYTES after: on a file system
      // with little room, the log alone must not fill it (found by the chaos soak: a 4 MB log
      // on a 2 MB tmpfs failed every write, with the data itself a few KB).
      db.pragma(`wal_autocheckpoint = ${WAL_PAGES}`);
      db.pragma(`journal_size_limit = ${WAL_LIMIT_BYTES}`);
      db.pragma("foreign_keys = ON");
      migrate(db, path, migrations);
      const check = db.pragma("quick_check", { simple: true }) as string;
      if (check !== "ok") {
        throw new StoreError(
          path,
          `is corrupt (${check}); move it aside and start again, or restore it from a backup`,
        );
      }
    } catch (err) {
      db.close();
      throw err instanceof StoreError ? err : openError(path, err);
    }
    try {
      return new SqliteStore(path, db, options.now ?? Date.now);
    } catch (err) {
      db.close();
      throw openError(path, err);
    }
  }

  async load(): Promise<VmRecord[]> {
    this.checkOpen();
    let rows: Row[];
    try {
      rows = this.db.prepare("SELECT * FROM vms ORDER BY label").all() as Row[];
    } catch (err) {
      throw new StoreError(this.path, `cannot read: ${sqliteReason(err)}`, { cause: err });
    }
    return rows.map((row) => toRecord(this.path, row));
  }

  /**
   * One transaction with a prepared statement: replaces the given VMs' rows.
   * A write that fails for want of room (SQLITE_FULL) first tries to give
   * the write-ahead log's room back (a checkpoint that truncates it), and is
   * tried once more: the log may be what fills the disk.
   */
  async write(records: readonly VmRecord[]): Promise<void> {
    this.checkOpen();
    if (records.length === 0) return;
    try {
      this.writeAll(records);
    } catch (err) {
      if (!isFull(err) || !this.truncateWal()) {
        throw new StoreError(this.path, `cannot write: ${sqliteReason(err)}`, { cause: err });
      }
      try {
        this.writeAll(records);
      } catch (again) {
        throw new StoreError(this.path, `cannot write: ${sqliteReason(again)}`, { cause: again });
      }
    }
  }

  /** Checkpoints the WAL into the database and truncates it; false when that failed too. */
  private truncateWal(): boolean {
    try {
      const [result] = this.db.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[];
      return result !== undefined && result.busy === 0;
    } catch {
      return false;
    }
  }

  /** Checkpoints the WAL into the database file and releases the lock. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.db.close();
    } catch (err) {
      throw new StoreError(this.path, `cannot close: ${sqliteReason(err)}`, { cause: err });
    }
  }

  /** The schema version of the open database. */
  schemaVersion(): number {
    return this.db.pragma("user_version", { simple: true }) as number;
  }

  private checkOpen(): void {
    if (this.closed) throw new StoreError(this.path, "is closed");
  }
}

/**
 * Brings the schema up to `migrations.length`, one transaction per step (so a
 * failed step leaves the previous version intact). BEGIN IMMEDIATE also takes
 * the write lock, which locking_mode=EXCLUSIVE then keeps.
 */
export function migrate(db: Database.Database, path: string, migrations: readonly Migration[]): void {
  const latest = migrations.length;
  db.exec("BEGIN IMMEDIATE");
  let version: number;
  try {
    version = db.pragma("user_version", { simple: true }) as number;
    const appId = db.pragma("application_id", { simple: true }) as number;
    if (version > latest) {
      throw new StoreError(
        path,
        `was written by a newer jitsu (schema version ${version}; this jitsu knows up to ${latest}); upgrade jitsu or use another --persistdb file`,
      );
    }
    if (appId !== APPLICATION_ID) {
      const tables = db
        .prepare("SELECT count(*) AS n FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        .get() as { n: number };
      if (appId !== 0 || version !== 0 || tables.n > 0) {
        throw new StoreError(
          path,
          "is a SQLite database that jitsu did not create; refusing to change it (use another --persistdb file)",
        );
      }
      db.pragma(`application_id = ${APPLICATION_ID}`);
    }
    db.exec("COMMIT");
  } catch (err) {
    db.exec("ROLLBACK");
    throw err;
  }
  for (let v = version; v < latest; v++) {
    db.exec("BEGIN IMMEDIATE");
    try {
      migrations[v]!(db);
      db.pragma(`user_version = ${v + 1}`);
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw new StoreError(
        path,
        `cannot upgrade the schema from version ${v} to ${v + 1}: ${sqliteReason(err)}`,
        {
          cause: err,
        },
      );
    }
  }
  // Take the write lock now even when nothing needed migrating, so a second jitsu fails at start-up.
  db.exec("BEGIN IMMEDIATE");
  db.exec("COMMIT");
}

function toRecord(path: string, row: Row): VmRecord {
  const list = (column: "names" | "ips"): string[] => {
    let value: unknown;
    try {
      value = JSON.parse(row[column]);
    } catch {
      value = undefined;
    }
    if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
      throw new StoreError(
        path,
        `row for VM '${row.label}' has a malformed '${column}' column; the database is corrupt`,
      );
    }
    return value as string[];
  };
  return {
    label: row.label,
    names: list("names"),
    ips: list("ips"),
    backend: row.backend,
    backendRef: row.backend_ref,
    state: row.state,
    startedAt: row.started_at,
    totalStarts: row.total_starts,
    totalRequests: row.total_requests,
    lastRequest: row.last_request,
    stopMode: row.stop_mode,
  };
}

/** Turns SQLite's errors at open into what the user should know and do. */
function openError(path: string, err: unknown): StoreError {
  const raw = (err as { code?: unknown }).code;
  // Extended codes (SQLITE_IOERR_SHORT_READ, SQLITE_BUSY_RECOVERY, ...) count as their primary code.
  const code = typeof raw === "string" ? raw.split("_").slice(0, 2).join("_") : undefined;
  const reason = sqliteReason(err);
  switch (code) {
    case "SQLITE_BUSY":
    case "SQLITE_LOCKED":
      return new StoreError(
        path,
        `is locked by another process (${reason}); is another jitsu using it? Stop it or use another --persistdb file`,
        { cause: err },
      );
    case "SQLITE_NOTADB":
    case "SQLITE_CORRUPT":
      return new StoreError(
        path,
        `is corrupt or not a SQLite database (${reason}); move it aside and start again, or restore it from a backup`,
        { cause: err },
      );
    case "SQLITE_CANTOPEN":
    case "SQLITE_READONLY":
    case "SQLITE_PERM":
    case "SQLITE_IOERR":
      return new StoreError(
        path,
        `cannot be opened for writing (${reason}); check the path and its permissions`,
        {
          cause: err,
        },
      );
    default:
      return new StoreError(path, `cannot be opened: ${reason}`, { cause: err });
  }
}

function sqliteReason(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const message = err instanceof Error ? err.message : String(err);
  return typeof code === "string" && !message.includes(code) ? `${message} [${code}]` : message;
}
