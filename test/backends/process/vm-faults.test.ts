/**
 * A process VM killed at the worst moments (issue 16), with the built CLI,
 * dig and real SIGKILLs: during boot (before its ready= probe passes) and
 * during a graceful stop (-m shutdown, inside stop_grace). Each time the
 * query ends by --start-timeout, the VM is no longer running, nothing it
 * started is left (its group is killed: no orphan), and the next query
 * starts it again.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  alive,
  freePort,
  startCli,
  tempDir,
  timedDig,
  waitFor,
  type CliProcess,
} from "../../support/index.js";

/** argv: PORT DELAY-MS [ignore-term]. Starts a helper in its group (a `sleep`), listens after DELAY-MS. */
const SERVICE = `
const http = require("node:http");
const { spawn } = require("node:child_process");
const [port, delay, mode] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4] || ""];
const helper = spawn("sleep", ["600"], { stdio: "ignore" });
console.log("helper " + helper.pid + " of " + process.env.JITSU_VM);
process.on("SIGTERM", () => {
  if (mode === "ignore-term") return console.log("ignoring SIGTERM");
  process.exit(0);
});
setTimeout(() => http.createServer((q, r) => r.end("ok")).listen(port, "127.0.0.1"), delay);
`;

const TIMEOUT_S = 4;

describe("process VMs killed during boot and during shutdown (real SIGKILL)", { timeout: 120_000 }, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess;
  let port = 0;

  /** The n-th (from 1) "Started process PID for VM 'label'" and the helper that process printed. */
  async function started(label: string, n: number): Promise<{ pid: number; helper: number }> {
    let found: { pid: number; helper: number } | undefined;
    await waitFor(
      () => {
        const out = cli.output();
        const start = [...out.matchAll(new RegExp(`Started process (\\d+) for VM '${label}'`, "g"))][n - 1];
        const helper = [...out.matchAll(new RegExp(`helper (\\d+) of ${label}`, "g"))][n - 1];
        if (start === undefined || helper === undefined) return false;
        found = { pid: Number(start[1]), helper: Number(helper[1]) };
        return true;
      },
      10_000,
      `start #${n} of ${label}`,
    );
    return found!;
  }

  before(async () => {
    dir = await tempDir();
    const script = join(dir.path, "service.cjs");
    await writeFile(script, SERVICE);
    const [bootPort, stopPort] = [await freePort(), await freePort()];
    port = await freePort();
    cli = startCli([
      ...["-x", "process", "-l", String(port), "-f", "0.0.0.0", "-t", "1", "-d", "0", "-m", "shutdown"],
      ...["--start-timeout", String(TIMEOUT_S), "--state-dir", join(dir.path, "state")],
      `dns=boot.jitsu.test,name=boot,ip=10.0.0.1,exec=${process.execPath} ${script} ${bootPort} 2500,ready=tcp:127.0.0.1:${bootPort}`,
      `dns=stopper.jitsu.test,name=stopper,ip=10.0.0.2,stop_grace=60,exec=${process.execPath} ${script} ${stopPort} 0 ignore-term,ready=tcp:127.0.0.1:${stopPort}`,
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    for (const m of (cli?.output() ?? "").matchAll(/helper (\d+)|Started process (\d+)/g)) {
      const pid = Number(m[1] ?? m[2]);
      if (alive(pid)) process.kill(pid, "SIGKILL");
    }
    await dir?.remove();
  });

  it("killed before its probe passes: the query ends by the timeout, its helper is gone, the next query starts it again", async () => {
    const query = timedDig(port, "boot.jitsu.test");
    const first = await started("boot", 1);
    process.kill(first.pid, "SIGKILL");
    const res = await query;
    assert.ok(res.ms <= (TIMEOUT_S + 1) * 1000, `answered after ${res.ms} ms`);
    assert.equal(res.status, "SERVFAIL", "it never became ready");
    await waitFor(() => !alive(first.helper), 3000, "the helper of the killed VM to be gone");
    assert.match(cli.output(), new RegExp(`Process ${first.pid} of VM 'boot' killed by SIGKILL on its own`));
    // Started again (after the back-off of a VM's own failure), as a new process.
    const deadline = Date.now() + 20_000;
    let again = await timedDig(port, "boot.jitsu.test");
    while (again.status !== "NOERROR" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 300));
      again = await timedDig(port, "boot.jitsu.test");
    }
    assert.equal(again.data, "10.0.0.1");
    const second = await started("boot", 2);
    assert.notEqual(second.pid, first.pid);
    assert.ok(alive(second.pid));
  });

  it("-m shutdown, killed inside stop_grace: the stop ends at once, nothing is left, the next query starts it again", async () => {
    assert.equal((await timedDig(port, "stopper.jitsu.test")).data, "10.0.0.2");
    const first = await started("stopper", 1);
    // Idle 2 x TTL: SIGTERM, which it ignores; stop_grace is 60 s.
    await cli.waitFor(/Stopping VM 'stopper' \(shutdown\)/, 10_000);
    await cli.waitFor(/ignoring SIGTERM/, 5000);
    const t0 = Date.now();
    process.kill(first.pid, "SIGKILL");
    await cli.waitFor(/VM 'stopper' stopped \(shutdown\)/, 5000);
    assert.ok(Date.now() - t0 < 5000, "the stop did not wait for the grace");
    await waitFor(() => !alive(first.helper), 3000, "the helper of the killed VM to be gone");
    assert.ok(!alive(first.pid));
    const again = await timedDig(port, "stopper.jitsu.test");
    assert.equal(again.data, "10.0.0.2", "the next query starts it again (no back-off: the stop was ours)");
    const second = await started("stopper", 2);
    assert.notEqual(second.pid, first.pid);
  });
});
