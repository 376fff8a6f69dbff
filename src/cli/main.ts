#!/usr/bin/env node
/**
 * The `jitsu` binary: parse the command line (seed-compatible with the original
 * Jitsu), start serving, and shut down cleanly on SIGINT/SIGTERM.
 */
// First: V8 heap settings, before the other modules allocate.
import "../runtime/heap.js";
import { CommanderError } from "commander";
import { describeError, describeErrorLines, JitsuError, UsageError } from "../errors/index.js";
import { createLogger } from "../log/index.js";
import { formatStateSummary } from "../summoner/index.js";
import { SystemdNotifier, StatusNotes, listenFds, startWatchdog } from "../systemd/index.js";
import { isSubcommand, parseArgs } from "./command.js";
import type { Settings } from "./options.js";
import { startJitsu, type Jitsu } from "./run.js";

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  // `jitsu status|start|stop|check ...`: only as the first argument (a CONFIG string has a '=').
  if (isSubcommand(argv[0])) {
    const { runSubcommand } = await import("./subcommands.js");
    process.exitCode = await runSubcommand(argv[0], argv.slice(1));
    return;
  }
  // So `pidof jitsu`, `ps` and `top` find it (else it is "node"); workers are "jitsu-worker".
  process.title = "jitsu";
  let settings: Settings;
  try {
    settings = parseArgs(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.exitCode === 0) {
        process.exit(0);
      }
      process.stderr.write(`jitsu: ${err.message.replace(/^error: /, "")} (see jitsu --help)\n`);
      process.exit(2);
    }
    process.stderr.write(`jitsu: ${describeError(err)}\n`);
    process.exit(err instanceof UsageError ? 2 : 1);
  }

  let jitsu: Jitsu | undefined;
  let signalled = false;
  // SIGHUP reloads --config; installed first, so one during start-up does not kill us (default action).
  process.on("SIGHUP", () => {
    if (jitsu !== undefined && !signalled) void jitsu.reload();
  });
  // Created here, so the lines it holds (start-up lines batched per turn) go out before a fatal error.
  const log = createLogger({ level: settings.logLevel, format: settings.logFormat });
  // Under systemd (Type=notify): null without NOTIFY_SOCKET, and then nothing is sent.
  const notifier = SystemdNotifier.fromEnv(process.env, log);
  try {
    // Socket activation: the sockets jitsu.socket bound for us (none without LISTEN_FDS).
    const sockets = listenFds(process.env);
    jitsu = await startJitsu(settings, { log, sockets });
  } catch (err) {
    // The error is last: nothing logged before it may follow it.
    log.flush();
    // One line per problem: a preflight reports every VM's at once.
    for (const line of describeErrorLines(err)) process.stderr.write(`jitsu: ${line}\n`);
    if (!(err instanceof JitsuError) && process.env.JITSU_DEBUG === "1") console.error(err);
    process.exit(err instanceof UsageError ? 2 : 1);
  }

  const systemd = notifier === null ? null : notifySystemd(notifier, jitsu);
  if (systemd !== null) {
    // SIGHUP (ExecReload=): RELOADING=1 while the file is re-read, READY=1 after, as systemd expects.
    process.removeAllListeners("SIGHUP");
    process.on("SIGHUP", () => {
      if (signalled) return;
      notifier!.reloading();
      void jitsu.reload().finally(() => systemd.reloaded());
    });
  }

  const shutdown = (signal: string): void => {
    if (signalled) {
      jitsu.log.warn(`${signal} again: exiting now`);
      process.exit(1);
    }
    signalled = true;
    systemd?.stopping();
    jitsu.log.info(`${signal}: shutting down`);
    jitsu.close({ stopVms: settings.stopOnExit }).then(
      () => process.exit(0),
      (err: unknown) => {
        jitsu.log.error(`shutdown: ${describeError(err)}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  // Nothing a bad packet or backend reply does may take the server down: log and go on.
  process.on("uncaughtException", (err) =>
    jitsu.log.error(`unexpected error (continuing): ${describeError(err)}`),
  );
  process.on("unhandledRejection", (err) =>
    jitsu.log.error(`unexpected rejection (continuing): ${describeError(err)}`),
  );
}

/** READY=1 now, STATUS= lines as the VM counts change, WATCHDOG=1 with WatchdogSec=. */
function notifySystemd(notifier: SystemdNotifier, jitsu: Jitsu): { reloaded(): void; stopping(): void } {
  const summary = (): string =>
    `${formatStateSummary(jitsu.summoner.stateCounts())}; DNS on port ${jitsu.port}`;
  const notes = new StatusNotes(notifier, summary);
  jitsu.summoner.onChange(() => notes.changed());
  notifier.ready(notes.sentWithReady());
  const watchdog = startWatchdog(notifier, process.env);
  if (watchdog !== null) jitsu.log.info(`systemd: watchdog on, pinging every ${watchdog.intervalMs} ms`);
  jitsu.log.debug(`systemd: notifying ${notifier.socket} (${notifier.via})`);
  return {
    reloaded() {
      notifier.ready(notes.sentWithReady());
    },
    stopping() {
      notes.stop();
      notifier.stopping();
    },
  };
}

void main();
