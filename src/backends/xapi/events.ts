/**
 * Watches VM power-state changes with event.from (XenAPI class "event":
 * event.from(session, classes, token, timeout) returns an event batch
 * {events, valid_ref_counts, token}; each event has class, operation
 * (add | mod | del), ref and snapshot, the object's record). The first call,
 * with an empty token, returns every VM as it is now; later calls block until
 * something changes or `timeout` seconds pass. EVENTS_LOST (the token is too
 * old) starts again from an empty token.
 */
import type { Clock } from "../../clock/index.js";
import type { Logger } from "../../log/index.js";
import { XenApiFailure, type XenApiSession } from "./session.js";
import { XmlRpcDouble, isStruct } from "./xmlrpc.js";

export interface VmPowerChange {
  readonly uuid: string;
  /** XenAPI power_state (Halted, Paused, Running, Suspended), or null when the VM was deleted. */
  readonly powerState: string | null;
}

const POLL_SECONDS = 30;
const MAX_BACKOFF_MS = 30_000;

export class XapiEventWatcher {
  private stopped = false;
  private readonly known = new Map<string, string>(); // uuid -> last power_state
  private readonly uuidByRef = new Map<string, string>();
  private running: Promise<void> | null = null;

  constructor(
    private readonly session: XenApiSession,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly onChange: (change: VmPowerChange) => void,
  ) {}

  start(): void {
    this.running ??= this.loop();
  }

  /** No further calls; the one in flight ends when the session's transport closes. */
  stop(): void {
    this.stopped = true;
  }

  /** Resolves when the loop has ended (after stop() and the transport's close). */
  finished(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  private async loop(): Promise<void> {
    let token = "";
    let backoff = 500;
    while (!this.stopped) {
      try {
        const batch = await this.session.call("event.from", ["VM"], token, new XmlRpcDouble(POLL_SECONDS));
        if (!isStruct(batch) || typeof batch["token"] !== "string" || !Array.isArray(batch["events"])) {
          throw new Error("bad reply to event.from: expected {events, token}");
        }
        token = batch["token"];
        for (const ev of batch["events"]) this.apply(ev);
        backoff = 500;
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof XenApiFailure && err.code === "EVENTS_LOST") {
          token = "";
          continue;
        }
        this.log.warn(`XAPI event watch failed (${(err as Error).message}); retrying in ${backoff / 1000} s`);
        await this.clock.sleep(backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private apply(ev: unknown): void {
    if (!isStruct(ev as never)) return;
    const e = ev as Record<string, unknown>;
    if (String(e["class"]).toLowerCase() !== "vm" || typeof e["ref"] !== "string") return;
    const snapshot = e["snapshot"];
    if (e["operation"] === "del") {
      const uuid = this.uuidByRef.get(e["ref"]);
      if (uuid === undefined) return;
      this.uuidByRef.delete(e["ref"]);
      this.known.delete(uuid);
      this.onChange({ uuid, powerState: null });
      return;
    }
    if (!isStruct(snapshot as never)) return;
    const record = snapshot as Record<string, unknown>;
    const uuid = typeof record["uuid"] === "string" ? record["uuid"].toLowerCase() : undefined;
    const power = record["power_state"];
    if (uuid === undefined || typeof power !== "string") return;
    this.uuidByRef.set(e["ref"], uuid);
    const before = this.known.get(uuid);
    this.known.set(uuid, power);
    // The first snapshot only learns; a later one (after EVENTS_LOST) reports what changed meanwhile.
    if (before !== undefined && before !== power) this.onChange({ uuid, powerState: power });
  }
}
