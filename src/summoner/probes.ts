/**
 * Readiness probes (CONFIG key `ready`): a TCP connect or an HTTP GET answered
 * with 2xx/3xx. One attempt is bounded by its own short timeout; the summoner
 * retries on its clock until the start timeout.
 */
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import type { ReadyProbe } from "../config/index.js";

export const PROBE_ATTEMPT_TIMEOUT_MS = 1000;

/** One attempt: true when the probe passes, false when it does not (yet). Never rejects. */
export function probeOnce(probe: ReadyProbe, timeoutMs = PROBE_ATTEMPT_TIMEOUT_MS): Promise<boolean> {
  return probe.kind === "tcp" ? tcpOnce(probe.host, probe.port, timeoutMs) : httpOnce(probe.url, timeoutMs);
}

function tcpOnce(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

function httpOnce(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      resolve(ok);
    };
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
