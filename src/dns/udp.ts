/**
 * The UDP side of a DnsServer. Bound to one address: one socket. Bound to a
 * wildcard (0.0.0.0, ::): one socket per local address, as BIND and dnsmasq's
 * --bind-interfaces do, so each answer leaves from the address its query was
 * sent to. A wildcard socket would answer from the address of the interface
 * the route back to the client uses, and on a multi-homed host a client that
 * asked another address discards that answer ("reply from unexpected
 * source"); Node cannot read the destination address of a datagram
 * (IP_PKTINFO), so a socket per address is the way. Addresses that come and
 * go are followed: the interfaces are read every `pollMs` and on `refresh()`
 * (SIGHUP).
 *
 * Each socket is read and written in batches by the native addon
 * (native-udp.ts: recvmmsg, one call into JavaScript per batch, the batch's
 * synchronous answers in one sendmmsg, later answers gathered once per turn of
 * the event loop), or by Node's dgram where the addon is not built, with
 * JITSU_UDP_IO=dgram, for a host name rather than an address, and in a
 * --workers worker (node:cluster shares the primary's dgram sockets). Both
 * answer the same: a datagram from port 0 is dropped, the answer goes back to
 * the sender from the socket it came in on, a later answer only while that
 * socket is still ours.
 */
import dgram from "node:dgram";
import os from "node:os";
import { ListenError, describeError } from "../errors/index.js";
import type { Logger } from "../log/index.js";
import { META, NativeSocket, type NativeUdp, type Peer } from "./native-udp.js";

/**
 * The UDP socket's receive buffer. A burst (a thousand clients asking for a
 * cold VM at once, a resolver's retries) arrives faster than one thread reads
 * it; with the kernel's default (~208 KiB, ~300 queries) the rest is dropped
 * and each client waits for its retry (bench/: storm). The kernel caps this at
 * net.core.rmem_max.
 */
const UDP_RECEIVE_BUFFER = 4 << 20;

/** How often a wildcard bind reads the host's addresses. */
export const INTERFACE_POLL_MS = 5000;

export type Interfaces = () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;

export interface UdpListenersOptions {
  /** The address given to listen(): one of the host's, or a wildcard. */
  readonly host: string;
  /** The answer to one query from `client` (its address): now, later, or none (null). */
  readonly answer: (msg: Buffer, client: string) => UdpAnswer;
  /** Answers the kernel would not take (the socket's send buffer full): counted, never retried. */
  readonly onSendFailed?: (count: number) => void;
  /** The batched I/O (native-udp.ts), or null for dgram. */
  readonly io: NativeUdp | null;
  readonly log: Logger;
  /** Log the addresses that come and go at info (a single process) or debug (a --workers worker: the primary's log would repeat them N times). */
  readonly announce: boolean;
  readonly pollMs?: number;
  /** The host's interfaces (default os.networkInterfaces). */
  readonly interfaces?: Interfaces;
}

export type UdpAnswer = Buffer | null | Promise<Buffer | null>;

/** One bound (or adopted) socket, read and written by dgram or by the addon. */
interface ListenSocket {
  /** The local port. */
  readonly port: number;
  close(): Promise<void>;
}

/** 0.0.0.0 or :: (any spelling of the unspecified address). */
export function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || (host.includes("::") && /^[0:]+$/.test(host));
}

/** The addresses a wildcard covers: IPv4 for 0.0.0.0; both families for :: (a dual-stack socket gets both). */
export function localAddresses(host: string, interfaces: Interfaces): string[] {
  const v6 = host !== "0.0.0.0";
  const out: string[] = [];
  for (const [name, infos] of Object.entries(interfaces())) {
    for (const info of infos ?? []) {
      if (info.family === "IPv4") out.push(info.address);
      else if (v6 && info.family === "IPv6") {
        // A link-local address is bound on its own link (fe80::1%eth0).
        out.push(info.scopeid !== undefined && info.scopeid !== 0 ? `${info.address}%${name}` : info.address);
      }
    }
  }
  return [...new Set(out)];
}

