/**
 * A multi-homed host (network namespaces the test creates, test/support/netns.ts):
 * jitsu bound to 0.0.0.0 (or ::) inside it, dig in a client namespace asking
 * the address of the host's OTHER interface. A wildcard UDP socket answers
 * from the near interface's address and dig discards the answer; jitsu binds
 * UDP per address and answers from the address asked, follows addresses that
 * come and go (SIGHUP, and by itself within a poll), with one process and
 * with --workers 2.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { killVmGroups, startCli, tempDir, waitFor, type CliProcess } from "../support/index.js";
import { multiHomedHost, type MultiHomedHost } from "../support/netns.js";

const VM = "dns=www.jitsu.test,ip=10.9.9.9,name=www,exec=sleep 120";

describe("a multi-homed host, jitsu bound to a wildcard (e2e, network namespaces)", () => {
  let net: MultiHomedHost;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess | null = null;

  /** dig from the client namespace: the answer's data, or dig's complaint. */
  const ask = async (server: string, ...extra: string[]): Promise<string> => {
    const res = await net.exec(net.client, "dig", [
      `@${server}`,
      "+time=1",
      "+tries=1",
      "+short",
      ...extra,
      "www.jitsu.test",
      "A",
    ]);
    return (
      (res.stdout.trim() || res.stderr.trim()).split("\n").find((l) => !l.startsWith(";;")) ??
      res.stdout.trim()
    );
  };

  const startJitsu = async (bind: string, extra: readonly string[] = []): Promise<CliProcess> => {
    const args = ["-x", "process", "-b", bind, "-l", "53", "-f", "0.0.0.0", "-d", "0"];
    const c = startCli(
      [...args, "--state-dir", dir.path, "--stop-on-exit", ...extra, VM],
      {},
      { netns: net.host },
    );
    cli = c;
    await c.waitFor(new RegExp(`Starting server on ${bind.replace(/\./g, "\\.")}:53`), 30_000);
    return c;
  };

  const stopJitsu = async (): Promise<void> => {
    if (cli === null) return;
    await cli.stop("SIGTERM");
    killVmGroups(cli.output());
    cli = null;
  };

  before(async () => {
    net = await multiHomedHost();
    dir = await tempDir("jitsu-multihomed-");
  });

  after(async () => {
    if (cli !== null) {
      await cli.stop("SIGKILL");
      killVmGroups(cli.output());
    }
    await net.remove();
    await dir.remove();
  });

  it("the setup shows the bug: a wildcard UDP socket's answer to the far address is discarded", async () => {
    // A plain echo server on 0.0.0.0:53, as a wildcard DNS server would answer.
    const echo = spawn(
      "ip",
      [
        "netns",
        "exec",
        net.host,
        process.execPath,
        "-e",
        `const s = require("node:dgram").createSocket("udp4");
         s.on("message", (m, r) => { m[2] |= 0x80; s.send(m, r.port, r.address); });
         s.bind(53, "0.0.0.0", () => console.log("bound"));`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await new Promise<void>((resolve) => echo.stdout.once("data", () => resolve()));
      assert.match(await ask(net.far), /timed out|no servers could be reached/);
      // The near address is the route's own: that one works.
      assert.doesNotMatch(await ask(net.near), /timed out|no servers/);
    } finally {
      echo.kill("SIGKILL");
      await new Promise((resolve) => echo.once("exit", resolve));
    }
  });

  it("-b 0.0.0.0: answers a query to either interface's address, over UDP and TCP", async () => {
    await startJitsu("0.0.0.0");
    assert.equal(await ask(net.far), "10.9.9.9");
    assert.equal(await ask(net.near), "10.9.9.9");
    assert.equal(await ask(net.far, "+tcp"), "10.9.9.9");
  });

  it("follows an address added (SIGHUP at once, else within a poll) and one removed", async () => {
    await net.ip(net.host, ["addr", "add", "10.201.3.1/32", "dev", net.farDevice]);
    await net.ip(net.client, ["route", "add", "10.201.3.0/24", "via", "10.201.1.1"]);
    cli!.child.kill("SIGHUP");
    await cli!.waitFor(/listening on UDP 10\.201\.3\.1:53 too/, 5000);
    assert.equal(await ask("10.201.3.1"), "10.9.9.9");
    // Without a signal: the next poll (every 5 s) binds it.
    await net.ip(net.host, ["addr", "add", "10.201.3.2/32", "dev", net.farDevice]);
    await cli!.waitFor(/listening on UDP 10\.201\.3\.2:53 too/, 8000);
    assert.equal(await ask("10.201.3.2"), "10.9.9.9");
    await net.ip(net.host, ["addr", "del", "10.201.3.1/32", "dev", net.farDevice]);
    cli!.child.kill("SIGHUP");
    await cli!.waitFor(/10\.201\.3\.1 is gone; no longer listening on UDP 10\.201\.3\.1:53/, 5000);
    await net.ip(net.host, ["addr", "del", "10.201.3.2/32", "dev", net.farDevice]);
    await stopJitsu();
  });

  it("--workers 2: the workers answer from the address asked, and SIGHUP reaches each", async () => {
    await startJitsu("0.0.0.0", ["--workers", "2", "--log-level", "debug"]);
    for (let i = 0; i < 6; i++) assert.equal(await ask(net.far), "10.9.9.9");
    await net.ip(net.host, ["addr", "add", "10.201.3.3/32", "dev", net.farDevice]);
    cli!.child.kill("SIGHUP");
    // Each worker binds it (through the primary's one shared handle) and says so at debug.
    await waitFor(
      () => (cli!.output().match(/listening on UDP 10\.201\.3\.3:53 too/g) ?? []).length === 2,
      3000,
      "both workers to bind 10.201.3.3 (the poll is 5 s away)",
    );
    for (let i = 0; i < 6; i++) assert.equal(await ask("10.201.3.3"), "10.9.9.9");
    await net.ip(net.host, ["addr", "del", "10.201.3.3/32", "dev", net.farDevice]);
    await stopJitsu();
  });

  it("-b ::: answers IPv6 and IPv4 queries to the far addresses", async () => {
    await startJitsu("::");
    assert.equal(await ask(net.farV6), "10.9.9.9");
    assert.equal(await ask(net.far), "10.9.9.9");
    await stopJitsu();
  });
});
