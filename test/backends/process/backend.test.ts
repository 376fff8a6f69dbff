import assert from "node:assert/strict";
import { readFile, readdir, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { BackendEvent, VmRef } from "../../../src/backends/contract.js";
import { ProcessBackend, processBackend, splitCommandLine } from "../../../src/backends/process/index.js";
import { BackendError, ConfigError } from "../../../src/errors/index.js";
import {
  backendOptions,
  captureLog,
  httpGet,
  killGroup,
  makeFixture,
  processSpec,
  type CapturedLog,
  type Fixture,
} from "./fixtures.js";
import { alive, freePort, waitFor } from "../../support/index.js";

describe("splitCommandLine", () => {
  it("splits on spaces and honours quotes and backslashes", () => {
    assert.deepEqual(splitCommandLine("node  server.js 8080"), ["node", "server.js", "8080"]);
    assert.deepEqual(splitCommandLine(`echo 'a b' "c \\"d\\"" e\\ f ''`), [
      "echo",
      "a b",
      'c "d"',
      "e f",
      "",
    ]);
    assert.throws(() => splitCommandLine("echo 'oops"), /unterminated ' quote/);
    assert.throws(() => splitCommandLine('echo "oops'), /unterminated " quote/);
    assert.throws(() => splitCommandLine("   "), /empty/);
  });
});

describe("process backend (real processes)", () => {
  let fx: Fixture;
  const backends: ProcessBackend[] = [];
  const refs: [ProcessBackend, VmRef][] = [];

  before(async () => {
    fx = await makeFixture();
  });

  after(async () => {
    for (const [b, ref] of refs) killGroup(b.pid(ref));
    for (const b of backends) await b.close();
    await fx.remove();
  });

  let stateDirs = 0;
  async function make(
    pairs: [string, string][],
    captured: CapturedLog = captureLog(),
    stateDir = join(fx.dir, `state-${stateDirs++}`),
  ): Promise<{ backend: ProcessBackend; vm: VmRef; events: BackendEvent[] }> {
    const backend = processBackend.create(backendOptions(captured.log, stateDir)) as ProcessBackend;
    backends.push(backend);
    const vm = await backend.resolve(processSpec([["dns", "web.example.org"], ["ip", "10.0.0.1"], ...pairs]));
    refs.push([backend, vm]);
    const events: BackendEvent[] = [];
    backend.onEvent((e) => events.push(e));
    return { backend, vm, events };
  }

  it("describes itself for --help and validation", () => {
    assert.equal(processBackend.name, "process");
    assert.equal(processBackend.capabilities.optional.has("addresses"), false);
    assert.deepEqual([...processBackend.capabilities.stopModes].sort(), [
      "destroy",
      "pause",
      "shutdown",
      "suspend",
    ]);
    assert.ok(processBackend.keys.find((k) => k.key === "exec")?.required);
    assert.throws(
      () =>
        processSpec([
          ["dns", "web.example.org"],
          ["ip", "10.0.0.1"],
        ]),
      (err: unknown) => err instanceof ConfigError && err.key === "exec",
    );
  });

  it("starts a command in its own group, logs its output, pauses, unpauses and destroys it", async () => {
    const port = await freePort();
    const captured = captureLog();
    const { backend, vm, events } = await make(
      [
        ["name", "web"],
        ["exec", `${process.execPath} ${fx.server} ${port}`],
        ["env", "GREETING=hi=there"],
        ["cwd", fx.dir],
      ],
      captured,
    );
    assert.equal(await backend.state(vm), "off");
    await backend.start(vm);
    assert.equal(await backend.state(vm), "running");
    await waitFor(async () => (await httpGet(port)) !== null, 10_000, "the server to answer");
    assert.equal(await httpGet(port), "hello from web hi=there");
    await waitFor(() => captured.lines.some((l) => l.msg === `listening on ${port}`), 5000, "the log line");
    const line = captured.lines.find((l) => l.msg === `listening on ${port}`)!;
    assert.equal(line.vm, "web");
    assert.equal(line.stream, "stdout");
    assert.equal(line.level, 30);

    await backend.stop(vm, "pause");
    assert.equal(await backend.state(vm), "paused");
    assert.equal(await httpGet(port, 300), null, "a paused server does not answer");
    await backend.unpause(vm);
    assert.equal(await backend.state(vm), "running");
    assert.match((await httpGet(port, 5000)) ?? "", /hello from web/);

    await backend.stop(vm, "suspend");
    // Stopped in memory (SIGSTOP), as pause: "suspended" is for VMs saved out of memory.
    assert.equal(await backend.state(vm), "paused");
    await backend.resume(vm);
    assert.match((await httpGet(port, 5000)) ?? "", /hello from web/);

    const pid = backend.pid(vm)!;
    await backend.stop(vm, "destroy");
    assert.equal(await backend.state(vm), "off");
    assert.equal(alive(pid), false);
    assert.equal(await httpGet(port, 300), null);
    assert.deepEqual(events, [], "stops we asked for are not reported as events");
  });

  it("shuts down with SIGTERM, which the process honours", async () => {
    const port = await freePort();
    const captured = captureLog();
    const { backend, vm } = await make([["exec", `${process.execPath} ${fx.server} ${port}`]], captured);
    await backend.start(vm);
    await waitFor(async () => (await httpGet(port)) !== null, 10_000, "the server to answer");
    const began = Date.now();
    await backend.stop(vm, "shutdown");
    assert.ok(Date.now() - began < 5000, "well within the 10 s grace");
    assert.equal(await backend.state(vm), "off");
    await waitFor(() => captured.lines.some((l) => l.msg === "got SIGTERM"), 2000, "the SIGTERM line");
  });

  it("kills a process that ignores SIGTERM after the grace", async () => {
    const port = await freePort();
    const { backend, vm } = await make([
      ["exec", `${process.execPath} ${fx.server} ${port} ignore-term`],
      ["stop_grace", "0.5"],
    ]);
    await backend.start(vm);
    await waitFor(async () => (await httpGet(port)) !== null, 10_000, "the server to answer");
    const pid = backend.pid(vm)!;
    const began = Date.now();
    await backend.stop(vm, "shutdown");
    const took = Date.now() - began;
    assert.ok(took >= 450, `waited the grace before SIGKILL (${took} ms)`);
    assert.equal(alive(pid), false);
    assert.equal(await backend.state(vm), "off");
  });

  it("shuts down a paused process (SIGTERM is delivered once it runs again)", async () => {
    const port = await freePort();
    const { backend, vm } = await make([["exec", `${process.execPath} ${fx.server} ${port}`]]);
    await backend.start(vm);
    await waitFor(async () => (await httpGet(port)) !== null, 10_000, "the server to answer");
    await backend.stop(vm, "pause");
    const began = Date.now();
    await backend.stop(vm, "shutdown");
    assert.ok(Date.now() - began < 5000);
    assert.equal(await backend.state(vm), "off");
  });

  it("kills the whole process group on destroy", async () => {
    const captured = captureLog();
    const { backend, vm } = await make([["exec", `${process.execPath} ${fx.parent}`]], captured);
    await backend.start(vm);
    await waitFor(
      () => captured.lines.some((l) => l.msg.startsWith("grandchild ")),
      10_000,
      "the grandchild",
    );
    const grandchild = Number(captured.lines.find((l) => l.msg.startsWith("grandchild "))!.msg.split(" ")[1]);
    assert.ok(alive(grandchild));
    await backend.stop(vm, "destroy");
    await waitFor(() => !alive(grandchild), 5000, "the grandchild to die");
  });

  it("reports an exit it did not cause: off for code 0, crashed otherwise", async () => {
    const ok = await make([
      ["name", "ok"],
      ["exec", `${process.execPath} ${fx.exit} 0 100`],
    ]);
    const bad = await make([
      ["name", "bad"],
      ["exec", `${process.execPath} ${fx.exit} 3 100`],
    ]);
    await ok.backend.start(ok.vm);
    await bad.backend.start(bad.vm);
    await waitFor(() => ok.events.length > 0 && bad.events.length > 0, 10_000, "the exit events");
    assert.deepEqual(ok.events, [{ vm: ok.vm, state: "off", reason: "exited with code 0" }]);
    assert.deepEqual(bad.events, [{ vm: bad.vm, state: "crashed", reason: "exited with code 3" }]);
    assert.equal(await ok.backend.state(ok.vm), "off");
    assert.equal(await bad.backend.state(bad.vm), "crashed");
  });

  it("fails a command that does not exist with an error naming the VM and the command", async () => {
    const { backend, vm } = await make([
      ["name", "ghost"],
      ["exec", "/nonexistent/jitsu-no-such-command --flag"],
    ]);
    await assert.rejects(
      backend.start(vm),
      (err: unknown) =>
        err instanceof BackendError &&
        err.vm === "ghost" &&
        /process VM 'ghost': cannot run '\/nonexistent\/jitsu-no-such-command --flag' \(ENOENT/.test(
          err.message,
        ),
    );
    assert.equal(await backend.state(vm), "off");
  });

  it("rejects save, a bad env value and a missing working directory", async () => {
    const port = await freePort();
    const { backend, vm } = await make([["exec", `${process.execPath} ${fx.server} ${port}`]]);
    await backend.start(vm);
    await assert.rejects(backend.stop(vm, "save"), /cannot save a process/);
    await backend.stop(vm, "destroy");
    const b = processBackend.create(backendOptions(captureLog().log, fx.dir));
    await assert.rejects(
      b.resolve(
        processSpec([
          ["dns", "x.example.org"],
          ["ip", "10.0.0.1"],
          ["exec", "true"],
          ["env", "NOEQUALS"],
        ]),
      ),
      (err: unknown) => err instanceof ConfigError && err.key === "env",
    );
    const missing = await b.resolve(
      processSpec([
        ["dns", "y.example.org"],
        ["ip", "10.0.0.1"],
        ["exec", "true"],
        ["cwd", "/nonexistent/dir"],
      ]),
    );
    await assert.rejects(b.start(missing), /working directory '\/nonexistent\/dir' does not exist/);
    await b.close();
  });

  it("preflight: every VM's cwd, exec program and keys, and the pid-file folder, at once", async () => {
    const stateDir = join(fx.dir, "preflight-state");
    const b = processBackend.create(backendOptions(captureLog().log, stateDir));
    const vm = (name: string, ...pairs: [string, string][]) =>
      processSpec([["dns", `${name}.example.org`], ["ip", "10.0.0.1"], ["name", name], ...pairs]);
    const specs = [
      vm("ok", ["exec", `${process.execPath} server.cjs 0`], ["cwd", fx.dir]),
      vm("plain", ["exec", "./server.cjs"], ["cwd", fx.dir]),
      vm("web", ["exec", "jitsu-no-such-program --flag"], ["cwd", "/nonexistent/dir"]),
      vm("rel", ["exec", "./run.sh"], ["cwd", "/nonexistent/dir"]),
      vm("env-path", ["exec", "sleep 1"], ["env", "PATH=/nonexistent"]),
      vm("bad", ["exec", "sleep 'oops"], ["env", "NOEQUALS"]),
    ];
    // server.cjs is not executable: the one VM that runs it directly is refused.
    assert.deepEqual(
      (await b.preflight!(specs)).map((p) => p.message),
      [
        `VM 'plain', key 'exec': program '${join(fx.dir, "server.cjs")}' is not executable (chmod +x?)`,
        "VM 'web', key 'cwd': directory '/nonexistent/dir' does not exist",
        `VM 'web', key 'exec': program 'jitsu-no-such-program' is not on PATH (${process.env["PATH"]})`,
        // Its program would be looked for in the missing directory: one line, the directory's.
        "VM 'rel', key 'cwd': directory '/nonexistent/dir' does not exist",
        "VM 'env-path', key 'exec': program 'sleep' is not on PATH (/nonexistent)",
        "VM 'bad', key 'env': expected NAME=VALUE, got 'NOEQUALS'",
        "VM 'bad', key 'exec': unterminated ' quote in 'sleep 'oops'",
      ],
    );
    assert.deepEqual(await readdir(join(stateDir, "process")), []);
    assert.deepEqual(await b.preflight!(specs.slice(0, 1)), []);
  });

  it("adopts a process an earlier jitsu left running, through its pid file", async () => {
    const port = await freePort();
    const stateDir = join(fx.dir, "shared-state");
    const pairs: [string, string][] = [
      ["name", "kept"],
      ["exec", `${process.execPath} ${fx.server} ${port}`],
    ];
    const first = await make(pairs, captureLog(), stateDir);
    await first.backend.start(first.vm);
    await waitFor(async () => (await httpGet(port)) !== null, 10_000, "the server to answer");
    const pid = first.backend.pid(first.vm)!;
    const record = JSON.parse(await readFile(join(stateDir, "process", "kept.json"), "utf8")) as {
      pid: number;
    };
    assert.equal(record.pid, pid);
    await first.backend.close(); // kills nothing

    const captured = captureLog();
    const second = await make(pairs, captured, stateDir);
    assert.equal(await second.backend.state(second.vm), "running");
    assert.equal(second.backend.pid(second.vm), pid);
    assert.ok(captured.lines.some((l) => /left running by an earlier jitsu/.test(l.msg)));
    await second.backend.start(second.vm); // already running: no second copy
    assert.equal(second.backend.pid(second.vm), pid);
    await second.backend.stop(second.vm, "pause");
    await second.backend.close();

    const third = await make(pairs, captureLog(), stateDir);
    assert.equal(await third.backend.state(third.vm), "paused", "the stop mode is kept in the pid file");
    await third.backend.unpause(third.vm);
    assert.match((await httpGet(port, 5000)) ?? "", /hello from kept/);
    await third.backend.stop(third.vm, "shutdown");
    // In this test the process is still a child of ours (the first backend's), so it is reaped a moment later.
    await waitFor(() => !alive(pid), 5000, "the process to be gone");
    assert.equal(await third.backend.state(third.vm), "off");
    await assert.rejects(readFile(join(stateDir, "process", "kept.json")), /ENOENT/);
  });

  it("adopts a process whose wrapper exec'd after the pid file was written, instead of starting a second copy", async () => {
    const stateDir = join(fx.dir, "exec-state");
    const pairs: [string, string][] = [
      ["name", "wrapped"],
      ["exec", "sh -c 'sleep 0.2; exec sleep 600'"],
    ];
    const first = await make(pairs, captureLog(), stateDir);
    await first.backend.start(first.vm);
    const pid = first.backend.pid(first.vm)!;
    const file = join(stateDir, "process", "wrapped.json");
    const record = JSON.parse(await readFile(file, "utf8")) as { cmdline: string[] };
    assert.equal(record.cmdline[0], "sh", "the command line recorded is the wrapper's");
    await waitFor(
      async () => (await readFile(`/proc/${pid}/cmdline`, "utf8")).startsWith("sleep\0"),
      5000,
      "the wrapper to exec",
    );
    await first.backend.close(); // kills nothing

    const captured = captureLog();
    const second = await make(pairs, captured, stateDir);
    assert.equal(await second.backend.state(second.vm), "running");
    assert.equal(second.backend.pid(second.vm), pid);
    await second.backend.start(second.vm); // already running: no second copy
    assert.equal(second.backend.pid(second.vm), pid);
    assert.ok(captured.lines.some((l) => /left running by an earlier jitsu/.test(l.msg)));
    await second.backend.stop(second.vm, "destroy");
    await waitFor(() => !alive(pid), 5000, "the process to be gone");
  });

  it("after connect, adopts from the pid files listed then, labels with any characters included", async () => {
    const stateDir = join(fx.dir, "listed-state");
    const pairs: [string, string][] = [
      ["name", "odd name/with%chars"],
      ["exec", "sleep 600"],
    ];
    const first = await make(pairs, captureLog(), stateDir);
    await first.backend.start(first.vm);
    const pid = first.backend.pid(first.vm)!;
    await first.backend.close(); // kills nothing

    const captured = captureLog();
    const second = processBackend.create(backendOptions(captured.log, stateDir)) as ProcessBackend;
    backends.push(second);
    await second.connect();
    const vm = await second.resolve(processSpec([["dns", "web.example.org"], ["ip", "10.0.0.1"], ...pairs]));
    const other = await second.resolve(
      processSpec([
        ["dns", "other.example.org"],
        ["ip", "10.0.0.2"],
        ["name", "other"],
        ["exec", "sleep 600"],
      ]),
    );
    refs.push([second, vm], [second, other]);
    assert.equal(await second.state(vm), "running");
    assert.equal(second.pid(vm), pid);
    assert.equal(await second.state(other), "off");
    await second.stop(vm, "destroy");
    await waitFor(() => !alive(pid), 5000, "the process to be gone");
  });

  it("adopts from a pid file an older jitsu wrote (no cmdline, no bootId) by its start time, and rewrites it", async () => {
    const stateDir = join(fx.dir, "legacy-state");
    const pairs: [string, string][] = [
      ["name", "legacy"],
      ["exec", "sleep 600"],
    ];
    const first = await make(pairs, captureLog(), stateDir);
    await first.backend.start(first.vm);
    const pid = first.backend.pid(first.vm)!;
    await first.backend.close(); // kills nothing
    const file = join(stateDir, "process", "legacy.json");
    const { cmdline, bootId, ...older } = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    assert.deepEqual(cmdline, ["sleep", "600"]);
    assert.equal(typeof bootId, "string");
    await writeFile(file, JSON.stringify({ ...older, stoppedAs: "suspended" }));

    const second = await make(pairs, captureLog(), stateDir);
    assert.equal(second.backend.pid(second.vm), pid);
    assert.equal(await second.backend.state(second.vm), "paused");
    const rewritten = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    assert.equal(rewritten["stoppedAs"], "suspended", "the older file's fields are kept");
    assert.deepEqual(rewritten["cmdline"], ["sleep", "600"]);
    assert.equal(rewritten["bootId"], bootId);
    assert.equal(rewritten["startTime"], older["startTime"]);
    await second.backend.stop(second.vm, "destroy");
    await waitFor(() => !alive(pid), 5000, "the process to be gone");
  });

  it("ignores a stale pid file whose process is gone or is another process", async () => {
    const stateDir = join(fx.dir, "stale-state");
    await mkdir(join(stateDir, "process"), { recursive: true });
    const file = join(stateDir, "process", "stale.json");
    // Our own pid, with a start time that is not ours: a reused pid.
    await writeFile(
      file,
      JSON.stringify({ pid: process.pid, startTime: "1", command: "sleep 600", stoppedAs: null }),
    );
    const { backend, vm } = await make(
      [
        ["name", "stale"],
        ["exec", "sleep 600"],
      ],
      captureLog(),
      stateDir,
    );
    assert.equal(await backend.state(vm), "off");
    assert.equal(backend.pid(vm), undefined);
    await assert.rejects(readFile(file), /ENOENT/);
  });
});
