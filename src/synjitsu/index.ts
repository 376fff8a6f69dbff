/**
 * Synjitsu notifications (`--synjitsu UUID`, per VM `use_synjitsu`): when a VM
 * with use_synjitsu starts, the Synjitsu unikernel is sent 10 bytes, the VM's
 * MAC (6) then its IPv4 address (4), so it can send gratuitous ARP and hold
 * SYNs for the VM while it boots (the original's Synjitsu.send_garp).
 *
 * The original spoke vchan on port "synjitsu" directly. We reach it through
 * Xen's `vchan-socket-proxy` in client mode (tools/libvchan/vchan-socket-proxy.c:
 * `vchan-socket-proxy -m client DOMID NODEPATH SOCKET` listens on SOCKET and
 * connects to the vchan at NODEPATH for each connection), where NODEPATH is
 * what a Mirage vchan server on port "synjitsu" publishes for dom0:
 * /local/domain/DOMID/data/vchan/0/synjitsu. `--synjitsu-socket PATH` skips the
 * proxy and connects to a unix socket given by the user.
 *
 * Notifying never delays a DNS answer: `vmStarted` returns at once; sending,
 * connecting and reconnecting (with back-off) happen on their own.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, readdirSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { connect as netConnect, type Socket } from "node:net";
import { delimiter, join } from "node:path";
import type { VmBackend, VmRef } from "../backends/contract.js";
import type { Clock, Timer } from "../clock/index.js";
import { VmOptions, type VmSpec } from "../config/index.js";
import { describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";

/** The 10-byte message: MAC (6 bytes) then IPv4 address (4 bytes), network order. */
export function synjitsuMessage(mac: string, ipv4: string): Buffer {
  const macBytes = mac.split(/[:-]/).map((h) => parseInt(h, 16));
  if (macBytes.length !== 6 || macBytes.some((b) => !Number.isInteger(b) || b < 0 || b > 255)) {
    throw new Error(`'${mac}' is not a MAC address`);
  }
  const ip = ipv4.split(".").map(Number);
  if (ip.length !== 4 || ip.some((b) => !Number.isInteger(b) || b < 0 || b > 255))
    throw new Error(`'${ipv4}' is not an IPv4 address`);
  return Buffer.from([...macBytes, ...ip]);
}

/** Where Xen installs vchan-socket-proxy when it is not on PATH (Debian, upstream default prefix). */
function proxyCandidates(): string[] {
  const out: string[] = [];
  for (const root of ["/usr/lib", "/usr/local/lib"]) {
    try {
      for (const d of readdirSync(root))
        if (/^xen(-[\d.]+)?$/.test(d)) out.push(join(root, d, "bin", "vchan-socket-proxy"));
    } catch {
      // no such directory
    }
  }
  out.push("/usr/libexec/xen/bin/vchan-socket-proxy");
  return out;
}

