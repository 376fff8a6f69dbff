/**
 * The built CLI with the process backend: each stop mode, the start timeout
 * with recovery, and malformed packets that must leave the server answering.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { describe, it } from "node:test";
import {
  DEMO_SERVICE,
  alive,
  dig,
  freePort,
  localArgs,
  sendRaw,
  startCli,
  tempDir,
} from "../support/index.js";
import { httpGet } from "../support/http.js";

async function processState(pid: number): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return "gone";
  }
}

/**
 * The process's state once SIGSTOP has taken effect, waiting up to 5 s: a
 * process stops when it next runs (the signal is pending until then, and it
 * runs no more of its own code), so on a loaded machine /proc may still say
 * R for a while after jitsu reported it paused.
 */
async function stoppedState(pid: number): Promise<string> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const state = await processState(pid);
    if (state === "T" || Date.now() > deadline) return state;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("stop modes through the CLI (e2e)", () => {
  // Each mode in its own jitsu, run side by side: query, wait for the idle stop, check the process, query again.
  const modes: { mode: string; after: (pid: number) => Promise<void> }[] = [
    { mode: "destroy", after: async (pid) => assert.equal(alive(pid), false) },
    { mode: "shutdown", after: async (pid) => assert.equal(alive(pid), false) },
    { mode: "pause", after: async (pid) => assert.equal(await stoppedState(pid), "T") },
    { mode: "suspend", after: async (pid) => assert.equal(await stoppedState(pid), "T") },
  ];
  for (const { mode, after } of modes) {
    it(`-m ${mode}: idle VM is stopped that way, and a query brings it back`, async (t) => {
      const dir = await tempDir();
      const dns = await freePort();
      const http = await freePort();
      const cli = startCli([
        ...localArgs(dns, dir.path),
        "-t",
        "1",
        "-m",
        mode,
        `dns=m.jitsu.test,ip=127.0.0.1,name=m-${mode},exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${http} ${mode} 0,ready=http://127.0.0.1:${http}/`,
      ]);
      t.after(async () => {
        await cli.stop();
        await dir.remove();
      });
      await cli.waitFor(/Starting server/);
      assert.equal((await dig(dns, ["m.jitsu.test"])).answers[0]?.data, "127.0.0.1");
      const pid = Number(/pid (\d+)/.exec(await httpGet(http))?.[1]);
      assert.ok(pid > 0);
      await cli.waitFor(new RegExp(`VM 'm-${mode}' stopped \\(${mode}\\)`), 20_000);
      await after(pid);
      const again = await dig(dns, ["m.jitsu.test"]);
      assert.equal(again.status, "NOERROR");
      const body = await httpGet(http, 5000);
      if (mode === "pause" || mode === "suspend") {
        assert.match(body, new RegExp(`pid ${pid}\\b`), "a paused VM is resumed, not restarted");
      } else {
        assert.doesNotMatch(body, new RegExp(`pid ${pid}\\b`), "a stopped VM is started anew");
      }
    });
  }
});

