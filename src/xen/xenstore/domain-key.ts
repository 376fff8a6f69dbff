/**
 * `wait_for_key` as the original reads it: a key relative to
 * /local/domain/<domid>/ (or an absolute path), waited for with a watch.
 */
import { describeError } from "../../errors/index.js";
import type { XenstoreClient } from "./client.js";

export function domainKeyPath(domid: number, key: string): string {
  return key.startsWith("/") ? key : `/local/domain/${domid}/${key.replace(/^\/+/, "")}`;
}

/**
 * Resolves once the key exists; rejects with the abort reason when `signal`
 * aborts, or with `fail(message, detail)` when xenstore cannot be asked.
 */
export async function waitForDomainKey(
  xs: XenstoreClient,
  domid: number,
  key: string,
  signal: AbortSignal,
  fail: (message: string, detail: string, cause: unknown) => Error,
): Promise<void> {
  const path = domainKeyPath(domid, key);
  try {
    await xs.waitForKey(path, signal);
  } catch (err) {
    if (signal.aborted) throw err;
    throw fail(`cannot wait for xenstore key ${path}`, describeError(err), err);
  }
}
