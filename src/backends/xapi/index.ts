/**
 * XenServer / XCP-ng through the XenAPI (XML-RPC over HTTP(S)). See README.md.
 */
import type { BackendFactory } from "../contract.js";
import { XAPI_STOP_MODES, XapiBackend } from "./backend.js";
import { XAPI_KEYS } from "./keys.js";
import { parseXapiTarget } from "./target.js";

export { XAPI_KEYS } from "./keys.js";

export const xapiBackend: BackendFactory = {
  name: "xapi",
  summary:
    "XenServer / XCP-ng through the XenAPI: -c https://USER:PASSWORD@HOST (or http://HOST[:PORT]); credentials also from JITSU_XAPI_USER / JITSU_XAPI_PASSWORD",
  keys: XAPI_KEYS,
  connects: true,
  hosts: {
    check: (uri) => void parseXapiTarget(uri),
    defaultUri: (options) => options.connect,
  },
  capabilities: {
    stopModes: XAPI_STOP_MODES,
    optional: new Set(["domainId", "macs", "waitForKey", "onEvent"]),
  },
  create: (options) => new XapiBackend(options),
};

export { XapiBackend } from "./backend.js";
export { XenApiFailure } from "./session.js";
