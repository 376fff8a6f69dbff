#!/usr/bin/env node
// Builds jitsu's N-API addons with node-gyp into dist/native/, each unless it is
// newer than its sources:
// - jitsu_sd_notify.node (src/systemd/native): without it, jitsu notifies systemd
//   through systemd-notify (see src/systemd/README.md);
// - jitsu_splice_relay.node (src/activator/native): without it, the hold ports
//   relay in JavaScript (see src/activator/README.md);
// - jitsu_udp_io.node (src/dns/native, batched UDP I/O with recvmmsg/sendmmsg):
//   without it, DNS over UDP uses Node's dgram (see src/dns/README.md).
// Optional: without a compiler (or node-gyp) it says so and exits 0.
// Usage: node scripts/build-native.mjs
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { spawnSync } from "node:child_process";

const ADDONS = [
  {
    dir: "src/systemd/native",
    name: "jitsu_sd_notify",
    sources: ["sd_notify.c", "binding.gyp"],
    without: "under systemd jitsu will use systemd-notify (NotifyAccess=all)",
  },
  {
    dir: "src/activator/native",
    name: "jitsu_splice_relay",
    sources: ["splice_relay.c", "binding.gyp"],
    without: "hold ports will relay in JavaScript (slower on the warm path)",
  },
  {
    dir: "src/dns/native",
    name: "jitsu_udp_io",
    sources: ["udp_io.c", "binding.gyp"],
    without: "DNS over UDP will use Node's dgram (slower under load)",
  },
];

// node-gyp: on PATH under npm run; else the copy bundled with npm, next to this node.
function nodeGyp() {
  const candidates = [
    join(
      dirname(process.execPath),
      "..",
      "lib",
      "node_modules",
      "npm",
      "node_modules",
      "node-gyp",
      "bin",
      "node-gyp.js",
    ),
    "/usr/share/nodejs/node-gyp/bin/node-gyp.js",
    "/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js",
  ];
  const found = candidates.find((c) => existsSync(c));
  return found === undefined ? ["node-gyp"] : [process.execPath, found];
}

const env = { ...process.env };
// Debian's nodejs has its headers in /usr/include/node: use them rather than downloading.
if (env.npm_config_nodedir === undefined && existsSync("/usr/include/node/node_api.h"))
  env.npm_config_nodedir = "/usr";
const [cmd, ...args] = nodeGyp();

for (const addon of ADDONS) {
  const out = `dist/native/${addon.name}.node`;
  const sources = addon.sources.map((s) => join(addon.dir, s));
  if (existsSync(out) && sources.every((s) => statSync(s).mtimeMs <= statSync(out).mtimeMs)) continue;
  const res = spawnSync(cmd, [...args, "rebuild", "--release", `--directory=${addon.dir}`], {
    stdio: ["ignore", "ignore", "pipe"],
    env,
  });
  const built = join(addon.dir, "build", "Release", `${addon.name}.node`);
  if (res.status !== 0 || !existsSync(built)) {
    const why =
      res.error?.message ??
      String(res.stderr ?? "")
        .trim()
        .split("\n")
        .slice(-3)
        .join(" | ");
    process.stderr.write(`build-native: ${addon.name} was not built (${why}); ${addon.without}\n`);
    continue;
  }
  mkdirSync(dirname(out), { recursive: true });
  copyFileSync(built, out);
}
