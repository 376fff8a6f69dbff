/**
 * --config FILE with SIGHUP reload, and the --http endpoint with --http-token,
 * through the built CLI with the process backend and real dig.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  alive,
  dig,
  freePort,
  sendRaw,
  startCli,
  tempDir,
  type CliProcess,
  killVmGroups,
  yamlVm,
} from "../support/index.js";
import { getMetrics, getStatus, httpCall } from "../support/http.js";

describe("--config with SIGHUP reload, --http and --http-token (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess;
  let dns: number;
  let http: number;
  let file: string;

  const header = (): string =>
    [
      "backend: process",
      "forwarder: 0.0.0.0",
      `listen: ${dns}`,
      "ttl: 60",
      "delay: 0",
      `http: 127.0.0.1:${http}`,
      "http-token: correct-horse-battery",
      "stop-on-exit: true",
      `state-dir: ${dir.path}`,
      "vms:",
      "",
    ].join("\n");

  before(async () => {
    dir = await tempDir("jitsu-reload-");
    dns = await freePort();
    http = await freePort();
    file = join(dir.path, "jitsu.yaml");
    await writeFile(file, header() + yamlVm("www", "127.0.0.1") + yamlVm("old", "127.0.0.2"));
    // -t on the command line wins over the file's ttl.
    cli = startCli(["--config", file, "-t", "30"]);
    await cli.waitFor(/Serving \/status/);
  });

  after(async () => {
    await cli.stop("SIGTERM");
    killVmGroups(cli.output());
    await dir.remove();
  });

  it("serves the file's VMs with the command line's values on top", async () => {
    const res = await dig(dns, ["www.jitsu.test", "A"]);
    assert.equal(res.status, "NOERROR");
    assert.deepEqual(
      res.answers.map((a) => [a.ttl, a.data]),
      [[30, "127.0.0.1"]],
    );
    assert.equal((await dig(dns, ["old.jitsu.test", "A"])).answers[0]?.data, "127.0.0.2");
  });

  it("SIGHUP adds and removes names while dig runs, with no failed answer", async () => {
    const failures: string[] = [];
    let answers = 0;
    let stop = false;
    // Bounded: at most 200 queries and 60 s.
    const loop = (async () => {
      const until = Date.now() + 60_000;
      for (let i = 0; i < 200 && !stop && Date.now() < until; i++) {
        const res = await dig(dns, ["www.jitsu.test", "A"]);
        if (res.status !== "NOERROR" || res.answers[0]?.data !== "127.0.0.1") failures.push(res.raw);
        else answers++;
      }
    })();
    try {
      await new Promise((r) => setTimeout(r, 300));
      await writeFile(file, header() + yamlVm("www", "127.0.0.1") + yamlVm("new", "127.0.0.3"));
      cli.child.kill("SIGHUP");
      await cli.waitFor(/Reloaded '.*jitsu\.yaml': 2 VMs/);
      assert.match(cli.output(), /VM 'new' added to the configuration/);
      assert.match(cli.output(), /VM 'old' removed from the configuration; leaving it as it is/);
      const added = await dig(dns, ["new.jitsu.test", "A"]);
      assert.equal(added.status, "NOERROR");
      assert.equal(added.answers[0]?.data, "127.0.0.3");
      // The removed name is no longer ours: with forwarding off, an authoritative NXDOMAIN.
      assert.equal((await dig(dns, ["old.jitsu.test", "A"])).status, "NXDOMAIN");
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      stop = true;
      await loop;
    }
    assert.deepEqual(failures, []);
    assert.ok(answers >= 3, `dig answered ${answers} times during the reload`);
  });

  it("a changed VM takes effect on reload", async () => {
    await writeFile(file, header() + yamlVm("www", "127.0.0.1") + yamlVm("new", "127.0.0.4"));
    cli.child.kill("SIGHUP");
    await cli.waitFor(/VM 'new' changed in the configuration/);
    await cli.waitFor(/Reloaded '.*jitsu\.yaml': 2 VMs[\s\S]*Reloaded '.*jitsu\.yaml': 2 VMs/);
    assert.equal((await dig(dns, ["new.jitsu.test", "A"])).answers[0]?.data, "127.0.0.4");
    assert.equal((await dig(dns, ["-x", "127.0.0.4"])).answers[0]?.data, "new.jitsu.test.");
    assert.doesNotMatch(cli.output(), /Option '[^']+' changed in/);
  });

  it("an invalid file on reload is rejected with a clear error and the old configuration stays", async () => {
    await writeFile(file, header() + yamlVm("www", "127.0.0.1") + yamlVm("new", "127.0.0.300"));
    cli.child.kill("SIGHUP");
    await cli.waitFor(
      /Reload rejected, keeping the running configuration: config file '.*jitsu\.yaml': vms #2 \(new\): VM 'new', key 'ip': expected an IPv4 or IPv6 address, got '127\.0\.0\.300'/,
    );
    // What the backend cannot do is checked on reload as at start-up.
    await writeFile(
      file,
      header() + yamlVm("www", "127.0.0.1") + yamlVm("new", "127.0.0.4") + "    wait_for_key: data/ready\n",
    );
    cli.child.kill("SIGHUP");
    await cli.waitFor(
      /Reload rejected, keeping the running configuration: config file '.*jitsu\.yaml': vms #2 \(new\): VM 'new', key 'wait_for_key': the process backend cannot wait for keys/,
    );
    await writeFile(file, "vms: [\n");
    cli.child.kill("SIGHUP");
    await cli.waitFor(
      /Reload rejected, keeping the running configuration: config file '.*jitsu\.yaml': invalid YAML at line/,
    );
    assert.equal((await dig(dns, ["new.jitsu.test", "A"])).answers[0]?.data, "127.0.0.4");
    assert.equal((await dig(dns, ["www.jitsu.test", "A"])).status, "NOERROR");
    assert.equal(cli.child.exitCode, null, "still running");
  });

  it("/status and /metrics are scraped and parsed", async () => {
    const status = await getStatus(http);
    assert.deepEqual([...status.keys()].sort(), ["new", "www"]);
    assert.equal(status.get("www")!.state, "ready");
    assert.ok(status.get("www")!.totalRequests >= 5);
    // A header that says one question, then garbage: FORMERR, counted as malformed.
    const formerr = await sendRaw(dns, Buffer.from("beef01000001000000000000ff", "hex"));
    assert.ok(formerr !== null && (formerr[3]! & 0x0f) === 1, "answered FORMERR");
    const m = await getMetrics(http);
    assert.equal(m.get("jitsu_dns_malformed_total"), 1);
    assert.ok((m.get('jitsu_dns_queries_total{type="A"}') ?? 0) >= 5);
    assert.ok((m.get('jitsu_dns_answers_total{result="NOERROR"}') ?? 0) >= 5);
    assert.equal(m.get('jitsu_dns_answers_total{result="NXDOMAIN"}'), 1);
    assert.equal(m.get('jitsu_vm_summons_total{vm="www",result="ready"}'), 1);
    assert.equal(m.get('jitsu_vm_ready_duration_seconds_count{vm="new"}'), 1);
    assert.ok(m.has("jitsu_process_resident_memory_bytes"));
  });

  it("admin endpoints refuse a missing or wrong token; the right one stops and starts a VM", async () => {
    const none = await httpCall(http, "POST", "/vms/www/stop");
    assert.equal(none.status, 401);
    const wrong = await httpCall(http, "POST", "/vms/www/stop", { authorization: "Bearer correct-horse" });
    assert.equal(wrong.status, 403);
    assert.equal((await getStatus(http)).get("www")!.state, "ready");
    const auth = { authorization: "Bearer correct-horse-battery" };
    const stopped = await httpCall(http, "POST", "/vms/www/stop", auth);
    assert.equal(stopped.status, 200, stopped.body);
    assert.deepEqual(JSON.parse(stopped.body), { vm: "www", state: "off" });
    const started = await httpCall(http, "POST", "/vms/www.jitsu.test/start", auth);
    assert.deepEqual(JSON.parse(started.body), { vm: "www", state: "ready" });
    const m = await getMetrics(http);
    assert.equal(m.get('jitsu_vm_stops_total{vm="www",mode="destroy"}'), 1);
  });

  it("SIGTERM with stop-on-exit (from the file) stops the VMs it serves and exits 0", async () => {
    const started = [...cli.output().matchAll(/Started process (\d+) for VM '(\w+)'/g)].map((m) => ({
      pid: Number(m[1]),
      vm: m[2]!,
    }));
    assert.deepEqual(started.map((p) => p.vm).sort(), ["new", "old", "www", "www"]);
    assert.equal(await cli.stop("SIGTERM"), 0);
    for (const { pid, vm } of started) {
      // 'old' was removed from the configuration, so it was left as it was.
      if (vm === "old") assert.ok(alive(pid), "the removed VM was left running");
      else assert.ok(!alive(pid), `process ${pid} of VM '${vm}' was stopped`);
    }
  });
});
