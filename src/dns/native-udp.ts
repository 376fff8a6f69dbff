/**
 * Batched UDP I/O for the DNS sockets: the addon built from native/udp_io.c
 * (recvmmsg/sendmmsg on descriptors watched by a uv_poll_t). Node's dgram pays
 * for every datagram a trip through its JavaScript layers: a send wrap and a
 * lookup per send, a 'message' event with a new rinfo object per receive; with
 * the addon a burst of 64 queries is one recvmmsg, one call into JavaScript,
 * and their synchronous answers one sendmmsg.
 *
 * Optional: without the addon (no compiler when jitsu was built) or with
 * JITSU_UDP_IO=dgram in the environment, `nativeUdp()` is null and the callers
 * use dgram.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** dist/native/jitsu_udp_io.node, from dist/src/dns/native-udp.js (scripts/build-native.mjs puts it there). */
export const UDP_IO_ADDON = fileURLToPath(new URL("../../native/jitsu_udp_io.node", import.meta.url));

/** The environment switch: `dgram` forces Node's dgram even with the addon built (tests, a suspected addon bug). */
export const UDP_IO_ENV = "JITSU_UDP_IO";

/** An opaque handle of a watched socket. */
type Handle = object & { readonly __udpHandle: unique symbol };

interface Addon {
  init(
    recvData: ArrayBuffer,
    recvMeta: ArrayBuffer,
    recvText: ArrayBuffer,
    sendData: ArrayBuffer,
    sendMeta: ArrayBuffer,
  ): number;
  open(family: 4 | 6, address: string, port: number, receiveBuffer: number): number;
  open(
    family: 4 | 6,
    address: string,
    port: number,
    receiveBuffer: number,
    peer: string,
    peerPort: number,
  ): number;
  adopt(fd: number, receiveBuffer: number): [4 | 6, number, string];
  localPort(fd: number): number;
  start(fd: number, onBatch: (count: number) => void): Handle;
  ref(handle: Handle, keepAlive: boolean): void;
  close(handle: Handle): void;
  closeFd(fd: number): void;
  sendBatch(fd: number, count: number): number;
  send(fd: number, packet: Buffer): number;
  errnoName(errno: number): string;
}

/** Datagrams per batch (the addon's BATCH), bytes per receive slot (any UDP datagram fits), int32 per datagram's metadata. */
const BATCH = 64;
const SLOT = 65536;
export const META = 8;
const TEXT = 64;
/** The send area: 64 answers of a batch, each up to 64 KiB, rarely more than a few hundred bytes. */
const SEND_BYTES = 256 * 1024;

/** A datagram's peer as the addon gives it: port, family, scope id, address (4 int32), as in recv meta [1..7]. */
export type Peer = Int32Array;

/** An error from the addon's callback (-errno), as Node's socket errors are made. */
export class UdpIoError extends Error {
  constructor(
    readonly code: string,
    readonly syscall: string,
  ) {
    super(`${syscall} ${code}`);
    this.name = "UdpIoError";
  }
}

/**
 * The process's batched UDP I/O: one shared receive area (each batch is read
 * inside its callback, so every socket uses it) and one send area.
 */
export class NativeUdp {
  readonly recvData: Buffer;
  readonly recvMeta: Int32Array;
  private readonly recvText: Buffer;
  private readonly sendData: Buffer;
  private readonly sendMeta: Int32Array;
  /** Datagrams and bytes in the send area, and the socket they are for. */
  private sendCount = 0;
  private sendBytes = 0;
  private sendFd = -1;
  /** IPv4 client addresses as text, by their int (a cache: most traffic comes from few clients). */
  private readonly v4Text = new Map<number, string>();

  constructor(readonly addon: Addon) {
    const recvData = new ArrayBuffer(BATCH * SLOT);
    const recvMeta = new ArrayBuffer(BATCH * META * 4);
    const recvText = new ArrayBuffer(BATCH * TEXT);
    const sendData = new ArrayBuffer(SEND_BYTES);
    const sendMeta = new ArrayBuffer(BATCH * META * 4);
    addon.init(recvData, recvMeta, recvText, sendData, sendMeta);
    this.recvData = Buffer.from(recvData);
    this.recvMeta = new Int32Array(recvMeta);
    this.recvText = Buffer.from(recvText);
    this.sendData = Buffer.from(sendData);
    this.sendMeta = new Int32Array(sendMeta);
  }

