/**
 * libvirt's RPC layer over one byte stream (virnetprotocol.x "RPC wire format"):
 * each packet is a 4-byte length (including itself), a 24-byte header, then
 * the XDR payload. Calls carry a serial; replies come back with the same serial,
 * in any order, so any number of calls may be in flight. Error replies carry a
 * remote_error, turned into a LibvirtError. Asynchronous messages (events) go to
 * the message listener; the keepalive program's PINGs are answered with PONGs.
 */
import type { Duplex } from "node:stream";
import { systemClock, type Clock, type Timer } from "../../clock/index.js";
import {
  HEADER_SIZE,
  KEEPALIVE_PING,
  KEEPALIVE_PONG,
  KEEPALIVE_PROGRAM,
  KEEPALIVE_PROTOCOL_VERSION,
  LEN_SIZE,
  MESSAGE_MAX,
  MessageStatus,
  MessageType,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
  readHeader,
  readRemoteError,
  writeHeader,
  type MessageHeader,
  type RemoteError,
} from "./protocol.js";
import { XdrReader, XdrWriter } from "./xdr.js";

/** virerror.h: the few virErrorNumber values jitsu treats specially. */
export const ErrorCode = {
  INTERNAL_ERROR: 1,
  NO_SUPPORT: 3,
  NO_CONNECT: 5,
  INVALID_ARG: 8,
  OPERATION_FAILED: 9,
  OPERATION_DENIED: 29,
  SYSTEM_ERROR: 38,
  RPC: 39,
  NO_DOMAIN: 42,
  AUTH_FAILED: 45,
  OPERATION_INVALID: 55,
  ACCESS_DENIED: 88,
  AUTH_UNAVAILABLE: 94,
} as const;

/** An error reply from libvirtd, with libvirt's own code, domain (virErrorDomain) and text. */
export class LibvirtError extends Error {
  readonly code: number;
  readonly domain: number;
  readonly level: number;
  readonly remote: RemoteError;
  constructor(remote: RemoteError) {
    super(remote.message ?? `libvirt error code ${remote.code}`);
    this.name = "LibvirtError";
    this.code = remote.code;
    this.domain = remote.domain;
    this.level = remote.level;
    this.remote = remote;
  }
}

/** The connection closed (or was found dead) before the reply came. */
export class ConnectionLostError extends Error {
  constructor(
    message: string,
    /** Whether the call had been written to the socket (the daemon may have run it). */
    readonly sent: boolean,
  ) {
    super(message);
    this.name = "ConnectionLostError";
  }
}

/** A reply or message that does not follow the protocol. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

interface Pending {
  proc: number;
  resolve: (r: XdrReader) => void;
  reject: (e: Error) => void;
}

export interface RpcClientOptions {
  clock?: Clock;
  /** Called for every VIR_NET_MESSAGE of the remote program (domain events). */
  onMessage?: (proc: number, payload: XdrReader) => void;
  /** Called once when the stream ends, with the reason. */
  onClose?: (reason: Error) => void;
}

export class RpcClient {
  private readonly clock: Clock;
  private readonly pending = new Map<number, Pending>();
  private serial = 0;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private closedReason: Error | null = null;
  private lastReceived: number;
  private keepaliveTimer: Timer | null = null;
  private missedPings = 0;
  /** Counters for tests and diagnostics. */
  readonly stats = { pingsReceived: 0, pongsSent: 0, pingsSent: 0 };

