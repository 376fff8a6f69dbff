/**
 * Xen through the xl toolstack: each VM's CONFIG becomes an xl domain config
 * file in the state dir; start = `xl create -p` + rumprun JSON into xenstore +
 * `xl unpause`; the run state comes from `xl list`; wait_for_key and the
 * rumprun configuration go through the xenstore client.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { VmSpec } from "../../config/index.js";
import { BackendError, ConfigError, describeError, type JitsuError } from "../../errors/index.js";
import type { Logger } from "../../log/index.js";
import { XenstoreClient, blamesXenstored, waitForDomainKey } from "../../xen/xenstore/index.js";
import type { BackendOptions, StopMode, VmBackend, VmRef, VmState } from "../contract.js";
import { planDomain, type DomainPlan } from "./domain-config.js";
import { checkLibxlVms } from "./preflight.js";
import {
  XL_TIMEOUT_MS,
  Xl,
  parseNetworkList,
  parseXlList,
  parseXlListLong,
  stateOfFlags,
  type XlRow,
} from "./xl.js";

export const LIBXL_STOP_MODES: ReadonlySet<StopMode> = new Set([
  "destroy",
  "shutdown",
  "suspend",
  "pause",
  "save",
]);

/** Long operations: a guest's own shutdown and writing its memory to disk. */
const SLOW_MS = 300_000;

interface Managed {
  readonly kind: "managed";
  readonly spec: VmSpec;
  readonly plan: DomainPlan;
}
/** A domain jitsu does not create (the Synjitsu VM), found by uuid or name. */
interface Existing {
  readonly kind: "existing";
  readonly label: string;
}

export interface LibxlDeps {
  /** The xenstore client; by default one that finds xenstored as libxenstore does. */
  readonly xenstore?: XenstoreClient;
}

export class LibxlBackend implements VmBackend {
  readonly name = "libxl";
  private readonly xl: Xl;
  private readonly dir: string;
  private readonly log: Logger;
  private readonly vms = new Map<string, Managed | Existing>();
  private xs: XenstoreClient | undefined;
  /**
   * How long xenstored may leave a request of a start (the rumprun write)
   * unanswered before it is taken for hung: --start-timeout, and never longer
   * than an xl command may run.
   */
  private readonly xenstoreTimeoutMs: number;
  /**
   * Domains brought back by `xl restore` since their last create. A restored
   * guest does not run its boot again, and the keys it wrote are not in the
   * new domain's xenstore directory, so wait_for_key does not apply to them
   * (as in the original, which waited for the key only after a fresh start).
   */
  private readonly restored = new Set<string>();

  constructor(options: BackendOptions, deps: LibxlDeps = {}) {
    this.xl = new Xl(options.settings.xl ?? "xl");
    this.dir = join(options.stateDir, "libxl");
    this.log = options.log;
    this.xs = deps.xenstore;
    this.xenstoreTimeoutMs = Math.min(options.callTimeoutMs ?? XL_TIMEOUT_MS, XL_TIMEOUT_MS);
  }

  async connect(): Promise<void> {
    try {
      await this.xl.run(["list"]);
    } catch (err) {
      // xl ran but failed (its stderr is in `detail`): say what that usually means.
      if (err instanceof BackendError && err.detail !== undefined) {
        throw new BackendError(
          "libxl",
          `cannot talk to Xen through '${this.xl.command}' (is Xen running, xenstored started, and are you root?)`,
          {
            ...(err.detail === undefined ? {} : { detail: err.detail }),
            cause: err,
          },
        );
      }
      throw err;
    }
    await mkdir(this.dir, { recursive: true });
  }

