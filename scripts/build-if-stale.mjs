#!/usr/bin/env node
// Compiles the TypeScript (tsc -p tsconfig.json) unless dist/ is newer than
// Then builds the native addons whose C sources changed (scripts/build-native.mjs).
// every source file and the compiler settings: `npm ci` has just built it (the
// `prepare` script), so `npm run demo` / `npm test` right after it do not
// compile a second time. Usage: node scripts/build-if-stale.mjs
import { existsSync, readdirSync, statSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

const STAMP = "dist/.tsbuildinfo";
const SOURCES = ["src", "test", "bench", "scripts", "tsconfig.json", "package.json", "package-lock.json"];

/** The newest modification time under `path` (a file or a folder of .ts files). */
function newest(path) {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let max = st.mtimeMs; // a deleted or renamed file changes its folder's time
  for (const entry of readdirSync(path)) {
    const child = join(path, entry);
    if (entry.endsWith(".ts") || statSync(child).isDirectory()) max = Math.max(max, newest(child));
  }
  return max;
}

const built = existsSync(STAMP) ? statSync(STAMP).mtimeMs : 0;
const stale = SOURCES.some((p) => newest(p) > built);
if (stale) {
  const tsc = spawnSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], {
    stdio: "inherit",
  });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);
  // tsc leaves its build info as it was when nothing needed emitting: mark this check done.
  const now = new Date();
  utimesSync(STAMP, now, now);
}
// The native addons (src/systemd, src/dns): each rebuilt only when its C source changed; optional.
const native = spawnSync(process.execPath, ["scripts/build-native.mjs"], { stdio: "inherit" });
if (native.status !== 0) process.exit(native.status ?? 1);
