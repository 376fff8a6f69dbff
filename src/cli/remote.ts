/**
 * The client side of `jitsu status|start|stop`: HTTP requests to a running
 * jitsu's --http endpoint (GET /status, POST /vms/NAME/start|stop), with
 * errors a user can act on: nothing listening there, not a jitsu, token
 * missing or wrong, no such VM (with the closest name).
 */
import { request } from "node:http";
import { closest } from "../config/index.js";

/** A failure of a remote command: one line for the user; `exitCode` 1 (or 2 for usage). */
export class RemoteError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** Where the address came from, for the "how to point at it" hint. */
  readonly from: string;
}

/** One VM as GET /status gives it (fields the table shows; others are kept for --json). */
export interface RemoteVm {
  readonly label: string;
  readonly name: string | null;
  readonly uuid: string | null;
  readonly state: string;
  readonly dns: readonly string[];
  readonly ips: readonly string[];
  readonly stopMode: string;
  readonly startedAt: string | null;
  readonly totalStarts: number;
  readonly totalRequests: number;
  readonly lastRequest: string | null;
  readonly lastError: string | null;
  readonly ttl?: number;
  /** When the state last changed, and a ready VM's earliest idle stop (jitsu 0.1 with the events work). */
  readonly stateSince?: string | null;
  readonly idleStopAt?: string | null;
  readonly group?: string | null;
}

export interface RemoteStatus {
  readonly version?: string;
  readonly now?: string;
  readonly uptimeSeconds?: number;
  readonly vms: readonly RemoteVm[];
  readonly [key: string]: unknown;
}

export function showEndpoint(e: Endpoint): string {
  return `http://${e.host.includes(":") ? `[${e.host}]` : e.host}:${e.port}`;
}

interface Reply {
  readonly status: number;
  readonly body: unknown;
  readonly text: string;
}

function call(
  endpoint: Endpoint,
  method: "GET" | "POST",
  path: string,
  token: string | undefined,
  timeoutMs: number,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: endpoint.host,
        port: endpoint.port,
        method,
        path,
        headers: {
          accept: "application/json",
          ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
        },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (err) => reject(connectionError(endpoint, err)));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body, text });
        });
      },
    );
    req.on("timeout", () => {
      req.destroy(
        new RemoteError(
          `no answer from ${showEndpoint(endpoint)} within ${timeoutMs / 1000} s: is that jitsu's --http address (or is that jitsu stuck)?`,
        ),
      );
    });
    req.on("error", (err) => reject(err instanceof RemoteError ? err : connectionError(endpoint, err)));
    req.end();
  });
}

function connectionError(endpoint: Endpoint, err: Error): RemoteError {
  const code = (err as { code?: string }).code;
  const at = showEndpoint(endpoint);
  const point = `point at it with --http ADDR:PORT (as given to jitsu's --http), JITSU_HTTP or --config FILE`;
  if (code === "ECONNREFUSED") {
    return new RemoteError(
      `cannot reach jitsu at ${at} (connection refused, ${endpoint.from}): is jitsu running with --http ${endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}? If it listens elsewhere, ${point}`,
    );
  }
  if (code === "EHOSTUNREACH" || code === "ENETUNREACH" || code === "EADDRNOTAVAIL") {
    return new RemoteError(`cannot reach ${at} (${code}); ${point}`);
  }
  if (code === "ECONNRESET" || code === "EPIPE" || code === "HPE_INVALID_CONSTANT") {
    return new RemoteError(`${at} closed the connection (${code}): is that jitsu's --http address? ${point}`);
  }
  return new RemoteError(
    `cannot reach jitsu at ${at}: ${err.message}${code === undefined ? "" : ` (${code})`}`,
  );
}

function errorText(reply: Reply): string {
  const e = (reply.body as { error?: unknown } | undefined)?.error;
  return typeof e === "string" ? e : `HTTP ${reply.status}`;
}

