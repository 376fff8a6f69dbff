/**
 * The event bus: the summoner, the config reloader and the status sampler
 * emit; /events (src/http) and anything else subscribe. Each event gets the
 * next id and a time, is kept in a ring of the last `keep` (so a client that
 * reconnects with Last-Event-ID gets what it missed), and is serialised once.
 */
import type { EventInput, JitsuEvent } from "./types.js";

export type EventListener = (event: JitsuEvent, json: string) => void;

/** How many recent events are kept for clients that reconnect (Last-Event-ID). */
export const EVENTS_KEPT = 1024;

interface Kept {
  readonly event: JitsuEvent;
  readonly json: string;
}

export class EventBus {
  private nextId = 1;
  private readonly ring: (Kept | undefined)[];
  private readonly listeners = new Set<EventListener>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly keep = EVENTS_KEPT,
  ) {
    this.ring = new Array<Kept | undefined>(keep);
  }

  /** Gives `input` an id and a time, keeps it, and hands it to every listener (a throwing one is skipped). */
  emit(input: EventInput): JitsuEvent {
    const event = { ...input, id: this.nextId++, time: new Date(this.now()).toISOString() } as JitsuEvent;
    // `type`, `id` and `time` first, for people reading the stream.
    const { type, id, time, ...fields } = event;
    const json = JSON.stringify({ type, id, time, ...fields });
    this.ring[event.id % this.keep] = { event, json };
    for (const listener of this.listeners) {
      try {
        listener(event, json);
      } catch {
        // A listener's failure is its own (the HTTP stream drops its client); the others still hear.
      }
    }
    return event;
  }

  /** Calls `listener` for every event from now on; returns the function that ends it. */
  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  /** The id the next event will have. */
  get next(): number {
    return this.nextId;
  }

  /**
   * The kept events after `id`, oldest first; null when some of them are no
   * longer kept (or `id` is from the future: another process's ids).
   */
  since(id: number): { event: JitsuEvent; json: string }[] | null {
    if (!Number.isInteger(id) || id < 0 || id >= this.nextId) return null;
    if (this.nextId - 1 - id > this.keep) return null;
    const out: Kept[] = [];
    for (let i = id + 1; i < this.nextId; i++) {
      const kept = this.ring[i % this.keep];
      if (kept === undefined || kept.event.id !== i) return null;
      out.push(kept);
    }
    return out;
  }
}
