/**
 * sd_notify(3) for jitsu: READY=1, RELOADING=1, STOPPING=1, STATUS=..., WATCHDOG=1
 * to the unix datagram socket systemd names in $NOTIFY_SOCKET. Without
 * NOTIFY_SOCKET (not under systemd, or Type= is not notify) there is no
 * notifier at all: nothing is loaded, nothing sent.
 *
 * Node's dgram has no unix datagrams, so the datagram is sent by a small N-API
 * addon built from native/sd_notify.c (`npm run build`, node-gyp). It sends from
 * jitsu's own PID, so the unit keeps NotifyAccess=main, and costs a few
 * microseconds per message (bench/sd-notify.ts). Where the addon could not be
 * built (no compiler when jitsu was installed), each message is sent by
 * spawning `systemd-notify`, a few milliseconds each and only accepted with
 * NotifyAccess=all; jitsu says so once at start-up.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";

/** dist/native/jitsu_sd_notify.node, from dist/src/systemd/notify.js (scripts/build-native.mjs puts it there). */
export const NATIVE_ADDON = fileURLToPath(new URL("../../native/jitsu_sd_notify.node", import.meta.url));

export type NotifySend = (socket: string, message: string) => void;

/** The addon's send, or null when it is not built. */
export function nativeSend(path: string = NATIVE_ADDON): NotifySend | null {
  if (!existsSync(path)) return null;
  const addon = createRequire(import.meta.url)(path) as { send(socket: string, message: string): number };
  return (socket, message) => void addon.send(socket, message);
}

/** The fallback: one `systemd-notify` process per message (needs NotifyAccess=all in the unit). */
export function spawnSend(log: Logger, program = "systemd-notify"): NotifySend {
  return (socket, message) => {
    const args = message.split("\n").filter((l) => l !== "");
    // --no-block: systemd-notify otherwise waits for systemd to have read it.
    const child = spawn(program, ["--no-block", ...args], {
      env: { ...process.env, NOTIFY_SOCKET: socket },
      stdio: "ignore",
    });
    child.on("error", (err) => log.warn(`systemd: cannot run ${program}: ${describeError(err)}`));
  };
}

export class SystemdNotifier {
  /** The socket's address as systemd gave it (a path, or @name for the abstract namespace). */
  readonly socket: string;
  /** How messages go: "native" (the addon) or "systemd-notify" (a process each). */
  readonly via: "native" | "systemd-notify";
  private readonly sendTo: NotifySend;
  private readonly log: Logger;
  private failed = false;

  private constructor(socket: string, sendTo: NotifySend, via: SystemdNotifier["via"], log: Logger) {
    this.socket = socket;
    this.sendTo = sendTo;
    this.via = via;
    this.log = log;
  }

  /**
   * The notifier for $NOTIFY_SOCKET, or null without it. Like sd_notify's
   * `unset_environment`, the variable is taken out of `env`, so the VMs jitsu
   * spawns (process backend) do not talk to systemd as if they were jitsu.
   */
  static fromEnv(env: NodeJS.ProcessEnv, log: Logger, given?: NotifySend | null): SystemdNotifier | null {
    const socket = env.NOTIFY_SOCKET;
    if (socket === undefined || socket === "") return null;
    delete env.NOTIFY_SOCKET;
    // Loaded only under systemd: without NOTIFY_SOCKET, jitsu pays nothing.
    const send = given === undefined ? nativeSend() : given;
    if (send !== null) return new SystemdNotifier(socket, send, "native", log);
    log.warn(
      "systemd: the sd_notify addon is not built (npm run build needs python3, make and a C compiler); " +
        "sending each notification with systemd-notify instead, which needs NotifyAccess=all in the unit",
    );
    return new SystemdNotifier(socket, spawnSend(log), "systemd-notify", log);
  }

  /** Sends `fields` ("READY=1", "STATUS=..."): one datagram, newline-separated. Never throws. */
  notify(...fields: string[]): void {
    const message = fields.map((f) => f.replace(/\n/g, " ")).join("\n");
    try {
      this.sendTo(this.socket, message);
      if (this.failed) this.log.info("systemd: notifications reach NOTIFY_SOCKET again");
      this.failed = false;
    } catch (err) {
      // Once per outage: a watchdog ping every few seconds must not flood the log.
      if (!this.failed) this.log.warn(`systemd: cannot notify ${this.socket}: ${describeError(err)}`);
      this.failed = true;
    }
  }

  ready(status?: string): void {
    this.notify("READY=1", ...(status === undefined ? [] : [`STATUS=${status}`]), `MAINPID=${process.pid}`);
  }

  reloading(): void {
    this.notify("RELOADING=1", "STATUS=Reloading the configuration");
  }

  stopping(): void {
    this.notify("STOPPING=1", "STATUS=Shutting down");
  }

  status(text: string): void {
    this.notify(`STATUS=${text}`);
  }

  watchdog(): void {
    this.notify("WATCHDOG=1");
  }
}
