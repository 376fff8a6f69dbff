/**
 * xenstored failing while jitsu -x libxl waits for a VM's wait_for_key
 * (issue 16): the xenstored double runs as a child process
 * (test/doubles/xenstored.ts's main) beside the xl double, is hit with real
 * signals, and the built CLI is queried with dig:
 * - killed (SIGKILL) mid-wait: the query SERVFAILs by --start-timeout, the
 *   log naming the libxl backend, xenstore and the VM; a ready VM is answered
 *   throughout; once a new xenstored is up, the next query adopts the running
 *   domain (not created twice) and is answered when the key appears, without
 *   restarting jitsu (the xenstore client reconnects);
 * - hung (SIGSTOP) mid-wait: SERVFAIL by the timeout naming the backend's
 *   xenstore and the VM, as a daemon fault (xenstored left the wait's
 *   liveness read unanswered): no back-off, not counted toward
 *   --max-failures; after SIGCONT the next query is answered;
 * - hung (SIGSTOP) during a rumprun start, between `xl create -p` and the
 *   write of the rumprun JSON (the `xl` on PATH is a wrapper that stops
 *   xenstored when asked `xl domid`): the write gives up after the backend's
 *   call timeout as xenstored's fault, the half-made domain is destroyed and
 *   never unpaused, not even once xenstored is continued; the next start works.
 *   Through the backend itself (the error it rejects with) and through the CLI.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { LibxlBackend } from "../../../src/backends/libxl/index.js";
import { systemClock } from "../../../src/clock/index.js";
import { BackendError } from "../../../src/errors/index.js";
import { createLogger } from "../../../src/log/index.js";
import { XenstoreClient } from "../../../src/xen/xenstore/index.js";
import { XL_DOUBLE, libxlSpec } from "../../doubles/xen-fixture.js";
import { readXlState } from "../../doubles/xl.js";
import { freePort, startCli, tempDir, timedDig, type CliProcess } from "../../support/index.js";

const XENSTORED = fileURLToPath(new URL("../../doubles/xenstored.js", import.meta.url));
// Room for xl (a node double) to create the domain on a loaded machine before the wait begins.
const TIMEOUT_S = 5;

async function until(what: string, test: () => boolean, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!test()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe(
  "xenstored killed or hung while jitsu -x libxl waits for wait_for_key or writes the rumprun configuration (real signals)",
  { timeout: 120_000 },
  () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let cli: CliProcess | undefined;
    let xsd: ChildProcess | undefined;
    let xsdOut = "";
    let socket = "";
    let xlState = "";
    let port = 0;
    let bin = "";
    let kernel = "";
    /** While this file exists (holding xenstored's pid), the next `xl domid` SIGSTOPs xenstored first. */
    let stopOnDomid = "";
    let rumprunJson = "";
    const json = Buffer.from('{"cmdline":"nginx.bin -c /data/conf/nginx.conf","net":{"if":"xenif0"}}\n');

    async function startXenstored(): Promise<void> {
      xsdOut = "";
      const child = spawn(process.execPath, [XENSTORED, "--socket", socket], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      child.stdout!.on("data", (b: Buffer) => (xsdOut += b.toString()));
      xsd = child;
      await until("xenstored to listen", () => xsdOut.includes("listening on") || child.exitCode !== null);
      assert.equal(child.exitCode, null, "the xenstored double started");
    }

    async function killXenstored(): Promise<void> {
      const child = xsd!;
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await gone;
    }

    /** Writes a key as the guest would, through a connection of the test's own. */
    async function guestWrites(path: string): Promise<void> {
      const client = new XenstoreClient({ paths: [socket] });
      try {
        await client.write(path, "1");
      } finally {
        await client.close();
      }
    }

    const domain = (name: string): { domid: number; state: string; rumprunAtUnpause?: string | null }[] =>
      readXlState(xlState).domains.filter((d) => d.name === name);

    /** The xl double's calls that name domain `name` or its config file (`xl list` and the like left out). */
    const callsFor = (name: string): string[] =>
      readXlState(xlState)
        .calls.filter((c) => c.some((a) => a === name || a.endsWith(`/${name}.cfg`)))
        .map((c) => c.join(" "));

    before(async () => {
      dir = await tempDir("jitsu-xsfault-");
      socket = join(dir.path, "xenstored.sock");
      xlState = join(dir.path, "xl-state");
      bin = join(dir.path, "bin");
      await mkdir(bin);
      await chmod(XL_DOUBLE, 0o755);
      stopOnDomid = join(dir.path, "stop-xenstored-on-domid");
      // The backend asks `xl domid` between `xl create -p` and the rumprun write: the moment to hang xenstored.
      await writeFile(
        join(bin, "xl"),
        [
          "#!/bin/sh",
          `if [ "$1" = domid ] && [ -f '${stopOnDomid}' ]; then`,
          `  kill -STOP "$(cat '${stopOnDomid}')"; rm -f '${stopOnDomid}'`,
          "fi",
          `exec '${XL_DOUBLE}' "$@"`,
          "",
        ].join("\n"),
        { mode: 0o755 },
      );
      rumprunJson = join(dir.path, "json.cfg");
      await writeFile(rumprunJson, json);
      kernel = join(dir.path, "unikernel.xen");
      await writeFile(kernel, Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(60)]));
      await startXenstored();
      port = await freePort();
      const vm = (name: string, ip: string, key: boolean): string =>
        `dns=${name}.jitsu.test,ip=${ip},kernel=${kernel},memory=64000,name=${name}${key ? ",wait_for_key=data/ready" : ""}`;
      cli = startCli(
        [
          ...["-x", "libxl", "-l", String(port), "-f", "0.0.0.0", "-d", "0", "-t", "600"],
          ...["--start-timeout", String(TIMEOUT_S), "--state-dir", join(dir.path, "state")],
          vm("up", "10.0.0.1", false),
          vm("www", "10.0.0.2", true),
          vm("www2", "10.0.0.3", true),
          `${vm("rr", "10.0.0.4", false)},rumprun_config=${rumprunJson}`,
        ],
        { XL_DOUBLE_STATE: xlState, XENSTORED_PATH: socket, PATH: `${bin}:${process.env.PATH ?? ""}` },
      );
      await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 60_000);
      // The first start may take longer than the timeout on a busy machine: ask again.
      for (let tries = 0; (await timedDig(port, "up.jitsu.test")).data !== "10.0.0.1"; tries++) {
        if (tries >= 10) throw new Error("VM 'up' never answered");
        await new Promise((r) => setTimeout(r, 500));
      }
    });

    after(async () => {
      xsd?.kill("SIGCONT");
      await cli?.stop();
      if (xsd !== undefined) await killXenstored();
      await dir?.remove();
    });

    it("killed mid-wait: SERVFAIL by the timeout naming backend and VM; a new xenstored: the running domain is adopted and answered", async () => {
      const pending = timedDig(port, "www.jitsu.test");
      await until("jitsu's watch on www's key", () => /WATCH \/local\/domain\/\d+\/data\/ready/.test(xsdOut));
      const [before] = domain("www");
      assert.ok(before !== undefined && before.state === "running", "the domain runs");
      await killXenstored();
      const failed = await pending;
      assert.equal(failed.status, "SERVFAIL");
      assert.ok(failed.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${failed.ms} ms`);
      await cli!.waitFor(/VM 'www' could not be started: .*libxl.*xenstore/, 5000);

      // xenstored down: the ready VM still answered; a query for www fails fast.
      const warm = await timedDig(port, "up.jitsu.test");
      assert.equal(warm.data, "10.0.0.1");
      assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
      const down = await timedDig(port, "www.jitsu.test");
      assert.equal(down.status, "SERVFAIL");
      assert.ok(down.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${down.ms} ms`);

      await startXenstored();
      const again = timedDig(port, "www.jitsu.test");
      await until("jitsu's watch on the new xenstored", () =>
        xsdOut.includes(`WATCH /local/domain/${before.domid}/data/ready`),
      );
      await guestWrites(`/local/domain/${before.domid}/data/ready`);
      const back = await again;
      assert.equal(back.status, "NOERROR");
      assert.equal(back.data, "10.0.0.2");
      // Adopted: still one domain named www, the same one.
      assert.deepEqual(
        domain("www").map((d) => d.domid),
        [before.domid],
      );
      assert.equal((await timedDig(port, "up.jitsu.test")).data, "10.0.0.1");
    });

    it("hung mid-wait: SERVFAIL by the timeout naming the backend's xenstore and the VM; SIGCONT recovers", async () => {
      const pending = timedDig(port, "www2.jitsu.test");
      await until("jitsu's watch on www2's key", () => {
        const d = domain("www2")[0];
        return d !== undefined && xsdOut.includes(`WATCH /local/domain/${d.domid}/data/ready`);
      });
      xsd!.kill("SIGSTOP");
      let domid: number;
      try {
        const failed = await pending;
        assert.equal(failed.status, "SERVFAIL");
        assert.ok(failed.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${failed.ms} ms`);
        // The daemon's fault, not the VM's: "the next query tries again", not "next try in 1 s".
        await cli!.waitFor(
          /VM 'www2' could not be started: .*key 'data\/ready' in the libxl backend's xenstore\); the libxl backend did not answer: the next query tries again/,
          5000,
        );
        const warm = await timedDig(port, "up.jitsu.test");
        assert.equal(warm.data, "10.0.0.1");
        assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
        domid = domain("www2")[0]!.domid;
      } finally {
        xsd!.kill("SIGCONT");
      }
      await guestWrites(`/local/domain/${domid}/data/ready`);
      const t0 = Date.now();
      for (;;) {
        const a = await timedDig(port, "www2.jitsu.test");
        if (a.status === "NOERROR") {
          assert.equal(a.data, "10.0.0.3");
          break;
        }
        if (Date.now() - t0 > 10_000) throw new Error(`www2 still answers ${a.status}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.deepEqual(
        domain("www2").map((d) => d.domid),
        [domid],
      );
    });

    it("hung during a rumprun start (the backend): the write fails after the call timeout as xenstored's fault; the half-made domain is destroyed, never unpaused; after SIGCONT the next start works", async () => {
      const boundMs = 1000;
      process.env.XL_DOUBLE_STATE = xlState;
      process.env.XENSTORED_PATH = socket;
      const lines: string[] = [];
      const log = createLogger({
        level: "info",
        format: "text",
        destination: new Writable({
          write(chunk: Buffer, _enc, done) {
            lines.push(chunk.toString());
            done();
          },
        }),
      });
      const backend = new LibxlBackend(
        {
          connect: "",
          stateDir: join(dir.path, "state-backend"),
          settings: { xl: join(bin, "xl") },
          log,
          clock: systemClock,
          callTimeoutMs: boundMs,
        },
        { xenstore: new XenstoreClient({ paths: [socket] }) },
      );
      try {
        await backend.connect();
        const ref = await backend.resolve(
          libxlSpec(
            `dns=rb.jitsu.test,ip=10.0.0.5,kernel=${kernel},memory=64000,name=rb,rumprun_config=${rumprunJson}`,
          ),
        );
        await writeFile(stopOnDomid, String(xsd!.pid));
        const t0 = Date.now();
        const started = backend.start(ref).then(
          () => "started",
          (err: unknown) => err,
        );
        try {
          // The write gave up (xenstored still stopped, so xl destroy now waits for it).
          await until("the half-made domain's destroy", () =>
            lines.some((l) => l.includes("Destroying the half-made domain 'rb'")),
          );
          const waited = Date.now() - t0;
          assert.ok(waited >= boundMs && waited < boundMs + 10_000, `gave up after ${waited} ms`);
          assert.deepEqual(
            domain("rb").map((d) => d.state),
            ["paused"],
            "created paused, not unpaused",
          );
        } finally {
          xsd!.kill("SIGCONT");
        }
        const err = await started;
        assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
        assert.equal(err.unavailable, true, "xenstored's fault, not the VM's");
        assert.match(
          err.message,
          /^libxl VM 'rb': cannot write the rumprun configuration to xenstore \/local\/domain\/(\d+)\/rumprun\/cfg \(xenstored did not answer write \/local\/domain\/\1\/rumprun\/cfg within 1 s; connection reset\)$/,
        );
        assert.deepEqual(domain("rb"), [], "the half-made domain is destroyed");
        const cfg = backend.configPath("rb");
        assert.deepEqual(callsFor("rb"), [`create -p ${cfg}`, "domid rb", "destroy rb"], "never unpaused");

        // xenstored is back: the client reconnects, and the next start writes the JSON and unpauses.
        await backend.start(ref);
        const [d] = domain("rb");
        assert.ok(d !== undefined);
        assert.equal(d.state, "running");
        assert.equal(d.rumprunAtUnpause, json.toString("base64"), "the JSON was there at unpause");
        assert.deepEqual(callsFor("rb").slice(3), [`create -p ${cfg}`, "domid rb", "unpause rb"]);
      } finally {
        xsd!.kill("SIGCONT");
        await backend.close();
      }
    });

    it("hung during a rumprun start (the CLI): SERVFAIL by the timeout; the half-made domain is destroyed, never unpaused, not even after SIGCONT; the next query starts it afresh", async () => {
      await writeFile(stopOnDomid, String(xsd!.pid));
      const pending = timedDig(port, "rr.jitsu.test");
      let first: number;
      try {
        const failed = await pending;
        assert.equal(failed.status, "SERVFAIL");
        assert.ok(failed.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${failed.ms} ms`);
        // The summoner gave up at the start timeout; the backend's write gives up at its call timeout.
        const gaveUp =
          /Destroying the half-made domain 'rr': .*xenstored did not answer write \/local\/domain\/(\d+)\/rumprun\/cfg within 5 s; connection reset/;
        await cli!.waitFor(gaveUp, 10_000);
        first = Number(gaveUp.exec(cli!.output())![1]);
        assert.deepEqual(
          domain("rr").map((d) => [d.domid, d.state]),
          [[first, "paused"]],
          "created paused, not unpaused",
        );
      } finally {
        xsd!.kill("SIGCONT");
      }
      await until("the half-made domain's destroy", () => domain("rr").length === 0);
      const t0 = Date.now();
      for (;;) {
        const a = await timedDig(port, "rr.jitsu.test");
        if (a.status === "NOERROR") {
          assert.equal(a.data, "10.0.0.4");
          break;
        }
        if (Date.now() - t0 > 10_000) throw new Error(`rr still answers ${a.status}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      const [d] = domain("rr");
      assert.ok(d !== undefined);
      assert.notEqual(d.domid, first, "a new domain");
      assert.equal(d.state, "running");
      assert.equal(d.rumprunAtUnpause, json.toString("base64"));
      const cfg = join(dir.path, "state", "libxl", "rr.cfg");
      assert.deepEqual(callsFor("rr"), [
        `create -p ${cfg}`,
        "domid rr",
        "destroy rr",
        `create -p ${cfg}`,
        "domid rr",
        "unpause rr",
      ]);
    });
  },
);
