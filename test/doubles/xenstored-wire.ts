/**
 * Test double support: the xenstore wire format as docs/misc/xenstore.txt and
 * xs_wire.h define it ("struct xsd_sockmsg": u32 type, req_id, tx_id, len,
 * little-endian, then `len` payload bytes), written separately from
 * src/xen/xenstore so the doubles check the production client instead of
 * sharing its mistakes. Also a tiny blocking-style client for the xl double.
 */
import { connect } from "node:net";

/** xs_wire.h enum xsd_sockmsg_type */
export const T = {
  DIRECTORY: 1,
  READ: 2,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  WATCH_EVENT: 15,
  ERROR: 16,
  RESET_WATCHES: 21,
} as const;

export interface Msg {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
}

export function encode(m: Msg): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(m.type, 0);
  h.writeUInt32LE(m.reqId, 4);
  h.writeUInt32LE(m.txId, 8);
  h.writeUInt32LE(m.payload.length, 12);
  return Buffer.concat([h, m.payload]);
}

/** Accumulates bytes and yields whole messages. */
export function decoder(): (chunk: Buffer) => Msg[] {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    const out: Msg[] = [];
    while (buf.length >= 16) {
      const len = buf.readUInt32LE(12);
      if (len > 4096) throw new Error(`payload of ${len} bytes is over XENSTORE_PAYLOAD_MAX`);
      if (buf.length < 16 + len) break;
      out.push({
        type: buf.readUInt32LE(0),
        reqId: buf.readUInt32LE(4),
        txId: buf.readUInt32LE(8),
        payload: buf.subarray(16, 16 + len),
      });
      buf = buf.subarray(16 + len);
    }
    return out;
  };
}

/** Performs a list of requests on a fresh connection, in order; resolves with each reply. */
export function xsRequests(
  socketPath: string,
  requests: { type: number; payload: Buffer }[],
): Promise<Msg[]> {
  return new Promise((resolve, reject) => {
    const sock = connect({ path: socketPath });
    const decode = decoder();
    const replies: Msg[] = [];
    sock.on("error", reject);
    sock.on("connect", () => {
      requests.forEach((r, i) =>
        sock.write(encode({ type: r.type, reqId: i + 1, txId: 0, payload: r.payload })),
      );
      if (requests.length === 0) {
        sock.end();
        resolve([]);
      }
    });
    sock.on("data", (chunk: Buffer) => {
      for (const m of decode(chunk)) {
        if (m.type === T.WATCH_EVENT) continue;
        replies.push(m);
        if (replies.length === requests.length) {
          sock.end();
          resolve(replies.sort((a, b) => a.reqId - b.reqId));
        }
      }
    });
  });
}

/** WRITE's payload: `<path>|<value|>` */
export function writePayload(path: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${path}\0`), typeof value === "string" ? Buffer.from(value) : value]);
}
