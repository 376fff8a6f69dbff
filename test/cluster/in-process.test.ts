/**
 * startJitsu with --workers called in-process, as tests and the bench do:
 * the workers are forked from the compiled worker entry whatever script runs
 * this process, `-l 0` gives every worker the port the first one bound, and
 * close() leaves no worker behind. Real dig, process backend.
 */
import assert from "node:assert/strict";
import cluster from "node:cluster";
import { PassThrough } from "node:stream";
import { it } from "node:test";
import { parseArgs } from "../../src/cli/command.js";
import { startJitsu } from "../../src/cli/run.js";
import { createLogger } from "../../src/log/index.js";
import { alive, dig, localArgs, tempDir } from "../support/index.js";

it("serves DNS through 2 workers on the port the first one picked, and closes them", async (t) => {
  const dir = await tempDir("jitsu-cluster-");
  t.after(() => dir.remove());
  const settings = parseArgs([
    ...localArgs(0, dir.path),
    "--workers",
    "2",
    // The workers' level: their warnings about the malformed messages below stay out of the test's output.
    "--log-level",
    "error",
    `dns=www.jitsu.test,ip=127.0.0.1,name=www,exec=sleep 60`,
  ]);
  // The primary's lines, to check what it says about a malformed message.
  let lines = "";
  const out = new PassThrough();
  out.on("data", (d: Buffer) => (lines += d.toString()));
  const jitsu = await startJitsu(settings, {
    log: createLogger({ level: "warn", format: "text", destination: out }),
  });
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

  // Malformed messages both ways are logged and ignored: nobody crashes, DNS goes on.
  const workers = Object.values(cluster.workers ?? {});
  assert.equal(workers.length, 2);
  for (const w of workers) {
    w!.send({ t: "explode" });
    w!.send({ t: "ready", set: [["www", "not a list"]], unset: [] });
    w!.emit("message", { t: "counts", id: null, requests: [["www", -5]], dns: {} });
  }
  assert.match(
    lines,
    /DNS worker \d \(pid \d+\): ignoring a malformed message: requests\[0\]\[1\]: expected a count/,
  );
  const res = await dig(jitsu.port, ["www.jitsu.test", "A"]);
  assert.equal(res.answers[0]?.data, "127.0.0.1");
  assert.deepEqual(jitsu.cluster.pids().sort(), [...pids].sort());

  await jitsu.close({ stopVms: true });
  closed = true;
  for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} still runs`);
  assert.equal(jitsu.summoner.status()[0]?.state, "off");
});