export class UdpListeners {
  private readonly opts: UdpListenersOptions;
  private readonly interfaces: Interfaces;
  private readonly sockets = new Map<string, ListenSocket>();
  /** The same sockets, for has() on every delayed reply. */
  private readonly bound = new Set<ListenSocket>();
  /** Addresses that could not be bound, with why (logged once; tried again at each poll). */
  private readonly failed = new Map<string, string>();
  private port = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private refreshing: Promise<void> = Promise.resolve();
  private closed = false;
  /** Serving sockets passed by systemd (adopt), not ones we bound. */
  private adopted = false;

  constructor(opts: UdpListenersOptions) {
    this.opts = opts;
    this.interfaces = opts.interfaces ?? os.networkInterfaces;
  }

  /** The addresses bound now. */
  get addresses(): string[] {
    return [...this.sockets.keys()];
  }

  /** How the sockets are read and written: the batched addon, or dgram (also used for a host name). */
  get io(): "native" | "dgram" {
    return this.opts.io === null ? "dgram" : "native";
  }

  /** The port bound (0 before bind or adopt). */
  get boundPort(): number {
    return this.port;
  }

  /** One of ours: a reply may still be sent on it. */
  has(sock: ListenSocket): boolean {
    return this.bound.has(sock);
  }

  /**
   * Binds `port` (0: the first address picks one, the others follow it) on the
   * host, or on each of its addresses; resolves with the port. On a wildcard,
   * an address that cannot be bound (another program holds the port there, an
   * IPv6 address still in duplicate address detection) is logged and tried
   * again at each poll; only if none can be bound does this reject, with a
   * ListenError naming the address.
   */
  async bind(port: number): Promise<number> {
    const host = this.opts.host;
    const wildcard = isWildcard(host);
    const addresses = wildcard ? localAddresses(host, this.interfaces) : [host];
    if (addresses.length === 0) {
      throw new ListenError(
        `cannot listen on UDP ${host}: this machine has no ${host === "0.0.0.0" ? "IPv4 " : ""}address to listen on`,
      );
    }
    this.port = port;
    let first: ListenError | null = null;
    for (const address of addresses) {
      try {
        this.port = (await this.open(address, this.port)).port;
      } catch (err) {
        first ??= ListenError.of("UDP", address, this.port, err);
        if (wildcard) this.noteFailed(address, err);
      }
    }
    if (this.sockets.size === 0) {
      this.failed.clear();
      throw first!;
    }
    if (wildcard) {
      this.timer = setInterval(() => void this.refresh(), this.opts.pollMs ?? INTERFACE_POLL_MS);
      this.timer.unref();
    }
    return this.port;
  }

  /**
   * Socket activation: serves on sockets systemd bound and passed (`fd`, of
   * the family given); they are not followed or re-bound. Resolves with the
   * port of the first.
   */
  async adopt(sockets: readonly { fd: number; type: "udp4" | "udp6" }[]): Promise<number> {
    this.adopted = true;
    for (const { fd, type } of sockets) {
      const sock = await this.open(null, 0, { fd, type });
      if (this.port === 0) this.port = sock.port;
    }
    return this.port;
  }

  /** Reads the host's addresses again: binds the new ones, closes the sockets of those gone. */
  refresh(): Promise<void> {
    if (this.adopted || !isWildcard(this.opts.host)) return Promise.resolve();
    this.refreshing = this.refreshing.then(() => this.follow());
    return this.refreshing;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.closeSockets();
  }

  private async closeSockets(): Promise<void> {
    const socks = [...this.sockets.values()];
    this.sockets.clear();
    this.bound.clear();
    await Promise.all(socks.map((s) => s.close()));
  }

