/**
 * The libvirt backend (`-x libvirt`, the original's default): a pure-TypeScript
 * client of libvirt's remote protocol. See README.md in this folder.
 */
import type { BackendFactory, StopMode } from "../contract.js";
import { UsageError } from "../../errors/index.js";
import { BACKEND_NAME, LibvirtBackend } from "./backend.js";
import { LIBVIRT_KEYS } from "./keys.js";
import { parseLibvirtUri, UriError } from "./uri.js";

export { LibvirtBackend, mapDomainState } from "./backend.js";
export { LibvirtConnection } from "./connection.js";
export { LIBVIRT_KEYS } from "./keys.js";
export { LibvirtError } from "./rpc.js";
export { parseLibvirtUri, type LibvirtUri } from "./uri.js";

export const libvirtBackend: BackendFactory = {
  name: BACKEND_NAME,
  summary: "libvirt domains (KVM/QEMU, Xen, LXC, test) through libvirtd, local or remote (-c URI)",
  keys: LIBVIRT_KEYS,
  connects: true,
  hosts: {
    check(uri) {
      try {
        parseLibvirtUri(uri);
      } catch (err) {
        if (err instanceof UriError) throw new UsageError(err.message, "--connect");
        throw err;
      }
    },
    defaultUri: (options) => options.connect,
  },
  capabilities: {
    stopModes: new Set<StopMode>(["destroy", "shutdown", "suspend", "pause", "save"]),
    optional: new Set(["domainId", "macs", "addresses", "onEvent"]),
  },
  create(options) {
    let uri;
    try {
      uri = parseLibvirtUri(options.connect);
    } catch (err) {
      if (err instanceof UriError) throw new UsageError(err.message, "--connect");
      throw err;
    }
    return new LibvirtBackend(uri, options, { callTimeoutMs: options.callTimeoutMs });
  },
};
