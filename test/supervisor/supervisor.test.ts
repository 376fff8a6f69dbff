/**
 * The process supervisor with real processes (sleep, sh scripts): process
 * groups, output, grace periods on an injected clock, pid files, adoption and
 * the identity policy. Every process is killed by its group in `after`.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ManualClock, systemClock, type Clock } from "../../src/clock/index.js";
import {
  PidFile,
  ProcessSupervisor,
  SupervisorError,
  isRecordedProcess,
  parsePidFile,
  readProcess,
  type SupervisedProcess,
} from "../../src/supervisor/index.js";
import { alive, childPids, waitFor } from "../support/index.js";

const pids: number[] = [];
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "jitsu-supervisor-"));
});

after(async () => {
  for (const pid of pids) {
    for (const target of [-pid, pid]) {
      try {
        process.kill(target, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
/** A pid file in a folder of its own (made here, as a backend's state dir would be). */
function pidFile(): PidFile {
  const file = new PidFile(join(dir, `p${files++}`, "vm.json"));
  mkdirSync(dirname(file.path), { recursive: true });
  return file;
}

async function spawn(
  argv: [string, ...string[]],
  clock: Clock = systemClock,
  lines?: { out: string[]; err: string[] },
): Promise<SupervisedProcess> {
  const proc = await new ProcessSupervisor({ clock }).spawn({
    argv,
    ...(lines === undefined
      ? {}
      : { onStdout: (l: string) => lines.out.push(l), onStderr: (l: string) => lines.err.push(l) }),
  });
  pids.push(proc.pid);
  return proc;
}

/** /proc/PID/stat field 5: the process group. */
function groupOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
}

/** Tracks a promise's outcome without awaiting it. */
function watchOutcome<T>(p: Promise<T>): { settled: boolean; value: T | undefined } {
  const o: { settled: boolean; value: T | undefined } = { settled: false, value: undefined };
  void p.then((v) => {
    o.settled = true;
    o.value = v;
  });
  return o;
}

const realMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("ProcessSupervisor.spawn", () => {
  it("runs the command as the leader of its own process group, and knows its start time and command line", async () => {
    const proc = await spawn(["sleep", "600"]);
    assert.equal(groupOf(proc.pid), proc.pid);
    assert.notEqual(groupOf(proc.pid), groupOf(process.pid));
    const now = await readProcess(proc.pid);
    assert.equal(proc.startTime, now?.startTime);
    assert.deepEqual(now?.cmdline, ["sleep", "600"]);
    assert.equal(proc.isChild, true);
    assert.equal(await proc.isRunning(), true);
    assert.equal(await proc.kill(5000), true);
    assert.deepEqual(await proc.exited, { code: null, signal: "SIGKILL" });
    assert.equal(await proc.isRunning(), false);
  });

  it("signals the whole group: a grandchild dies with its parent", async () => {
    const lines = { out: [] as string[], err: [] as string[] };
    const proc = await spawn(["sh", "-c", "sleep 600 & echo $!; wait"], systemClock, lines);
    await waitFor(() => lines.out.length > 0, 5000, "the grandchild's pid");
    const grandchild = Number(lines.out[0]);
    pids.push(grandchild);
    assert.ok(alive(grandchild));
    assert.equal(proc.signal("SIGKILL"), true);
    await proc.exited;
    await waitFor(() => !alive(grandchild), 5000, "the grandchild to die");
  });

  it("hands over stdout and stderr line by line and keeps the last stderr lines", async () => {
    const lines = { out: [] as string[], err: [] as string[] };
    const proc = await spawn(
      ["sh", "-c", "echo out; for i in 1 2 3 4 5 6 7; do echo err$i >&2; done; exit 3"],
      systemClock,
      lines,
    );
    assert.deepEqual(await proc.exited, { code: 3, signal: null });
    await proc.drained;
    assert.deepEqual(lines.out, ["out"]);
    assert.deepEqual(lines.err, ["err1", "err2", "err3", "err4", "err5", "err6", "err7"]);
    assert.deepEqual(proc.stderrTail, ["err3", "err4", "err5", "err6", "err7"]);
  });

  it("a command that cannot run is a SupervisorError with the system's code", async () => {
    const err = await new ProcessSupervisor({ clock: systemClock })
      .spawn({ argv: ["/nonexistent/jitsu-no-such-command"] })
      .catch((e: unknown) => e);
    assert.ok(err instanceof SupervisorError);
    assert.equal(err.message, "cannot run '/nonexistent/jitsu-no-such-command'");
    assert.match(err.detail, /^ENOENT: /);
  });

  it("gives the command the file descriptors it is handed, as fd 3", async () => {
    const path = join(dir, "fd3.txt");
    await writeFile(path, "from fd 3\n");
    const { open } = await import("node:fs/promises");
    const file = await open(path, "r");
    const lines = { out: [] as string[], err: [] as string[] };
    try {
      const proc = await new ProcessSupervisor({ clock: systemClock }).spawn({
        argv: ["sh", "-c", "cat <&3"],
        fds: [file.fd],
        onStdout: (l) => lines.out.push(l),
      });
      pids.push(proc.pid);
      assert.deepEqual(await proc.exited, { code: 0, signal: null });
      await proc.drained;
    } finally {
      await file.close();
    }
    assert.deepEqual(lines.out, ["from fd 3"]);
  });
});

