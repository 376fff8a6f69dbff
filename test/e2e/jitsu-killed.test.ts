/**
 * jitsu itself SIGKILLed at random moments (mid-start, mid-stop, while ready,
 * mid-store-write) with the process backend and --persistdb, through the
 * built CLI: after each restart every VM process it started is adopted (or
 * was stopped), none runs that /status does not list, none listed as ready is
 * dead, the counts lost are at most one flush interval's, and the VMs are
 * stopped on schedule. Also the narrowest gap on its own: a process spawned
 * just before the kill, before its pid file was written.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import { findByEnvironment } from "../../src/supervisor/index.js";
import {
  DEMO_SERVICE,
  alive,
  freePort,
  localArgs,
  queryMany,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";
import { getStatus, type StatusVm } from "../support/http.js";

/** The reaper's pass, which flushes the store. */
const FLUSH_MS = 5000;

/** A small seeded PRNG (mulberry32), so a failing run can be repeated with its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Live VM processes of `stateDir` (group leaders carrying its JITSU_STATE_DIR), by label. */
async function vmProcesses(stateDir: string): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (const p of await findByEnvironment("JITSU_STATE_DIR", resolve(stateDir, "process"))) {
    const label = p.env.get("JITSU_VM") ?? "?";
    out.set(label, [...(out.get(label) ?? []), p.pid]);
  }
  return out;
}

function pidFilePid(stateDir: string, label: string): number | null {
  try {
    return (JSON.parse(readFileSync(join(stateDir, "process", `${label}.json`), "utf8")) as { pid: number })
      .pid;
  } catch {
    return null;
  }
}

/** What breaks the promises, now: orphans (running, listed off or not at all), duplicates, ready but dead. */
async function problems(stateDir: string, status: Map<string, StatusVm>): Promise<string[]> {
  const out: string[] = [];
  for (const [label, pids] of await vmProcesses(stateDir)) {
    if (pids.length > 1) out.push(`VM '${label}' runs ${pids.length} processes (${pids.join(", ")})`);
    const state = status.get(label)?.state;
    if (state === undefined || state === "off")
      out.push(`VM '${label}' runs (pid ${pids.join(", ")}) but /status says ${state}`);
  }
  for (const [label, vm] of status) {
    if (vm.state !== "ready") continue;
    const pid = pidFilePid(stateDir, label);
    if (pid === null || !alive(pid))
      out.push(`VM '${label}' is listed ready but its process (${pid}) is dead`);
  }
  return out;
}

