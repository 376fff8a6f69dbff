/**
 * Labels whose values come from the network stay a bounded set: one query for
 * each of the 65,536 QTYPEs (which made jitsu_dns_queries_total 65,536 series
 * and /metrics 2.9 MB) leaves /metrics about as small as before. Real UDP from
 * the test, the built CLI, /metrics over HTTP; alone and with --workers 2.
 */
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { httpCall } from "../support/http.js";
import { freePort, localArgs, startCli, tempDir, type CliProcess } from "../support/index.js";

/** Sends one query per QTYPE (0-65535) for `name`, at most `window` unanswered at once; resolves with the answers seen. */
async function everyQtype(port: number, name: string, window = 128): Promise<number> {
  const sock = createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
  await new Promise<void>((resolve) => sock.bind(0, "127.0.0.1", () => resolve()));
  const template = dnsPacket.encode({
    type: "query",
    id: 0,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "A", name }],
  });
  const typeAt = template.length - 4;
  let next = 0;
  let inFlight = 0;
  let answered = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`only ${answered} answers after 120 s`)), 120_000);
      // A lost packet must not stall the window: after 300 ms without an answer, refill it.
      let lastAnswer = Date.now();
      const refill = setInterval(() => {
        if (Date.now() - lastAnswer < 300) return;
        lastAnswer = Date.now();
        inFlight = 0;
        pump();
      }, 100);
      const finish = (): void => {
        clearTimeout(deadline);
        clearInterval(refill);
        resolve();
      };
      const pump = (): void => {
        while (inFlight < window && next < 65536) {
          const q = Buffer.from(template);
          q.writeUInt16BE(next & 0xffff, 0);
          q.writeUInt16BE(next, typeAt);
          next++;
          inFlight++;
          sock.send(q, port, "127.0.0.1");
        }
        if (next === 65536 && (inFlight === 0 || answered >= 65536)) finish();
      };
      sock.on("message", () => {
        answered++;
        lastAnswer = Date.now();
        inFlight = Math.max(0, inFlight - 1);
        pump();
      });
      pump();
    });
    // The last answers in flight.
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    sock.close();
  }
  return answered;
}

for (const workers of [1, 2]) {
  describe(`bounded metric labels, --workers ${workers} (e2e)`, () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let cli: CliProcess;
    let dns: number;
    let http: number;
    before(async () => {
      dir = await tempDir("jitsu-labels-");
      dns = await freePort();
      http = await freePort();
      cli = startCli([
        ...localArgs(dns, dir.path),
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
      await dir.remove();
    });

    it("65,536 distinct QTYPEs: jitsu_dns_queries_total keeps one series per known type plus 'other'", async () => {
      const before = (await httpCall(http, "GET", "/metrics")).body;
      const answered = await everyQtype(dns, "www.jitsu.test");
      assert.ok(answered > 60_000, `${answered} answers`);
      const text = (await httpCall(http, "GET", "/metrics")).body;
      const series = text.split("\n").filter((l) => l.startsWith("jitsu_dns_queries_total{"));
      assert.ok(series.length <= 48, `${series.length} series:\n${series.join("\n")}`);
      const other = series.find((l) => l.startsWith('jitsu_dns_queries_total{type="other"}'));
      assert.ok(other !== undefined && Number(other.split(" ")[1]) > 60_000, other);
      assert.ok(series.some((l) => l.startsWith('jitsu_dns_queries_total{type="MX"} ')));
      // Every series of every metric, not only this one: /metrics grows by at most a few KB.
      assert.ok(
        text.length < before.length + 8192,
        `/metrics grew from ${before.length} to ${text.length} bytes`,
      );
      const status = JSON.parse((await httpCall(http, "GET", "/status")).body) as {
        dns: { refused: object };
      };
      assert.ok(JSON.stringify(status).length < 8192);
      assert.ok((status.dns.refused as Record<string, number>).transfer! >= 2, JSON.stringify(status.dns));
    });
  });
}
