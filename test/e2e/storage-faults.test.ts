/**
 * Storage faults, injected for real, through the built CLI with dig: the
 * --persistdb database on a tmpfs that fills up (ENOSPC) and a database made
 * immutable (`chattr +i`: even root cannot write it) while jitsu runs, and the
 * process backend's --state-dir on a full tmpfs. DNS keeps answering, the
 * store's failure is logged once (not once a flush), the counts stay in memory
 * and are written when the store can be written again; a VM that cannot get
 * its pid file fails its start with a clear error and the others go on.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  alive,
  childPids,
  countMatches,
  dig,
  freePort,
  localArgs,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";
import { getStatus, httpCall } from "../support/http.js";
import { SpawnGate } from "../../src/supervisor/spawn-gate.js";

const IDLE = "sleep 3600";

/** Whether `pid` is the process supervisor's spawn gate (src/supervisor/spawn-gate.ts). */
function isGateProcess(pid: number): boolean {
  try {
    return SpawnGate.isGate(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1));
  } catch {
    return false;
  }
}

function vm(name: string, ip: string): string {
  return `dns=${name}.jitsu.test,ip=${ip},name=${name},exec=${IDLE}`;
}

/** A tmpfs of `size` at `dir` (we run as root); unmounted by the caller. */
function mountTmpfs(dir: string, size: string): void {
  mkdirSync(dir, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]);
}

function unmount(dir: string): void {
  try {
    execFileSync("umount", ["-l", dir]);
  } catch {
    // not mounted
  }
}

/** Fills the file system of `dir` (dd stops at ENOSPC). */
function fill(dir: string): void {
  try {
    execFileSync("dd", ["if=/dev/zero", `of=${join(dir, "fill")}`, "bs=64k"], { stdio: "ignore" });
  } catch {
    // dd exits 1 at ENOSPC: that is the point
  }
}

async function storeStatus(
  port: number,
): Promise<{ ok: boolean; failedWrites: number; lastError: string | null }> {
  const reply = await httpCall(port, "GET", "/status");
  return (
    JSON.parse(reply.body) as { store: { ok: boolean; failedWrites: number; lastError: string | null } }
  ).store;
}

async function ask(port: number, name: string): Promise<string> {
  const res = await dig(port, [`${name}.jitsu.test`, "A"]);
  return res.status;
}

