/**
 * WatchdogSec= in the unit: systemd sets WATCHDOG_USEC (and WATCHDOG_PID) and
 * restarts the service when no WATCHDOG=1 arrives within that time. The ping
 * is sent from a timer on the event loop, so a loop stuck in a long
 * computation or a busy wait sends none and is restarted, as the issue asks.
 */
import type { SystemdNotifier } from "./notify.js";

/**
 * How often to ping (half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
 * advises), in ms; null when there is no watchdog for this process:
 * WATCHDOG_USEC unset, not a positive whole number, or WATCHDOG_PID set to
 * another process (the watchdog was meant for a parent).
 */
export function watchdogInterval(env: NodeJS.ProcessEnv, pid: number = process.pid): number | null {
  const usecText = env.WATCHDOG_USEC;
  if (usecText === undefined || !/^\d+$/.test(usecText)) return null;
  const usec = Number(usecText);
  if (!(usec > 0) || !Number.isSafeInteger(usec)) return null;
  const pidText = env.WATCHDOG_PID;
  if (pidText !== undefined && pidText !== "" && pidText !== String(pid)) return null;
  return Math.max(1, Math.floor(usec / 2000));
}

export interface Watchdog {
  readonly intervalMs: number;
  stop(): void;
}

/**
 * Pings at once and then every `intervalMs`; the timer is unref'd (it never
 * keeps jitsu alive). WATCHDOG_USEC and WATCHDOG_PID are taken out of `env`,
 * so the VMs jitsu spawns do not inherit them.
 */
export function startWatchdog(
  notifier: SystemdNotifier,
  env: NodeJS.ProcessEnv,
  pid: number = process.pid,
): Watchdog | null {
  const intervalMs = watchdogInterval(env, pid);
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  if (intervalMs === null) return null;
  notifier.watchdog();
  const timer = setInterval(() => notifier.watchdog(), intervalMs);
  timer.unref();
  return { intervalMs, stop: () => clearInterval(timer) };
}
