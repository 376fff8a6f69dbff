/**
 * The engine's event stream (GET /events, filtered to containers): one JSON
 * object per line, kept open for as long as the engine runs. When it ends
 * (the engine stopped or restarted) the watcher reconnects with back-off
 * (100 ms doubling to 5 s, on the injected clock) and tells the backend,
 * which re-reads every container: what happened while the stream was down
 * is not replayed.
 */
import type Docker from "dockerode";
import type { Clock, Timer } from "../../clock/index.js";
import type { Logger } from "../../log/index.js";
import type { VmState } from "../contract.js";

/** One container event, as the engine sent it (Docker and Podman share these fields). */
export interface ContainerEvent {
  readonly action: string;
  readonly id: string;
  readonly name: string | undefined;
  readonly exitCode: string | undefined;
}

/**
 * The state an event leaves a container in, or undefined for events that do
 * not change it (create, init, exec, attach, health_status, cleanup, and kill:
 * the signal may not end the container; its `die` follows when it does).
 * Docker says `destroy` for a removed container, Podman `remove`.
 */
export function eventState(action: string): VmState | undefined {
  switch (action) {
    case "start":
    case "unpause":
    case "restore":
      return "running";
    case "pause":
      return "paused";
    case "die":
    case "stop":
    case "destroy":
    case "remove":
    case "died":
      return "off";
    case "checkpoint":
      return "suspended";
    default:
      return undefined;
  }
}

export function describeEvent(e: ContainerEvent): string {
  if (e.action === "die" && e.exitCode !== undefined) return `died with exit code ${e.exitCode}`;
  if (e.action === "destroy" || e.action === "remove") return "removed";
  return e.action === "stop" ? "stopped" : e.action;
}

/** Reads one line of the stream; null when it is not a container event. */
export function parseEvent(line: string): ContainerEvent | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  const type = o["Type"] ?? o["type"];
  if (type !== undefined && type !== "container") return null;
  const actor = (typeof o["Actor"] === "object" && o["Actor"] !== null ? o["Actor"] : {}) as Record<
    string,
    unknown
  >;
  const attrs = (
    typeof actor["Attributes"] === "object" && actor["Attributes"] !== null ? actor["Attributes"] : {}
  ) as Record<string, unknown>;
  const action =
    typeof o["Action"] === "string" ? o["Action"] : typeof o["status"] === "string" ? o["status"] : "";
  const id = typeof actor["ID"] === "string" ? actor["ID"] : typeof o["id"] === "string" ? o["id"] : "";
  if (action === "" || id === "") return null;
  const name = typeof attrs["name"] === "string" ? attrs["name"] : undefined;
  const exitCode = typeof attrs["exitCode"] === "string" ? attrs["exitCode"] : undefined;
  // "exec_start: sh -c ..." and "health_status: healthy" carry their detail after a colon.
  return { action: action.split(":")[0]!.trim(), id, name, exitCode };
}

export interface EventWatcherOptions {
  readonly docker: Docker;
  readonly display: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly onEvent: (e: ContainerEvent) => void;
  /** After every reconnection (not the first open): re-read what may have changed meanwhile. */
  readonly onReconnect: () => void;
  readonly reconnectInitialMs?: number;
  readonly reconnectMaxMs?: number;
  /**
   * How long the engine may take to answer the events request (its headers;
   * the stream itself stays open for hours): a hung engine fails the first
   * open, or sends a reconnection round to its back-off, instead of holding it.
   */
  readonly openTimeoutMs?: number;
}

export class EventWatcher {
  private stream: NodeJS.ReadableStream | null = null;
  private timer: Timer | null = null;
  private closed = false;
  private delay: number;
  private readonly initialMs: number;
  private readonly maxMs: number;
  /** Counts, for tests and logs. */
  readonly stats = { opens: 0, reconnects: 0 };

  constructor(private readonly o: EventWatcherOptions) {
    this.initialMs = o.reconnectInitialMs ?? 100;
    this.maxMs = o.reconnectMaxMs ?? 5000;
    this.delay = this.initialMs;
  }

  /** The first open: fails at once, so an engine that is not there is reported at start-up. */
  async start(): Promise<void> {
    await this.open();
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = null;
    const s = this.stream as (NodeJS.ReadableStream & { destroy?: () => void }) | null;
    this.stream = null;
    s?.destroy?.();
  }

  private async open(): Promise<void> {
    const abort = new AbortController();
    const timer =
      this.o.openTimeoutMs === undefined
        ? null
        : this.o.clock.setTimer(this.o.openTimeoutMs, () =>
            abort.abort(new Error(`no answer to the events request for ${this.o.openTimeoutMs! / 1000} s`)),
          );
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.o.docker.getEvents({ filters: { type: ["container"] }, abortSignal: abort.signal });
    } catch (err) {
      throw abort.signal.aborted ? (abort.signal.reason as Error) : err;
    } finally {
      timer?.cancel();
    }
    if (this.closed) {
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      return;
    }
    this.stream = stream;
    this.stats.opens++;
    let buffered = "";
    stream.on("data", (chunk: Buffer | string) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line === "") continue;
        const e = parseEvent(line);
        if (e !== null) this.o.onEvent(e);
      }
      // A line never grows without end: an engine sending junk without newlines is cut off.
      if (buffered.length > 1 << 20) buffered = "";
    });
    let ended = false;
    const onEnd = (why: string): void => {
      if (ended) return;
      ended = true;
      if (this.stream !== stream || this.closed) return;
      this.stream = null;
      this.o.log.warn(`docker: lost the event stream of ${this.o.display} (${why}); reconnecting`);
      this.delay = this.initialMs;
      this.schedule();
    };
    stream.on("end", () => onEnd("the engine closed it"));
    stream.on("close", () => onEnd("closed"));
    stream.on("error", (err: Error) => onEnd(err.message));
  }

  private schedule(): void {
    if (this.closed) return;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, this.maxMs);
    this.timer = this.o.clock.setTimer(delay, () => {
      this.timer = null;
      if (this.closed) return;
      this.open().then(
        () => {
          if (this.closed) return;
          this.stats.reconnects++;
          this.o.log.info(`docker: event stream of ${this.o.display} is back`);
          this.o.onReconnect();
        },
        (err: Error) => {
          this.o.log.debug(`docker: reconnecting to ${this.o.display} failed: ${err.message}`);
          this.schedule();
        },
      );
    });
  }
}