describe("storage faults (e2e)", () => {
  const clis: CliProcess[] = [];
  const mounts: string[] = [];
  const dirs: { remove(): Promise<void> }[] = [];
  const immutable: string[] = [];

  after(async () => {
    for (const cli of clis) await cli.stop("SIGKILL");
    for (const path of immutable) execFileSync("chattr", ["-R", "-i", path]);
    for (const dir of mounts) unmount(dir);
    for (const d of dirs) await d.remove();
  });

  async function jitsu(
    dir: string,
    db: string,
    extra: string[] = [],
  ): Promise<{ cli: CliProcess; dns: number; http: number }> {
    const dns = await freePort();
    const http = await freePort();
    const cli = startCli([
      ...localArgs(dns, dir),
      "-t",
      "600",
      "--persistdb",
      db,
      "--http",
      `127.0.0.1:${http}`,
      ...extra,
      vm("www", "127.0.0.1"),
    ]);
    clis.push(cli);
    await cli.waitFor(/Serving \/status/);
    return { cli, dns, http };
  }

  /** The fault's run: 3 queries, the fault, 5 queries across 3 flushes, one warning, the repair, the counts written. */
  async function survives(dir: string, db: string, inject: () => void, repair: () => void): Promise<void> {
    const first = await jitsu(dir, db);
    for (let i = 0; i < 3; i++) assert.equal(await ask(first.dns, "www"), "NOERROR");
    inject();
    for (let i = 0; i < 5; i++) {
      assert.equal(await ask(first.dns, "www"), "NOERROR", "DNS answers while the store fails");
      await new Promise((r) => setTimeout(r, 2500));
    }
    // Three reaper passes (5 s each) have failed to write: one warning, not three.
    await waitFor(async () => (await storeStatus(first.http)).failedWrites >= 2, 10_000, "failed writes");
    const failing = await storeStatus(first.http);
    assert.equal(failing.ok, false);
    assert.match(failing.lastError ?? "", /cannot write/);
    assert.equal(countMatches(first.cli.output(), /Could not write the state store/), 1, first.cli.output());
    assert.equal((await getStatus(first.http)).get("www")!.totalRequests, 8, "counts kept in memory");
    repair();
    await first.cli.waitFor(
      /The state store is written again \(1 VMs' records, after \d+ failed writes/,
      15_000,
    );
    assert.equal((await storeStatus(first.http)).ok, true);
    // Killed at once: what the store has is what the next jitsu reads.
    await first.cli.stop("SIGKILL");
    const second = await jitsu(dir, db);
    const www = (await getStatus(second.http)).get("www")!;
    assert.equal(www.totalRequests, 8, "the counts from while the store failed were written");
    assert.equal(www.state, "ready", "the VM left running was adopted");
    await second.cli.stop("SIGTERM");
  }

  it("--persistdb on a full file system: DNS answers, one warning, the counts written when space returns", async () => {
    const dir = await tempDir("jitsu-enospc-");
    dirs.push(dir);
    const mnt = join(dir.path, "db");
    mountTmpfs(mnt, "1m");
    mounts.push(mnt);
    await survives(
      dir.path,
      join(mnt, "jitsu.db"),
      () => fill(mnt),
      () => rmSync(join(mnt, "fill")),
    );
  });

  it("--persistdb made read-only while jitsu runs (chattr +i): the same", async () => {
    const dir = await tempDir("jitsu-readonly-");
    dirs.push(dir);
    const dbDir = join(dir.path, "db");
    mkdirSync(dbDir);
    immutable.push(dbDir);
    await survives(
      dir.path,
      join(dbDir, "jitsu.db"),
      () => execFileSync("chattr", ["-R", "+i", dbDir]),
      () => execFileSync("chattr", ["-R", "-i", dbDir]),
    );
  });

  it("a full --state-dir: the VM that needs a pid file fails with a clear error, the running one is answered", async () => {
    const dir = await tempDir("jitsu-statedir-");
    dirs.push(dir);
    const state = join(dir.path, "state");
    mountTmpfs(state, "256k");
    mounts.push(state);
    const dns = await freePort();
    const cli = startCli([
      ...localArgs(dns, state),
      "--start-timeout",
      "10",
      vm("a", "127.0.0.1"),
      vm("b", "127.0.0.2"),
    ]);
    clis.push(cli);
    await cli.waitFor(/Starting server/);
    assert.equal(await ask(dns, "a"), "NOERROR");
    fill(state);
    const began = Date.now();
    assert.equal(await ask(dns, "b"), "SERVFAIL");
    assert.ok(Date.now() - began < 5000, "the failure is fast, not the start timeout");
    assert.match(
      cli.output(),
      /process VM 'b': cannot write its pid file '[^']*b\.json' \(.*ENOSPC.*free space in --state-dir/,
    );
    assert.equal(await ask(dns, "a"), "NOERROR", "the running VM is still answered");
    // No process of b was left running without a pid file: a's is jitsu's only live VM child
    // (the supervisor's spawn gate, a shell waiting for the next start, is not a VM).
    const vmChildren = (): number[] =>
      childPids(cli.child.pid!)
        .filter(alive)
        .filter((pid) => !isGateProcess(pid));
    await waitFor(() => vmChildren().length === 1, 5000, "b's process to end");
    rmSync(join(state, "fill"));
    // After its back-off (1 s), b starts.
    await waitFor(async () => (await ask(dns, "b")) === "NOERROR", 10_000, "b to start");
    await cli.stop("SIGTERM");
  });
});

describe("storage faults, qemu backend (e2e)", () => {
  it("a full --state-dir: the VM's start fails at once with QEMU's own reason, DNS goes on", async (t) => {
    const dir = await tempDir("jitsu-qemu-statedir-");
    const state = join(dir.path, "state");
    mountTmpfs(state, "256k");
    t.after(async () => {
      await cli.stop("SIGKILL");
      unmount(state);
      await dir.remove();
    });
    // Never booted: QEMU stops at its -pidfile, before it reads the kernel.
    const kernel = join(dir.path, "vmlinuz");
    writeFileSync(kernel, "not a kernel");
    const dns = await freePort();
    const cli = startCli([
      ...["-x", "qemu", "-l", String(dns), "-f", "0.0.0.0", "-d", "0", "--state-dir", state],
      `dns=q.jitsu.test,ip=10.0.2.15,name=q,kernel=${kernel}`,
    ]);
    await cli.waitFor(/Starting server/);
    fill(state);
    const began = Date.now();
    assert.equal(await ask(dns, "q"), "SERVFAIL");
    assert.ok(Date.now() - began < 10_000, "the failure is fast, not the start timeout");
    assert.match(cli.output(), /VM 'q' could not be started: .*(PID file|No space left|ENOSPC)/i);
    // The zone is still answered (another type for the managed name: no summon).
    const res = await dig(dns, ["q.jitsu.test", "TXT"]);
    assert.equal(res.status, "NOERROR");
  });
});
