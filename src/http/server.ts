/**
 * `--http ADDR:PORT`: the status page at / (page-files.ts), GET /status
 * (JSON), GET /events (Server-Sent Events, event-stream.ts), GET /history
 * (the page's charts), GET /metrics (Prometheus text), GET /healthz, and,
 * only with `--http-token`, POST /vms/NAME/start and /vms/NAME/stop for
 * requests bearing `Authorization: Bearer TOKEN`. Binds exactly the address
 * given. See README.md.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { promisify } from "node:util";
import { gzip } from "node:zlib";
import type { AddressInfo } from "node:net";
import { BackendError, StartTimeoutError, describeError } from "../errors/index.js";
import type { EventBus } from "../events/index.js";
import type { Logger } from "../log/index.js";
import { EventStream } from "./event-stream.js";
import { dnsTotals, type StatsHistory } from "./history.js";
import type { JitsuMetrics } from "./metrics.js";
import { PAGE_CSP, loadPageFiles, type PageFile } from "./page-files.js";
import type {
  DnsCountersView,
  DnsStatusView,
  HoldView,
  HostStatusView,
  SharedView,
  StoreHealthView,
  SummonerView,
  VmStatusView,
} from "./view.js";

export interface StatusServerOptions {
  readonly summoner: SummonerView;
  readonly metrics: JitsuMetrics;
  readonly log: Logger;
  /** Enables the admin endpoints; compared in constant time. */
  readonly token?: string | undefined;
  readonly version?: string;
  /**
   * Run before /status and /metrics are read: with --workers, collects the
   * workers' request counts and DNS counters, so a scrape sees them all.
   */
  readonly refresh?: () => Promise<void>;
  /** The DNS access lists and REFUSED counts for /status (read after refresh). */
  readonly dns?: () => DnsStatusView;
  /** Held connections (hold= ports): a `hold` section in /status. */
  readonly hold?: HoldView;
  /** Open connections beyond this are closed as they arrive (default `HTTP_MAX_CONNECTIONS`). */
  readonly maxConnections?: number;
  /** A connection that has not sent a request's headers within this is closed with 408 (default `HTTP_HEADERS_TIMEOUT_MS`). */
  readonly headersTimeoutMs?: number;
  /** GET /events streams this bus; without it /events answers 404. */
  readonly events?: EventBus;
  /** /events limits (tests): streams open at once, bytes buffered for one client, keep-alive period. */
  readonly eventStream?: { maxClients?: number; maxBufferBytes?: number; keepAliveMs?: number };
  /** GET /history (the page's charts); without it /history answers 404. */
  readonly history?: StatsHistory;
  /** The DNS counters for /status `dns.counters` (the page's counters). */
  readonly counters?: DnsCountersView;
  /** Where the VMs run: `-c` (its password hidden), or null for this host (/status `host`). */
  readonly host?: string | null;
  /** The backend's connections, one per host (/status `hosts`); absent for a local backend. */
  readonly hosts?: () => readonly HostStatusView[];
}

/**
 * Limits that keep a client that connects and never finishes from locking
 * others out (slowloris): at most this many connections at once (a status
 * endpoint has a handful of scrapers), and headers within 10 s.
 */
export const HTTP_MAX_CONNECTIONS = 64;
export const HTTP_HEADERS_TIMEOUT_MS = 10_000;

export class StatusServer {
  private readonly server: Server;
  private readonly opts: StatusServerOptions;
  private readonly tokenDigest: Buffer | null;
  private readonly startedAt = Date.now();
  private shuttingDown = false;
  private readonly stream: EventStream | null;
  private readonly page = loadPageFiles();

