/**
 * The QEMU command line for one VM. QEMU's own option syntax separates
 * properties with commas; a comma inside a value is written twice.
 */
import type { QemuMachine } from "./config.js";

/** Where one VM's files live (see VmDirectory). */
export interface RunPaths {
  readonly pidFile: string;
  readonly qmpSocket: string;
  readonly consoleLog: string;
}

function q(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * Arguments for `m.qemu`. `incoming` is a migration URI to load the memory
 * from (the VM then starts paused until `cont`).
 */
export function qemuArgs(m: QemuMachine, paths: RunPaths, incoming?: string): string[] {
  const args = [
    "-name",
    `guest=${q(m.label)},process=jitsu-qemu`,
    "-machine",
    m.machine,
    "-accel",
    m.accel,
    "-cpu",
    m.accel === "kvm" ? "host" : "max",
    "-m",
    `${m.memoryMiB}M`,
    "-smp",
    String(m.cpus),
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    // A guest reboot or panic (panic=-1) ends QEMU, so jitsu sees the VM go off.
    "-no-reboot",
    "-serial",
    `file:${paths.consoleLog}`,
    "-kernel",
    m.kernel,
    ...(m.initrd === undefined ? [] : ["-initrd", m.initrd]),
    "-append",
    m.cmdline,
    ...(m.uuid === undefined ? [] : ["-uuid", m.uuid]),
  ];
  m.nics.forEach((nic, i) => {
    const id = `net${i}`;
    switch (nic.kind) {
      case "user":
        args.push("-netdev", [`user,id=${id}`, ...nic.hostfwd.map((h) => `hostfwd=${h}`)].join(","));
        break;
      case "tap":
        args.push("-netdev", `tap,id=${id},ifname=${nic.ifname},script=no,downscript=no`);
        break;
      case "bridge":
        args.push("-netdev", `bridge,id=${id},br=${nic.bridge}`);
        break;
    }
    args.push("-device", `virtio-net-pci,netdev=${id},mac=${m.macs[i]!}`);
  });
  for (const d of m.disks) {
    args.push("-drive", `file=${q(d.file)},if=none,id=${d.vdev},format=${d.format}`);
    args.push("-device", `virtio-blk-pci,drive=${d.vdev}`);
  }
  args.push(
    "-chardev",
    `socket,id=qmp,path=${q(paths.qmpSocket)},server=on,wait=off`,
    "-mon",
    "chardev=qmp,mode=control",
    "-pidfile",
    paths.pidFile,
  );
  if (incoming !== undefined) args.push("-incoming", incoming);
  args.push(...m.extraArgs);
  return args;
}

/** A single-quoted word for /bin/sh (QEMU runs exec: migration URIs through it). */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
