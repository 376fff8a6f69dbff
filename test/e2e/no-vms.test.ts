/**
 * jitsu started without VMs says what it will do with every query: forward
 * it, or (forwarding off) answer REFUSED, and does so.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startUpstream } from "../doubles/dns-upstream.js";
import { dig, freePort, localArgs, startCli, tempDir } from "../support/index.js";

describe("no VMs configured (e2e)", () => {
  it("with -f 0.0.0.0: says every query is answered REFUSED, and it is", async () => {
    const dir = await tempDir("jitsu-novms-");
    const dns = await freePort();
    const cli = startCli(localArgs(dns, dir.path));
    try {
      await cli.waitFor(/Starting server on/);
      assert.match(cli.output(), /No VMs configured and forwarding is off: every query is answered REFUSED/);
      assert.doesNotMatch(cli.output(), /every query is forwarded/);
      assert.equal((await dig(dns, ["example.com", "A"])).status, "REFUSED");
    } finally {
      await cli.stop();
      await dir.remove();
    }
  });

  it("with an upstream: says every query is forwarded, and it is", async () => {
    const dir = await tempDir("jitsu-novms-");
    const dns = await freePort();
    const upstream = await startUpstream("192.0.2.7");
    const cli = startCli(localArgs(dns, dir.path, { upstream: upstream.port }));
    try {
      await cli.waitFor(/Starting server on/);
      assert.match(cli.output(), /No VMs configured: every query is forwarded/);
      const res = await dig(dns, ["example.com", "A"]);
      assert.deepEqual(
        res.answers.map((a) => a.data),
        ["192.0.2.7"],
      );
    } finally {
      await cli.stop();
      await upstream.close();
      await dir.remove();
    }
  });
});
