/**
 * Real processes for the process backend's tests: a small HTTP server script
 * on a free 127.0.0.1 port, and helpers to build specs and capture logs.
 * Free ports, alive(pid) and waitFor come from test/support.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import type { BackendOptions } from "../../../src/backends/contract.js";
import { systemClock } from "../../../src/clock/index.js";
import { buildVmSpec, type ConfigPair, type VmSpec } from "../../../src/config/index.js";
import type { Logger } from "../../../src/log/index.js";
import { PROCESS_KEYS } from "../../../src/backends/process/index.js";

/** argv: PORT [ignore-term] [delay-ms]. Logs to stdout, answers "hello from $JITSU_VM $GREETING". */
const SERVER = `
const http = require("node:http");
const port = Number(process.argv[2]);
const mode = process.argv[3] || "";
const delay = Number(process.argv[4] || 0);
process.on("SIGTERM", () => {
  if (mode === "ignore-term") { console.log("ignoring SIGTERM"); return; }
  console.log("got SIGTERM");
  process.exit(0);
});
setTimeout(() => {
  http.createServer((req, res) => res.end("hello from " + process.env.JITSU_VM + " " + (process.env.GREETING || "")))
    .listen(port, "127.0.0.1", () => console.log("listening on " + port));
}, delay);
`;

/** argv: CODE DELAY-MS. Exits with CODE after DELAY-MS. */
const EXIT = `setTimeout(() => process.exit(Number(process.argv[2])), Number(process.argv[3]));`;

/** Starts a grandchild in the same group, prints its pid, and waits. */
const PARENT = `
const { spawn } = require("node:child_process");
const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
console.log("grandchild " + child.pid);
setInterval(() => {}, 1000);
`;

export interface Fixture {
  dir: string;
  server: string;
  exit: string;
  parent: string;
  remove(): Promise<void>;
}

export async function makeFixture(): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), "jitsu-process-"));
  const server = join(dir, "server.cjs");
  const exit = join(dir, "exit.cjs");
  const parent = join(dir, "parent.cjs");
  await writeFile(server, SERVER);
  await writeFile(exit, EXIT);
  await writeFile(parent, PARENT);
  return { dir, server, exit, parent, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** GET http://127.0.0.1:PORT/ with a short timeout: the body, or null when nothing answers. */
export function httpGet(port: number, timeoutMs = 500): Promise<string | null> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/", agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve(body));
      res.on("error", () => resolve(null));
    });
    req.on("timeout", () => {
      req.destroy();
      resolve(null);
    });
    req.on("error", () => resolve(null));
    req.end();
  });
}

export function processSpec(pairs: ConfigPair[]): VmSpec {
  return buildVmSpec(pairs, "CONFIG #1", {
    backendKeys: PROCESS_KEYS,
    backendName: "process",
  });
}

export interface CapturedLog {
  log: Logger;
  lines: { msg: string; level: number; vm?: string; stream?: string }[];
}

export function captureLog(): CapturedLog {
  const lines: CapturedLog["lines"] = [];
  const log = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

export function backendOptions(log: Logger, dir: string): BackendOptions {
  return { connect: "", stateDir: dir, settings: {}, log, clock: systemClock };
}

/** Kills a whole process group, ignoring one that is gone already. */
export function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // gone
  }
}