export function findVchanSocketProxy(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const onPath = (env.PATH ?? "")
    .split(delimiter)
    .filter((d) => d !== "")
    .map((d) => join(d, "vchan-socket-proxy"));
  for (const candidate of [...onPath, ...proxyCandidates()]) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

export interface SynjitsuOptions {
  /** Finds the Synjitsu VM (by uuid) and its domain id, and the started VMs' MACs. */
  readonly backend: VmBackend;
  /** --synjitsu UUID */
  readonly uuid: string;
  /** --synjitsu-socket PATH: connect here instead of through vchan-socket-proxy. */
  readonly socketPath?: string;
  /** Where the proxy's listening socket is made. */
  readonly stateDir: string;
  /** vchan-socket-proxy; by default found on PATH or where Xen installs it. */
  readonly proxyCommand?: string;
  /** The VMs as they are now (the summoner's status, which follows config reloads). */
  readonly vms: () => readonly SynjitsuVm[];
  readonly clock: Clock;
  readonly log: Logger;
}

/** What the notifier needs to know of a VM. */
export interface SynjitsuVm {
  readonly label: string;
  readonly ips: readonly string[];
  readonly useSynjitsu: boolean;
}

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
const QUEUE_MAX = 256;
/** How long the proxy may take to create its listening socket. */
const PROXY_SOCKET_WAIT_MS = 5000;

export class SynjitsuNotifier {
  private socket: Socket | undefined;
  private connecting = false;
  private proxy: ChildProcess | undefined;
  private retry: Timer | undefined;
  private backoffMs = BACKOFF_FIRST_MS;
  private readonly queue: Buffer[] = [];
  private closed = false;
  /** Messages written to the socket so far (for stats and tests). */
  sent = 0;

  constructor(private readonly opts: SynjitsuOptions) {}

  /** Starts connecting in the background. */
  start(): void {
    this.connectSoon(0);
  }

  /** Summoner.onStarted hook: returns at once; the message follows when the MAC is known and Synjitsu is reachable. */
  vmStarted(label: string, ref: VmRef): void {
    const spec = this.opts.vms().find((v) => v.label === label);
    if (spec === undefined || !spec.useSynjitsu || this.closed) return;
    void this.notify(spec, ref).catch((err: unknown) =>
      this.opts.log.warn({ vm: label }, `synjitsu: not notified: ${describeError(err)}`),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    this.retry?.cancel();
    this.socket?.destroy();
    this.socket = undefined;
    this.stopProxy();
  }

  private async notify(spec: SynjitsuVm, ref: VmRef): Promise<void> {
    const ipv4 = spec.ips.find((ip) => ip.includes("."));
    if (ipv4 === undefined) {
      this.opts.log.info(
        { vm: spec.label },
        `VM '${spec.label}' has no IPv4 address. Synjitsu not notified.`,
      );
      return;
    }
    if (this.opts.backend.macs === undefined) {
      this.opts.log.warn(
        { vm: spec.label },
        `the ${this.opts.backend.name} backend cannot tell MAC addresses. Synjitsu not notified.`,
      );
      return;
    }
    const macs = await this.opts.backend.macs(ref);
    if (macs.length !== 1) {
      // As the original: with no MAC or several, which one the address belongs to is unknown.
      this.opts.log.info(
        { vm: spec.label },
        `VM '${spec.label}' has ${macs.length === 0 ? "no MAC address" : "multiple MAC addresses (not supported)"}. Synjitsu not notified.`,
      );
      return;
    }
    this.opts.log.info({ vm: spec.label }, `Notifying Synjitsu of MAC ${macs[0]} with IP ${ipv4}`);
    this.enqueue(synjitsuMessage(macs[0]!, ipv4));
  }

  private enqueue(msg: Buffer): void {
    if (this.socket !== undefined && !this.socket.destroyed) {
      this.socket.write(msg);
      this.sent++;
      return;
    }
    this.queue.push(msg);
    if (this.queue.length > QUEUE_MAX) this.queue.shift();
    if (!this.connecting && this.retry === undefined) this.connectSoon(0);
  }

  private connectSoon(ms: number): void {
    if (this.closed || this.connecting) return;
    this.retry?.cancel();
    this.retry = this.opts.clock.setTimer(ms, () => {
      this.retry = undefined;
      void this.connect();
    });
  }

  private scheduleReconnect(reason: string): void {
    if (this.closed) return;
    const wait = this.backoffMs;
    this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
    this.opts.log.warn(`synjitsu: ${reason}; reconnecting in ${wait / 1000} s`);
    this.connectSoon(wait);
  }

  private async connect(): Promise<void> {
    if (this.closed || this.connecting || this.socket !== undefined) return;
    this.connecting = true;
    let path: string;
    try {
      path = this.opts.socketPath ?? (await this.startProxy());
    } catch (err) {
      this.connecting = false;
      this.scheduleReconnect(`cannot reach the Synjitsu VM ${this.opts.uuid}: ${describeError(err)}`);
      return;
    }
    this.opts.log.info(`synjitsu: connecting through ${path}...`);
    const sock = netConnect({ path });
    sock.on("connect", () => {
      this.connecting = false;
      if (this.closed) {
        sock.destroy();
        return;
      }
      this.socket = sock;
      this.backoffMs = BACKOFF_FIRST_MS;
      this.opts.log.info("synjitsu: connected");
      for (const msg of this.queue.splice(0)) {
        sock.write(msg);
        this.sent++;
      }
    });
    sock.on("data", () => undefined); // Synjitsu does not answer; drain anything.
    let failure: Error | undefined;
    sock.on("error", (err) => {
      failure = err;
    });
    sock.on("close", () => {
      const wasConnected = this.socket === sock;
      this.connecting = false;
      if (wasConnected) this.socket = undefined;
      if (this.opts.socketPath === undefined) this.stopProxy();
      this.scheduleReconnect(
        wasConnected ? "disconnected" : `cannot connect to ${path}: ${failure?.message ?? "closed"}`,
      );
    });
  }

  /** Finds the Synjitsu VM's domain id and starts vchan-socket-proxy for it; resolves with the proxy's socket. */
  private async startProxy(): Promise<string> {
    const backend = this.opts.backend;
    if (backend.domainId === undefined) {
      throw new Error(`the ${backend.name} backend has no Xen domain ids; use --synjitsu-socket PATH`);
    }
    const command = this.opts.proxyCommand ?? findVchanSocketProxy();
    if (command === undefined)
      throw new Error("vchan-socket-proxy not found (install xen-utils, or use --synjitsu-socket PATH)");
    const ref = await backend.resolve(lookupSpec(this.opts.uuid));
    const domid = await backend.domainId(ref);
    const nodepath = `/local/domain/${domid}/data/vchan/0/synjitsu`;
    await mkdir(this.opts.stateDir, { recursive: true });
    const socketPath = join(this.opts.stateDir, "synjitsu-vchan.sock");
    await rm(socketPath, { force: true });
    this.stopProxy();
    const child = spawn(command, ["-m", "client", String(domid), nodepath, socketPath], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.proxy = child;
    child.on("error", (err) => this.opts.log.debug(`synjitsu: vchan-socket-proxy: ${err.message}`));
    let stderr = "";
    child.stderr?.on("data", (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-2000);
    });
    child.on("exit", (code, signal) => {
      if (this.proxy === child) this.proxy = undefined;
      if (!this.closed && signal !== "SIGTERM") {
        this.opts.log.debug(
          `synjitsu: vchan-socket-proxy exited (${code ?? signal}): ${stderr.trim().split("\n").join(" / ")}`,
        );
      }
    });
    await new Promise<void>((resolve, reject) => {
      child.once("error", (err) => reject(new Error(`cannot run ${command}: ${err.message}`)));
      child.once("spawn", () => resolve());
    });
    for (let waited = 0; !existsSync(socketPath); waited += 50) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(
          `vchan-socket-proxy exited (${child.exitCode ?? child.signalCode}): ${stderr.trim().split("\n").join(" / ")}`,
        );
      }
      if (waited >= PROXY_SOCKET_WAIT_MS) {
        this.stopProxy();
        throw new Error(
          `vchan-socket-proxy did not create ${socketPath} within ${PROXY_SOCKET_WAIT_MS / 1000} s`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    this.opts.log.info(
      `synjitsu: vchan-socket-proxy for domain ${domid} (${nodepath}) listens on ${socketPath}`,
    );
    return socketPath;
  }

  private stopProxy(): void {
    const child = this.proxy;
    this.proxy = undefined;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  }
}

/** A VmSpec that only names an existing VM by uuid, for backend.resolve. */
function lookupSpec(uuid: string): VmSpec {
  return {
    label: `synjitsu ${uuid}`,
    name: undefined,
    uuid,
    dns: [],
    ips: [],
    responseDelay: undefined,
    waitForKey: undefined,
    useSynjitsu: false,
    ready: [],
    group: undefined,
    after: [],
    hold: [],
    holdAddress: undefined,
    options: new VmOptions([["uuid", uuid]], `synjitsu ${uuid}`),
  };
}

/** What Synjitsu needs from the summoner (the Summoner class satisfies it). */
export interface SummonerStarts {
  /** Called when a backend start/resume/unpause returns. */
  onStarted(listener: (label: string, ref: VmRef) => void): void;
  /** The VMs as they are now (follows config reloads). */
  status(): readonly SynjitsuVm[];
}

/**
 * Wiring for the CLI: when --synjitsu is given, notify Synjitsu of every
 * use_synjitsu VM the summoner starts. Returns the notifier (to close), or
 * undefined when Synjitsu is not configured.
 */
export function attachSynjitsu(opts: {
  summoner: SummonerStarts;
  backend: VmBackend;
  uuid: string | undefined;
  socketPath: string | undefined;
  stateDir: string;
  specs: readonly VmSpec[];
  clock: Clock;
  log: Logger;
}): SynjitsuNotifier | undefined {
  if (opts.uuid === undefined) {
    const users = opts.specs.filter((s) => s.useSynjitsu).map((s) => s.label);
    if (users.length > 0)
      opts.log.warn(
        `use_synjitsu is set for ${users.join(", ")} but --synjitsu UUID is not given: Synjitsu is not notified`,
      );
    return undefined;
  }
  const notifier = new SynjitsuNotifier({
    backend: opts.backend,
    uuid: opts.uuid,
    ...(opts.socketPath === undefined ? {} : { socketPath: opts.socketPath }),
    stateDir: opts.stateDir,
    vms: () => opts.summoner.status(),
    clock: opts.clock,
    log: opts.log,
  });
  opts.summoner.onStarted((label, ref) => notifier.vmStarted(label, ref));
  notifier.start();
  return notifier;
}
