/**
 * `npm run bench:etcd`: the hot path (a ready VM's name) with --etcd against
 * the same jitsu without it, in the same run, interleaved, best of three each
 * (issue 20: within 5 %, the hot path never waits for etcd). Also the cold
 * start with and without the start lock (p50/p99 of 20 starts each).
 * Everything on 127.0.0.1: one etcd member in a temp dir, two jitsus with the
 * process backend; all stopped by PID at the end.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runDnsperf } from "./dnsperf.js";

const CLI = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function waitOutput(child: ChildProcess, re: RegExp, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}: ${out}`)), ms);
    const on = (b: Buffer): void => {
      out += b.toString();
      if (re.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", on);
    child.stderr?.on("data", on);
  });
}

async function dig(port: number, name: string): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    const c = spawn("dig", ["@127.0.0.1", "-p", String(port), "+time=10", "+tries=1", "+short", name]);
    c.once("exit", () => resolve());
  });
  return performance.now() - t0;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "jitsu-bench-etcd-"));
  const children: ChildProcess[] = [];
  try {
    const client = await freePort();
    const peer = await freePort();
    const etcd = spawn(
      "etcd",
      [
        ...["--name", "b1", "--data-dir", join(dir, "etcd"), "--log-level", "warn"],
        ...["--listen-client-urls", `http://127.0.0.1:${client}`],
        ...["--advertise-client-urls", `http://127.0.0.1:${client}`],
        ...["--listen-peer-urls", `http://127.0.0.1:${peer}`],
        ...["--initial-advertise-peer-urls", `http://127.0.0.1:${peer}`],
        ...["--initial-cluster", `b1=http://127.0.0.1:${peer}`],
      ],
      { stdio: "ignore" },
    );
    children.push(etcd);
    await new Promise((r) => setTimeout(r, 2000));
    writeFileSync(join(dir, "idle.js"), "setInterval(() => {}, 1000);\n");
    const vm = (i: number): string =>
      `dns=w${i}.example.org,ip=127.0.0.1,name=w${i},exec='${process.execPath}' ${join(dir, "idle.js")}`;
    const vms = Array.from({ length: 21 }, (_, i) => vm(i));
    const start = async (etcdArgs: string[]): Promise<number> => {
      const port = await freePort();
      const child = spawn(
        process.execPath,
        [
          CLI,
          ...["-x", "process", "-l", String(port), "-f", "0.0.0.0", "-d", "0", "-t", "600"],
          ...["--state-dir", join(dir, `s${port}`), "--stop-on-exit", ...etcdArgs, ...vms],
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      children.push(child);
      await waitOutput(child, /Starting server on/, 30_000);
      return port;
    };
    const plain = await start([]);
    const shared = await start([
      "--etcd",
      `http://127.0.0.1:${client}`,
      "--etcd-prefix",
      `/bench-${client}/`,
    ]);
    // Cold starts: 20 VMs each, one at a time.
    const cold: Record<string, number[]> = { plain: [], etcd: [] };
    for (let i = 1; i <= 20; i++) {
      cold.plain!.push(await dig(plain, `w${i}.example.org`));
      cold.etcd!.push(await dig(shared, `w${i}.example.org`));
    }
    await dig(plain, "w0.example.org");
    await dig(shared, "w0.example.org");
    const queryFile = join(dir, "q.txt");
    writeFileSync(queryFile, "w0.example.org A\n");
    const qps: Record<string, number[]> = { plain: [], etcd: [] };
    for (let round = 0; round < 3; round++) {
      const order: [string, number][] =
        round % 2 === 0
          ? [
              ["plain", plain],
              ["etcd", shared],
            ]
          : [
              ["etcd", shared],
              ["plain", plain],
            ];
      for (const [name, port] of order) {
        const r = await runDnsperf({ dnsperf: "dnsperf", port, queryFile, seconds: 5 });
        qps[name]!.push(r.qps);
      }
    }
    const best = (xs: number[]): number => Math.max(...xs);
    const ratio = best(qps.etcd!) / best(qps.plain!);
    console.log(
      `hot path QPS, best of 3: without --etcd ${best(qps.plain!).toFixed(0)}, with --etcd ${best(qps.etcd!).toFixed(0)} (ratio ${ratio.toFixed(3)}; target >= 0.95: ${ratio >= 0.95 ? "MET" : "MISS"})`,
    );
    console.log(
      `  rounds: without ${qps.plain!.map((x) => x.toFixed(0)).join(", ")}; with ${qps.etcd!.map((x) => x.toFixed(0)).join(", ")}`,
    );
    for (const side of ["plain", "etcd"] as const) {
      console.log(
        `cold start (dig round trip, process backend) ${side === "plain" ? "without" : "with"} --etcd: p50 ${pct(cold[side]!, 50).toFixed(1)} ms, p99 ${pct(cold[side]!, 99).toFixed(1)} ms`,
      );
    }
  } finally {
    for (const c of children.reverse()) {
      if (c.exitCode === null) {
        c.kill("SIGTERM");
        await new Promise((r) => setTimeout(r, 1500));
        if (c.exitCode === null) c.kill("SIGKILL");
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
