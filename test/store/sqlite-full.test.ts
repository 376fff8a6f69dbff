/**
 * SqliteStore on a small tmpfs (we run as root): the write-ahead log must not
 * fill the file system by itself (the chaos soak found a 4 MB log on a 2 MB
 * tmpfs failing every write forever), and with the disk full and then freed,
 * the next write works on the same connection.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { it } from "node:test";
import { SqliteStore, type VmRecord } from "../../src/store/index.js";

function records(n: number, round: number): VmRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    label: `vm${i}`,
    names: [`vm${i}.example.org`],
    ips: [`10.0.${i >> 8}.${i & 255}`],
    backend: "process",
    backendRef: `vm${i}`,
    state: "ready",
    startedAt: 1_700_000_000_000,
    totalStarts: round,
    totalRequests: round * 7,
    lastRequest: 1_700_000_000_000 + round,
    stopMode: "destroy",
  }));
}

it("a small file system: the log never fills it, and a full one frees up after the disk is", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "jitsu-sqlite-full-"));
  const mnt = join(dir, "fs");
  mkdirSync(mnt);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
  const path = join(mnt, "jitsu.db");
  let store = SqliteStore.open(path);
  t.after(async () => {
    await store.close().catch(() => undefined);
    execFileSync("umount", ["-l", mnt]);
    rmSync(dir, { recursive: true, force: true });
  });
  // 3000 flushes of 50 VMs: each a transaction of a few pages; SQLite's default log would reach 4 MB.
  for (let round = 1; round <= 3000; round++) await store.write(records(50, round));
  const wal = statSync(`${path}-wal`).size;
  assert.ok(wal <= 1024 * 1024, `the log is ${wal} bytes`);
  assert.equal((await store.load()).find((r) => r.label === "vm7")!.totalRequests, 3000 * 7);

  // Full: a write either fits in the log's room already taken or fails saying so; freed: the next works.
  try {
    execFileSync("dd", ["if=/dev/zero", `of=${join(mnt, "fill")}`, "bs=4k"], { stdio: "ignore" });
  } catch {
    // dd stops at ENOSPC
  }
  for (let round = 3001; round <= 3400; round++) {
    try {
      await store.write(records(50 + (round % 200), round));
    } catch (err) {
      assert.match(String(err), /cannot write: .*(full|SQLITE_FULL)/);
    }
  }
  rmSync(join(mnt, "fill"));
  await store.write(records(50, 4000));
  await store.close();
  store = SqliteStore.open(path);
  assert.equal((await store.load()).find((r) => r.label === "vm7")!.totalRequests, 4000 * 7);
});
