/**
 * Wiring: settings -> backend -> summoner -> zone -> DNS server, plus the
 * stats table and signals. `startJitsu` is what the binary runs; tests call it
 * in-process too.
 */
import {
  HostRouter,
  checkStopMode,
  createBackend,
  exitStopMode,
  findBackend,
  runPreflight,
  specOptions,
  type BackendFactory,
  type VmBackend,
} from "../backends/index.js";
import { systemClock, type Clock } from "../clock/index.js";
import {
  buildFileSpecs,
  buildVmSpec,
  distinctVms,
  groupPlans,
  parseConfigString,
  type VmSpec,
} from "../config/index.js";
import {
  ClientAccess,
  DnsCounters,
  DnsServer,
  Forwarder,
  ZoneIndex,
  localNetworks,
  socketKind,
  upstreamsFromResolvConf,
  type SocketKind,
} from "../dns/index.js";
import { ListenError, UsageError, describeError } from "../errors/index.js";
import { EventBus } from "../events/index.js";
import { HTTP_FD_NAME, type ListenFd } from "../systemd/index.js";
import { createLogger, perVmLevel, redactUri, type Logger } from "../log/index.js";
import type { DnsCountersView, JitsuMetrics, StatsHistory, StatusServer } from "../http/index.js";
import type { ClusterPrimary } from "../cluster/index.js";
import { EtcdStore, MemoryStore, SqliteStore, type SharedState, type Store } from "../store/index.js";
import { Summoner, formatStateSummary, formatStatsTable } from "../summoner/index.js";
import { attachSynjitsu } from "../synjitsu/index.js";
import { Activator, holdPlan, zoneVms, type HoldPlan } from "../activator/index.js";
import { version } from "./command.js";
import type { Settings } from "./options.js";
import { ConfigReloader } from "./reload.js";

export interface Jitsu {
  readonly summoner: Summoner;
  /** The DNS server; null with --workers N > 1 (the workers serve DNS: see `cluster`). */
  readonly server: DnsServer | null;
  /** --workers N > 1: the workers, forked by this process; else null. */
  readonly cluster: ClusterPrimary | null;
  /** DNS counters: the server's, or the sum over the workers. */
  readonly counters: DnsCountersView;
  /** The DNS port bound (useful with `-l 0`). */
  readonly port: number;
  readonly backend: VmBackend;
  readonly log: Logger;
  /** The --http endpoint, if any. */
  readonly http: StatusServer | null;
  /** Every VM state change, start, stop, failure and reload (src/events); /events streams it. */
  readonly events: EventBus;
  /** Holds connections for VMs with hold= ports (src/activator); listens on nothing without them. */
  readonly activator: Activator;
  /** Stops serving, flushes state and closes the backend; `stopVms` also stops the VMs jitsu started. */
  close(options?: { stopVms?: boolean }): Promise<void>;
  /**
   * SIGHUP: re-reads the host's addresses (a wildcard -b), its local networks (localnets) and
   * --config; resolves false (and logs why) when the file was rejected or there is none.
   */
  reload(): Promise<boolean>;
}

export interface StartDeps {
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly store?: Store;
  /**
   * Socket activation: the descriptors systemd passed (src/systemd listenFds).
   * Those named `http` serve --http; the others, UDP and TCP, serve DNS
   * instead of binding -b/-l.
   */
  readonly sockets?: readonly ListenFd[];
}

/** The passed descriptors for DNS, each with its kind; a UsageError for one that is no UDP/TCP socket. */
function dnsSockets(sockets: readonly ListenFd[]): { fd: number; kind: SocketKind }[] {
  return sockets
    .filter((s) => s.name !== HTTP_FD_NAME)
    .map(({ fd, name }) => {
      const kind = socketKind(fd);
      if (kind === null)
        throw new UsageError(
          `socket activation: descriptor ${fd} (${name}) is not a UDP or TCP socket; jitsu.socket may list only ListenDatagram= and ListenStream= addresses`,
        );
      return { fd, kind };
    });
}

/** Parses every CONFIG string against the chosen backend's keys and what it can do. */
export function buildSpecs(configs: readonly string[], backendName: string): VmSpec[] {
  const opts = specOptions(findBackend(backendName));
  const specs: VmSpec[] = [];
  for (let i = 0; i < configs.length; i++) {
    const source = `CONFIG #${i + 1}`;
    specs.push(buildVmSpec(parseConfigString(configs[i]!, source), source, opts));
  }
  return distinctVms(specs);
}

