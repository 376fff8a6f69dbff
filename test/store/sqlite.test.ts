import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { StoreError } from "../../src/errors/index.js";
import type { VmRecord } from "../../src/store/index.js";
import { APPLICATION_ID, DB_FILE, MIGRATIONS, SqliteStore, type Migration } from "../../src/store/sqlite.js";

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "jitsu-sqlite-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function record(label: string, extra: Partial<VmRecord> = {}): VmRecord {
  return {
    label,
    names: [`${label}.example.org`, `alias.${label}.example.org`],
    ips: ["10.0.0.1", "2001:db8::1"],
    backend: "process",
    backendRef: `/run/jitsu/${label}.pid`,
    state: "ready",
    startedAt: 1_700_000_000_000,
    totalStarts: 3,
    totalRequests: 42,
    lastRequest: 1_700_000_060_000,
    stopMode: "destroy",
    ...extra,
  };
}

function assertStoreError(err: unknown, path: string, pattern: RegExp): true {
  assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
  assert.equal(err.code, "ERR_STORE");
  assert.ok(err.message.includes(path), `message names the file: ${err.message}`);
  assert.match(err.message, pattern);
  assert.ok(!err.message.includes("\n"), "one line");
  return true;
}

test("a new database round-trips records, with nulls, and keeps other VMs on partial writes", async (t) => {
  const dir = await tempDir(t);
  assert.throws(
    () => SqliteStore.open(join(dir, "missing", "state.db")),
    (err) =>
      assertStoreError(err, join(dir, "missing", "state.db"), /directory .* does not exist; create it first/),
  );
  const path = join(dir, "state.db");
  const store = SqliteStore.open(path);
  assert.equal(store.schemaVersion(), MIGRATIONS.length);
  assert.deepEqual(await store.load(), []);
  const a = record("a");
  const b = record("b", { startedAt: null, lastRequest: null, state: "off", ips: [] });
  await store.write([a, b]);
  assert.deepEqual(await store.load(), [a, b]);
  const a2 = record("a", { totalRequests: 43, state: "stopping" });
  await store.write([a2]);
  assert.deepEqual(await store.load(), [a2, b]);
  await store.close();
  await store.close(); // idempotent

  const again = SqliteStore.open(path);
  t.after(() => again.close());
  assert.deepEqual(await again.load(), [a2, b]);
  await again.close();
  // The file is jitsu's and in WAL mode.
  const reader = new Database(path, { readonly: true, fileMustExist: true });
  assert.equal(reader.pragma("application_id", { simple: true }), APPLICATION_ID);
  assert.equal(reader.pragma("journal_mode", { simple: true }), "wal");
  reader.close();
});

test("--persistdb DIR (as the original took it): the database is jitsu.db inside the directory", async (t) => {
  const dir = await tempDir(t);
  const store = SqliteStore.open(dir);
  await store.write([record("a")]);
  await store.close();
  assert.ok(existsSync(join(dir, DB_FILE)));
  const again = SqliteStore.open(join(dir, DB_FILE));
  assert.deepEqual(
    (await again.load()).map((r) => r.label),
    ["a"],
  );
  await again.close();
});

test("a closed store refuses writes with a clear error", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const store = SqliteStore.open(path);
  await store.close();
  await assert.rejects(store.write([record("a")]), (err) => assertStoreError(err, path, /is closed/));
});

test("a second opener (another jitsu) is refused as locked while the first holds it", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const first = SqliteStore.open(path);
  t.after(() => first.close());
  await first.write([record("a")]);
  assert.throws(
    () => SqliteStore.open(path, { busyTimeoutMs: 100 }),
    (err) => assertStoreError(err, path, /locked by another process.*another jitsu/),
  );
  // The first keeps working, and after it closes the file opens again.
  await first.write([record("a", { totalRequests: 50 })]);
  await first.close();
  const second = SqliteStore.open(path, { busyTimeoutMs: 100 });
  assert.equal((await second.load())[0]?.totalRequests, 50);
  await second.close();
});