describe("jitsu killed (e2e)", () => {
  const clis: CliProcess[] = [];
  const dirs: { remove(): Promise<void> }[] = [];
  /** Processes a test spawned as VM processes itself (ended whatever happens). */
  const spawned: number[] = [];
  after(async () => {
    for (const cli of clis) await cli.stop("SIGKILL");
    for (const pid of spawned) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // ended already
      }
    }
    for (const d of dirs) await d.remove();
  });

  it("a VM process spawned just before jitsu was killed, before its pid file, is adopted; a duplicate is ended", async () => {
    const dir = await tempDir("jitsu-unrecorded-");
    dirs.push(dir);
    const marker = resolve(dir.path, "process");
    // As the process backend spawns: its own group, the two variables; but no pid file.
    const orphan = (label: string): number => {
      const child = spawn("sleep", ["3600"], {
        detached: true,
        stdio: "ignore",
        env: { ...process.env, JITSU_VM: label, JITSU_STATE_DIR: marker },
      });
      child.unref();
      spawned.push(child.pid!);
      return child.pid!;
    };
    const www = orphan("www");
    const first = orphan("api");
    const dns = await freePort();
    const http = await freePort();
    const args = [...localArgs(dns, dir.path), "--http", `127.0.0.1:${http}`];
    const vm = (name: string, ip: string): string =>
      `dns=${name}.jitsu.test,ip=${ip},name=${name},exec=sleep 3600`;
    // api: a first jitsu records one process (its pid file), then a second is found beside it.
    const cli1 = startCli([...args.filter((a) => a !== "--stop-on-exit"), vm("api", "127.0.0.2")]);
    clis.push(cli1);
    await cli1.waitFor(/Serving \/status/);
    assert.match(cli1.output(), /Found process \d+ of VM 'api' running without a pid file/);
    assert.equal((await getStatus(http)).get("api")!.state, "ready");
    await cli1.stop("SIGKILL");
    const second = orphan("api");
    const cli = startCli([...args, vm("www", "127.0.0.1"), vm("api", "127.0.0.2")]);
    clis.push(cli);
    await cli.waitFor(/Serving \/status/);
    assert.match(cli.output(), new RegExp(`Found process ${www} of VM 'www' running without a pid file`));
    assert.match(
      cli.output(),
      new RegExp(`Process ${second} of VM 'api' runs beside the one adopted from its pid file; killing it`),
    );
    const status = await getStatus(http);
    assert.equal(status.get("www")!.state, "ready");
    assert.equal(pidFilePid(dir.path, "www"), www, "its pid file is written");
    await waitFor(() => !alive(second), 5000, "the duplicate to end");
    assert.ok(alive(first));
    assert.deepEqual(await problems(dir.path, status), []);
    assert.deepEqual(await queryMany(dns, "www.jitsu.test", 1), ["127.0.0.1"]);
    assert.doesNotMatch(cli.output(), /Started process/, "nothing was started twice");
    // An adopted process is not our child (no exit event): its death is still noticed within ~1 s.
    process.kill(-www, "SIGKILL");
    await cli.waitFor(new RegExp(`Process ${www} of VM 'www' is gone \\(adopted`), 5000);
    await waitFor(async () => (await getStatus(http)).get("www")!.state === "off", 2000, "www off");
    // Adopted without a store, they were not known as jitsu's: --stop-on-exit leaves them (after() ends them).
    await cli.stop("SIGTERM");
  });

  it("a VM still booting when jitsu was killed is answered after the restart only once its ready= probe passes", async () => {
    const dir = await tempDir("jitsu-booting-");
    dirs.push(dir);
    const [dns, http, svc] = [await freePort(), await freePort(), await freePort()];
    const stamps = join(dir.path, "stamps");
    writeFileSync(stamps, "");
    const stamp = (what: string): number | null => {
      const line = readFileSync(stamps, "utf8")
        .split("\n")
        .find((l) => l.startsWith(`${what} `));
      return line === undefined ? null : Number(line.split(" ")[1]);
    };
    const args = [
      ...localArgs(dns, dir.path),
      ...["--http", `127.0.0.1:${http}`, "--start-timeout", "30"],
      `dns=slow.jitsu.test,ip=127.0.0.1,name=slow,exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${svc} slow 3 '${stamps}',ready=tcp:127.0.0.1:${svc}`,
    ];
    const first = startCli(args);
    clis.push(first);
    await first.waitFor(/Serving \/status/);
    void queryMany(dns, "slow.jitsu.test", 1, 2000);
    await waitFor(
      () => stamp("start") !== null && pidFilePid(dir.path, "slow") !== null,
      10_000,
      "the VM to boot",
    );
    spawned.push(pidFilePid(dir.path, "slow")!);
    await first.stop("SIGKILL");
    const second = startCli(args);
    clis.push(second);
    await second.waitFor(/Serving \/status/);
    assert.match(
      second.output(),
      new RegExp(
        `VM 'slow' is running; answering it once its readiness passes \\(tcp:127\\.0\\.0\\.1:${svc}\\)`,
      ),
    );
    if (stamp("ready") === null) {
      assert.equal((await getStatus(http)).get("slow")!.state, "starting", "not ready while it boots");
    }
    assert.deepEqual(await queryMany(dns, "slow.jitsu.test", 1, 10_000), ["127.0.0.1"]);
    const answeredAt = Date.now();
    const ready = stamp("ready");
    assert.ok(ready !== null && ready <= answeredAt, "answered after the service listened");
    assert.doesNotMatch(second.output(), /Started process/, "adopted, not started again");
    assert.equal((await getStatus(http)).get("slow")!.state, "ready");
    await second.stop("SIGTERM");
  });

  it("SIGKILL at random moments: re-adopted or stopped, no orphan, counts within one flush", async () => {
    const seed = Number(process.env["JITSU_KILL_SEED"] ?? Date.now() % 100_000);
    const random = prng(seed);
    const dir = await tempDir("jitsu-killed-");
    dirs.push(dir);
    // Below the ephemeral range: the client's sockets cannot take them while jitsu is down.
    const dns = await freePort();
    const http = await freePort();
    const ports = [await freePort(), await freePort()];
    const db = join(dir.path, "state.db");
    const names = ["web0", "web1", "stubborn", "idle"];
    const configs = [
      ...ports.map(
        (port, i) =>
          `dns=web${i}.jitsu.test,ip=127.0.0.1,name=web${i},exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${port} web${i} 0.5,ready=http://127.0.0.1:${port}/`,
      ),
      // Ignores SIGTERM: each shutdown takes its whole stop_grace, a window to be killed in.
      `dns=stubborn.jitsu.test,ip=127.0.0.3,name=stubborn,stop_grace=2,exec=sh -c "trap '' TERM; exec sleep 3600"`,
      `dns=idle.jitsu.test,ip=127.0.0.4,name=idle,exec=sleep 3600`,
    ];
    const start = async (): Promise<CliProcess> => {
      const cli = startCli([
        ...localArgs(dns, dir.path, { stopOnExit: false }),
        "-t",
        "1", // idle after 2 s: stops happen all the time
        "-m",
        "shutdown",
        "--start-timeout",
        "10",
        "--persistdb",
        db,
        "--http",
        `127.0.0.1:${http}`,
        ...configs,
      ]);
      clis.push(cli);
      await cli.waitFor(/Serving \/status/);
      return cli;
    };
    /** Totals seen in /status, with when. */
    const seen: { at: number; totals: Map<string, number> }[] = [];
    const log: string[] = [];
    let cli = await start();
    for (let round = 0; round < 6; round++) {
      const killAfter = 300 + Math.floor(random() * 4000);
      const until = Date.now() + killAfter;
      // Queries at random names while the kill waits; /status sampled for the counts.
      const client = (async () => {
        while (Date.now() < until) {
          void queryMany(dns, `${names[Math.floor(random() * names.length)]}.jitsu.test`, 1, 3000);
          await sleep(50 + random() * 150);
        }
      })();
      const sampler = (async () => {
        while (Date.now() < until) {
          try {
            const status = await getStatus(http);
            seen.push({ at: Date.now(), totals: new Map([...status].map(([l, v]) => [l, v.totalRequests])) });
          } catch {
            // between two jitsus
          }
          await sleep(400);
        }
      })();
      await Promise.all([client, sampler]);
      const killedAt = Date.now();
      await cli.stop("SIGKILL");
      // This jitsu's samples: what it counted one flush interval before its end must have been written.
      const ofThisJitsu = seen.splice(0);
      log.push(`seed ${seed} round ${round}: killed after ${killAfter} ms`);
      cli = await start();
      // The counts read back are at least those seen one flush interval (and a margin) before the kill.
      const status = await getStatus(http);
      const before = ofThisJitsu.filter((s) => s.at <= killedAt - FLUSH_MS - 1000).at(-1);
      if (before !== undefined) {
        for (const [label, total] of before.totals) {
          assert.ok(
            status.get(label)!.totalRequests >= total,
            `${log.join("; ")}: VM '${label}' has ${status.get(label)!.totalRequests} requests after the restart, ${total} were seen ${killedAt - before.at} ms before the kill`,
          );
        }
      }
      // Processes come and go (a stop finishing, a boot ending): a problem must persist to count.
      let found = await problems(dir.path, status);
      if (found.length > 0) {
        await sleep(2500);
        found = await problems(dir.path, await getStatus(http));
      }
      assert.deepEqual(found, [], `${log.join("; ")}\n${cli.output()}`);
    }
    // No more queries: every VM is stopped on schedule (2 x TTL, a reaper pass, stop_grace).
    await waitFor(
      async () => [...(await getStatus(http)).values()].every((vm) => vm.state === "off"),
      20_000,
      `every VM off (seed ${seed})`,
    );
    await waitFor(
      async () => (await vmProcesses(dir.path)).size === 0,
      5000,
      `no VM process left (seed ${seed})`,
    );
    writeFileSync(join(dir.path, "rounds.log"), log.join("\n"));
    await cli.stop("SIGTERM");
  });
});
