/**
 * The XAPI backend against the XenAPI double (test/doubles/xapi-server.ts):
 * real HTTP, real XML-RPC, the double's own codec.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type { BackendEvent, VmBackend, VmRef } from "../../../src/backends/contract.js";
import { xapiBackend, XAPI_KEYS, XenApiFailure } from "../../../src/backends/xapi/index.js";
import { systemClock } from "../../../src/clock/index.js";
import { buildVmSpec, parseConfigString, type VmSpec } from "../../../src/config/index.js";
import { BackendError, ConfigError, UsageError } from "../../../src/errors/index.js";
import { createLogger, redactUri, silentLogger } from "../../../src/log/index.js";
import { XapiServerDouble } from "../../doubles/xapi-server.js";

const PASSWORD = "s3cret-pw!";
const WWW_UUID = "6e696eb7-09f4-484c-981b-8d34efa0304d";

function spec(config: string): VmSpec {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", {
    backendKeys: XAPI_KEYS,
    backendName: "xapi",
  });
}

function backendFor(connect: string, env: NodeJS.ProcessEnv = {}): VmBackend {
  const saved = { ...process.env };
  // The factory reads credentials from the environment; give it exactly `env`.
  for (const k of ["JITSU_XAPI_USER", "JITSU_XAPI_PASSWORD", "JITSU_XAPI_INSECURE"]) delete process.env[k];
  Object.assign(process.env, env);
  try {
    return xapiBackend.create({
      connect,
      stateDir: tmpdir(),
      settings: {},
      log: silentLogger(),
      clock: systemClock,
    });
  } finally {
    for (const k of ["JITSU_XAPI_USER", "JITSU_XAPI_PASSWORD", "JITSU_XAPI_INSECURE"]) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

function isBackendError(re: RegExp, code?: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof BackendError, `expected BackendError, got ${String(err)}`);
    assert.match(err.message, re);
    assert.ok(!err.message.includes("\n"), "one line");
    if (code !== undefined) {
      assert.ok(err.cause instanceof XenApiFailure);
      assert.equal(err.cause.code, code);
    }
    return true;
  };
}

describe("xapi backend against the XenAPI double", () => {
  let xapi: XapiServerDouble;
  let backend: VmBackend;

  before(async () => {
    xapi = await XapiServerDouble.start({
      users: { root: PASSWORD },
      vms: [
        { name: "www", uuid: WWW_UUID, macs: ["00:16:3E:AA:BB:01", "00:16:3e:aa:bb:02"] },
        { name: "db", powerState: "Running" },
        { name: "twin" },
        { name: "twin" },
        { name: "tpl", isTemplate: true },
        { name: "www-snap", isTemplate: true },
        { name: "Control domain on host", isControlDomain: true, powerState: "Running" },
      ],
    });
    backend = backendFor(xapi.urlWith("root", PASSWORD));
    await backend.connect();
  });
  after(async () => {
    await backend?.close();
    await xapi?.close();
  });

  it("logs in with session.login_with_password(user, password, version, originator)", () => {
    const login = xapi.methodCalls("session.login_with_password");
    assert.equal(login.length, 1);
    assert.deepEqual(login[0]!.params.slice(0, 2), ["root", PASSWORD]);
    assert.equal(xapi.sessionCount, 1);
  });

  it("finds a VM by name (VM.get_by_name_label) and by uuid (VM.get_by_uuid)", async () => {
    const byName = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    assert.deepEqual(byName, { label: "www", ref: WWW_UUID });
    const byUuid = await backend.resolve(
      spec(`dns=www.example.org,ip=10.0.0.1,uuid=${WWW_UUID.toUpperCase()}`),
    );
    assert.deepEqual(byUuid, { label: WWW_UUID.toUpperCase(), ref: WWW_UUID });
    assert.ok(xapi.methodCalls("VM.get_by_uuid").some((c) => c.params[1] === WWW_UUID));
    // uuid wins over name, as in the original ("name ... ignored if uuid is set")
    const both = await backend.resolve(spec(`dns=x.example.org,ip=10.0.0.1,name=db,uuid=${WWW_UUID}`));
    assert.equal(both.ref, WWW_UUID);
  });

  it("names unknown, ambiguous and template VMs clearly", async () => {
    await assert.rejects(backend.resolve(spec("dns=a.example.org,ip=10.0.0.1,name=nope")), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(
        err.message,
        `VM 'nope', key 'name': no VM named 'nope' on ${xapi.url} (templates and snapshots are not counted)`,
      );
      return true;
    });
    await assert.rejects(backend.resolve(spec("dns=a.example.org,ip=10.0.0.1,name=twin")), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(
        err.message,
        /^VM 'twin', key 'name': 2 VMs are named 'twin' on http:\/\/127\.0\.0\.1:\d+ \(uuids [0-9a-f-]{36}, [0-9a-f-]{36}\); set uuid= to choose one$/,
      );
      return true;
    });
    await assert.rejects(
      backend.resolve(spec("dns=a.example.org,ip=10.0.0.1,name=tpl")),
      /no VM named 'tpl'/,
    );
    const unknown = "00000000-0000-0000-0000-000000000000";
    await assert.rejects(
      backend.resolve(spec(`dns=a.example.org,ip=10.0.0.1,uuid=${unknown}`)),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(
          err.message,
          `VM '${unknown}', key 'uuid': no VM with this uuid on ${xapi.url} (UUID_INVALID VM ${unknown})`,
        );
        return true;
      },
    );
    await assert.rejects(
      backend.resolve(spec(`dns=a.example.org,ip=10.0.0.1,uuid=${xapi.vm("tpl").uuid}`)),
      /is a template or snapshot/,
    );
    await assert.rejects(
      backend.resolve(spec("dns=a.example.org,ip=10.0.0.1,uuid=not-a-uuid")),
      /'not-a-uuid' is not a UUID/,
    );
    await assert.rejects(
      backend.resolve(spec("dns=a.example.org,ip=10.0.0.1")),
      /needs the VM's name or uuid/,
    );
  });

  it("maps power states and runs every lifecycle operation with the documented calls", async () => {
    const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    const www = xapi.vm("www");
    assert.equal(await backend.state(vm), "off");

    await backend.start(vm);
    const start = xapi.methodCalls("VM.start").at(-1)!;
    assert.deepEqual(start.params.slice(1), [www.ref, false, false]);
    assert.equal(www.powerState, "Running");
    assert.equal(await backend.state(vm), "running");
    assert.equal(await backend.domainId!(vm), www.domid);
    assert.ok(www.domid > 0);
    assert.deepEqual(await backend.macs!(vm), ["00:16:3e:aa:bb:01", "00:16:3e:aa:bb:02"]);

    await backend.stop(vm, "pause");
    assert.equal(www.powerState, "Paused");
    assert.equal(await backend.state(vm), "paused");
    await backend.unpause(vm);
    assert.equal(await backend.state(vm), "running");

    await backend.stop(vm, "suspend");
    assert.equal(await backend.state(vm), "suspended");
    await backend.resume(vm);
    assert.deepEqual(xapi.methodCalls("VM.resume").at(-1)!.params.slice(1), [www.ref, false, false]);
    assert.equal(await backend.state(vm), "running");

    await backend.stop(vm, "shutdown");
    assert.equal(await backend.state(vm), "off");
    await assert.rejects(
      backend.domainId!(vm),
      isBackendError(/^xapi VM 'www': has no Xen domain \(it is not running\)$/),
    );

    await backend.start(vm);
    await backend.stop(vm, "destroy");
    assert.equal(await backend.state(vm), "off");

    const methods = xapi.calls.map((c) => c.method);
    for (const m of [
      "VM.pause",
      "VM.unpause",
      "VM.suspend",
      "VM.resume",
      "VM.clean_shutdown",
      "VM.hard_shutdown",
    ]) {
      assert.ok(methods.includes(m), `${m} was called`);
    }
    assert.deepEqual([...xapiBackend.capabilities.stopModes].sort(), [
      "destroy",
      "pause",
      "shutdown",
      "suspend",
    ]);
    await assert.rejects(backend.stop(vm, "save"), isBackendError(/stop mode 'save' is not supported/));
  });

  it("maps Failure into BackendError keeping XAPI's ErrorDescription", async () => {
    const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    const www = xapi.vm("www");
    assert.equal(www.powerState, "Halted");
    await assert.rejects(backend.stop(vm, "pause"), (err: unknown) => {
      isBackendError(/VM.pause failed/, "VM_BAD_POWER_STATE")(err);
      const e = err as BackendError;
      assert.equal(
        e.message,
        `xapi VM 'www': VM.pause failed on ${xapi.url} (VM_BAD_POWER_STATE ${www.ref} running halted)`,
      );
      assert.equal(e.detail, `VM_BAD_POWER_STATE ${www.ref} running halted`);
      assert.deepEqual((e.cause as XenApiFailure).errorDescription, [
        "VM_BAD_POWER_STATE",
        www.ref,
        "running",
        "halted",
      ]);
      return true;
    });
    await assert.rejects(
      backend.resume(vm),
      isBackendError(/\(VM_BAD_POWER_STATE \S+ suspended halted\)$/, "VM_BAD_POWER_STATE"),
    );
    xapi.failNext("VM.start", ["NO_HOSTS_AVAILABLE"]);
    await assert.rejects(
      backend.start(vm),
      isBackendError(/VM.start failed on .* \(NO_HOSTS_AVAILABLE\)$/, "NO_HOSTS_AVAILABLE"),
    );
    assert.equal(www.powerState, "Halted");
  });

  it("treats an operation another client already did as done", async () => {
    const vm = await backend.resolve(spec("dns=db.example.org,ip=10.0.0.2,name=db"));
    assert.equal(xapi.vm("db").powerState, "Running");
    await backend.start(vm); // VM_BAD_POWER_STATE ... halted running: already running
    xapi.setPowerState("db", "Halted");
    await backend.stop(vm, "destroy"); // ... halted: already halted
    assert.equal(xapi.vm("db").powerState, "Halted");
  });

  it("logs in again on SESSION_INVALID and retries the call once", async () => {
    const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    const logins = xapi.methodCalls("session.login_with_password").length;
    xapi.invalidateSessions();
    const states = await Promise.all([backend.state(vm), backend.state(vm), backend.state(vm)]);
    assert.deepEqual(states, ["off", "off", "off"]);
    assert.equal(
      xapi.methodCalls("session.login_with_password").length,
      logins + 1,
      "one new login for three calls",
    );
    assert.equal(xapi.sessionCount, 1);
    await backend.start(vm);
    assert.equal(xapi.vm("www").powerState, "Running");
    await backend.stop(vm, "destroy");
  });

  it("looks the VM's reference up again on HANDLE_INVALID", async () => {
    const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    xapi.replaceRef("www");
    await backend.start(vm);
    assert.equal(xapi.vm("www").powerState, "Running");
    await backend.stop(vm, "destroy");
  });

  it("gives a clear error for replies that are not XenAPI XML-RPC", async () => {
    const vm: VmRef = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    xapi.respondRawNext("VM.get_power_state", 200, "<html>oops</html>");
    await assert.rejects(
      backend.state(vm),
      isBackendError(
        /^xapi VM 'www': VM.get_power_state: malformed XML-RPC response: the document must be one <methodResponse>, got <html>$/,
      ),
    );
    xapi.respondRawNext("VM.get_power_state", 500, "Internal Server Error\nmore");
    await assert.rejects(
      backend.state(vm),
      isBackendError(/answered VM.get_power_state with HTTP 500: Internal Server Error$/),
    );
    xapi.respondRawNext(
      "VM.get_power_state",
      200,
      "<methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member></struct></value></param></params></methodResponse>",
    );
    await assert.rejects(
      backend.state(vm),
      isBackendError(/bad reply to VM.get_power_state: Status is Success but there is no Value/),
    );
    xapi.respondRawNext(
      "VM.get_power_state",
      200,
      "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>-32700</int></value></member><member><name>faultString</name><value>parse error</value></member></struct></value></fault></methodResponse>",
    );
    await assert.rejects(backend.state(vm), isBackendError(/XML-RPC fault -32700: parse error/));
    assert.equal(await backend.state(vm), "off", "the next call works again");
  });

  it("sends a call again when a reused keep-alive connection was closed under it", async () => {
    const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    const before = xapi.methodCalls("VM.get_power_state").length;
    await new Promise((r) => setTimeout(r, 50)); // the last reply's connection is back in the pool
    xapi.dropNextOnReusedConnection(1);
    assert.equal(await backend.state(vm), "off");
    assert.equal(xapi.droppedConnections, 1);
    assert.equal(
      xapi.methodCalls("VM.get_power_state").length,
      before + 1,
      "the dropped request never reached the API",
    );
    // Twice in a row: the retry has a connection of its own, so it gets through too.
    await new Promise((r) => setTimeout(r, 50));
    xapi.dropNextOnReusedConnection(2);
    assert.equal(await backend.state(vm), "off");
    assert.equal(xapi.droppedConnections, 2, "one drop, then a fresh connection");
  });

  it("logs out on close", async () => {
    const other = backendFor(xapi.url, { JITSU_XAPI_USER: "root", JITSU_XAPI_PASSWORD: PASSWORD });
    await other.connect();
    assert.equal(xapi.sessionCount, 2);
    const logouts = xapi.methodCalls("session.logout").length;
    await other.close();
    assert.equal(xapi.methodCalls("session.logout").length, logouts + 1);
    assert.equal(xapi.sessionCount, 1);
  });
});

describe("xapi backend connection errors", () => {
  let xapi: XapiServerDouble;
  before(async () => {
    xapi = await XapiServerDouble.start({ users: { root: PASSWORD } });
  });
  after(async () => {
    await xapi?.close();
  });

  it("bad credentials: one line naming authentication and the host, never the password", async () => {
    const backend = backendFor(xapi.urlWith("root", "wrong-password-123"));
    await assert.rejects(backend.connect(), (err: unknown) => {
      isBackendError(/authentication failed/, "SESSION_AUTHENTICATION_FAILED")(err);
      const message = (err as Error).message;
      assert.equal(
        message,
        `xapi: authentication failed for user 'root' at ${xapi.url} (SESSION_AUTHENTICATION_FAILED root Authentication failure)`,
      );
      assert.ok(!message.includes("wrong-password-123"));
      return true;
    });
    await backend.close();
  });

  it("credentials from JITSU_XAPI_USER / JITSU_XAPI_PASSWORD", async () => {
    const backend = backendFor(xapi.url, { JITSU_XAPI_USER: "root", JITSU_XAPI_PASSWORD: PASSWORD });
    await backend.connect();
    await backend.close();
    const bad = backendFor(xapi.url, { JITSU_XAPI_USER: "root", JITSU_XAPI_PASSWORD: "nope-nope" });
    await assert.rejects(bad.connect(), /authentication failed for user 'root'/);
  });

  it("a call that takes longer than ?timeout= fails with a clear error", async () => {
    const slow = await XapiServerDouble.start({
      users: { root: PASSWORD },
      vms: [{ name: "www" }],
      delays: { "VM.start": 2000 },
    });
    try {
      const backend = backendFor(`${slow.urlWith("root", PASSWORD)}/?timeout=0.3`);
      await backend.connect();
      const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
      await assert.rejects(
        backend.start(vm),
        isBackendError(
          /^xapi VM 'www': VM.start: http:\/\/127\.0\.0\.1:\d+ did not answer VM.start within 0.3 s$/,
        ),
      );
      await backend.close();
    } finally {
      await slow.close();
    }
  });

  it("an unreachable host is named, without the password", async () => {
    const dead = await XapiServerDouble.start({});
    const deadUrl = dead.url;
    await dead.close();
    const backend = backendFor(deadUrl.replace("http://", `http://root:${PASSWORD}@`));
    await assert.rejects(backend.connect(), (err: unknown) => {
      isBackendError(/cannot reach http:\/\/127\.0\.0\.1:\d+ for session.login_with_password \(ECONNREFUSED/)(
        err,
      );
      assert.ok(!(err as Error).message.includes(PASSWORD));
      return true;
    });
  });

  it("warns when the password would travel over plain http to another host, and when TLS is not verified", () => {
    const lines: string[] = [];
    const log = createLogger({
      level: "warn",
      format: "json",
      destination: new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    });
    const make = (connect: string): void => {
      xapiBackend.create({ connect, stateDir: tmpdir(), settings: {}, log, clock: systemClock });
    };
    make(`http://root:${PASSWORD}@127.0.0.1:1`);
    assert.deepEqual(lines, []);
    make(`http://root:${PASSWORD}@xenserver.invalid`); // created, never connected
    assert.match(lines[0] ?? "", /over plain http: the password travels unencrypted/);
    make(`https://root:${PASSWORD}@xenserver.invalid?insecure=1`);
    assert.match(lines[1] ?? "", /will not be verified/);
    assert.ok(!lines.join("").includes(PASSWORD));
  });

  it("rejects -c values it cannot use, without echoing the password", () => {
    const cases: [string, RegExp][] = [
      ["xen:///", /'xen:\/\/\/' is not an XAPI address/],
      ["not a url", /is not a URL/],
      [`https://root:${PASSWORD}@host?insecure=maybe`, /insecure must be 1 or 0/],
      [`https://root:${PASSWORD}@host?color=red`, /unknown parameter 'color'/],
      ["https://host", /no XAPI user for https:\/\/host/],
    ];
    for (const [uri, re] of cases) {
      assert.throws(
        () => backendFor(uri),
        (err: unknown) =>
          err instanceof UsageError && re.test(err.message) && !err.message.includes(PASSWORD),
      );
    }
    assert.equal(redactUri(`https://root:${PASSWORD}@host/`), "https://root:***@host/");
  });
});

describe("xapi backend over HTTPS", () => {
  let dir: string;
  let xapi: XapiServerDouble;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "jitsu-xapi-tls-"));
    // A self-signed certificate for 127.0.0.1, as a fresh XenServer host has.
    await promisify(execFile)("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
    ]);
    const tls = {
      key: await readFile(join(dir, "key.pem"), "utf8"),
      cert: await readFile(join(dir, "cert.pem"), "utf8"),
    };
    xapi = await XapiServerDouble.start({ users: { root: PASSWORD }, tls, vms: [{ name: "www" }] });
  });
  after(async () => {
    await xapi?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a self-signed certificate unless told it may", async () => {
    assert.match(xapi.url, /^https:/);
    const strict = backendFor(xapi.urlWith("root", PASSWORD));
    await assert.rejects(
      strict.connect(),
      isBackendError(
        /TLS certificate of https:\/\/127\.0\.0\.1:\d+ is not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT.*insecure=1/,
      ),
    );
    await strict.close();

    const optIn = backendFor(`${xapi.urlWith("root", PASSWORD)}/?insecure=1`);
    await optIn.connect();
    const vm = await optIn.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    await optIn.start(vm);
    assert.equal(xapi.vm("www").powerState, "Running");
    await optIn.close();

    const byEnv = backendFor(xapi.urlWith("root", PASSWORD), { JITSU_XAPI_INSECURE: "1" });
    await byEnv.connect();
    assert.equal(await byEnv.state(vm), "running");
    await byEnv.close();
  });
});

describe("xapi backend events (event.from)", () => {
  let xapi: XapiServerDouble;
  before(async () => {
    xapi = await XapiServerDouble.start({
      users: { root: PASSWORD },
      vms: [{ name: "www" }, { name: "other" }],
    });
  });
  after(async () => {
    await xapi?.close();
  });

  it("reports power-state changes made behind jitsu's back, also after EVENTS_LOST", async () => {
    const backend = backendFor(xapi.urlWith("root", PASSWORD));
    assert.ok(xapiBackend.capabilities.optional.has("onEvent"));
    const events: BackendEvent[] = [];
    let notify: (() => void) | undefined;
    backend.onEvent!((e) => {
      events.push(e);
      notify?.();
    });
    const next = (count: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`only ${events.length} events: ${JSON.stringify(events)}`)),
          10_000,
        );
        notify = () => {
          if (events.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        };
        notify();
      });
    await backend.connect();
    const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    // Wait until the watcher holds a long poll (its second event.from), then change the VM behind its back.
    const polls = async (n: number): Promise<void> => {
      for (let i = 0; i < 200 && xapi.methodCalls("event.from").length < n; i++)
        await new Promise((r) => setTimeout(r, 25));
      assert.ok(xapi.methodCalls("event.from").length >= n, `event.from called ${n} times`);
    };
    await polls(2);
    xapi.setPowerState("other", "Running"); // not a VM jitsu manages: no event
    xapi.setPowerState("www", "Running");
    await next(1);
    assert.deepEqual(events[0], { vm, state: "running", reason: "XAPI power_state Running" });

    // xapi loses its event queue while the VM changes: the watcher starts again from a fresh snapshot
    // and reports the difference.
    await polls(3);
    xapi.setPowerState("www", "Paused", { silently: true });
    xapi.loseEvents();
    await next(2);
    assert.equal(events[1]!.state, "paused");
    await polls(5);
    xapi.setPowerState("www", "Halted");
    await next(3);
    assert.equal(events[2]!.state, "off");
    assert.equal(events.filter((e) => e.vm.label !== "www").length, 0);
    assert.ok(
      xapi
        .methodCalls("event.from")
        .every((c) => typeof c.params[3] === "number" && c.params[2] !== undefined),
    );

    // jitsu's own operations are not reported back to it as changes made by others.
    await xapi.eventsDelivered();
    await backend.start(vm);
    await backend.stop(vm, "suspend");
    await xapi.eventsDelivered();
    assert.equal(events.length, 3, JSON.stringify(events.slice(3)));
    // ... but a change by someone else right after is.
    xapi.setPowerState("www", "Running");
    await next(4);
    assert.equal(events[3]!.state, "running");

    const t0 = Date.now();
    await backend.close();
    assert.ok(Date.now() - t0 < 5000, "close does not wait for the long poll");
  });
});

describe("xapi backend in a pool (HOST_IS_SLAVE)", () => {
  // Pool hosts share one port on different loopback addresses, as real hosts share 443.
  const doubles: XapiServerDouble[] = [];
  const host = async (address: string, port: number, poolMaster?: string): Promise<XapiServerDouble> => {
    const d = await XapiServerDouble.start({
      host: address,
      port,
      poolMaster,
      users: { root: PASSWORD },
      vms: [{ name: "www", uuid: WWW_UUID }],
    });
    doubles.push(d);
    return d;
  };
  after(async () => {
    for (const d of doubles) await d.close();
  });

  it("connecting to a pool member follows it to the master; a failover is followed too", async () => {
    const master = await host("127.0.0.1", 0);
    const port = master.listeningPort;
    const member = await host("127.0.0.2", port, "127.0.0.1");
    const backend = backendFor(member.urlWith("root", PASSWORD));
    await backend.connect();
    const vm = await backend.resolve(spec("dns=www.example.org,ip=10.0.0.1,name=www"));
    await backend.start(vm);
    assert.equal(master.vm("www").powerState, "Running");
    assert.equal(member.vm("www").powerState, "Halted", "nothing ran on the member");
    assert.equal(member.methodCalls("session.login_with_password").length, 1);

    // Failover: the old master becomes a member of 127.0.0.2, which now answers as master.
    member.setPoolMaster(undefined);
    member.setPowerState("www", "Running");
    master.setPoolMaster("127.0.0.2");
    assert.equal(await backend.state(vm), "running");
    await backend.stop(vm, "destroy");
    assert.equal(member.vm("www").powerState, "Halted");
    assert.equal(master.vm("www").powerState, "Running", "the old master was left alone");
    await backend.close();
  });

  it("gives up with a clear error when pool members only point at each other", async () => {
    const a = await host("127.0.0.3", 0, "127.0.0.4");
    await host("127.0.0.4", a.listeningPort, "127.0.0.3");
    const backend = backendFor(a.urlWith("root", PASSWORD));
    await assert.rejects(
      backend.connect(),
      isBackendError(
        /^xapi: http:\/\/127\.0\.0\.\d:\d+ is a pool member and its pool master is not answering as one \(last pointed to 127\.0\.0\.\d\); connect to the master \(HOST_IS_SLAVE 127\.0\.0\.\d\)$/,
      ),
    );
    await backend.close();
  });
});
