/**
 * The events jitsu reports (src/events/README.md has the schema of each). One
 * line per type in `EventFields`: its `type` and the fields it carries. The
 * bus adds `id` and `time` to every event.
 */

/** A VM's state as the summoner sees it (src/summoner vm.ts `SummonerState`). */
export type EventVmState = "off" | "starting" | "ready" | "stopping" | "suspended" | "paused" | "failed";

/** Why a VM was stopped or found stopped. */
export type StopReason = "idle" | "eviction" | "admin" | "backend" | "shutdown";

/**
 * Every event type and its fields. To add a type, add one line here (the
 * `type` string, by convention `area.what`, and its fields) and emit it with
 * `bus.emit({ type: "...", ... })`; the stream, the log lines and the page
 * (which ignores types it does not know) need nothing more.
 */
export interface EventFields {
  "vm.state": { vm: string; from: EventVmState; to: EventVmState };
  "vm.started": {
    vm: string;
    how: "start" | "resume" | "unpause" | "adopt";
    durationMs: number;
    backendMs: number;
  };
  "vm.stopped": {
    vm: string;
    reason: StopReason;
    mode: string | null;
    durationMs: number | null;
    to: EventVmState;
  };
  "vm.failed": { vm: string; during: "start" | "stop" | "run"; error: string; retryInMs: number | null };
  "config.reloaded": {
    ok: boolean;
    file: string;
    vms: number;
    added: number;
    changed: number;
    removed: number;
    error: string | null;
  };
  "hold.reset": {
    vm: string;
    why: "timeout" | "failed" | "unreachable";
    error: string;
    /** Connections reset for this VM since the last hold.reset of it (at most one every 10 s per VM). */
    connections: number;
  };
  stats: StatsFields;
  "stream.reset": { reason: string };
}

/** `stats`: every sample interval, the DNS totals and the VMs whose requests changed since the last one. */
export interface StatsFields {
  /** Seconds between samples. */
  intervalSeconds: number;
  /** DNS queries answered per second over the last interval. */
  queriesPerSecond: number;
  /** Totals since start-up. */
  dns: Readonly<Record<string, number>>;
  /** `[label, totalRequests, lastRequest (ms since the epoch)]` of each VM asked for since the last sample. */
  requests: readonly (readonly [string, number, number | null])[];
}

export type EventType = keyof EventFields;

/** An event as given to `emit`: its type and fields. */
export type EventInput = { [K in EventType]: { type: K } & EventFields[K] }[EventType];

/** An event as the bus hands it out: with its sequence number and time (ISO 8601). */
export type JitsuEvent = EventInput & { readonly id: number; readonly time: string };

/** Events that are not also log lines (they are frequent, or about the stream itself). */
export const NOT_LOGGED: ReadonlySet<EventType> = new Set<EventType>(["stats", "stream.reset"]);
