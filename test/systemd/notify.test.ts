/**
 * jitsu under a notify socket, as systemd runs it: the built CLI with
 * NOTIFY_SOCKET pointing at a unix datagram socket that a small python3 reader
 * binds (with SO_PASSCRED, as systemd does, so each message's sender PID is
 * seen). READY=1 once DNS answers, STATUS= with the VM counts as they change,
 * WATCHDOG=1 every WATCHDOG_USEC/2 (none when WATCHDOG_PID names another
 * process), RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 at SIGTERM; the VMs
 * do not inherit the variables; without NOTIFY_SOCKET the addon is not even
 * loaded. Socket activation through systemd-socket-activate (UDP, then TCP).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import {
  CLI,
  dig,
  freePort,
  killVmGroups,
  localArgs,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";
import { getMetrics } from "../support/http.js";

const READER = `
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print(json.dumps({"ready": True}), flush=True)
while True:
    msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iii", data[:12])[0]
    print(json.dumps({"pid": pid, "text": msg.decode()}), flush=True)
`;

interface Note {
  pid: number;
  fields: Record<string, string>;
}

async function startReader(path: string, script: string): Promise<{ proc: ChildProcess; notes: Note[] }> {
  const proc = spawn("python3", [script, path], { stdio: ["ignore", "pipe", "inherit"] });
  const notes: Note[] = [];
  const lines = createInterface({ input: proc.stdout! });
  await new Promise<void>((resolve, reject) => {
    proc.once("error", reject);
    lines.on("line", (line) => {
      const m = JSON.parse(line) as { ready?: true; pid?: number; text?: string };
      if (m.ready === true) return resolve();
      const fields: Record<string, string> = {};
      for (const f of m.text!.split("\n")) fields[f.slice(0, f.indexOf("="))] = f.slice(f.indexOf("=") + 1);
      notes.push({ pid: m.pid!, fields });
    });
  });
  return { proc, notes };
}

describe("systemd notify, watchdog, reload and socket activation (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let readerScript: string;
  const readers: ChildProcess[] = [];
  const clis: CliProcess[] = [];

  before(async () => {
    dir = await tempDir("jitsu-notify-");
    readerScript = join(dir.path, "reader.py");
    await writeFile(readerScript, READER);
  });
  after(async () => {
    for (const cli of clis) {
      await cli.stop("SIGKILL");
      killVmGroups(cli.output());
    }
    for (const r of readers) r.kill();
    await dir.remove();
  });

  it("READY=1, STATUS= as VMs change, WATCHDOG=1, RELOADING=1 on SIGHUP, STOPPING=1", async () => {
    const socket = join(dir.path, "notify.sock");
    const { proc, notes } = await startReader(socket, readerScript);
    readers.push(proc);
    const dns = await freePort();
    const envFile = join(dir.path, "vm-env");
    const file = join(dir.path, "jitsu.yaml");
    await writeFile(
      file,
      `vms:\n  - name: www\n    dns: www.jitsu.test\n    ip: 127.0.0.1\n    exec: sh -c 'env > ${envFile}; exec sleep 1000'\n`,
    );
    const cli = startCli([...localArgs(dns, dir.path), "--config", file], {
      NOTIFY_SOCKET: socket,
      WATCHDOG_USEC: "300000",
    });
    clis.push(cli);
    const pid = cli.child.pid!;
    await waitFor(() => notes.some((n) => n.fields.READY === "1"), 20_000, "READY=1");
    const ready = notes.find((n) => n.fields.READY === "1")!;
    // Sent by jitsu itself (NotifyAccess=main), after DNS listens.
    assert.equal(ready.pid, pid);
    assert.equal(ready.fields.MAINPID, String(pid));
    assert.equal(ready.fields.STATUS, `1 VM: 1 off; DNS on port ${dns}`);
    // (The log lines are written in batches: they may follow the datagram by a moment.)
    await cli.waitFor(/Starting server on 127\.0\.0\.1/, 5000);
    await cli.waitFor(/systemd: watchdog on, pinging every 150 ms/, 5000);

    // WATCHDOG=1 every 150 ms from the event loop.
    const pings = (): number => notes.filter((n) => n.fields.WATCHDOG === "1").length;
    const before = pings();
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(pings() - before >= 4, `only ${pings() - before} pings in 1 s`);

    // A summon changes the counts: STATUS= follows.
    assert.deepEqual(
      (await dig(dns, ["www.jitsu.test", "A"])).answers.map((a) => a.data),
      ["127.0.0.1"],
    );
    await waitFor(
      () => notes.some((n) => n.fields.STATUS === `1 VM: 1 ready; DNS on port ${dns}`),
      5000,
      "STATUS 1 ready",
    );
    // The VM did not inherit the notify socket or the watchdog.
    await waitFor(() => readFileSync(envFile, "utf8").includes("PATH="), 5000, "the VM's environment");
    const vmEnv = readFileSync(envFile, "utf8");
    for (const name of ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"])
      assert.ok(!vmEnv.includes(`${name}=`), name);

    // SIGHUP: RELOADING=1, then READY=1 again.
    const seen = notes.length;
    cli.child.kill("SIGHUP");
    await waitFor(
      () => notes.slice(seen).some((n) => n.fields.READY === "1"),
      10_000,
      "READY=1 after reload",
    );
    const after = notes.slice(seen).filter((n) => n.fields.WATCHDOG === undefined);
    assert.equal(after[0]!.fields.RELOADING, "1");
    assert.equal(after[1]!.fields.READY, "1");

    assert.equal(await cli.stop("SIGTERM"), 0);
    const stopping = notes.find((n) => n.fields.STOPPING === "1");
    assert.ok(stopping !== undefined, "no STOPPING=1");
    assert.equal(stopping.pid, pid);
    // STOPPING=1 came after every other status line.
    assert.ok(notes.slice(notes.indexOf(stopping) + 1).every((n) => n.fields.STATUS === undefined));
  });

  it("no watchdog when WATCHDOG_PID names another process; no addon without NOTIFY_SOCKET", async () => {
    const socket = join(dir.path, "notify2.sock");
    const { proc, notes } = await startReader(socket, readerScript);
    readers.push(proc);
    const dns = await freePort();
    const cli = startCli(localArgs(dns, dir.path), {
      NOTIFY_SOCKET: socket,
      WATCHDOG_USEC: "200000",
      WATCHDOG_PID: "1",
    });
    clis.push(cli);
    await waitFor(() => notes.some((n) => n.fields.READY === "1"), 20_000, "READY=1");
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(notes.filter((n) => n.fields.WATCHDOG !== undefined).length, 0);
    assert.match(readFileSync(`/proc/${cli.child.pid}/maps`, "utf8"), /jitsu_sd_notify\.node/);
    await cli.stop("SIGTERM");

    const plainPort = await freePort();
    const plain = startCli(localArgs(plainPort, dir.path), { NOTIFY_SOCKET: "", WATCHDOG_USEC: "200000" });
    clis.push(plain);
    await plain.waitFor(/Starting server on/);
    assert.doesNotMatch(readFileSync(`/proc/${plain.child.pid}/maps`, "utf8"), /jitsu_sd_notify\.node/);
    assert.doesNotMatch(plain.output(), /watchdog|systemd/);
    await plain.stop("SIGTERM");
  });

  for (const transport of ["udp", "tcp"] as const) {
    it(`socket activation: serves DNS on the ${transport.toUpperCase()} socket systemd-socket-activate passes, and counts the summon of its first query`, async () => {
      const port = await freePort();
      const http = await freePort();
      const args = [
        ...(transport === "udp" ? ["--datagram"] : []),
        "-l",
        `127.0.0.1:${port}`,
        "--fdname=dns",
        process.execPath,
        CLI,
        // -l 53 would need root: the passed socket is used instead.
        ...localArgs(53, dir.path),
        ...["--http", `127.0.0.1:${http}`],
        "dns=www.jitsu.test,ip=127.0.0.7,name=www,exec=sleep 1000",
      ];
      const child = spawn("systemd-socket-activate", args, { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
      const handle: CliProcess = {
        child,
        output: () => out,
        waitFor: () => Promise.resolve(),
        async stop(signal = "SIGTERM") {
          if (child.exitCode !== null) return child.exitCode;
          child.kill(signal);
          return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
        },
      };
      clis.push(handle);
      await waitFor(() => /Listening on/.test(out), 10_000, "systemd-socket-activate to listen");
      // The first query starts jitsu (systemd-socket-activate execs it on the first traffic) and waits in the socket.
      const res = await dig(port, ["www.jitsu.test", "A", ...(transport === "tcp" ? ["+tcp"] : [])]);
      assert.equal(res.status, "NOERROR", out);
      assert.deepEqual(
        res.answers.map((a) => a.data),
        ["127.0.0.7"],
      );
      assert.match(
        out,
        new RegExp(
          `Starting server on the sockets systemd passed \\(${transport.toUpperCase()} 127\\.0\\.0\\.1:${port}\\)`,
        ),
      );
      // The query that woke jitsu is read as soon as DNS serves: its summon is in the metrics.
      await waitFor(() => /Serving \/status/.test(out), 10_000, "jitsu to serve --http");
      const metrics = await getMetrics(http);
      assert.equal(metrics.get('jitsu_vm_summons_total{vm="www",result="ready"}'), 1, out);
      assert.equal(metrics.get('jitsu_vm_ready_duration_seconds_count{vm="www"}'), 1);
      assert.equal(await handle.stop("SIGTERM"), 0);
      killVmGroups(out);
    });
  }
});
