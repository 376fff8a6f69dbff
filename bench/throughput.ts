/**
 * Throughput: the hot path over UDP and TCP and the forwarded rows (one name,
 * and FWD_MANY names), jitsu against the node responder, dnsmasq and unbound,
 * each pinned to the server CPU; dnsperf interleaved, best of `rounds` per
 * side. The 10,000-name instance runs in the same rounds (its row is the
 * scale section's, bench/scale.ts). `forwardOnly` (`--only forward`) runs
 * the hot path UDP and the forwarded rows alone.
 */
import type { BenchContext } from "./context.js";
import { readSides, roundsJson, runRounds, type RoundSide } from "./dnsperf.js";
import { ratio, vs, type Row } from "./report.js";
import { cpuSeconds, type Server } from "./servers.js";
import { FWD_MANY, type FullServers } from "./shared-servers.js";

export interface ThroughputResult {
  rows: Row[];
  /** Runs dnsperf could not finish, by side: reported under the table, not counted. */
  failed: Record<string, string[]>;
  /** The node responder's best QPS (the latency rows run at half of it). */
  nodeQps: number | undefined;
  /** Best QPS of jitsu's hot path over the node responder's, and of jitsu forwarding over dnsmasq's. */
  hotRatio: number;
  fwdRatio: number;
  /** Best QPS of jitsu forwarding FWD_MANY names over dnsmasq's. */
  fwdManyRatio: number;
  /** The 10,000-name instance: its best QPS and CPU per query, and the one-name jitsu's best QPS. */
  names: { qps: number | undefined; cpuUs: number | undefined; oneNameQps: number | undefined };
  json: ReturnType<typeof roundsJson>;
}

export async function throughputSection(
  ctx: BenchContext,
  s: FullServers,
  names: { server: Server; file: string },
): Promise<ThroughputResult> {
  return measure(ctx, [
    { key: "node/udp", server: s.node, file: s.hotFile },
    { key: "jitsu/udp", server: s.jitsu, file: s.hotFile },
    { key: "dnsmasq/udp", server: s.dnsmasq, file: s.hotFile },
    { key: "unbound/udp", server: s.unbound, file: s.hotFile },
    { key: "jitsu-scale/udp", server: names.server, file: names.file },
    { key: "node/tcp", server: s.node, file: s.hotFile, tcp: true },
    { key: "jitsu/tcp", server: s.jitsu, file: s.hotFile, tcp: true },
    { key: "unbound/tcp", server: s.unbound, file: s.hotFile, tcp: true },
    ...forwardSides(s),
  ]);
}

/** `--only forward`: the hot path UDP (jitsu and the node responder) and the forwarded rows. */
export function forwardOnly(ctx: BenchContext, s: FullServers): Promise<ThroughputResult> {
  return measure(ctx, [
    { key: "node/udp", server: s.node, file: s.hotFile },
    { key: "jitsu/udp", server: s.jitsu, file: s.hotFile },
    ...forwardSides(s),
  ]);
}

function forwardSides(s: FullServers): RoundSide[] {
  return [
    { key: "jitsu/fwd", server: s.jitsu, file: s.fwdFile },
    { key: "dnsmasq/fwd", server: s.dnsmasqFwd, file: s.fwdFile },
    { key: "jitsu/fwd-many", server: s.jitsu, file: s.fwdManyFile },
    { key: "dnsmasq/fwd-many", server: s.dnsmasqFwd, file: s.fwdManyFile },
  ];
}

