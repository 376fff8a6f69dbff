/**
 * Upstreams from resolv.conf(5): every `nameserver ADDRESS` line, in order.
 * Used only when the command line names no forwarder (`-f`).
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";

export interface Upstream {
  readonly host: string;
  readonly port: number;
}

/** Parses resolv.conf text; unusable lines are skipped (resolv.conf is lenient too). */
export function parseResolvConf(text: string, port = 53): Upstream[] {
  const out: Upstream[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (m === null) continue;
    // A link-local IPv6 nameserver may carry a zone ("fe80::1%eth0"); keep the zone, dgram accepts it.
    const host = m[1]!;
    if (isIP(host.replace(/%.*$/, "")) === 0) continue;
    out.push({ host, port });
  }
  return out;
}

/** Reads `path` (default /etc/resolv.conf); a missing file gives no upstreams. */
export function upstreamsFromResolvConf(path = "/etc/resolv.conf", port = 53): Upstream[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return [];
  }
  return parseResolvConf(text, port);
}
