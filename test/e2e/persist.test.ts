/**
 * --persistdb through the built CLI with the process backend, real dig and the
 * --http endpoint: a graceful restart keeps counts and timers; kill -9 in the
 * middle of a query load loses at most one flush interval of counts, and the
 * VM left behind is adopted and stopped on schedule.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createSocket } from "node:dgram";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  DEMO_SERVICE,
  alive,
  dig,
  freePort,
  localArgs,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";
import { getMetrics, getStatus } from "../support/http.js";

/** The reaper runs every 5 s and flushes the store each time. */
const FLUSH_MS = 5000;

function pidOf(stateDir: string, label: string): number | null {
  try {
    return (JSON.parse(readFileSync(join(stateDir, "process", `${label}.json`), "utf8")) as { pid: number })
      .pid;
  } catch {
    return null;
  }
}

interface Setup {
  dns: number;
  http: number;
  service: number;
  dir: string;
}

function jitsu(s: Setup, ttl: number, extra: string[] = []): CliProcess {
  return startCli([
    // Without --stop-on-exit: the VM outlives a jitsu that exits.
    ...localArgs(s.dns, s.dir, { stopOnExit: false }),
    "-t",
    String(ttl),
    "--persistdb",
    join(s.dir, "state.db"),
    "--http",
    `127.0.0.1:${s.http}`,
    ...extra,
    `dns=www.jitsu.test,ip=127.0.0.1,name=www,exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${s.service} www 0.2,ready=http://127.0.0.1:${s.service}/`,
  ]);
}

