/**
 * `--config FILE`: global options and VMs in YAML or JSON (see README.md).
 *
 * ```yaml
 * ttl: 60
 * forwarder: 0.0.0.0
 * vms:
 *   - name: www
 *     dns: [www.example.org, example.org]
 *     ip: 10.0.0.1
 *   - "dns=mail.example.org,ip=10.0.0.2,name=mail"   # a CONFIG string works too
 * ```
 *
 * Option names are the command line's long options; VM keys are the CONFIG
 * keys. YAML is read with the failsafe schema, so every scalar stays the text
 * the user wrote (`name: 0123` is "0123", not 123) and is then validated by the
 * same code as a CONFIG string. Errors name the file, the VM and the key.
 */
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { createRequire } from "node:module";
import { ConfigError } from "../errors/index.js";
import { parseConfigString, type ConfigPair } from "./grammar.js";
import { buildVmSpec, distinctVms, type BuildSpecOptions, type VmSpec } from "./spec.js";
import { parseBool } from "./values.js";

/** A global option the file may set: its long name, and whether it takes a value or is a flag. */
export interface FileOptionSpec {
  readonly name: string;
  readonly takesValue: boolean;
  /** A comma-separated list: the file may give a list instead (joined with commas). */
  readonly list?: boolean;
}

export interface ConfigFileVm {
  /** 1-based position in the `vms` list. */
  readonly index: number;
  /** name, else uuid, else the first dns, else "vms #N". */
  readonly label: string;
  readonly pairs: readonly ConfigPair[];
}

export interface ConfigFile {
  readonly path: string;
  /** Options by long name: a string for options with a value, `true` for flags that are set. */
  readonly options: Readonly<Record<string, string | true>>;
  readonly vms: readonly ConfigFileVm[];
}

/** Options that make no sense inside a config file. */
const NOT_IN_FILE = new Set(["config", "help", "version"]);

/** Reads and checks the file's shape and option names (VM keys are checked by buildFileSpecs). */
export function readConfigFile(path: string, optionSpecs: readonly FileOptionSpec[]): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new ConfigError(
      `config file '${path}': cannot read it (${code === "ENOENT" ? "no such file" : ((err as Error).message ?? code)})`,
      { cause: err },
    );
  }
  return parseConfigText(text, path, optionSpecs);
}

/** Parses the text of a config file; `path` names it in errors and picks the format by extension. */
export function parseConfigText(
  text: string,
  path: string,
  optionSpecs: readonly FileOptionSpec[],
): ConfigFile {
  const fail = (message: string): never => {
    throw new ConfigError(`config file '${path}': ${message}`);
  };
  const root = parseDoc(text, isJson(path, text) ? "json" : "failsafe", fail);
  if (root === null || root === undefined || root === "") return { path, options: {}, vms: [] };
  if (!isMap(root)) return fail(`expected a map of options and 'vms' at the top, got ${describe(root)}`);

  const specs = new Map(optionSpecs.map((o) => [o.name, o]));
  const options: Record<string, string | true> = {};
  let vms: ConfigFileVm[] = [];
  for (const [key, value] of Object.entries(root)) {
    if (key === "vms") {
      vms = readVms(value, fail);
      continue;
    }
    const spec = specs.get(key);
    if (spec === undefined || NOT_IN_FILE.has(key)) {
      const known = [...specs.keys()].filter((k) => !NOT_IN_FILE.has(k));
      return fail(
        NOT_IN_FILE.has(key)
          ? `option '${key}' cannot be set in a config file`
          : `unknown option '${key}' (known: vms, ${known.sort().join(", ")})`,
      );
    }
    const scalar = spec.list === true && Array.isArray(value) ? listText(key, value, fail) : asScalar(value);
    if (scalar === undefined) return fail(`option '${key}': expected a single value, got ${describe(value)}`);
    if (spec.takesValue) {
      if (scalar === "") return fail(`option '${key}': expected a value, got an empty one`);
      options[key] = scalar;
    } else {
      let on: boolean;
      try {
        on = parseBool(scalar);
      } catch (err) {
        return fail(`option '${key}': ${(err as Error).message}`);
      }
      if (on) options[key] = true;
    }
  }
  return { path, options, vms };
}

/** A list option's items as the command line's comma-separated text. */
function listText(key: string, value: unknown[], fail: (message: string) => never): string {
  if (value.length === 0) return fail(`option '${key}': empty list`);
  return value
    .map((item, i) => {
      const text = asScalar(item);
      if (text === undefined || text === "" || text.includes(","))
        return fail(`option '${key}': item ${i + 1}: expected one value, got ${describe(item)}`);
      return text;
    })
    .join(",");
}

/**
 * Builds and validates the file's VMs with the chosen backend's keys, exactly as
 * CONFIG strings are. Errors say `config file 'F': vms #2 (www): VM 'www', key 'ip': ...`.
 */
export function buildFileSpecs(file: ConfigFile, opts: BuildSpecOptions): VmSpec[] {
  const specs = file.vms.map((vm) => {
    try {
      return buildVmSpec(vm.pairs, `vms #${vm.index}`, opts);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      throw new ConfigError(`config file '${file.path}': vms #${vm.index} (${vm.label}): ${err.message}`, {
        cause: err,
      });
    }
  });
  try {
    return distinctVms(specs);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new ConfigError(`config file '${file.path}': ${err.message}`, { cause: err });
  }
}