describe("SupervisedProcess: waits and grace periods on the injected clock", () => {
  // Ignored signals stay ignored across exec: `sleep` inherits the trap.
  const IGNORES_TERM: [string, ...string[]] = ["sh", "-c", "trap '' TERM; echo ready; exec sleep 600"];

  it("terminate: SIGKILL only when the clock says the grace is over", async () => {
    const clock = new ManualClock();
    const lines = { out: [] as string[], err: [] as string[] };
    const proc = await spawn(IGNORES_TERM, clock, lines);
    await waitFor(() => lines.out.includes("ready"), 5000, "the trap to be set");
    const done = watchOutcome(proc.terminate({ graceMs: 10_000 }));
    await realMs(300);
    assert.equal(done.settled, false, "real time does not end the grace");
    assert.ok(alive(proc.pid), "SIGTERM was ignored");
    await clock.advance(9_999);
    assert.equal(done.settled, false);
    await clock.advance(1);
    await waitFor(() => done.settled, 5000, "terminate to settle");
    assert.equal(done.value, false, "it did not end within the grace");
    assert.deepEqual(proc.exit, { code: null, signal: "SIGKILL" });
  });

  it("terminate: a process that honours SIGTERM ends within the grace, the clock never moving", async () => {
    const clock = new ManualClock();
    const proc = await spawn(["sleep", "600"], clock);
    assert.equal(await proc.terminate({ graceMs: 10_000 }), true);
    assert.deepEqual(proc.exit, { code: null, signal: "SIGTERM" });
    assert.equal(clock.pendingTimers(), 0, "the grace timer is cancelled");
  });

  it("terminate with wake: a stopped process gets SIGCONT, so SIGTERM reaches it", async () => {
    const clock = new ManualClock();
    const proc = await spawn(["sleep", "600"], clock);
    proc.signal("SIGSTOP");
    await waitFor(() => readFileSync(`/proc/${proc.pid}/stat`, "utf8").includes(") T "), 5000, "it to stop");
    assert.equal(await proc.terminate({ graceMs: 10_000, wake: true }), true);
    assert.deepEqual(proc.exit, { code: null, signal: "SIGTERM" });
  });

  it("waitExit: false when the clock passes the bound first, true once it has exited", async () => {
    const clock = new ManualClock();
    const proc = await spawn(["sleep", "600"], clock);
    const first = watchOutcome(proc.waitExit(1000));
    await realMs(100);
    assert.equal(first.settled, false);
    await clock.advance(1000);
    await waitFor(() => first.settled, 5000, "waitExit to settle");
    assert.equal(first.value, false);
    proc.signal("SIGKILL");
    assert.equal(await proc.waitExit(1000), true);
    assert.equal(await proc.waitExit(), true, "and at once after");
  });
});

/** This boot's id, read here as the kernel gives it. */
const BOOT_ID = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();