  private async follow(): Promise<void> {
    if (this.closed) return;
    let wanted: Set<string>;
    try {
      wanted = new Set(localAddresses(this.opts.host, this.interfaces));
    } catch (err) {
      this.opts.log.warn(`DNS: cannot read this machine's addresses: ${describeError(err)}`);
      return;
    }
    const say = (text: string): void =>
      this.opts.announce ? this.opts.log.info(text) : this.opts.log.debug(text);
    for (const [address, sock] of this.sockets) {
      if (wanted.has(address)) continue;
      this.sockets.delete(address);
      this.bound.delete(sock);
      void sock.close();
      say(`DNS: ${address} is gone; no longer listening on UDP ${hostPort(address, this.port)}`);
    }
    for (const address of this.failed.keys()) if (!wanted.has(address)) this.failed.delete(address);
    for (const address of wanted) {
      if (this.sockets.has(address) || this.closed) continue;
      try {
        const sock = await this.open(address, this.port);
        if (this.closed) {
          // close() ran while it was binding: it is not ours to keep.
          this.sockets.delete(address);
          this.bound.delete(sock);
          void sock.close();
          return;
        }
        this.failed.delete(address);
        say(`DNS: listening on UDP ${hostPort(address, this.port)} too`);
      } catch (err) {
        this.noteFailed(address, err);
      }
    }
  }

  private noteFailed(address: string, err: unknown): void {
    const why = describeError(ListenError.of("UDP", address, this.port, err));
    if (this.failed.get(address) === why) return;
    this.failed.set(address, why);
    this.opts.log.warn(`DNS: ${why} (tried again every ${(this.opts.pollMs ?? INTERFACE_POLL_MS) / 1000} s)`);
  }

  /**
   * Binds one socket (or adopts systemd's `passed`): with the addon when there
   * is one and `given` is an address, else with dgram (--workers: through
   * node:cluster's shared handle for that address, dgram's default).
   */
  private async open(
    given: string | null,
    port: number,
    passed?: { fd: number; type: "udp4" | "udp6" },
  ): Promise<ListenSocket> {
    const io = this.opts.io;
    let sock: ListenSocket;
    let address: string;
    // Not net.isIP: its first call compiles a large regular expression (~10 ms of start-up).
    if (io !== null && (given === null || given.includes(":") || /^[0-9.]+$/.test(given))) {
      let fd: number;
      if (passed === undefined) {
        fd = io.addon.open(given!.includes(":") ? 6 : 4, given!, port, UDP_RECEIVE_BUFFER);
        address = given!;
      } else {
        fd = passed.fd;
        address = io.addon.adopt(fd, UDP_RECEIVE_BUFFER)[2];
      }
      sock = new NativeListen(io, fd, this);
    } else {
      const d = await DgramListen.open(given, port, passed, this);
      sock = d;
      address = given ?? d.address;
    }
    this.sockets.set(address, sock);
    this.bound.add(sock);
    return sock;
  }

  /** What each socket calls with a datagram (not one from port 0: unanswerable, and a reflection trick). */
  readonly answer = (msg: Buffer, client: string): UdpAnswer => this.opts.answer(msg, client);

  sendFailed(count: number): void {
    this.opts.onSendFailed?.(count);
  }

  socketError(err: unknown): void {
    this.opts.log.error(`DNS UDP socket error: ${describeError(err)}`);
  }
}

/** A socket read and written by Node's dgram: one 'message' event and one send per datagram. */
class DgramListen implements ListenSocket {
  private constructor(
    private readonly sock: dgram.Socket,
    private readonly owner: UdpListeners,
  ) {
    sock.on("error", (err) => owner.socketError(err));
    sock.on("message", (msg, rinfo) => {
      if (rinfo.port === 0) return;
      const r = owner.answer(msg, rinfo.address);
      if (r === null) return;
      if (r instanceof Buffer) {
        sock.send(r, rinfo.port, rinfo.address);
        return;
      }
      void (r as Promise<Buffer | null>).then((buf) => {
        // Its address may be gone meanwhile (a wildcard follows the host's addresses).
        if (buf !== null && owner.has(this)) sock.send(buf, rinfo.port, rinfo.address);
      });
    });
  }