  async resolve(spec: VmSpec): Promise<VmRef> {
    if (!spec.options.has("kernel")) {
      // Not a VM of ours to create: an existing domain, by uuid (else name).
      const name = await this.findExisting(spec);
      this.vms.set(name, { kind: "existing", label: spec.label });
      return { label: spec.label, ref: name };
    }
    const plan = planDomain(spec);
    const other = this.vms.get(plan.name);
    if (other !== undefined && other.kind === "managed" && other.spec.label !== spec.label) {
      throw new ConfigError(`domain name '${plan.name}' is already used by VM '${other.spec.label}'`, {
        vm: spec.label,
        key: "name",
      });
    }
    this.vms.set(plan.name, { kind: "managed", spec, plan });
    return { label: spec.label, ref: plan.name };
  }

  async state(vm: VmRef): Promise<VmState> {
    const row = await this.row(vm);
    if (row !== undefined) return stateOfFlags(row.flags);
    return existsSync(this.savePath(vm.ref)) ? "suspended" : "off";
  }

  async start(vm: VmRef): Promise<void> {
    const managed = this.managed(vm);
    const { plan } = managed;
    // A domain left behind shut down or crashed (on_*="preserve", or caught while dying) holds the name.
    const leftover = await this.row(vm);
    if (leftover !== undefined) {
      this.log.info(
        { vm: vm.label },
        `Destroying the leftover domain '${plan.name}' (state ${leftover.flags}) before creating it again`,
      );
      await this.xl
        .run(["destroy", plan.name], { vm: vm.label })
        .catch((err: unknown) => this.log.debug({ vm: vm.label }, describeError(err)));
    }
    await mkdir(this.dir, { recursive: true });
    const cfg = this.configPath(plan.name);
    await writeFile(cfg, plan.text);
    this.restored.delete(plan.name);
    await this.xl.run(["create", "-p", cfg], { vm: vm.label });
    try {
      if (plan.rumprunConfig !== undefined) {
        const domid = await this.domainId(vm);
        await this.writeRumprunConfig(vm, domid, plan.rumprunConfig);
      }
      await this.xl.run(["unpause", plan.name], { vm: vm.label });
    } catch (err) {
      // Never leave a half-made domain behind (the summoner would take a paused one for
      // one of ours and unpause it): the next start creates it afresh.
      this.log.info(
        { vm: vm.label },
        `Destroying the half-made domain '${plan.name}': ${describeError(err)}`,
      );
      await this.xl.run(["destroy", plan.name], { vm: vm.label }).catch(() => undefined);
      throw err;
    }
  }

  async resume(vm: VmRef): Promise<void> {
    const file = this.savePath(vm.ref);
    if (!existsSync(file))
      throw new BackendError("libxl", `no saved image to restore at ${file}`, { vm: vm.label });
    await this.xl.run(["restore", file], { vm: vm.label, timeoutMs: SLOW_MS });
    this.restored.add(vm.ref);
    await rm(file, { force: true });
  }

  async unpause(vm: VmRef): Promise<void> {
    await this.xl.run(["unpause", vm.ref], { vm: vm.label });
  }

  async stop(vm: VmRef, mode: StopMode): Promise<void> {
    switch (mode) {
      case "destroy":
        await this.xl.run(["destroy", vm.ref], { vm: vm.label });
        return;
      case "shutdown":
        // -w: return once the domain has shut down (or died).
        await this.xl.run(["shutdown", "-w", vm.ref], { vm: vm.label, timeoutMs: SLOW_MS });
        return;
      case "pause":
        await this.xl.run(["pause", vm.ref], { vm: vm.label });
        return;
      case "suspend":
      case "save": {
        await mkdir(this.dir, { recursive: true });
        const file = this.savePath(vm.ref);
        await rm(file, { force: true });
        await this.xl.run(["save", vm.ref, file], { vm: vm.label, timeoutMs: SLOW_MS });
        return;
      }
    }
  }

  async domainId(vm: VmRef): Promise<number> {
    const { stdout } = await this.xl.run(["domid", vm.ref], { vm: vm.label });
    const domid = Number(stdout.trim());
    if (!Number.isInteger(domid) || domid < 0) {
      throw new BackendError("libxl", `xl domid ${vm.ref} printed '${stdout.trim()}', not a domain id`, {
        vm: vm.label,
      });
    }
    return domid;
  }

