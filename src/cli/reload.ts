/**
 * SIGHUP: re-read --config and apply its VMs without dropping a query. The new
 * VMs are built and validated first, and the backend's start-up checks
 * (preflight) run on them; if anything is wrong the running
 * configuration stays and the error is logged. Then the summoner takes the new
 * specs (added VMs resolved, removed ones left as they are, changed ones
 * updated) and, in the same turn of the event loop, the DNS server the new zone.
 */
import { runPreflight, specOptions, type BackendFactory, type VmBackend } from "../backends/index.js";
import {
  buildFileSpecs,
  distinctVms,
  readConfigFile,
  type ConfigFile,
  type VmSpec,
} from "../config/index.js";
import { describeErrorLines } from "../errors/index.js";
import type { EventBus } from "../events/index.js";
import type { Logger } from "../log/index.js";
import type { Summoner } from "../summoner/index.js";
import { fileOptionSpecs } from "./options.js";

export interface ReloaderOptions {
  readonly file: ConfigFile;
  /** VMs from CONFIG strings on the command line (they stay across reloads). */
  readonly cliSpecs: readonly VmSpec[];
  readonly factory: BackendFactory;
  /** Runs its start-up checks (preflight) on the new VMs. */
  readonly backend: VmBackend;
  readonly summoner: Summoner;
  /** Gives the DNS server(s) the new VMs' zone (in the same turn as the summoner takes them). */
  readonly applyZone: (specs: readonly VmSpec[]) => void;
  /** Checks the new VMs together beyond their own keys (the hold ports: src/activator); throws to reject. */
  readonly check?: (specs: readonly VmSpec[]) => void;
  readonly log: Logger;
  /** Where each reload is reported (`config.reloaded`). */
  readonly events?: EventBus;
  /** Run once the new VMs are in effect (the backend closes the hosts none of them lives on). */
  readonly applied?: (specs: readonly VmSpec[]) => Promise<void>;
}

export class ConfigReloader {
  private chain: Promise<boolean> = Promise.resolve(true);

  constructor(private readonly opts: ReloaderOptions) {}

  /** Reloads (one at a time); resolves true when the new configuration is in effect. */
  reload(): Promise<boolean> {
    this.chain = this.chain.then(() => this.apply());
    return this.chain;
  }

  private async apply(): Promise<boolean> {
    const { log, factory } = this.opts;
    const path = this.opts.file.path;
    log.info(`Reloading config file '${path}'`);
    let file: ConfigFile;
    let specs: VmSpec[];
    try {
      file = readConfigFile(path, fileOptionSpecs());
      const fromFile = buildFileSpecs(file, specOptions(factory));
      specs = distinctVms([...this.opts.cliSpecs, ...fromFile]);
      this.opts.check?.(specs);
      await runPreflight(this.opts.backend, specs);
    } catch (err) {
      this.rejected(err);
      return false;
    }
    let counts: { added: number; changed: number; removed: number };
    try {
      counts = await this.opts.summoner.setSpecs(specs);
    } catch (err) {
      this.rejected(err);
      return false;
    }
    // No await between the summoner taking the specs and the server taking the zone.
    this.opts.applyZone(specs);
    await this.opts.applied?.(specs).catch((err: unknown) => {
      log.warn(`Reload: closing the connections no VM uses: ${describeErrorLines(err).join("; ")}`);
    });
    // Global options are read at start-up only.
    const before = this.opts.file.options;
    for (const name of new Set([...Object.keys(before), ...Object.keys(file.options)])) {
      if (before[name] !== file.options[name]) {
        log.warn(`Option '${name}' changed in '${path}'; it takes effect when jitsu restarts`);
      }
    }
    log.info(
      { type: "config.reloaded" },
      `Reloaded '${path}': ${specs.length} VM${specs.length === 1 ? "" : "s"}`,
    );
    this.opts.events?.emit({
      type: "config.reloaded",
      ok: true,
      file: path,
      vms: specs.length,
      ...counts,
      error: null,
    });
    return true;
  }

  /** One line per problem (a preflight finds them all at once), and one event with them all. */
  private rejected(err: unknown): void {
    const lines = describeErrorLines(err);
    for (const line of lines) {
      this.opts.log.error(
        { type: "config.reloaded" },
        `Reload rejected, keeping the running configuration: ${line}`,
      );
    }
    this.opts.events?.emit({
      type: "config.reloaded",
      ok: false,
      file: this.opts.file.path,
      vms: countVms(this.opts.summoner),
      added: 0,
      changed: 0,
      removed: 0,
      error: lines.join("; "),
    });
  }
}

function countVms(summoner: Summoner): number {
  let n = 0;
  for (const count of summoner.stateCounts().values()) n += count;
  return n;
}