describe("start timeout (e2e)", () => {
  it("answers SERVFAIL when the VM is not ready in time, and a later query recovers", async (t) => {
    const dir = await tempDir();
    const dns = await freePort();
    const probePort = await freePort();
    const listener: Server = createServer((s) => s.end());
    const cli = startCli([
      ...localArgs(dns, dir.path),
      "--start-timeout",
      "1",
      `dns=late.jitsu.test,ip=127.0.0.1,name=late,exec=sleep 600,ready=tcp:${probePort}`,
    ]);
    t.after(async () => {
      await cli.stop();
      if (listener.listening) listener.close();
      await dir.remove();
    });
    await cli.waitFor(/Starting server/);
    const first = await dig(dns, ["late.jitsu.test"]);
    assert.equal(first.status, "SERVFAIL");
    assert.match(cli.output(), /late/);
    // Now the thing the probe waits for exists; after the back-off a query succeeds.
    await new Promise<void>((resolve) => listener.listen(probePort, "127.0.0.1", resolve));
    let status = "";
    for (let i = 0; i < 20 && status !== "NOERROR"; i++) {
      status = (await dig(dns, ["late.jitsu.test"])).status;
      if (status !== "NOERROR") await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(status, "NOERROR", cli.output());
  });
});

describe("malformed packets (e2e)", () => {
  it("are answered with FORMERR or dropped, and the server keeps answering", async (t) => {
    const dir = await tempDir();
    const dns = await freePort();
    const cli = startCli([
      ...localArgs(dns, dir.path),
      "dns=ok.jitsu.test,ip=10.1.2.3,name=ok,exec=sleep 600",
    ]);
    t.after(async () => {
      await cli.stop();
      await dir.remove();
    });
    await cli.waitFor(/Starting server/);
    const header = (id: number, flags: number, qd: number): Buffer => {
      const b = Buffer.alloc(12);
      b.writeUInt16BE(id, 0);
      b.writeUInt16BE(flags, 2);
      b.writeUInt16BE(qd, 4);
      return b;
    };
    const q = (name: string[]): Buffer =>
      Buffer.concat([
        ...name.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
        Buffer.from([0, 0, 1, 0, 1]),
      ]);
    const cases: { what: string; bytes: Buffer; expect: "drop" | "FORMERR" | "NOTIMP" }[] = [
      { what: "short header", bytes: Buffer.from([1, 2, 3]), expect: "drop" },
      { what: "qdcount 0", bytes: header(1, 0x0100, 0), expect: "FORMERR" },
      {
        what: "qdcount 2",
        bytes: Buffer.concat([header(2, 0x0100, 2), q(["ok", "jitsu", "test"]), q(["ok", "jitsu", "test"])]),
        expect: "FORMERR",
      },
      {
        what: "compression pointer loop",
        bytes: Buffer.concat([header(3, 0x0100, 1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]),
        expect: "FORMERR",
      },
      {
        what: "label past the end",
        bytes: Buffer.concat([header(4, 0x0100, 1), Buffer.from([40, 0x61, 0x62])]),
        expect: "FORMERR",
      },
      {
        what: "opcode STATUS",
        bytes: Buffer.concat([header(5, 0x1100, 1), q(["ok", "jitsu", "test"])]),
        expect: "NOTIMP",
      },
      {
        what: "a response sent to us",
        bytes: Buffer.concat([header(6, 0x8100, 1), q(["ok", "jitsu", "test"])]),
        expect: "drop",
      },
    ];
    for (let i = 0; i < 50; i++) {
      const random = Buffer.alloc(12 + ((i * 37) % 100));
      for (let j = 0; j < random.length; j++) random[j] = (i * 131 + j * 71 + 7) & 0xff;
      random[2] = random[2]! & 0x7f; // a query, not a response: it must get FORMERR or an answer, never silence
      cases.push({ what: `random bytes #${i}`, bytes: random, expect: "FORMERR" });
    }
    for (const c of cases) {
      const reply = await sendRaw(dns, c.bytes, 500);
      if (c.expect === "drop") {
        assert.equal(reply, null, `${c.what}: expected no reply`);
        continue;
      }
      if (c.what.startsWith("random")) {
        // Random bytes may happen to be a valid query for some name; any reply with the same ID is fine.
        assert.ok(reply !== null && reply.readUInt16BE(0) === c.bytes.readUInt16BE(0), `${c.what}: no reply`);
        continue;
      }
      assert.ok(reply !== null, `${c.what}: no reply`);
      const rcode = reply.readUInt16BE(2) & 0xf;
      assert.equal(rcode, c.expect === "FORMERR" ? 1 : 4, `${c.what}: rcode ${rcode}`);
      assert.equal(reply.readUInt16BE(0), c.bytes.readUInt16BE(0), `${c.what}: ID echoed`);
    }
    const ok = await dig(dns, ["ok.jitsu.test", "NS"]);
    assert.equal(ok.status, "NOERROR");
    assert.match(cli.output(), /Starting server/);
  });
});
