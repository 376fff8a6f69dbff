/**
 * A VM that crashes at boot (a command that exits at once), through the built
 * CLI with the process backend and dig: back-off between tries, /status shows
 * the last error and the next try, and after --max-failures failures in a row
 * its queries get SERVFAIL at once without a start, until --failure-reset
 * passes or a config reload (SIGHUP).
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, it } from "node:test";
import {
  DEMO_SERVICE,
  countMatches,
  dig,
  freePort,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";
import { httpCall } from "../support/http.js";

interface VmRow {
  state: string;
  lastError: string | null;
  failures: number;
  nextTry: string | null;
  givenUp: boolean;
}

async function www(http: number): Promise<VmRow> {
  const body = JSON.parse((await httpCall(http, "GET", "/status")).body) as {
    vms: (VmRow & { label: string })[];
  };
  return body.vms.find((vm) => vm.label === "www")!;
}

async function timed(dns: number): Promise<{ status: string; ms: number }> {
  const began = Date.now();
  const res = await dig(dns, ["www.jitsu.test", "A"]);
  return { status: res.status, ms: Date.now() - began };
}

const clis: CliProcess[] = [];
const dirs: { remove(): Promise<void> }[] = [];
after(async () => {
  for (const cli of clis) await cli.stop("SIGTERM");
  for (const dir of dirs) await dir.remove();
});

it("a VM that crashes at boot is given up on after --max-failures, until --failure-reset or a reload", async () => {
  const dir = await tempDir("jitsu-maxfail-");
  dirs.push(dir);
  const [dns, http, service] = [await freePort(), await freePort(), await freePort()];
  const file = join(dir.path, "jitsu.yaml");
  const header = [
    "backend: process",
    "forwarder: 0.0.0.0",
    `listen: ${dns}`,
    "delay: 0",
    `http: 127.0.0.1:${http}`,
    "stop-on-exit: true",
    `state-dir: ${dir.path}`,
    "max-failures: 3",
    "failure-reset: 5",
    "vms:",
    "",
  ].join("\n");
  const broken = `  - name: www\n    dns: www.jitsu.test\n    ip: 127.0.0.1\n    exec: sh -c "exit 3"\n    ready: tcp:127.0.0.1:${service}\n`;
  await writeFile(file, header + broken);
  const cli = startCli(["--config", file]);
  clis.push(cli);
  await cli.waitFor(/Serving \/status/);
  const starts = (): number => countMatches(cli.output(), /Started process \d+ for VM 'www'/);

  // Three tries, each after its back-off (1 s, then 2 s).
  assert.equal((await timed(dns)).status, "SERVFAIL");
  let row = await www(http);
  assert.equal(row.state, "failed");
  assert.match(row.lastError ?? "", /exited with code 3/);
  assert.equal(row.failures, 1);
  assert.ok(
    row.nextTry !== null && Date.parse(row.nextTry) > Date.now() - 1000,
    "the next try time is shown",
  );
  assert.equal(row.givenUp, false);
  for (const wait of [1100, 2100]) {
    await new Promise((r) => setTimeout(r, wait));
    assert.equal((await timed(dns)).status, "SERVFAIL");
  }
  assert.equal(starts(), 3);
  row = await www(http);
  assert.equal(row.givenUp, true);
  assert.equal(row.failures, 3);
  const nextTry = Date.parse(row.nextTry!);
  assert.ok(
    nextTry - Date.now() > 3000 && nextTry - Date.now() <= 5000,
    `next try at --failure-reset: ${row.nextTry}`,
  );
  assert.match(cli.output(), /failed 3 times in a row \(--max-failures 3\)/);

  // Given up: SERVFAIL at once, no start, past the 4 s the next back-off would have been.
  const until = Date.now() + 4000;
  while (Date.now() < until) {
    const res = await timed(dns);
    assert.equal(res.status, "SERVFAIL");
    assert.ok(res.ms < 1000, `answered in ${res.ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(starts(), 3, "no start while given up");

  // --failure-reset passed: one more try.
  await waitFor(async () => Date.now() > nextTry + 100, 10_000, "the reset");
  assert.equal((await timed(dns)).status, "SERVFAIL");
  assert.equal(starts(), 4);
  assert.equal((await www(http)).givenUp, true, "a try that fails waits the whole reset again");

  // Fixed in the configuration and reloaded: started at the next query.
  const fixed = `  - name: www\n    dns: www.jitsu.test\n    ip: 127.0.0.1\n    exec: ${process.execPath} ${DEMO_SERVICE} 127.0.0.1 ${service} www 0.1\n    ready: tcp:127.0.0.1:${service}\n`;
  await writeFile(file, header + fixed);
  cli.child.kill("SIGHUP");
  await cli.waitFor(/VM 'www' changed in the configuration/);
  assert.equal((await timed(dns)).status, "NOERROR");
  row = await www(http);
  assert.equal(row.state, "ready");
  assert.equal(row.failures, 0);
});
