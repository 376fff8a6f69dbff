/**
 * The bench's parsing and reporting, on canned dnsperf 2.10 output (the bench
 * itself is not part of `npm test`: it needs minutes and a quiet machine).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { dnsperfArgs, parseDnsperf } from "../../bench/dnsperf.js";
import { parseParams } from "../../bench/params.js";
import { cpuPlan } from "../../bench/tools.js";
import { formatTable, formatTargets, ratio, vs } from "../../bench/report.js";
import { percentile } from "../../bench/stats.js";

const SUMMARY = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d /tmp/q.txt -l 3 -c 4
[Status] Sending queries (to 127.0.0.1:15353)
[Status] Started at: Wed Nov 25 11:41:45 2026
[Status] Stopping after 3.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         70191
  Queries completed:    70180 (99.98%)
  Queries lost:         11 (0.02%)

  Response codes:       NOERROR 70170 (99.99%), SERVFAIL 10 (0.01%)
  Average packet size:  request 33, response 64
  Run time (s):         3.001159
  Queries per second:   23387.964450

  Average Latency (s):  0.002826 (min 0.000057, max 0.028841)
  Latency StdDev (s):   0.002300
`;

const VERBOSE = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d /tmp/q.txt -l 2 -Q 1000 -v
> NOERROR www.example.org A 0.002602
> NOERROR www.example.org A 0.000613
> NOERROR www.example.org A 0.000768
> SERVFAIL www.example.org A 0.000196
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    4 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 3 (75.00%), SERVFAIL 1 (25.00%)
  Average packet size:  request 33, response 64
  Run time (s):         2.000159
  Queries per second:   1.999841

  Average Latency (s):  0.001045 (min 0.000196, max 0.002602)
  Latency StdDev (s):   0.000900
`;

test("parseDnsperf reads the summary: counts, QPS, average latency and non-NOERROR rcodes", () => {
  const r = parseDnsperf(SUMMARY);
  assert.equal(r.sent, 70191);
  assert.equal(r.completed, 70180);
  assert.equal(r.lost, 11);
  assert.equal(r.qps, 23387.96445);
  assert.ok(Math.abs(r.avgMs - 2.826) < 1e-9);
  assert.deepEqual(r.otherRcodes, { SERVFAIL: 10 });
  assert.deepEqual(r.latenciesMs, []);
});

test("parseDnsperf reads one latency per -v line, in ms", () => {
  const r = parseDnsperf(VERBOSE);
  assert.equal(r.latenciesMs.length, 4);
  assert.ok(Math.abs(r.latenciesMs[0]! - 2.602) < 1e-9);
  assert.ok(Math.abs(percentile(r.latenciesMs, 50) - 0.613) < 1e-9);
  assert.ok(Math.abs(percentile(r.latenciesMs, 99) - 2.602) < 1e-9);
});

test("parseDnsperf names what is missing from truncated output", () => {
  assert.throws(() => parseDnsperf("DNS Performance Testing Tool\n"), /no 'Queries sent'/);
});

test("dnsperfArgs: loopback, -Q with -v for latency runs, -m tcp for TCP", () => {
  const args = dnsperfArgs({
    dnsperf: "dnsperf",
    port: 5300,
    queryFile: "q.txt",
    seconds: 4,
    tcp: true,
    rateQps: 1234.4,
  });
  assert.deepEqual(args.slice(0, 2), ["-s", "127.0.0.1"]);
  assert.ok(args.join(" ").includes("-m tcp"));
  assert.ok(args.join(" ").includes("-Q 1234 -v"));
  assert.ok(!dnsperfArgs({ dnsperf: "dnsperf", port: 1, queryFile: "q", seconds: 1 }).includes("-v"));
});

test("percentile is nearest-rank", () => {
  const v = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(percentile(v, 50), 50);
  assert.equal(percentile(v, 99), 99);
  assert.equal(percentile(v, 100), 100);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test("the table aligns columns and prints ratios against the peer", () => {
  const table = formatTable([
    { scenario: "hot path UDP: jitsu", qps: 45000, cpuUs: 20.04, vs: vs(45000, 50000, "node") },
    { scenario: "  node responder", qps: 50000 },
    { scenario: "latency", p50Ms: 0.1234, p99Ms: 12.345 },
  ]);
  const lines = table.split("\n");
  assert.equal(lines.length, 5);
  assert.match(lines[2]!, /^hot path UDP: jitsu\s+45,000\s+20\.0\s+0\.90 x node$/);
  assert.match(lines[4]!, /0\.123\s+12\.3$/);
  assert.equal(lines[0]!.indexOf("QPS") + 3, lines[2]!.indexOf("45,000") + 6);
  assert.ok(Number.isNaN(ratio(1, 0)));
  assert.equal(vs(undefined, 1, "x"), "");
});

test("targets print MET, MISS or n/a", () => {
  const out = formatTargets([
    { what: "a", measured: "1", met: true },
    { what: "bb", measured: "2", met: false },
    { what: "c", measured: "3", met: null },
  ]);
  assert.deepEqual(out.split("\n"), ["MET   a   1", "MISS  bb  2", "n/a   c   3"]);
});

test("parseParams: --quick is short, the full run meets the issue's sample sizes, anything else is an error", () => {
  const quick = parseParams(["--quick"]);
  const full = parseParams([]);
  assert.ok(quick.quick && quick.seconds < full.seconds);
  assert.ok(full.summonStarts >= 50);
  assert.equal(full.stormQueries, 1000);
  assert.equal(full.scaleNames, 10_000);
  assert.throws(() => parseParams(["--fast"]), /unknown argument '--fast'/);
  assert.equal(full.nice, null);
  assert.equal(parseParams(["--nice", "-5", "--quick"]).nice, -5);
  assert.throws(() => parseParams(["--nice"]), /--nice takes a whole number/);
  assert.throws(() => parseParams(["--nice", "-21"]), /--nice takes a whole number/);
  assert.equal(full.pin, true);
  assert.equal(parseParams(["--no-pin"]).pin, false);
});

test("cpuPlan: the server gets CPU 1, the load the rest; nothing to pin on one CPU or with --no-pin", () => {
  assert.deepEqual(cpuPlan(2, true), { server: "1", load: "0" });
  assert.deepEqual(cpuPlan(8, true), { server: "1", load: "0,2-7" });
  assert.equal(cpuPlan(1, true), null);
  assert.equal(cpuPlan(8, false), null);
});

test("parseParams: --only scale, workers, forward, summon or hold runs that section alone; other sections are an error", () => {
  assert.equal(parseParams([]).only, null);
  const only = parseParams(["--only", "scale", "--quick"]);
  assert.equal(only.only, "scale");
  assert.ok(only.scaleRepeats >= 3);
  assert.equal(parseParams(["--only", "workers"]).only, "workers");
  assert.equal(parseParams(["--only", "forward"]).only, "forward");
  assert.equal(parseParams(["--only", "summon"]).only, "summon");
  assert.equal(parseParams(["--only", "hold"]).only, "hold");
  assert.throws(
    () => parseParams(["--only", "latency"]),
    /--only takes 'scale', 'workers', 'forward', 'summon' or 'hold', got 'latency'/,
  );
  assert.throws(
    () => parseParams(["--only"]),
    /--only takes 'scale', 'workers', 'forward', 'summon' or 'hold', got ''/,
  );
});
