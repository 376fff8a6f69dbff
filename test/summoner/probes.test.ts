import assert from "node:assert/strict";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { after, describe, it } from "node:test";
import { describeProbe, probeOnce } from "../../src/summoner/index.js";

function listen(server: Server | ReturnType<typeof createTcpServer>): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
}

async function closedPort(): Promise<number> {
  const s = createTcpServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

describe("readiness probes (loopback)", () => {
  const servers: { close(): void }[] = [];
  after(() => servers.forEach((s) => s.close()));

  it("tcp passes when something listens and fails when nothing does", async () => {
    const server = createTcpServer((c) => c.end());
    servers.push(server);
    const port = await listen(server);
    assert.equal(await probeOnce({ kind: "tcp", host: "127.0.0.1", port }), true);
    assert.equal(await probeOnce({ kind: "tcp", host: "127.0.0.1", port: await closedPort() }), false);
    assert.equal(describeProbe({ kind: "tcp", host: "127.0.0.1", port: 80 }), "tcp:127.0.0.1:80");
  });

  it("http passes on 2xx and 3xx, fails on 4xx/5xx, silence and refusal", async () => {
    const server = createHttpServer((req, res) => {
      if (req.url === "/hang") return; // never answers
      res.statusCode = Number(req.url?.slice(1));
      res.end();
    });
    servers.push({ close: () => server.closeAllConnections() });
    servers.push(server);
    const port = await listen(server);
    const probe = (path: string) => probeOnce({ kind: "http", url: `http://127.0.0.1:${port}${path}` }, 300);
    assert.equal(await probe("/200"), true);
    assert.equal(await probe("/204"), true);
    assert.equal(await probe("/302"), true);
    assert.equal(await probe("/404"), false);
    assert.equal(await probe("/503"), false);
    const began = Date.now();
    assert.equal(await probe("/hang"), false);
    assert.ok(Date.now() - began < 2000, "one attempt is bounded by its timeout");
    assert.equal(await probeOnce({ kind: "http", url: `http://127.0.0.1:${await closedPort()}/` }), false);
  });
});
