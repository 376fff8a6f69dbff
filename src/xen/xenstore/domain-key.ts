/**
 * `wait_for_key` as the original reads it: a key relative to
 * /local/domain/<domid>/ (or an absolute path), waited for with a watch.
 */
import { describeError } from "../../errors/index.js";
import { XenstoreError, type XenstoreClient } from "./client.js";

/** Errors that blame xenstored (gone, refused, reset, hung), not the domain. */
const DAEMON_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EPIPE"]);

/**
 * Whether `err` blames xenstored (connection lost, refused, reset, or a
 * request left unanswered: ETIMEDOUT), not the domain: the backends make such
 * a failure a `BackendError` marked `unavailable`.
 */
export function blamesXenstored(err: unknown): boolean {
  return err instanceof XenstoreError && DAEMON_CODES.has(err.code);
}

export function domainKeyPath(domid: number, key: string): string {
  return key.startsWith("/") ? key : `/local/domain/${domid}/${key.replace(/^\/+/, "")}`;
}

/**
 * Resolves once the key exists; rejects with the abort reason when `signal`
 * aborts, or with `fail(message, detail, cause, unavailable)` when xenstore
 * cannot be asked (`unavailable`: xenstored is gone or hung, not the domain's
 * fault), also when that is why the wait ended at the abort (the client's
 * ETIMEDOUT: a request left unanswered), so that the summoner does not count
 * a hung xenstored against the VM.
 */
export async function waitForDomainKey(
  xs: XenstoreClient,
  domid: number,
  key: string,
  signal: AbortSignal,
  fail: (message: string, detail: string, cause: unknown, unavailable: boolean) => Error,
): Promise<void> {
  const path = domainKeyPath(domid, key);
  try {
    await xs.waitForKey(path, signal);
  } catch (err) {
    const unavailable = blamesXenstored(err);
    if (signal.aborted && !unavailable) throw err;
    throw fail(`cannot wait for xenstore key ${path}`, describeError(err), err, unavailable);
  }
}