  async macs(vm: VmRef): Promise<string[]> {
    const { stdout } = await this.xl.run(["network-list", vm.ref], { vm: vm.label });
    return parseNetworkList(stdout);
  }

  /** Resolves once `key` (relative to /local/domain/<domid>/, or absolute) exists in xenstore. */
  async waitForKey(vm: VmRef, key: string, signal: AbortSignal): Promise<void> {
    if (this.restored.has(vm.ref)) {
      this.log.debug({ vm: vm.label }, `Not waiting for '${key}': the domain was restored, not booted`);
      return;
    }
    const domid = await this.domainId(vm);
    await waitForDomainKey(
      this.xenstore(),
      domid,
      key,
      signal,
      (message, detail, cause, unavailable) =>
        new BackendError("libxl", message, { vm: vm.label, detail, cause, unavailable }),
    );
  }

  /** xl, --state-dir, and each created VM's files and keys (preflight.ts). */
  preflight(specs: readonly VmSpec[]): Promise<JitsuError[]> {
    return checkLibxlVms(this.dir, this.xl.command, specs);
  }

  async close(): Promise<void> {
    await this.xs?.close();
    this.xs = undefined;
  }

  configPath(name: string): string {
    return join(this.dir, `${name}.cfg`);
  }

  savePath(name: string): string {
    return join(this.dir, `${name}.save`);
  }

  private xenstore(): XenstoreClient {
    this.xs ??= new XenstoreClient();
    return this.xs;
  }

  private managed(vm: VmRef): Managed {
    const entry = this.vms.get(vm.ref);
    if (entry === undefined || entry.kind !== "managed") {
      throw new BackendError(
        "libxl",
        `domain '${vm.ref}' was not configured with a kernel, so jitsu cannot create it`,
        { vm: vm.label },
      );
    }
    return entry;
  }

  private async row(vm: VmRef): Promise<XlRow | undefined> {
    const { stdout } = await this.xl.run(["list"], { vm: vm.label });
    return parseXlList(stdout).find((r) => r.name === vm.ref);
  }

  private async writeRumprunConfig(vm: VmRef, domid: number, file: string): Promise<void> {
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (err) {
      throw new BackendError("libxl", `cannot read rumprun_config '${file}'`, {
        vm: vm.label,
        detail: describeError(err),
        cause: err,
      });
    }
    const path = `/local/domain/${domid}/rumprun/cfg`;
    try {
      // Bounded: with a hung xenstored the start fails (and the domain is destroyed) rather
      // than waiting for ever and unpausing the domain whenever xenstored comes back.
      await this.xenstore().write(path, bytes, { timeoutMs: this.xenstoreTimeoutMs });
    } catch (err) {
      // xenstored gone or hung (ETIMEDOUT) is the daemon's fault, not the VM's.
      throw new BackendError("libxl", `cannot write the rumprun configuration to xenstore ${path}`, {
        vm: vm.label,
        detail: describeError(err),
        cause: err,
        unavailable: blamesXenstored(err),
      });
    }
    this.log.debug({ vm: vm.label }, `Wrote ${bytes.length} bytes of rumprun configuration to ${path}`);
  }

  private async findExisting(spec: VmSpec): Promise<string> {
    const { stdout } = await this.xl.run(["list", "-l"], { vm: spec.label });
    let entries;
    try {
      entries = parseXlListLong(stdout);
    } catch (err) {
      throw new BackendError("libxl", describeError(err), { vm: spec.label, cause: err });
    }
    const uuid = spec.uuid?.toLowerCase();
    const found = entries.find((e) => (uuid !== undefined ? e.uuid === uuid : e.name === spec.name));
    if (found?.name === undefined) {
      throw new BackendError(
        "libxl",
        uuid !== undefined
          ? `no running domain has uuid ${uuid}`
          : `no running domain is named '${spec.name ?? spec.label}'`,
        { vm: spec.label },
      );
    }
    return found.name;
  }
}
