/**
 * The examples of a README, as a reader sees them: fenced code blocks (with
 * the section they are in) and, in shell blocks, the commands a reader
 * pastes, with the output the README shows after a `$ ` prompt.
 */
import { readFileSync } from "node:fs";

export interface Block {
  /** The info string after the fence: "sh", "yaml", "" (untagged), ... */
  readonly lang: string;
  /** 1-based line of the first line inside the fence. */
  readonly line: number;
  readonly lines: readonly string[];
  /** The heading the block is under ("" before the first one). */
  readonly section: string;
}

export interface InlineCommand {
  readonly line: number;
  readonly text: string;
  readonly section: string;
}

export interface Markdown {
  readonly blocks: readonly Block[];
  /** Code spans outside blocks, e.g. `jitsu -x xapi ...` in a sentence. */
  readonly inline: readonly InlineCommand[];
}

const FENCE = /^(\s*)(`{3,})\s*([\w-]*)/;
const HEADING = /^#{1,6}\s+(.*)$/;

export function readMarkdown(path: string): Markdown {
  const lines = readFileSync(path, "utf8").split("\n");
  const blocks: Block[] = [];
  const inline: InlineCommand[] = [];
  let section = "";
  for (let i = 0; i < lines.length; i++) {
    const fence = FENCE.exec(lines[i]!);
    if (fence !== null) {
      const [, indent = "", ticks = "```", lang = ""] = fence;
      const body: string[] = [];
      let j = i + 1;
      for (; j < lines.length && !lines[j]!.trimStart().startsWith(ticks); j++) {
        body.push(lines[j]!.startsWith(indent) ? lines[j]!.slice(indent.length) : lines[j]!);
      }
      blocks.push({ lang, line: i + 2, lines: body, section });
      i = j;
      continue;
    }
    const heading = HEADING.exec(lines[i]!);
    if (heading !== null) section = heading[1]!;
    for (const m of lines[i]!.matchAll(/`([^`]+)`/g)) inline.push({ line: i + 1, text: m[1]!, section });
  }
  return { blocks, inline };
}

export interface ShellCommand {
  /** 1-based line where the command starts. */
  readonly line: number;
  /** As a shell reads it: physical lines joined with their `\` + newline kept, prompt removed. */
  readonly text: string;
  /** The output the README shows after it (blocks with `$ ` prompts only). */
  readonly output: readonly string[];
}

/** True when a line continues on the next: it ends in an odd number of backslashes. */
function continues(line: string): boolean {
  const m = /\\+$/.exec(line);
  return m !== null && m[0].length % 2 === 1;
}

/**
 * The commands of a shell block. In a block with `$ ` prompts the commands are
 * the prompted lines and everything else is their output; without prompts
 * every line is a command. Comment-only and empty lines are skipped. A line
 * ending in `\` continues on the next, exactly as in a shell (the text keeps
 * the backslash-newline, for the shell to join).
 */
export function shellCommands(block: Block): ShellCommand[] {
  const prompted = block.lines.some((l) => l.startsWith("$ "));
  const out: { line: number; text: string; output: string[] }[] = [];
  for (let i = 0; i < block.lines.length; i++) {
    let line = block.lines[i]!;
    if (prompted && !line.startsWith("$ ")) {
      if (line.trim() !== "") out.at(-1)?.output.push(line);
      continue;
    }
    if (prompted) line = line.slice(2);
    if (line.trim() === "" || line.trimStart().startsWith("#")) continue;
    const start = i;
    let text = line;
    while (continues(line) && i + 1 < block.lines.length) {
      line = block.lines[++i]!;
      text += `\n${line}`;
    }
    out.push({ line: block.line + start, text, output: [] });
  }
  return out;
}
