/** A small HTTP client and a Prometheus text parser for tests of the --http endpoint. */
import { strict as assert } from "node:assert";
import { request } from "node:http";

export interface HttpReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export function httpCall(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  host = "127.0.0.1",
): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, headers, agent: false, timeout: 20_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`HTTP ${method} ${path}: timeout`)));
    req.on("error", reject);
    req.end();
  });
}

export interface StatusVm {
  label: string;
  state: string;
  dns: string[];
  ips: string[];
  totalStarts: number;
  totalRequests: number;
  startedAt: string | null;
  lastRequest: string | null;
}

/** GET /status, parsed; fails on anything but 200 with JSON. */
export async function getStatus(port: number): Promise<Map<string, StatusVm>> {
  const res = await httpCall(port, "GET", "/status");
  assert.equal(res.status, 200, res.body);
  const body = JSON.parse(res.body) as { vms: StatusVm[] };
  return new Map(body.vms.map((vm) => [vm.label, vm]));
}

/** Prometheus text format 0.0.4: every sample line parsed; a malformed line fails the test. */
export function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    // prom-client prints NaN as "Nan" (an empty event-loop histogram); Prometheus reads
    // values with Go's ParseFloat, which takes NaN and Inf in any case.
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|nan|[+-]inf)$/i.exec(line);
    assert.ok(m !== null, `malformed metrics line: ${line}`);
    samples.set(m[1]!, /^nan$/i.test(m[2]!) ? NaN : Number(m[2]!.replace(/inf$/i, "Infinity")));
  }
  return samples;
}

export async function getMetrics(port: number): Promise<Map<string, number>> {
  const res = await httpCall(port, "GET", "/metrics");
  assert.equal(res.status, 200, res.body);
  assert.match(String(res.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(res.body);
}

/** GET / on 127.0.0.1:PORT: the body, or a rejection (refused, reset, or no answer within `timeoutMs`). */
export function httpGet(port: number, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/", agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve(body));
    });
    req.on("timeout", () => req.destroy(new Error("HTTP timeout")));
    req.on("error", reject);
    req.end();
  });
}
