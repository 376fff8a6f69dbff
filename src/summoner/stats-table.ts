/**
 * The stats table printed at start-up and when a VM's state changes, with the
 * original Jitsu's columns.
 */
import type { SummonerState, VmStatus } from "./summoner.js";

const HEADERS = [
  "uuid",
  "name",
  "state",
  "delay",
  "synjitsu",
  "start time",
  "total starts",
  "stop mode",
  "DNS",
  "IP",
  "TTL",
  "total requests",
  "last request",
] as const;

function time(ms: number | null): string {
  return ms === null
    ? "-"
    : new Date(ms)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z");
}

function cells(row: VmStatus): string[] {
  return [
    row.uuid ?? "-",
    row.name ?? row.label,
    row.state,
    `${row.responseDelay} s`,
    row.useSynjitsu ? "yes" : "no",
    time(row.startedAt),
    String(row.totalStarts),
    row.stopMode,
    row.dns.join(" ") || "-",
    row.ips.join(" ") || "-",
    String(row.ttlSeconds),
    String(row.totalRequests),
    time(row.lastRequest),
  ];
}

/** A plain-text table, one line per VM, columns padded to their widest cell. */
export function formatStatsTable(rows: readonly VmStatus[]): string {
  const table = [[...HEADERS], ...rows.map(cells)];
  const widths = HEADERS.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const line = (r: string[]): string => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(" | ")} |`;
  const rule = `+${widths.map((w) => "-".repeat(w + 2)).join("+")}+`;
  return [rule, line(table[0]!), rule, ...table.slice(1).map(line), rule].join("\n");
}

const STATE_ORDER: readonly SummonerState[] = [
  "ready",
  "starting",
  "stopping",
  "failed",
  "paused",
  "suspended",
  "off",
];

/**
 * The stats table in one line, for configurations too large to print one line
 * per VM: "10000 VMs: 9998 off, 2 ready".
 */
export function formatStateSummary(counts: ReadonlyMap<SummonerState, number>): string {
  let total = 0;
  const parts: string[] = [];
  for (const state of STATE_ORDER) {
    const n = counts.get(state) ?? 0;
    total += n;
    if (n > 0) parts.push(`${n} ${state}`);
  }
  return `${total} VM${total === 1 ? "" : "s"}: ${parts.join(", ") || "none"}`;
}
