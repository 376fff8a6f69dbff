/**
 * The xenstore client against the xenstored double (test/doubles/xenstored.ts),
 * and the double against the real libxenstore tools (xenstore-utils), so both
 * sides are held to the wire format of docs/misc/xenstore.txt.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { join } from "node:path";
import { createServer, type Socket } from "node:net";
import { promisify } from "node:util";
import { XenstoreClient, XenstoreError, xenstorePaths } from "../../src/xen/xenstore/index.js";
import { XenstoredDouble } from "../doubles/xenstored.js";
import { T, decoder, encode, type Msg } from "../doubles/xenstored-wire.js";
import { tempDir } from "../support/index.js";

const exec = promisify(execFile);

async function setup(
  t: import("node:test").TestContext,
): Promise<{ xsd: XenstoredDouble; xs: XenstoreClient; socket: string }> {
  const dir = await tempDir("jitsu-xs-");
  const socket = join(dir.path, "socket");
  const xsd = new XenstoredDouble(socket);
  await xsd.start();
  const xs = new XenstoreClient({ paths: [socket] });
  t.after(async () => {
    await xs.close();
    await xsd.stop();
    await dir.remove();
  });
  return { xsd, xs, socket };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof XenstoreError, `expected a XenstoreError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

test("xenstore paths follow libxenstore: XENSTORED_PATH, then XENSTORED_RUNDIR/socket, then the xenbus device", () => {
  assert.deepEqual(xenstorePaths({ XENSTORED_PATH: "/x/s" }), ["/x/s"]);
  assert.deepEqual(xenstorePaths({}), ["/var/run/xenstored/socket", "/dev/xen/xenbus", "/proc/xen/xenbus"]);
  assert.deepEqual(xenstorePaths({ XENSTORED_RUNDIR: "/r" })[0], "/r/socket");
});

test("read, write (bytes kept exactly), mkdir, directory, rm, exists", async (t) => {
  const { xsd, xs } = await setup(t);
  const bytes = Buffer.from([0x7b, 0x22, 0x00, 0xff, 0x0a, 0x7d]); // binary, with a nul inside
  await xs.write("/local/domain/7/rumprun/cfg", bytes);
  assert.deepEqual(xsd.read("/local/domain/7/rumprun/cfg"), bytes);
  assert.deepEqual(await xs.readBytes("/local/domain/7/rumprun/cfg"), bytes);
  assert.equal(await xs.read("/local/domain/7"), "", "WRITE creates missing parents with empty values");
  await xs.mkdir("/local/domain/7/data");
  assert.deepEqual((await xs.directory("/local/domain/7")).sort(), ["data", "rumprun"]);
  assert.equal(await xs.exists("/local/domain/7/data"), true);
  await xs.rm("/local/domain/7/rumprun");
  assert.equal(await xs.exists("/local/domain/7/rumprun/cfg"), false);
  await xs.rm("/local/domain/7/rumprun"); // not an error: the parent exists
  await rejectsWith(xs.rm("/no/such/thing"), "ENOENT"); // an error: the parent does not exist
});

test("errors carry xenstored's errno name: ENOENT, EACCES, EINVAL, E2BIG", async (t) => {
  const { xsd, xs } = await setup(t);
  await rejectsWith(xs.read("/missing"), "ENOENT");
  await rejectsWith(xs.directory("/missing"), "ENOENT");
  xsd.deny("/secret");
  await rejectsWith(xs.write("/secret/x", "1"), "EACCES");
  await assert.rejects(xs.read("/secret/x"), /xenstore read \/secret\/x failed: EACCES/);
  await rejectsWith(xs.read("/bad//path"), "EINVAL");
  await rejectsWith(xs.read("relative"), "EINVAL");
  await rejectsWith(xs.write("/big", Buffer.alloc(5000)), "E2BIG");
  // The connection survives errors.
  await xs.write("/ok", "yes");
  assert.equal(await xs.read("/ok"), "yes");
});

test("watches fire once when set, then on writes and removals of the path or its children; unwatch stops them", async (t) => {
  const { xsd, xs } = await setup(t);
  const events: string[] = [];
  let notify: () => void = () => undefined;
  const watch = await xs.watch("/local/domain/3/data", (p) => {
    events.push(p);
    notify();
  });
  const next = (n: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`only ${events.length} of ${n} events: ${events.join(", ")}`)),
        10_000,
      );
      notify = () => {
        if (events.length >= n) {
          clearTimeout(timer);
          resolve();
        }
      };
      notify();
    });
  await next(1);
  assert.deepEqual(events, ["/local/domain/3/data"], "the initial event names the watched path");
  xsd.write("/local/domain/3/data/ready", "1");
  await next(2);
  assert.deepEqual(events.slice(1), ["/local/domain/3/data/ready"], "one event, for the path written");
  xsd.write("/local/domain/3/other", "x"); // not under the watch
  xsd.rm("/local/domain/3");
  await next(3);
  assert.deepEqual(
    events.slice(2),
    ["/local/domain/3/data"],
    "removing a parent reports the watched path; /other is not watched",
  );
  await watch.unwatch();
  assert.equal(xsd.watchCount(), 0);
  const before = events.length;
  await xs.write("/local/domain/3/data/again", "1");
  await xs.read("/local/domain/3/data/again"); // a round trip after the write: any event would have arrived
  assert.equal(events.length, before);
});

test("transactions: reads and writes on a copy, events only on commit, discard with F, EAGAIN on conflict and retried", async (t) => {
  const { xsd, xs } = await setup(t);
  await xs.write("/counter", "0");
  const tx = await xs.transactionStart();
  await tx.write("/counter", "1");
  assert.equal(await tx.read("/counter"), "1");
  assert.equal(await xs.read("/counter"), "0", "outside the transaction nothing changed yet");
  await xs.transactionEnd(tx, false);
  assert.equal(await xs.read("/counter"), "0");

  const tx2 = await xs.transactionStart();
  await tx2.write("/counter", "2");
  xsd.write("/elsewhere", "x"); // an intervening write
  await rejectsWith(xs.transactionEnd(tx2, true), "EAGAIN");
  assert.equal(await xs.read("/counter"), "0");
  await rejectsWith(xs.transactionEnd(tx2, true), "ENOENT"); // the id is gone

  let attempts = 0;
  const result = await xs.transaction(async (t3) => {
    attempts++;
    const n = Number(await t3.read("/counter"));
    if (attempts === 1) xsd.write("/elsewhere", "y"); // conflict on the first attempt only
    await t3.write("/counter", String(n + 10));
    return n + 10;
  });
  assert.equal(attempts, 2);
  assert.equal(result, 10);
  assert.equal(await xs.read("/counter"), "10");
  await assert.rejects(
    xs.transaction(async (t4) => {
      await t4.write("/counter", "99");
      throw new Error("body failed");
    }),
    /body failed/,
  );
  assert.equal(await xs.read("/counter"), "10", "a failing body discards the transaction");
});

test("waitForKey resolves when the key is written (not before), at once if it exists, and rejects on abort", async (t) => {
  const { xsd, xs } = await setup(t);
  const ac = new AbortController();
  let resolved = false;
  const waiting = xs.waitForKey("/local/domain/5/data/ready", ac.signal).then(() => {
    resolved = true;
  });
  await new Promise((r) => setTimeout(r, 100));
  xsd.write("/local/domain/5/data/other", "x"); // an event under the parent, not the key
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(resolved, false);
  const readsBefore = xsd.log.filter((e) => e.op === "READ").length;
  await new Promise((r) => setTimeout(r, 1500));
  const reads = xsd.log.filter((e) => e.op === "READ").length - readsBefore;
  // While nothing changes, a read every 250 ms (the liveness check that tells a hung xenstored), no more.
  assert.ok(reads >= 3 && reads <= 7, `${reads} reads in 1.5 s while nothing changes`);
  xsd.write("/local/domain/5/data/ready", "1");
  await waiting;
  assert.equal(resolved, true);
  assert.equal(xsd.watchCount(), 0, "the watch is removed afterwards");

  await xs.waitForKey("/local/domain/5/data/ready", new AbortController().signal); // exists already

  const ac2 = new AbortController();
  const never = xs.waitForKey("/local/domain/5/never", ac2.signal);
  await new Promise((r) => setTimeout(r, 50));
  ac2.abort(new Error("start timeout"));
  await assert.rejects(never, /start timeout/);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(xsd.watchCount(), 0);
  ac.abort();
});

test("a lost connection rejects waiters with ECONNRESET, and the next request reconnects", async (t) => {
  const { xsd, xs } = await setup(t);
  const waiting = xs.waitForKey("/k", new AbortController().signal);
  await new Promise((r) => setTimeout(r, 100));
  xsd.dropConnections();
  await rejectsWith(waiting, "ECONNRESET");
  await xs.write("/k", "v");
  assert.equal(await xs.read("/k"), "v");
});

test(
  "a request timeout: ETIMEDOUT naming the path and the wait, the connection reset (what queued behind fails too), a late reply resolves nothing, the next request reconnects",
  { timeout: 20_000 },
  async (t) => {
    const dir = await tempDir("jitsu-xs-hung-");
    const socket = join(dir.path, "hung.sock");
    // A xenstored that answers, until `hung`: then it keeps what it gets unanswered (as a SIGSTOPped one).
    let hung = false;
    const held: Msg[] = [];
    const conns: { sock: Socket; closed: Promise<void> }[] = [];
    const reply = (m: Msg, payload: string): Buffer =>
      encode({ type: m.type, reqId: m.reqId, txId: 0, payload: Buffer.from(payload) });
    const server = createServer((sock) => {
      conns.push({ sock, closed: new Promise((resolve) => sock.once("close", () => resolve())) });
      sock.on("error", () => undefined);
      const decode = decoder();
      sock.on("data", (chunk: Buffer) => {
        for (const m of decode(chunk)) {
          if (hung) {
            held.push(m);
            continue;
          }
          // The held requests' replies come late, ahead of this one's: with the same req_id
          // as a request of the new connection, one would be taken for its answer.
          for (const h of held.splice(0)) sock.write(reply(h, h.type === T.READ ? "late" : "OK\0"));
          sock.write(reply(m, m.type === T.READ ? "fresh" : "OK\0"));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    const xs = new XenstoreClient({ paths: [socket] });
    t.after(async () => {
      await xs.close();
      for (const c of conns) c.sock.destroy();
      await new Promise((r) => server.close(r));
      await dir.remove();
    });

    assert.equal(await xs.read("/local/domain/7/name", { timeoutMs: 5000 }), "fresh", "answered in time");
    hung = true;
    const settled = (p: Promise<unknown>): Promise<unknown> =>
      p.then(
        () => "resolved",
        (err: unknown) => err,
      );
    const write = settled(xs.write("/local/domain/7/rumprun/cfg", "{}", { timeoutMs: 200 }));
    const behind = settled(xs.read("/local/domain/7/name")); // no limit of its own
    const writeErr = await write;
    assert.ok(writeErr instanceof XenstoreError, `expected a XenstoreError, got ${String(writeErr)}`);
    assert.equal(writeErr.code, "ETIMEDOUT");
    assert.equal(writeErr.path, "/local/domain/7/rumprun/cfg");
    assert.match(
      writeErr.message,
      /^xenstored did not answer write \/local\/domain\/7\/rumprun\/cfg within 0\.2 s; connection reset$/,
    );
    const behindErr = await behind;
    assert.ok(behindErr instanceof XenstoreError, `expected a XenstoreError, got ${String(behindErr)}`);
    assert.equal(behindErr.code, "ETIMEDOUT", "the request behind the hung one fails with it, not later");
    assert.match(behindErr.message, /\(during read \/local\/domain\/7\/name\)$/);
    await conns[0]!.closed; // the client reset the connection
    assert.equal(held.length, 2, "both requests had reached xenstored");

    hung = false;
    // Several requests in flight when the late replies come (a req_id used again would match one).
    assert.deepEqual(
      await Promise.all([1, 2, 3].map(() => xs.read("/local/domain/7/name"))),
      ["fresh", "fresh", "fresh"],
      "no late reply taken for an answer",
    );
    assert.equal(conns.length, 2, "the next request reconnected");
    assert.equal(held.length, 0, "the late replies were sent");
    await xs.write("/local/domain/7/rumprun/cfg", "{}", { timeoutMs: 5000 });
  },
);

test("no xenstored: a clear error naming where it looked", async () => {
  const xs = new XenstoreClient({ paths: ["/nonexistent/xenstored/socket"] });
  await assert.rejects(xs.read("/x"), /cannot reach xenstored: \/nonexistent\/xenstored\/socket \(missing\)/);
  await xs.close();
});

test("the double speaks the real protocol: libxenstore's xenstore-write/read/ls/rm/exists/watch work against it", async (t) => {
  const { xsd, socket } = await setup(t);
  const env = { ...process.env, XENSTORED_PATH: socket };
  const xsTool = (cmd: string, ...args: string[]) => exec(cmd, args, { env, timeout: 10_000 });
  await xsTool("xenstore-write", "/local/domain/9/name", "www");
  assert.equal(xsd.read("/local/domain/9/name")?.toString(), "www");
  assert.equal((await xsTool("xenstore-read", "/local/domain/9/name")).stdout, "www\n");
  assert.match((await xsTool("xenstore-ls", "/local/domain")).stdout, /9 = ""\n {1}name = "www"/);
  await assert.rejects(xsTool("xenstore-read", "/local/domain/9/nope"));
  await xsTool("xenstore-rm", "/local/domain/9");
  await assert.rejects(xsTool("xenstore-exists", "/local/domain/9"));
  // xenstore-watch: the initial event, then one per change, read by libxenstore's own watch code.
  const watching = xsTool("xenstore-watch", "-n", "2", "/local/domain/9");
  for (let i = 0; i < 100 && xsd.watchCount() === 0; i++) await new Promise((r) => setTimeout(r, 50));
  xsd.write("/local/domain/9/data/ready", "1");
  assert.equal((await watching).stdout, "/local/domain/9\n/local/domain/9/data/ready\n");
});

test("a daemon that sends garbage: a clear error, no crash, and the client reconnects", async (t) => {
  const dir = await tempDir("jitsu-xs-bad-");
  const socket = join(dir.path, "bad.sock");
  let replies = 0;
  const server = createServer((conn) => {
    conn.on("data", (chunk: Buffer) => {
      replies++;
      if (replies === 1) {
        // A header announcing 100000 payload bytes (over XENSTORE_PAYLOAD_MAX).
        const h = Buffer.alloc(16);
        h.writeUInt32LE(2, 0);
        h.writeUInt32LE(chunk.readUInt32LE(4), 4);
        h.writeUInt32LE(100000, 12);
        conn.write(h);
      } else {
        // A reply of another type than asked.
        const h = Buffer.alloc(16);
        h.writeUInt32LE(11, 0);
        h.writeUInt32LE(chunk.readUInt32LE(4), 4);
        h.writeUInt32LE(3, 12);
        conn.write(Buffer.concat([h, Buffer.from("OK\0")]));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  const xs = new XenstoreClient({ paths: [socket] });
  t.after(async () => {
    await xs.close();
    await new Promise((r) => server.close(r));
    await dir.remove();
  });
  await assert.rejects(
    xs.read("/x"),
    /xenstore message announces 100000 payload bytes \(the limit is 4096\)/,
  );
  await assert.rejects(xs.read("/x"), /xenstore read: reply of type 11 to a request of type 2/);
});