describe("pid files and adoption", () => {
  it("a pid file records pid, start time, boot id, command line and the owner's fields, and goes when the process exits", async () => {
    const file = pidFile();
    const proc = await spawn(["sleep", "600"]);
    proc.writePidFile(file, { command: "sleep 600", stoppedAs: null });
    const json = JSON.parse(await readFile(file.path, "utf8")) as Record<string, unknown>;
    assert.deepEqual(json, {
      pid: proc.pid,
      startTime: proc.startTime,
      bootId: BOOT_ID,
      cmdline: ["sleep", "600"],
      command: "sleep 600",
      stoppedAs: null,
    });
    await proc.kill();
    assert.equal(await file.read(), null, "removed on exit");
  });

  it("the exit of a process leaves a pid file that names another pid alone", async () => {
    const file = pidFile();
    const first = await spawn(["sleep", "600"]);
    first.writePidFile(file);
    const second = await spawn(["sleep", "600"]);
    second.writePidFile(file);
    await first.kill();
    assert.equal((await file.read())?.pid, second.pid);
    await second.kill();
    assert.equal(await file.read(), null);
  });

  it("adopts a process an earlier supervisor left running, and notices its end on the clock", async () => {
    const file = pidFile();
    const earlier = await spawn(["sleep", "600"]);
    earlier.writePidFile(file, { command: "sleep 600" });

    const clock = new ManualClock();
    const found = await new ProcessSupervisor({ clock }).adopt(file);
    assert.ok(found !== null);
    const adopted = found.process;
    assert.equal(adopted.pid, earlier.pid);
    assert.equal(adopted.isChild, false);
    // Not stopped: sleeping, or still running on its way into sleep on a busy machine.
    assert.match(found.state, /^[RS]$/);
    assert.deepEqual(found.record.extra, { command: "sleep 600" });
    assert.equal(await adopted.isRunning(), true);

    adopted.watch(1000);
    const gone = watchOutcome(adopted.exited);
    process.kill(earlier.pid, "SIGKILL");
    await earlier.exited;
    await realMs(200);
    assert.equal(gone.settled, false, "looked for on the clock's ticks, not in real time");
    await clock.advance(1000);
    await waitFor(() => gone.settled, 5000, "the end to be noticed");
    assert.deepEqual(gone.value, { code: null, signal: null }, "not our child: no exit status");
  });

  it("an adopted process is signalled by its group and waited for by polling /proc", async () => {
    const file = pidFile();
    const earlier = await spawn(["sleep", "600"]);
    earlier.writePidFile(file);
    const found = await new ProcessSupervisor({ clock: systemClock }).adopt(file);
    assert.ok(found !== null);
    assert.equal(await found.process.terminate({ graceMs: 5000 }), true);
    assert.equal(alive(earlier.pid), false);
    assert.equal(await file.read(), null);
  });

  it("does not adopt a pid now used by another process (same command, another start time)", async () => {
    const a = await spawn(["sleep", "600"]);
    await realMs(50); // start times count clock ticks (10 ms): two spawns in a row may share one
    const b = await spawn(["sleep", "600"]);
    assert.notEqual(a.startTime, b.startTime);
    const file = pidFile();
    // a's record, but a is gone and its pid now belongs to b.
    file.write({ pid: b.pid, startTime: a.startTime, bootId: BOOT_ID, cmdline: ["sleep", "600"], extra: {} });
    assert.equal(await new ProcessSupervisor({ clock: systemClock }).adopt(file), null);
    assert.equal(await file.read(), null, "the stale pid file is removed");
    assert.ok(alive(b.pid), "and the other process is left alone");
  });

  it("does not adopt a pid whose start time matches but whose boot id does not (a process of another boot)", async () => {
    const proc = await spawn(["sleep", "600"]);
    const file = pidFile();
    const otherBoot = "00000000-0000-4000-8000-000000000000";
    assert.notEqual(otherBoot, BOOT_ID);
    file.write({
      pid: proc.pid,
      startTime: proc.startTime,
      bootId: otherBoot,
      cmdline: ["sleep", "600"],
      extra: {},
    });
    assert.equal(await new ProcessSupervisor({ clock: systemClock }).adopt(file), null);
    assert.equal(await file.read(), null, "the stale pid file is removed");
    assert.ok(alive(proc.pid), "and the process is left alone");

    file.write({
      pid: proc.pid,
      startTime: proc.startTime,
      bootId: BOOT_ID,
      cmdline: ["sleep", "600"],
      extra: {},
    });
    assert.equal((await new ProcessSupervisor({ clock: systemClock }).adopt(file))?.process.pid, proc.pid);
  });

  it("adopts a process whose command line changed after its pid file was written (a wrapper that execs)", async () => {
    const proc = await spawn(["sh", "-c", "sleep 0.2; exec sleep 600"]);
    const file = pidFile();
    proc.writePidFile(file);
    assert.deepEqual((await file.read())?.cmdline, ["sh", "-c", "sleep 0.2; exec sleep 600"]);
    await waitFor(
      () => readFileSync(`/proc/${proc.pid}/cmdline`, "utf8").startsWith("sleep\0"),
      5000,
      "the exec",
    );
    const found = await new ProcessSupervisor({ clock: systemClock }).adopt(file);
    assert.equal(found?.process.pid, proc.pid);
    assert.equal(await found?.process.isRunning(), true);
    assert.equal((await file.read())?.pid, proc.pid, "the pid file is kept");
  });

  it("does not adopt a pid that is gone, nor when the owner's expect says no", async () => {
    const gone = await spawn(["sleep", "600"]);
    const goneFile = pidFile();
    gone.writePidFile(goneFile);
    const record = (await goneFile.read())!;
    await gone.kill();
    goneFile.write(record);
    const supervisor = new ProcessSupervisor({ clock: systemClock });
    assert.equal(await supervisor.adopt(goneFile), null);

    const proc = await spawn(["sleep", "600"]);
    const file = pidFile();
    proc.writePidFile(file, { command: "sleep 600" });
    assert.equal(await supervisor.adopt(file, { expect: (r) => r.extra["command"] === "sleep 7" }), null);
    assert.equal(await file.read(), null);
  });

  it("records the command line as it runs when the pid file is written again (after an exec)", async () => {
    const proc = await spawn(["sh", "-c", "sleep 0.2; exec sleep 600"]);
    const file = pidFile();
    proc.writePidFile(file);
    assert.equal((await file.read())?.cmdline?.[0], "sh");
    await waitFor(
      () => readFileSync(`/proc/${proc.pid}/cmdline`, "utf8").startsWith("sleep"),
      5000,
      "the exec",
    );
    proc.writePidFile(file);
    assert.deepEqual((await file.read())?.cmdline, ["sleep", "600"]);
    const found = await new ProcessSupervisor({ clock: systemClock }).adopt(file);
    assert.equal(found?.process.pid, proc.pid);
  });
});

