/**
 * The built CLI with the process backend, queried with real dig and kdig:
 * summon on a query, answer only when ready, stop when idle, summon again.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  DEMO_SERVICE,
  countMatches,
  dig,
  digSource,
  freePort,
  localArgs,
  queryMany,
  run,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";
import { httpGet } from "../support/http.js";

describe("jitsu with the process backend (e2e)", () => {
  let dns: number;
  let http: number;
  let cli: CliProcess;
  let dir: Awaited<ReturnType<typeof tempDir>>;

  before(async () => {
    dir = await tempDir();
    dns = await freePort();
    http = await freePort();
    cli = startCli([
      ...localArgs(dns, dir.path),
      "-t",
      "1",
      `dns=www.jitsu.test,dns=alias.jitsu.test,ip=127.0.0.1,ip=::1,name=www,exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${http} www 0.3,ready=http://127.0.0.1:${http}/`,
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/);
  });

  after(async () => {
    await cli.stop();
    await dir.remove();
  });

  it("logs what it serves, as the original does", () => {
    const out = cli.output();
    assert.match(out, /Adding domain 'www\.jitsu\.test' for VM 'www' with ip 127\.0\.0\.1/);
    assert.match(out, /Adding SOA 'jitsu\.test' with ttl=1/);
    assert.match(out, /Adding A PTR for 'www\.jitsu\.test' with ttl=1 and ip=127\.0\.0\.1/);
  });

  it("summons the VM on a query and answers once it serves HTTP", async () => {
    await assert.rejects(httpGet(http));
    const res = await dig(dns, ["www.jitsu.test", "A"]);
    assert.equal(res.status, "NOERROR");
    assert.ok(res.flags.includes("aa"), `flags: ${res.flags.join(" ")}`);
    assert.deepEqual(
      res.answers.map((a) => [a.name, a.ttl, a.type, a.data]),
      [["www.jitsu.test.", 1, "A", "127.0.0.1"]],
    );
    assert.match(await httpGet(http), /Hello from 'www'/);
  });

  it("answers AAAA and TCP queries, and keeps the question's case", async () => {
    const aaaa = await dig(dns, ["+tcp", "WWW.Jitsu.Test", "AAAA"]);
    assert.equal(aaaa.status, "NOERROR");
    assert.deepEqual(
      aaaa.answers.map((a) => [a.name, a.type, a.data]),
      [["WWW.Jitsu.Test.", "AAAA", "::1"]],
    );
    const kdig = await run("kdig", [`@127.0.0.1`, "-p", String(dns), "+tcp", "alias.jitsu.test", "A"]);
    assert.equal(kdig.code, 0);
    assert.match(kdig.stdout, /alias\.jitsu\.test\.\s+1\s+IN\s+A\s+127\.0\.0\.1/);
  });

  it("answers SOA, NS and PTR from the zone, authoritatively", async () => {
    const soa = await dig(dns, ["jitsu.test", "SOA"]);
    assert.equal(soa.status, "NOERROR");
    assert.ok(soa.flags.includes("aa"));
    assert.equal(soa.answers[0]?.type, "SOA");
    const ns = await dig(dns, ["jitsu.test", "NS"]);
    assert.equal(ns.answers[0]?.type, "NS");
    const ptr = await dig(dns, ["-x", "127.0.0.1"]);
    assert.equal(ptr.status, "NOERROR");
    assert.deepEqual(
      ptr.answers.map((a) => a.data),
      ["www.jitsu.test.", "alias.jitsu.test."],
    );
  });

  it("with forwarding off: NXDOMAIN with SOA inside the zone, REFUSED outside", async () => {
    const nx = await dig(dns, ["nothere.jitsu.test", "A"]);
    assert.equal(nx.status, "NXDOMAIN");
    assert.equal(nx.authority[0]?.type, "SOA");
    const refused = await dig(dns, ["example.com", "A"]);
    assert.equal(refused.status, "REFUSED");
  });

  it("stops the VM after 2 x TTL idle, and summons it again with one start for many queries", async () => {
    await cli.waitFor(/Stopping VM 'www'/, 20_000);
    await cli.waitFor(/VM 'www' (is )?(stopped|off)/i, 20_000).catch(() => undefined);
    await assert.rejects(httpGet(http));
    const startsBefore = countMatches(cli.output(), /Starting VM 'www'/);
    const readyBefore = countMatches(cli.output(), /VM 'www' is ready after/);
    // 200 concurrent queries from 200 source ports, plus a few real digs.
    const [answers, digs] = await Promise.all([
      queryMany(dns, "www.jitsu.test", 200),
      Promise.all(Array.from({ length: 5 }, (_, k) => dig(dns, [...digSource(k), "www.jitsu.test", "A"]))),
    ]);
    assert.equal(answers.filter((a) => a === "127.0.0.1").length, 200, answers.join(" "));
    for (const a of digs) {
      assert.equal(a.status, "NOERROR");
      assert.equal(a.answers[0]?.data, "127.0.0.1");
    }
    // The answers can be read before the log lines written ahead of them (another pipe).
    await waitFor(
      () => countMatches(cli.output(), /VM 'www' is ready after/) > readyBefore,
      5000,
      "the ready line",
    );
    assert.equal(countMatches(cli.output(), /Starting VM 'www'/) - startsBefore, 1, cli.output());
    assert.match(await httpGet(http), /Hello from 'www'/);
  });
});

describe("jitsu forwarding to an upstream (e2e)", () => {
  it("forwards names it does not manage to the upstream given with -f/-p", async (t) => {
    const dir = await tempDir();
    const upPort = await freePort();
    const port = await freePort();
    // The upstream is a second jitsu serving other.test (no VM process is needed to answer SOA).
    const upstream = startCli([
      ...localArgs(upPort, dir.path),
      "dns=www.other.test,ip=192.0.2.7,name=o,exec=true",
    ]);
    const front = startCli(localArgs(port, dir.path, { upstream: upPort }));
    t.after(async () => {
      await front.stop();
      await upstream.stop();
      await dir.remove();
    });
    await upstream.waitFor(/Starting server/);
    await front.waitFor(/Starting server/);
    const soa = await dig(port, ["other.test", "SOA"]);
    assert.equal(soa.status, "NOERROR");
    assert.equal(soa.answers[0]?.type, "SOA");
    assert.equal(soa.answers[0]?.name, "other.test.");
    const nx = await dig(port, ["nothere.other.test", "A"]);
    assert.equal(nx.status, "NXDOMAIN");
  });

  it("answers SERVFAIL when the upstream does not answer", async (t) => {
    const dir = await tempDir();
    const silent = await freePort();
    const port = await freePort();
    const front = startCli(localArgs(port, dir.path, { upstream: silent }));
    t.after(async () => {
      await front.stop();
      await dir.remove();
    });
    await front.waitFor(/Starting server/);
    const res = await dig(port, ["example.com", "A"]);
    assert.equal(res.status, "SERVFAIL");
  });
});

describe("jitsu shutdown (e2e)", () => {
  it("SIGTERM with --stop-on-exit stops the VMs it started and exits 0", async (t) => {
    const dir = await tempDir();
    const dns = await freePort();
    const http = await freePort();
    const cli = startCli([
      ...localArgs(dns, dir.path), // with --stop-on-exit
      `dns=svc.jitsu.test,ip=127.0.0.1,name=svc,exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${http} svc 0,ready=tcp:${http}`,
    ]);
    t.after(async () => {
      await cli.stop("SIGKILL");
      await dir.remove();
    });
    await cli.waitFor(/Starting server/);
    const res = await dig(dns, ["svc.jitsu.test"]);
    assert.equal(res.status, "NOERROR");
    assert.match(await httpGet(http), /Hello from 'svc'/);
    assert.equal(await cli.stop("SIGTERM"), 0);
    await assert.rejects(httpGet(http));
  });
});
