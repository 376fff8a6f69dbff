/**
 * Where the process backend keeps its pid files: `<state-dir>/process/<label>.json`,
 * so a jitsu started again finds the processes the previous one left running
 * (without --stop-on-exit) instead of starting a second copy. What is in them,
 * and when a pid is trusted, is the supervisor's (src/supervisor/).
 */
import { join } from "node:path";

export function pidFileDir(stateDir: string): string {
  return join(stateDir, "process");
}

export function pidFileName(label: string): string {
  return `${encodeURIComponent(label)}.json`;
}

export function pidFilePath(stateDir: string, label: string): string {
  return join(pidFileDir(stateDir), pidFileName(label));
}
