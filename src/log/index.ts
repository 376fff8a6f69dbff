/**
 * Logging through pino. `text` (the default) prints human-readable lines such as
 * the original's "Adding domain 'www.example.org' for VM 'www' with ip 10.0.0.1";
 * `json` prints one JSON object a line for machines.
 */
import { pino, type Logger as PinoLogger, type DestinationStream } from "pino";
import pinoPretty from "pino-pretty";

export type Logger = PinoLogger;
export type LogFormat = "text" | "json";
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Where lines go; standard error by default (standard output stays free for --help). */
  destination?: DestinationStream | NodeJS.WritableStream;
}

export function createLogger(options: LoggerOptions): Logger {
  const dest = options.destination ?? process.stderr;
  if (options.format === "json") {
    return pino({ level: options.level, base: undefined }, dest as DestinationStream);
  }
  const pretty = pinoPretty({
    colorize: false,
    sync: true,
    destination: dest as NodeJS.WritableStream,
    translateTime: "SYS:yyyy-mm-dd HH:MM:ss.l",
    ignore: "pid,hostname,vm,stream",
    messageFormat: "{if vm}[{vm}] {end}{msg}",
    singleLine: true,
  });
  return pino({ level: options.level, base: undefined }, pretty);
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
