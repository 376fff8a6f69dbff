/**
 * The qemu backend's CONFIG keys and their defaults (dns and ip are common
 * keys). Values cannot contain commas (they separate CONFIG entries), so every
 * key has a comma-free form; config.ts parses them.
 */
import type { KeySpec } from "../../config/index.js";

export const DEFAULT_QEMU = "qemu-system-x86_64";
export const DEFAULT_MACHINE = "q35";
/** init_on_free=1: freed guest pages are zero, so a saved memory image is smaller (94 -> 55 MB for the test guest). */
export const DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1 init_on_free=1";
export const DEFAULT_MEMORY_KIB = 128 * 1024;
export const DEFAULT_SHUTDOWN_TIMEOUT_S = 30;

export const QEMU_KEYS: readonly KeySpec[] = [
  {
    key: "name",
    type: "string",
    doc: "Name of the VM: QEMU's -name, logs and the stats table, and the name of its state directory (defaults to the first DNS name).",
  },
  { key: "uuid", type: "string", doc: "UUID given to QEMU (-uuid), visible to the guest through SMBIOS." },
  {
    key: "kernel",
    type: "path",
    required: true,
    doc: "Kernel or unikernel image to boot (required), passed to QEMU's -kernel.",
  },
  { key: "initrd", type: "path", doc: "Initial ramdisk (-initrd)." },
  {
    key: "cmdline",
    type: "string",
    doc: `Kernel command line (-append); default '${DEFAULT_CMDLINE}'.`,
  },
  {
    key: "memory",
    type: "size-kib",
    doc: "Guest memory: a plain number is in KiB (like the libxl backend), or give a unit: 128M, 1G. Default 128M.",
  },
  { key: "cpus", type: "int", doc: "Number of virtual CPUs (-smp); default 1." },
  {
    key: "machine",
    type: "string",
    doc: `QEMU machine type (-machine); default ${DEFAULT_MACHINE}, which boots a kernel quickly under TCG and takes virtio-net-pci.`,
  },
  {
    key: "accel",
    type: "string",
    doc: "Accelerator: kvm or tcg (default kvm when /dev/kvm is usable and not only PVM's (kvm_pvm runs PVM guest kernels only), else tcg).",
  },
  {
    key: "disk",
    type: "tuple",
    repeatable: true,
    doc: "Disk image as disk=FILE@vdX (virtio-blk, in vda, vdb, ... order; qcow2 by its .qcow2 extension, else raw). Can be set more than once.",
  },
  {
    key: "nic",
    type: "string",
    repeatable: true,
    doc: "Network interface (virtio-net-pci): user (QEMU user networking, the default), tap:NAME (an existing tap device) or bridge:NAME (through qemu-bridge-helper). Can be set more than once.",
  },
  {
    key: "hostfwd",
    type: "string",
    repeatable: true,
    doc: "Port forward into the guest for user networking, as hostfwd=tcp:127.0.0.1:HOSTPORT-:GUESTPORT (udp: too). Applies to the first user nic. Can be set more than once.",
  },
  {
    key: "qemu_arg",
    type: "string",
    repeatable: true,
    doc: "Extra QEMU arguments, split on spaces (qemu_arg=-device virtio-rng-pci). Can be set more than once; added last.",
  },
  { key: "qemu", type: "string", doc: `QEMU binary (a path, or a name on PATH); default ${DEFAULT_QEMU}.` },
  {
    key: "standby",
    type: "bool",
    doc: "With the suspend and save stop modes: once the memory is saved, start a QEMU that waits (-incoming defer, no guest memory loaded) to resume the VM, so a resume skips QEMU's own start-up. Default false.",
  },
  {
    key: "shutdown_timeout",
    type: "seconds",
    doc: `Seconds the guest has to power off after the ACPI power button (shutdown stop mode) before QEMU is made to quit; default ${DEFAULT_SHUTDOWN_TIMEOUT_S}.`,
  },
];
