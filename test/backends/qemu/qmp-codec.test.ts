/**
 * The QMP codec on inputs a healthy QEMU does not send but a socket may carry:
 * messages split across reads or packed into one, replies out of order, and
 * garbage. The peer is a plain unix socket in a temp dir speaking QMP's
 * framing (one JSON object a line, docs/interop/qmp-spec.rst).
 */
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ManualClock } from "../../../src/clock/index.js";
import { BackendError } from "../../../src/errors/index.js";
import { QmpClient, QmpError } from "../../../src/backends/qemu/index.js";
import { tempDir } from "../../support/index.js";

const GREETING = JSON.stringify({
  QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 }, package: "test" }, capabilities: ["oob"] },
});

/** A peer that greets, answers qmp_capabilities, then hands each command to `onCommand`. */
function peer(
  path: string,
  onCommand: (sock: Socket, msg: { execute: string; id: string; arguments?: unknown }) => void,
  greeting: (sock: Socket) => void = (sock) => {
    // Split mid-object: the client must reassemble lines.
    sock.write(GREETING.slice(0, 10));
    setTimeout(() => sock.write(`${GREETING.slice(10)}\r\n`), 20);
  },
): Promise<Server> {
  const server = createServer((sock) => {
    let buf = "";
    greeting(sock);
    sock.on("data", (chunk) => {
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
        buf = buf.slice(nl + 1);
        if (msg.execute === "qmp_capabilities")
          sock.write(`${JSON.stringify({ return: {}, id: msg.id })}\r\n`);
        else onCommand(sock, msg);
      }
    });
    sock.on("error", () => undefined);
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

describe("QMP codec", () => {
  let dir: { path: string; remove(): Promise<void> };
  const servers: Server[] = [];
  const clients: QmpClient[] = [];
  before(async () => {
    dir = await tempDir("jitsu-qmp-codec-");
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await dir.remove();
  });

  it("reassembles split messages, splits packed ones, and matches replies given in another order", async () => {
    const path = join(dir.path, "a.sock");
    const held: { sock: Socket; id: string; execute: string }[] = [];
    servers.push(
      await peer(path, (sock, msg) => {
        held.push({ sock, id: msg.id, execute: msg.execute });
        if (held.length < 3) return;
        // All three replies and an event in one write, in reverse order.
        const lines = [
          JSON.stringify({
            event: "STOP",
            data: {},
            timestamp: { seconds: 1700000000, microseconds: 500000 },
          }),
          ...held.reverse().map((h) => JSON.stringify({ return: { echo: h.execute }, id: h.id })),
        ];
        sock.write(`${lines.join("\r\n")}\r\n`);
      }),
    );
    const qmp = await QmpClient.connect(path, { timeoutMs: 5000 });
    clients.push(qmp);
    assert.deepEqual(qmp.greeting.capabilities, ["oob"]);
    const stop = qmp.waitForEvent("STOP", 5000);
    const replies = await Promise.all(["a", "b", "c"].map((c) => qmp.execute<{ echo: string }>(c)));
    assert.deepEqual(
      replies.map((r) => r.echo),
      ["a", "b", "c"],
    );
    assert.equal((await stop).timestamp, 1700000000.5);
  });

  it("an error reply without class or desc still becomes a QmpError", async () => {
    const path = join(dir.path, "b.sock");
    servers.push(
      await peer(path, (sock, msg) => sock.write(`${JSON.stringify({ error: {}, id: msg.id })}\r\n`)),
    );
    const qmp = await QmpClient.connect(path, { timeoutMs: 5000 });
    clients.push(qmp);
    const err = await qmp.execute("x").catch((e: unknown) => e);
    assert.ok(err instanceof QmpError);
    assert.equal(err.errorClass, "UnknownError");
    assert.match(err.message, /^qemu: QMP command 'x' failed \(UnknownError: \{\}\)$/);
  });

  it("garbage on the socket ends the connection with a clear one-line error; pending commands fail", async () => {
    const path = join(dir.path, "c.sock");
    servers.push(await peer(path, (sock) => sock.write("this is not json\r\n")));
    const qmp = await QmpClient.connect(path, { timeoutMs: 5000 });
    clients.push(qmp);
    await assert.rejects(qmp.execute("query-status"), (e: unknown) => {
      assert.ok(e instanceof BackendError);
      assert.match(
        e.message,
        /closed before the reply to 'query-status' \(QEMU sent a line that is not JSON: this is not json\)$/,
      );
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
    assert.equal(qmp.closed, true);
  });

  it("a peer that never greets times out with a message naming the socket", async () => {
    const path = join(dir.path, "d.sock");
    servers.push(
      await peer(
        path,
        () => undefined,
        () => undefined,
      ),
    );
    await assert.rejects(QmpClient.connect(path, { timeoutMs: 300 }), (e: unknown) => {
      assert.ok(e instanceof BackendError);
      assert.match(e.message, /QMP socket .*d\.sock: no greeting within 300 ms/);
      return true;
    });
  });

  it("a command with a timeout rejects when no reply comes", async () => {
    const path = join(dir.path, "e.sock");
    servers.push(await peer(path, () => undefined));
    const qmp = await QmpClient.connect(path, { timeoutMs: 5000 });
    clients.push(qmp);
    await assert.rejects(
      qmp.execute("slow", undefined, { timeoutMs: 100 }),
      /QMP command 'slow' got no reply within 100 ms/,
    );
    assert.equal(qmp.closed, false);
  });

  it("its timeouts run on the injected clock, not on real time", async () => {
    const path = join(dir.path, "f.sock");
    servers.push(await peer(path, () => undefined));
    const clock = new ManualClock();
    const qmp = await QmpClient.connect(path, { timeoutMs: 5000, clock });
    clients.push(qmp);
    const outcome = (p: Promise<unknown>): { text: string } => {
      const o = { text: "pending" };
      p.then(
        () => (o.text = "settled"),
        (e: Error) => (o.text = e.message),
      );
      return o;
    };
    const slow = outcome(qmp.execute("slow", undefined, { timeoutMs: 100 }));
    const stop = outcome(qmp.waitForEvent("STOP", 100));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(slow.text, "pending", "100 ms of real time are not 100 ms of the clock");
    assert.equal(stop.text, "pending");
    await clock.advance(100);
    assert.match(slow.text, /QMP command 'slow' got no reply within 100 ms/);
    assert.match(stop.text, /no QMP event STOP within 100 ms/);
  });
});
