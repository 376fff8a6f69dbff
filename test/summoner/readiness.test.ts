/**
 * The ready= probe loop's pace (src/summoner/readiness.ts) on a ManualClock,
 * against real loopback sockets: an attempt refused (nothing listens yet) is
 * retried 10 ms later, one that reached the service and failed 50 ms later.
 */
import assert from "node:assert/strict";
import { createServer as createHttpServer } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Server } from "node:net";
import { setTimeout as realDelay } from "node:timers/promises";
import { describe, it } from "node:test";
import type { VmBackend } from "../../src/backends/contract.js";
import { ManualClock } from "../../src/clock/index.js";
import type { ReadyProbe } from "../../src/config/index.js";
import { waitReady } from "../../src/summoner/readiness.js";
import type { Vm } from "../../src/summoner/vm.js";

function listen(server: Server | ReturnType<typeof createHttpServer>, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
  });
}

/** Only what waitReady reads of a VM. */
function vmWith(probe: ReadyProbe): Vm {
  return {
    spec: { ready: [probe], ips: ["127.0.0.1"], responseDelay: 0, waitForKey: undefined },
    ref: { name: "r" },
    addresses: ["127.0.0.1"],
  } as unknown as Vm;
}

/** Starts waitReady; `settled()` says whether it has resolved (it must not reject here). */
function start(
  vm: Vm,
  clock: ManualClock,
): { settled: () => boolean; done: Promise<void>; stop: AbortController } {
  const stop = new AbortController();
  let settled = false;
  const done = waitReady(
    vm,
    { backend: {} as VmBackend, clock, delaySeconds: 0 },
    stop.signal,
    { name: "" },
    false,
  ).then(() => void (settled = true));
  return { settled: () => settled, done, stop };
}

/** Lets real loopback I/O (a connect, a request) finish. */
const io = (): Promise<unknown> => realDelay(60);

describe("readiness: the probe retry", () => {
  it("retries a refused attempt 10 ms later: a service that starts listening meanwhile is ready at the next 10 ms", async () => {
    // A port nothing listens on (taken back below).
    const probeServer = createTcpServer((c) => c.destroy());
    const port = await listen(probeServer);
    await new Promise((r) => probeServer.close(r));
    const clock = new ManualClock();
    const run = start(vmWith({ kind: "tcp", host: "127.0.0.1", port }), clock);
    try {
      await io(); // the first attempt: refused
      await clock.advance(10);
      await io(); // the second: refused
      assert.equal(run.settled(), false);
      await listen(probeServer, port);
      await clock.advance(10);
      await io(); // the third connects
      await clock.advance(0);
      assert.equal(run.settled(), true, "ready 10 ms (on the clock) after the service listened");
    } finally {
      run.stop.abort(new Error("test over"));
      await run.done.catch(() => undefined);
      probeServer.close();
    }
  });

  it("retries an attempt the service answered with an error 50 ms later, not 10", async () => {
    let requests = 0;
    let status = 503;
    const server = createHttpServer((_req, res) => {
      requests++;
      res.statusCode = status;
      res.end();
    });
    const port = await listen(server);
    const clock = new ManualClock();
    const run = start(vmWith({ kind: "http", url: `http://127.0.0.1:${port}/` }), clock);
    try {
      await io();
      assert.equal(requests, 1);
      // The first sleep was chosen before the first outcome was known: 10 ms.
      await clock.advance(10);
      await io();
      assert.equal(requests, 2);
      await clock.advance(10);
      await io();
      await clock.advance(10);
      await io();
      assert.equal(requests, 2, "no new request within 50 ms of a 503");
      status = 200;
      await clock.advance(30);
      await io();
      assert.equal(requests, 3);
      await clock.advance(0);
      assert.equal(run.settled(), true);
    } finally {
      run.stop.abort(new Error("test over"));
      await run.done.catch(() => undefined);
      server.close();
    }
  });
});
