/**
 * Readiness probes (CONFIG key `ready`): a TCP connect or an HTTP GET answered
 * with 2xx/3xx. One attempt is bounded by its own short timeout (and ends at
 * once when `cancel` aborts); the summoner starts attempts on its clock until
 * one passes or the start times out (readiness.ts).
 */
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import type { ReadyProbe } from "../config/index.js";

export const PROBE_ATTEMPT_TIMEOUT_MS = 1000;

/**
 * How one attempt ended: `passed`; `refused` (ECONNREFUSED: nothing listens
 * yet, the guest's kernel answered with a reset and its service saw
 * nothing, so the next attempt can come soon); `failed` (anything else: an
 * HTTP status that is not 2xx/3xx, a reset or an error after connecting, the
 * attempt's timeout, or `cancel`).
 */
export type ProbeOutcome = "passed" | "refused" | "failed";

/**
 * One attempt: true when the probe passes, false when it does not (yet), or
 * when `cancel` aborts first (its socket is closed). Never rejects.
 */
export async function probeOnce(
  probe: ReadyProbe,
  timeoutMs = PROBE_ATTEMPT_TIMEOUT_MS,
  cancel?: AbortSignal,
): Promise<boolean> {
  return (await probeAttempt(probe, timeoutMs, cancel)) === "passed";
}

/** One attempt, and how it ended (see ProbeOutcome). Never rejects. */
export function probeAttempt(
  probe: ReadyProbe,
  timeoutMs = PROBE_ATTEMPT_TIMEOUT_MS,
  cancel?: AbortSignal,
): Promise<ProbeOutcome> {
  if (cancel?.aborted === true) return Promise.resolve("failed");
  return probe.kind === "tcp"
    ? tcpOnce(probe.host, probe.port, timeoutMs, cancel)
    : httpOnce(probe.url, timeoutMs, cancel);
}

const outcomeOf = (err: NodeJS.ErrnoException): ProbeOutcome =>
  err.code === "ECONNREFUSED" ? "refused" : "failed";

function tcpOnce(host: string, port: number, timeoutMs: number, cancel?: AbortSignal): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (outcome: ProbeOutcome): void => {
      cancel?.removeEventListener("abort", onCancel);
      socket.destroy();
      resolve(outcome);
    };
    const onCancel = (): void => done("failed");
    cancel?.addEventListener("abort", onCancel, { once: true });
    socket.setTimeout(timeoutMs, () => done("failed"));
    socket.once("connect", () => done("passed"));
    socket.once("error", (err) => done(outcomeOf(err)));
  });
}

function httpOnce(url: string, timeoutMs: number, cancel?: AbortSignal): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (outcome: ProbeOutcome): void => {
      if (settled) return;
      settled = true;
      cancel?.removeEventListener("abort", onCancel);
      resolve(outcome);
    };
    const onCancel = (): void => {
      req.destroy();
      done("failed");
    };
    cancel?.addEventListener("abort", onCancel, { once: true });
    const req = httpRequest(url, { method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      done(status >= 200 && status < 400 ? "passed" : "failed");
    });
    req.once("timeout", () => {
      req.destroy();
      done("failed");
    });
    req.once("error", (err) => done(outcomeOf(err)));
    req.end();
  });
}

/** How a probe is written in CONFIG, for logs and timeout messages. */
export function describeProbe(probe: ReadyProbe): string {
  return probe.kind === "tcp" ? `tcp:${probe.host}:${probe.port}` : probe.url;
}
