/**
 * One jitsu of the soak: the built CLI with one backend, restarted after a
 * SIGKILL, frozen with SIGSTOP; its output appended to a log file; the times
 * it could not answer (killed, restarting, stopped) kept, since queries sent
 * then are lost to the fault, not to jitsu.
 */
import { appendFileSync } from "node:fs";
import { request } from "node:http";
import { fileURLToPath } from "node:url";
import { startProcess, type BenchProcess } from "../procs.js";

/** dist/src/cli/main.js, from dist/bench/chaos/. */
const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export interface ChaosVm {
  readonly label: string;
  readonly name: string;
  readonly ip: string;
}

export interface StatusVm {
  readonly label: string;
  readonly state: string;
  readonly startedAt: string | null;
  readonly totalRequests: number;
  readonly nextTry: string | null;
  readonly givenUp: boolean;
}

export interface StatusBody {
  readonly vms: readonly StatusVm[];
  readonly store: { readonly ok: boolean } | null;
}

export class Instance {
  proc: BenchProcess | null = null;
  /** Spans when it could not answer: [from, to] (to = Infinity while it lasts). */
  readonly outages: { from: number; to: number }[] = [];
  restarts = 0;

  constructor(
    readonly backend: string,
    readonly args: readonly string[],
    readonly dns: number,
    readonly http: number,
    readonly startTimeoutS: number,
    readonly vms: readonly ChaosVm[],
    private readonly logFile: string,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  async start(): Promise<void> {
    this.proc = await startProcess(`jitsu -x ${this.backend}`, process.execPath, [CLI, ...this.args], {
      env: this.env,
      readyLine: (line) => /Serving \/status/.test(line),
      readyTimeoutMs: 120_000,
    });
    // The lines up to "Serving /status" (adoptions among them), then the rest as they come.
    appendFileSync(this.logFile, `--- started (pid ${this.proc.pid}) at ${new Date().toISOString()} ---\n`);
    appendFileSync(this.logFile, this.proc.lines.map((l) => `${l}\n`).join(""));
    this.proc.onLine((line) => appendFileSync(this.logFile, `${line}\n`));
  }

  /** SIGKILL, a pause of `downMs`, and a start: the outage lasts until it serves again. */
  async killAndRestart(downMs: number): Promise<void> {
    const outage = { from: Date.now(), to: Infinity };
    this.outages.push(outage);
    this.proc?.child.kill("SIGKILL");
    await this.proc?.exited;
    appendFileSync(this.logFile, `--- killed (SIGKILL) at ${new Date().toISOString()} ---\n`);
    await new Promise((r) => setTimeout(r, downMs));
    await this.start();
    this.restarts++;
    outage.to = Date.now();
  }

  /** SIGSTOP for `ms`, then SIGCONT. */
  async freeze(ms: number): Promise<void> {
    const outage = { from: Date.now(), to: Infinity };
    this.outages.push(outage);
    this.proc?.child.kill("SIGSTOP");
    await new Promise((r) => setTimeout(r, ms));
    this.proc?.child.kill("SIGCONT");
    outage.to = Date.now();
  }

  /** Whether it could not answer at some time in [from, to]. */
  wasOut(from: number, to: number): boolean {
    return this.outages.some((o) => o.from <= to && o.to >= from);
  }

  /** Whether it is serving now (not killed, restarting or stopped). */
  get serving(): boolean {
    return this.proc?.running === true && !this.outages.some((o) => o.to === Infinity);
  }

  async status(): Promise<StatusBody> {
    return JSON.parse(await httpGet(this.http, "/status")) as StatusBody;
  }

  async stop(): Promise<void> {
    this.proc?.child.kill("SIGCONT");
    await this.proc?.stop(30_000);
  }
}

function httpGet(port: number, path: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: ${res.statusCode}`)),
      );
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on("error", reject);
    req.end();
  });
}
