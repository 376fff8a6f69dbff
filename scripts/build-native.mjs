#!/usr/bin/env node
// Builds the sd_notify addon (src/systemd/native/sd_notify.c, N-API) with node-gyp
// into dist/native/jitsu_sd_notify.node, unless that is newer than its sources.
// Optional: without a compiler (or node-gyp) it says so and exits 0; jitsu then
// notifies systemd through systemd-notify (see src/systemd/README.md).
// Usage: node scripts/build-native.mjs
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { spawnSync } from "node:child_process";

const SRC = "src/systemd/native";
const OUT = "dist/native/jitsu_sd_notify.node";
const sources = [join(SRC, "sd_notify.c"), join(SRC, "binding.gyp")];
if (existsSync(OUT) && sources.every((s) => statSync(s).mtimeMs <= statSync(OUT).mtimeMs)) process.exit(0);

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
const res = spawnSync(cmd, [...args, "rebuild", "--release", `--directory=${SRC}`], {
  stdio: ["ignore", "ignore", "pipe"],
  env,
});
const built = join(SRC, "build", "Release", "jitsu_sd_notify.node");
if (res.status !== 0 || !existsSync(built)) {
  const why =
    res.error?.message ??
    String(res.stderr ?? "")
      .trim()
      .split("\n")
      .slice(-3)
      .join(" | ");
  process.stderr.write(
    `build-native: the sd_notify addon was not built (${why}); under systemd jitsu will use systemd-notify (NotifyAccess=all)\n`,
  );
  process.exit(0);
}
mkdirSync(dirname(OUT), { recursive: true });
copyFileSync(built, OUT);