describe("pid files written before the supervisor", () => {
  it("the process backend's JSON (no cmdline, no bootId) is judged by its start time, then rewritten", async () => {
    const proc = await spawn(["sleep", "600"]);
    const file = pidFile();
    const legacy = { pid: proc.pid, startTime: proc.startTime, command: "sleep 600", stoppedAs: "paused" };
    await writeFile(file.path, JSON.stringify(legacy));
    const found = await new ProcessSupervisor({ clock: systemClock }).adopt(file);
    assert.equal(found?.process.pid, proc.pid);
    assert.deepEqual(found?.record.extra, { command: "sleep 600", stoppedAs: "paused" });
    assert.deepEqual(JSON.parse(await readFile(file.path, "utf8")), {
      ...legacy,
      bootId: BOOT_ID,
      cmdline: ["sleep", "600"],
    });

    await writeFile(file.path, JSON.stringify({ ...legacy, startTime: "1" }));
    assert.equal(await new ProcessSupervisor({ clock: systemClock }).adopt(file), null, "a reused pid");
  });

  it("a bare pid (QEMU's -pidfile) is adopted only when the owner's expect accepts its command line", async () => {
    const proc = await spawn(["sleep", "600"]);
    const ours = pidFile();
    const program = pidFile();
    await writeFile(program.path, `${proc.pid}\n`);
    const supervisor = new ProcessSupervisor({ clock: systemClock });
    assert.equal(await supervisor.adopt(program), null, "a bare pid alone proves nothing");
    await writeFile(program.path, `${proc.pid}\n`);
    assert.equal(
      await supervisor.adopt(ours, { programPidFile: program, expect: (_r, now) => now.cmdline[1] === "7" }),
      null,
    );
    const found = await supervisor.adopt(ours, {
      programPidFile: program,
      expect: (_r, now) => now.cmdline[0] === "sleep",
    });
    assert.equal(found?.process.pid, proc.pid);
    const written = await ours.read();
    assert.deepEqual(written, {
      pid: proc.pid,
      startTime: proc.startTime,
      bootId: BOOT_ID,
      cmdline: ["sleep", "600"],
      extra: {},
    });
  });

  it("a file with the command line but no boot id is judged by its start time alone, then rewritten", async () => {
    const proc = await spawn(["sleep", "600"]);
    const file = pidFile();
    const older = { pid: proc.pid, startTime: proc.startTime, cmdline: ["sleep", "601"], command: "c" };
    await writeFile(file.path, JSON.stringify(older));
    const found = await new ProcessSupervisor({ clock: systemClock }).adopt(file);
    assert.equal(found?.process.pid, proc.pid, "a command line that differs does not matter");
    assert.deepEqual(await file.read(), {
      pid: proc.pid,
      startTime: proc.startTime,
      bootId: BOOT_ID,
      cmdline: ["sleep", "600"],
      extra: { command: "c" },
    });

    await writeFile(file.path, JSON.stringify({ ...older, startTime: "1" }));
    assert.equal(await new ProcessSupervisor({ clock: systemClock }).adopt(file), null, "a reused pid");
  });
});

