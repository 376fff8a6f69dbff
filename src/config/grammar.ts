/**
 * The CONFIG string grammar of the original Jitsu (cmdliner's
 * `array ~sep:',' (t2 ~sep:'=' string string)`): entries separated by commas,
 * each split at its first '=' into a key and a value. Keys may repeat; repeated
 * keys keep their order (the original's Hashtbl.find_all, reversed).
 */
import { ConfigError } from "../errors/index.js";

export type ConfigPair = readonly [key: string, value: string];

/** Parses `dns=www.example.org,ip=10.0.0.1,name=www` into ordered pairs. */
export function parseConfigString(text: string, label: string): ConfigPair[] {
  if (text.trim() === "") throw new ConfigError(`${label} is empty; expected key=value,key=value,...`);
  // A plain loop: 10,000 CONFIG strings at start-up run this once each, mostly uncompiled.
  const entries = text.split(",");
  const pairs: ConfigPair[] = [];
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    const eq = entry.indexOf("=");
    if (entry.trim() === "") {
      throw new ConfigError(
        i === entries.length - 1
          ? `${label}: entry ${i + 1} is empty (a trailing comma? A CONFIG string continued on the next line must not be indented: the shell makes the rest a separate argument)`
          : `${label}: entry ${i + 1} is empty (two commas in a row?)`,
      );
    }
    if (eq < 0) {
      throw new ConfigError(
        `${label}: entry ${i + 1} '${entry}' has no '='; expected key=value (values cannot contain commas)`,
      );
    }
    const key = entry.slice(0, eq).trim();
    if (key === "") throw new ConfigError(`${label}: entry ${i + 1} '${entry}' has an empty key`);
    pairs.push([key, entry.slice(eq + 1)]);
  }
  return pairs;
}

/**
 * A `left@right` tuple as the original's get_tuple_list reads it: either side
 * may be absent (`a`, `a@`, `@b`, `@`, and the empty string are all valid).
 */
export function parseTuple(value: string, sep: string): { left?: string; right?: string } {
  const at = value.indexOf(sep);
  if (at < 0) return value === "" ? {} : { left: value };
  const left = value.slice(0, at);
  const right = value.slice(at + sep.length);
  return { ...(left === "" ? {} : { left }), ...(right === "" ? {} : { right }) };
}
