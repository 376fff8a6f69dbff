/**
 * The libxl backend's CONFIG keys: the original's LIBXL CONFIGURATION, with
 * the same names and meaning (plus `uuid`, which the original read too).
 */
import type { KeySpec } from "../../config/index.js";

export const LIBXL_KEYS: readonly KeySpec[] = [
  { key: "name", type: "string", required: true, doc: "Name of created VM (required)" },
  { key: "uuid", type: "string", doc: "UUID given to the created domain (optional; xl picks one otherwise)" },
  { key: "kernel", type: "path", required: true, doc: "VM kernel file name (required)" },
  {
    key: "memory",
    type: "size-kib",
    required: true,
    doc: "VM memory (required): a plain number is KiB, as the original's max_memkb (memory=64000 is about 64 MB); units such as 64M or 1G are accepted. xl takes whole MiB, so the value is rounded up to the next MiB.",
  },
  { key: "cmdline", type: "string", doc: "Extra parameters passed to kernel (optional)" },
  {
    key: "nic",
    type: "string",
    repeatable: true,
    doc: "Network device (br0, eth0 etc). Can be set more than once to configure multiple NICs (optional)",
  },
  {
    key: "script",
    type: "string",
    repeatable: true,
    doc: "Virtual interface (VIF) configuration script. Can be set more than once to specify a VIF script per network device, in order; with fewer scripts than NICs they repeat (optional)",
  },
  {
    key: "disk",
    type: "tuple",
    repeatable: true,
    doc: "Disk to connect to the Xen VM. Format '[dom0 device/file]@[hdX/xvdX/sdX etc]'. Can be set more than once to configure multiple disks (optional)",
  },
  {
    key: "rumprun_config",
    type: "path",
    doc: "Path to file with rumprun unikernel JSON config (optional); written byte for byte to /local/domain/[domid]/rumprun/cfg before the domain is unpaused",
  },
];
