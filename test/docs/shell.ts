/**
 * What a POSIX shell makes of a command line, asked of the real one (bash):
 * quotes, escapes, `\` + newline continuations and comments exactly as a
 * reader's shell would treat them.
 */
import { execFileSync } from "node:child_process";

/**
 * The words of `text` (one simple command, no pipes), as bash splits them,
 * with `env` added to the environment for `$NAME`; globbing is off, so
 * `ip=[::1]` stays as written. Throws on a shell syntax error such as an
 * unclosed quote.
 */
export function shellWords(text: string, env: Readonly<Record<string, string>> = {}): string[] {
  const out = execFileSync("bash", ["-c", `set -f; printf '%s\\0' ${text}`], {
    encoding: "utf8",
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 10_000,
  });
  return out.split("\0").slice(0, -1);
}
