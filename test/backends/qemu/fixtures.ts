/**
 * What the qemu tests share: the tiny test guest (built once by
 * scripts/build-test-guest.sh and cached), HTTP checks through a hostfwd port,
 * and a look at which QEMU processes run for a pid file.
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root, from dist/test/backends/qemu/. */
export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

export interface Guest {
  readonly kernel: string;
  readonly initrd: string;
}

/** Builds (or finds in the cache) the test guest; the first build downloads a kernel package. */
export function testGuest(): Promise<Guest> {
  return new Promise((resolve, reject) => {
    execFile(
      "bash",
      [join(REPO_ROOT, "scripts/build-test-guest.sh")],
      { timeout: 600_000, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err !== null) {
          reject(new Error(`scripts/build-test-guest.sh failed: ${err.message}\n${stderr}`));
          return;
        }
        const dir = stdout.trim().split("\n").at(-1)!;
        resolve({ kernel: join(dir, "vmlinuz"), initrd: join(dir, "initrd.gz") });
      },
    );
  });
}

/** GET / on 127.0.0.1:port: the status code, or null when nothing answered within `timeoutMs`. */
export function httpStatus(port: number, timeoutMs = 1000): Promise<number | null> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/", timeout: timeoutMs }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? null));
      res.on("error", () => resolve(null));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(null));
    req.end();
  });
}

/** Polls until GET / answers 200; resolves with the milliseconds it took. */
export async function waitHttp(port: number, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if ((await httpStatus(port)) === 200) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no HTTP 200 from 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/** Pids of live processes whose command line has `-pidfile <pidFile>`: the QEMUs of one VM directory. */
export function qemuPids(pidFile: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const i = argv.indexOf("-pidfile");
      if (i >= 0 && argv[i + 1] === pidFile) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** SIGKILLs every QEMU of a VM directory (test clean-up, also after a failure). */
export function killQemus(pidFile: string): void {
  for (const pid of qemuPids(pidFile)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
}

export async function waitUntil(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