describe("isRecordedProcess and parsePidFile", () => {
  const now = { state: "S", startTime: "100", cmdline: ["qemu", "-pidfile", "/x"], bootId: "b1" };
  const rec = (startTime: string | null, bootId: string | null, cmdline: string[] | null = ["other"]) => ({
    pid: 42,
    startTime,
    bootId,
    cmdline,
    extra: {},
  });

  it("start time and boot id must match, the command line need not; a missing boot id is not checked", () => {
    assert.equal(isRecordedProcess(rec("100", "b1"), now), true);
    assert.equal(isRecordedProcess(rec("100", "b1", null), now), true);
    assert.equal(isRecordedProcess(rec("101", "b1"), now), false);
    assert.equal(isRecordedProcess(rec("100", "b2"), now), false);
    assert.equal(isRecordedProcess(rec("100", "b1"), { ...now, bootId: null }), false);
    assert.equal(isRecordedProcess(rec("100", null), now), true);
    assert.equal(isRecordedProcess(rec("101", null), now), false);
    assert.equal(isRecordedProcess(rec("100", "b1"), null), false);
  });

  it("a bare pid only by the owner's expect, which has its say in every case", () => {
    assert.equal(isRecordedProcess(rec(null, null, null), now), false);
    assert.equal(
      isRecordedProcess(rec(null, null, null), now, () => true),
      true,
    );
    assert.equal(
      isRecordedProcess(rec("100", "b1"), now, () => false),
      false,
    );
    assert.equal(
      isRecordedProcess(rec("100", "b2"), now, () => true),
      false,
    );
  });

  it("reads the current format, the older JSON and a bare pid; anything else is not a pid file", () => {
    assert.deepEqual(parsePidFile('{"pid":7,"startTime":"9","bootId":"b","cmdline":["a"],"x":1}'), {
      pid: 7,
      startTime: "9",
      bootId: "b",
      cmdline: ["a"],
      extra: { x: 1 },
    });
    assert.deepEqual(parsePidFile('{"pid":7,"startTime":"9","cmdline":["a"]}'), {
      pid: 7,
      startTime: "9",
      bootId: null,
      cmdline: ["a"],
      extra: {},
    });
    assert.deepEqual(parsePidFile('{"pid":7,"startTime":"9","command":"a"}'), {
      pid: 7,
      startTime: "9",
      bootId: null,
      cmdline: null,
      extra: { command: "a" },
    });
    assert.deepEqual(parsePidFile("1234\n"), {
      pid: 1234,
      startTime: null,
      bootId: null,
      cmdline: null,
      extra: {},
    });
    for (const bad of ["", "garbage", "[1]", '{"pid":"7"}', '{"pid":1}', "-5", "12 34"]) {
      assert.equal(parsePidFile(bad), null, bad);
    }
  });
});

