/**
 * The Activator's relay with a real Summoner (the summoner tests' in-memory
 * backend) and real sockets on 127.0.0.1, once with the splice relay (the
 * native addon, built by `npm run build`) and once relaying in JavaScript
 * (the fallback where the addon is not built): bytes identical both ways with
 * half-close, a client that stops reading, resets both ways, the counters,
 * connections as activity, and a VM that refuses after its port was enabled.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { Activator } from "../../src/activator/index.js";
import { SPLICE_ADDON, SpliceRelay } from "../../src/activator/splice-relay.js";
import { systemClock } from "../../src/clock/index.js";
import { silentLogger } from "../../src/log/index.js";
import { Summoner } from "../../src/summoner/index.js";
import { TestBackend, spec } from "../doubles/test-backend.js";
import { freePort } from "../support/index.js";
import { summonerOptions } from "../support/summoner.js";

type Handler = (socket: net.Socket) => void;

/** Echoes every byte and half-closes when the client does. */
const echo: Handler = (socket) => {
  socket.on("error", () => socket.destroy());
  socket.pipe(socket);
};

function listen(port: number, handler: () => Handler): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => handler()(s));
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Sends `size` random bytes, half-closes, reads all back: both checksums and the count read. */
function exchange(port: number, size: number): Promise<{ sent: string; received: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const data = randomBytes(size);
    const received = createHash("sha256");
    let bytes = 0;
    const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true }, () => socket.end(data));
    socket.on("error", reject);
    socket.on("data", (chunk: Buffer) => {
      received.update(chunk);
      bytes += chunk.length;
    });
    socket.on("end", () => {
      socket.destroy();
      resolve({
        sent: createHash("sha256").update(data).digest("hex"),
        received: received.digest("hex"),
        bytes,
      });
    });
  });
}

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("SpliceRelay.load", () => {
  it("is null where the addon is not built (the activator then relays in JavaScript)", () => {
    assert.equal(
      SpliceRelay.load(() => undefined, "/nonexistent/jitsu_splice_relay.node"),
      null,
    );
  });
});

const RELAYS = ["splice", "js"] as const;

