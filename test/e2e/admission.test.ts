/**
 * Admission control through the built CLI (process backend, real UDP clients
 * and dig): --max-running with 20 names and 20 concurrent clients, watched by
 * a sampler of the VM processes; --max-starting with slow VMs that stamp
 * their own start and ready times; --summon-rate with two client prefixes on
 * loopback. The max-running and rate cases also run with --workers 2.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import dnsPacket from "dns-packet";
import { startUpstream } from "../doubles/dns-upstream.js";
import { getMetrics, getStatus } from "../support/http.js";
import {
  DEMO_SERVICE,
  alive,
  childPids,
  countMatches,
  dig,
  freePort,
  localArgs,
  sendRaw,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";

interface Answer {
  name: string;
  sent: number;
  received: number;
  /** "NOERROR", "SERVFAIL", ... or "timeout". */
  rcode: string;
  address: string | undefined;
}

/** One A query over UDP from its own socket (so each query is a client of its own). */
async function ask(port: number, name: string, timeoutMs: number): Promise<Answer> {
  const sent = Date.now();
  const query = dnsPacket.encode({
    type: "query",
    id: 1 + Math.floor(Math.random() * 65000),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: "A", name }],
  });
  const reply = await sendRaw(port, query, timeoutMs);
  const received = Date.now();
  if (reply === null) return { name, sent, received, rcode: "timeout", address: undefined };
  const res = dnsPacket.decode(reply) as { rcode?: string; answers?: { type: string; data?: unknown }[] };
  const a = res.answers?.find((r) => r.type === "A");
  return {
    name,
    sent,
    received,
    rcode: res.rcode ?? "?",
    address: a === undefined ? undefined : String(a.data),
  };
}

/** jitsu's JSON log lines (--log-format json), workers' included. */
function logLines(cli: CliProcess): { time: number; msg: string }[] {
  return cli
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { time: number; msg: string });
}

/** Samples how many of `pid`'s children run `comm`, every few ms, until stopped; the most seen at once. */
function sampleChildren(pid: number, comm: string): { stop(): { max: number; samples: number } } {
  let max = 0;
  let samples = 0;
  const timer = setInterval(() => {
    let n = 0;
    for (const child of childPids(pid)) {
      try {
        if (readFileSync(`/proc/${child}/comm`, "utf8").trim() === comm && alive(child)) n++;
      } catch {
        // gone meanwhile
      }
    }
    samples++;
    max = Math.max(max, n);
  }, 5);
  // A test that fails before stop() must not keep the file running.
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      return { max, samples };
    },
  };
}

async function startJitsu(
  t: TestContext,
  args: readonly string[],
  configs: readonly string[],
): Promise<{ cli: CliProcess; port: number }> {
  const dir = await tempDir();
  const port = await freePort();
  const cli = startCli([...localArgs(port, dir.path), "--log-format", "json", ...args, ...configs]);
  t.after(async () => {
    await cli.stop();
    await dir.remove();
  });
  await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
  return { cli, port };
}

