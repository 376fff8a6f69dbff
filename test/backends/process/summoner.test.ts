/**
 * The summoner with the real process backend, a real HTTP readiness probe and
 * the system clock: a request starts the process and is answered only once the
 * server answers HTTP.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { VmRef } from "../../../src/backends/contract.js";
import { ProcessBackend, processBackend } from "../../../src/backends/process/index.js";
import { systemClock } from "../../../src/clock/index.js";
import { Summoner } from "../../../src/summoner/index.js";
import {
  backendOptions,
  captureLog,
  httpGet,
  killGroup,
  makeFixture,
  processSpec,
  type Fixture,
} from "./fixtures.js";
import { freePort, waitFor } from "../../support/index.js";
import { summonerOptions } from "../../support/summoner.js";

describe("summoner + process backend + http probe", () => {
  let fx: Fixture;
  let backend: ProcessBackend;
  let summoner: Summoner | undefined;
  const vm: VmRef = { label: "web", ref: "web" };

  before(async () => {
    fx = await makeFixture();
  });

  after(async () => {
    await summoner?.close();
    killGroup(backend?.pid(vm));
    await backend?.close();
    await fx.remove();
  });

  it("starts the process on request and answers only after HTTP responds", async () => {
    const port = await freePort();
    const captured = captureLog();
    backend = processBackend.create(backendOptions(captured.log, join(fx.dir, "state"))) as ProcessBackend;
    const spec = processSpec([
      ["dns", "web.example.org"],
      ["ip", "10.0.0.1"],
      ["name", "web"],
      // The server waits 700 ms before it listens, like a service that boots.
      ["exec", `${process.execPath} ${fx.server} ${port} - 700`],
      ["ready", `http://127.0.0.1:${port}/`],
    ]);
    summoner = await Summoner.create(
      summonerOptions({
        backend,
        backendName: "process",
        specs: [spec],
        clock: systemClock,
        log: captured.log,
      }),
    );
    assert.equal(summoner.status()[0]!.state, "off");
    assert.equal(await httpGet(port, 200), null, "nothing runs before the first request");

    const began = Date.now();
    const answer = summoner.request("web");
    assert.ok(answer instanceof Promise);
    const again = summoner.request("web");
    assert.equal(again, answer, "a second request joins the same start");
    assert.deepEqual(await answer, ["10.0.0.1"]);
    const took = Date.now() - began;
    assert.ok(took >= 650, `answered after the server's 700 ms boot, not before (${took} ms)`);
    assert.equal(
      await httpGet(port, 2000),
      "hello from web ",
      "the server answers at the time of the answer",
    );
    assert.ok(Array.isArray(summoner.request("web")), "then the hot path");
    assert.ok(captured.lines.some((l) => l.msg === "Starting VM 'web'"));
    assert.ok(captured.lines.some((l) => /^VM 'web' is ready after \d+ ms$/.test(l.msg)));

    // A crash is noticed through the backend's exit event: the VM is marked failed, the next request restarts it.
    const pid = backend.pid(vm)!;
    process.kill(pid, "SIGKILL");
    await waitFor(() => summoner!.status()[0]!.state === "failed", 10_000, "the crash to be noticed");
    assert.deepEqual(await summoner.request("web"), ["10.0.0.1"]);
    assert.notEqual(backend.pid(vm), pid);
    assert.equal(summoner.status()[0]!.totalStarts, 2);

    await summoner.close({ stopVms: true });
    summoner = undefined;
    assert.equal(await backend.state(vm), "off");
    assert.equal(await httpGet(port, 300), null);
  });
});
