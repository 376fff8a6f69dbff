/**
 * The built CLI with many VMs (process backend, queried with real dig): up to
 * 100 VMs it logs one line per domain and PTR and the full stats table, as the
 * original does; above 100, one summary line per kind at info and the per-VM
 * lines at debug.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import {
  countMatches,
  dig,
  freePort,
  localArgs,
  startCli,
  tempDir,
  type CliProcess,
} from "../support/index.js";

function configs(n: number): string[] {
  return Array.from(
    { length: n },
    (_, i) => `name=m${i},dns=h${i}.many.test,ip=127.0.${i >> 8}.${(i & 255) + 1},exec=sleep 300`,
  );
}

describe("jitsu with many VMs (e2e)", () => {
  const clis: CliProcess[] = [];
  const dirs: Awaited<ReturnType<typeof tempDir>>[] = [];

  after(async () => {
    for (const cli of clis) await cli.stop();
    for (const dir of dirs) await dir.remove();
  });

  /** Starts jitsu with `n` VMs at `level`; resolves once it answers for the zone. */
  async function start(n: number, level: "info" | "debug"): Promise<{ cli: CliProcess; port: number }> {
    const dir = await tempDir();
    dirs.push(dir);
    const port = await freePort();
    const cli = startCli([...localArgs(port, dir.path), "-t", "60", "--log-level", level, ...configs(n)]);
    clis.push(cli);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 60_000);
    const soa = await dig(port, ["many.test", "SOA"]);
    assert.equal(soa.status, "NOERROR");
    assert.equal(soa.answers[0]?.type, "SOA");
    return { cli, port };
  }

  it("up to 100 VMs: one line per domain and PTR, and the full stats table, at info", async () => {
    const { cli, port } = await start(100, "info");
    await cli.waitFor(/\| total requests \| last request \|/);
    const out = cli.output();
    assert.equal(
      countMatches(out, /INFO: Adding domain 'h\d+\.many\.test' for VM 'm\d+' with ip 127\.0\.\d+\.\d+/),
      100,
    );
    assert.equal(countMatches(out, /INFO: Adding A PTR for 'h\d+\.many\.test' with ttl=60 and ip=/), 100);
    assert.equal(countMatches(out, /Adding SOA 'many\.test' with ttl=60/), 1);
    // One table row per VM.
    assert.equal(countMatches(out, /\| m\d+ +\| off /), 100);
    assert.doesNotMatch(out, /Added \d+/);
    assert.doesNotMatch(out, /\d+ VMs: /);
    assert.match(out, /INFO: Stats table:\n\+--/, "a title, not an empty INFO line, before the table");
    assert.doesNotMatch(out, /INFO: *\n/);

    // A change of state is one line at info (the summoner's), not the table again.
    assert.equal((await dig(port, ["h7.many.test", "A"])).status, "NOERROR");
    await cli.waitFor(/INFO: VM 'm7' is ready after \d+ ms/);
    await new Promise((resolve) => setTimeout(resolve, 400)); // past the table's debounce
    assert.equal(countMatches(cli.output(), /Stats table:/), 1);
  });

  it("above 100 VMs: one summary line per kind and the states by count, at info", async () => {
    const { cli, port } = await start(101, "info");
    await cli.waitFor(
      /101 VMs: 101 off \(the full table at --log-level debug, or GET \/status with --http\)/,
    );
    const out = cli.output();
    assert.match(out, /INFO: Added 1 SOA with ttl=60 \('many\.test'\)/);
    assert.match(out, /INFO: Added 101 domains for 101 VMs \(one line each at --log-level debug\)/);
    assert.match(out, /INFO: Added 101 A and 0 AAAA PTRs with ttl=60/);
    assert.doesNotMatch(out, /Adding (domain|SOA|A PTR)/);
    assert.doesNotMatch(out, /\| total requests \|/);

    // Summoning one VM: the summoner's own line at info, no table or summary after it.
    const a = await dig(port, ["h100.many.test", "A"]);
    assert.equal(a.status, "NOERROR");
    assert.deepEqual(
      a.answers.map((r) => r.data),
      ["127.0.0.101"],
    );
    await cli.waitFor(/INFO: VM 'm100' is ready after \d+ ms/);
    await new Promise((resolve) => setTimeout(resolve, 400)); // past the table's debounce
    assert.doesNotMatch(cli.output(), /101 VMs: 1 ready/);
  });

  it("above 100 VMs at --log-level debug: the per-VM lines and the full table too", async () => {
    const { cli, port } = await start(101, "debug");
    await cli.waitFor(/\| total requests \| last request \|/);
    const out = cli.output();
    assert.equal(countMatches(out, /DEBUG: Adding domain 'h\d+\.many\.test' for VM 'm\d+' with ip /), 101);
    assert.equal(countMatches(out, /DEBUG: Adding A PTR for 'h\d+\.many\.test' with ttl=60 and ip=/), 101);
    assert.match(out, /DEBUG: Adding SOA 'many\.test' with ttl=60/);
    assert.match(out, /INFO: Added 101 domains for 101 VMs/);
    assert.match(out, /INFO: 101 VMs: 101 off/);
    assert.equal(countMatches(out, /\| m\d+ +\| off /), 101);
    // A change of state: the counts and the table follow it, at debug.
    assert.equal((await dig(port, ["h3.many.test", "A"])).status, "NOERROR");
    await cli.waitFor(/DEBUG: 101 VMs: 1 ready, 100 off; Stats table:/);
  });
});