  constructor(opts: StatusServerOptions) {
    this.opts = opts;
    this.tokenDigest = opts.token === undefined || opts.token === "" ? null : digest(opts.token);
    const headersTimeout = opts.headersTimeoutMs ?? HTTP_HEADERS_TIMEOUT_MS;
    // Node checks the timeouts below every connectionsCheckingInterval (30 s by default, so a
    // slow client would hold its connection for up to 40 s): check often enough to keep the limit.
    const checkEvery = Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4)));
    this.server = createServer({ connectionsCheckingInterval: checkEvery }, (req, res) => {
      this.route(req, res).catch((err: unknown) => {
        opts.log.error(`HTTP ${req.method} ${req.url}: ${describeError(err)}`);
        if (!res.headersSent) send(res, 500, { error: "internal error" });
        else res.destroy();
      });
    });
    // Both count from the connection's first byte (or its opening, for a silent one).
    this.server.headersTimeout = headersTimeout;
    this.server.requestTimeout = Math.max(30_000, headersTimeout);
    this.server.maxConnections = opts.maxConnections ?? HTTP_MAX_CONNECTIONS;
    this.server.keepAliveTimeout = 5_000;
    this.stream =
      opts.events === undefined
        ? null
        : new EventStream({ bus: opts.events, log: opts.log, ...opts.eventStream });
  }

  /** Open /events streams. */
  get eventClients(): number {
    return this.stream?.size ?? 0;
  }

  /** Listens on exactly host:port; port 0 picks a free one (see address()). */
  listen(host: string, port: number): Promise<void> {
    return this.listenWith({ host, port, exclusive: true });
  }

  /** Socket activation: serves on a listening TCP socket systemd passed (FileDescriptorName=http). */
  adopt(fd: number): Promise<void> {
    return this.listenWith({ fd });
  }

  private listenWith(options: {
    host?: string;
    port?: number;
    exclusive?: boolean;
    fd?: number;
  }): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once("error", onError);
      this.server.listen(options, () => {
        this.server.off("error", onError);
        this.server.on("error", (err) => this.opts.log.error(`HTTP server: ${describeError(err)}`));
        resolve();
      });
    });
  }

  address(): { host: string; port: number } {
    const a = this.server.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  /** /healthz answers 503 from now on (for load balancers while jitsu drains). */
  markShuttingDown(): void {
    this.shuttingDown = true;
  }

  close(): Promise<void> {
    this.shuttingDown = true;
    this.stream?.close();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume(); // no endpoint reads a body; drain it
    const url = requestUrl(req.url);
    if (url === null) return send(res, 400, { error: "malformed request target" });
    const path = url.pathname;
    const method = req.method ?? "GET";
    const file = this.page.get(path);
    if (file !== undefined) {
      if (method !== "GET" && method !== "HEAD") return sendMethodNotAllowed(res, "GET, HEAD");
      return sendFile(req, res, file, method);
    }
    if (path === "/events" || path === "/history") {
      if (method !== "GET" && method !== "HEAD") return sendMethodNotAllowed(res, "GET, HEAD");
      if (path === "/history") {
        if (this.opts.history === undefined) return send(res, 404, { error: "no history kept" });
        return send(res, 200, this.opts.history.body(), method, false);
      }
      if (this.stream === null) return send(res, 404, { error: "no event stream" });
      if (method === "HEAD") {
        res.writeHead(200, {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-store",
        });
        return void res.end();
      }
      return this.stream.open(req, res, url);
    }
    if (path === "/status" || path === "/metrics" || path === "/healthz") {
      if (method !== "GET" && method !== "HEAD") return sendMethodNotAllowed(res, "GET, HEAD");
      if (path === "/healthz") {
        return this.shuttingDown
          ? send(res, 503, { status: "shutting down" }, method)
          : send(res, 200, { status: "ok" }, method);
      }
      if (this.opts.refresh !== undefined) await this.opts.refresh();
      if (path === "/status") return this.sendStatus(req, res, url, method);
      const text = await this.opts.metrics.metrics();
      res.writeHead(200, { "content-type": this.opts.metrics.contentType, "cache-control": "no-store" });
      res.end(method === "HEAD" ? undefined : text);
      return;
    }
    const admin = /^\/vms\/([^/]+)\/(start|stop)$/.exec(path);
    if (admin !== null) {
      if (method !== "POST") return sendMethodNotAllowed(res, "POST");
      const name = decodePathSegment(admin[1]!);
      if (name === null) {
        this.opts.log.debug(`HTTP ${method} ${path}: malformed percent-encoding, answered 400`);
        return send(res, 400, { error: "malformed percent-encoding in the VM name" });
      }
      return this.admin(req, res, name, admin[2] as "start" | "stop");
    }
    send(res, 404, { error: `no such endpoint: ${path} (try /, /status, /events, /metrics, /healthz)` });
  }

  private async admin(
    req: IncomingMessage,
    res: ServerResponse,
    name: string,
    action: "start" | "stop",
  ): Promise<void> {
    if (this.tokenDigest === null) {
      return send(res, 403, {
        error: "admin endpoints are disabled; start jitsu with --http-token to enable them",
      });
    }
    const auth = req.headers.authorization;
    const m = auth === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth);
    if (m === null) {
      res.setHeader("www-authenticate", 'Bearer realm="jitsu"');
      return send(res, 401, { error: "missing bearer token (Authorization: Bearer TOKEN)" });
    }
    // Both sides hashed to 32 bytes, so the comparison takes the same time whatever the length.
    if (!timingSafeEqual(digest(m[1]!), this.tokenDigest)) {
      res.setHeader("www-authenticate", 'Bearer realm="jitsu", error="invalid_token"');
      return send(res, 403, { error: "wrong token" });
    }
    const vm = findVm(this.opts.summoner.status(), name);
    if (vm === undefined)
      return send(res, 404, { error: `no VM '${name}' (give its name, uuid or a DNS name)` });
    const who = req.socket.remoteAddress ?? "?";
    this.opts.log.info(`HTTP: ${action} of VM '${vm.label}' requested by ${who}`);
    try {
      if (action === "start") await this.opts.summoner.startVm(vm.label);
      else await this.opts.summoner.stopVm(vm.label);
    } catch (err) {
      const status = err instanceof StartTimeoutError ? 504 : err instanceof BackendError ? 502 : 500;
      return send(res, status, { error: describeError(err), vm: vm.label });
    }
    const after = findVm(this.opts.summoner.status(), vm.label);
    send(res, 200, { vm: vm.label, state: after?.state ?? "unknown" });
  }

  /**
   * /status; `?compact`: on one line (indented, half of it is spaces); `?fields=a,b`: only those
   * fields of each VM (the page reads 10,000 VMs); gzip when the client takes it and it is large.
   */
  private async sendStatus(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    method: string,
  ): Promise<void> {
    const body = this.statusBody() as { vms: Record<string, unknown>[] };
    const fields = url.searchParams.get("fields");
    if (fields !== null) {
      const keep = fields.split(",").filter((f) => f !== "");
      body.vms = body.vms.map((vm) => Object.fromEntries(keep.filter((f) => f in vm).map((f) => [f, vm[f]])));
    }
    const compact = url.searchParams.has("compact");
    const text = `${compact ? JSON.stringify(body) : JSON.stringify(body, null, 2)}\n`;
    const headers: Record<string, string | number> = {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
      vary: "accept-encoding",
    };
    const accepts = /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
    if (!accepts || text.length < GZIP_ABOVE_BYTES) {
      res.writeHead(200, { ...headers, "content-length": Buffer.byteLength(text) });
      return void res.end(method === "HEAD" ? undefined : text);
    }
    // In the thread pool, at the fastest level: 3.7 MB of 10,000 VMs becomes ~0.2 MB.
    const zipped = await gzipAsync(text, { level: 1 });
    res.writeHead(200, { ...headers, "content-encoding": "gzip", "content-length": zipped.length });
    res.end(method === "HEAD" ? undefined : zipped);
  }

  private statusBody(): unknown {
    const now = Date.now();
    const host = this.opts.host ?? null;
    const dns = this.opts.dns?.();
    const counters = this.opts.counters === undefined ? {} : { counters: dnsTotals(this.opts.counters) };
    return {
      version: this.opts.version,
      now: new Date(now).toISOString(),
      uptimeSeconds: Math.round((now - this.startedAt) / 1000),
      admin: this.tokenDigest !== null,
      // The last event this body reflects: a client following /events applies only later ones.
      lastEventId: this.opts.events === undefined ? null : this.opts.events.next - 1,
      admission: this.opts.summoner.admissionStatus?.() ?? null,
      shared: sharedBody(this.opts.summoner.sharedStatus?.() ?? null),
      groups: (this.opts.summoner.groupStatus?.() ?? []).map((group) => ({
        name: group.name,
        state: group.state,
        members: group.members,
        after: group.after,
        lastRequest: iso(group.lastRequest),
        lastError: group.lastError,
      })),
      store: storeBody(this.opts.summoner.storeHealth?.()),
      vms: this.opts.summoner.status().map((vm) => ({
        label: vm.label,
        uuid: vm.uuid ?? null,
        name: vm.name ?? null,
        state: vm.state,
        dns: vm.dns,
        ips: vm.ips,
        ttl: vm.ttlSeconds,
        responseDelay: vm.responseDelay,
        useSynjitsu: vm.useSynjitsu,
        stopMode: vm.stopMode,
        backendRef: vm.backendRef,
        startedAt: iso(vm.startedAt),
        totalStarts: vm.totalStarts,
        totalRequests: vm.totalRequests,
        lastRequest: iso(vm.lastRequest),
        lastError: vm.lastError,
        group: vm.group ?? null,
        after: vm.after ?? [],
        backend: vm.backend ?? null,
        host: vm.host ?? host,
        stateSince: iso(vm.stateSince ?? null),
        idleStopAt: iso(vm.idleStopAt ?? null),
        failures: vm.failures ?? 0,
        nextTry: iso(vm.nextTryAt ?? null),
        givenUp: vm.givenUp ?? false,
        openConnections: vm.openConnections ?? 0,
        lastConnection: iso(vm.lastConnection ?? null),
      })),
      ...(dns === undefined && this.opts.counters === undefined ? {} : { dns: { ...dns, ...counters } }),
      ...(this.opts.hold === undefined ? {} : { hold: this.opts.hold.status() }),
      hosts: (this.opts.hosts?.() ?? []).map((h) => ({
        backend: h.backend,
        uri: h.uri,
        default: h.default,
        state: h.state,
        since: iso(h.since),
        lastError: h.lastError,
        vms: h.vms,
      })),
    };
  }
}

