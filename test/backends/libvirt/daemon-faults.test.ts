/**
 * libvirtd failing under a running jitsu (issue 16), with real signals to a
 * real private libvirtd (test driver, test:///<node.xml>) and the built CLI
 * queried with dig:
 * - hung (SIGSTOP): a ready VM is still answered from memory, forwarding
 *   works, a cold query gets SERVFAIL by --start-timeout (not later) and the
 *   log names the backend, the URI and the VM; after SIGCONT the next query
 *   starts the VM, without restarting jitsu;
 * - killed (SIGKILL) with a call in flight: SERVFAIL by --start-timeout, the
 *   log names backend, URI and VM; once a new libvirtd runs, the next query
 *   succeeds;
 * - the connection's bound: with the daemon hung, at most `maxCalls` calls
 *   wait; the rest fail at once, and after SIGCONT the connection works again.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { LibvirtConnection } from "../../../src/backends/libvirt/connection.js";
import { getState, lookupByName } from "../../../src/backends/libvirt/domain.js";
import { parseLibvirtUri } from "../../../src/backends/libvirt/uri.js";
import { silentLogger } from "../../../src/log/index.js";
import { startUpstream, type TestUpstream } from "../../doubles/dns-upstream.js";
import { PrivateLibvirtd } from "../../doubles/libvirtd.js";
import { answered, freePort, startCli, tempDir, timedDig, type CliProcess } from "../../support/index.js";
import { NODE_XML } from "./fixtures.js";

/** NODE_XML plus two more domains that start shut off: 'cold' and 'cold2'. */
function nodeXml(): string {
  const extra = ["cold", "cold2"]
    .map(
      (name, i) => `
  <domain type='test'>
    <name>${name}</name><uuid>0badc0de-0000-4000-8000-00000000f00${i}</uuid><memory>65536</memory>
    <os><type>hvm</type></os>
    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>
  </domain>`,
    )
    .join("");
  return NODE_XML.replace("</node>", `${extra}\n</node>`);
}

const TIMEOUT_S = 3;

