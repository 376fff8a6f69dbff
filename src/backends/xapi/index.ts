/**
 * XenServer / XCP-ng through the XenAPI (XML-RPC over HTTP(S)). See README.md.
 */
import type { KeySpec } from "../../config/index.js";
import type { BackendFactory } from "../contract.js";
import { XAPI_STOP_MODES, XapiBackend } from "./backend.js";

/** The original's XAPI CONFIGURATION keys (dns and ip are common keys). */
export const XAPI_KEYS: readonly KeySpec[] = [
  { key: "name", type: "string", doc: "Name of VM defined in Xapi (ignored if uuid is set)" },
  { key: "uuid", type: "string", doc: "UUID of VM defined in Xapi (optional if name is set)" },
];

export const xapiBackend: BackendFactory = {
  name: "xapi",
  summary:
    "XenServer / XCP-ng through the XenAPI: -c https://USER:PASSWORD@HOST (or http://HOST[:PORT]); credentials also from JITSU_XAPI_USER / JITSU_XAPI_PASSWORD",
  keys: XAPI_KEYS,
  connects: true,
  capabilities: {
    stopModes: XAPI_STOP_MODES,
    optional: new Set(["domainId", "macs", "waitForKey", "onEvent"]),
  },
  create: (options) => new XapiBackend(options),
};

export { XapiBackend } from "./backend.js";
export { XenApiFailure } from "./session.js";
