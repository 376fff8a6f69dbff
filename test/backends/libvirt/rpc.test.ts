/**
 * RPC framing (virnetprotocol.x "RPC wire format") fed byte by byte, out of
 * order, or malformed: what a unix socket to a local daemon rarely shows but
 * TCP, TLS and ssh do. The daemon side here is bytes written by the test.
 */
import assert from "node:assert/strict";
import { Duplex, PassThrough } from "node:stream";
import { describe, it } from "node:test";
import {
  KEEPALIVE_PING,
  KEEPALIVE_PONG,
  KEEPALIVE_PROGRAM,
  MessageStatus,
  MessageType,
  Proc,
  REMOTE_PROGRAM,
  readHeader,
  writeRemoteError,
} from "../../../src/backends/libvirt/protocol.js";
import {
  ConnectionLostError,
  LibvirtError,
  ProtocolError,
  RpcClient,
  encodePacket,
} from "../../../src/backends/libvirt/rpc.js";
import { XdrReader } from "../../../src/backends/libvirt/xdr.js";

/** A client stream whose far end the test reads (`sent`) and writes (`reply`). */
function pair(): { stream: Duplex; sent: Buffer[]; reply(b: Buffer): void; end(): void } {
  const toClient = new PassThrough();
  const sent: Buffer[] = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _e, cb) {
      sent.push(Buffer.from(chunk));
      cb();
    },
  });
  toClient.on("data", (c: Buffer) => stream.push(c));
  toClient.on("end", () => stream.push(null));
  return { stream, sent, reply: (b) => toClient.write(b), end: () => toClient.end() };
}

function reply(
  proc: number,
  serial: number,
  payload?: (w: import("../../../src/backends/libvirt/xdr.js").XdrWriter) => void,
  status = MessageStatus.Ok,
): Buffer {
  return encodePacket(
    { prog: REMOTE_PROGRAM, vers: 1, proc, type: MessageType.Reply, serial, status },
    payload,
  );
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe("libvirt RPC framing", () => {
  it("matches replies to calls by serial, in any order and in any chunking", async () => {
    const p = pair();
    const rpc = new RpcClient(p.stream);
    const a = rpc.call(Proc.DOMAIN_GET_STATE, (w) => w.int(1));
    const b = rpc.call(Proc.CONNECT_SUPPORTS_FEATURE, (w) => w.int(10));
    await tick();
    const serials = p.sent.map((pkt) => readHeader(new XdrReader(pkt, 4)).serial);
    assert.equal(new Set(serials).size, 2);
    // b's reply first, then a's, split into 1-byte chunks and glued together.
    const bytes = Buffer.concat([
      reply(Proc.CONNECT_SUPPORTS_FEATURE, serials[1]!, (w) => w.int(1)),
      reply(Proc.DOMAIN_GET_STATE, serials[0]!, (w) => w.int(3).int(1)),
    ]);
    for (const byte of bytes) p.reply(Buffer.from([byte]));
    assert.equal((await b).int(), 1);
    const ra = await a;
    assert.deepEqual([ra.int(), ra.int()], [3, 1]);
    assert.equal(rpc.inFlight, 0);
  });

  it("turns error replies into LibvirtError with libvirt's code, domain and message", async () => {
    const p = pair();
    const rpc = new RpcClient(p.stream);
    const call = rpc.call(Proc.DOMAIN_LOOKUP_BY_NAME, (w) => w.string("x"));
    await tick();
    p.reply(
      reply(
        Proc.DOMAIN_LOOKUP_BY_NAME,
        0,
        (w) =>
          writeRemoteError(w, {
            code: 42,
            domain: 10,
            message: "Domain not found: no domain with matching name 'x'",
            level: 2,
            str1: null,
            str2: null,
            str3: null,
            int1: 0,
            int2: 0,
          }),
        MessageStatus.Error,
      ),
    );
    await assert.rejects(call, (err: unknown) => {
      assert.ok(err instanceof LibvirtError);
      assert.equal(err.code, 42);
      assert.equal(err.domain, 10);
      assert.equal(err.message, "Domain not found: no domain with matching name 'x'");
      return true;
    });
  });

  it("answers the daemon's PING with a PONG, and hands events to the listener", async () => {
    const p = pair();
    const events: number[] = [];
    const rpc = new RpcClient(p.stream, { onMessage: (proc) => events.push(proc) });
    p.reply(
      encodePacket({
        prog: KEEPALIVE_PROGRAM,
        vers: 1,
        proc: KEEPALIVE_PING,
        type: MessageType.Message,
        serial: 0,
        status: 0,
      }),
    );
    p.reply(
      encodePacket({
        prog: REMOTE_PROGRAM,
        vers: 1,
        proc: Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE,
        type: MessageType.Message,
        serial: 0,
        status: 0,
      }),
    );
    await tick();
    assert.equal(p.sent.length, 1);
    assert.deepEqual(readHeader(new XdrReader(p.sent[0]!, 4)), {
      prog: KEEPALIVE_PROGRAM,
      vers: 1,
      proc: KEEPALIVE_PONG,
      type: MessageType.Message,
      serial: 0,
      status: 0,
    });
    assert.deepEqual(events, [Proc.DOMAIN_EVENT_CALLBACK_LIFECYCLE]);
    assert.equal(rpc.stats.pongsSent, 1);
  });

  it("drops the connection on a malformed packet or a reply nobody asked for, failing the calls in flight", async () => {
    for (const bad of [
      Buffer.from([0, 0, 0, 8, 0, 0, 0, 0]), // length below the header size
      reply(Proc.DOMAIN_GET_STATE, 99), // unknown serial
      encodePacket({ prog: 0x1234, vers: 1, proc: 1, type: MessageType.Reply, serial: 0, status: 0 }), // unknown program
    ]) {
      const p = pair();
      let closedWith: Error | undefined;
      const rpc = new RpcClient(p.stream, { onClose: (e) => (closedWith = e) });
      const call = rpc.call(Proc.DOMAIN_GET_STATE);
      await tick();
      p.reply(bad);
      await assert.rejects(call, ProtocolError);
      assert.ok(rpc.closed);
      assert.ok(closedWith instanceof ProtocolError);
    }
  });

  it("fails calls in flight when the stream ends, and refuses new ones", async () => {
    const p = pair();
    const rpc = new RpcClient(p.stream);
    const call = rpc.call(Proc.DOMAIN_GET_STATE);
    await tick();
    p.end();
    await assert.rejects(call, (err: unknown) => err instanceof ConnectionLostError && err.sent);
    await assert.rejects(
      rpc.call(Proc.DOMAIN_GET_STATE),
      (err: unknown) => err instanceof ConnectionLostError && !err.sent,
    );
  });
});