/** GET /status. */
export async function fetchStatus(endpoint: Endpoint, timeoutMs = 10_000): Promise<RemoteStatus> {
  const reply = await call(endpoint, "GET", "/status", undefined, timeoutMs);
  const body = reply.body as Partial<RemoteStatus> | undefined;
  if (reply.status !== 200 || body === undefined || !Array.isArray(body.vms)) {
    throw new RemoteError(
      `${showEndpoint(endpoint)}/status did not answer as jitsu does (HTTP ${reply.status}${
        body === undefined ? ", not JSON" : ""
      }): is that jitsu's --http address?`,
    );
  }
  return body as RemoteStatus;
}

/** The VMs named (label, name, uuid or a DNS name, as the admin endpoints take them), in the order asked. */
export function selectVms(vms: readonly RemoteVm[], names: readonly string[]): RemoteVm[] {
  if (names.length === 0) return [...vms];
  const out: RemoteVm[] = [];
  for (const name of names) {
    const vm = findVm(vms, name);
    if (vm === undefined) throw unknownVm(vms, name);
    if (!out.includes(vm)) out.push(vm);
  }
  return out;
}

function findVm(vms: readonly RemoteVm[], name: string): RemoteVm | undefined {
  const lower = name.toLowerCase().replace(/\.$/, "");
  return (
    vms.find((vm) => vm.label === name) ??
    vms.find((vm) => vm.name === name || vm.uuid === name) ??
    vms.find((vm) => vm.dns.includes(lower))
  );
}

export function unknownVm(vms: readonly RemoteVm[], name: string): RemoteError {
  const candidates = [...new Set(vms.flatMap((vm) => [vm.label, ...vm.dns]))];
  const near = closest(name, candidates) ?? closest(name.toLowerCase(), candidates);
  const hint =
    near !== undefined
      ? `; did you mean '${near}'?`
      : vms.length === 0
        ? " (that jitsu has no VMs)"
        : vms.length <= 10
          ? ` (its VMs: ${vms.map((v) => v.label).join(", ")})`
          : " (see jitsu status)";
  return new RemoteError(`no VM '${name}' in that jitsu${hint}`);
}

/** POST /vms/NAME/start|stop: the VM's label and state after. */
export async function adminAction(
  endpoint: Endpoint,
  action: "start" | "stop",
  name: string,
  token: string | undefined,
  timeoutMs: number,
): Promise<{ vm: string; state: string }> {
  if (token === undefined) {
    throw new RemoteError(
      `jitsu ${action} needs the admin token: give --http-token TOKEN or set JITSU_HTTP_TOKEN (the token jitsu runs with)`,
      2,
    );
  }
  const reply = await call(endpoint, "POST", `/vms/${encodeURIComponent(name)}/${action}`, token, timeoutMs);
  const body = reply.body as { vm?: string; state?: string } | undefined;
  switch (reply.status) {
    case 200:
      return { vm: body?.vm ?? name, state: body?.state ?? "unknown" };
    case 401:
      throw new RemoteError(
        `${showEndpoint(endpoint)} wants a token: give --http-token TOKEN or set JITSU_HTTP_TOKEN`,
      );
    case 403:
      if (/disabled/.test(errorText(reply)))
        throw new RemoteError(
          `the admin endpoints of the jitsu at ${showEndpoint(endpoint)} are off: it runs without --http-token (start it with --http-token TOKEN, or http-token: in its config file)`,
        );
      throw new RemoteError(
        `the jitsu at ${showEndpoint(endpoint)} refused the token (wrong token): give the one it runs with (--http-token or JITSU_HTTP_TOKEN)`,
      );
    case 404: {
      if (body === undefined || !/no VM/.test(errorText(reply)))
        throw new RemoteError(
          `${showEndpoint(endpoint)} has no admin endpoints: is that jitsu's --http address?`,
        );
      const status = await fetchStatus(endpoint).catch(() => null);
      throw status === null ? new RemoteError(errorText(reply)) : unknownVm(status.vms, name);
    }
    case 502:
    case 504:
    case 500:
      throw new RemoteError(`${action} of VM '${body?.vm ?? name}' failed: ${errorText(reply)}`);
    default:
      throw new RemoteError(`${showEndpoint(endpoint)} answered HTTP ${reply.status}: ${errorText(reply)}`);
  }
}
