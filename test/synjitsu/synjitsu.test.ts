/**
 * Synjitsu notifications: the 10-byte messages reach the Synjitsu listener
 * double, through --synjitsu-socket or through a vchan-socket-proxy (double)
 * started for the Synjitsu VM's domain id, found through the libxl backend and
 * the xl double; reconnection backs off on an injected clock; nothing waits.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, readFile, symlink } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test, type TestContext } from "node:test";
import { LibxlBackend } from "../../src/backends/libxl/index.js";
import { ManualClock, systemClock, type Clock } from "../../src/clock/index.js";
import { silentLogger } from "../../src/log/index.js";
import { XenstoreClient } from "../../src/xen/xenstore/index.js";
import {
  SynjitsuNotifier,
  attachSynjitsu,
  findVchanSocketProxy,
  synjitsuMessage,
} from "../../src/synjitsu/index.js";
import { SynjitsuListenerDouble } from "../doubles/synjitsu.js";
import { readXlState } from "../doubles/xl.js";
import { XL_DOUBLE, libxlSpec, xenFixture, type XenFixture } from "../doubles/xen-fixture.js";

const PROXY_DOUBLE = fileURLToPath(new URL("../doubles/synjitsu-vchan-socket-proxy.js", import.meta.url));
const SYNJITSU_UUID = "6e696eb7-09f4-484c-981b-8d34efa0304d";

async function setup(t: TestContext) {
  const fx = await xenFixture(t);
  process.env.XL_DOUBLE_STATE = fx.xlState;
  process.env.XENSTORED_PATH = fx.xsSocket;
  const backend = new LibxlBackend(
    {
      connect: "",
      stateDir: join(fx.dir, "state"),
      settings: { xl: XL_DOUBLE },
      log: silentLogger(),
      clock: systemClock,
    },
    { xenstore: new XenstoreClient({ paths: [fx.xsSocket] }) },
  );
  t.after(() => backend.close());
  await backend.connect();
  const listener = new SynjitsuListenerDouble(join(fx.dir, "synjitsu.sock"));
  await listener.start();
  t.after(() => listener.stop());
  const kernel = await fx.kernel("www.xen");
  const www = libxlSpec(
    `dns=www.example.org,ip=10.0.0.1,name=www,kernel=${kernel},memory=64M,nic=br0,use_synjitsu=1`,
  );
  const plain = libxlSpec(`dns=plain.example.org,ip=10.0.0.2,name=plain,kernel=${kernel},memory=64M,nic=br0`);
  return { fx, backend, listener, kernel, www, plain };
}

function notifier(
  t: TestContext,
  fx: XenFixture,
  backend: LibxlBackend,
  specs: Parameters<typeof libxlSpec>[0][] | ReturnType<typeof libxlSpec>[],
  extra: { socketPath?: string; clock?: Clock },
) {
  const n = new SynjitsuNotifier({
    backend,
    uuid: SYNJITSU_UUID,
    stateDir: join(fx.dir, "state"),
    vms: () => specs as ReturnType<typeof libxlSpec>[],
    clock: extra.clock ?? systemClock,
    log: silentLogger(),
    ...(extra.socketPath === undefined ? {} : { socketPath: extra.socketPath }),
  });
  t.after(() => n.close());
  return n;
}

async function untilTimerPending(clock: ManualClock): Promise<void> {
  for (let i = 0; i < 200 && clock.pendingTimers() === 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(clock.pendingTimers(), 1, "a reconnection is scheduled");
}

test("the message is 10 bytes: the MAC, then the IPv4 address", () => {
  assert.deepEqual(
    synjitsuMessage("00:16:3e:0a:ff:01", "10.0.0.1"),
    Buffer.from([0x00, 0x16, 0x3e, 0x0a, 0xff, 0x01, 10, 0, 0, 1]),
  );
  assert.throws(() => synjitsuMessage("00:16:3e", "10.0.0.1"), /not a MAC address/);
  assert.throws(() => synjitsuMessage("00:16:3e:0a:ff:01", "::1"), /not an IPv4 address/);
});

test("--synjitsu-socket: a use_synjitsu VM's start sends its MAC and IPv4; other VMs send nothing; vmStarted never waits", async (t) => {
  const { fx, backend, listener, www, plain } = await setup(t);
  const n = notifier(t, fx, backend, [www, plain], { socketPath: listener.socketPath });
  n.start();
  const wwwRef = await backend.resolve(www);
  const plainRef = await backend.resolve(plain);
  await backend.start(wwwRef);
  await backend.start(plainRef);
  // vmStarted returns nothing to wait for (no promise), before any work is done: it cannot delay an answer.
  assert.equal(n.vmStarted("plain", plainRef), undefined);
  assert.equal(n.vmStarted("www", wwwRef), undefined);
  assert.equal(n.sent, 0, "the MAC lookup and the send happen after vmStarted returned");
  await listener.waitForMessages(1);
  const mac = readXlState(fx.xlState).domains.find((d) => d.name === "www")!.vifs[0]!.mac;
  assert.deepEqual(listener.messages, [{ mac, ip: "10.0.0.1" }]);
  await new Promise((r) => setTimeout(r, 1500)); // time for a wrong message about 'plain' to arrive
  assert.equal(listener.messages.length, 1);
  assert.deepEqual(listener.errors, []);
});

test("reconnects with back-off on the injected clock, and delivers what was queued meanwhile", async (t) => {
  const { fx, backend, listener, www } = await setup(t);
  const clock = new ManualClock();
  const n = notifier(t, fx, backend, [www], { socketPath: listener.socketPath, clock });
  await listener.stop(); // Synjitsu is down at first
  n.start();
  await clock.advance(0);
  await untilTimerPending(clock); // the failed attempt scheduled its retry
  const ref = await backend.resolve(www);
  await backend.start(ref);
  n.vmStarted("www", ref); // queued: not connected
  await new Promise((r) => setTimeout(r, 1500)); // the MAC lookup runs xl
  await listener.start();
  await clock.advance(999);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(listener.connections, 0, "no retry before the first back-off (1 s) passed");
  await clock.advance(1);
  await listener.waitForMessages(1);
  assert.equal(listener.connections, 1);
  assert.equal(n.sent, 1);

  // A dropped connection is noticed and re-made after the back-off, which restarted at 1 s.
  listener.dropConnections();
  await untilTimerPending(clock);
  await clock.advance(1000);
  for (let i = 0; i < 50 && listener.connections < 2; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(listener.connections, 2);
  n.vmStarted("www", ref);
  await listener.waitForMessages(2);
  assert.deepEqual(listener.errors, []);
});

test("through vchan-socket-proxy: the Synjitsu VM found by uuid via xl, the proxy started for its vchan node, messages arrive", async (t) => {
  const { fx, backend, listener, kernel, www } = await setup(t);
  await chmod(PROXY_DOUBLE, 0o755);
  await symlink(PROXY_DOUBLE, join(fx.bin, "vchan-socket-proxy"));
  const savedPath = process.env.PATH;
  process.env.PATH = `${fx.bin}:${savedPath ?? ""}`;
  t.after(() => {
    process.env.PATH = savedPath;
  });
  assert.equal(findVchanSocketProxy(), join(fx.bin, "vchan-socket-proxy"));
  const proxyLog = join(fx.dir, "proxy.log");
  process.env.SYNJITSU_PROXY_LOG = proxyLog;
  process.env.SYNJITSU_DOUBLE_SOCKET = listener.socketPath;

  // The Synjitsu unikernel runs, and its vchan server (port "synjitsu", for dom0) published its ring.
  const syn = await backend.resolve(
    libxlSpec(
      `dns=synjitsu.example.org,ip=10.0.0.254,name=synjitsu,uuid=${SYNJITSU_UUID},kernel=${kernel},memory=32M`,
    ),
  );
  await backend.start(syn);
  const domid = await backend.domainId(syn);
  const node = `/local/domain/${domid}/data/vchan/0/synjitsu`;
  fx.xsd.write(`${node}/ring-ref`, "8");
  fx.xsd.write(`${node}/event-channel`, "5");

  const summoner = {
    listeners: [] as ((label: string, ref: { label: string; ref: string }) => void)[],
    onStarted(l: (label: string, ref: { label: string; ref: string }) => void) {
      this.listeners.push(l);
    },
    status: () => [www],
  };
  const n = attachSynjitsu({
    summoner,
    backend,
    uuid: SYNJITSU_UUID,
    socketPath: undefined,
    stateDir: join(fx.dir, "state"),
    specs: [www],
    clock: systemClock,
    log: silentLogger(),
  });
  assert.ok(n !== undefined);
  t.after(() => n.close());
  const ref = await backend.resolve(www);
  await backend.start(ref);
  for (const l of summoner.listeners) l("www", ref);
  await listener.waitForMessages(1);
  const mac = readXlState(fx.xlState).domains.find((d) => d.name === "www")!.vifs[0]!.mac;
  assert.deepEqual(listener.messages, [{ mac, ip: "10.0.0.1" }]);
  const argv = JSON.parse((await readFile(proxyLog, "utf8")).trim().split("\n")[0]!) as string[];
  assert.deepEqual(argv, ["-m", "client", String(domid), node, join(fx.dir, "state", "synjitsu-vchan.sock")]);
  await n.close();
  for (let i = 0; i < 40 && existsSync(join(fx.dir, "state", "synjitsu-vchan.sock")); i++)
    await new Promise((r) => setTimeout(r, 50));
  assert.ok(!existsSync(join(fx.dir, "state", "synjitsu-vchan.sock")), "the proxy was stopped on close");
});

test("without --synjitsu, use_synjitsu VMs are reported and nothing is attached", async (t) => {
  const { backend, www } = await setup(t);
  const lines: string[] = [];
  const log = { warn: (m: string) => lines.push(m) } as unknown as Parameters<
    typeof attachSynjitsu
  >[0]["log"];
  const n = attachSynjitsu({
    summoner: { onStarted: () => assert.fail("not attached"), status: () => [www] },
    backend,
    uuid: undefined,
    socketPath: undefined,
    stateDir: "/nonexistent",
    specs: [www],
    clock: systemClock,
    log,
  });
  assert.equal(n, undefined);
  assert.match(lines.join("\n"), /use_synjitsu is set for www but --synjitsu UUID is not given/);
});
