/**
 * CONFIG key descriptions. The same objects drive `jitsu --help` (the
 * "... CONFIGURATION" sections) and validation, so the two never drift apart.
 */
import { ConfigError } from "../errors/index.js";
import type { ConfigPair } from "./grammar.js";
import { parseTuple } from "./grammar.js";
import {
  parseBool,
  parseDnsName,
  parseFloatStrict,
  parseIntStrict,
  parseIp,
  parseSeconds,
  parseSize,
} from "./values.js";

export type KeyType =
  | "string"
  | "int"
  | "float"
  | "seconds"
  | "bool"
  | "ip"
  | "dns"
  | "tuple"
  | "size-kib"
  | "size-bytes"
  | "path";

export interface KeySpec {
  readonly key: string;
  readonly doc: string;
  readonly type: KeyType;
  readonly required?: boolean;
  readonly repeatable?: boolean;
}

/** Checks one value against its key's type; throws an Error naming what was expected. */
export function checkValue(spec: KeySpec, value: string): void {
  switch (spec.type) {
    case "string":
    case "path":
      if (value === "") throw new Error("expected a non-empty value");
      return;
    case "int":
      parseIntStrict(value);
      return;
    case "float":
      parseFloatStrict(value);
      return;
    case "seconds":
      parseSeconds(value);
      return;
    case "bool":
      parseBool(value);
      return;
    case "ip":
      parseIp(value);
      return;
    case "dns":
      parseDnsName(value);
      return;
    case "tuple":
      parseTuple(value, "@");
      return;
    case "size-kib":
      parseSize(value, 1024);
      return;
    case "size-bytes":
      parseSize(value, 1);
      return;
  }
}

/**
 * A VM's CONFIG pairs with typed getters. Getters assume `validate` ran; their
 * errors still name the VM and the key.
 */
export class VmOptions {
  constructor(
    readonly pairs: readonly ConfigPair[],
    readonly label: string,
  ) {}

  has(key: string): boolean {
    return this.pairs.some(([k]) => k === key);
  }

  /** All values of a key, in the order given. */
  all(key: string): string[] {
    return this.pairs.filter(([k]) => k === key).map(([, v]) => v);
  }

  str(key: string): string | undefined {
    return this.all(key).at(-1);
  }

  requireStr(key: string): string {
    const v = this.str(key);
    if (v === undefined) throw new ConfigError("required key is missing", { vm: this.label, key });
    return v;
  }

  int(key: string): number | undefined {
    return this.typed(key, parseIntStrict);
  }

  float(key: string): number | undefined {
    return this.typed(key, parseFloatStrict);
  }

  bool(key: string): boolean | undefined {
    return this.typed(key, parseBool);
  }

  sizeBytes(key: string, plainUnit: number): number | undefined {
    return this.typed(key, (v) => parseSize(v, plainUnit));
  }

  tuples(key: string, sep = "@"): { left?: string; right?: string }[] {
    return this.all(key).map((v) => parseTuple(v, sep));
  }

  private typed<T>(key: string, parse: (v: string) => T): T | undefined {
    const v = this.str(key);
    if (v === undefined) return undefined;
    try {
      return parse(v);
    } catch (err) {
      throw new ConfigError((err as Error).message, { vm: this.label, key });
    }
  }
}

/**
 * Checks the pairs against the known keys: unknown keys, missing required keys,
 * a single-valued key given twice, and values of the wrong type are errors that
 * name the VM and the key.
 */
const keyMaps = new WeakMap<readonly KeySpec[], ReadonlyMap<string, KeySpec>>();

/** The specs by key, built once per list (10,000 VMs validate against the same list). */
function byKeyOf(specs: readonly KeySpec[]): ReadonlyMap<string, KeySpec> {
  let map = keyMaps.get(specs);
  if (map === undefined) {
    map = new Map(specs.map((s) => [s.key, s]));
    keyMaps.set(specs, map);
  }
  return map;
}

export function validate(options: VmOptions, specs: readonly KeySpec[], backend: string): void {
  const byKey = byKeyOf(specs);
  const seen = new Map<string, number>();
  for (const [key, value] of options.pairs) {
    const spec = byKey.get(key);
    if (spec === undefined) {
      const known = [...byKey.keys()].sort().join(", ");
      throw new ConfigError(`unknown key for the ${backend} backend (known keys: ${known})`, {
        vm: options.label,
        key,
      });
    }
    const count = (seen.get(key) ?? 0) + 1;
    seen.set(key, count);
    if (count > 1 && spec.repeatable !== true) {
      throw new ConfigError("given more than once, but takes a single value", { vm: options.label, key });
    }
    try {
      checkValue(spec, value);
    } catch (err) {
      throw new ConfigError((err as Error).message, { vm: options.label, key });
    }
  }
  for (const spec of specs) {
    if (spec.required === true && !seen.has(spec.key)) {
      throw new ConfigError("required key is missing", { vm: options.label, key: spec.key });
    }
  }
}
