/**
 * `jitsu status`: GET /status as a terminal table, one row per VM, the state
 * coloured only when standard output is a terminal (and NO_COLOR is unset,
 * https://no-color.org; TERM=dumb has none either).
 */
import type { RemoteStatus, RemoteVm } from "./remote.js";

const ANSI = {
  green: "\x1b[32m",
  yellow: "\x1b[33m",
  red: "\x1b[31m",
  dim: "\x1b[2m",
  bold: "\x1b[1m",
  reset: "\x1b[0m",
} as const;

/** Whether to colour output written to `stream`. */
export function useColour(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.TERM === "dumb") return false;
  return stream.isTTY === true;
}

function stateColour(state: string): string {
  switch (state) {
    case "ready":
      return ANSI.green;
    case "starting":
    case "stopping":
      return ANSI.yellow;
    case "failed":
      return ANSI.red;
    default:
      return ANSI.dim;
  }
}

/** "42s", "5m", "3h", "2d" (the largest whole unit) since `iso`, or "-". */
export function age(iso: string | null, nowMs: number): string {
  if (iso === null) return "-";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "-";
  const s = Math.max(0, Math.round((nowMs - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** "in 42s", "in 5m" until `iso`, "now" once it has passed, or "-". */
export function until(iso: string | null | undefined, nowMs: number): string {
  if (iso === null || iso === undefined) return "-";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "-";
  if (t <= nowMs) return "now";
  return `in ${age(new Date(nowMs).toISOString(), t)}`;
}

const HEADERS = [
  "NAME",
  "STATE",
  "FOR",
  "DNS",
  "IP",
  "STARTS",
  "REQUESTS",
  "LAST REQUEST",
  "IDLE STOP",
  "STOP",
  "ERROR",
];

function row(vm: RemoteVm, nowMs: number): string[] {
  // How long it has been in this state (older jitsus: how long it has been up).
  const since =
    vm.stateSince !== undefined
      ? age(vm.stateSince, nowMs)
      : vm.state === "ready" || vm.state === "stopping"
        ? age(vm.startedAt, nowMs)
        : "-";
  return [
    vm.label,
    vm.state,
    since,
    vm.dns.join(",") || "-",
    vm.ips.join(",") || "-",
    String(vm.totalStarts),
    String(vm.totalRequests),
    vm.lastRequest === null ? "never" : `${age(vm.lastRequest, nowMs)} ago`,
    until(vm.idleStopAt, nowMs),
    vm.stopMode,
    vm.lastError === null ? "" : vm.lastError.replace(/\s+/g, " "),
  ];
}

/** The table, the summary line first: "jitsu 0.1.0, up 2h: 3 VMs, 1 ready, 2 off". */
export function formatStatus(status: RemoteStatus, vms: readonly RemoteVm[], colour: boolean): string {
  const nowMs =
    status.now !== undefined && !Number.isNaN(Date.parse(status.now)) ? Date.parse(status.now) : Date.now();
  const counts = new Map<string, number>();
  for (const vm of status.vms) counts.set(vm.state, (counts.get(vm.state) ?? 0) + 1);
  const byState = [...counts].map(([state, n]) => `${n} ${state}`).join(", ");
  const up =
    status.uptimeSeconds === undefined
      ? ""
      : `, up ${age(new Date(nowMs - status.uptimeSeconds * 1000).toISOString(), nowMs)}`;
  const head = `jitsu${status.version === undefined ? "" : ` ${status.version}`}${up}: ${status.vms.length} VM${
    status.vms.length === 1 ? "" : "s"
  }${byState === "" ? "" : `, ${byState}`}`;
  if (vms.length === 0) return `${head}\n`;
  const rows = vms.map((vm) => row(vm, nowMs));
  const widths = HEADERS.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[], paint?: (i: number, text: string) => string): string =>
    cells
      .map((c, i) => {
        const padded = i === cells.length - 1 ? c : c.padEnd(widths[i]!);
        return paint === undefined ? padded : paint(i, padded);
      })
      .join("  ")
      .trimEnd();
  const out = [head, line(HEADERS, colour ? (_i, t) => `${ANSI.bold}${t}${ANSI.reset}` : undefined)];
  for (let r = 0; r < rows.length; r++) {
    const vm = vms[r]!;
    out.push(
      line(
        rows[r]!,
        colour
          ? (i, t) =>
              i === 1
                ? `${stateColour(vm.state)}${t}${ANSI.reset}`
                : i === HEADERS.length - 1 && t !== ""
                  ? `${ANSI.red}${t}${ANSI.reset}`
                  : t
          : undefined,
      ),
    );
  }
  return `${out.join("\n")}\n`;
}
