/**
 * Wiring: settings -> backend -> summoner -> zone -> DNS server, plus the
 * stats table and signals. `startJitsu` is what the binary runs; tests call it
 * in-process too.
 */
import { findBackend, type VmBackend } from "../backends/index.js";
import { systemClock, type Clock } from "../clock/index.js";
import { buildVmSpec, checkUniqueNames, parseConfigString, type VmSpec } from "../config/index.js";
import { DnsServer, Forwarder, ZoneIndex, upstreamsFromResolvConf } from "../dns/index.js";
import { describeError } from "../errors/index.js";
import { createLogger, type Logger } from "../log/index.js";
import { MemoryStore, type Store } from "../store/index.js";
import { Summoner, formatStatsTable } from "../summoner/index.js";
import type { Settings } from "./options.js";

export interface Jitsu {
  readonly summoner: Summoner;
  readonly server: DnsServer;
  readonly backend: VmBackend;
  readonly log: Logger;
  /** Stops serving, flushes state and closes the backend; `stopVms` also stops the VMs jitsu started. */
  close(options?: { stopVms?: boolean }): Promise<void>;
}

export interface StartDeps {
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly store?: Store;
}

/** Parses every CONFIG string against the chosen backend's keys. */
export function buildSpecs(configs: readonly string[], backendName: string): VmSpec[] {
  const factory = findBackend(backendName);
  const specs = configs.map((text, i) =>
    buildVmSpec(parseConfigString(text, `CONFIG #${i + 1}`), `CONFIG #${i + 1}`, {
      backendKeys: factory.keys,
      backendName: factory.name,
      discoversAddresses: factory.discoversAddresses,
    }),
  );
  checkUniqueNames(specs);
  return specs;
}

export async function startJitsu(settings: Settings, deps: StartDeps = {}): Promise<Jitsu> {
  const clock = deps.clock ?? systemClock;
  const log = deps.log ?? createLogger({ level: settings.logLevel, format: settings.logFormat });
  const factory = findBackend(settings.backend);
  const specs = buildSpecs(settings.configs, settings.backend);
  if (!factory.stopModes.has(settings.mode)) {
    throw new Error(
      `option '--mode': the ${factory.name} backend cannot ${settings.mode} VMs (it can: ${[...factory.stopModes].join(", ")})`,
    );
  }
  if (specs.length === 0) log.warn("No VMs configured: every query is forwarded");

  if (settings.backend === "libvirt" || settings.backend === "xapi")
    log.info(`Connecting to ${settings.connect}...`);
  const backend = factory.create({
    connect: settings.connect,
    stateDir: settings.stateDir,
    settings: settings.raw,
    log,
    clock,
  });
  await backend.connect();

  let summoner: Summoner;
  try {
    summoner = await Summoner.create({
      backend,
      backendName: factory.name,
      specs,
      clock,
      log,
      ttlSeconds: settings.ttl,
      delaySeconds: settings.delay,
      startTimeoutSeconds: settings.startTimeout,
      stopMode: settings.mode,
      store: deps.store ?? new MemoryStore(),
    });
  } catch (err) {
    await backend.close().catch(() => undefined);
    throw err;
  }

  const zone = new ZoneIndex(specs, settings.ttl, log);
  const upstreams =
    settings.forwarder === null
      ? []
      : settings.forwarder === undefined
        ? upstreamsFromResolvConf(undefined, settings.port)
        : [{ host: settings.forwarder, port: settings.port }];
  if (settings.forwarder !== null && upstreams.length === 0) {
    log.warn("No nameserver in /etc/resolv.conf: forwarding is disabled (use -f ADDR to set one)");
  }
  const forwarder = upstreams.length === 0 ? null : new Forwarder({ upstreams, log });
  const server = new DnsServer({ zone, summoner, forwarder, log, ttlSeconds: settings.ttl });
  try {
    await server.listen(settings.bind, settings.listen);
  } catch (err) {
    await summoner.close();
    forwarder?.close();
    await backend.close().catch(() => undefined);
    throw new Error(`cannot listen on ${settings.bind}:${settings.listen}: ${describeError(err)}`, {
      cause: err,
    });
  }

  // The stats table at start-up and (debounced) whenever a VM changes state, as the original prints it.
  const printTable = (): void => log.info(`\n${formatStatsTable(summoner.status())}`);
  if (specs.length > 0) printTable();
  let pending: ReturnType<typeof setTimeout> | undefined;
  summoner.onChange(() => {
    if (pending !== undefined) return;
    pending = setTimeout(() => {
      pending = undefined;
      printTable();
    }, 200);
    pending.unref();
  });

  let closing: Promise<void> | undefined;
  return {
    summoner,
    server,
    backend,
    log,
    close(options = {}) {
      closing ??= (async () => {
        if (pending !== undefined) clearTimeout(pending);
        await server.close();
        forwarder?.close();
        await summoner.close({ stopVms: options.stopVms === true });
        await backend.close();
      })();
      return closing;
    },
  };
}