  constructor(
    private readonly stream: Duplex,
    private readonly options: RpcClientOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.lastReceived = this.clock.now();
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.on("error", (err: Error) => this.shutdown(new ConnectionLostError(err.message, true)));
    stream.on("close", () => this.shutdown(new ConnectionLostError("connection closed by the daemon", true)));
    stream.on("end", () => this.shutdown(new ConnectionLostError("connection closed by the daemon", true)));
    // A transport may hand over a paused stream (TLS, after its confirmation byte).
    stream.resume();
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * Calls a procedure of the remote program. `args` writes the XDR args struct;
   * the promise resolves with a reader over the ret struct.
   */
  call(proc: number, args?: (w: XdrWriter) => void): Promise<XdrReader> {
    if (this.closedReason !== null) {
      return Promise.reject(new ConnectionLostError(this.closedReason.message, false));
    }
    const serial = this.serial;
    this.serial = (this.serial + 1) >>> 0;
    const packet = encodePacket(
      {
        prog: REMOTE_PROGRAM,
        vers: REMOTE_PROTOCOL_VERSION,
        proc,
        type: MessageType.Call,
        serial,
        status: MessageStatus.Ok,
      },
      args,
    );
    return new Promise<XdrReader>((resolve, reject) => {
      this.pending.set(serial, { proc, resolve, reject });
      this.stream.write(packet);
    });
  }

  /**
   * Sends our own PINGs when the line has been quiet for `intervalMs`; after
   * `count` unanswered ones the daemon is taken for dead and the stream closed
   * (libvirt's virKeepAlive does the same on its side).
   */
  startKeepalive(intervalMs: number, count: number): void {
    if (this.keepaliveTimer !== null || this.closed) return;
    const tick = (): void => {
      if (this.closed) return;
      if (this.clock.now() - this.lastReceived >= intervalMs) {
        if (this.missedPings >= count) {
          this.destroy(
            new ConnectionLostError(
              `no answer from the daemon for ${(intervalMs * (count + 1)) / 1000} s`,
              true,
            ),
          );
          return;
        }
        this.missedPings++;
        this.stats.pingsSent++;
        this.sendKeepalive(KEEPALIVE_PING);
      }
      this.keepaliveTimer = this.clock.setTimer(intervalMs, tick);
    };
    this.keepaliveTimer = this.clock.setTimer(intervalMs, tick);
  }

  /** Closes the stream; pending calls are rejected with `reason`. */
  destroy(reason: Error = new ConnectionLostError("connection closed", true)): void {
    this.shutdown(reason);
    this.stream.destroy();
  }

  private sendKeepalive(proc: number): void {
    const packet = encodePacket({
      prog: KEEPALIVE_PROGRAM,
      vers: KEEPALIVE_PROTOCOL_VERSION,
      proc,
      type: MessageType.Message,
      serial: 0,
      status: MessageStatus.Ok,
    });
    this.stream.write(packet);
  }

  private shutdown(reason: Error): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.keepaliveTimer?.cancel();
    this.keepaliveTimer = null;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(reason);
    this.options.onClose?.(reason);
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= LEN_SIZE) {
      const head = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [head];
      const length = head.readUInt32BE(0);
      if (length < LEN_SIZE + HEADER_SIZE || length > MESSAGE_MAX + LEN_SIZE) {
        this.destroy(new ProtocolError(`bad packet length ${length} from the daemon`));
        return;
      }
      if (this.buffered < length) return;
      const packet = head.subarray(0, length);
      const rest = head.subarray(length);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
      try {
        this.dispatch(packet);
      } catch (err) {
        this.destroy(new ProtocolError(`malformed packet from the daemon: ${(err as Error).message}`));
        return;
      }
    }
  }

  private dispatch(packet: Buffer): void {
    this.lastReceived = this.clock.now();
    this.missedPings = 0;
    const r = new XdrReader(packet, LEN_SIZE);
    const h: MessageHeader = readHeader(r);
    if (h.prog === KEEPALIVE_PROGRAM) {
      if (h.proc === KEEPALIVE_PING) {
        this.stats.pingsReceived++;
        this.stats.pongsSent++;
        this.sendKeepalive(KEEPALIVE_PONG);
      }
      return; // PONG: lastReceived already updated
    }
    if (h.prog !== REMOTE_PROGRAM) throw new Error(`unknown program 0x${h.prog.toString(16)}`);
    if (h.type === MessageType.Message) {
      this.options.onMessage?.(h.proc, r);
      return;
    }
    if (h.type !== MessageType.Reply && h.type !== MessageType.ReplyWithFds) {
      throw new Error(`unexpected message type ${h.type}`);
    }
    const p = this.pending.get(h.serial);
    if (p === undefined) throw new Error(`reply for unknown serial ${h.serial}`);
    if (p.proc !== h.proc)
      throw new Error(`reply for serial ${h.serial} names procedure ${h.proc}, not ${p.proc}`);
    this.pending.delete(h.serial);
    if (h.type === MessageType.ReplyWithFds) r.uint(); // fd count; we never ask for fds
    if (h.status === MessageStatus.Error) {
      p.reject(new LibvirtError(readRemoteError(r)));
    } else if (h.status === MessageStatus.Ok) {
      p.resolve(r);
    } else {
      p.reject(new ProtocolError(`unexpected reply status ${h.status} for procedure ${h.proc}`));
    }
  }
}

/** Builds one packet: length word, header, payload. */
export function encodePacket(header: MessageHeader, payload?: (w: XdrWriter) => void): Buffer {
  const w = new XdrWriter(128);
  w.uint(0);
  writeHeader(w, header);
  payload?.(w);
  const bytes = Buffer.from(w.bytes());
  if (bytes.length > MESSAGE_MAX + LEN_SIZE)
    throw new ProtocolError(`message of ${bytes.length} bytes is too large`);
  bytes.writeUInt32BE(bytes.length, 0);
  return bytes;
}