/** /status "store": null without a store. */
function storeBody(health: StoreHealthView | undefined): unknown {
  if (health === undefined) return null;
  return {
    ok: health.ok,
    failedWrites: health.failedWrites,
    failingSince: iso(health.failingSince),
    lastError: health.lastError,
  };
}

/** A request target (origin or absolute form) as a URL, or null if it cannot be parsed. */
function requestUrl(target: string | undefined): URL | null {
  try {
    return new URL(target ?? "/", "http://localhost");
  } catch {
    return null; // e.g. "//[" (a bad authority): the client's mistake, not ours
  }
}

/** decodeURIComponent, or null for a malformed escape ("%ZZ", a lone "%", bad UTF-8): a 400, not a 500. */
function decodePathSegment(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

function findVm(vms: readonly VmStatusView[], name: string): VmStatusView | undefined {
  const lower = name.toLowerCase().replace(/\.$/, "");
  return (
    vms.find((vm) => vm.label === name) ??
    vms.find((vm) => vm.name === name || vm.uuid === name) ??
    vms.find((vm) => vm.dns.includes(lower))
  );
}

function digest(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

const gzipAsync = promisify(gzip);
/** /status bodies above this are sent gzipped to clients that take it. */
const GZIP_ABOVE_BYTES = 64 * 1024;

function send(res: ServerResponse, status: number, body: unknown, method = "GET", indent = true): void {
  const text = `${indent ? JSON.stringify(body, null, 2) : JSON.stringify(body)}\n`;
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(method === "HEAD" ? undefined : text);
}

function sendMethodNotAllowed(res: ServerResponse, allow: string): void {
  res.setHeader("allow", allow);
  send(res, 405, { error: `method not allowed (use ${allow})` });
}

function sendFile(req: IncomingMessage, res: ServerResponse, file: PageFile, method: string): void {
  const headers = {
    "content-type": file.contentType,
    etag: file.etag,
    "cache-control": "no-cache",
    "content-security-policy": PAGE_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  };
  if (req.headers["if-none-match"] === file.etag) {
    res.writeHead(304, headers);
    return void res.end();
  }
  res.writeHead(200, { ...headers, "content-length": file.body.length });
  res.end(method === "HEAD" ? undefined : file.body);
}

/** /status "shared": null for an instance alone (no --etcd). */
function sharedBody(shared: SharedView | null): unknown {
  if (shared === null) return null;
  return { ...shared, lastAnswer: iso(shared.lastAnswer) };
}