test("a lock held by another process (sqlite3 BEGIN EXCLUSIVE) is reported as locked", async (t) => {
  const path = join(await tempDir(t), "state.db");
  await SqliteStore.open(path).close();
  // A child process holds an exclusive transaction until we kill it.
  const script = `
    const Database = require(${JSON.stringify(createRequire(import.meta.url).resolve("better-sqlite3"))});
    const db = new Database(${JSON.stringify(path)});
    db.exec("BEGIN EXCLUSIVE");
    process.stdout.write("locked\\n");
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  t.after(() => {
    child.kill("SIGKILL");
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("locked")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`lock holder exited with ${code}`)));
  });
  assert.throws(
    () => SqliteStore.open(path, { busyTimeoutMs: 200 }),
    (err) => assertStoreError(err, path, /locked by another process/),
  );
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  const store = SqliteStore.open(path);
  await store.close();
});

test("a file that is not a database is refused and left untouched", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const garbage = Buffer.from(
    "this is not a sqlite file at all, but a text file of some length\n".repeat(100),
  );
  await writeFile(path, garbage);
  assert.throws(
    () => SqliteStore.open(path),
    (err) => assertStoreError(err, path, /corrupt or not a SQLite database.*move it aside/),
  );
  assert.deepEqual(await readFile(path), garbage);
});

test("a damaged database (overwritten pages) is refused as corrupt", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const store = SqliteStore.open(path);
  await store.write(Array.from({ length: 200 }, (_, i) => record(`vm${i}`)));
  await store.close();
  const bytes = await readFile(path);
  assert.ok(bytes.length >= 4096 * 3, `database has several pages (${bytes.length} bytes)`);
  // Keep the 100-byte header, scribble over the rest of page 1 (the schema) and page 2.
  bytes.fill(0xa5, 100, 4096 * 2);
  await writeFile(path, bytes);
  assert.throws(
    () => SqliteStore.open(path),
    (err) => assertStoreError(err, path, /corrupt/),
  );
});

test("a database from a newer jitsu is refused, not downgraded", async (t) => {
  const path = join(await tempDir(t), "state.db");
  await SqliteStore.open(path).close();
  const db = new Database(path);
  db.pragma(`user_version = ${MIGRATIONS.length + 5}`);
  db.close();
  assert.throws(
    () => SqliteStore.open(path),
    (err) =>
      assertStoreError(
        err,
        path,
        new RegExp(
          `newer jitsu \\(schema version ${MIGRATIONS.length + 5}; this jitsu knows up to ${MIGRATIONS.length}\\); upgrade jitsu`,
        ),
      ),
  );
  const check = new Database(path, { readonly: true });
  assert.equal(check.pragma("user_version", { simple: true }), MIGRATIONS.length + 5);
  check.close();
});

test("another program's SQLite database is refused, not changed", async (t) => {
  const path = join(await tempDir(t), "other.db");
  const db = new Database(path);
  db.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)");
  db.close();
  assert.throws(
    () => SqliteStore.open(path),
    (err) => assertStoreError(err, path, /did not create/),
  );
  const check = new Database(path, { readonly: true });
  assert.equal(check.pragma("application_id", { simple: true }), 0);
  assert.deepEqual(check.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'vms'").get(), {
    n: 0,
  });
  check.close();
});

test("migrations upgrade an older database step by step and keep its rows", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const v1 = SqliteStore.open(path, { migrations: MIGRATIONS.slice(0, 1) });
  await v1.write([record("a")]);
  await v1.close();

  // A later version adds a column with a default and a table.
  const addNote: Migration = (db) => {
    db.exec("ALTER TABLE vms ADD COLUMN note TEXT NOT NULL DEFAULT 'none'");
    db.exec("CREATE TABLE events (at INTEGER NOT NULL, label TEXT NOT NULL) STRICT");
  };
  const v2 = SqliteStore.open(path, { migrations: [...MIGRATIONS.slice(0, 1), addNote] });
  assert.equal(v2.schemaVersion(), 2);
  assert.deepEqual(await v2.load(), [record("a")]);
  await v2.write([record("a", { totalRequests: 99 }), record("b")]);
  assert.deepEqual(
    (await v2.load()).map((r) => [r.label, r.totalRequests]),
    [
      ["a", 99],
      ["b", 42],
    ],
  );
  await v2.close();
  const raw = new Database(path, { readonly: true });
  assert.deepEqual(raw.prepare("SELECT label, note FROM vms ORDER BY label").all(), [
    { label: "a", note: "none" },
    { label: "b", note: "none" },
  ]);
  raw.close();

  // And v1 code now refuses the v2 file.
  assert.throws(
    () => SqliteStore.open(path, { migrations: MIGRATIONS.slice(0, 1) }),
    (err) => assertStoreError(err, path, /newer jitsu \(schema version 2; this jitsu knows up to 1\)/),
  );
});

test("a failing migration rolls back to the previous version and says which step failed", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const v1 = SqliteStore.open(path);
  await v1.write([record("a")]);
  await v1.close();
  const broken: Migration = (db) => {
    db.exec("ALTER TABLE vms ADD COLUMN half TEXT");
    db.exec("THIS IS NOT SQL");
  };
  assert.throws(
    () => SqliteStore.open(path, { migrations: [...MIGRATIONS, broken] }),
    (err) =>
      assertStoreError(
        err,
        path,
        new RegExp(`cannot upgrade the schema from version ${MIGRATIONS.length} to ${MIGRATIONS.length + 1}`),
      ),
  );
  const after = SqliteStore.open(path);
  t.after(() => after.close());
  assert.equal(after.schemaVersion(), MIGRATIONS.length);
  assert.deepEqual(await after.load(), [record("a")]);
});

test("a malformed row is reported as corruption naming the VM", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const store = SqliteStore.open(path);
  await store.write([record("a")]);
  await store.close();
  const db = new Database(path);
  db.prepare("UPDATE vms SET names = 'not json' WHERE label = 'a'").run();
  db.close();
  const again = SqliteStore.open(path);
  t.after(() => again.close());
  await assert.rejects(again.load(), (err) => assertStoreError(err, path, /VM 'a'.*'names'.*corrupt/));
});

test("committed writes survive kill -9 of the writer", async (t) => {
  const path = join(await tempDir(t), "state.db");
  const modulePath = new URL("../../src/store/sqlite.js", import.meta.url).href;
  const script = `
    const { SqliteStore } = await import(${JSON.stringify(modulePath)});
    const store = SqliteStore.open(${JSON.stringify(path)});
    for (let i = 1; i <= 50; i++) {
      await store.write([{ label: "a", names: ["a.example.org"], ips: ["10.0.0.1"], backend: "process",
        backendRef: "a", state: "ready", startedAt: 1, totalStarts: 1, totalRequests: i, lastRequest: i,
        stopMode: "destroy" }]);
    }
    process.stdout.write("written\\n");
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.after(() => {
    child.kill("SIGKILL");
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("written")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`writer exited with ${code}`)));
  });
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  const store = SqliteStore.open(path);
  t.after(() => store.close());
  const [a] = await store.load();
  assert.equal(a?.totalRequests, 50);
});
