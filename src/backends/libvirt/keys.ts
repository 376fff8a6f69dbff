/**
 * The libvirt backend's CONFIG keys: the original's LIBVIRT CONFIGURATION
 * (dns and ip are common keys; ip may be omitted, the address is discovered).
 */
import type { KeySpec } from "../../config/index.js";

export const LIBVIRT_KEYS: readonly KeySpec[] = [
  { key: "name", type: "string", doc: "Name of VM defined in libvirt (ignored if uuid is set)" },
  {
    key: "uuid",
    type: "string",
    doc: "UUID of VM defined in libvirt (required, but optional if name is set)",
  },
];
