/**
 * The process backend's CONFIG keys (dns and ip are common keys; ip is
 * required: a process has no address of its own to discover).
 */
import type { KeySpec } from "../../config/index.js";

/** stop_grace's default. */
export const DEFAULT_GRACE_SECONDS = 10;

export const PROCESS_KEYS: readonly KeySpec[] = [
  {
    key: "name",
    type: "string",
    doc: "Name of the VM, used in logs and the stats table (defaults to the first DNS name).",
  },
  {
    key: "exec",
    type: "string",
    required: true,
    doc: "Command to run (required), split on spaces; '...' and \"...\" quote, \\ escapes. Runs without a shell, in its own process group. Values cannot contain commas: put longer scripts in a file.",
  },
  { key: "cwd", type: "path", doc: "Working directory of the command (default: jitsu's)." },
  {
    key: "env",
    type: "string",
    repeatable: true,
    doc: "Environment variable for the command, as env=NAME=VALUE. Can be set more than once. JITSU_VM is always set to the VM's label.",
  },
  {
    key: "stop_grace",
    type: "seconds",
    doc: `Seconds between SIGTERM and SIGKILL when the VM is shut down (default ${DEFAULT_GRACE_SECONDS}).`,
  },
];
