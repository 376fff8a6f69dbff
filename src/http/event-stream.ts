/**
 * GET /events: the event bus (src/events) as Server-Sent Events. Each event is
 * one `id:` and one `data:` line (the JSON object, with its `type`); a comment
 * every `keepAliveMs` keeps proxies and idle timers from closing the stream. A
 * client that reconnects with `Last-Event-ID` (or `?lastEventId=`) first gets
 * the kept events it missed, or a `stream.reset` event when they are gone (it
 * should read /status again). A client that does not read is dropped once
 * `maxBufferBytes` wait for it, rather than buffered without bound; at most
 * `maxClients` streams are open at once, so that streams never take every
 * connection the server allows (/status and the admin endpoints stay usable).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { EventBus, JitsuEvent } from "../events/index.js";
import type { Logger } from "../log/index.js";

export const EVENTS_MAX_CLIENTS = 16;
export const EVENTS_MAX_BUFFER_BYTES = 1 << 20;
export const EVENTS_KEEPALIVE_MS = 15_000;
/** What an EventSource waits before it reconnects (the `retry:` line). */
const RETRY_MS = 2000;

export interface EventStreamOptions {
  readonly bus: EventBus;
  readonly log: Logger;
  readonly maxClients?: number;
  readonly maxBufferBytes?: number;
  readonly keepAliveMs?: number;
}

interface Client {
  readonly res: ServerResponse;
  readonly who: string;
  readonly unsubscribe: () => void;
}

export class EventStream {
  private readonly clients = new Set<Client>();
  private readonly maxClients: number;
  private readonly maxBufferBytes: number;
  private readonly keepAlive: ReturnType<typeof setInterval>;
  /** Slow clients dropped since start-up. */
  dropped = 0;

  constructor(private readonly opts: EventStreamOptions) {
    this.maxClients = opts.maxClients ?? EVENTS_MAX_CLIENTS;
    this.maxBufferBytes = opts.maxBufferBytes ?? EVENTS_MAX_BUFFER_BYTES;
    this.keepAlive = setInterval(() => {
      for (const client of this.clients) this.write(client, ": keep-alive\n\n");
    }, opts.keepAliveMs ?? EVENTS_KEEPALIVE_MS);
    this.keepAlive.unref();
  }

  get size(): number {
    return this.clients.size;
  }

  /** Serves one stream; `url` is the request's parsed target. */
  open(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const who = `${req.socket.remoteAddress ?? "?"}:${req.socket.remotePort ?? "?"}`;
    if (this.clients.size >= this.maxClients) {
      const body = `${JSON.stringify({ error: `too many /events streams open (${this.maxClients}); try again later` })}\n`;
      res.writeHead(503, {
        "content-type": "application/json; charset=utf-8",
        "retry-after": "5",
        "cache-control": "no-store",
      });
      res.end(body);
      return;
    }
    const types = parseTypes(url.searchParams.get("types"));
    const lastHeader = req.headers["last-event-id"] ?? url.searchParams.get("lastEventId");
    const last =
      typeof lastHeader === "string" && /^\d+$/.test(lastHeader.trim()) ? Number(lastHeader) : null;

    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
      // nginx and similar proxies: pass each event on at once.
      "x-accel-buffering": "no",
    });
    res.socket?.setNoDelay(true);
    res.write(`retry: ${RETRY_MS}\n: jitsu events; next id ${this.opts.bus.next}\n\n`);

    const wanted = (event: JitsuEvent): boolean =>
      types === null || types.some((t) => matches(t, event.type));
    const client: Client = {
      res,
      who,
      unsubscribe: this.opts.bus.subscribe((event, json) => {
        if (wanted(event)) this.write(client, frame(event.id, json));
      }),
    };
    this.clients.add(client);
    res.on("close", () => this.forget(client));

    if (last !== null) {
      const missed = this.opts.bus.since(last);
      if (missed === null) {
        const reset = JSON.stringify({
          type: "stream.reset",
          reason: `events after ${last} are no longer kept; read /status again`,
        });
        this.write(client, `data: ${reset}\n\n`);
      } else {
        for (const { event, json } of missed) if (wanted(event)) this.write(client, frame(event.id, json));
      }
    }
  }

  /** Ends every stream (shutdown). */
  close(): void {
    clearInterval(this.keepAlive);
    for (const client of [...this.clients]) {
      this.forget(client);
      client.res.end();
    }
  }

  private write(client: Client, text: string): void {
    const res = client.res;
    if (res.destroyed || !this.clients.has(client)) return;
    // What the socket has not taken yet: beyond the bound, the client is not reading.
    if (res.writableLength + text.length > this.maxBufferBytes) {
      this.dropped++;
      this.opts.log.warn(
        `Dropped the /events stream of ${client.who}: it did not read ${res.writableLength} bytes of events`,
      );
      this.forget(client);
      res.destroy();
      return;
    }
    res.write(text);
  }

  private forget(client: Client): void {
    if (this.clients.delete(client)) client.unsubscribe();
  }
}

function frame(id: number, json: string): string {
  return `id: ${id}\ndata: ${json}\n\n`;
}

/** `?types=vm,config.reloaded`: a type, or a prefix of types ("vm" for every "vm.*"); null for all. */
function parseTypes(param: string | null): string[] | null {
  if (param === null || param.trim() === "") return null;
  return param
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "");
}

function matches(filter: string, type: string): boolean {
  return type === filter || type.startsWith(`${filter}.`);
}
