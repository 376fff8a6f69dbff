/**
 * Logging through pino. `text` (the default) prints human-readable lines such as
 * the original's "Adding domain 'www.example.org' for VM 'www' with ip 10.0.0.1";
 * `json` prints one JSON object a line for machines.
 */
import { pino, type Logger as PinoLogger, type DestinationStream } from "pino";

export type Logger = PinoLogger;
export type LogFormat = "text" | "json";
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * Up to this many VMs, start-up logs one line per domain, PTR record and VM
 * (the stats table), as the original does. Above it those lines are logged at
 * debug, and info gets one summary line per kind instead: with 10,000 VMs the
 * per-VM lines were 30,000 lines (5 MB) written before the first answer.
 */
export const PER_VM_LINES_MAX = 100;

/** The level of per-VM start-up lines for a configuration of `vms` VMs. */
export function perVmLevel(vms: number): "info" | "debug" {
  return vms > PER_VM_LINES_MAX ? "debug" : "info";
}

/**
 * A URI given on the command line with its password hidden, for anything we
 * print (log lines, error messages): `https://root:secret@host/` becomes
 * `https://root:***@host/`; a URI without a password is returned as it is.
 */
export function redactUri(uri: string): string {
  // Up to the last '@' of the authority, as URL parsers split (a password may contain '@').
  return uri.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/]*@/i, "$1:***@");
}

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Where lines go; standard error by default (standard output stays free for --help). */
  destination?: DestinationStream | NodeJS.WritableStream;
}

export function createLogger(options: LoggerOptions): Logger {
  const dest = options.destination ?? pino.destination({ dest: 2, sync: true });
  // Standard error is written in batches (see BatchedLines); a given destination line by line.
  return pino(
    { level: options.level, base: undefined },
    new BatchedLines(dest, options.destination === undefined, options.format === "json"),
  );
}

const LEVEL_NAMES: Readonly<Record<number, string>> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};
/**
 * Fields the text format leaves out: shown elsewhere on the line, precise copies of the message's
 * numbers, or the event type (src/events) a line reports, which is for machines (`--log-format json`).
 */
const OMIT = new Set([
  "time",
  "level",
  "msg",
  "vm",
  "pid",
  "hostname",
  "stream",
  "startMs",
  "backendMs",
  "type",
]);

const pad = (n: number, width = 2): string => String(n).padStart(width, "0");

/** `[2026-11-25 11:58:13.025]` in local time, as pino-pretty's SYS:yyyy-mm-dd HH:MM:ss.l. */
function timestamp(ms: number): string {
  const d = new Date(ms);
  return `[${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(
    d.getMinutes(),
  )}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}]`;
}

/**
 * pino's JSON lines turned into `[time] LEVEL: [vm] message {other fields}`
 * (or passed on as they are, for `--log-format json`).
 * Our own formatter rather than pino-pretty: at start-up with 10,000 VMs jitsu
 * logs 30,000 lines, and pino-pretty spent ~0.8 s on them (bench/).
 */
class BatchedLines implements DestinationStream {
  private pending: string[] = [];
  private scheduled = false;

  /**
   * With `batch`, lines logged in one turn of the event loop go out in one
   * write at the end of it (30,000 start-up lines to a pipe: 0.8 s one by one),
   * and whatever is pending is written when the process exits. A line logged
   * while a DNS answer is being made (a VM became ready) then costs no write
   * before the answer goes out: a write to a pipe, reader woken, took 0.1-0.4 ms.
   */
  constructor(
    private readonly out: DestinationStream | NodeJS.WritableStream,
    private readonly batch = false,
    private readonly json = false,
  ) {
    if (batch) process.once("exit", () => this.flush());
  }

  /** Writes what is pending now (also pino's logger.flush()). */
  flush(done?: (err?: Error) => void): void {
    this.scheduled = false;
    if (this.pending.length > 0) {
      const chunk = this.pending.join("");
      this.pending = [];
      this.out.write(chunk);
    }
    done?.();
  }

  write(line: string): void {
    const text = this.format(line);
    if (!this.batch) {
      this.out.write(text);
      return;
    }
    this.pending.push(text);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private format(line: string): string {
    if (this.json) return line;
    let text: string;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      const vm = typeof o.vm === "string" ? `[${o.vm}] ` : "";
      let extra = "";
      for (const key of Object.keys(o)) {
        if (!OMIT.has(key)) extra += ` ${key}=${JSON.stringify(o[key])}`;
      }
      const level = LEVEL_NAMES[o.level as number] ?? String(o.level);
      text = `${timestamp(typeof o.time === "number" ? o.time : Date.now())} ${level}: ${vm}${String(o.msg ?? "")}${extra}\n`;
    } catch {
      text = line;
    }
    return text;
  }
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
