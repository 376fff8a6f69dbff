/**
 * A VM's process keys read from its VmSpec: the argv of `exec`, the `env`
 * pairs and `stop_grace`. Each reader throws a ConfigError naming the VM and
 * the key; `resolve` and `preflight` read the same way.
 */
import type { VmSpec } from "../../config/index.js";
import { ConfigError, describeError } from "../../errors/index.js";
import { splitCommandLine } from "./command-line.js";
import { DEFAULT_GRACE_SECONDS } from "./keys.js";

export type Argv = readonly [string, ...string[]];

/** `exec` split into argv. */
export function readArgv(label: string, command: string): Argv {
  try {
    // Never empty: splitCommandLine refuses a value without a word.
    return splitCommandLine(command) as unknown as Argv;
  } catch (err) {
    throw new ConfigError(describeError(err), { vm: label, key: "exec" });
  }
}

const NO_ENV: Readonly<Record<string, string>> = Object.freeze({});

/** The `env=NAME=VALUE` pairs (one frozen empty object for the many VMs without any). */
export function readEnv(spec: VmSpec): Readonly<Record<string, string>> {
  let env = NO_ENV;
  for (const pair of spec.options.all("env")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new ConfigError(`expected NAME=VALUE, got '${pair}'`, { vm: spec.label, key: "env" });
    if (env === NO_ENV) env = {};
    (env as Record<string, string>)[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** `stop_grace` in milliseconds. */
export function readGraceMs(spec: VmSpec): number {
  const grace = spec.options.float("stop_grace") ?? DEFAULT_GRACE_SECONDS;
  if (grace < 0) {
    throw new ConfigError(`expected 0 seconds or more, got ${grace}`, { vm: spec.label, key: "stop_grace" });
  }
  return grace * 1000;
}
