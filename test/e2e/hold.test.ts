/**
 * hold= ports through the built CLI, the process backend and real sockets
 * (src/activator): a slow service answered on the first try, 200 clients held
 * during a start with every byte checked both ways, and connections keeping a
 * VM up. VMs listen on 127.0.0.2; jitsu holds on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import {
  DEMO_SERVICE,
  countMatches,
  dig,
  freePort,
  localArgs,
  run,
  startCli,
  tempDir,
  type CliProcess,
} from "../support/index.js";
import { getMetrics, getStatus, httpCall } from "../support/http.js";

const ECHO_SERVICE = fileURLToPath(new URL("../support/echo-service.js", import.meta.url));
const NODE = process.execPath;

interface Jitsu {
  cli: CliProcess;
  dns: number;
  http: number;
  hold: number;
  vmPort: number;
  dir: Awaited<ReturnType<typeof tempDir>>;
}

/** jitsu with one VM `www` (www.jitsu.test, 127.0.0.2) holding port `hold` for its `vmPort`. */
async function startJitsu(
  program: (vmPort: number) => string,
  extra: string[] = [],
  vmKeys: (vmPort: number) => string = () => "",
): Promise<Jitsu> {
  const dir = await tempDir();
  const dns = await freePort();
  const http = await freePort();
  const hold = await freePort();
  const vmPort = await freePort("127.0.0.2");
  const cli = startCli([
    ...localArgs(dns, dir.path),
    "--http",
    `127.0.0.1:${http}`,
    ...extra,
    `dns=www.jitsu.test,ip=127.0.0.2,name=www,hold=${hold}:${vmPort},exec=${program(vmPort)}${vmKeys(vmPort)}`,
  ]);
  const j = { cli, dns, http, hold, vmPort, dir };
  try {
    await cli.waitFor(/Holding connections on 127\.0\.0\.1:\d+ for VM 'www'/);
    await cli.waitFor(/Serving \/status/);
  } catch (err) {
    // The caller's after() has no Jitsu to stop: stop it here, or it outlives the test file.
    await stopJitsu(j);
    throw err;
  }
  return j;
}

async function stopJitsu(j: Jitsu | undefined): Promise<void> {
  if (j === undefined) return;
  await j.cli.stop();
  await j.dir.remove();
}

/** dig's own measure of the query (";; Query time: N msec"). */
function queryTimeMs(raw: string): number {
  const m = /;; Query time: (\d+) msec/.exec(raw);
  assert.ok(m !== null, raw);
  return Number(m[1]);
}

async function vmState(j: Jitsu): Promise<string> {
  return (await getStatus(j.http)).get("www")!.state;
}

interface Exchange {
  sent: string;
  received: string;
  bytes: number;
}

/**
 * Connects to 127.0.0.1:`port`, sends `size` random bytes, half-closes, and
 * reads everything back (an echo service): both checksums. `pauseMs`: does
 * not read for that long after the first byte comes back (a client that
 * stops reading), and reports how much it could send meanwhile.
 */
function exchange(
  port: number,
  size: number,
  opts: { pauseMs?: number; onPaused?: (sentSoFar: number) => void } = {},
): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const data = randomBytes(size);
    const sent = createHash("sha256").update(data).digest("hex");
    const received = createHash("sha256");
    let bytes = 0;
    const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    socket.setTimeout(60_000, () =>
      socket.destroy(new Error(`no progress for 60 s (got ${bytes} of ${size})`)),
    );
    socket.on("error", reject);
    let offset = 0;
    const CHUNK = 64 * 1024;
    const write = (): void => {
      while (offset < size) {
        const end = Math.min(size, offset + CHUNK);
        const ok = socket.write(data.subarray(offset, end));
        offset = end;
        if (!ok) return void socket.once("drain", write);
      }
      socket.end();
    };
    socket.once("connect", write);
    let paused = false;
    socket.on("data", (chunk: Buffer) => {
      received.update(chunk);
      bytes += chunk.length;
      if (opts.pauseMs !== undefined && !paused) {
        paused = true;
        socket.pause();
        setTimeout(() => {
          opts.onPaused?.(socket.bytesWritten - socket.writableLength);
          socket.resume();
        }, opts.pauseMs);
      }
    });
    socket.on("end", () => resolve({ sent, received: received.digest("hex"), bytes }));
  });
}

