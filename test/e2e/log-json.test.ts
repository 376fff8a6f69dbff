/**
 * `--log-format json` through the built CLI: one JSON object a line on
 * standard error, written in batches, and nothing lost at exit (the lines
 * logged while shutting down are flushed before the process ends).
 */
import assert from "node:assert/strict";
import { after, it } from "node:test";
import { dig, freePort, localArgs, startCli, tempDir, type CliProcess } from "../support/index.js";

let cli: CliProcess | undefined;
let dir: Awaited<ReturnType<typeof tempDir>> | undefined;

after(async () => {
  await cli?.stop("SIGKILL");
  await dir?.remove();
});

it("logs JSON lines with the start-up, the summon's precise timings and the shutdown", async () => {
  dir = await tempDir("jitsu-log-json-");
  const dns = await freePort();
  cli = startCli([
    ...localArgs(dns, dir.path),
    "--log-format",
    "json",
    "name=www,dns=www.jitsu.test,ip=127.0.0.9,exec=sleep 300",
  ]);
  await cli.waitFor(/Starting server on/);
  const answer = await dig(dns, ["www.jitsu.test", "A"]);
  assert.deepEqual(
    answer.answers.map((a) => a.data),
    ["127.0.0.9"],
  );
  assert.equal(await cli.stop("SIGTERM"), 0);

  const records = cli
    .output()
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        assert.fail(`not a JSON line: ${l}`);
      }
    });
  const msgs = records.map((r) => r.msg);
  assert.ok(msgs.includes("Adding domain 'www.jitsu.test' for VM 'www' with ip 127.0.0.9"), String(msgs));
  const ready = records.find(
    (r) => typeof r.msg === "string" && /^VM 'www' is ready after \d+ ms$/.test(r.msg),
  );
  assert.ok(ready !== undefined, "the ready line");
  assert.equal(typeof ready.startMs, "number");
  assert.equal(typeof ready.backendMs, "number");
  assert.ok((ready.backendMs as number) <= (ready.startMs as number));
  assert.equal(ready.level, 30);
  // The shutdown's own lines, logged after SIGTERM, made it out before the exit.
  assert.ok(
    msgs.some((m) => typeof m === "string" && /^VM 'www' stopped/.test(m)),
    `no stop line in: ${msgs.slice(-5).join(" | ")}`,
  );
});
