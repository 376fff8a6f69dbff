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
 *   --max-failures; after SIGCONT the next query is answered.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { chmod, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { XenstoreClient } from "../../../src/xen/xenstore/index.js";
import { XL_DOUBLE } from "../../doubles/xen-fixture.js";
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
  "xenstored killed or hung while jitsu -x libxl waits for wait_for_key (real signals)",
  { timeout: 120_000 },
  () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let cli: CliProcess | undefined;
    let xsd: ChildProcess | undefined;
    let xsdOut = "";
    let socket = "";
    let xlState = "";
    let port = 0;

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

    const domain = (name: string): { domid: number; state: string }[] =>
      readXlState(xlState).domains.filter((d) => d.name === name);

    before(async () => {
      dir = await tempDir("jitsu-xsfault-");
      socket = join(dir.path, "xenstored.sock");
      xlState = join(dir.path, "xl-state");
      const bin = join(dir.path, "bin");
      await mkdir(bin);
      await chmod(XL_DOUBLE, 0o755);
      await symlink(XL_DOUBLE, join(bin, "xl"));
      const kernel = join(dir.path, "unikernel.xen");
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
  },
);