async function measure(ctx: BenchContext, sides: RoundSide[]): Promise<ThroughputResult> {
  // Runs dnsperf could not finish are reported under the table, not fatal (the other sides still count).
  const { runs, failed } = await runRounds(ctx, { sides, cpuSeconds, what: "throughput" });
  const { qps: q, cpu, loss } = readSides(runs, failed);
  const ran = new Set(sides.map((side) => side.key));
  const rows: (Row & { side: string })[] = [
    {
      side: "jitsu/udp",
      scenario: "hot path UDP: jitsu, ready VM",
      qps: q("jitsu/udp"),
      cpuUs: cpu("jitsu/udp"),
      vs: vs(q("jitsu/udp"), q("node/udp"), "node"),
      note: loss("jitsu/udp"),
    },
    {
      side: "node/udp",
      scenario: "  node responder (prebuilt buffer)",
      qps: q("node/udp"),
      cpuUs: cpu("node/udp"),
      note: loss("node/udp"),
    },
    {
      side: "dnsmasq/udp",
      scenario: "  dnsmasq local data",
      qps: q("dnsmasq/udp"),
      cpuUs: cpu("dnsmasq/udp"),
      vs: vs(q("jitsu/udp"), q("dnsmasq/udp"), "dnsmasq (jitsu)"),
    },
    {
      side: "unbound/udp",
      scenario: "  unbound local data, 1 thread",
      qps: q("unbound/udp"),
      cpuUs: cpu("unbound/udp"),
      vs: vs(q("jitsu/udp"), q("unbound/udp"), "unbound (jitsu)"),
    },
    {
      side: "jitsu/tcp",
      scenario: "hot path TCP: jitsu",
      qps: q("jitsu/tcp"),
      cpuUs: cpu("jitsu/tcp"),
      vs: vs(q("jitsu/tcp"), q("node/tcp"), "node tcp"),
      note: loss("jitsu/tcp"),
    },
    { side: "node/tcp", scenario: "  node responder TCP", qps: q("node/tcp"), cpuUs: cpu("node/tcp") },
    {
      side: "unbound/tcp",
      scenario: "  unbound TCP",
      qps: q("unbound/tcp"),
      cpuUs: cpu("unbound/tcp"),
      vs: vs(q("jitsu/tcp"), q("unbound/tcp"), "unbound (jitsu)"),
    },
    {
      side: "jitsu/fwd",
      scenario: "forwarded UDP: jitsu -> unbound",
      qps: q("jitsu/fwd"),
      cpuUs: cpu("jitsu/fwd"),
      vs: vs(q("jitsu/fwd"), q("dnsmasq/fwd"), "dnsmasq fwd"),
      note: loss("jitsu/fwd"),
    },
    {
      side: "dnsmasq/fwd",
      scenario: "  dnsmasq -> unbound, cache off",
      qps: q("dnsmasq/fwd"),
      cpuUs: cpu("dnsmasq/fwd"),
      note: loss("dnsmasq/fwd"),
    },
    {
      side: "jitsu/fwd-many",
      scenario: `forwarded UDP, ${FWD_MANY} names: jitsu`,
      qps: q("jitsu/fwd-many"),
      cpuUs: cpu("jitsu/fwd-many"),
      vs: vs(q("jitsu/fwd-many"), q("dnsmasq/fwd-many"), "dnsmasq fwd"),
      note: loss("jitsu/fwd-many") || "64 random-port sockets, rotated every 100 queries",
    },
    {
      side: "dnsmasq/fwd-many",
      scenario: `  dnsmasq, ${FWD_MANY} names`,
      qps: q("dnsmasq/fwd-many"),
      cpuUs: cpu("dnsmasq/fwd-many"),
      note: loss("dnsmasq/fwd-many") || "shares its 64 random-port sockets under load",
    },
  ];
  return {
    rows: rows.filter((r) => ran.has(r.side)).map(({ side: _, ...row }) => row),
    failed,
    nodeQps: q("node/udp"),
    hotRatio: ratio(q("jitsu/udp"), q("node/udp")),
    fwdRatio: ratio(q("jitsu/fwd"), q("dnsmasq/fwd")),
    fwdManyRatio: ratio(q("jitsu/fwd-many"), q("dnsmasq/fwd-many")),
    names: { qps: q("jitsu-scale/udp"), cpuUs: cpu("jitsu-scale/udp"), oneNameQps: q("jitsu/udp") },
    json: roundsJson(runs),
  };
}
