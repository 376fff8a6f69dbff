/**
 * The libvirt backend against a real libvirtd (started here, in a temp dir,
 * unprivileged, auth none) and its test driver: every lifecycle operation and
 * stop mode, addresses, MACs, domain IDs, events for changes made with virsh
 * behind our back, concurrency, keepalive, errors users hit, and a daemon
 * restart with a call waiting.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { after, before, describe, it } from "node:test";
import { LibvirtBackend } from "../../../src/backends/libvirt/backend.js";
import { libvirtBackend } from "../../../src/backends/libvirt/index.js";
import { parseLibvirtUri } from "../../../src/backends/libvirt/uri.js";
import type { BackendEvent, VmBackend } from "../../../src/backends/contract.js";
import { systemClock } from "../../../src/clock/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { PrivateLibvirtd, extraDomainXml } from "../../doubles/libvirtd.js";
import { DB_UUID, NODE_XML, WWW_UUID, rejectsWith, spec } from "./fixtures.js";

function backendFor(
  uri: string,
  tuning: ConstructorParameters<typeof LibvirtBackend>[2] = {},
): LibvirtBackend {
  return new LibvirtBackend(parseLibvirtUri(uri), { log: silentLogger(), clock: systemClock }, tuning);
}

/** Asserts that `p` rejects with an error whose message (one line) matches `re`. */
async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("libvirt backend against a real libvirtd (test driver)", { timeout: 120_000 }, () => {
  // The daemon pings after a second of silence and drops a client after two unanswered pings (~3 s).
  const daemon = new PrivateLibvirtd({ keepaliveInterval: 1, keepaliveCount: 2 });
  let nodeUri = "";
  let backend: LibvirtBackend;
  const opened: VmBackend[] = [];

  before(async () => {
    const node = daemon.writeFile("node.xml", NODE_XML);
    nodeUri = daemon.uri(`test://${node}`);
    await daemon.start();
    backend = backendFor(nodeUri);
    opened.push(backend);
    await backend.connect();
  });

  after(async () => {
    for (const b of opened) await b.close().catch(() => undefined);
    await daemon.destroy();
  });

  it("finds VMs by name or by uuid, and uuid wins over name", async () => {
    const byName = await backend.resolve(spec("dns=www.example.org,name=www"));
    assert.equal(byName.ref, WWW_UUID);
    const byUuid = await backend.resolve(spec(`dns=db.example.org,uuid=${DB_UUID},name=www`, 2));
    assert.equal(byUuid.ref, DB_UUID);
    assert.equal(byUuid.label, "www"); // the label is the configured name
  });

  it("reads states and runs every lifecycle operation and stop mode", async () => {
    const www = await backend.resolve(spec("dns=www.example.org,name=www"));
    assert.equal(await backend.state(www), "off");
    await backend.start(www);
    assert.equal(await backend.state(www), "running");
    const id = await backend.domainId(www);
    assert.ok(id > 0, `domain id ${id}`);
    assert.deepEqual(await backend.macs(www), ["52:54:00:aa:bb:cc"]);
    const addrs = await backend.addresses(www);
    assert.equal(addrs.length, 1);
    assert.match(addrs[0]!, /^192\.168\.122\.\d+$/);

    await backend.stop(www, "suspend");
    assert.equal(await backend.state(www), "paused");
    await backend.unpause(www);
    assert.equal(await backend.state(www), "running");

    await backend.stop(www, "pause");
    assert.equal(await backend.state(www), "paused");
    await backend.resume(www); // resume also takes a domain paused in memory
    assert.equal(await backend.state(www), "running");

    await backend.stop(www, "save");
    assert.equal(await backend.state(www), "suspended");
    await backend.resume(www); // creates it, and libvirt restores the managed save image
    assert.equal(await backend.state(www), "running");

    await backend.stop(www, "shutdown");
    assert.equal(await backend.state(www), "off");
    await assert.rejects(backend.domainId(www), /libvirt VM 'www': has no domain ID: it is not running/);

    await backend.start(www);
    await backend.stop(www, "destroy");
    assert.equal(await backend.state(www), "off");
  });

  it("keeps many calls in flight on one connection, errors included", async () => {
    const db = await backend.resolve(spec(`dns=db.example.org,uuid=${DB_UUID}`));
    const calls = Array.from({ length: 200 }, (_, i) =>
      i % 50 === 49
        ? backend.resolve(spec(`dns=x${i}.example.org,name=missing${i}`)).then(() => "found")
        : backend.state(db),
    );
    const results = await Promise.allSettled(calls);
    results.forEach((r, i) => {
      if (i % 50 === 49) {
        assert.equal(r.status, "rejected");
        assert.match(String((r as PromiseRejectedResult).reason), new RegExp(`missing${i}`));
      } else {
        assert.deepEqual(r, { status: "fulfilled", value: "running" });
      }
    });
  });

  it("answers the daemon's keepalive pings, so an idle connection stays open", async () => {
    const rpc = backend.connection.client!;
    const before = rpc.stats.pingsReceived;
    // keepalive_interval = 1, keepalive_count = 2: a client that does not answer is dropped after ~3 s.
    await new Promise((r) => setTimeout(r, 5000));
    assert.ok(rpc.stats.pingsReceived - before >= 3, `pings received: ${rpc.stats.pingsReceived - before}`);
    assert.equal(rpc.stats.pongsSent, rpc.stats.pingsReceived);
    assert.equal(backend.connection.client, rpc, "same connection");
    assert.equal(backend.connection.stats.reconnects, 0);
    const db = await backend.resolve(spec(`dns=db.example.org,uuid=${DB_UUID}`));
    assert.equal(await backend.state(db), "running");
  });

  it("pings a quiet daemon itself, and takes a hung one for dead", async () => {
    const b = backendFor(nodeUri, { keepaliveIntervalMs: 300, keepaliveCount: 2, reconnectInitialMs: 100 });
    opened.push(b);
    await b.connect();
    const first = b.connection.client!;
    // Two pings (each sent after 300 ms without traffic; a loaded machine may delay a timer).
    await waitFor("two keepalive pings", () => (first.stats.pingsSent >= 2 ? true : undefined), 5000);
    assert.equal(b.connection.client, first, "the daemon answered our pings");
    daemon.signal("SIGSTOP");
    try {
      // No answer for 3 x 300 ms: the connection is given up and reconnection starts.
      await waitFor("the hung daemon to be noticed", () => (first.closed ? true : undefined), 5000);
    } finally {
      daemon.signal("SIGCONT");
    }
    await waitFor("the reconnection", () => (b.connection.state === "open" ? true : undefined), 10_000);
    const db = await b.resolve(spec(`dns=db.example.org,uuid=${DB_UUID}`));
    assert.equal(await b.state(db), "running");
  });

  it("sees changes made with virsh behind its back through lifecycle events", async () => {
    const def = daemon.uri("test:///default");
    const watcher = backendFor(def);
    opened.push(watcher);
    await watcher.connect(); // keeps test:///default alive for virsh's connections too
    const uuid = "0badc0de-0000-4000-8000-00000000e7e7";
    const file = daemon.writeFile("evt.xml", extraDomainXml("evt", uuid));
    daemon.virsh(def, `define ${file}`);
    const vm = await watcher.resolve(spec("dns=evt.example.org,name=evt"));
    assert.equal(await watcher.state(vm), "off");
    const events: BackendEvent[] = [];
    watcher.onEvent((e) => events.push(e));
    const expect = async (n: number, state: string): Promise<void> => {
      const e = await waitFor(`event #${n} (${state})`, () => events[n - 1]);
      assert.equal(e.vm.ref, uuid);
      assert.equal(e.state, state, `event #${n}: ${JSON.stringify(e)}`);
    };
    daemon.virsh(def, "start evt");
    await expect(1, "running");
    daemon.virsh(def, "suspend evt");
    await expect(2, "paused");
    daemon.virsh(def, "resume evt");
    await expect(3, "running");
    daemon.virsh(def, "managedsave evt");
    await expect(4, "suspended");
    daemon.virsh(def, "start evt");
    await expect(5, "running");
    daemon.virsh(def, "destroy evt");
    await expect(6, "off");
    assert.equal(events.length, 6);
    assert.deepEqual(
      events.map((e) => e.reason),
      [
        "started (booted)",
        "suspended (paused)",
        "resumed (unpaused)",
        "stopped (saved)",
        events[4]!.reason,
        "stopped (destroyed)",
      ],
    );
    assert.match(events[4]!.reason ?? "", /^started \((booted|restored)\)$/);
  });

  it("reports the errors users hit in one line naming the URI and the VM", async () => {
    await rejectsWith(
      backend.resolve(spec("dns=nope.example.org,name=nope")),
      /^libvirt VM 'nope': no such domain with name 'nope' at test\+unix:\/\/\/.*node\.xml\?socket=.* \(libvirt error 42, domain \d+: Domain not found/,
    );
    await rejectsWith(
      backend.resolve(spec("dns=u.example.org,uuid=00000000-0000-4000-8000-000000000000")),
      /libvirt VM '00000000-0000-4000-8000-000000000000': no such domain with uuid/,
    );
    await rejectsWith(
      backend.resolve(spec("dns=u.example.org,uuid=xyz")),
      /VM 'xyz', key 'uuid': not a UUID: 'xyz'/,
    );

    const missing = backendFor(`test+unix:///default?socket=${daemon.dir}/nowhere/libvirt-sock`);
    await rejectsWith(
      missing.connect(),
      /^libvirt: cannot connect to test\+unix:\/\/\/default\?socket=.*: socket .*nowhere\/libvirt-sock does not exist \(no libvirt daemon serves test\+unix:\/\/\/default\?socket=.* here \(the test driver runs inside libvirtd too\): start libvirtd \(systemctl start libvirtd\), or point \?socket=PATH at the socket of one that runs\)$/,
    );

    // Permission denied by the kernel: the socket is 0700 and the client runs as another user
    // (as root; otherwise the socket is 0000, which stops its owner too).
    const asRoot = process.getuid?.() === 0;
    chmodSync(daemon.socket, asRoot ? 0o700 : 0);
    try {
      const script = [
        `import { LibvirtBackend } from ${JSON.stringify(resolvePath("dist/src/backends/libvirt/backend.js"))};`,
        `import { parseLibvirtUri } from ${JSON.stringify(resolvePath("dist/src/backends/libvirt/uri.js"))};`,
        `import { silentLogger } from ${JSON.stringify(resolvePath("dist/src/log/index.js"))};`,
        `import { systemClock } from ${JSON.stringify(resolvePath("dist/src/clock/index.js"))};`,
        `const b = new LibvirtBackend(parseLibvirtUri(process.argv[1]), { log: silentLogger(), clock: systemClock });`,
        `b.connect().then(() => console.log("connected"), (e) => console.log(e.message));`,
      ].join("\n");
      const r = spawnSync(
        asRoot ? "setpriv" : process.execPath,
        [
          ...(asRoot ? ["--reuid=1", "--regid=1", "--clear-groups", process.execPath] : []),
          "--input-type=module",
          "-e",
          script,
          nodeUri,
        ],
        { encoding: "utf8", timeout: 30_000 },
      );
      assert.match(
        r.stdout.trim(),
        /^libvirt: cannot connect to test\+unix:.*: permission denied on socket .*libvirt-sock \(run jitsu as a user allowed to use libvirt, e\.g\. in the libvirt group\)$/,
        r.stderr,
      );
    } finally {
      chmodSync(daemon.socket, 0o777);
    }

    // A driver the daemon does not have.
    const vbox = backendFor(`vbox+unix:///session?socket=${daemon.socket}`);
    await rejectsWith(
      vbox.connect(),
      /^libvirt: cannot connect to vbox\+unix:\/\/\/session\?socket=\S+: driver not available or URI not supported \(libvirt error \d+, domain \d+: .*\)$/,
    );

    // Through the factory: an unsupported URI is a usage error.
    assert.throws(
      () =>
        libvirtBackend.create({
          connect: "qemu+libssh://h/system",
          stateDir: "/tmp",
          settings: {},
          log: silentLogger(),
          clock: systemClock,
        }),
      /option '--connect': libvirt URI 'qemu\+libssh:\/\/h\/system': unsupported transport '\+libssh'/,
    );
  });

  it("reconnects when the daemon restarts, serving the calls that waited", async () => {
    const www = await backend.resolve(spec("dns=www.example.org,name=www"));
    await backend.start(www);
    const events: BackendEvent[] = [];
    backend.onEvent((e) => events.push(e));
    await daemon.stop();
    await waitFor("the connection to notice", () => (backend.connection.state === "down" ? true : undefined));
    const waiting = backend.macs(www); // queued while the daemon is away
    await new Promise((r) => setTimeout(r, 500));
    await daemon.start();
    assert.deepEqual(await waiting, ["52:54:00:aa:bb:cc"]);
    assert.ok(backend.connection.stats.reconnects >= 1);
    // The restarted daemon reloaded node.xml: www is shut off again (runstate 5), and we say so.
    const e = await waitFor("the reconnect event", () => events.find((x) => x.vm.ref === WWW_UUID));
    assert.equal(e.state, "off");
    assert.equal(await backend.state(www), "off");
    assert.equal(e.reason, "daemon reconnected");
    // Events work on the new connection too.
    await backend.start(www);
    assert.equal(await backend.state(www), "running");
  });
});
