/**
 * Forwarding through the built CLI, asked with dig: a spoofing upstream sends
 * forged replies (wrong IDs, a wrong question, a wrong source port) at the
 * pool's ports while each real query is in flight; dig only ever sees the true
 * answers, and /metrics and /status count the forgeries that reached jitsu.
 * Alone and with --workers 2 (a pool per worker). Then --forward-random-case
 * (DNS 0x20): the question goes upstream in random case and comes back to dig
 * as asked; an upstream that lower-cases it gets SERVFAIL and one warning.
 *
 * The digs run 8 at a time, each from its own loopback address (digSource):
 * from one address, two of them could get one source port (dig's sockets are
 * SO_REUSEPORT) and the kernel would hand both answers to one dig, the other
 * timing out though jitsu answered it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";
import { getMetrics, httpCall } from "../support/http.js";
import {
  countMatches,
  dig,
  digSource,
  freePort,
  localArgs,
  startCli,
  tempDir,
  type CliProcess,
} from "../support/index.js";

interface ForwardStatus {
  dns: { forward: { queries: number; failures: number; coalesced: number; mismatched: number } | null };
}

/**
 * dig for each name, `window` at a time, each dig of a window from its own
 * source address (and from `sourcePort` if given); resolves with each answer's
 * A records.
 */
async function digAll(
  port: number,
  names: readonly string[],
  { window = 8, sourcePort }: { window?: number; sourcePort?: number } = {},
): Promise<string[][]> {
  const out: string[][] = [];
  for (let i = 0; i < names.length; i += window) {
    const batch = await Promise.all(
      names.slice(i, i + window).map(async (name, k) => {
        const r = await dig(port, [...digSource(k, sourcePort), name, "A"]);
        assert.equal(r.status, "NOERROR", r.raw);
        return r.answers.filter((a) => a.type === "A").map((a) => a.data);
      }),
    );
    out.push(...batch);
  }
  return out;
}

for (const workers of [1, 2]) {
  describe(`forwarding through the socket pool against a spoofing upstream, --workers ${workers} (e2e)`, () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let up: TestUpstream;
    let cli: CliProcess;
    let dns: number;
    let http: number;
    before(async () => {
      dir = await tempDir("jitsu-fwdpool-");
      up = await startUpstream("192.0.2.9");
      up.mode = "spoof";
      dns = await freePort();
      http = await freePort();
      cli = startCli([
        ...localArgs(dns, dir.path, { upstream: up.port }),
        "--http",
        `127.0.0.1:${http}`,
        "--workers",
        String(workers),
        "dns=www.jitsu.test,ip=127.0.0.5,name=www,exec=sleep 60",
      ]);
      await cli.waitFor(/Serving \/status/);
    });
    after(async () => {
      await cli.stop();
      await up.close();
      await dir.remove();
    });

    it("dig gets only true answers; the forgeries that reached jitsu are counted in /metrics and /status", async () => {
      const names = Array.from({ length: 40 }, (_, i) => `n${i}.spoof.example.net`);
      const answers = await digAll(dns, names);
      answers.forEach((a, i) => assert.deepEqual(a, ["192.0.2.9"], `${names[i]}: ${a.join(" ")}`));
      const { wrongId, wrongQuestion, wrongPort } = up.forged;
      assert.equal(wrongId, 40 * up.spoof.wrongIds);
      assert.equal(wrongPort, 40 * up.spoof.wrongPorts);
      const status = JSON.parse((await httpCall(http, "GET", "/status")).body) as ForwardStatus;
      assert.ok(status.dns.forward !== null);
      assert.equal(status.dns.forward.mismatched, wrongId + wrongQuestion, JSON.stringify(status.dns));
      assert.equal(status.dns.forward.queries, 40);
      assert.equal(status.dns.forward.failures, 0);
      const metrics = await getMetrics(http);
      assert.equal(metrics.get("jitsu_dns_forward_mismatched_total"), wrongId + wrongQuestion);
      // Each worker has its own pool of 64: the upstream saw at most 64 source ports per worker.
      const ports = new Set(up.received.map((x) => x.srcPort));
      assert.ok(ports.size <= 64 * workers, `${ports.size} source ports`);
    });

    it("clients on one source port, each from its own address, each get their own answer", async () => {
      // What dig's SO_REUSEPORT sockets may do by chance, made certain: 8 digs at once bound
      // to one port. Each must get the answer to its own query at its own address.
      const names = Array.from({ length: 8 }, (_, i) => `p${i}.spoof.example.net`);
      const answers = await digAll(dns, names, { sourcePort: await freePort() });
      answers.forEach((a, i) => assert.deepEqual(a, ["192.0.2.9"], `${names[i]}: ${a.join(" ")}`));
    });
  });
}

describe("--forward-random-case (DNS 0x20) through the CLI (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let up: TestUpstream;
  let cli: CliProcess;
  let dns: number;
  before(async () => {
    dir = await tempDir("jitsu-0x20-");
    up = await startUpstream("192.0.2.10");
    dns = await freePort();
    cli = startCli([
      ...localArgs(dns, dir.path, { upstream: up.port }),
      "--forward-random-case",
      "--forward-sockets",
      "64",
      "--forward-socket-queries",
      "10",
      "dns=www.jitsu.test,ip=127.0.0.5,name=www,exec=sleep 60",
    ]);
    await cli.waitFor(/Starting server/);
  });
  after(async () => {
    await cli.stop();
    await up.close();
    await dir.remove();
  });

  it("asks upstream in random case, answers dig with the question as asked", async () => {
    up.mode = "answer";
    up.received.length = 0;
    const asked = "CaseTest.Random-Letters.Example.NET";
    const r = await dig(dns, [asked, "A"]);
    assert.equal(r.status, "NOERROR", r.raw);
    assert.deepEqual(
      r.answers.map((a) => a.data),
      ["192.0.2.10"],
    );
    assert.match(r.raw, new RegExp(`;${asked.replace(/\./g, "\\.")}\\.\\s+IN\\s+A`), r.raw);
    const sent = up.received[0]!.packet.questions![0]!.name;
    assert.equal(sent.toLowerCase(), asked.toLowerCase());
    // 28 letters: the very case dig used, or all lower case, each has odds of 2^-28.
    assert.notEqual(sent, asked);
    assert.notEqual(sent, asked.toLowerCase());
  });

  it("an upstream that lower-cases the question: SERVFAIL, and one warning naming the option", async () => {
    up.mode = "lowercase";
    try {
      for (const name of ["lower1.example.net", "lower2.example.net"]) {
        const r = await dig(dns, [name, "A"]);
        assert.equal(r.status, "SERVFAIL", r.raw);
      }
    } finally {
      up.mode = "answer";
    }
    assert.equal(countMatches(cli.output(), /--forward-random-case off/), 1, cli.output());
  });
});
