/**
 * Running `xl` (xl(1)) and reading what it prints: the `xl list` table
 * (tools/xl/xl_info.c list_domains), `xl network-list` (xl_nic.c) and
 * `xl list -l` JSON (an array of {domid, config: libxl_domain_config}).
 */
import { execFile } from "node:child_process";
import { BackendError } from "../../errors/index.js";
import type { VmState } from "../contract.js";

export interface XlResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface XlRow {
  readonly name: string;
  readonly domid: number;
  readonly memMiB: number;
  readonly vcpus: number;
  /** The six State letters: r b p s <shutdown reason> d. */
  readonly flags: string;
}

/** Lines xl prints on every create/restore that are progress, not errors. */
const NOISE =
  /^(Parsing config from |Loading new save file |Savefile contains xl domain config| xl: .*progress)/;

/** What to do when xl cannot be found. */
export const XL_HINT = "install xen-utils, or give its path with --xl PATH";

/** xl's stderr as one line for a user: noise dropped, lines joined. */
export function stderrSummary(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !NOISE.test(l));
  return lines.slice(-6).join(" / ");
}

/** How long an xl command may run before it is killed, unless the caller says otherwise. */
export const XL_TIMEOUT_MS = 60_000;

export class Xl {
  constructor(
    /** The xl command (a path, or a name looked up on PATH). */
    readonly command: string,
  ) {}

  /** Runs `xl ARGS`; a non-zero exit is a BackendError carrying xl's own stderr. */
  run(args: readonly string[], opts: { vm?: string; timeoutMs?: number } = {}): Promise<XlResult> {
    const timeoutMs = opts.timeoutMs ?? XL_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      execFile(
        this.command,
        args,
        { timeout: timeoutMs, encoding: "utf8", maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err === null) {
            resolve({ stdout, stderr });
            return;
          }
          const what = `xl ${args.join(" ")}`;
          const ctx = opts.vm === undefined ? {} : { vm: opts.vm };
          if (err.code === "ENOENT") {
            reject(
              new BackendError("libxl", `cannot run '${this.command}': not found (${XL_HINT})`, {
                ...ctx,
                cause: err,
              }),
            );
            return;
          }
          if (err.code === "EACCES") {
            reject(
              new BackendError("libxl", `cannot run '${this.command}': permission denied`, {
                ...ctx,
                cause: err,
              }),
            );
            return;
          }
          if (err.killed === true && err.signal !== null) {
            reject(
              new BackendError(
                "libxl",
                `${what} did not finish within ${timeoutMs / 1000} s and was killed`,
                { ...ctx, cause: err },
              ),
            );
            return;
          }
          const detail =
            stderrSummary(stderr) || stdout.trim().split("\n").slice(-3).join(" / ") || undefined;
          const code =
            typeof err.code === "number" ? `exit status ${err.code}` : `signal ${err.signal ?? "?"}`;
          reject(
            new BackendError("libxl", `${what} failed (${code})`, {
              ...ctx,
              ...(detail === undefined ? {} : { detail }),
              cause: err,
            }),
          );
        },
      );
    });
  }
}

/**
 * Parses the `xl list` table. Rows are printed as
 * "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f" (name, ID, Mem, VCPUs, State, Time);
 * names are read from the left up to the numeric columns, so spaces in them survive.
 */
export function parseXlList(stdout: string): XlRow[] {
  const rows: XlRow[] = [];
  for (const line of stdout.split("\n")) {
    const m = /^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+([-rbpscwSd?]{6})\s+[\d.]+/.exec(line);
    if (m === null) continue;
    rows.push({
      name: m[1]!.trim(),
      domid: Number(m[2]),
      memMiB: Number(m[3]),
      vcpus: Number(m[4]),
      flags: m[5]!,
    });
  }
  return rows;
}

/**
 * The State column (xl(1) "STATES"): r running, b blocked, p paused, s shutdown
 * (the next letter is the shutdown reason: r reboot, s suspend, c crash, w watchdog), d dying.
 */
export function stateOfFlags(flags: string): VmState {
  const [r, b, p, s, reason, d] = flags.split("");
  if (s === "s") return reason === "c" ? "crashed" : "off";
  if (d === "d") return "off";
  if (p === "p") return "paused";
  if (r === "r" || b === "b") return "running";
  return "running"; // runnable, waiting for a CPU
}

/** MAC addresses from `xl network-list` rows: "Idx BE Mac Addr. handle state evt-ch tx-/rx-ring-ref BE-path". */
export function parseNetworkList(stdout: string): string[] {
  const macs: string[] = [];
  for (const line of stdout.split("\n")) {
    const m = /^\s*\d+\s+\d+\s+([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})\b/.exec(line);
    if (m !== null) macs.push(m[1]!.toLowerCase());
  }
  return macs;
}

export interface XlLongEntry {
  readonly domid: number | null;
  readonly name: string | undefined;
  readonly uuid: string | undefined;
}

/** `xl list -l`: `[{"domid": N, "config": {"c_info": {"name": ..., "uuid": ...}, ...}}, ...]`. */
export function parseXlListLong(stdout: string): XlLongEntry[] {
  let data: unknown;
  try {
    data = JSON.parse(stdout);
  } catch (err) {
    throw new Error(`xl list -l printed something that is not JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!Array.isArray(data)) throw new Error("xl list -l did not print a JSON array");
  return data.map((entry: unknown) => {
    const e = (entry ?? {}) as { domid?: unknown; config?: { c_info?: { name?: unknown; uuid?: unknown } } };
    const cInfo = e.config?.c_info ?? {};
    return {
      domid: typeof e.domid === "number" ? e.domid : null,
      name: typeof cInfo.name === "string" ? cInfo.name : undefined,
      uuid: typeof cInfo.uuid === "string" ? cInfo.uuid.toLowerCase() : undefined,
    };
  });
}