describe("admission control (e2e)", () => {
  for (const workers of [1, 2]) {
    it(`--max-running 3: 20 names, 20 clients in a loop, never more than 3 VMs up (--workers ${workers})`, async (t) => {
      const names = Array.from({ length: 20 }, (_, i) => `r${i}`);
      const http = await freePort();
      const { cli, port } = await startJitsu(
        t,
        [
          ...["-t", "1", "--max-running", "3", "--start-timeout", "4", "--summon-rate", "0"],
          ...["--workers", String(workers), "--http", `127.0.0.1:${http}`],
        ],
        names.map((n, i) => `name=${n},dns=${n}.adm.test,ip=192.0.2.${i + 1},exec=sleep 600`),
      );
      const sampler = sampleChildren(cli.child.pid!, "sleep");
      const rounds = 4;
      const deadline = Date.now() + 60_000;
      const answers: Answer[] = [];
      await Promise.all(
        names.map(async (_, client) => {
          for (let round = 0; round < rounds && Date.now() < deadline; round++) {
            const name = names[(client + round * 3) % names.length]!;
            answers.push(await ask(port, `${name}.adm.test`, 15_000));
          }
        }),
      );
      const { max, samples } = sampler.stop();
      assert.ok(samples > 100, `${samples} samples`);
      assert.equal(max, 3, `at most 3 VM processes at any sample, and the limit was reached (max ${max})`);

      // Every query answered: the VM's address, or SERVFAIL when its summon timed out.
      assert.equal(answers.length, names.length * rounds);
      for (const a of answers) {
        const i = Number(/^r(\d+)\./.exec(a.name)![1]);
        if (a.rcode === "NOERROR") assert.equal(a.address, `192.0.2.${i + 1}`, JSON.stringify(a));
        else assert.equal(a.rcode, "SERVFAIL", JSON.stringify(a));
      }
      const served = answers.filter((a) => a.rcode === "NOERROR");
      const failed = answers.filter((a) => a.rcode === "SERVFAIL");
      assert.ok(served.length > 3, `${served.length} answered with an address`);
      // Read after the scrape: by then every eviction it counts has its line in the log.
      const metrics = await getMetrics(http);
      assert.ok(metrics.get("jitsu_vms_up")! <= 3);
      const evicted = metrics.get("jitsu_evictions_total")!;
      await waitFor(
        () => countMatches(cli.output(), /to make room for VM/) >= evicted,
        5000,
        `${evicted} eviction lines`,
      );
      const lines = logLines(cli);
      const servfails = lines.filter((l) => l.msg.startsWith("SERVFAIL for "));
      assert.equal(
        servfails.length,
        failed.length,
        `each SERVFAIL is logged once:\n${servfails.map((l) => `${l.time} ${l.msg}`).join("\n")}\n${failed.map((a) => JSON.stringify(a)).join("\n")}`,
      );
      // Timed out in the --max-starting queue, or (a machine loaded by other tests) in the spawn itself.
      for (const l of servfails) {
        assert.match(
          l.msg,
          /was not ready after 4 s \((still queued: |still waiting for the process backend to start it)/,
          l.msg,
        );
      }

      // Evictions: logged with both names, only of VMs whose last query is older than the TTL (1 s).
      const evictions = lines
        .map((l) => ({
          time: l.time,
          m: /^Stopping VM '(r\d+)' \(destroy\) to make room for VM '(r\d+)' \(--max-running 3\) \((.*)\)$/.exec(
            l.msg,
          ),
        }))
        .filter((e) => e.m !== null);
      assert.ok(evictions.length >= 3, `${evictions.length} evictions`);
      for (const { time, m } of evictions) {
        const [, victim, , why] = m!;
        // A start that failed (timed out on a loaded machine) is evicted first, whenever it was queried.
        if (why === "its start failed and it may still run") continue;
        assert.match(why!, /^last queried \d+ s ago, past its TTL of 1 s$/);
        // No address for the victim was given out within its TTL before the eviction. jitsu
        // noted each answer's query (or, with --workers, a worker's count of it, collected
        // before the decision) no earlier than the client sent it, and evicts only when that
        // is more than the TTL ago: so from `sent`, which needs no allowance for delivery
        // (the time from jitsu to the client, through a worker too, is the client's only).
        for (const a of served.filter((x) => x.name === `${victim}.adm.test` && x.received <= time)) {
          assert.ok(
            time - a.sent >= 1000,
            `${victim} evicted ${time - a.sent} ms after a query for it was sent (answered ${time - a.received} ms before)`,
          );
        }
      }
      assert.equal(evicted, evictions.length);
    });
  }

  it("--max-starting 2: 10 slow VMs, never more than 2 booting at once (the VMs' own stamps)", async (t) => {
    const stamps = await tempDir("jitsu-stamps-");
    t.after(() => stamps.remove());
    const vms = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => ({ name: `s${i}`, http: await freePort() })),
    );
    const { cli, port } = await startJitsu(
      t,
      ["--max-starting", "2", "--summon-rate", "0", "--start-timeout", "60"],
      vms.map(
        ({ name, http }, i) =>
          `name=${name},dns=${name}.adm.test,ip=192.0.2.${i + 1},` +
          `exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${http} ${name} 1 '${join(stamps.path, name)}',` +
          `ready=tcp:127.0.0.1:${http}`,
      ),
    );
    const began = Date.now();
    const answers = await Promise.all(vms.map(({ name }) => ask(port, `${name}.adm.test`, 60_000)));
    const took = Date.now() - began;
    for (const a of answers) assert.equal(a.rcode, "NOERROR", JSON.stringify(a));
    assert.ok(took >= 4500, `10 boots of 1 s, 2 at a time, took ${took} ms`);

    const events: [number, 1 | -1][] = [];
    for (const { name } of vms) {
      const text = readFileSync(join(stamps.path, name), "utf8");
      const start = Number(/^start (\d+)$/m.exec(text)![1]);
      const ready = Number(/^ready (\d+)$/m.exec(text)![1]);
      assert.ok(ready - start >= 1000, `${name} booted in ${ready - start} ms`);
      events.push([start, 1], [ready, -1]);
    }
    // Ends before starts at the same ms: a VM ready as the next begins is not two at once.
    events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let booting = 0;
    let most = 0;
    for (const [, d] of events) most = Math.max(most, (booting += d));
    assert.equal(most, 2, `at most 2 VMs booting at once, and 2 were (${most})`);
    const waits = logLines(cli).filter((l) =>
      /^VM 's\d' waits to start: queued: 2 VMs are starting/.test(l.msg),
    );
    assert.equal(waits.length, 8, "8 of the 10 summons waited in the queue");
  });

  for (const workers of [1, 2]) {
    it(`--summon-rate: a client over its rate is REFUSED for cold names, another prefix is served (--workers ${workers})`, async (t) => {
      const upstream = await startUpstream("192.0.2.77");
      t.after(() => upstream.close());
      const http = await freePort();
      const dir = await tempDir();
      const dns = await freePort();
      // 0.2 a second, a burst of 1: one cold summon per client prefix, then one every 5 s.
      const cli = startCli([
        ...localArgs(dns, dir.path, { upstream: upstream.port }),
        ...["--summon-rate", "0.2", "--workers", String(workers), "--http", `127.0.0.1:${http}`],
        ...[1, 2, 3].map((i) => `name=c${i},dns=c${i}.adm.test,ip=192.0.2.${i},exec=sleep 600`),
      ]);
      t.after(async () => {
        await cli.stop();
        await dir.remove();
      });
      await cli.waitFor(/Serving \/status/, 30_000);
      const A = ["-b", "127.0.0.1"];
      const B = ["-b", "127.0.1.1"]; // another /24 on loopback

      const first = await dig(dns, [...A, "c1.adm.test", "A"]);
      assert.equal(first.status, "NOERROR");
      assert.deepEqual(
        first.answers.map((r) => r.data),
        ["192.0.2.1"],
      );
      assert.equal((await dig(dns, [...A, "c2.adm.test", "A"])).status, "REFUSED", "over its rate");
      assert.equal((await dig(dns, [...A, "c3.adm.test", "AAAA"])).status, "REFUSED");
      const other = await dig(dns, [...B, "c2.adm.test", "A"]);
      assert.equal(other.status, "NOERROR", "another prefix starts it");
      assert.deepEqual(
        other.answers.map((r) => r.data),
        ["192.0.2.2"],
      );
      // Untouched for the client over its rate: ready VMs and forwarded names.
      assert.equal((await dig(dns, [...A, "c2.adm.test", "A"])).status, "NOERROR", "ready now");
      assert.equal((await dig(dns, [...A, "c1.adm.test", "A"])).status, "NOERROR");
      const fwd = await dig(dns, [...A, "www.example.com", "A"]);
      assert.equal(fwd.status, "NOERROR");
      assert.deepEqual(
        fwd.answers.map((r) => r.data),
        ["192.0.2.77"],
      );

      const metrics = await getMetrics(http);
      assert.equal(metrics.get('jitsu_dns_refused_total{reason="summon-rate"}'), 2);
      assert.equal(metrics.get('jitsu_dns_answers_total{result="REFUSED"}'), 2);
      const status = (await getStatus(http)).get("c3");
      assert.equal(status?.state, "off");
      assert.equal(status?.totalRequests, 0, "refused queries are not requests");
      assert.match(
        cli.output(),
        /client 127\.0\.0\.0\/24 is over --summon-rate 0\.2\/s: VM 'c2' not started for it/,
      );
      assert.doesNotMatch(cli.output(), /SERVFAIL/);
    });
  }
});
