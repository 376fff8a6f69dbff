/**
 * `npm run demo` as a new user runs it (the built script): it serves on 5353,
 * or on the next free port when that one is taken (mDNS often holds 5353),
 * prints the commands with the port it really uses, summons on a query, and
 * leaves nothing behind on Ctrl-C.
 */
import assert from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { alive, dig, freePort, startScript } from "../support/index.js";

const DEMO = fileURLToPath(new URL("../../scripts/demo.js", import.meta.url));

describe("npm run demo (e2e)", () => {
  it("moves to a free port when the preferred one is taken, and says so in the commands it prints", async () => {
    const taken = await freePort();
    const blocker: Socket = createSocket("udp4");
    await new Promise<void>((resolve) => blocker.bind(taken, "127.0.0.1", () => resolve()));
    const demo = startScript(DEMO, [], { JITSU_DEMO_PORT: String(taken) });
    try {
      await demo.waitFor(/Starting server on 127\.0\.0\.1:\d+\.\.\./, 20_000);
      // What to try comes once jitsu answers, so that pasting it at once works.
      await demo.waitFor(/Ctrl-C stops jitsu/, 20_000);
      assert.ok(
        demo.output().indexOf("Try, in another terminal") > demo.output().indexOf("Starting server on"),
        demo.output(),
      );
      const port = Number(/Starting server on 127\.0\.0\.1:(\d+)/.exec(demo.output())![1]);
      assert.notEqual(port, taken);
      assert.match(demo.output(), new RegExp(`port ${taken} is taken .*; using ${port}\\.`));
      assert.match(demo.output(), new RegExp(`DNS on 127\\.0\\.0\\.1:${port},`));
      assert.match(demo.output(), new RegExp(`dig @127\\.0\\.0\\.1 -p ${port} hello\\.jitsu\\.test`));
      assert.doesNotMatch(demo.output(), new RegExp(`-p ${taken} `));

      const res = await dig(port, ["hello.jitsu.test", "A"]);
      assert.equal(res.status, "NOERROR", demo.output());
      assert.deepEqual(
        res.answers.map((a) => a.data),
        ["127.0.0.11"],
      );
      const pid = Number(/Started process (\d+) for VM 'hello'/.exec(demo.output())?.[1]);
      assert.ok(alive(pid), demo.output());

      // Ctrl-C: jitsu stops the services it started (--stop-on-exit) and the demo exits.
      const code = await demo.stop("SIGINT");
      assert.equal(code, 0, demo.output());
      assert.equal(alive(pid), false, `service ${pid} still runs`);
    } finally {
      // SIGINT (SIGKILL after 10 s): the demo passes it to jitsu, which runs in its own process group.
      await demo.stop("SIGINT");
      blocker.close();
    }
  });
});