describe("hold= with a service that takes 8 s to start (e2e)", { timeout: 120_000 }, () => {
  let j: Jitsu;

  before(async () => {
    j = await startJitsu(
      (vmPort) => `'${NODE}' '${DEMO_SERVICE}' 127.0.0.2 ${vmPort} www 8`,
      ["--start-timeout", "30"],
      (vmPort) => `,ready=http://127.0.0.2:${vmPort}/`,
    );
  });
  after(() => stopJitsu(j));

  it("answers the hold address at once, and curl gets the page on its first try", async () => {
    const res = await dig(j.dns, ["www.jitsu.test", "A"]);
    assert.equal(res.status, "NOERROR");
    assert.deepEqual(
      res.answers.map((a) => [a.ttl, a.type, a.data]),
      [[60, "A", "127.0.0.1"]],
    );
    assert.ok(queryTimeMs(res.raw) < 100, `dig took ${queryTimeMs(res.raw)} ms`);
    const address = res.answers[0]!.data;
    const t0 = Date.now();
    const curl = await run(
      "curl",
      [
        "-sS",
        "--max-time",
        "40",
        "--resolve",
        `www.jitsu.test:${j.hold}:${address}`,
        `http://www.jitsu.test:${j.hold}/`,
      ],
      45_000,
    );
    assert.equal(curl.code, 0, curl.stderr);
    assert.match(curl.stdout, /Hello from 'www'/);
    assert.ok(Date.now() - t0 > 5000, "served after the start, not before");
    assert.equal(countMatches(j.cli.output(), /Starting VM 'www'/), 1);
  });

  it("once ready, answers the VM's own address; the hold port still works", async () => {
    const res = await dig(j.dns, ["www.jitsu.test", "A"]);
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["127.0.0.2"],
    );
    const curl = await run("curl", ["-sS", "--max-time", "10", `http://127.0.0.1:${j.hold}/`]);
    assert.match(curl.stdout, /Hello from 'www'/);
    assert.equal(countMatches(j.cli.output(), /Starting VM 'www'/), 1);
  });

  it("shows held connections in /status and /metrics", async () => {
    const body = JSON.parse((await httpCall(j.http, "GET", "/status")).body) as {
      hold: {
        listeners: { vm: string; port: number }[];
        splices: number;
        held: number;
        holdSeconds: { count: number };
      };
    };
    assert.deepEqual(
      body.hold.listeners.map((l) => [l.vm, l.port]),
      [["www", j.hold]],
    );
    assert.equal(body.hold.splices, 2);
    assert.equal(body.hold.held, 0);
    assert.equal(body.hold.holdSeconds.count, 1, "one connection was held; the warm one was not");
    const m = await getMetrics(j.http);
    assert.equal(m.get("jitsu_hold_splices_total"), 2);
    assert.equal(m.get("jitsu_hold_wait_seconds_count"), 1);
    assert.ok(m.get("jitsu_hold_wait_seconds_sum")! > 5);
    assert.equal(m.get('jitsu_hold_wait_seconds_bucket{le="5"}'), 0);
    assert.ok(m.get('jitsu_hold_bytes_total{direction="from_vm"}')! > 100);
    assert.equal(m.get('jitsu_hold_closed_total{reason="timeout"}'), 0);
    assert.equal(m.get("jitsu_dns_hold_answers_total"), 1);
  });
});

describe("hold=: 200 clients during a start, every byte checked (e2e)", { timeout: 180_000 }, () => {
  let j: Jitsu;

  before(async () => {
    j = await startJitsu(
      (vmPort) => `'${NODE}' '${ECHO_SERVICE}' 127.0.0.2 ${vmPort} 3`,
      [],
      (vmPort) => `,ready=tcp:127.0.0.2:${vmPort}`,
    );
  });
  after(() => stopJitsu(j));

  it("serves all 200 after the start, none dropped, bytes identical both ways (half-closed, a slow reader)", async () => {
    const small = Array.from({ length: 196 }, () => exchange(j.hold, 16 * 1024));
    const large = Array.from({ length: 3 }, () => exchange(j.hold, 3 * 1024 * 1024));
    const SLOW = 48 * 1024 * 1024;
    let sentWhilePaused = -1;
    const slow = exchange(j.hold, SLOW, { pauseMs: 2000, onPaused: (n) => (sentWhilePaused = n) });
    // Every client is connected and held before the VM is ready (it boots for 3 s).
    await new Promise((r) => setTimeout(r, 1000));
    const status = JSON.parse((await httpCall(j.http, "GET", "/status")).body) as { hold: { held: number } };
    assert.equal(status.hold.held, 200, "all 200 held while the VM starts");
    assert.notEqual(await vmState(j), "ready");
    const results = await Promise.all([...small, ...large, slow]);
    for (const r of results) assert.equal(r.received, r.sent);
    assert.deepEqual(
      results.map((r) => r.bytes),
      [...small.map(() => 16 * 1024), ...large.map(() => 3 * 1024 * 1024), SLOW],
    );
    // While the slow client did not read, backpressure reached it: it could not send everything.
    assert.ok(
      sentWhilePaused > 0 && sentWhilePaused < SLOW,
      `sent ${sentWhilePaused} of ${SLOW} while paused`,
    );
    assert.equal(countMatches(j.cli.output(), /Starting VM 'www'/), 1);
    const m = await getMetrics(j.http);
    assert.equal(m.get("jitsu_hold_splices_total"), 200);
    assert.equal(m.get("jitsu_hold_relay_errors_total"), 0);
    const total = 196 * 16 * 1024 + 3 * 3 * 1024 * 1024 + SLOW;
    assert.equal(m.get('jitsu_hold_bytes_total{direction="to_vm"}'), total);
    assert.equal(m.get('jitsu_hold_bytes_total{direction="from_vm"}'), total);
    assert.equal(m.get('jitsu_hold_connections{state="relaying"}'), 0);
  });
});