describe("ProcessSupervisor with prestart (a spawn gate)", () => {
  /** A supervisor whose gate waits; closed by the test. */
  async function gated(): Promise<ProcessSupervisor> {
    // The gate an earlier test closed may still be on its way out (its shell not yet scheduled on
    // a loaded machine): a test takes the first gate it finds as its own.
    await waitFor(() => gatePids().length === 0, 5_000, "the gates of earlier tests to end");
    const supervisor = new ProcessSupervisor({ clock: systemClock, prestart: true });
    await supervisor.prestart();
    return supervisor;
  }

  /** The pid of the shell waiting as the gate (a child of ours running the gate script). */
  function gatePids(): number[] {
    return childPids(process.pid).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("read -r line <&3");
      } catch {
        return false;
      }
    });
  }

  it("runs the command in the waiting shell's process: same pid and start time, its argv, env, cwd, output and exit status", async () => {
    const supervisor = await gated();
    const [gatePid] = gatePids();
    assert.ok(gatePid !== undefined, "a gate waits after prestart()");
    const cwd = join(dir, "gate-cwd");
    mkdirSync(cwd, { recursive: true });
    const lines = { out: [] as string[], err: [] as string[] };
    const env: NodeJS.ProcessEnv = { ...process.env, JITSU_GATE_TEST: 'it\'s "quoted" $HOME `x`' };
    delete env["JITSU_GATE_ABSENT"];
    const proc = await supervisor.spawn({
      argv: [
        "sh",
        "-c",
        'echo "$JITSU_GATE_TEST"; pwd; echo "${JITSU_GATE_ABSENT-unset}" >&2; exit 3',
        "x y",
      ],
      cwd,
      env,
      onStdout: (l) => lines.out.push(l),
      onStderr: (l) => lines.err.push(l),
    });
    pids.push(proc.pid);
    assert.equal(proc.pid, gatePid, "the gate's process became the command");
    assert.ok(proc.isChild);
    const exit = await proc.exited;
    await proc.drained;
    assert.deepEqual(exit, { code: 3, signal: null });
    assert.deepEqual(lines.out, [`it's "quoted" $HOME \`x\``, cwd]);
    assert.deepEqual(lines.err, ["unset"]);
    // The next gate is forked after the spawn.
    await waitFor(() => gatePids().length === 1, 5_000, "the next gate");
    supervisor.close();
    await waitFor(() => gatePids().length === 0, 5_000, "the gate to end once closed");
  });

  it("a variable missing from the command's environment is unset; process group and signals as spawn gives them", async () => {
    process.env["JITSU_GATE_DROP"] = "1";
    const supervisor = await gated();
    delete process.env["JITSU_GATE_DROP"];
    const env = { ...process.env };
    const lines = { out: [] as string[], err: [] as string[] };
    const proc = await supervisor.spawn({
      argv: ["sh", "-c", 'echo "${JITSU_GATE_DROP-gone}"; sleep 600 & wait'],
      env,
      onStdout: (l) => lines.out.push(l),
    });
    pids.push(proc.pid);
    await waitFor(() => lines.out.length === 1, 5_000, "its first line");
    assert.deepEqual(lines.out, ["gone"]);
    assert.equal((await readProcess(proc.pid))?.cmdline[0], "sh");
    const stat = readFileSync(`/proc/${proc.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    assert.equal(Number(fields[2]), proc.pid, "it leads its own process group");
    assert.equal(await proc.terminate({ graceMs: 5_000 }), true);
    supervisor.close();
  });

  it("starts one after another, through a gate each time it is back, and none upsets Node (the gate's fd 3 reset)", async () => {
    const supervisor = await gated();
    let throughGate = 0;
    for (let i = 0; i < 8; i++) {
      await supervisor.prestart();
      const [gatePid] = gatePids();
      const proc = await supervisor.spawn({ argv: ["sleep", "600"] });
      pids.push(proc.pid);
      if (proc.pid === gatePid) throughGate++;
      assert.equal(await proc.kill(5_000), true);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(throughGate, 8);
    supervisor.close();
  });

  it("an exec the shell cannot do (a #! interpreter that is missing) rejects as spawn does, with the shell's words", async () => {
    const supervisor = await gated();
    const script = join(dir, "bad-interpreter");
    await writeFile(script, "#!/nonexistent/jitsu-test-interpreter\n", { mode: 0o755 });
    const [gatePid] = gatePids();
    const err = await supervisor.spawn({ argv: [script] }).catch((e: unknown) => e);
    assert.ok(err instanceof SupervisorError, String(err));
    assert.equal(err.message, `cannot run '${script}'`);
    assert.match(err.detail, /not found|No such file/);
    assert.equal(alive(gatePid!), false, "it went through the gate");
    supervisor.close();
  });

  it("what the gate cannot run as spawn would goes to spawn: a missing program or directory keeps spawn's error", async () => {
    const supervisor = await gated();
    const err = await supervisor
      .spawn({ argv: ["/nonexistent/jitsu-no-such-command"] })
      .catch((e: unknown) => e);
    assert.ok(err instanceof SupervisorError);
    assert.match(err.detail, /^ENOENT: /);
    assert.equal(gatePids().length, 1, "the gate still waits for a command it can run");
    const missingDir = await supervisor
      .spawn({ argv: ["true"], cwd: join(dir, "no-such-dir") })
      .catch((e: unknown) => e);
    assert.ok(missingDir instanceof SupervisorError);
    supervisor.close();
    await waitFor(() => gatePids().length === 0, 5_000, "the gate to end once closed");
  });
});
