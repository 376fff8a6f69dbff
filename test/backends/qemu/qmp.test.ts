/**
 * The QMP client against a real QEMU with no machine (`-machine none`): it
 * starts in a moment and speaks the whole protocol.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { BackendError } from "../../../src/errors/index.js";
import { QmpClient, QmpError, type QmpEvent } from "../../../src/backends/qemu/index.js";
import { tempDir } from "../../support/index.js";

async function startBareQemu(
  dir: string,
): Promise<{ child: ChildProcess; socket: string; exited: Promise<void> }> {
  const socket = join(dir, "qmp.sock");
  const child = spawn(
    "qemu-system-x86_64",
    ["-machine", "none", "-nodefaults", "-display", "none", "-qmp", `unix:${socket},server=on,wait=off`],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("error", () => undefined);
  for (let i = 0; i < 3000 && !existsSync(socket); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(existsSync(socket), `QEMU made no QMP socket (is qemu-system-x86 installed?): ${stderr}`);
  return { child, socket, exited };
}

describe("QmpClient against a real QEMU", () => {
  let dir: { path: string; remove(): Promise<void> };
  let qemu: Awaited<ReturnType<typeof startBareQemu>>;
  let qmp: QmpClient;

  before(async () => {
    dir = await tempDir("jitsu-qmp-");
    qemu = await startBareQemu(dir.path);
    // QEMU binds the socket (the file appears) a moment before it listens: refused meanwhile,
    // as the backend itself allows for (it retries ENOENT and ECONNREFUSED).
    for (let attempt = 0; ; attempt++) {
      try {
        qmp = await QmpClient.connect(qemu.socket, { timeoutMs: 30_000 });
        break;
      } catch (err) {
        if (attempt >= 300 || !/ECONNREFUSED/.test(String(err))) throw err;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  });
  after(async () => {
    qmp?.close();
    if (qemu !== undefined && qemu.child.exitCode === null) {
      qemu.child.kill("SIGKILL");
      await qemu.exited;
    }
    await dir?.remove();
  });

  it("reads the greeting and runs commands after qmp_capabilities", async () => {
    assert.ok(qmp.greeting.version.qemu.major >= 7, JSON.stringify(qmp.greeting));
    const status = await qmp.execute<{ status: string; running: boolean }>("query-status");
    assert.equal(typeof status.status, "string");
    assert.equal(typeof status.running, "boolean");
  });

  it("matches concurrent commands to their replies by id", async () => {
    const [status, version, commands, name] = await Promise.all([
      qmp.execute<{ status: string }>("query-status"),
      qmp.execute<{ qemu: { major: number } }>("query-version"),
      qmp.execute<{ name: string }[]>("query-commands"),
      qmp.execute<{ name?: string }>("query-name"),
    ]);
    assert.equal(typeof status.status, "string");
    assert.equal(version.qemu.major, qmp.greeting.version.qemu.major);
    assert.ok(commands.some((c) => c.name === "migrate"));
    assert.deepEqual(name, {});
  });

  it("keeps QEMU's error class and description: unknown command -> CommandNotFound", async () => {
    const err = await qmp.execute("no-such-command").then(
      () => assert.fail("an unknown command succeeded"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof QmpError);
    assert.ok(err instanceof BackendError);
    assert.equal(err.errorClass, "CommandNotFound");
    assert.match(err.desc, /no-such-command/);
    assert.equal(err.code, "ERR_BACKEND");
    assert.match(
      err.message,
      /^qemu: QMP command 'no-such-command' failed \(CommandNotFound: .*no-such-command/,
    );
    // The connection survives an error reply.
    assert.equal((await qmp.execute<{ status: string }>("query-status")).status.length > 0, true);
  });

  it("reports a bad argument as GenericError with QEMU's text", async () => {
    const err = (await qmp.execute("query-status", { bogus: 1 }).catch((e: unknown) => e)) as QmpError;
    assert.ok(err instanceof QmpError, String(err));
    assert.equal(err.errorClass, "GenericError");
    assert.match(err.desc, /bogus/);
  });

  it("delivers events (STOP, RESUME) with their timestamps", async () => {
    const events: QmpEvent[] = [];
    const off = qmp.onEvent((e) => events.push(e));
    const stopped = qmp.waitForEvent("STOP", 10_000);
    await qmp.execute("stop");
    const stop = await stopped;
    assert.ok(Math.abs(stop.timestamp - Date.now() / 1000) < 60);
    const resumed = qmp.waitForEvent("RESUME", 10_000);
    await qmp.execute("cont");
    await resumed;
    off();
    assert.deepEqual(
      events.map((e) => e.event).filter((n) => n === "STOP" || n === "RESUME"),
      ["STOP", "RESUME"],
    );
  });

  it("when QEMU goes away: the pending command, new commands and new connections fail with clear errors", async () => {
    const closed = new Promise<string>((resolve) => qmp.onClose(resolve));
    // A frozen QEMU cannot answer, so the command is surely pending when QEMU dies.
    qemu.child.kill("SIGSTOP");
    const pending = qmp.execute("query-status");
    await new Promise((r) => setTimeout(r, 50));
    qemu.child.kill("SIGKILL");
    await assert.rejects(pending, (e: unknown) => {
      assert.ok(e instanceof BackendError);
      assert.match(e.message, /QMP socket .*qmp\.sock closed before the reply to 'query-status'/);
      return true;
    });
    await closed;
    await qemu.exited;
    assert.equal(qmp.closed, true);
    await assert.rejects(qmp.execute("query-status"), (e: unknown) => {
      assert.ok(e instanceof BackendError);
      assert.match(e.message, /cannot send 'query-status': QMP socket .*qmp\.sock is closed/);
      return true;
    });
    await assert.rejects(QmpClient.connect(qemu.socket, { timeoutMs: 2000 }), (e: unknown) => {
      assert.ok(e instanceof BackendError);
      assert.match(e.message, /cannot connect to the QMP socket .*qmp\.sock \((ENOENT|ECONNREFUSED)/);
      return true;
    });
  });

  it("a socket path with nothing behind it is a clear error", async () => {
    await assert.rejects(
      QmpClient.connect(join(dir.path, "missing.sock"), { timeoutMs: 2000 }),
      (e: unknown) => {
        assert.ok(e instanceof BackendError);
        assert.match(e.message, /^qemu: cannot connect to the QMP socket .*missing\.sock \(ENOENT/);
        return true;
      },
    );
  });
});
