/**
 * A restarted jitsu (a new ProcessBackend on the same --state-dir) finds the
 * processes the previous one left running, through their pid files.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { BackendEvent } from "../../../src/backends/contract.js";
import { ProcessBackend } from "../../../src/backends/process/index.js";
import { pidFilePath, procStat } from "../../../src/backends/process/pid-file.js";
import {
  alive,
  backendOptions,
  captureLog,
  freePort,
  httpGet,
  killGroup,
  makeFixture,
  processSpec,
  waitFor,
  type Fixture,
} from "./fixtures.js";

describe("process backend: adopting processes a previous jitsu started", () => {
  let fx: Fixture;
  const pids: number[] = [];

  before(async () => {
    fx = await makeFixture();
  });

  after(async () => {
    for (const pid of pids) killGroup(pid);
    await fx.remove();
  });

  it("a new backend on the same state dir reports it running, stops it, and forgets the pid file", async () => {
    const port = await freePort();
    const spec = processSpec([
      ["name", "web"],
      ["dns", "web.example.org"],
      ["ip", "127.0.0.1"],
      ["exec", `${process.execPath} ${fx.server} ${port}`],
    ]);
    const first = new ProcessBackend(backendOptions(captureLog().log, fx.dir));
    const ref = await first.resolve(spec);
    await first.start(ref);
    const pid = first.pid(ref)!;
    pids.push(pid);
    await waitFor(async () => (await httpGet(port)) !== null, 10_000, "the server to listen");
    const file = pidFilePath(fx.dir, "web");
    assert.ok(existsSync(file), "pid file written");
    await first.close(); // jitsu exits without --stop-on-exit: the process runs on

    const { log, lines } = captureLog();
    const second = new ProcessBackend(backendOptions(log, fx.dir));
    const ref2 = await second.resolve(spec);
    assert.equal(await second.state(ref2), "running");
    assert.equal(second.pid(ref2), pid);
    assert.ok(lines.some((l) => l.msg.includes(`Found process ${pid} of VM 'web' left by a previous jitsu`)));
    // pause and unpause reach it too
    await second.stop(ref2, "pause");
    assert.equal(await second.state(ref2), "paused");
    await waitFor(() => procStat(pid)?.state === "T", 5000, "the process to be stopped (T)");
    await second.unpause(ref2);
    assert.equal(await second.state(ref2), "running");
    await second.stop(ref2, "destroy");
    assert.equal(await second.state(ref2), "off");
    await waitFor(() => !alive(pid), 5000, "the process to be gone");
    assert.ok(!existsSync(file), "pid file removed");
    await second.close();
  });

  it("an adopted process that exits on its own is reported as off", async () => {
    const spec = processSpec([
      ["name", "short"],
      ["dns", "short.example.org"],
      ["ip", "127.0.0.1"],
      ["exec", `${process.execPath} ${fx.exit} 0 1500`],
    ]);
    const first = new ProcessBackend(backendOptions(captureLog().log, fx.dir));
    const ref = await first.resolve(spec);
    await first.start(ref);
    pids.push(first.pid(ref)!);
    await first.close();
    const second = new ProcessBackend(backendOptions(captureLog().log, fx.dir));
    const events: BackendEvent[] = [];
    second.onEvent((e) => events.push(e));
    const ref2 = await second.resolve(spec);
    assert.equal(await second.state(ref2), "running");
    await waitFor(() => events.length > 0, 10_000, "the exit to be noticed");
    assert.equal(events[0]!.state, "off");
    assert.match(events[0]!.reason ?? "", /adopted/);
    assert.equal(await second.state(ref2), "off");
    assert.ok(!existsSync(pidFilePath(fx.dir, "short")));
    await second.close();
  });

  it("a stale pid file (dead process, or a pid reused by another process) is ignored and removed", async () => {
    const spec = processSpec([
      ["name", "stale"],
      ["dns", "stale.example.org"],
      ["ip", "127.0.0.1"],
      ["exec", "/bin/true"],
    ]);
    const file = pidFilePath(fx.dir, "stale");
    await mkdir(join(fx.dir, "process"), { recursive: true });
    // Our own pid is alive but started at another time than the file says: not ours.
    await writeFile(file, JSON.stringify({ pid: process.pid, startTime: 1, command: "x", stoppedAs: null }));
    const backend = new ProcessBackend(backendOptions(captureLog().log, fx.dir));
    const ref = await backend.resolve(spec);
    assert.equal(await backend.state(ref), "off");
    assert.ok(!existsSync(file));
    await writeFile(file, "garbage");
    const again = new ProcessBackend(backendOptions(captureLog().log, fx.dir));
    assert.equal(await again.state(await again.resolve(spec)), "off");
    await backend.close();
    await again.close();
  });
});
