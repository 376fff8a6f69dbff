/**
 * /metrics of the built CLI passes `promtool check metrics` (Debian package
 * `prometheus`), after traffic that makes most series exist: a summon, a
 * forward, FORMERR and REFUSED answers, a TCP query, a stop over HTTP.
 */
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import dnsPacket from "dns-packet";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";
import {
  dig,
  freePort,
  killVmGroups,
  localArgs,
  sendRaw,
  startCli,
  tempDir,
  type CliProcess,
} from "../support/index.js";
import { httpCall, parsePrometheus } from "../support/http.js";

/** Runs `promtool check metrics` with `text` on its standard input. */
function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("promtool", ["check", "metrics"], {
      stdio: ["pipe", "pipe", "pipe"],
      timeout: 20_000,
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    child.on("error", (err) =>
      reject(new Error(`cannot run promtool: ${err.message} (Debian: prometheus; .ci/run installs it)`)),
    );
    child.on("close", (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

describe("/metrics passes promtool check metrics (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>> | undefined;
  let upstream: TestUpstream | undefined;
  let cli: CliProcess | undefined;
  let dns: number;
  let http: number;
  const auth = { authorization: "Bearer promtool-token" };

  before(async () => {
    dir = await tempDir("jitsu-promtool-");
    upstream = await startUpstream("192.0.2.53");
    dns = await freePort();
    http = await freePort();
    cli = startCli([
      ...localArgs(dns, dir.path, { upstream: upstream.port }),
      "--http",
      `127.0.0.1:${http}`,
      "--http-token",
      "promtool-token",
      "dns=www.jitsu.test,ip=127.0.0.1,name=www,exec=sleep 600",
    ]);
    await cli.waitFor(/Serving \/status/);
  });

  // Whatever before() got to: a half-started test must not leave a socket that keeps it alive.
  after(async () => {
    await cli?.stop("SIGTERM");
    killVmGroups(cli?.output());
    await upstream?.close();
    await dir?.remove();
  });

  it("after a summon, a forward, bad packets, TCP and a stop", async () => {
    assert.deepEqual((await dig(dns, ["www.jitsu.test", "A"])).answers[0]?.data, "127.0.0.1");
    assert.equal((await dig(dns, ["+tcp", "www.jitsu.test", "AAAA"])).status, "NOERROR");
    assert.equal((await dig(dns, ["fwd.example.net", "A"])).answers[0]?.data, "192.0.2.53");
    // AXFR over UDP: REFUSED (dig would ask over TCP and print no status).
    const axfr = await sendRaw(
      dns,
      dnsPacket.encode({ type: "query", id: 7, questions: [{ type: "AXFR", name: "jitsu.test" }] }),
    );
    assert.equal((axfr?.[3] ?? -1) & 0x0f, 5);
    // A header and a name that runs past the end: FORMERR.
    const formerr = await sendRaw(dns, Buffer.from("12340100000100000000000003777777", "hex"));
    assert.equal((formerr?.[3] ?? -1) & 0x0f, 1);
    assert.equal((await httpCall(http, "POST", "/vms/www/stop", auth)).status, 200);

    const res = await httpCall(http, "GET", "/metrics");
    assert.equal(res.status, 200);
    const m = parsePrometheus(res.body);
    for (const series of [
      'jitsu_vm_summons_total{vm="www",result="ready"}',
      'jitsu_vm_stops_total{vm="www",mode="destroy"}',
      "jitsu_dns_forwarded_total",
      "jitsu_dns_forward_latency_seconds_count",
      "jitsu_dns_malformed_total",
      'jitsu_dns_answers_total{result="REFUSED"}',
      "jitsu_process_resident_memory_bytes",
    ]) {
      assert.ok((m.get(series) ?? 0) > 0, `${series} is in /metrics and not 0`);
    }
    // The per-type Node gauge stays; its sum named like a counter is gone.
    assert.ok([...m.keys()].some((k) => k.startsWith("jitsu_nodejs_active_handles{")));
    assert.ok(!res.body.includes("jitsu_nodejs_active_handles_total"));

    const check = await promtool(res.body);
    assert.equal(check.output.trim(), "", "promtool has nothing to say");
    assert.equal(check.code, 0);
  });
});
