/**
 * What a backend can do is declared once, on its factory: the declaration
 * matches what its instances implement, and the start-up checks read it.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  BACKENDS,
  HostRouter,
  OPTIONAL_METHODS,
  createBackend,
  STOP_MODES,
  checkStopMode,
  exitStopMode,
  specOptions,
  type BackendFactory,
} from "../../src/backends/index.js";
import { libvirtBackend } from "../../src/backends/libvirt/index.js";
import { processBackend } from "../../src/backends/process/index.js";
import { xapiBackend } from "../../src/backends/xapi/index.js";
import { systemClock } from "../../src/clock/index.js";
import { buildFileSpecs, buildVmSpec, parseConfigString, parseConfigText } from "../../src/config/index.js";
import { ConfigError, UsageError } from "../../src/errors/index.js";
import { silentLogger } from "../../src/log/index.js";

/** A -c each backend's create() accepts (the CLI's default, xen:///, where it does). */
const CONNECT: Readonly<Record<string, string>> = { xapi: "http://root:secret@127.0.0.1:1/" };

function build(factory: BackendFactory, config: string) {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", specOptions(factory));
}

describe("backend capabilities", () => {
  let stateDir: string;
  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "jitsu-capabilities-"));
  });
  after(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it("every backend's instances have exactly the optional methods its factory declares", () => {
    assert.ok(BACKENDS.length >= 5);
    for (const factory of BACKENDS) {
      const backend = factory.create({
        connect: CONNECT[factory.name] ?? "xen:///",
        stateDir,
        settings: {},
        log: silentLogger(),
        clock: systemClock,
      });
      assert.equal(backend.name, factory.name);
      const has = OPTIONAL_METHODS.filter(
        (m) => typeof (backend as unknown as Record<string, unknown>)[m] === "function",
      );
      const declared = OPTIONAL_METHODS.filter((m) => factory.capabilities.optional.has(m));
      assert.deepEqual(has, declared, `${factory.name}: methods implemented vs declared`);
      assert.ok(factory.capabilities.stopModes.size > 0, `${factory.name} declares stop modes`);
    }
  });

  it("the backends that connect have hosts (connect=), routed with exactly the declared optional methods", async () => {
    for (const factory of BACKENDS) {
      assert.equal(
        factory.hosts !== undefined,
        factory.connects,
        `${factory.name}: hosts exactly when it connects`,
      );
      const backend = createBackend(factory, {
        connect: CONNECT[factory.name] ?? "xen:///",
        stateDir,
        settings: {},
        log: silentLogger(),
        clock: systemClock,
      });
      assert.equal(backend instanceof HostRouter, factory.connects, factory.name);
      assert.equal(backend.name, factory.name);
      const has = OPTIONAL_METHODS.filter(
        (m) => typeof (backend as unknown as Record<string, unknown>)[m] === "function",
      );
      const declared = OPTIONAL_METHODS.filter((m) => factory.capabilities.optional.has(m));
      assert.deepEqual(has, declared, `${factory.name}: routed methods vs declared`);
      await backend.close();
    }
  });

  it("accepts exactly the declared stop modes, as a usage error naming -m's long option", () => {
    for (const factory of BACKENDS) {
      for (const mode of STOP_MODES) {
        if (factory.capabilities.stopModes.has(mode)) checkStopMode(factory, mode);
        else assert.throws(() => checkStopMode(factory, mode), UsageError, `${factory.name} ${mode}`);
      }
    }
    assert.throws(
      () => checkStopMode(processBackend, "save"),
      (err: unknown) =>
        err instanceof UsageError &&
        err.option === "--mode" &&
        err.message ===
          "option '--mode': the process backend cannot save VMs (it can: destroy, shutdown, suspend, pause)",
    );
  });

  it("--stop-on-exit stops with -m when that ends the VM, else with shutdown (a mode every backend has)", () => {
    for (const factory of BACKENDS) {
      for (const mode of factory.capabilities.stopModes) {
        const atExit = exitStopMode(factory, mode);
        assert.ok(factory.capabilities.stopModes.has(atExit), `${factory.name}: ${atExit}`);
        assert.ok(["destroy", "shutdown", "save"].includes(atExit), `${factory.name} -m ${mode}: ${atExit}`);
        if (mode === "destroy" || mode === "shutdown" || mode === "save") assert.equal(atExit, mode);
      }
    }
    assert.equal(exitStopMode(processBackend, "pause"), "shutdown");
    assert.equal(exitStopMode(processBackend, "suspend"), "shutdown");
  });

  it("requires `ip` unless the backend discovers addresses", () => {
    assert.deepEqual(build(libvirtBackend, "dns=www.example.org,name=www").ips, []);
    assert.throws(
      () => build(xapiBackend, "dns=www.example.org,name=www"),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.vm === "www" &&
        err.key === "ip" &&
        err.message ===
          "VM 'www', key 'ip': required key is missing (the xapi backend cannot discover addresses)",
    );
  });

  it("rejects wait_for_key unless the backend can wait for keys", () => {
    const spec = build(xapiBackend, "dns=www.example.org,ip=10.0.0.1,name=www,wait_for_key=data/ready");
    assert.equal(spec.waitForKey, "data/ready");
    assert.throws(
      () => build(libvirtBackend, "dns=www.example.org,name=www,wait_for_key=data/ready"),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.vm === "www" &&
        err.key === "wait_for_key" &&
        err.message === "VM 'www', key 'wait_for_key': the libvirt backend cannot wait for keys",
    );
  });

  it("checks a config file's VMs the same way, naming the file and the entry", () => {
    const file = parseConfigText(
      '{"vms": [{"name": "www", "dns": "www.example.org", "exec": "true"}]}',
      "j.json",
      [],
    );
    assert.throws(
      () => buildFileSpecs(file, specOptions(processBackend)),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          "config file 'j.json': vms #1 (www): VM 'www', key 'ip': required key is missing (the process backend cannot discover addresses)",
    );
  });
});
