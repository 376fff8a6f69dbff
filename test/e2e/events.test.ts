/**
 * GET /events of the built CLI (process backend, real dig), read by a plain
 * HTTP client: a summon, an admin stop and a SIGHUP reload arrive in order,
 * and every event is also a `--log-format json` line with the same `type`.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, it } from "node:test";
import { httpCall } from "../support/http.js";
import { dig, freePort, localArgs, startCli, tempDir, yamlVm, type CliProcess } from "../support/index.js";
import { describeEvents, openEvents, type SseClient } from "../support/sse.js";

let cli: CliProcess | undefined;
let sse: SseClient | undefined;
let dir: Awaited<ReturnType<typeof tempDir>> | undefined;

after(async () => {
  sse?.close();
  await cli?.stop("SIGKILL");
  await dir?.remove();
});

it("streams a summon, an admin stop and a reload in order, each also a JSON log line of the same type", async () => {
  dir = await tempDir("jitsu-events-");
  const dns = await freePort();
  const http = await freePort();
  const config = join(dir.path, "jitsu.yaml");
  writeFileSync(config, `vms:\n${yamlVm("db", "127.0.0.12")}`);
  cli = startCli([
    ...localArgs(dns, dir.path),
    "--log-format",
    "json",
    "--log-level",
    "debug",
    "--http",
    `127.0.0.1:${http}`,
    "--http-token",
    "t0ken",
    "--config",
    config,
    // Ready 0.5 s after its process starts: "starting" lasts long enough to be seen.
    "name=www,dns=www.jitsu.test,ip=127.0.0.9,response_delay=0.5,exec=sleep 300",
  ]);
  await cli.waitFor(/Serving \/status/);
  sse = await openEvents(http);
  assert.equal(sse.status, 200);

  const answer = await dig(dns, ["www.jitsu.test", "A"]);
  assert.deepEqual(
    answer.answers.map((a) => a.data),
    ["127.0.0.9"],
  );
  const stop = await httpCall(http, "POST", "/vms/www/stop", { authorization: "Bearer t0ken" });
  assert.equal(stop.status, 200, stop.body);
  writeFileSync(config, `vms:\n${yamlVm("db", "127.0.0.12")}${yamlVm("ci", "127.0.0.13")}`);
  cli.child.kill("SIGHUP");
  await sse.waitFor((e) => e.some((x) => x.data.type === "config.reloaded"), 10_000, "config.reloaded");

  const vmEvents = ["vm.state", "vm.started", "vm.stopped", "vm.failed", "config.reloaded"];
  assert.deepEqual(describeEvents(sse.events, vmEvents), [
    "vm.state www off>starting",
    "vm.state www starting>ready",
    "vm.started www",
    "vm.state www ready>stopping",
    "vm.state www stopping>off",
    "vm.stopped www admin",
    "config.reloaded",
  ]);
  const started = sse.events.find((e) => e.data.type === "vm.started")!.data;
  assert.ok((started.durationMs as number) >= 500, `a start of ${String(started.durationMs)} ms`);
  const reloaded = sse.events.find((e) => e.data.type === "config.reloaded")!.data;
  assert.deepEqual(
    { ok: reloaded.ok, vms: reloaded.vms, added: reloaded.added, file: reloaded.file },
    { ok: true, vms: 3, added: 1, file: config },
  );

  // The JSON log: one line with the same type for each of these events.
  await cli.waitFor(/"type":"config\.reloaded"/); // written at the end of the event loop's turn
  const logTypes = cli
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => (JSON.parse(l) as { type?: string }).type)
    .filter((t): t is string => t !== undefined);
  for (const type of vmEvents.filter((t) => t !== "vm.failed")) {
    assert.equal(
      logTypes.filter((t) => t === type).length,
      sse.events.filter((e) => e.data.type === type).length,
      `log lines of type ${type}`,
    );
  }
});
