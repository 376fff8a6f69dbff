/**
 * The qemu CONFIG keys: what each becomes on QEMU's command line, and the
 * one-line errors (naming the VM and the key) for values that cannot work.
 */
import assert from "node:assert/strict";
import { mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildVmSpec, parseConfigString, type VmSpec } from "../../../src/config/index.js";
import { ConfigError } from "../../../src/errors/index.js";
import { systemClock } from "../../../src/clock/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { parseMachine, qemuBackend } from "../../../src/backends/qemu/index.js";
import { qemuArgs } from "../../../src/backends/qemu/command-line.js";
import { kvmDefault, kvmUsable } from "../../../src/backends/qemu/config.js";
import { VmDirectory } from "../../../src/backends/qemu/vm-directory.js";
import { tempDir } from "../../support/index.js";

describe("qemu CONFIG keys", () => {
  let dir: { path: string; remove(): Promise<void> };
  let kernel: string;
  let disk: string;
  before(async () => {
    dir = await tempDir("jitsu-qemu-config-");
    kernel = join(dir.path, "vmlinuz");
    disk = join(dir.path, "data.img");
    writeFileSync(kernel, "not really a kernel");
    writeFileSync(disk, "");
  });
  after(() => dir.remove());

  const spec = (extra: string): VmSpec =>
    buildVmSpec(parseConfigString(`dns=q.test,ip=10.0.0.1,name=q${extra}`, "CONFIG #1"), "CONFIG #1", {
      backendKeys: qemuBackend.keys,
      backendName: "qemu",
    });
  const args = (extra: string): string[] => {
    const d = new VmDirectory(dir.path, "q");
    return qemuArgs(parseMachine(spec(`,kernel=${kernel}${extra}`)), d);
  };
  const after1 = (argv: string[], flag: string): string[] =>
    argv.flatMap((a, i) => (a === flag && argv[i + 1] !== undefined ? [argv[i + 1]!] : []));
  const fails = (extra: string, pattern: RegExp): void => {
    assert.throws(
      () => parseMachine(spec(extra)),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, pattern);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      },
    );
  };

  it("kernel is required, and must exist", () => {
    assert.throws(() => spec(""), /VM 'q', key 'kernel': required key is missing/);
    fails(
      ",kernel=/nonexistent/vmlinuz",
      /VM 'q', key 'kernel': file '\/nonexistent\/vmlinuz' does not exist/,
    );
    fails(`,kernel=${kernel},initrd=/nonexistent/initrd`, /key 'initrd': file/);
  });

  it("defaults: q35, 128 MiB, one CPU, one user nic, the guest's console on a file, QMP and a pid file", () => {
    const argv = args("");
    assert.deepEqual(after1(argv, "-machine"), ["q35"]);
    assert.deepEqual(after1(argv, "-m"), ["128M"]);
    assert.deepEqual(after1(argv, "-smp"), ["1"]);
    assert.deepEqual(after1(argv, "-accel"), [kvmDefault() ? "kvm" : "tcg"]);
    assert.deepEqual(after1(argv, "-append"), ["console=ttyS0 quiet panic=-1 init_on_free=1"]);
    assert.deepEqual(after1(argv, "-netdev"), ["user,id=net0"]);
    assert.match(after1(argv, "-device")[0]!, /^virtio-net-pci,netdev=net0,mac=52:54:00(:[0-9a-f]{2}){3}$/);
    assert.match(
      after1(argv, "-chardev")[0]!,
      /^socket,id=qmp,path=.*\/qemu\/q\/qmp\.sock,server=on,wait=off$/,
    );
    assert.match(after1(argv, "-pidfile")[0]!, /\/qemu\/q\/qemu\.pid$/);
    assert.ok(argv.includes("-no-reboot"));
    assert.ok(!argv.includes("-incoming"));
  });

  it("memory: a plain number is KiB, units work, too little is an error", () => {
    assert.deepEqual(after1(args(",memory=65536"), "-m"), ["64M"]);
    assert.deepEqual(after1(args(",memory=1G"), "-m"), ["1024M"]);
    assert.deepEqual(after1(args(",memory=200M"), "-m"), ["200M"]);
    fails(`,kernel=${kernel},memory=8M`, /key 'memory': 8 MiB is too little/);
    assert.throws(() => spec(`,kernel=${kernel},memory=lots`), /key 'memory': expected a size/);
  });

  it("cpus, machine, cmdline, uuid and qemu_arg are passed on", () => {
    const argv = args(
      ",cpus=2,machine=pc,cmdline=console=ttyS0 root=/dev/vda,uuid=6a3b9f1e-0000-4000-8000-000000000001,qemu_arg=-device virtio-rng-pci,qemu_arg=-rtc base=utc",
    );
    assert.deepEqual(after1(argv, "-smp"), ["2"]);
    assert.deepEqual(after1(argv, "-machine"), ["pc"]);
    assert.deepEqual(after1(argv, "-append"), ["console=ttyS0 root=/dev/vda"]);
    assert.deepEqual(after1(argv, "-uuid"), ["6a3b9f1e-0000-4000-8000-000000000001"]);
    assert.deepEqual(argv.slice(-4), ["-device", "virtio-rng-pci", "-rtc", "base=utc"]);
    fails(`,kernel=${kernel},cpus=0`, /key 'cpus': expected 1 to 255 CPUs/);
  });

  it("accel: kvm or tcg; kvm only where /dev/kvm is usable", () => {
    assert.deepEqual(after1(args(",accel=tcg"), "-accel"), ["tcg"]);
    assert.deepEqual(after1(args(",accel=tcg"), "-cpu"), ["max"]);
    fails(`,kernel=${kernel},accel=hvf`, /key 'accel': expected kvm or tcg, got 'hvf'/);
    if (kvmUsable()) assert.deepEqual(after1(args(",accel=kvm"), "-accel"), ["kvm"]);
    else fails(`,kernel=${kernel},accel=kvm`, /key 'accel': \/dev\/kvm is missing or not writable/);
  });

  it("accel's default: not kvm where /dev/kvm is only PVM's (kvm_pvm without kvm_intel or kvm_amd)", () => {
    const modules = join(dir.path, "modules");
    const load = (name: string): void => void mkdirSync(join(modules, name), { recursive: true });
    mkdirSync(modules, { recursive: true });
    assert.equal(kvmDefault(modules), kvmUsable());
    load("kvm_pvm");
    assert.equal(kvmDefault(modules), false);
    load("kvm_intel");
    assert.equal(kvmDefault(modules), kvmUsable());
  });

  it("nics: user (with hostfwd), tap:NAME, bridge:NAME, each with its own stable MAC", () => {
    const argv = args(
      ",nic=user,nic=tap:tap7,nic=bridge:br0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53",
    );
    assert.deepEqual(after1(argv, "-netdev"), [
      "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53",
      "tap,id=net1,ifname=tap7,script=no,downscript=no",
      "bridge,id=net2,br=br0",
    ]);
    const macs = after1(argv, "-device").map((d) => /mac=([0-9a-f:]+)/.exec(d)?.[1]);
    assert.equal(new Set(macs).size, 3);
    assert.deepEqual(
      after1(args(",nic=user,nic=tap:tap7,nic=bridge:br0"), "-device"),
      after1(argv, "-device"),
    );
    fails(`,kernel=${kernel},nic=vde`, /key 'nic': expected user, tap:NAME or bridge:NAME/);
    fails(`,kernel=${kernel},nic=tap:`, /key 'nic'/);
    fails(`,kernel=${kernel},nic=tap:t0,hostfwd=tcp:127.0.0.1:1-:80`, /key 'hostfwd': needs a user nic/);
    fails(
      `,kernel=${kernel},hostfwd=127.0.0.1:8080`,
      /key 'hostfwd': expected tcp:127\.0\.0\.1:HOSTPORT-:GUESTPORT/,
    );
    fails(`,kernel=${kernel},hostfwd=tcp:127.0.0.1:99999-:80`, /key 'hostfwd'/);
  });

  it("disks: FILE@vdX in vdX order, a free vdX when none is given, format from the extension", () => {
    const argv = args(`,disk=${disk}@vdb,disk=${disk}`);
    assert.deepEqual(after1(argv, "-drive"), [
      `file=${disk},if=none,id=vda,format=raw`,
      `file=${disk},if=none,id=vdb,format=raw`,
    ]);
    assert.deepEqual(
      after1(argv, "-device").filter((d) => d.startsWith("virtio-blk")),
      ["virtio-blk-pci,drive=vda", "virtio-blk-pci,drive=vdb"],
    );
    fails(`,kernel=${kernel},disk=${disk}@xvda`, /key 'disk': expected a virtio disk name vda to vdz/);
    fails(
      `,kernel=${kernel},disk=${disk}@vda,disk=${disk}@vda`,
      /key 'disk': disk name 'vda' is given twice/,
    );
    fails(
      `,kernel=${kernel},disk=/nonexistent.img@vda`,
      /key 'disk': file '\/nonexistent\.img' does not exist/,
    );
    fails(`,kernel=${kernel},disk=@vda`, /key 'disk': expected FILE@vdX/);
  });

  it("qemu: a binary that is not there is an error naming the key", () => {
    fails(
      `,kernel=${kernel},qemu=/nonexistent/qemu`,
      /key 'qemu': QEMU binary '\/nonexistent\/qemu' does not exist; install qemu-system-x86 or set qemu=PATH$/,
    );
  });

  it("unknown keys are refused, naming the backend", () => {
    assert.throws(
      () => spec(`,kernel=${kernel},vcpus=2`),
      /VM 'q', key 'vcpus': unknown key for the qemu backend/,
    );
  });

  it("state directory: one per VM, a safe name, and a clear error when the socket path is too long", () => {
    assert.equal(VmDirectory.dirName("www"), "www");
    assert.match(VmDirectory.dirName("../etc/x"), /^[._A-Za-z0-9-]+-[0-9a-f]{8}$/);
    assert.notEqual(VmDirectory.dirName("a/b"), VmDirectory.dirName("a_b"));
    assert.ok(!VmDirectory.dirName(".hidden").startsWith("."));
    assert.throws(
      () => new VmDirectory(`/tmp/${"d".repeat(100)}`, "www"),
      (e: unknown) =>
        e instanceof ConfigError && /longer than 107 bytes .*use a shorter --state-dir/.test(e.message),
    );
  });

  it("preflight: every VM's binary, files and socket path, and the state folder, at once", async () => {
    const state = join(dir.path, "state");
    const backend = qemuBackend.create({
      connect: "",
      stateDir: state,
      settings: {},
      log: silentLogger(),
      clock: systemClock,
    });
    const specs = [
      spec(`,kernel=${kernel}`),
      spec(
        `2,kernel=/nonexistent/vmlinuz,initrd=${dir.path},disk=/nonexistent.img@vdb,qemu=/nonexistent/qemu`,
      ),
      spec(`3,kernel=${kernel},memory=1M`),
    ];
    assert.deepEqual(
      (await backend.preflight!(specs)).map((p) => p.message),
      [
        "VM 'q2', key 'qemu': QEMU binary '/nonexistent/qemu' does not exist; install qemu-system-x86 or set qemu=PATH",
        "VM 'q2', key 'kernel': file '/nonexistent/vmlinuz' does not exist",
        `VM 'q2', key 'initrd': '${dir.path}' is a directory, not a file`,
        "VM 'q2', key 'disk': file '/nonexistent.img' does not exist",
        "VM 'q3', key 'memory': 1 MiB is too little for a VM (at least 16M)",
      ],
    );
    assert.ok(statSync(join(state, "qemu")).isDirectory());
    // The socket path limit, found before any QEMU is run.
    const deep = qemuBackend.create({
      connect: "",
      stateDir: join(dir.path, "d".repeat(100)),
      settings: {},
      log: silentLogger(),
      clock: systemClock,
    });
    const tooLong = await deep.preflight!([spec(`,kernel=${kernel}`)]);
    assert.equal(tooLong.length, 1);
    assert.match(tooLong[0]!.message, /^VM 'q': the QMP socket path .* is longer than 107 bytes/);
  });

  it("every key has help text, and every stop mode is supported", () => {
    for (const k of qemuBackend.keys) assert.ok(k.doc.length > 20, k.key);
    assert.deepEqual([...qemuBackend.capabilities.stopModes].sort(), [
      "destroy",
      "pause",
      "save",
      "shutdown",
      "suspend",
    ]);
  });
});
