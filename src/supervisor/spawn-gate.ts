/**
 * A process spawned ahead of time, waiting to become the next command: a
 * `/bin/sh` in a process group of its own (detached), its stdout and stderr
 * pipes to us, blocked reading one line from its fd 3. `open(command)` writes
 * that line, `cd`, the environment and `exec` of the command, and the shell
 * execs it: same pid, same start time, same pipes, so the process is then our
 * child exactly as if `spawn` had made it (its exit status, its output).
 *
 * Why: Node's `child_process.spawn` forks the whole Node process and blocks
 * the event loop until the child has exec'd, 5-25 ms for a jitsu of 70-90 MB
 * (more on a busy machine: bench/, summon), on the cold path of a query.
 * The gate pays that fork ahead of time, after the previous start; a start
 * then costs one write, and the exec of a 1 MB shell.
 *
 * Used only where it gives the same result as `spawn` (see `GateCommand` and
 * `ProcessSupervisor.spawn`); otherwise the supervisor spawns as before. A
 * gate nobody uses ends when we close its fd 3 (`close`), or when we die (the
 * shell reads EOF and exits 0), so it never outlives jitsu.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, isAbsolute, join, resolve } from "node:path";
import type { Writable } from "node:stream";

/** Reads one line from fd 3, stops reading it, and runs the line (the `cd`, the `export`s and the `exec`). */
const GATE_SCRIPT = 'IFS= read -r line <&3 || exit 0; exec 3<&-; eval "$line"';
const GATE_ARGV = ["/bin/sh", "-c", GATE_SCRIPT] as const;
/** A name `export` takes without quoting, so the environment is passed exactly. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** What the gate runs: as SpawnCommand, without extra fds (a gate has none to give). */
export interface GateCommand {
  readonly argv: readonly [string, ...string[]];
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
}

export class SpawnGate {
  private constructor(
    private readonly child: ChildProcess,
    /** The environment the shell started with: `open` exports and unsets the difference. */
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  /** Spawns the waiting shell (off the cold path); rejects when /bin/sh cannot run. */
  static async create(): Promise<SpawnGate> {
    const env = { ...process.env };
    const child = spawn(GATE_ARGV[0], GATE_ARGV.slice(1), {
      env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe", "pipe"],
    });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    // Written once and closed; the shell's end closing may reset it (ECONNRESET on our end): nothing to act on.
    (child.stdio[3] as Writable).on("error", () => undefined);
    const gate = new SpawnGate(child, env);
    // Waiting, it holds nothing open: Node may exit (and the shell then reads EOF).
    gate.setRef(false);
    return gate;
  }

  /** Whether a command line (/proc/PID/cmdline) is a gate's: the shell has not exec'd the command yet. */
  static isGate(cmdline: readonly string[]): boolean {
    return cmdline.length === GATE_ARGV.length && cmdline.every((w, i) => w === GATE_ARGV[i]);
  }

  /** Whether it still waits for a command. */
  get waiting(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null && this.control.writable;
  }

  /**
   * The line that turns the gate into `command`, or null when the gate cannot
   * run it as spawn would: a program spawn would not find (spawn reports
   * that, with its code), a working directory that is not one, an
   * environment name a shell cannot export.
   */
  script(command: GateCommand): string | null {
    const [file, ...args] = command.argv;
    const env = command.env ?? process.env;
    if (command.cwd !== undefined && !isDirectory(command.cwd)) return null;
    if (file.startsWith("-") || !isFound(file, command.cwd, env["PATH"])) return null;
    const parts: string[] = [];
    if (command.cwd !== undefined) parts.push(`cd ${quote(command.cwd)} || exit 127`);
    for (const name of Object.keys(this.env)) {
      if (env[name] === undefined) {
        if (!ENV_NAME.test(name)) return null;
        parts.push(`unset ${name}`);
      }
    }
    for (const [name, value] of Object.entries(env)) {
      if (value === undefined || value === this.env[name]) continue;
      if (!ENV_NAME.test(name) || value.includes("\0")) return null;
      parts.push(`export ${name}=${quote(value)}`);
    }
    parts.push(`exec ${[file, ...args].map(quote).join(" ")}`);
    const line = parts.join("; ");
    return line.includes("\n") || line.includes("\0") ? null : `${line}\n`;
  }

  /** Hands `script(command)` to the shell; the gate is then that command's process (never reuse it). */
  open(script: string): ChildProcess {
    this.setRef(true);
    this.control.end(script);
    return this.child;
  }

  /** Ends a gate nobody used: the shell reads EOF and exits. */
  close(): void {
    this.control.destroy();
  }

  private get control(): Writable {
    return this.child.stdio[3] as Writable;
  }

  /** Whether the shell and its pipes hold Node's event loop open. */
  private setRef(on: boolean): void {
    if (on) this.child.ref();
    else this.child.unref();
    for (const stream of [this.child.stdout, this.child.stderr, this.child.stdio[3]]) {
      const handle = stream as unknown as { ref?: () => void; unref?: () => void } | null;
      if (on) handle?.ref?.();
      else handle?.unref?.();
    }
  }
}

/** A single-quoted word for /bin/sh. */
function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Whether spawn would find `file`: with a slash, from `cwd`; else on `searchPath`. */
function isFound(file: string, cwd: string | undefined, searchPath: string | undefined): boolean {
  const dirs = file.includes("/") ? [""] : (searchPath ?? "").split(delimiter).filter((d) => d !== "");
  for (const dir of dirs) {
    const path = file.includes("/")
      ? isAbsolute(file)
        ? file
        : resolve(cwd ?? process.cwd(), file)
      : join(resolve(cwd ?? process.cwd(), dir), file);
    try {
      accessSync(path, constants.X_OK);
      if (!statSync(path).isDirectory()) return true;
    } catch {
      // not here
    }
  }
  return false;
}