  /** Datagram `i` of the batch being read, copied (its reader may keep it past the batch). */
  datagram(i: number): Buffer {
    const len = this.recvMeta[i * META]!;
    const msg = Buffer.allocUnsafe(len);
    this.recvData.copy(msg, 0, i * SLOT, i * SLOT + len);
    return msg;
  }

  /** The sender of datagram `i` as text, as dgram's rinfo.address spells it. */
  address(i: number): string {
    const m = i * META;
    if (this.recvMeta[m + 2] === 4) {
      const a = this.recvMeta[m + 4]!;
      let text = this.v4Text.get(a);
      if (text === undefined) {
        text = `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
        if (this.v4Text.size >= 4096) this.v4Text.clear();
        this.v4Text.set(a, text);
      }
      return text;
    }
    const t = i * TEXT;
    return this.recvText.toString("latin1", t + 1, t + 1 + this.recvText[t]!);
  }

  /** The sender of datagram `i` kept for a later answer (`queue`). */
  peer(i: number): Peer {
    return this.recvMeta.slice(i * META + 1, i * META + META);
  }

  /**
   * Puts `packet` in the send area for socket `fd`, to datagram `i`'s sender
   * (from recv meta, `peer` null) or to `peer`; sends what is there first if
   * it is for another socket or full. Returns the datagrams that could not be
   * sent by that flush.
   */
  queue(fd: number, packet: Buffer, i: number, peer: Peer | null): number {
    let failed = 0;
    if (
      this.sendCount > 0 &&
      (fd !== this.sendFd || this.sendCount === BATCH || this.sendBytes + packet.length > SEND_BYTES)
    )
      failed = this.flush();
    this.sendFd = fd;
    const m = this.sendCount * META;
    const meta = this.sendMeta;
    meta[m] = packet.length;
    if (peer === null) {
      const src = this.recvMeta;
      const r = i * META;
      for (let k = 1; k < META; k++) meta[m + k] = src[r + k]!;
    } else {
      for (let k = 1; k < META; k++) meta[m + k] = peer[k - 1]!;
    }
    packet.copy(this.sendData, this.sendBytes);
    this.sendBytes += packet.length;
    this.sendCount++;
    return failed;
  }

  /** Sends the send area with one sendmmsg; returns the datagrams the kernel would not take (dropped). */
  flush(): number {
    if (this.sendCount === 0) return 0;
    const count = this.sendCount;
    this.sendCount = 0;
    this.sendBytes = 0;
    try {
      return this.addon.sendBatch(this.sendFd, count);
    } catch {
      // The socket was closed under its answers: they are dropped, as they would be by the kernel.
      return count;
    }
  }
}

let loaded: NativeUdp | null | undefined;

/** The process's NativeUdp, or null when the addon is not built or JITSU_UDP_IO=dgram. */
export function nativeUdp(env: NodeJS.ProcessEnv = process.env): NativeUdp | null {
  if (env[UDP_IO_ENV] === "dgram") return null;
  if (loaded !== undefined) return loaded;
  loaded = existsSync(UDP_IO_ADDON)
    ? new NativeUdp(createRequire(import.meta.url)(UDP_IO_ADDON) as Addon)
    : null;
  return loaded;
}

/** A socket the addon watches; `onBatch` gets the batch size, or an error. */
export class NativeSocket {
  private handle: Handle | null;

  constructor(
    readonly io: NativeUdp,
    readonly fd: number,
    onBatch: (count: number) => void,
    onError: (err: UdpIoError) => void,
  ) {
    const addon = io.addon;
    try {
      this.handle = addon.start(fd, (count) => {
        if (count >= 0) onBatch(count);
        else onError(new UdpIoError(addon.errnoName(count), "recvmmsg"));
      });
    } catch (err) {
      addon.closeFd(fd);
      throw err;
    }
  }

  get closed(): boolean {
    return this.handle === null;
  }

  /** The local port. */
  get port(): number {
    return this.handle === null ? 0 : this.io.addon.localPort(this.fd);
  }

  unref(): void {
    if (this.handle !== null) this.io.addon.ref(this.handle, false);
  }

  /** One datagram on a connected socket; the error, or null. */
  send(packet: Buffer): UdpIoError | null {
    if (this.handle === null) return new UdpIoError("EBADF", "send");
    const errno = this.io.addon.send(this.fd, packet);
    return errno === 0 ? null : new UdpIoError(this.io.addon.errnoName(errno), "send");
  }

  close(): void {
    if (this.handle === null) return;
    this.io.addon.close(this.handle);
    this.handle = null;
  }
}
