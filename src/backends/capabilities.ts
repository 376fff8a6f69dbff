/**
 * The start-up (and reload) checks of what a backend can do, against the one
 * declaration on its factory (`BackendFactory.capabilities`). The summoner
 * trusts them: it never asks a backend what it supports.
 */
import type { BuildSpecOptions, VmSpec } from "../config/index.js";
import { ConfigError, UsageError } from "../errors/index.js";
import type { BackendFactory, StopMode } from "./contract.js";

/** -m/--mode: a UsageError naming the option when the backend cannot stop VMs that way. */
export function checkStopMode(factory: BackendFactory, mode: StopMode): void {
  const modes = factory.capabilities.stopModes;
  if (modes.has(mode)) return;
  throw new UsageError(
    `the ${factory.name} backend cannot ${mode} VMs (it can: ${[...modes].join(", ")})`,
    "--mode",
  );
}

/**
 * How --stop-on-exit stops the VMs jitsu started: with `-m` when it ends them
 * (destroy, shutdown, save: nothing of the VM runs afterwards), otherwise
 * (pause, suspend: a paused process would hold its memory and ports after
 * jitsu is gone) with shutdown, or destroy where the backend cannot shut down.
 */
export function exitStopMode(factory: BackendFactory, mode: StopMode): StopMode {
  if (mode === "destroy" || mode === "shutdown" || mode === "save") return mode;
  return factory.capabilities.stopModes.has("shutdown") ? "shutdown" : "destroy";
}

/** One VM's keys that need an optional method: a ConfigError naming the VM and the key. */
export function checkVmSpec(factory: BackendFactory, spec: VmSpec): void {
  const optional = factory.capabilities.optional;
  if (spec.ips.length === 0 && !optional.has("addresses")) {
    throw new ConfigError(`required key is missing (the ${factory.name} backend cannot discover addresses)`, {
      vm: spec.label,
      key: "ip",
    });
  }
  if (spec.waitForKey !== undefined && !optional.has("waitForKey")) {
    throw new ConfigError(`the ${factory.name} backend cannot wait for keys`, {
      vm: spec.label,
      key: "wait_for_key",
    });
  }
  if (spec.connect !== undefined) checkConnect(factory, spec.label, spec.connect);
}

/**
 * A VM's `connect=`: only for a backend that connects, and a URI it takes
 * (the check -c gets); else a ConfigError naming the VM and the key.
 */
function checkConnect(factory: BackendFactory, vm: string, uri: string): void {
  const hosts = factory.hosts;
  if (hosts === undefined) {
    throw new ConfigError(
      `the ${factory.name} backend runs its VMs on this machine and has no host to choose (connect= is for the backends that connect: libvirt, xapi, docker)`,
      { vm, key: "connect" },
    );
  }
  try {
    hosts.check(uri);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    throw new ConfigError(err.message.replace(/^option '--connect': /, ""), { vm, key: "connect" });
  }
}

/**
 * How config/ builds this backend's VMs (CONFIG strings and --config files
 * alike): its keys, its name in errors, and checkVmSpec on each VM built.
 */
export function specOptions(factory: BackendFactory): BuildSpecOptions {
  return {
    backendKeys: factory.keys,
    backendName: factory.name,
    check: (spec) => checkVmSpec(factory, spec),
    unsupportedKeys: new Set([
      ...(factory.capabilities.optional.has("waitForKey") ? [] : ["wait_for_key"]),
      ...(factory.hosts !== undefined ? [] : ["connect"]),
    ]),
  };
}