for (const relay of RELAYS) {
  describe(`Activator relaying in ${relay === "splice" ? "the splice relay (native)" : "JavaScript"}`, () => {
    let summoner: Summoner;
    let activator: Activator;
    let server: net.Server;
    let handler: Handler = echo;
    let hold: number;
    let vmPort: number;

    const requests = (): number => summoner.status().find((v) => v.label === "www")!.totalRequests;
    const open = (): number => summoner.openConnections().get("www") ?? 0;

    before(async () => {
      if (relay === "splice")
        assert.ok(
          existsSync(SPLICE_ADDON),
          `${SPLICE_ADDON} is not built (npm run build needs make and g++)`,
        );
      hold = await freePort();
      vmPort = await freePort();
      server = await listen(vmPort, () => handler);
      summoner = await Summoner.create(
        summonerOptions({
          backend: new TestBackend(),
          specs: [spec("name=www,dns=www.example.org,ip=127.0.0.1")],
          clock: systemClock,
        }),
      );
      activator = new Activator({
        host: summoner,
        log: silentLogger(),
        clock: systemClock,
        startTimeoutSeconds: 10,
        relay,
        tickMs: 500,
      });
      await activator.apply([{ label: "www", address: "127.0.0.1", ports: [{ port: hold, vmPort }] }]);
    });

    after(async () => {
      await activator.close();
      await summoner.close();
      await closeServer(server);
    });

    it(`says how it relays: ${relay}`, () => {
      assert.equal(activator.status().relay, relay);
    });

    it("relays warm connections byte-identical both ways, half-closed, and counts them", async () => {
      const before = activator.status();
      const requests0 = requests();
      const first = await exchange(hold, 64 * 1024); // summons, relays, enables the native path
      assert.equal(first.received, first.sent);
      const size = 2 * 1024 * 1024;
      const all = await Promise.all(Array.from({ length: 10 }, () => exchange(hold, size)));
      for (const x of all) {
        assert.equal(x.bytes, size);
        assert.equal(x.received, x.sent);
      }
      const total = 64 * 1024 + 10 * size;
      await until("every relay closed", () => activator.status().relaying === 0);
      const s = activator.status();
      assert.equal(s.accepted - before.accepted, 11);
      assert.equal(s.splices - before.splices, 11);
      assert.equal(s.bytesToVm - before.bytesToVm, total);
      assert.equal(s.bytesFromVm - before.bytesFromVm, total);
      assert.equal(s.relayErrors, before.relayErrors);
      if (relay === "splice") assert.equal(s.nativeSplices - before.nativeSplices, 10);
      else assert.equal(s.nativeSplices, 0);
      // Each connection is a request of its VM (the native ones at the next tick).
      await until("11 requests counted", () => requests() - requests0 === 11);
    });

    it("a client that stops reading holds the VM back (bounded), then gets every byte", async () => {
      const total = 96 * 1024 * 1024;
      const block = Buffer.alloc(1024 * 1024, 0x5a);
      let sender: net.Socket | null = null;
      handler = (socket) => {
        sender = socket;
        socket.on("error", () => socket.destroy());
        let left = total;
        const write = (): void => {
          while (left > 0) {
            left -= block.length;
            if (!socket.write(block)) return void socket.once("drain", write);
          }
          socket.end();
        };
        socket.once("data", write);
      };
      try {
        let got = 0;
        const client = net.connect({ host: "127.0.0.1", port: hold }, () => client.write("B"));
        client.pause();
        await until("the VM to send", () => sender !== null);
        await new Promise((r) => setTimeout(r, 1000));
        const s = sender! as net.Socket;
        const accepted = s.bytesWritten - s.writableLength;
        assert.ok(accepted < total / 2, `the VM could send ${accepted} bytes to a client that reads nothing`);
        const done = new Promise<void>((resolve, reject) => {
          client.on("data", (chunk: Buffer) => (got += chunk.length));
          client.on("end", resolve);
          client.on("error", reject);
        });
        client.resume();
        await done;
        client.destroy();
        assert.equal(got, total);
      } finally {
        handler = echo;
      }
    });

    it("a reset from the VM resets the client; a reset from the client reaches the VM", async () => {
      const errors0 = activator.status().relayErrors;
      handler = (socket) => socket.once("data", () => socket.resetAndDestroy());
      try {
        const code = await new Promise<string>((resolve) => {
          const c = net.connect({ host: "127.0.0.1", port: hold }, () => c.write("x"));
          c.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "?"));
          c.on("end", () => resolve("end"));
        });
        assert.equal(code, "ECONNRESET");

        const vmSide = new Promise<string>((resolve) => {
          handler = (socket) => {
            socket.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "?"));
            socket.on("end", () => resolve("end"));
            socket.once("data", () => c.resetAndDestroy());
          };
        });
        const c = net.connect({ host: "127.0.0.1", port: hold }, () => c.write("x"));
        c.on("error", () => undefined);
        assert.equal(await vmSide, "ECONNRESET");
        await until("both resets counted", () => activator.status().relayErrors - errors0 === 2);
      } finally {
        handler = echo;
      }
    });

    it("a connection keeps its VM busy while open; once idle, none is counted", async () => {
      let vmSocket: net.Socket | null = null;
      handler = (socket) => {
        vmSocket = socket;
        socket.on("error", () => socket.destroy());
        socket.on("end", () => socket.end());
      };
      try {
        const c = net.connect({ host: "127.0.0.1", port: hold });
        c.on("error", () => undefined);
        await until("the VM to see it", () => vmSocket !== null);
        await new Promise((r) => setTimeout(r, 200)); // a few ticks
        assert.ok(open() >= 1, "an open relayed connection is activity");
        c.destroy();
        await until("no connection counted once idle", () => open() === 0);
      } finally {
        handler = echo;
      }
    });

    it("after an idle tick, the next connection to the ready VM is relayed at accept", async () => {
      assert.equal((await exchange(hold, 100)).bytes, 100);
      await until("the port idle (no connection counted)", () => open() === 0);
      const before = activator.status();
      const x = await exchange(hold, 5000);
      assert.equal(x.received, x.sent);
      const s = activator.status();
      assert.equal(s.accepted - before.accepted, 1);
      assert.equal(s.splices - before.splices, 1);
      assert.equal(s.nativeSplices - before.nativeSplices, relay === "splice" ? 1 : 0);
    });

    it("the idle clock starts when the last connection closed, not at the tick that sees it", async () => {
      await until("the port idle (no connection counted)", () => open() === 0);
      const began = Date.now();
      const x = await exchange(hold, 1000);
      const closedBy = Date.now();
      assert.equal(x.received, x.sent);
      await until("the port idle again", () => open() === 0);
      const www = summoner.status().find((v) => v.label === "www")!;
      // The tick is every 500 ms here: dated at the tick, it could be up to ~1 s late.
      assert.ok(
        www.lastConnection !== null && www.lastConnection >= began && www.lastConnection <= closedBy + 20,
        `last connection at ${www.lastConnection}: between ${began} and ${closedBy}`,
      );
      assert.ok(
        www.lastRequest !== null && www.lastRequest <= closedBy + 20,
        `last request at ${www.lastRequest}`,
      );
    });

    it("a VM that refuses after its port was enabled: the connection is held, then relayed", async () => {
      assert.equal((await exchange(hold, 100)).bytes, 100);
      await closeServer(server);
      const pending = exchange(hold, 1000);
      await new Promise((r) => setTimeout(r, 300));
      server = await listen(vmPort, () => handler);
      const x = await pending;
      assert.equal(x.received, x.sent);
      assert.equal(x.bytes, 1000);
      const y = await exchange(hold, 1000); // and the next one as before
      assert.equal(y.received, y.sent);
    });
  });
}