/**
 * What start-up checks before it opens, connects or starts anything: every VM
 * (CONFIG strings and the --config file's) against the backend's keys and
 * capabilities, -m, and the groups (group=, after=, --max-running). The README examples test runs the same.
 */
export function checkSettings(settings: Settings): {
  factory: BackendFactory;
  /** The command line's VMs (a reload keeps them and re-reads the file's). */
  cliSpecs: VmSpec[];
  specs: VmSpec[];
  /** The hold ports (src/activator), checked: no wildcard hold address, no port of two VMs. */
  plan: HoldPlan;
} {
  const factory = findBackend(settings.backend);
  const cliSpecs = buildSpecs(settings.configs, settings.backend);
  // buildSpecs checked the command line's VMs; with a file, check them together.
  const specs =
    settings.file === undefined
      ? cliSpecs
      : distinctVms([...cliSpecs, ...buildFileSpecs(settings.file, specOptions(factory))]);
  checkStopMode(factory, settings.mode);
  // group= and after= over every VM (the summoner checks a reload's the same way).
  groupPlans(specs, { maxRunning: settings.maxRunning });
  return { factory, cliSpecs, specs, plan: holdPlan(specs, settings.holdAddress, settings.bind) };
}

export async function startJitsu(settings: Settings, deps: StartDeps = {}): Promise<Jitsu> {
  const clock = deps.clock ?? systemClock;
  const log = deps.log ?? createLogger({ level: settings.logLevel, format: settings.logFormat });
  const passed = deps.sockets ?? [];
  const passedDns = dnsSockets(passed);
  const passedHttp = passed.find((s) => s.name === HTTP_FD_NAME);
  if (passedHttp !== undefined && socketKind(passedHttp.fd)?.startsWith("tcp") !== true)
    throw new UsageError(
      `socket activation: descriptor ${passedHttp.fd} (http) is not a listening TCP socket`,
    );
  if (passedDns.length > 0 && settings.workers > 1)
    throw new UsageError(
      "socket activation (LISTEN_FDS) serves DNS from one process; remove --workers or the socket unit",
      "--workers",
    );
  const { factory, cliSpecs, specs, plan } = checkSettings(settings);

  // --persistdb: opened before anything runs, so a locked or corrupt database stops us at once.
  // --etcd: connected (and its records read) before anything runs, so a wrong endpoint stops us at once.
  const etcd =
    deps.store === undefined && settings.etcd !== undefined ? await EtcdStore.open(settings.etcd, log) : null;
  if (etcd !== null)
    log.info(`Sharing state through etcd at ${settings.etcd!.endpoints.join(",")} as ${etcd.instance}`);
  const shared: SharedState | undefined = etcd ?? undefined;
  const store =
    deps.store ??
    etcd ??
    (settings.persistdb === undefined ? new MemoryStore() : SqliteStore.open(settings.persistdb));
  // A backend that connects: -c's host, and one connection per connect= host (src/backends/hosts).
  const backend = createBackend(factory, {
    connect: settings.connect,
    stateDir: settings.stateDir,
    settings: settings.raw,
    log,
    clock,
    // A daemon that leaves a call unanswered this long is taken for hung (its connection reset).
    callTimeoutMs: settings.startTimeout > 0 ? settings.startTimeout * 1000 : undefined,
  });
  const router = backend instanceof HostRouter ? backend : null;
  // The URI may carry a password (xapi: https://USER:PASSWORD@HOST): never print it.
  const shownUri = redactUri(router?.defaultUri ?? settings.connect);
  if (factory.connects) log.info(`Connecting to ${shownUri}...`);
  try {
    // Files, programs and --state-dir: every problem of every VM at once, before anything runs.
    await runPreflight(backend, specs);
    await backend.connect();
    if (factory.connects) log.info(`Connected to ${shownUri}`);
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }

  const events = new EventBus(() => clock.now());
  let summoner: Summoner;
  try {
    summoner = await Summoner.create({
      backend,
      backendName: factory.name,
      backendTarget: factory.connects ? shownUri : undefined,
      specs,
      clock,
      log,
      ttlSeconds: settings.ttl,
      delaySeconds: settings.delay,
      startTimeoutSeconds: settings.startTimeout,
      stopMode: settings.mode,
      store,
      maxStarting: settings.maxStarting,
      maxRunning: settings.maxRunning,
      summonRate: settings.summonRate,
      events,
      maxFailures: settings.maxFailures,
      failureResetSeconds: settings.failureReset,
      reaperIntervalMs: settings.reaperInterval * 1000,
      ...(shared !== undefined ? { shared } : {}),
    });
  } catch (err) {
    await backend.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw err;
  }

  const zone = new ZoneIndex(zoneVms(specs, plan), settings.ttl, log);
  const upstreams =
    settings.forwarder === null
      ? []
      : settings.forwarder === undefined
        ? upstreamsFromResolvConf(undefined, settings.port)
        : [{ host: settings.forwarder, port: settings.port }];
  if (settings.forwarder !== null && upstreams.length === 0) {
    log.warn("No nameserver in /etc/resolv.conf: forwarding is disabled (use -f ADDR to set one)");
  }
  if (specs.length === 0) {
    log.warn(
      upstreams.length === 0
        ? "No VMs configured and forwarding is off: every query is answered REFUSED"
        : "No VMs configured: every query is forwarded",
    );
  }
  // --allow-recursion / --allow-summon; `localnets` is re-read on SIGHUP.
  let localnets = localNetworks();
  const allowRecursion = new ClientAccess(settings.allowRecursion, localnets);
  const allowSummon = new ClientAccess(settings.allowSummon, localnets);
  let forwarder: Forwarder | null = null;
  let server: DnsServer | null = null;
  let cluster: ClusterPrimary | null = null;
  /** DNS counters: the server's, or the sum over the workers. */
  const counters = new DnsCounters();
  // hold= ports: listened on once DNS is up (apply, below), also while their VMs are off (a connection summons).
  const activator = new Activator({
    host: summoner,
    log,
    clock,
    startTimeoutSeconds: settings.startTimeout,
    allowSummon,
    events,
    // JITSU_HOLD_RELAY=js: relay in JavaScript even where the splice relay is built (to compare; tests).
    relay: process.env.JITSU_HOLD_RELAY === "js" ? "js" : "splice",
  });
  // --http: the metrics and the status page's history follow the summoner from before the first
  // query, so that a summon a query begins during start-up is counted (a first query waiting in a
  // socket systemd passed, a client that asks as soon as the "Starting server" line is out).
  let observers: {
    StatusServer: typeof StatusServer;
    metrics: JitsuMetrics;
    history: StatsHistory;
  } | null = null;
  if (settings.http !== undefined || passedHttp !== undefined) {
    // Loaded only when asked for: prom-client and its default metrics cost ~15 MB of RSS.
    const http = await import("../http/index.js");
    observers = {
      StatusServer: http.StatusServer,
      // The page's charts: queries per second and cold starts over the last hour, in memory.
      history: new http.StatsHistory({ bus: events, counters, summoner, clock }),
      metrics: new http.JitsuMetrics({
        summoner,
        counters,
        clock,
        answersByWorker: settings.workers > 1 ? () => cluster?.answersByWorker() ?? new Map() : undefined,
        hold: activator,
        hosts: router === null ? undefined : () => router.hostStatus(),
      }),
    };
  }
  try {
    if (settings.workers === 1) {
      forwarder = upstreams.length === 0 ? null : new Forwarder({ upstreams, ...settings.forwarding, log });
      server = new DnsServer({
        zone,
        summoner,
        forwarder,
        log,
        ttlSeconds: settings.ttl,
        tcpPerClient: settings.tcpPerClient,
        allowRecursion,
        allowSummon,
        counters,
      });
      if (passedDns.length > 0) await server.adopt(passedDns);
      else await server.listen(settings.bind, settings.listen);
    } else {
      // --workers N: the workers build their own zones and forwarders from what this process sends.
      const { ClusterPrimary } = await import("../cluster/index.js");
      cluster = await ClusterPrimary.start({
        workers: settings.workers,
        summoner,
        log,
        bind: settings.bind,
        port: settings.listen,
        ttl: settings.ttl,
        logLevel: settings.logLevel,
        logFormat: settings.logFormat,
        upstreams,
        forwarding: settings.forwarding,
        tcpPerClient: settings.tcpPerClient,
        zone: zoneVms(specs, plan),
        allowRecursion: settings.allowRecursion,
        allowSummon: settings.allowSummon,
        localnets,
        // A worker answers its queries in flight, summons included, before it exits.
        closeTimeoutMs: (settings.startTimeout + 5) * 1000,
        counters,
      });
      log.info(`Starting server on ${settings.bind}:${cluster.port}...`);
      log.info(`Serving DNS with ${settings.workers} workers`);
    }
    // On a network, who may recurse and summon (and what localnets stands for) is worth a line at info.
    if (!isLoopback(settings.bind)) log.info(accessLine(allowRecursion, allowSummon));
    else if (log.isLevelEnabled("debug")) log.debug(accessLine(allowRecursion, allowSummon));
  } catch (err) {
    observers?.history.close();
    await summoner.close();
    await store.close().catch(() => undefined);
    forwarder?.close();
    await backend.close().catch(() => undefined);
    // A ListenError says what to do already; anything else is wrapped with where we tried.
    if (err instanceof ListenError) throw err;
    throw new Error(`cannot listen on ${settings.bind}:${settings.listen}: ${describeError(err)}`, {
      cause: err,
    });
  }
  try {
    await activator.apply(plan);
  } catch (err) {
    observers?.history.close();
    await server?.close();
    await cluster?.close();
    await summoner.close();
    await store.close().catch(() => undefined);
    forwarder?.close();
    await backend.close().catch(() => undefined);
    throw err;
  }
  const primary = cluster;
  const dnsPort = server !== null ? server.port : primary!.port;
  /** Stops DNS: the server, or the workers (each answers what it has in flight first). */
  const closeDns = async (): Promise<void> => {
    await server?.close();
    await primary?.close();
    await activator.close();
  };

  // --synjitsu: tell the Synjitsu VM about use_synjitsu VMs as they start (never delays an answer).
  const synjitsu = attachSynjitsu({
    summoner,
    backend,
    uuid: settings.synjitsu,
    socketPath: settings.raw["synjitsu-socket"],
    stateDir: settings.stateDir,
    specs,
    clock,
    log,
  });

  // The stats table at start-up, as the original prints it (above PER_VM_LINES_MAX VMs, one line
  // of counts by state at info and the table at debug). A change of state is one line at info,
  // the summoner's own ("VM 'www' is ready after 812 ms"); the table follows it (debounced) at
  // debug only.
  const table = (): string => `Stats table:\n${formatStatsTable(summoner.status())}`;
  if (specs.length > 0) {
    const counts = summoner.stateCounts();
    let vms = 0;
    for (const n of counts.values()) vms += n;
    if (perVmLevel(vms) === "info") log.info(table());
    else {
      log.info(
        `${formatStateSummary(counts)} (the full table at --log-level debug, or GET /status with --http)`,
      );
      if (log.isLevelEnabled("debug")) log.debug(table());
    }
  }
  let pending: ReturnType<typeof setTimeout> | undefined;
  summoner.onChange(() => {
    if (pending !== undefined || !log.isLevelEnabled("debug")) return;
    pending = setTimeout(() => {
      pending = undefined;
      log.debug(`${formatStateSummary(summoner.stateCounts())}; ${table()}`);
    }, 200);
    pending.unref();
  });

  // --http: status, metrics and (with --http-token) admin endpoints.
  let http: StatusServer | null = null;
  let history: StatsHistory | null = null;
  if (observers !== null) {
    const metrics = observers.metrics;
    history = observers.history;
    http = new observers.StatusServer({
      summoner,
      metrics,
      log,
      token: settings.httpToken,
      version: version(),
      refresh: primary === null ? undefined : () => primary.collect(),
      hold: activator,
      dns: () => ({
        allowRecursion: allowRecursion.entries,
        allowSummon: allowSummon.entries,
        refused: Object.fromEntries(counters.refusedByReason),
        forward:
          upstreams.length === 0
            ? null
            : {
                queries: counters.forwarded,
                failures: counters.forwardFailures,
                coalesced: counters.forwardCoalesced,
                mismatched: counters.forwardMismatched,
              },
      }),
      events,
      history,
      counters,
      host: factory.connects ? shownUri : null,
      hosts: router === null ? undefined : () => router.hostStatus(),
    });
    try {
      if (passedHttp !== undefined) await http.adopt(passedHttp.fd);
      else await http.listen(settings.http!.host, settings.http!.port);
    } catch (err) {
      history.close();
      await closeDns();
      await summoner.close();
      await store.close().catch(() => undefined);
      forwarder?.close();
      await backend.close().catch(() => undefined);
      if (passedHttp !== undefined)
        throw new ListenError(`cannot serve HTTP on the socket systemd passed: ${describeError(err)}`, err);
      throw ListenError.of("HTTP (--http)", settings.http!.host, settings.http!.port, err, "--http");
    }
    const at = http.address();
    log.info(
      `Serving /status, /metrics, /healthz, /events and the status page on http://${at.host.includes(":") ? `[${at.host}]` : at.host}:${at.port}/` +
        (settings.httpToken === undefined ? "" : " (admin endpoints enabled)"),
    );
    history.start();
  }

  const reloader =
    settings.file === undefined
      ? null
      : new ConfigReloader({
          file: settings.file,
          cliSpecs,
          factory,
          backend,
          summoner,
          events,
          // A connect= host no VM lives on any more is closed; a new one was opened by resolve.
          applied: router === null ? undefined : (next) => router.retain(next),
          check: (next) => void holdPlan(next, settings.holdAddress, settings.bind),
          applyZone: (next) => {
            const nextPlan = holdPlan(next, settings.holdAddress, settings.bind);
            const vms = zoneVms(next, nextPlan);
            if (server !== null) server.setZone(new ZoneIndex(vms, settings.ttl, log));
            else {
              // The primary's copy only logs the records, as a single process does.
              new ZoneIndex(vms, settings.ttl, log);
              primary!.setZone(vms);
            }
            // A port that cannot be opened is logged; the others (and the new zone) apply.
            activator
              .apply(nextPlan)
              .catch((err: unknown) => log.error(`Reload: hold ports: ${describeError(err)}`));
          },
          log,
        });

  let closing: Promise<void> | undefined;
  return {
    summoner,
    server,
    cluster: primary,
    counters,
    port: dnsPort,
    backend,
    log,
    http,
    events,
    activator,
    reload() {
      // Bound to a wildcard, DNS follows the host's addresses: read them now rather than at the next poll.
      void server?.refreshAddresses();
      primary?.refreshAddresses();
      // localnets: the interfaces' subnets as they are now.
      const now = localNetworks();
      const changed = now.join() !== localnets.join();
      if (changed) {
        localnets = now;
        allowRecursion.setLocalnets(now);
        allowSummon.setLocalnets(now);
        primary?.setLocalnets(now);
        log.info(`SIGHUP: local networks (localnets) are now ${now.join(", ")}`);
      }
      if (reloader === null) {
        // Nothing to warn about when the SIGHUP was for the local networks.
        if (!changed)
          log.warn("SIGHUP: there is no --config file to reload (and the local networks are unchanged)");
        return Promise.resolve(false);
      }
      return reloader.reload();
    },
    close(options = {}) {
      // Stop accepting queries and answer those in flight (each within --start-timeout, else
      // SERVFAIL), then flush the store and close the backend.
      closing ??= (async () => {
        if (pending !== undefined) clearTimeout(pending);
        http?.markShuttingDown();
        await synjitsu?.close();
        await closeDns();
        forwarder?.close();
        await summoner.close({
          stopVms: options.stopVms === true,
          stopMode: exitStopMode(factory, settings.mode),
        });
        await store
          .close()
          .catch((err: unknown) => log.error(`Closing the state store: ${describeError(err)}`));
        history?.close();
        await http?.close();
        await backend.close();
      })();
      return closing;
    },
  };
}

function isLoopback(address: string): boolean {
  return address === "::1" || address.startsWith("127.");
}

/** The start-up line on a non-loopback address: who may recurse and who may summon. */
function accessLine(recursion: ClientAccess, summon: ClientAccess): string {
  const show = (access: ClientAccess): string =>
    access.entries.join(",") +
    (access.localNetworks.length > 0 ? ` (localnets: ${access.localNetworks.join(", ")})` : "");
  return `Recursion allowed to ${show(recursion)}; summons allowed to ${show(summon)}`;
}
