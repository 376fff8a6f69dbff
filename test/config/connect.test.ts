/**
 * The `connect=` key: a VM's host for the backends that connect (libvirt,
 * xapi, docker), checked as -c is; an error naming the VM and the key for a
 * backend without connections (process, qemu, libxl), in CONFIG strings and
 * config files alike (the file's check is the one a reload runs), and at
 * start-up of the built CLI.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { findBackend, specOptions, type BackendFactory } from "../../src/backends/index.js";
import { buildFileSpecs, buildVmSpec, parseConfigString, parseConfigText } from "../../src/config/index.js";
import { ConfigError } from "../../src/errors/index.js";
import { CLI, run } from "../support/index.js";

function build(factory: BackendFactory, config: string) {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", specOptions(factory));
}

function rejects(factory: BackendFactory, config: string, message: RegExp): void {
  assert.throws(
    () => build(factory, config),
    (err: unknown) =>
      err instanceof ConfigError && err.vm === "www" && err.key === "connect" && message.test(err.message),
  );
}

describe("connect= (a VM's host)", () => {
  it("is read for the backends that connect, each URI checked as -c is", () => {
    const libvirt = build(
      findBackend("libvirt"),
      "dns=w.example.org,name=www,connect=qemu+ssh://kvm2/system",
    );
    assert.equal(libvirt.connect, "qemu+ssh://kvm2/system");
    const xapi = build(
      findBackend("xapi"),
      "dns=w.example.org,ip=10.0.0.1,name=www,connect=https://u:p@xen2",
    );
    assert.equal(xapi.connect, "https://u:p@xen2");
    const docker = build(findBackend("docker"), "dns=w.example.org,name=www,connect=tcp://127.0.0.1:2375");
    assert.equal(docker.connect, "tcp://127.0.0.1:2375");
    assert.equal(build(findBackend("libvirt"), "dns=w.example.org,name=www").connect, undefined);
  });

  it("a URI the backend cannot use is an error naming the VM and the key, with -c's reason", () => {
    rejects(
      findBackend("libvirt"),
      "dns=w.example.org,name=www,connect=nonsense",
      /^VM 'www', key 'connect': /,
    );
    rejects(
      findBackend("xapi"),
      "dns=w.example.org,ip=10.0.0.1,name=www,connect=ftp://xen2",
      /^VM 'www', key 'connect': 'ftp:\/\/xen2' is not an XAPI address/,
    );
    rejects(
      findBackend("docker"),
      "dns=w.example.org,name=www,connect=unix://relative.sock",
      /^VM 'www', key 'connect': 'unix:\/\/relative\.sock' is not an absolute socket path/,
    );
    // The password is never repeated back.
    assert.throws(
      () =>
        build(
          findBackend("xapi"),
          "dns=w.example.org,ip=10.0.0.1,name=www,connect=https://u:secret@xen2?x=1",
        ),
      (err: unknown) => err instanceof ConfigError && !err.message.includes("secret"),
    );
  });

  it("is an error naming the VM and the key for a backend without connections", () => {
    const own: Readonly<Record<string, string>> = {
      process: "exec=true",
      qemu: "kernel=/k",
      libxl: "kernel=/k,memory=65536",
    };
    for (const [name, keys] of Object.entries(own)) {
      rejects(
        findBackend(name),
        `dns=w.example.org,ip=10.0.0.1,name=www,${keys},connect=qemu:///system`,
        new RegExp(
          `^VM 'www', key 'connect': the ${name} backend runs its VMs on this machine and has no host to choose`,
        ),
      );
    }
  });

  it("is not offered as a known key where it cannot be used", () => {
    assert.throws(
      () => build(findBackend("process"), "dns=w.example.org,ip=10.0.0.1,name=www,exec=true,conect=x"),
      (err: unknown) => err instanceof ConfigError && !/known keys: .*\bconnect\b/.test(err.message),
    );
    assert.throws(
      () => build(findBackend("libvirt"), "dns=w.example.org,name=www,conect=x"),
      (err: unknown) => err instanceof ConfigError && /did you mean 'connect'\?/.test(err.message),
    );
  });

  it("is checked in config files too (what a reload reads), naming the file and the entry", () => {
    const file = parseConfigText(
      '{"vms": [{"name": "www", "dns": "www.example.org", "ip": "10.0.0.1", "exec": "true", "connect": "qemu:///system"}]}',
      "j.json",
      [],
    );
    assert.throws(
      () => buildFileSpecs(file, specOptions(findBackend("process"))),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message.startsWith(
          "config file 'j.json': vms #1 (www): VM 'www', key 'connect': the process backend",
        ),
    );
    const ok = parseConfigText(
      '{"vms": [{"name": "www", "dns": "www.example.org", "connect": "test:///default"}]}',
      "k.json",
      [],
    );
    assert.equal(buildFileSpecs(ok, specOptions(findBackend("libvirt")))[0]?.connect, "test:///default");
  });

  it("stops a start of the built CLI with one line naming the VM and the key", async () => {
    const res = await run(process.execPath, [
      CLI,
      ...["-x", "process", "-l", "0", "-f", "0.0.0.0"],
      "dns=www.jitsu.test,name=www,ip=10.0.0.1,exec=true,connect=qemu:///system",
    ]);
    assert.equal(res.code, 1, res.stderr);
    assert.match(
      res.stderr,
      /VM 'www', key 'connect': the process backend runs its VMs on this machine and has no host to choose/,
    );
  });
});
