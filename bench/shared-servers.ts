/**
 * The servers several sections measure, started once: jitsu with the hot-path
 * VM, the node responder, dnsmasq with local data and dnsmasq forwarding, and
 * the forwarding upstream (an unbound of its own, on the load CPUs, as the
 * bench); the full run adds unbound with local data and 2000 more forwarded
 * names. Each server under test is pinned (ctx.underTest) once started.
 */
import type { BenchContext } from "./context.js";
import {
  rssMb,
  startDnsmasq,
  startJitsu,
  startNodeResponder,
  startUnbound,
  stopJitsu,
  warm,
  VM_EXEC,
  type JitsuServer,
  type Server,
} from "./servers.js";

/** The hot-path name, answered by every server under test. */
export const NAME = "www.example.org";
const IP = "10.0.0.1";
/** The forwarded name, answered by the upstream. */
const FWD_NAME = "fwd.example.net";
const FWD_IP = "10.0.0.2";
/** Forwarded, no sharing: this many distinct names, so every query goes upstream on its own. */
export const FWD_MANY = 2000;

/**
 * jitsu with the hot-path VM (NAME, a process backend `sleep`) started and
 * answered once, forwarding to `upstreamPort`.
 */
export async function startHotJitsu(
  label: string,
  upstreamPort: number,
  more: { cpus?: string; extraArgs?: readonly string[] } = {},
): Promise<JitsuServer> {
  const jitsu = await startJitsu({
    label,
    configs: [`name=www,dns=${NAME},ip=${IP},exec=${VM_EXEC}`],
    upstreamPort,
    logLevel: "warn",
    probe: { name: "example.org", type: "SOA" },
    ...more,
  });
  await warm(jitsu, [NAME], 1);
  return jitsu;
}

/** What the all-CPUs rows measure (all that `--only workers` starts). */
export interface SharedServers {
  /** unbound answering FWD_NAME (and the full run's FWD_MANY names): the forwarders' upstream. */
  upstream: Server;
  dnsmasq: Server;
  /** dnsmasq forwarding to `upstream`, cache off. */
  dnsmasqFwd: Server;
  node: Server;
  /** jitsu forwarding to `upstream`, its hot-path VM ready. */
  jitsu: JitsuServer;
  /** jitsu's RSS once started (the one-name reference of the scale rows). */
  jitsuRss: { rss: number; peak: number };
  /** Query files: NAME, and FWD_NAME. */
  hotFile: string;
  fwdFile: string;
}

/** The full run's: also unbound with local data, and the upstream's FWD_MANY names. */
export interface FullServers extends SharedServers {
  unbound: Server;
  fwdManyFile: string;
}

async function startShared(
  ctx: BenchContext,
  moreUpstreamRecords: readonly [string, string][],
): Promise<SharedServers> {
  const { tools } = ctx;
  const hotFile = ctx.queryFile("hot.txt", [NAME]);
  const fwdFile = ctx.queryFile("fwd.txt", [FWD_NAME]);
  // The upstream of the forwarded rows: its own unbound, on the load CPUs.
  const upstream = await startUnbound(tools.unbound, ctx.dir, "unbound upstream", [
    [FWD_NAME, FWD_IP],
    ...moreUpstreamRecords,
  ]);
  const dnsmasq = ctx.underTest(
    await startDnsmasq(tools.dnsmasq, "dnsmasq", { records: [[NAME, IP]], probeName: NAME }),
  );
  const dnsmasqFwd = ctx.underTest(
    await startDnsmasq(tools.dnsmasq, "dnsmasq forwarding", {
      upstreamPort: upstream.port,
      probeName: FWD_NAME,
    }),
  );
  const node = ctx.underTest(await startNodeResponder(NAME, IP));
  const jitsu = ctx.underTest(await startHotJitsu("jitsu", upstream.port));
  return {
    upstream,
    dnsmasq,
    dnsmasqFwd,
    node,
    jitsu,
    jitsuRss: rssMb(jitsu.proc.pid),
    hotFile,
    fwdFile,
  };
}

/** `--only workers`: the shared servers alone. */
export function startSharedServers(ctx: BenchContext): Promise<SharedServers> {
  return startShared(ctx, []);
}

/** The full run: unbound with local data first, then the shared servers, the upstream with FWD_MANY more names. */
export async function startFullServers(ctx: BenchContext): Promise<FullServers> {
  const fwdMany = Array.from({ length: FWD_MANY }, (_, i) => `f${i}.many.example.net`);
  const fwdManyFile = ctx.queryFile("fwd-many.txt", fwdMany);
  ctx.log("starting peers and jitsu");
  const unbound = ctx.underTest(await startUnbound(ctx.tools.unbound, ctx.dir, "unbound", [[NAME, IP]]));
  const shared = await startShared(
    ctx,
    fwdMany.map((n, i): [string, string] => [n, `10.2.${i >> 8}.${i & 255}`]),
  );
  return { ...shared, unbound, fwdManyFile };
}

/** Stops jitsu, the node responder and both dnsmasq (the full run stops unbound and the upstream last). */
export async function stopAllButUnbound(s: SharedServers): Promise<void> {
  await Promise.all([
    stopJitsu(s.jitsu),
    s.node.proc.stop(),
    s.dnsmasq.proc.stop(),
    s.dnsmasqFwd.proc.stop(),
  ]);
}
