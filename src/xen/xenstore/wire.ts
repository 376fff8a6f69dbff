/**
 * The xenstore wire format (xen/include/public/io/xs_wire.h and
 * docs/misc/xenstore.txt): every message is a 16-byte header `struct
 * xsd_sockmsg { u32 type, req_id, tx_id, len }` (little-endian on x86 and
 * Arm, which are the hosts dom0 runs on) followed by `len` payload bytes,
 * usually nul-terminated strings.
 */

/** enum xsd_sockmsg_type, in xs_wire.h order. */
export const XsType = {
  DEBUG: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  RESTRICT: 20,
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
} as const;
export type XsTypeCode = (typeof XsType)[keyof typeof XsType];

export const HEADER_SIZE = 16;
/** XENSTORE_PAYLOAD_MAX: xenstored kills a connection that sends more. */
export const PAYLOAD_MAX = 4096;
/** XENSTORE_ABS_PATH_MAX */
export const ABS_PATH_MAX = 3072;

/** The errno names of xs_wire.h's xsd_errors table, sent as strings in ERROR replies. */
export const XS_ERRORS = [
  "EINVAL",
  "EACCES",
  "EEXIST",
  "EISDIR",
  "ENOENT",
  "ENOMEM",
  "ENOSPC",
  "EIO",
  "ENOTEMPTY",
  "ENOSYS",
  "EROFS",
  "EBUSY",
  "EAGAIN",
  "EISCONN",
  "E2BIG",
] as const;

export interface XsMessage {
  readonly type: number;
  readonly reqId: number;
  readonly txId: number;
  readonly payload: Buffer;
}

export function encodeMessage(msg: XsMessage): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + msg.payload.length);
  out.writeUInt32LE(msg.type, 0);
  out.writeUInt32LE(msg.reqId >>> 0, 4);
  out.writeUInt32LE(msg.txId >>> 0, 8);
  out.writeUInt32LE(msg.payload.length, 12);
  msg.payload.copy(out, HEADER_SIZE);
  return out;
}

/**
 * Splits a byte stream into messages. A header announcing more than
 * PAYLOAD_MAX bytes is a protocol error (the stream cannot be trusted after it).
 */
export class MessageReader {
  private buffered: Buffer = Buffer.alloc(0);

  /** Adds bytes and returns the messages now complete. */
  push(chunk: Buffer): XsMessage[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const out: XsMessage[] = [];
    while (this.buffered.length >= HEADER_SIZE) {
      const len = this.buffered.readUInt32LE(12);
      if (len > PAYLOAD_MAX) {
        throw new Error(`xenstore message announces ${len} payload bytes (the limit is ${PAYLOAD_MAX})`);
      }
      if (this.buffered.length < HEADER_SIZE + len) break;
      out.push({
        type: this.buffered.readUInt32LE(0),
        reqId: this.buffered.readUInt32LE(4),
        txId: this.buffered.readUInt32LE(8),
        payload: Buffer.from(this.buffered.subarray(HEADER_SIZE, HEADER_SIZE + len)),
      });
      this.buffered = this.buffered.subarray(HEADER_SIZE + len);
    }
    return out;
  }
}

/** `<a>|<b>|...` : each string followed by a nul (the notation of xenstore.txt). */
export function nulStrings(...parts: string[]): Buffer {
  return Buffer.from(parts.map((p) => `${p}\0`).join(""), "utf8");
}

/** Splits a payload of nul-terminated strings; a trailing piece without nul is kept. */
export function splitNul(payload: Buffer): string[] {
  const text = payload.toString("utf8");
  if (text === "") return [];
  const parts = text.split("\0");
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

/** The ERROR reply's payload is `E<something>|`. */
export function errorName(payload: Buffer): string {
  return splitNul(payload)[0] ?? "EINVAL";
}
