/**
 * The help text: the options table (commander prints it) followed by the CONFIG
 * keys of every backend, from the same KeySpecs the backends validate with.
 */
import type { BackendFactory } from "../backends/index.js";
import { COMMON_KEYS, type KeySpec } from "../config/index.js";

const WIDTH = 80;

export function wrap(text: string, indent: number, width = WIDTH): string {
  const pad = " ".repeat(indent);
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (line !== "" && pad.length + line.length + 1 + word.length > width) {
      lines.push(pad + line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(pad + line);
  return lines.join("\n");
}

function keySection(title: string, keys: readonly KeySpec[]): string {
  const body = keys.map(
    (k) => `    ${k.key}${k.repeatable === true ? " (repeatable)" : ""}\n${wrap(k.doc, 8)}`,
  );
  return `${title}\n${body.join("\n\n")}`;
}

/** The CONFIG part of --help: the grammar, the common keys, then each backend's keys. */
export function configHelp(backends: readonly BackendFactory[]): string {
  const sections = [
    `CONFIG\n${wrap(
      "Each VM is one positional CONFIG string of key=value pairs separated by commas, e.g. dns=www.example.org,ip=10.0.0.1,name=www. Keys marked repeatable may be given more than once and keep their order. Booleans are true/false/1/0. Values cannot contain commas.",
      4,
    )}`,
    keySection("COMMON CONFIGURATION (every backend)", COMMON_KEYS),
    ...backends.map((b) =>
      keySection(
        `${b.name.toUpperCase()} CONFIGURATION (-x ${b.name}; stop modes: ${[...b.capabilities.stopModes].join(", ")})\n${wrap(b.summary, 4)}\n`,
        b.keys,
      ),
    ),
  ];
  return `\n${sections.join("\n\n")}\n`;
}
