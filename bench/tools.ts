/**
 * What the benchmark needs from the machine: the tools it runs (checked and
 * named up front; nothing is installed), free loopback ports and a temp dir.
 */
import { execFileSync } from "node:child_process";
import { accessSync, constants, mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { createSocket } from "node:dgram";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

/** Each tool the bench runs, and the Debian package it comes from. */
export const TOOLS = {
  dnsperf: "dnsperf",
  dnsmasq: "dnsmasq-base",
  unbound: "unbound",
  taskset: "util-linux",
} as const;

/** The path of each tool in TOOLS. */
export type Tools = Record<keyof typeof TOOLS, string>;

/** Finds a command on PATH (plus the sbin directories, where dnsmasq and unbound live). */
export function which(command: string): string | null {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin", "/usr/local/sbin"];
  for (const dir of dirs) {
    if (dir === "") continue;
    const path = join(dir, command);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return null;
}

/** The path of every tool, or an error naming each missing tool and the package to install. */
export function requireTools(): Tools {
  const found: Partial<Tools> = {};
  const missing: string[] = [];
  for (const [tool, pkg] of Object.entries(TOOLS) as [keyof Tools, string][]) {
    const path = which(tool);
    if (path === null) missing.push(`${tool} (Debian package ${pkg})`);
    else found[tool] = path;
  }
  if (missing.length > 0) {
    const pkgs = Object.entries(TOOLS)
      .filter(([tool]) => found[tool as keyof Tools] === undefined)
      .map(([, pkg]) => pkg);
    throw new Error(
      `bench: missing ${missing.join(", ")}; install with: apt-get install --no-install-recommends ${pkgs.join(" ")}`,
    );
  }
  return found as Tools;
}

/** A loopback port free for both UDP and TCP (a DNS server binds both). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen(0, "127.0.0.1", () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const sock = createSocket("udp4");
      sock.once("error", () => resolve(false));
      sock.bind(port, "127.0.0.1", () => sock.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error("bench: no free loopback port for UDP and TCP after 20 tries");
}

export function makeTempDir(): string {
  return mkdtempSync(join(tmpdir(), "jitsu-bench-"));
}

/**
 * Which CPUs the servers under test run on and which the load (dnsperf, the
 * bench, upstreams) runs on: the server gets CPU 1 to itself, the load the
 * others, so the load generator never preempts the server it measures (on a
 * 2-CPU machine that is what makes p99 latencies repeatable). null: the
 * machine has one CPU, or `--no-pin`.
 */
export interface CpuPlan {
  server: string;
  load: string;
}

export function cpuPlan(cpuCount: number, pin: boolean): CpuPlan | null {
  if (!pin || cpuCount < 2) return null;
  return { server: "1", load: cpuCount === 2 ? "0" : `0,2-${cpuCount - 1}` };
}

/** Sets the CPU affinity of process `pid` and all its threads (`taskset -a -p -c`). */
export function pinTo(pid: number, cpus: string): void {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}