describe("hold=: connections keep the VM up (e2e)", { timeout: 120_000 }, () => {
  let j: Jitsu;
  const TTL = 1;

  before(async () => {
    j = await startJitsu(
      (vmPort) => `'${NODE}' '${ECHO_SERVICE}' 127.0.0.2 ${vmPort} 0.2`,
      ["-t", String(TTL), "--reaper-interval", "0.2"],
      (vmPort) => `,ready=tcp:127.0.0.2:${vmPort}`,
    );
  });
  after(() => stopJitsu(j));

  /** Holds `socket` open for `ms` with no DNS query, checking every 250 ms that the VM stays ready. */
  async function keepOpen(socket: net.Socket, ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      assert.equal(await vmState(j), "ready", "stopped while a connection was open");
      assert.ok(!socket.destroyed);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Closes `socket` and returns how long until the VM is off (ms). */
  async function stopsAfterClose(socket: net.Socket): Promise<number> {
    const closed = Date.now();
    socket.end();
    socket.destroy();
    while ((await vmState(j)) !== "off") {
      assert.ok(Date.now() - closed < 10_000, "not stopped 10 s after the close");
      await new Promise((r) => setTimeout(r, 50));
    }
    return Date.now() - closed;
  }

  function connect(host: string, port: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port }, () => resolve(s));
      s.once("error", reject);
    });
  }

  it("a held connection open for 4 x TTL keeps it up; it stops 2 x TTL after the close", async () => {
    const socket = await connect("127.0.0.1", j.hold);
    // The connection summoned it: wait until the relay works (an echo).
    socket.write("ping");
    await new Promise((r) => socket.once("data", r));
    await keepOpen(socket, 4 * TTL * 1000);
    const after = await stopsAfterClose(socket);
    assert.ok(after >= 2 * TTL * 1000 - 100, `stopped ${after} ms after the close`);
    assert.ok(after <= 2 * TTL * 1000 + 1500, `stopped ${after} ms after the close`);
    assert.equal(countMatches(j.cli.output(), /Starting VM 'www'/), 1);
  });

  it("a direct connection (the VM's own address) counts too: the process backend sees it in /proc", async () => {
    const res = await dig(j.dns, ["www.jitsu.test", "A"]);
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["127.0.0.1"],
      "not ready: the hold address",
    );
    // The query summoned it; wait for it, then connect to its own address.
    while ((await vmState(j)) !== "ready") await new Promise((r) => setTimeout(r, 50));
    const socket = await connect("127.0.0.2", j.vmPort);
    await keepOpen(socket, 4 * TTL * 1000);
    const after = await stopsAfterClose(socket);
    // The backend is asked at each pass once it saw one: 2 x TTL after the last pass that did.
    assert.ok(after <= 2 * TTL * 1000 + 1500, `stopped ${after} ms after the close`);
    assert.equal(countMatches(j.cli.output(), /Starting VM 'www'/), 2);
  });
});

describe("hold= with --workers 2 (e2e)", { timeout: 60_000 }, () => {
  let j: Jitsu;

  before(async () => {
    j = await startJitsu(
      (vmPort) => `'${NODE}' '${DEMO_SERVICE}' 127.0.0.2 ${vmPort} www 1`,
      ["--workers", "2"],
    );
  });
  after(() => stopJitsu(j));

  it("a worker answers the hold address at once; the primary holds and relays", async () => {
    const res = await dig(j.dns, ["www.jitsu.test", "A"]);
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["127.0.0.1"],
    );
    assert.ok(queryTimeMs(res.raw) < 100);
    const curl = await run("curl", ["-sS", "--max-time", "20", `http://127.0.0.1:${j.hold}/`], 25_000);
    assert.match(curl.stdout, /Hello from 'www'/);
    const ready = await dig(j.dns, ["www.jitsu.test", "A"]);
    assert.deepEqual(
      ready.answers.map((a) => a.data),
      ["127.0.0.2"],
    );
  });
});

describe("hold=: start-up errors", () => {
  it("two VMs on one hold address and port: a clear error, nothing started", async () => {
    const dir = await tempDir();
    try {
      const dns = await freePort();
      const cli = startCli([
        ...localArgs(dns, dir.path),
        "dns=a.jitsu.test,ip=127.0.0.2,name=a,hold=8080,exec=true",
        "dns=b.jitsu.test,ip=127.0.0.3,name=b,hold=8080:80,exec=true",
      ]);
      const code = await new Promise<number | null>((r) => cli.child.once("exit", r));
      assert.equal(code, 1);
      assert.match(
        cli.output(),
        /VM 'b', key 'hold': 127\.0\.0\.1:8080 is already the hold port of VM 'a'; two VMs may share a hold address only on different ports/,
      );
    } finally {
      await dir.remove();
    }
  });
});
