/**
 * Start-up checks that need nothing but this machine. `runPreflight` is what
 * the CLI runs, at start-up and on each reload, before a VM is resolved: the
 * backend's optional `preflight(specs)` (see contract.ts), every problem at
 * once. The rest are the checks backends share: a --state-dir they can write
 * in, a program as spawn would find it, a file or directory a VM needs.
 */
import { accessSync, constants, statSync, type Stats } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { delimiter, dirname, join, resolve } from "node:path";
import type { VmSpec } from "../config/index.js";
import { ConfigError, PreflightError, UsageError, describeError, type JitsuError } from "../errors/index.js";
import type { VmBackend } from "./contract.js";

/** The backend's local checks of `specs`; a PreflightError with every problem found. */
export async function runPreflight(backend: VmBackend, specs: readonly VmSpec[]): Promise<void> {
  const problems = (await backend.preflight?.(specs)) ?? [];
  if (problems.length > 0) throw new PreflightError(problems);
}

/** `read`'s value; or, when it throws a ConfigError, undefined and the error added to `problems`. */
export function noteConfigError<T>(problems: JitsuError[], read: () => T): T | undefined {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems.push(err);
    return undefined;
  }
}

/**
 * How a backend's parser (qemu's parseMachine, libxl's planDomain) reports a
 * file or program missing on this machine: thrown as a ConfigError naming the
 * VM and the key, or, given `problems` (the preflight), added there so that
 * the parser goes on and finds the others.
 */
export function missingReporter(
  vm: string,
  problems: ConfigError[] | undefined,
): (message: string, key: string) => void {
  return (message, key) => {
    const err = new ConfigError(message, { vm, key });
    if (problems === undefined) throw err;
    problems.push(err);
  };
}

/**
 * Creates `dir` (the backend's folder under --state-dir) if missing, as the
 * backend would, and writes a small file there: a read-only, full or
 * forbidden directory is a UsageError naming --state-dir, else null.
 */
export async function stateDirProblem(
  backend: string,
  dir: string,
  mode?: number,
): Promise<UsageError | null> {
  const probe = join(dir, `.jitsu-write-test-${process.pid}`);
  try {
    await mkdir(dir, { recursive: true, ...(mode === undefined ? {} : { mode }) });
    // A few bytes, not an empty file: a full file system still makes empty files.
    await writeFile(probe, "jitsu checks that it can write here\n");
    return null;
  } catch (err) {
    return new UsageError(
      `the ${backend} backend cannot write its files in ${dir}: ${fsReason(whyNotCreated(dir, err))}`,
      "--state-dir",
    );
  } finally {
    await rm(probe, { force: true }).catch(() => undefined);
  }
}

/** Where spawn finds a program, or what is wrong: a phrase to follow "program", "QEMU binary"... */
export type ProgramLookup = { readonly path: string } | { readonly problem: string };

/**
 * Finds a program as spawn (execvp) does: a name with a slash is taken
 * relative to `cwd` (the child's working directory), a bare name is searched
 * in `searchPath` (the child's PATH; an empty or relative entry is relative to
 * `cwd` too) for a regular file we may execute.
 */
export function lookupProgram(
  name: string,
  { cwd = process.cwd(), searchPath = process.env["PATH"] ?? "/usr/bin:/bin" } = {},
): ProgramLookup {
  if (name.includes("/")) {
    const path = resolve(cwd, name);
    const st = statOrNull(path);
    if (st === null) return { problem: `'${path}' does not exist` };
    if (st.isDirectory()) return { problem: `'${path}' is a directory` };
    if (!accessible(path, constants.X_OK)) return { problem: `'${path}' is not executable (chmod +x?)` };
    return { path };
  }
  let notExecutable: string | undefined;
  for (const dir of searchPath.split(delimiter)) {
    const path = resolve(cwd, dir, name);
    const st = statOrNull(path);
    if (st === null || !st.isFile()) continue;
    if (accessible(path, constants.X_OK)) return { path };
    notExecutable ??= path;
  }
  if (notExecutable !== undefined) {
    return { problem: `'${name}' is on PATH as ${notExecutable}, which is not executable (chmod +x?)` };
  }
  return { problem: `'${name}' is not on PATH (${searchPath})` };
}

/** What keeps `path` from being read as a VM's file (a kernel, a disk image), or null. */
export function fileProblem(path: string, shown: string = path): string | null {
  const st = statOrNull(path);
  if (st === null) return `file '${shown}' does not exist`;
  if (st.isDirectory()) return `'${shown}' is a directory, not a file`;
  if (!accessible(path, constants.R_OK)) return `cannot read '${shown}' (permission denied)`;
  return null;
}

/** What keeps `path` (relative: to jitsu's working directory) from being a process's working directory, or null. */
export function directoryProblem(path: string): string | null {
  const abs = resolve(path);
  const st = statOrNull(abs);
  if (st === null) return `directory '${abs}' does not exist`;
  if (!st.isDirectory()) return `'${abs}' is not a directory`;
  if (!accessible(abs, constants.X_OK)) return `cannot enter directory '${abs}' (permission denied)`;
  return null;
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

function accessible(path: string, mode: number): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

/**
 * A recursive mkdir that fails says ENOENT even on a read-only file system
 * (Node 20): ask the nearest folder that exists why it cannot be written in.
 */
function whyNotCreated(dir: string, err: unknown): unknown {
  if ((err as { code?: unknown } | null)?.code !== "ENOENT") return err;
  for (let parent = dirname(dir); ; parent = dirname(parent)) {
    if (statOrNull(parent) !== null) {
      try {
        accessSync(parent, constants.W_OK);
        return err;
      } catch (denied) {
        return denied;
      }
    }
    if (parent === dirname(parent)) return err;
  }
}

/** A file-system error as a user reads it, the system's code kept. */
function fsReason(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case "EROFS":
      return "the file system is read-only (EROFS); choose a writable directory with --state-dir";
    case "ENOSPC":
    case "EDQUOT":
      return `the file system is full (${code}); free some space or choose another directory with --state-dir`;
    case "EACCES":
    case "EPERM":
      return `permission denied (${code}); run jitsu as a user who may write there, or choose another directory with --state-dir`;
    case "ENOTDIR":
    case "EEXIST":
      return `a part of the path is a file, not a directory (${code})`;
    default:
      return describeError(err);
  }
}