describe("--persistdb (e2e)", () => {
  const clis: CliProcess[] = [];
  const dirs: { remove(): Promise<void> }[] = [];
  const stateDirs: string[] = [];

  after(async () => {
    for (const cli of clis) await cli.stop("SIGKILL");
    for (const dir of stateDirs) {
      const pid = pidOf(dir, "www");
      if (pid !== null && alive(pid)) process.kill(-pid, "SIGKILL");
    }
    for (const d of dirs) await d.remove();
  });

  async function setup(): Promise<Setup> {
    const dir = await tempDir("jitsu-persist-");
    dirs.push(dir);
    stateDirs.push(dir.path);
    return { dns: await freePort(), http: await freePort(), service: await freePort(), dir: dir.path };
  }

  it("a restart keeps counts and the last request; the adopted VM is stopped 2 x TTL after it", async () => {
    const s = await setup();
    const ttl = 4;
    const first = jitsu(s, ttl);
    clis.push(first);
    await first.waitFor(/Serving \/status/);
    for (let i = 0; i < 3; i++) {
      const res = await dig(s.dns, ["www.jitsu.test", "A"]);
      assert.equal(res.status, "NOERROR");
      assert.deepEqual(
        res.answers.map((a) => a.data),
        ["127.0.0.1"],
      );
    }
    const before = (await getStatus(s.http)).get("www")!;
    assert.equal(before.totalRequests, 3);
    assert.equal(before.totalStarts, 1);
    assert.equal(before.state, "ready");
    const pid = pidOf(s.dir, "www");
    assert.ok(pid !== null && alive(pid), "the VM's process runs");
    assert.equal(await first.stop("SIGTERM"), 0);
    assert.ok(alive(pid), "without --stop-on-exit the VM runs on");

    const second = jitsu(s, ttl);
    clis.push(second);
    await second.waitFor(/Serving \/status/);
    assert.match(
      second.output(),
      new RegExp(`Found process ${pid} of VM 'www' left running by an earlier jitsu`),
    );
    const after = (await getStatus(s.http)).get("www")!;
    assert.equal(after.state, "ready");
    assert.equal(after.totalRequests, 3);
    assert.equal(after.totalStarts, 1);
    assert.equal(after.lastRequest, before.lastRequest);
    assert.equal(after.startedAt, before.startedAt);
    const metrics = await getMetrics(s.http);
    assert.equal(metrics.get('jitsu_vm_requests_total{vm="www"}'), 3);
    assert.equal(metrics.get('jitsu_vm_state{vm="www",state="ready"}'), 1);

    // Stopped on the schedule of the last request: 2 x TTL after it, plus up to one reaper interval.
    const last = Date.parse(before.lastRequest!);
    await waitFor(() => !alive(pid), 2 * ttl * 1000 + FLUSH_MS + 15_000, "the reaper to stop the VM");
    const stoppedAfter = Date.now() - last;
    assert.ok(stoppedAfter >= 2 * ttl * 1000, `stopped ${stoppedAfter} ms after the last request`);
    await second.waitFor(/Stopping VM 'www' \(destroy\) after \d+ s idle/);

    // The next query summons it again and the counts go on.
    assert.equal((await dig(s.dns, ["www.jitsu.test", "A"])).status, "NOERROR");
    const again = (await getStatus(s.http)).get("www")!;
    assert.equal(again.totalRequests, 4);
    assert.equal(again.totalStarts, 2);
    assert.equal(await second.stop("SIGTERM"), 0);
    const pid2 = pidOf(s.dir, "www");
    if (pid2 !== null) process.kill(-pid2, "SIGKILL");
  });

  it("kill -9 during a query load: the database opens, counts are within one flush of the truth, the VM is stopped", async () => {
    const s = await setup();
    const ttl = 2;
    const first = jitsu(s, ttl);
    clis.push(first);
    await first.waitFor(/Serving \/status/);
    assert.equal((await dig(s.dns, ["www.jitsu.test", "A"])).status, "NOERROR");

    // A bounded load: one query every 25 ms for at most 8 s; answers are timestamped.
    const sock = createSocket("udp4");
    const { default: packet } = await import("dns-packet");
    const answered: number[] = [];
    sock.on("message", () => answered.push(Date.now()));
    await new Promise<void>((resolve) => sock.bind(0, "127.0.0.1", resolve));
    let sent = 1; // the dig above
    const loadEnd = Date.now() + 8000;
    let killedAt = 0;
    while (Date.now() < loadEnd) {
      const q = packet.encode({
        type: "query",
        id: sent & 0xffff,
        questions: [{ type: "A", name: "www.jitsu.test" }],
      });
      sock.send(q, s.dns, "127.0.0.1");
      sent++;
      await new Promise((r) => setTimeout(r, 25));
      if (killedAt === 0 && Date.now() > loadEnd - 2000) {
        first.child.kill("SIGKILL");
        killedAt = Date.now();
      }
    }
    sock.close();
    await first.stop();
    const truth = 1 + answered.filter((at) => at <= killedAt).length;
    assert.ok(truth > 100, `the load was answered (${truth} answers)`);
    const pid = pidOf(s.dir, "www");
    assert.ok(pid !== null && alive(pid), "the VM outlived the killed jitsu");

    const second = jitsu(s, ttl);
    clis.push(second);
    await second.waitFor(/Serving \/status/);
    const www = (await getStatus(s.http)).get("www")!;
    const answeredBeforeLastFlush = 1 + answered.filter((at) => at <= killedAt - FLUSH_MS - 1000).length;
    assert.ok(
      www.totalRequests <= sent && www.totalRequests >= answeredBeforeLastFlush,
      `stored ${www.totalRequests} requests; truth ${truth} answered (${sent} sent), ${answeredBeforeLastFlush} answered one flush before the kill`,
    );
    assert.equal(www.totalStarts, 1);
    // Nobody asks any more: the adopted VM is stopped after 2 x TTL idle.
    await waitFor(
      () => !alive(pid),
      2 * ttl * 1000 + FLUSH_MS + 15_000,
      "the VM left by the killed jitsu to be stopped",
    );
    assert.equal(await second.stop("SIGTERM"), 0);
  });
});
