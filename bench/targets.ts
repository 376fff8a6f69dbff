/**
 * The targets of issue 5, in its order, from what the sections measured:
 * each with what was measured and whether it is met (null: not measured).
 */
import type { LatencyResult } from "./latency.js";
import type { Target } from "./report.js";
import type { ScaleResult } from "./scale.js";
import { FWD_MANY } from "./shared-servers.js";
import type { SummonSection } from "./summon.js";
import type { ThroughputResult } from "./throughput.js";
import type { AllCpusSection } from "./workers.js";

/** Issue 22's forwarding targets (both forwarded rows against dnsmasq, and the hot path unchanged). */
export function forwardTargets(t: ThroughputResult): Target[] {
  const pct = (r: number): string => (Number.isFinite(r) ? `${(r * 100).toFixed(0)}%` : "not measured");
  return [
    {
      what: `forwarded, ${FWD_MANY} names >= 70% of dnsmasq (issue 22)`,
      measured: pct(t.fwdManyRatio),
      met: Number.isFinite(t.fwdManyRatio) ? t.fwdManyRatio >= 0.7 : null,
    },
    {
      what: "forwarded, one name >= 80% of dnsmasq (issue 22)",
      measured: pct(t.fwdRatio),
      met: Number.isFinite(t.fwdRatio) ? t.fwdRatio >= 0.8 : null,
    },
    {
      what: "hot path >= 90% of node responder QPS (issue 22: unchanged)",
      measured: pct(t.hotRatio),
      met: Number.isFinite(t.hotRatio) ? t.hotRatio >= 0.9 : null,
    },
  ];
}

export function issue5Targets(r: {
  throughput: ThroughputResult;
  latency: LatencyResult;
  allCpus: AllCpusSection;
  summon: SummonSection;
  scale: ScaleResult;
}): Target[] {
  const { hotRatio: hot, fwdRatio: fwd } = r.throughput;
  const jl = r.latency.jitsu;
  const { storm } = r.summon;
  const { maxStartupMs, maxPeakMb, qpsRatio } = r.scale;
  return [
    {
      what: "hot path >= 90% of node responder QPS",
      measured: `${(hot * 100).toFixed(0)}%`,
      met: hot >= 0.9,
    },
    {
      what: "hot path p99 < 1 ms at 50% of node QPS",
      measured: `${jl?.p99.toFixed(3)} ms at ${Math.round(r.latency.rateQps)} qps`,
      met: jl !== undefined && jl.p99 < 1,
    },
    {
      what: "forwarded >= 70% of dnsmasq forwarding",
      measured: `${(fwd * 100).toFixed(0)}%`,
      met: fwd >= 0.7,
    },
    {
      what: `forwarded, all CPUs, --workers ${r.allCpus.workers}: >= 70% of dnsmasq`,
      measured: Number.isFinite(r.allCpus.fwdRatio)
        ? `${(r.allCpus.fwdRatio * 100).toFixed(0)}%`
        : "not measured",
      met: Number.isFinite(r.allCpus.fwdRatio) ? r.allCpus.fwdRatio >= 0.7 : null,
    },
    summonTarget(r.summon),
    {
      what: "storm: exactly one start, all answered",
      measured: `${storm.starts} start(s), ${storm.ok}/${storm.sent} answered with the address`,
      met: storm.starts === 1 && storm.ok === storm.sent,
    },
    {
      what: "10k names: start-up <= 1 s",
      measured: `${maxStartupMs.toFixed(0)} ms (worst of the two shapes)`,
      met: maxStartupMs <= 1000,
    },
    {
      what: "10k names: RSS <= 100 MB",
      measured: `${maxPeakMb.toFixed(0)} MB peak (worst of the two shapes)`,
      met: maxPeakMb <= 100,
    },
    {
      what: "10k names: QPS within 10% of one name",
      measured: `${(qpsRatio * 100).toFixed(0)}%`,
      met: qpsRatio >= 0.9,
    },
  ];
}

/** Issue 5's (and issue 22's) summon target: the overhead per start, with the idle baseline beside it. */
export function summonTarget({ summon, idle }: SummonSection): Target {
  return {
    what: "summon overhead <= 2 ms p99",
    measured: `${summon.perStartOverheadMs.p99.toFixed(2)} ms p99 per start (cross-check, unpaired: ${summon.overheadMs.p99.toFixed(2)} ms; idle baseline p99: node ${idle.node?.p99.toFixed(2)}, jitsu ${idle.jitsu?.p99.toFixed(2)} ms)${summon.starts < 50 ? `; only ${summon.starts} starts (quick)` : ""}`,
    met: summon.perStartOverheadMs.p99 <= 2,
  };
}
