/**
 * A DNS worker (--workers N): its own ZoneIndex, Forwarder and DnsServer on
 * the primary's shared UDP and TCP handles, with a RemoteSummoner in place of
 * the Summoner. It owns nothing else: the primary starts, stops and counts
 * the VMs, and drives this process's life (close, reload).
 */
import { describeError } from "../errors/index.js";
import { ClientAccess, DnsServer, Forwarder, LocalClientSlots, ZoneIndex } from "../dns/index.js";
import { createLogger, silentLogger, type Logger } from "../log/index.js";
import { parseToWorker, type InitMessage, type ToPrimary, type ToWorker } from "./protocol.js";
import { RemoteClientSlots } from "./remote-client-slots.js";
import { RemoteSummoner } from "./remote-summoner.js";

/** How often a worker reports its request counts and DNS counters unasked. */
export const REPORT_INTERVAL_MS = 1000;

/** Runs in a process forked by node:cluster; returns once the primary has been greeted. */
export function runWorker(): void {
  let log: Logger | null = null;
  let serving: Serving | null = null;
  /** How this worker names itself in its log lines ("DNS worker 2" once it knows its index). */
  let me = "DNS worker";
  const send = (msg: ToPrimary, then?: () => void): void => {
    if (!process.connected || process.send === undefined) {
      then?.();
      return;
    }
    process.send(msg, undefined, {}, (err) => {
      if (err !== null && err !== undefined) log?.debug(`IPC to the primary: ${describeError(err)}`);
      then?.();
    });
  };

  // The primary decides when we stop: Ctrl-C in a terminal signals the whole
  // process group, and we must keep answering until the primary says close.
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => undefined);
  // The primary is gone: nobody can summon a VM or receive our counts.
  process.on("disconnect", () => process.exit(1));
  process.on("uncaughtException", (err) =>
    (log ?? fallbackLog()).error(`${me}: unexpected error (continuing): ${describeError(err)}`),
  );
  process.on("unhandledRejection", (err) =>
    (log ?? fallbackLog()).error(`${me}: unexpected rejection (continuing): ${describeError(err)}`),
  );

  process.on("message", (raw: unknown) => {
    const parsed = parseToWorker(raw);
    if (!parsed.ok) {
      (log ?? fallbackLog()).warn(`${me}: ignoring a malformed message from the primary: ${parsed.error}`);
      return;
    }
    const msg = parsed.msg;
    if (msg.t === "init") {
      if (serving !== null) return;
      me = `DNS worker ${msg.index}`;
      log = createLogger({ level: msg.logLevel, format: msg.logFormat });
      serving = new Serving(msg, log, send);
      void serving.start();
      return;
    }
    if (serving === null) {
      if (msg.t === "close") process.exit(0); // nothing to finish
      (log ?? fallbackLog()).warn(`${me}: '${msg.t}' before init, ignored`);
      return;
    }
    serving.handle(msg);
  });
  send({ t: "hello" });
}

let fallback: Logger | null = null;
function fallbackLog(): Logger {
  fallback ??= createLogger({ level: "warn", format: "text" });
  return fallback;
}

class Serving {
  private readonly summoner: RemoteSummoner;
  /** --tcp-per-client counted by the primary over every worker; null with no limit. */
  private readonly clientSlots: RemoteClientSlots | null;
  private readonly forwarder: Forwarder | null;
  private readonly server: DnsServer;
  private readonly access: readonly ClientAccess[];
  private timer: ReturnType<typeof setInterval> | null = null;
  private closing = false;

  constructor(
    private readonly init: InitMessage,
    private readonly log: Logger,
    private readonly send: (msg: ToPrimary, then?: () => void) => void,
  ) {
    this.summoner = new RemoteSummoner((m) => send(m));
    this.summoner.setReady(init.ready, []);
    this.clientSlots = init.tcpPerClient === 0 ? null : new RemoteClientSlots((m) => send(m));
    this.forwarder =
      init.upstreams.length === 0
        ? null
        : new Forwarder({ upstreams: [...init.upstreams], ...init.forwarding, log });
    // The entries were checked by the primary (parseAccessList); the subnets are the primary's.
    const allowRecursion = new ClientAccess(init.allowRecursion, init.localnets);
    const allowSummon = new ClientAccess(init.allowSummon, init.localnets);
    this.access = [allowRecursion, allowSummon];
    this.server = new DnsServer({
      zone: this.zone(init.zone),
      summoner: this.summoner,
      forwarder: this.forwarder,
      log,
      ttlSeconds: init.ttl,
      clientSlots: this.clientSlots ?? new LocalClientSlots(0),
      allowRecursion,
      allowSummon,
    });
  }

  async start(): Promise<void> {
    try {
      await this.server.listen(this.init.bind, this.init.port, { shared: true });
    } catch (err) {
      this.send({ t: "listen-failed", error: describeError(err) }, () => process.exit(1));
      return;
    }
    this.timer = setInterval(() => this.report(null), REPORT_INTERVAL_MS);
    this.timer.unref();
    this.send({ t: "listening", port: this.server.port });
  }

  handle(msg: Exclude<ToWorker, InitMessage>): void {
    switch (msg.t) {
      case "ready":
        this.summoner.setReady(msg.set, msg.unset);
        return;
      case "summoned":
        this.summoner.settle(msg.id, { addresses: msg.addresses });
        return;
      case "summon-failed":
        this.summoner.settle(
          msg.id,
          msg.refused === undefined ? { error: msg.error } : { error: msg.error, refused: msg.refused },
        );
        return;
      case "flush":
        this.report(msg.id);
        return;
      case "tcp-acquired":
        this.clientSlots?.settle(msg.id, msg.granted);
        return;
      case "zone":
        this.server.setZone(this.zone(msg.zone));
        return;
      case "localnets":
        for (const access of this.access) access.setLocalnets(msg.cidrs);
        return;
      case "refresh-addresses":
        void this.server.refreshAddresses();
        return;
      case "close":
        void this.close();
        return;
    }
  }

  private zone(vms: InitMessage["zone"]): ZoneIndex {
    // The primary logged the zone's lines already; one copy per worker would only repeat them.
    return new ZoneIndex(vms, this.init.ttl, silentLogger());
  }

  private report(id: number | null, then?: () => void): void {
    this.send(
      { t: "counts", id, requests: this.summoner.takeCounts(), dns: this.server.counters.snapshot() },
      then,
    );
  }

  /** Stop accepting, answer what is in flight (summons are still answered by the primary), report, exit. */
  private async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.timer !== null) clearInterval(this.timer);
    try {
      await this.server.close();
    } catch (err) {
      this.log.error(`DNS worker ${this.init.index}: closing: ${describeError(err)}`);
    }
    this.forwarder?.close();
    this.report(null, () => process.exit(0));
  }
}
