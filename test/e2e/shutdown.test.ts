/**
 * Graceful shutdown through the built CLI: SIGTERM during a cold start answers
 * the waiting clients (the address once ready, SERVFAIL when the VM cannot be
 * ready within --start-timeout), takes no new queries, flushes the store and,
 * with --stop-on-exit, stops the VMs it started.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, it } from "node:test";
import { SqliteStore } from "../../src/store/index.js";
import {
  DEMO_SERVICE,
  alive,
  dig,
  freePort,
  localArgs,
  startCli,
  tempDir,
  type CliProcess,
  killVmGroups,
} from "../support/index.js";
import { httpCall } from "../support/http.js";

let cli: CliProcess | undefined;
let dir: Awaited<ReturnType<typeof tempDir>> | undefined;

after(async () => {
  await cli?.stop("SIGKILL");
  killVmGroups(cli?.output());
  await dir?.remove();
});

it("SIGTERM during a cold start answers the waiting clients, then flushes, stops the VMs and exits 0", async () => {
  dir = await tempDir("jitsu-shutdown-");
  const dns = await freePort();
  const slowPort = await freePort();
  const closedPort = await freePort(); // nothing will ever listen here
  const db = join(dir.path, "state.db");
  cli = startCli([
    ...localArgs(dns, dir.path), // with --stop-on-exit
    "--start-timeout",
    "4",
    "--persistdb",
    db,
    // Boots in 2.5 s, then serves HTTP (its ready probe).
    `dns=slow.jitsu.test,ip=127.0.0.1,name=slow,exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${slowPort} slow 2.5,ready=http://127.0.0.1:${slowPort}/`,
    // Runs, but would serve only after an hour: never ready.
    `dns=never.jitsu.test,ip=127.0.0.2,name=never,exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${closedPort} never 3600,ready=tcp:127.0.0.1:${closedPort}`,
  ]);
  await cli.waitFor(/Starting server on/);

  const slow = dig(dns, ["slow.jitsu.test", "A", "+tcp"]);
  const never = dig(dns, ["never.jitsu.test", "A"]);
  await cli.waitFor(/Started process \d+ for VM 'slow'/);
  await cli.waitFor(/Started process \d+ for VM 'never'/);
  const signalledAt = Date.now();
  cli.child.kill("SIGTERM");
  await cli.waitFor(/SIGTERM: shutting down/);
  // A query after the signal is not taken.
  const late = await dig(dns, ["slow.jitsu.test", "A", "+time=1"]);
  assert.equal(late.status, "TIMEOUT");

  const [slowRes, neverRes] = await Promise.all([slow, never]);
  assert.equal(slowRes.status, "NOERROR");
  assert.deepEqual(
    slowRes.answers.map((a) => a.data),
    ["127.0.0.1"],
  );
  assert.equal(neverRes.status, "SERVFAIL", cli.output());
  // Wait for the exit (a second SIGTERM would mean "exit now").
  const child = cli.child;
  const code = await new Promise<number | null>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.once("exit", (c) => resolve(c));
  });
  assert.equal(code, 0);
  assert.ok(Date.now() - signalledAt < 20_000, "shut down within the start timeout and the stops");
  for (const m of cli.output().matchAll(/Started process (\d+) for VM '(\w+)'/g)) {
    assert.ok(!alive(Number(m[1])), `the process of VM '${m[2]}' was stopped (--stop-on-exit)`);
  }
  assert.match(cli.output(), /VM 'never' could not be started: VM 'never' was not ready after 4 s/);

  // The store was flushed at exit.
  const store = SqliteStore.open(db);
  try {
    const rows = new Map((await store.load()).map((r) => [r.label, r]));
    assert.equal(rows.get("slow")?.totalRequests, 1);
    assert.equal(rows.get("slow")?.totalStarts, 1);
    assert.equal(rows.get("slow")?.state, "off");
    assert.equal(rows.get("never")?.totalRequests, 1);
  } finally {
    await store.close();
  }
});

it("--stop-on-exit with -m pause ends a paused VM too (unpaused, then shut down), not only the running ones", async () => {
  const stateDir = await tempDir("jitsu-shutdown-pause-");
  const dns = await freePort();
  const http = await freePort();
  const ports = [await freePort(), await freePort()];
  const vm = (name: string, ip: string, port: number): string =>
    `dns=${name}.jitsu.test,ip=${ip},name=${name},exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${port} ${name} 0,ready=http://127.0.0.1:${port}/`;
  const paused = startCli([
    ...localArgs(dns, stateDir.path), // with --stop-on-exit
    "-m",
    "pause",
    "--http",
    `127.0.0.1:${http}`,
    "--http-token",
    "t0ken",
    vm("frozen", "127.0.0.1", ports[0]!),
    vm("awake", "127.0.0.2", ports[1]!),
  ]);
  try {
    await paused.waitFor(/Serving \/status/);
    for (const name of ["frozen", "awake"]) {
      assert.equal((await dig(dns, [`${name}.jitsu.test`, "A"])).status, "NOERROR", paused.output());
    }
    // -m pause, on request: the process is SIGSTOPped, still holding its port.
    const stop = await httpCall(http, "POST", "/vms/frozen/stop", { authorization: "Bearer t0ken" });
    assert.equal(stop.status, 200, stop.body);
    const pids = new Map(
      [...paused.output().matchAll(/Started process (\d+) for VM '(\w+)'/g)].map((m) => [
        m[2]!,
        Number(m[1]),
      ]),
    );
    const frozen = pids.get("frozen")!;
    assert.match(readFileSync(`/proc/${frozen}/stat`, "utf8"), /\) T /, "paused (SIGSTOP)");

    assert.equal(await paused.stop("SIGTERM"), 0, paused.output());
    assert.match(paused.output(), /Unpausing VM 'frozen' to stop it \(shutdown\) at shutdown/);
    assert.match(paused.output(), /Stopping VM 'awake' \(shutdown\) at shutdown/);
    for (const [name, pid] of pids)
      assert.equal(alive(pid), false, `VM '${name}' (process ${pid}) still runs`);
  } finally {
    await paused.stop("SIGKILL");
    killVmGroups(paused.output());
    await stateDir.remove();
  }
});
