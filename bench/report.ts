/**
 * The one table the bench prints, the targets from issue 5 with where each
 * stands, and the JSON written to bench/results/.
 */

export interface Row {
  scenario: string;
  qps?: number;
  p50Ms?: number;
  p99Ms?: number;
  /** Server CPU time per answered query, microseconds. */
  cpuUs?: number;
  /** Ratio against a peer measured in the same run, e.g. "0.93 x node responder". */
  vs?: string;
  note?: string;
}

export interface Target {
  what: string;
  measured: string;
  met: boolean | null;
}

function fmtQps(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? "" : Math.round(v).toLocaleString("en-US");
}

function fmtMs(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "";
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3);
}

export function ratio(a: number | undefined, b: number | undefined): number {
  return a === undefined || b === undefined || b === 0 ? Number.NaN : a / b;
}

export function vs(a: number | undefined, b: number | undefined, peer: string): string {
  const r = ratio(a, b);
  return Number.isFinite(r) ? `${r.toFixed(2)} x ${peer}` : "";
}

/** A plain-text table; numbers right-aligned. */
export function formatTable(rows: readonly Row[]): string {
  const header = ["scenario", "QPS", "CPU us/q", "p50 ms", "p99 ms", "vs peer (same run)", "note"];
  const cells = rows.map((r) => [
    r.scenario,
    fmtQps(r.qps),
    r.cpuUs === undefined || !Number.isFinite(r.cpuUs) ? "" : r.cpuUs.toFixed(1),
    fmtMs(r.p50Ms),
    fmtMs(r.p99Ms),
    r.vs ?? "",
    r.note ?? "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const right = new Set([1, 2, 3, 4]);
  const line = (c: readonly string[]): string =>
    c
      .map((v, i) => (right.has(i) ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}

export function formatTargets(targets: readonly Target[]): string {
  const w = Math.max(...targets.map((t) => t.what.length));
  return targets
    .map((t) => `${t.met === null ? "n/a " : t.met ? "MET " : "MISS"}  ${t.what.padEnd(w)}  ${t.measured}`)
    .join("\n");
}