/**
 * Command-line values win over the file's: returns the file's options with
 * every option given on the command line (not undefined, not false) on top.
 */
export function mergeOptions(
  fileOptions: Readonly<Record<string, string | true>>,
  cliOptions: Readonly<Record<string, string | boolean | undefined>>,
): Record<string, string | boolean | undefined> {
  const merged: Record<string, string | boolean | undefined> = { ...fileOptions };
  for (const [key, value] of Object.entries(cliOptions)) {
    if (value !== undefined && value !== false) merged[key] = value;
  }
  return merged;
}

function readVms(value: unknown, fail: (message: string) => never): ConfigFileVm[] {
  if (value === null || value === "") return [];
  if (!Array.isArray(value)) return fail(`'vms' must be a list of VMs, got ${describe(value)}`);
  return value.map((entry: unknown, i) => {
    const index = i + 1;
    const where = `vms #${index}`;
    let pairs: ConfigPair[];
    if (typeof entry === "string") {
      try {
        pairs = parseConfigString(entry, where);
      } catch (err) {
        return fail((err as Error).message);
      }
    } else if (isMap(entry)) {
      pairs = [];
      for (const [key, v] of Object.entries(entry)) {
        const values = Array.isArray(v) ? v : [v];
        if (Array.isArray(v) && v.length === 0)
          return fail(`${where} (${labelOf(entry, where)}): key '${key}': empty list`);
        for (const item of values) {
          const scalar = asScalar(item);
          if (scalar === undefined) {
            return fail(
              `${where} (${labelOf(entry, where)}): key '${key}': expected a value or a list of values, got ${describe(item)}`,
            );
          }
          pairs.push([key, scalar]);
        }
      }
    } else {
      return fail(`${where}: expected a map of CONFIG keys or a CONFIG string, got ${describe(entry)}`);
    }
    const get = (k: string): string | undefined => pairs.find(([key]) => key === k)?.[1];
    return { index, label: get("name") ?? get("uuid") ?? get("dns") ?? where, pairs };
  });
}

function labelOf(entry: Record<string, unknown>, fallback: string): string {
  for (const key of ["name", "uuid", "dns"]) {
    const v = entry[key];
    const first = Array.isArray(v) ? (v[0] as unknown) : v;
    const s = asScalar(first);
    if (s !== undefined && s !== "") return s;
  }
  return fallback;
}

function isJson(path: string, text: string): boolean {
  const ext = extname(path).toLowerCase();
  if (ext === ".json") return true;
  if (ext === ".yaml" || ext === ".yml") return false;
  return text.trimStart().startsWith("{");
}

/**
 * YAML with the failsafe schema (scalars stay strings), JSON with the yaml
 * package's JSON schema (strict JSON scalars, and errors with line and column,
 * which JSON.parse does not give). A key given twice in a map is an error.
 */
function parseDoc(text: string, schema: "json" | "failsafe", fail: (message: string) => never): unknown {
  if (schema === "json") {
    const fast = parseJsonFast(text);
    if (fast !== undefined) return fast.value;
  }
  // Loaded on first use: a jitsu without --config does not pay its ~10 MB of RSS.
  const { parseDocument } = createRequire(import.meta.url)("yaml") as typeof import("yaml");
  const doc = parseDocument(text, { schema, uniqueKeys: true, prettyErrors: true });
  const error = doc.errors[0];
  if (error !== undefined) {
    const pos = error.linePos?.[0];
    const where = pos === undefined ? "" : ` at line ${pos.line}, column ${pos.col}`;
    const message = (error.message.split("\n")[0] ?? "").replace(/ at line \d+, column \d+:?$/, "");
    return fail(`invalid ${schema === "json" ? "JSON" : "YAML"}${where}: ${message}`);
  }
  return doc.toJS({ maxAliasCount: 100 }) as unknown;
}

/**
 * Valid JSON without a key given twice, by JSON.parse: for a file of 10,000
 * VMs, 10 ms where the yaml package takes 0.7 s and ~80 MB. Anything else
 * (invalid JSON, a repeated key) is left to the yaml package, whose errors
 * say where (undefined).
 */
function parseJsonFast(text: string): { value: unknown } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return hasRepeatedKey(text) ? undefined : { value };
}

/** Whether an object in `text` (valid JSON) has the same key twice. */
function hasRepeatedKey(text: string): boolean {
  // One entry per open container: the keys of an object, null for an array.
  const stack: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    switch (text.charCodeAt(i)) {
      case 0x7b: // {
        stack.push(new Set());
        expectKey = true;
        break;
      case 0x5b: // [
        stack.push(null);
        expectKey = false;
        break;
      case 0x7d: // }
      case 0x5d: // ]
        stack.pop();
        expectKey = false;
        break;
      case 0x2c: // ,
        expectKey = stack.at(-1) != null;
        break;
      case 0x22: {
        // "...": find its end, skipping escapes.
        let j = i + 1;
        while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
        if (expectKey) {
          const keys = stack.at(-1)!;
          const key = JSON.parse(text.slice(i, j + 1)) as string;
          if (keys.has(key)) return true;
          keys.add(key);
          expectKey = false;
        }
        i = j;
        break;
      }
    }
  }
  return false;
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A scalar as the text of a CONFIG value; undefined for lists, maps and null. */
function asScalar(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (typeof value === "boolean") return value ? "true" : "false";
  return undefined;
}

function describe(value: unknown): string {
  if (value === null) return "an empty value";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a map";
  return `'${String(value)}'`;
}
