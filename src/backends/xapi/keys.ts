/**
 * The xapi backend's CONFIG keys: the original's XAPI CONFIGURATION (dns and
 * ip are common keys).
 */
import type { KeySpec } from "../../config/index.js";

export const XAPI_KEYS: readonly KeySpec[] = [
  { key: "name", type: "string", doc: "Name of VM defined in Xapi (ignored if uuid is set)" },
  { key: "uuid", type: "string", doc: "UUID of VM defined in Xapi (optional if name is set)" },
];
