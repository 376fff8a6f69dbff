/**
 * startJitsu with --workers called in-process, as tests and the bench do:
 * the workers are forked from the compiled worker entry whatever script runs
 * this process, `-l 0` gives every worker the port the first one bound, and
 * close() leaves no worker behind. Real dig, process backend.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { parseArgs } from "../../src/cli/command.js";
import { startJitsu } from "../../src/cli/run.js";
import { alive, dig, localArgs, tempDir } from "../support/index.js";

it("serves DNS through 2 workers on the port the first one picked, and closes them", async (t) => {
  const dir = await tempDir("jitsu-cluster-");
  t.after(() => dir.remove());
  const settings = parseArgs([
    ...localArgs(0, dir.path),
    "--workers",
    "2",
    "--log-level",
    "warn",
    `dns=www.jitsu.test,ip=127.0.0.1,name=www,exec=sleep 60`,
  ]);
  const jitsu = await startJitsu(settings);
  let closed = false;
  t.after(async () => {
    if (!closed) await jitsu.close({ stopVms: true });
  });
  assert.equal(jitsu.server, null);
  assert.ok(jitsu.cluster !== null);
  assert.ok(jitsu.port > 0);
  const pids = jitsu.cluster.pids();
  assert.equal(pids.length, 2);

  for (const args of [
    ["www.jitsu.test", "A"],
    ["+tcp", "www.jitsu.test", "A"],
    ["www.jitsu.test", "A"],
  ]) {
    const res = await dig(jitsu.port, args);
    assert.equal(res.status, "NOERROR");
    assert.equal(res.answers[0]?.data, "127.0.0.1");
  }
  await jitsu.cluster.collect();
  assert.equal(jitsu.summoner.status()[0]?.totalRequests, 3);
  assert.equal(jitsu.counters.queriesByType.get("A"), 3);

  await jitsu.close({ stopVms: true });
  closed = true;
  for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} still runs`);
  assert.equal(jitsu.summoner.status()[0]?.state, "off");
});