  static async open(
    given: string | null,
    port: number,
    passed: { fd: number; type: "udp4" | "udp6" } | undefined,
    owner: UdpListeners,
  ): Promise<DgramListen> {
    // Not net.isIPv6: its first call compiles a large regular expression (~10 ms of start-up).
    const type = passed?.type ?? (given!.includes(":") ? "udp6" : "udp4");
    const sock = dgram.createSocket({ type, recvBufferSize: UDP_RECEIVE_BUFFER });
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once("error", reject);
        const bound = (): void => {
          sock.off("error", reject);
          resolve();
        };
        if (passed === undefined) sock.bind(port, given!, bound);
        else sock.bind({ fd: passed.fd }, bound);
      });
    } catch (err) {
      sock.close();
      throw err;
    }
    return new DgramListen(sock, owner);
  }

  get port(): number {
    return this.sock.address().port;
  }

  get address(): string {
    return this.sock.address().address;
  }

  close(): Promise<void> {
    return new Promise<void>((resolve) => this.sock.close(() => resolve()));
  }
}

/** Listeners with answers that came later (a forward, a summon), sent once per turn of the event loop. */
const later = new Set<NativeListen>();
let laterScheduled = false;

function sendLater(): void {
  laterScheduled = false;
  const socks = [...later];
  later.clear();
  for (const s of socks) s.flushLater();
}

/**
 * A socket read and written by the addon: a batch of datagrams per call, the
 * batch's synchronous answers in one sendmmsg at its end; answers that come
 * later are gathered and sent in one sendmmsg per socket once per turn of the
 * event loop (setImmediate).
 */
class NativeListen implements ListenSocket {
  private readonly sock: NativeSocket;
  private readonly localPort: number;
  private pending: Buffer[] = [];
  private pendingPeers: Peer[] = [];

  constructor(
    private readonly io: NativeUdp,
    fd: number,
    private readonly owner: UdpListeners,
  ) {
    this.sock = new NativeSocket(
      io,
      fd,
      (n) => this.onBatch(n),
      (err) => owner.socketError(err),
    );
    this.localPort = this.sock.port;
  }

  get port(): number {
    return this.localPort;
  }

  private onBatch(n: number): void {
    const io = this.io;
    const meta = io.recvMeta;
    const fd = this.sock.fd;
    let failed = 0;
    for (let i = 0; i < n; i++) {
      if (meta[i * META + 1] === 0) continue;
      try {
        const r = this.owner.answer(io.datagram(i), io.address(i));
        if (r === null) continue;
        if (r instanceof Buffer) {
          failed += io.queue(fd, r, i, null);
          continue;
        }
        const peer = io.peer(i);
        void (r as Promise<Buffer | null>).then((buf) => {
          if (buf !== null) this.answerLater(buf, peer);
        });
      } catch (err) {
        // The server's handler catches its own errors: this is a bug here, and the other datagrams still count.
        this.owner.socketError(err);
      }
    }
    failed += io.flush();
    if (failed > 0) this.owner.sendFailed(failed);
  }

  private answerLater(buf: Buffer, peer: Peer): void {
    // Its address may be gone meanwhile (a wildcard follows the host's addresses).
    if (!this.owner.has(this)) return;
    this.pending.push(buf);
    this.pendingPeers.push(peer);
    later.add(this);
    if (!laterScheduled) {
      laterScheduled = true;
      setImmediate(sendLater);
    }
  }

  /** Sends the answers gathered since the last turn; `closing`: the owner is closing it, they still go out. */
  flushLater(closing = false): void {
    const bufs = this.pending;
    const peers = this.pendingPeers;
    if (bufs.length === 0) return;
    this.pending = [];
    this.pendingPeers = [];
    if (!closing && !this.owner.has(this)) return;
    const io = this.io;
    const fd = this.sock.fd;
    let failed = 0;
    for (let k = 0; k < bufs.length; k++) failed += io.queue(fd, bufs[k]!, 0, peers[k]!);
    failed += io.flush();
    if (failed > 0) this.owner.sendFailed(failed);
  }

  close(): Promise<void> {
    // Answers made before close() (DnsServer.close waits for those in flight) are not lost to the next turn.
    if (!this.sock.closed) this.flushLater(true);
    this.sock.close();
    return Promise.resolve();
  }
}

function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}