describe("libvirtd hung or killed under jitsu (real libvirtd, real signals)", { timeout: 180_000 }, () => {
  const daemon = new PrivateLibvirtd();
  let upstream: TestUpstream;
  let cli: CliProcess | undefined;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let uri = "";
  let port = 0;

  before(async () => {
    dir = await tempDir();
    await daemon.start();
    uri = daemon.uri(`test://${daemon.writeFile("node.xml", nodeXml())}`);
    upstream = await startUpstream("answer");
    upstream.address = "192.0.2.53";
    port = await freePort();
    cli = startCli([
      ...["-x", "libvirt", "-c", uri, "-l", String(port), "-f", "127.0.0.1", "-p", String(upstream.port)],
      ...["-t", "600", "-d", "0", "--start-timeout", String(TIMEOUT_S), "--state-dir", dir.path],
      "dns=www.jitsu.test,name=www,ip=10.0.0.1",
      "dns=cold.jitsu.test,name=cold,ip=10.0.0.2",
      "dns=cold2.jitsu.test,name=cold2,ip=10.0.0.3",
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
  });

  after(async () => {
    try {
      daemon.signal("SIGCONT");
    } catch {
      // not running
    }
    await cli?.stop();
    await upstream?.close();
    await daemon.destroy();
    await dir?.remove();
  });

  it("hung: ready VMs answered from memory, forwarding works, cold queries SERVFAIL by the timeout; SIGCONT recovers", async () => {
    assert.equal((await timedDig(port, "www.jitsu.test")).data, "10.0.0.1");
    daemon.signal("SIGSTOP");
    try {
      const warm = await timedDig(port, "www.jitsu.test");
      assert.equal(warm.data, "10.0.0.1", "a ready VM is answered from memory");
      assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
      const fwd = await timedDig(port, "elsewhere.example");
      assert.equal(fwd.data, "192.0.2.53", "forwarding does not go through the backend");
      // Several at once: one start, every query SERVFAIL within the timeout (+1 s).
      const cold = await Promise.all([1, 2, 3].map((k) => timedDig(port, "cold.jitsu.test", k)));
      for (const c of cold) {
        assert.equal(c.status, "SERVFAIL");
        assert.ok(c.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${c.ms} ms, not by ${TIMEOUT_S} s + 1`);
      }
      const out = cli!.output();
      assert.match(
        out,
        /VM 'cold' could not be started: VM 'cold' was not ready after 3 s \(still waiting for the libvirt backend at test\+unix:\/\/\/\S+node\.xml\?socket=\S+ to start it\)/,
      );
      // The hung daemon's connection is reset within the timeout, not left to hang.
      await cli!.waitFor(
        /libvirt: lost the connection to test\+unix:\S+ \(no answer from the daemon for [\d.]+ s\)/,
        10_000,
      );
    } finally {
      daemon.signal("SIGCONT");
    }
    // No back-off for a daemon's fault: the first queries after SIGCONT start the VM.
    const back = await answered(port, "cold.jitsu.test", 10_000);
    assert.equal(back.data, "10.0.0.2");
    assert.ok(back.tries <= 2, `answered after ${back.tries} queries`);
    assert.match(cli!.output(), /VM 'cold' is ready after/);
  });

  it("killed with a call in flight: SERVFAIL by the timeout naming backend, URI and VM; a new libvirtd serves the next query", async () => {
    daemon.signal("SIGSTOP"); // so that jitsu's call is in flight when it dies
    const query = timedDig(port, "cold2.jitsu.test");
    await new Promise((r) => setTimeout(r, 500));
    daemon.signal("SIGKILL");
    const res = await query;
    assert.equal(res.status, "SERVFAIL");
    assert.ok(res.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${res.ms} ms`);
    assert.match(cli!.output(), /VM 'cold2' could not be started: .*(libvirt|test\+unix:\/\/\/)\S*/);
    const line = cli!
      .output()
      .split("\n")
      .find((l) => l.includes("VM 'cold2' could not be started"))!;
    assert.match(line, /libvirt/);
    assert.match(line, /test\+unix:\/\/\/\S+node\.xml/);
    // While it is down: SERVFAIL again, quickly (the call waits at most the timeout).
    const down = await timedDig(port, "cold2.jitsu.test");
    assert.equal(down.status, "SERVFAIL");
    assert.ok(down.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${down.ms} ms`);
    await daemon.stop();
    await daemon.start();
    const back = await answered(port, "cold2.jitsu.test", 15_000);
    assert.equal(back.data, "10.0.0.3");
    assert.ok(back.tries <= 2, `answered after ${back.tries} queries`);
    await cli!.waitFor(/libvirt: reconnected to test\+unix:/, 5000);
  });

  it("a hung daemon gathers at most maxCalls calls; the others fail at once, and SIGCONT recovers", async () => {
    const c = new LibvirtConnection(parseLibvirtUri(uri), {
      log: silentLogger(),
      maxCalls: 4,
      callTimeoutMs: 3000,
    });
    await c.connect();
    try {
      const dom = await lookupByName(c, "www");
      daemon.signal("SIGSTOP");
      const calls = Array.from({ length: 10 }, () =>
        getState(c, dom).then(
          () => "ok",
          (e: Error) => e.message,
        ),
      );
      const refused = await Promise.race([
        Promise.all(calls.slice(4)),
        new Promise<string[]>((r) => setTimeout(() => r([]), 500)),
      ]);
      assert.equal(refused.length, 6, "the calls beyond the bound fail at once");
      for (const m of refused) assert.match(m, /4 calls to test\+unix:\S+ are already waiting for an answer/);
      assert.equal(c.waiting, 4);
      assert.equal(c.stats.refused, 6);
      await new Promise((r) => setTimeout(r, 1000));
      daemon.signal("SIGCONT");
      // The four either got their answer or were failed by the reset; none hangs.
      const first = await Promise.all(calls.slice(0, 4));
      assert.equal(first.length, 4);
      assert.equal(c.waiting, 0);
      assert.equal(typeof (await getState(c, dom)).state, "number", "the connection works again");
    } finally {
      daemon.signal("SIGCONT");
      await c.close();
    }
  });
});
