/**
 * The process is called jitsu (not node), so the README's
 * `kill -HUP $(pidof jitsu)` reaches it, and only it: --workers workers are
 * called jitsu-worker.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { freePort, localArgs, run, startCli, tempDir } from "../support/index.js";

async function pidof(name: string): Promise<number[]> {
  const res = await run("pidof", [name]);
  return res.stdout.trim() === "" ? [] : res.stdout.trim().split(/\s+/).map(Number);
}

describe("process title (e2e)", () => {
  it("pidof jitsu finds the main process, pidof jitsu-worker its workers", async () => {
    const dir = await tempDir("jitsu-title-");
    const cli = startCli([
      ...localArgs(await freePort(), dir.path),
      "--workers",
      "2",
      "dns=a.jitsu.test,ip=127.0.0.5,name=a,exec=sleep 60",
    ]);
    try {
      await cli.waitFor(/Serving DNS with 2 workers/);
      assert.ok((await pidof("jitsu")).includes(cli.child.pid!));
      const workers = await pidof("jitsu-worker");
      assert.ok(!workers.includes(cli.child.pid!));
      const ours = await run("ps", ["-o", "pid=", "--ppid", String(cli.child.pid)]);
      const children = ours.stdout.trim().split(/\s+/).map(Number);
      assert.equal(children.filter((pid) => workers.includes(pid)).length, 2, ours.stdout);
    } finally {
      await cli.stop();
      await dir.remove();
    }
  });
});
