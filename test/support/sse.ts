/**
 * A plain HTTP client of GET /events (Server-Sent Events), as a script or a
 * proxy would read it: no EventSource, just the text/event-stream lines
 * parsed into events (`id:` and `data:`), with comments kept apart.
 */
import { request, type ClientRequest, type IncomingMessage } from "node:http";

export interface SseEvent {
  /** The `id:` line, if any. */
  id: string | null;
  /** `data:` parsed as JSON. */
  data: { type: string; id?: number; time?: string; [key: string]: unknown };
}

export interface SseClient {
  readonly status: number;
  readonly headers: IncomingMessage["headers"];
  /** Every event so far, in arrival order. */
  readonly events: SseEvent[];
  /** Every comment line (": ...") so far. */
  readonly comments: string[];
  /** Resolves with the events once `check` says enough have arrived, or rejects after `timeoutMs`. */
  waitFor(check: (events: SseEvent[]) => boolean, timeoutMs?: number, what?: string): Promise<SseEvent[]>;
  /** Resolves when the server ends the stream. */
  readonly ended: Promise<void>;
  close(): void;
}

export function openEvents(
  port: number,
  { path = "/events", headers = {} }: { path?: string; headers?: Record<string, string> } = {},
): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    let req: ClientRequest;
    // eslint-disable-next-line prefer-const
    req = request({ host: "127.0.0.1", port, path, headers, agent: false }, (res) => {
      const events: SseEvent[] = [];
      const comments: string[] = [];
      const waiters = new Set<() => void>();
      let buffer = "";
      let id: string | null = null;
      let data: string[] = [];
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffer += chunk;
        let nl: number;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl).replace(/\r$/, "");
          buffer = buffer.slice(nl + 1);
          if (line === "") {
            if (data.length > 0) events.push({ id, data: JSON.parse(data.join("\n")) as SseEvent["data"] });
            id = null;
            data = [];
          } else if (line.startsWith(":")) comments.push(line.slice(1).trim());
          else if (line.startsWith("id:")) id = line.slice(3).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        for (const w of [...waiters]) w();
      });
      const ended = new Promise<void>((done) => {
        res.on("end", done);
        res.on("close", done);
        res.on("error", () => done());
      });
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        comments,
        ended,
        waitFor(check, timeoutMs = 10_000, what = "events") {
          if (check(events)) return Promise.resolve(events);
          return new Promise((ok, fail) => {
            const timer = setTimeout(() => {
              waiters.delete(poll);
              fail(
                new Error(`timed out waiting for ${what}; got ${JSON.stringify(events.map((e) => e.data))}`),
              );
            }, timeoutMs);
            const poll = (): void => {
              if (!check(events)) return;
              clearTimeout(timer);
              waiters.delete(poll);
              ok(events);
            };
            waiters.add(poll);
          });
        },
        close: () => req.destroy(),
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/** The events' `type` and `vm` (when there is one), e.g. "vm.state www off>starting", for comparing orders. */
export function describeEvents(events: readonly SseEvent[], types?: readonly string[]): string[] {
  return events
    .map((e) => e.data)
    .filter((d) => types === undefined || types.includes(d.type))
    .map((d) => {
      if (d.type === "vm.state") return `vm.state ${String(d.vm)} ${String(d.from)}>${String(d.to)}`;
      if (d.type === "vm.stopped") return `vm.stopped ${String(d.vm)} ${String(d.reason)}`;
      if (d.type === "vm.failed") return `vm.failed ${String(d.vm)} ${String(d.during)}`;
      return typeof d.vm === "string" ? `${d.type} ${d.vm}` : d.type;
    });
}
