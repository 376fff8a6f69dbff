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
 * One attempt: true when the probe passes, false when it does not (yet), or
 * when `cancel` aborts first (its socket is closed). Never rejects.
 */
export function probeOnce(
  probe: ReadyProbe,
  timeoutMs = PROBE_ATTEMPT_TIMEOUT_MS,
  cancel?: AbortSignal,
): Promise<boolean> {
  if (cancel?.aborted === true) return Promise.resolve(false);
  return probe.kind === "tcp"
    ? tcpOnce(probe.host, probe.port, timeoutMs, cancel)
    : httpOnce(probe.url, timeoutMs, cancel);
}

function tcpOnce(host: string, port: number, timeoutMs: number, cancel?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      cancel?.removeEventListener("abort", onCancel);
      socket.destroy();
      resolve(ok);
    };
    const onCancel = (): void => done(false);
    cancel?.addEventListener("abort", onCancel, { once: true });
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

function httpOnce(url: string, timeoutMs: number, cancel?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      cancel?.removeEventListener("abort", onCancel);
      resolve(ok);
    };
    const onCancel = (): void => {
      req.destroy();
      done(false);
    };
    cancel?.addEventListener("abort", onCancel, { once: true });
    const req = httpRequest(url, { method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      done(status >= 200 && status < 400);
    });
    req.once("timeout", () => {
      req.destroy();
      done(false);
    });
    req.once("error", () => done(false));
    req.end();
  });
}

/** How a probe is written in CONFIG, for logs and timeout messages. */
export function describeProbe(probe: ReadyProbe): string {
  return probe.kind === "tcp" ? `tcp:${probe.host}:${probe.port}` : probe.url;
}
