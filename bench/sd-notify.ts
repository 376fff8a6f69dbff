#!/usr/bin/env node
/**
 * `npm run bench:notify`: what one sd_notify message (a WATCHDOG=1 ping)
 * costs jitsu, for each way Node can send a unix datagram, measured in the
 * same run against the same receiver (a python3 socket bound in a temp dir,
 * counting what arrives):
 * - native: the N-API addon (src/systemd/native), called in-process;
 * - helper: a long-lived C process (compiled here with cc) fed one line per
 *   message over a pipe, sending each as a datagram;
 * - spawn: one `systemd-notify` process per message.
 * Messages are sent one at a time, as watchdog pings are (the next once the
 * receiver has counted the last), and the time each send call holds jitsu's
 * event loop is summed: microseconds per message, and the ratio to native.
 * The helper's own work and the spawned process's are not counted there:
 * they cost the machine (a process per ping, or one more resident process),
 * not the event loop.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { nativeSend, NATIVE_ADDON } from "../src/systemd/index.js";

const dir = mkdtempSync(join(tmpdir(), "jitsu-bench-notify-"));
const sockPath = join(dir, "notify.sock");
const RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("ready", flush=True)
n = 0
while True:
    s.recv(4096)
    n += 1
    print(n, flush=True)
`;
const HELPER_C = `
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct sockaddr_un a; memset(&a, 0, sizeof a); a.sun_family = AF_UNIX;
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  char line[4096];
  while (fgets(line, sizeof line, stdin)) {
    size_t n = strlen(line); if (n && line[n-1] == '\\n') line[--n] = 0;
    sendto(fd, line, n, 0, (struct sockaddr *)&a, sizeof a);
  }
  return 0;
}
`;

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? "2000");
  const spawnN = Math.min(n, 200);
  const procs: ChildProcess[] = [];
  try {
    writeFileSync(join(dir, "recv.py"), RECEIVER);
    const recv = spawn("python3", [join(dir, "recv.py"), sockPath], { stdio: ["ignore", "pipe", "inherit"] });
    procs.push(recv);
    let count = 0;
    let waiter: { target: number; resolve: () => void } | null = null;
    const lines = createInterface({ input: recv.stdout! });
    await new Promise<void>((resolve) => {
      lines.on("line", (l) => {
        if (l === "ready") return resolve();
        count = Number(l);
        if (waiter !== null && count >= waiter.target) {
          waiter.resolve();
          waiter = null;
        }
      });
    });
    const until = (target: number): Promise<void> =>
      count >= target ? Promise.resolve() : new Promise((resolve) => (waiter = { target, resolve }));

    const rows: { way: string; n: number; usPerMsg: number }[] = [];
    // One message at a time, as watchdog pings come: the time the send call holds the event loop,
    // then wait for the receiver to count it (so no queue fills and no send waits).
    const time = async (way: string, m: number, send: () => void): Promise<void> => {
      let ns = 0n;
      for (let i = 0; i < m; i++) {
        const base = count;
        const t0 = process.hrtime.bigint();
        send();
        ns += process.hrtime.bigint() - t0;
        await until(base + 1);
      }
      rows.push({ way, n: m, usPerMsg: Number(ns) / 1000 / m });
    };

    const native = nativeSend();
    if (native === null) throw new Error(`the addon is not built (${NATIVE_ADDON}): run npm run build`);
    // Interleaved, two rounds each; the best of two per side.
    const helperBin = join(dir, "helper");
    writeFileSync(join(dir, "helper.c"), HELPER_C);
    const cc = spawnSync("cc", ["-O2", "-o", helperBin, join(dir, "helper.c")], { stdio: "inherit" });
    const haveHelper = cc.status === 0 && existsSync(helperBin);
    for (let round = 0; round < 2; round++) {
      await time("native addon (in-process)", n, () => native(sockPath, "WATCHDOG=1"));
      if (haveHelper) {
        const helper = spawn(helperBin, [sockPath], { stdio: ["pipe", "ignore", "inherit"] });
        procs.push(helper);
        await time("long-lived C helper over a pipe", n, () => void helper.stdin!.write("WATCHDOG=1\n"));
        helper.stdin!.end();
      }
      await time("spawn systemd-notify per message", spawnN, () => {
        spawn("systemd-notify", ["--no-block", "WATCHDOG=1"], {
          env: { ...process.env, NOTIFY_SOCKET: sockPath },
          stdio: "ignore",
        });
      });
    }
    const best = new Map<string, (typeof rows)[number]>();
    for (const r of rows) if ((best.get(r.way)?.usPerMsg ?? Infinity) > r.usPerMsg) best.set(r.way, r);
    const nativeUs = best.get("native addon (in-process)")!.usPerMsg;
    process.stdout.write(
      `sd_notify cost per message, best of 2 interleaved rounds (${new Date().toISOString()})\n`,
    );
    for (const r of best.values()) {
      process.stdout.write(
        `${r.way.padEnd(36)} ${r.usPerMsg.toFixed(1).padStart(9)} us of jitsu's event loop per message  x${(
          r.usPerMsg / nativeUs
        )
          .toFixed(1)
          .padStart(7)}  (n=${r.n})\n`,
      );
    }
  } finally {
    for (const p of procs) p.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
