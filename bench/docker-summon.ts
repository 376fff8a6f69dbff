#!/usr/bin/env node
/**
 * `node dist/bench/docker-summon.js [--rounds N]`: how long a container behind
 * a jitsu name takes to serve, against the engine's own CLI doing the same.
 *
 * A real Podman service (test/support/podman.ts, all state in a temp dir)
 * and one container, `bench`, running busybox httpd on a 127.0.0.1 port
 * (host network). jitsu (the built CLI, `-x docker`, `ready=http://...`, a
 * TTL long enough that it never stops the container itself) answers
 * `bench.docker.test`. Each round, interleaved:
 *
 * - jitsu cold: `podman stop` behind jitsu's back (jitsu sees it through the
 *   event stream), then one UDP query -> answer. The answer waits for the
 *   ready= probe, so it means "the container serves HTTP";
 * - peer cold: `podman stop`, then `podman start bench` + the same readiness
 *   wait (GET / every 50 ms, jitsu's probe interval) -> first 200;
 * - jitsu pause: `podman pause` behind its back, then query -> answer
 *   (unpause + probe);
 * - peer pause: `podman pause`, then `podman unpause bench` + the same wait.
 *
 * Medians over the rounds; jitsu's overhead as the ratio jitsu / peer.
 * Writes bench/results/<timestamp>-docker-summon.json. Loopback only.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, startCli, tempDir, type CliProcess } from "../test/support/index.js";
import { IMAGE, PodmanService } from "../test/support/podman.js";
import { queryOnce } from "./dns-client.js";
import { median } from "./stats.js";

const here = dirname(fileURLToPath(import.meta.url));
const RESULTS_DIR = join(here, "..", "..", "bench", "results");
const NAME = "bench.docker.test";

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

function httpOk(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, path: "/", timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 400);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/** Polls GET / every 50 ms (bounded by 30 s); ms from `t0`. */
async function readyAfter(port: number, t0: number): Promise<number> {
  while (!(await httpOk(port))) {
    if (performance.now() - t0 > 30_000) throw new Error("the container did not serve within 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  return performance.now() - t0;
}

async function waitOutput(cli: CliProcess, from: number, pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!pattern.test(cli.output().slice(from))) {
    if (Date.now() > deadline) throw new Error(`jitsu did not log ${pattern}:\n${cli.output().slice(from)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function main(): Promise<void> {
  const i = process.argv.indexOf("--rounds");
  const rounds = i > 0 ? Number(process.argv[i + 1]) : 5;
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds takes a whole number of 1 or more");
  const podman = await PodmanService.start();
  const dir = await tempDir("jitsu-bench-docker-");
  let cli: CliProcess | undefined;
  try {
    const web = await freePort();
    const dns = await freePort();
    await podman.must([
      "create",
      "--name",
      "bench",
      "--network",
      "host",
      IMAGE,
      "httpd",
      "-f",
      "-p",
      `127.0.0.1:${web}`,
      "-h",
      "/www",
    ]);
    cli = startCli([
      ...["-x", "docker", "-c", podman.uri, "-l", String(dns), "-f", "0.0.0.0", "-t", "3600", "-d", "0"],
      ...["-m", "pause", "--state-dir", dir.path, `dns=${NAME},name=bench,ready=http://127.0.0.1:${web}/`],
    ]);
    await cli.waitFor(/Starting server on/, 30_000);
    const rows = {
      jitsuCold: [] as number[],
      peerCold: [] as number[],
      jitsuPause: [] as number[],
      peerPause: [] as number[],
    };

    const jitsuQuery = async (): Promise<number> => {
      const a = await queryOnce(dns, NAME, "A", 30_000);
      if (a === null || a.rcode !== "NOERROR") throw new Error(`query failed: ${a?.rcode ?? "timeout"}`);
      if (!(await httpOk(web))) throw new Error("answered before the container served");
      return a.ms;
    };
    const behindBack = async (args: string[], pattern: RegExp): Promise<void> => {
      const from = cli!.output().length;
      await podman.must(args);
      await waitOutput(cli!, from, pattern);
    };
    // Warm-up: the first start pays for things no later one does (image layers, caches).
    await jitsuQuery();
    for (let r = 0; r < rounds; r++) {
      await behindBack(["stop", "-t", "0", "bench"], /VM 'bench' is off/);
      rows.jitsuCold.push(await jitsuQuery());
      await podman.must(["stop", "-t", "0", "bench"]);
      let t0 = performance.now();
      await podman.must(["start", "bench"]);
      rows.peerCold.push(await readyAfter(web, t0));

      await behindBack(["pause", "bench"], /VM 'bench' is paused/);
      rows.jitsuPause.push(await jitsuQuery());
      await podman.must(["pause", "bench"]);
      t0 = performance.now();
      await podman.must(["unpause", "bench"]);
      rows.peerPause.push(await readyAfter(web, t0));
      // jitsu learns of the peer's start/unpause through events: make sure it sees "running" again.
      await new Promise((res) => setTimeout(res, 300));
      log(
        `round ${r + 1}/${rounds}: cold ${rows.jitsuCold.at(-1)!.toFixed(0)} vs ${rows.peerCold.at(-1)!.toFixed(0)} ms, pause ${rows.jitsuPause.at(-1)!.toFixed(0)} vs ${rows.peerPause.at(-1)!.toFixed(0)} ms`,
      );
    }
    const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)])) as Record<
      keyof typeof rows,
      number
    >;
    const table = [
      "| container (Podman 4.3, busybox httpd) | jitsu: query -> answer | peer: podman CLI + same readiness wait | ratio |",
      "| --- | --- | --- | --- |",
      `| cold (off -> serving) | ${m.jitsuCold.toFixed(0)} ms | ${m.peerCold.toFixed(0)} ms (podman start) | ${(m.jitsuCold / m.peerCold).toFixed(2)} |`,
      `| paused -> serving | ${m.jitsuPause.toFixed(0)} ms | ${m.peerPause.toFixed(0)} ms (podman unpause) | ${(m.jitsuPause / m.peerPause).toFixed(2)} |`,
    ].join("\n");
    process.stdout.write(
      `${table}\n\nmedians of ${rounds} rounds, interleaved; ${cpus().length} CPUs, load ${loadavg()[0]!.toFixed(2)}\n`,
    );
    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = join(RESULTS_DIR, `${new Date().toISOString().replace(/[:.]/g, "-")}-docker-summon.json`);
    writeFileSync(file, JSON.stringify({ rounds, medians: m, samples: rows, load: loadavg()[0] }, null, 2));
    log(`wrote ${file}`);
  } finally {
    await cli?.stop();
    await podman.destroy();
    await dir.remove();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
