/**
 * The --http endpoint against clients a network brings: malformed request
 * targets (400, nothing logged above debug, token or not), more connections
 * than the cap, and clients that never finish their headers (slowloris).
 * Real sockets on loopback, the real Summoner with the in-memory backend.
 */
import { strict as assert } from "node:assert";
import net from "node:net";
import { describe, it, type TestContext } from "node:test";
import { ManualClock } from "../../src/clock/index.js";
import { HTTP_MAX_CONNECTIONS, JitsuMetrics, StatusServer } from "../../src/http/index.js";
import { createLogger } from "../../src/log/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { TestBackend, spec } from "../doubles/test-backend.js";
import { httpCall } from "../support/http.js";
import { summonerOptions } from "../support/summoner.js";

const TOKEN = "s3cret-token";

/** A StatusServer on 127.0.0.1:0 whose log lines (pino levels: 20 debug, 30 info, 50 error) are kept. */
async function start(
  t: TestContext,
  extra: { token?: string; headersTimeoutMs?: number } = {},
): Promise<{ port: number; levels: () => number[]; lines: string[]; backend: TestBackend }> {
  const clock = new ManualClock();
  const backend = new TestBackend();
  const lines: string[] = [];
  const log = createLogger({
    level: "trace",
    format: "json",
    destination: { write: (line: string) => void lines.push(line) },
  });
  const summoner = await Summoner.create(
    summonerOptions({ backend, specs: [spec("name=www,dns=www.example.org,ip=10.0.0.1")], clock, log }),
  );
  const metrics = new JitsuMetrics({ summoner, counters: null, clock, processMetrics: false });
  const server = new StatusServer({ summoner, metrics, log, ...extra });
  await server.listen("127.0.0.1", 0);
  t.after(async () => {
    await server.close();
    await summoner.close();
  });
  lines.length = 0; // start-up lines of the summoner
  const levels = (): number[] => lines.map((l) => (JSON.parse(l) as { level: number }).level);
  return { port: server.address().port, levels, lines, backend };
}

/**
 * Writes raw bytes on a new connection (then, with `trickle`, one more header
 * line every 100 ms); resolves with all it got back and when the server closed it.
 */
function raw(
  port: number,
  bytes: string,
  { trickle = false, timeoutMs = 8000 }: { trickle?: boolean; timeoutMs?: number } = {},
): Promise<{ reply: string; closedAfterMs: number; trickled: number }> {
  return new Promise((resolve, reject) => {
    const began = Date.now();
    const socket = net.connect(port, "127.0.0.1");
    let reply = "";
    let trickled = 0;
    const drip = trickle
      ? setInterval(() => {
          if (socket.writable) socket.write(`X-Drip-${trickled++}: 1\r\n`);
        }, 100)
      : undefined;
    const timer = setTimeout(() => {
      clearInterval(drip);
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; got ${JSON.stringify(reply)}`));
    }, timeoutMs);
    socket.on("data", (d: Buffer) => (reply += d.toString("latin1")));
    socket.on("error", () => {}); // a reset counts as a close
    socket.on("close", () => {
      clearTimeout(timer);
      clearInterval(drip);
      resolve({ reply, closedAfterMs: Date.now() - began, trickled });
    });
    if (bytes !== "") socket.write(bytes);
  });
}

describe("HTTP: malformed request targets", () => {
  for (const token of [undefined, TOKEN]) {
    it(`answer 400 and log nothing above debug (${token === undefined ? "no token" : "token"})`, async (t) => {
      const { port, levels, backend } = await start(t, token === undefined ? {} : { token });
      const auth: Record<string, string> = { authorization: `Bearer ${TOKEN}` };
      for (const path of ["/vms/%ZZ/start", "/vms/%/stop", "/vms/%E0%A4%A/start", "/vms/%C0%80/start"]) {
        for (const headers of [{}, auth]) {
          const res = await httpCall(port, "POST", path, headers);
          assert.equal(res.status, 400, `${path}: ${res.body}`);
          assert.match((JSON.parse(res.body) as { error: string }).error, /malformed percent-encoding/);
        }
      }
      // A target that is no URL at all ("//[" has a bad authority), sent as it is.
      const bad = await raw(port, "POST //[/vms/x/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      assert.match(bad.reply, /^HTTP\/1\.1 400 /);
      assert.ok(levels().length > 0, "the 400s are logged at debug");
      assert.deepEqual(
        levels().filter((l) => l > 20),
        [],
        "nothing above debug",
      );
      assert.deepEqual(backend.ops(), [], "nothing was started");
      // A well-formed escape still names the VM.
      const ok = await httpCall(port, "POST", "/vms/%77ww/start", auth);
      assert.equal(ok.status, token === undefined ? 403 : 200, ok.body);
    });
  }
});

describe("HTTP: connection limits", () => {
  it(`holds at most ${HTTP_MAX_CONNECTIONS} connections; the next is closed unanswered until one goes`, async (t) => {
    const { port } = await start(t);
    const held: net.Socket[] = [];
    t.after(() => held.forEach((s) => s.destroy()));
    // Each held connection has had an answer, so the server has accepted it; keep-alive keeps it open.
    await Promise.all(
      Array.from(
        { length: HTTP_MAX_CONNECTIONS },
        () =>
          new Promise<void>((resolve, reject) => {
            const s = net.connect(port, "127.0.0.1");
            held.push(s);
            s.on("error", reject);
            s.once("data", (d: Buffer) => {
              assert.match(d.toString(), /^HTTP\/1\.1 200 /);
              resolve();
            });
            s.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
          }),
      ),
    );
    const refused = await raw(port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert.equal(refused.reply, "", "the connection over the cap gets no answer");
    held.pop()!.destroy();
    // Once the server has seen that close, a new client is served again.
    const until = Date.now() + 3000;
    let served = false;
    while (!served && Date.now() < until) {
      served = await httpCall(port, "GET", "/healthz").then(
        (r) => r.status === 200,
        () => false,
      );
    }
    assert.ok(served, "a new client is served once a connection closes");
  });

  it("closes a connection that has not sent its headers within headersTimeout, trickling or silent", async (t) => {
    const { port } = await start(t, { headersTimeoutMs: 500 });
    // One header line every 100 ms: bytes keep coming, the headers never end.
    const trickle = raw(port, "GET /status HTTP/1.1\r\nHost: x\r\n", { trickle: true });
    const silent = raw(port, "");
    // Meanwhile a well-behaved client is answered at once.
    assert.equal((await httpCall(port, "GET", "/healthz")).status, 200);
    const trickled = await trickle;
    assert.ok(trickled.trickled >= 3, `the slow client sent ${trickled.trickled} header lines`);
    for (const r of [trickled, await silent]) {
      assert.ok(r.closedAfterMs >= 450, `closed after ${r.closedAfterMs} ms, before the timeout`);
      assert.ok(
        r.closedAfterMs < 4000,
        `closed after ${r.closedAfterMs} ms (Node checks every 30 s unless told otherwise)`,
      );
      assert.match(r.reply, /^HTTP\/1\.1 408 /);
    }
  });
});
