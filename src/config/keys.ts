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

  // Plain loops: with 10,000 VMs these run ~100,000 times at start-up.
  has(key: string): boolean {
    for (let i = 0; i < this.pairs.length; i++) if (this.pairs[i]![0] === key) return true;
    return false;
  }

  /** All values of a key, in the order given. */
  all(key: string): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.pairs.length; i++) {
      const pair = this.pairs[i]!;
      if (pair[0] === key) out.push(pair[1]);
    }
    return out;
  }

  /** The last value of a key. */
  str(key: string): string | undefined {
    for (let i = this.pairs.length - 1; i >= 0; i--) {
      const pair = this.pairs[i]!;
      if (pair[0] === key) return pair[1];
    }
    return undefined;
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
interface KeyIndex {
  /** Each key's spec and its position in the list. */
  readonly byKey: ReadonlyMap<string, { readonly spec: KeySpec; readonly index: number }>;
  readonly required: readonly { readonly spec: KeySpec; readonly index: number }[];
}

const keyIndexes = new WeakMap<readonly KeySpec[], KeyIndex>();

/** The specs by key, built once per list (10,000 VMs validate against the same list). */
function keyIndexOf(specs: readonly KeySpec[]): KeyIndex {
  let index = keyIndexes.get(specs);
  if (index === undefined) {
    const entries = specs.map((spec, i) => ({ spec, index: i }));
    index = {
      byKey: new Map(entries.map((e) => [e.spec.key, e])),
      required: entries.filter((e) => e.spec.required === true),
    };
    keyIndexes.set(specs, index);
  }
  return index;
}

/**
 * `unlisted`: keys accepted here (so that a check elsewhere can say why they
 * cannot be used) but left out of the list of known keys an unknown key gets.
 */
export function validate(
  options: VmOptions,
  specs: readonly KeySpec[],
  backend: string,
  unlisted: ReadonlySet<string> = NO_KEYS,
): void {
  const { byKey, required } = keyIndexOf(specs);
  // Which keys were seen: a bit per key position (a Set only for lists longer than 31 keys).
  let seenBits = 0;
  const seenSet = specs.length > 31 ? new Set<number>() : null;
  const pairs = options.pairs;
  for (let i = 0; i < pairs.length; i++) {
    const key = pairs[i]![0];
    const value = pairs[i]![1];
    const entry = byKey.get(key);
    if (entry === undefined) {
      const usable = [...byKey.keys()].filter((k) => !unlisted.has(k)).sort();
      const near = closest(key, usable);
      const hint = near === undefined ? "" : `; did you mean '${near}'?`;
      throw new ConfigError(
        `unknown key for the ${backend} backend${hint} (known keys: ${usable.join(", ")})`,
        {
          vm: options.label,
          key,
        },
      );
    }
    const { spec, index } = entry;
    const again = seenSet === null ? (seenBits & (1 << index)) !== 0 : seenSet.has(index);
    if (again && spec.repeatable !== true) {
      throw new ConfigError("given more than once, but takes a single value", { vm: options.label, key });
    }
    if (seenSet === null) seenBits |= 1 << index;
    else seenSet.add(index);
    try {
      checkValue(spec, value);
    } catch (err) {
      throw new ConfigError((err as Error).message, { vm: options.label, key });
    }
  }
  for (let i = 0; i < required.length; i++) {
    const { spec, index } = required[i]!;
    const seen = seenSet === null ? (seenBits & (1 << index)) !== 0 : seenSet.has(index);
    if (!seen) throw new ConfigError("required key is missing", { vm: options.label, key: spec.key });
  }
}

const NO_KEYS: ReadonlySet<string> = new Set();

/**
 * The candidate nearest to `word` (a typo: `dsn` for `dns`), if one is within
 * two edits and closer than half its length; as commander suggests options.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.min(2, Math.floor(word.length / 2));
  for (const candidate of candidates) {
    const d = editDistance(word, candidate);
    if (d <= bestDistance && (best === undefined || d < editDistance(word, best))) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
