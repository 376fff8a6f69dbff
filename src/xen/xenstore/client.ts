/**
 * A xenstore client over the wire protocol of docs/misc/xenstore.txt: read,
 * write, mkdir, rm, directory, watches and transactions. Requests are matched
 * to replies by req_id (the spec says replies may come in any order); WATCH_EVENT
 * messages are routed to their watch by token.
 */
import { openTransport, xenstorePaths, type Transport } from "./transport.js";
import {
  ABS_PATH_MAX,
  MessageReader,
  PAYLOAD_MAX,
  XsType,
  encodeMessage,
  errorName,
  nulStrings,
  splitNul,
  type XsMessage,
} from "./wire.js";

/**
 * How often a wait_for_key reads its key besides its watch (see waitForKey):
 * a few small requests a second per waiting VM, nothing to a xenstored. A hang
 * that begins in the last WAIT_RECHECK_MS + WAIT_HUNG_MS of a wait is not told
 * apart from a domain that did not write its key.
 */
const WAIT_RECHECK_MS = 250;
/**
 * A request of a wait unanswered this long when the wait ends means a hung
 * xenstored (a live one answers in microseconds; this leaves room for a
 * loaded machine's event loop).
 */
const WAIT_HUNG_MS = 200;

/** An ERROR reply (its errno name in `code`: ENOENT, EACCES, EAGAIN, ...) or a lost connection (ECONNRESET). */
export class XenstoreError extends Error {
  readonly code: string;
  readonly path: string | undefined;
  constructor(code: string, op: string, path?: string, message?: string) {
    super(message ?? `xenstore ${op}${path === undefined ? "" : ` ${path}`} failed: ${code}`);
    this.name = "XenstoreError";
    this.code = code;
    this.path = path;
  }
}

export interface XenstoreClientOptions {
  /** Paths to try, in order; default: libxenstore's (XENSTORED_PATH, /var/run/xenstored/socket, /dev/xen/xenbus). */
  readonly paths?: readonly string[];
}

/** Per request. */
export interface XenstoreRequestOptions {
  /**
   * Rejects with XenstoreError ETIMEDOUT (naming the path and the wait) when
   * xenstored has not answered within this many ms: xenstored is hung. The
   * connection is then reset, so that nothing queues behind the hung request
   * (the connection's other requests and watches fail the same way) and the
   * next request reconnects. Default: no limit.
   */
  readonly timeoutMs?: number;
}

export interface XenstoreWatch {
  readonly path: string;
  readonly token: string;
  unwatch(): Promise<void>;
}

interface Pending {
  readonly op: string;
  readonly path: string | undefined;
  resolve(msg: XsMessage): void;
  reject(err: Error): void;
}

interface WatchEntry {
  readonly onEvent: (path: string) => void;
  readonly onClose: (err: Error) => void;
}

/** Operations that may run inside a transaction (tx 0 = none). */
abstract class XenstoreOps {
  protected abstract readonly tx: number;
  /** The client whose connection carries this one's requests. */
  protected abstract client(): XenstoreClient;

  private call(
    type: number,
    payload: Buffer,
    op: string,
    path: string | undefined,
    opts: XenstoreRequestOptions | undefined,
  ): Promise<Buffer> {
    return this.client().request(type, payload, op, path, this.tx, opts);
  }

  /** The value at `path` as bytes; XenstoreError ENOENT if it does not exist. */
  readBytes(path: string, opts?: XenstoreRequestOptions): Promise<Buffer> {
    return this.call(XsType.READ, nulStrings(checkPath(path)), "read", path, opts);
  }

  async read(path: string, opts?: XenstoreRequestOptions): Promise<string> {
    return (await this.readBytes(path, opts)).toString("utf8");
  }

  async exists(path: string, opts?: XenstoreRequestOptions): Promise<boolean> {
    try {
      await this.readBytes(path, opts);
      return true;
    } catch (err) {
      if (err instanceof XenstoreError && err.code === "ENOENT") return false;
      throw err;
    }
  }

  /** Stores `value` byte for byte (no trailing nul); missing parents are created. */
  async write(path: string, value: string | Buffer, opts?: XenstoreRequestOptions): Promise<void> {
    const head = nulStrings(checkPath(path));
    const bytes = typeof value === "string" ? Buffer.from(value, "utf8") : value;
    if (head.length + bytes.length > PAYLOAD_MAX) {
      throw new XenstoreError(
        "E2BIG",
        "write",
        path,
        `xenstore write ${path}: the value is ${bytes.length} bytes, more than a xenstore message holds (${PAYLOAD_MAX} bytes with the path)`,
      );
    }
    await this.call(XsType.WRITE, Buffer.concat([head, bytes]), "write", path, opts);
  }

  async mkdir(path: string, opts?: XenstoreRequestOptions): Promise<void> {
    await this.call(XsType.MKDIR, nulStrings(checkPath(path)), "mkdir", path, opts);
  }

  /** Removes `path` and its children; not an error if it does not exist (but its parent must). */
  async rm(path: string, opts?: XenstoreRequestOptions): Promise<void> {
    await this.call(XsType.RM, nulStrings(checkPath(path)), "rm", path, opts);
  }

  /** The names (not paths) of the children of `path`. */
  async directory(path: string, opts?: XenstoreRequestOptions): Promise<string[]> {
    return splitNul(await this.call(XsType.DIRECTORY, nulStrings(checkPath(path)), "directory", path, opts));
  }
}

export class XenstoreTransaction extends XenstoreOps {
  constructor(
    private readonly owner: XenstoreClient,
    readonly id: number,
  ) {
    super();
  }
  protected get tx(): number {
    return this.id;
  }
  protected client(): XenstoreClient {
    return this.owner;
  }
}

export class XenstoreClient extends XenstoreOps {
  private transport: Transport | undefined;
  private connecting: Promise<Transport> | undefined;
  private nextReqId = 1;
  private nextToken = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly watches = new Map<string, WatchEntry>();
  private closed = false;
  /** The path actually connected to, once connected. */
  connectedPath: string | undefined;

  constructor(private readonly options: XenstoreClientOptions = {}) {
    super();
  }

  protected readonly tx = 0;

  protected client(): XenstoreClient {
    return this;
  }

  /** Connects now (otherwise the first request connects); rejects with where it looked. */
  async connect(): Promise<void> {
    await this.ensureConnected();
  }

  /**
   * Sends one request and resolves with the reply's payload; an ERROR reply
   * rejects with its errno name. With `opts.timeoutMs`, bounded (see
   * XenstoreRequestOptions).
   */
  async request(
    type: number,
    payload: Buffer,
    op: string,
    path: string | undefined,
    tx: number,
    opts: XenstoreRequestOptions = {},
  ): Promise<Buffer> {
    if (payload.length > PAYLOAD_MAX) throw new XenstoreError("E2BIG", op, path);
    const { timeoutMs } = opts;
    const reply = await new Promise<XsMessage>((resolve, reject) => {
      let settled = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      /** Set once the request is sent (req_ids are never reused, not even on a new connection). */
      let reqId: number | undefined;
      const settle = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        outcome();
      };
      const what = `${op}${path === undefined ? "" : ` ${path}`}`;
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          if (reqId === undefined) {
            // Still connecting: nothing was sent, so nothing to reset.
            settle(() =>
              reject(
                new XenstoreError(
                  "ETIMEDOUT",
                  op,
                  path,
                  `xenstored did not accept a connection within ${timeoutMs / 1000} s (for ${what})`,
                ),
              ),
            );
            return;
          }
          // Forgotten first, so that a reply arriving late finds nothing to resolve.
          this.pending.delete(reqId);
          const err = new XenstoreError(
            "ETIMEDOUT",
            op,
            path,
            `xenstored did not answer ${what} within ${timeoutMs / 1000} s; connection reset`,
          );
          settle(() => reject(err));
          this.dropConnection(err);
        }, timeoutMs);
      }
      this.ensureConnected().then(
        (transport) => {
          if (settled) return;
          if (transport !== this.transport) {
            // Reset between the connect and now: sent there, it would wait for ever.
            settle(() =>
              reject(new XenstoreError("ECONNRESET", op, path, `xenstore connection reset (during ${what})`)),
            );
            return;
          }
          const id = this.nextReqId;
          this.nextReqId = this.nextReqId >= 0xffffffff ? 1 : this.nextReqId + 1;
          reqId = id;
          this.pending.set(id, {
            op,
            path,
            resolve: (msg) => settle(() => resolve(msg)),
            reject: (err) => settle(() => reject(err)),
          });
          transport.write(encodeMessage({ type, reqId: id, txId: tx, payload }));
        },
        (err: unknown) => settle(() => reject(err)),
      );
    });
    if (reply.type === XsType.ERROR) throw new XenstoreError(errorName(reply.payload), op, path);
    if (reply.type !== type) {
      throw new XenstoreError(
        "EIO",
        op,
        path,
        `xenstore ${op}: reply of type ${reply.type} to a request of type ${type}`,
      );
    }
    return reply.payload;
  }

  /**
   * Sets a watch on `path` (and its children). Per xenstore.txt the watch fires
   * once straight away, then on every change; `onEvent` gets the changed path.
   * `onClose` is called if the connection is lost (the watch is then gone).
   */
  async watch(
    path: string,
    onEvent: (path: string) => void,
    onClose: (err: Error) => void = () => undefined,
  ): Promise<XenstoreWatch> {
    const token = `jitsu-${process.pid}-${this.nextToken++}`;
    // Registered before the request: the first event may arrive before the WATCH reply.
    this.watches.set(token, { onEvent, onClose });
    try {
      await this.request(XsType.WATCH, nulStrings(checkPath(path), token), "watch", path, 0);
    } catch (err) {
      this.watches.delete(token);
      throw err;
    }
    return {
      path,
      token,
      unwatch: async () => {
        if (!this.watches.delete(token)) return;
        if (this.transport === undefined) return;
        await this.request(XsType.UNWATCH, nulStrings(path, token), "unwatch", path, 0);
      },
    };
  }

  async transactionStart(): Promise<XenstoreTransaction> {
    const reply = await this.request(
      XsType.TRANSACTION_START,
      nulStrings(""),
      "transaction_start",
      undefined,
      0,
    );
    const id = Number(splitNul(reply)[0]);
    if (!Number.isSafeInteger(id) || id <= 0)
      throw new XenstoreError(
        "EIO",
        "transaction_start",
        undefined,
        `xenstore transaction_start: bad transaction id '${reply.toString()}'`,
      );
    return new XenstoreTransaction(this, id);
  }

  /** Commits (`commit`) or discards a transaction; a conflicting commit rejects with EAGAIN. */
  async transactionEnd(tx: XenstoreTransaction, commit: boolean): Promise<void> {
    await this.request(
      XsType.TRANSACTION_END,
      nulStrings(commit ? "T" : "F"),
      "transaction_end",
      undefined,
      tx.id,
    );
  }

  /**
   * Runs `body` in a transaction and commits it, retrying the whole body when
   * the commit meets EAGAIN (another writer got in between), up to `attempts` times.
   */
  async transaction<T>(body: (tx: XenstoreTransaction) => Promise<T>, attempts = 16): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const tx = await this.transactionStart();
      let result: T;
      try {
        result = await body(tx);
      } catch (err) {
        await this.transactionEnd(tx, false).catch(() => undefined);
        throw err;
      }
      try {
        await this.transactionEnd(tx, true);
        return result;
      } catch (err) {
        if (!(err instanceof XenstoreError && err.code === "EAGAIN") || attempt >= attempts) throw err;
      }
    }
  }

  /**
   * Resolves once `path` exists. Uses a watch: the watch fires once when set
   * (so a key that already exists is seen at once) and again on each change
   * under `path`; each event checks whether the key is there. The key is also
   * read every WAIT_RECHECK_MS, so that a hung xenstored is seen as one
   * (a request it leaves unanswered) even when the watch was set before it hung.
   * Rejects with `signal.reason` when `signal` aborts, or if the connection is
   * lost. When `signal` aborts while a request of the wait has gone unanswered
   * for WAIT_HUNG_MS or more, xenstored is hung, not the domain slow: the
   * connection is reset (its other requests fail, the next one reconnects) and
   * the wait rejects with XenstoreError ETIMEDOUT instead, so that the caller
   * can blame the daemon.
   */
  async waitForKey(path: string, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    let watch: XenstoreWatch | undefined;
    let finished = false;
    /** When each request of this wait that xenstored has not answered yet was sent. */
    const outstanding = new Set<{ readonly sent: number }>();
    const counted = <T>(p: Promise<T>): Promise<T> => {
      const entry = { sent: performance.now() };
      outstanding.add(entry);
      return p.finally(() => outstanding.delete(entry));
    };
    let recheck: ReturnType<typeof setInterval> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: unknown): void => {
          if (finished) return;
          finished = true;
          clearInterval(recheck);
          signal.removeEventListener("abort", onAbort);
          if (err === undefined) resolve();
          else reject(err);
        };
        const onAbort = (): void => {
          // A request still unanswered at the deadline: reset the connection, so that
          // nothing queues behind it and the next request reconnects (to the same
          // daemon after SIGCONT, or a new one). Unanswered for long: xenstored is hung.
          if (outstanding.size > 0) {
            const oldest = Math.min(...[...outstanding].map((e) => e.sent));
            const hung = performance.now() - oldest >= WAIT_HUNG_MS;
            const err = new XenstoreError(
              "ETIMEDOUT",
              "watch",
              path,
              `xenstored did not answer for ${((performance.now() - oldest) / 1000).toFixed(1)} s while waiting for ${path}; connection reset`,
            );
            this.dropConnection(err);
            done(hung ? err : signal.reason);
            return;
          }
          done(signal.reason);
        };
        signal.addEventListener("abort", onAbort, { once: true });
        let checking = false;
        let again = false;
        const check = (): void => {
          if (finished) return;
          if (checking) {
            again = true;
            return;
          }
          checking = true;
          counted(this.exists(path)).then(
            (found) => {
              checking = false;
              if (found) done();
              else if (again) {
                again = false;
                check();
              }
            },
            (err: unknown) => {
              checking = false;
              done(err);
            },
          );
        };
        recheck = setInterval(check, WAIT_RECHECK_MS);
        recheck.unref();
        counted(this.watch(path, check, (err) => done(err))).then(
          (w) => {
            watch = w;
            if (finished) void w.unwatch().catch(() => undefined);
          },
          (err: unknown) => done(err),
        );
      });
    } finally {
      finished = true;
      clearInterval(recheck);
      if (watch !== undefined) await watch.unwatch().catch(() => undefined);
    }
  }

  /** Closes the connection; pending requests reject. */
  async close(): Promise<void> {
    this.closed = true;
    const transport = this.transport;
    this.transport = undefined;
    transport?.close();
    this.failAll(new XenstoreError("ECONNRESET", "request", undefined, "xenstore connection closed"));
  }

  private ensureConnected(): Promise<Transport> {
    if (this.transport !== undefined) return Promise.resolve(this.transport);
    if (this.closed)
      return Promise.reject(
        new XenstoreError("ECONNRESET", "connect", undefined, "xenstore client is closed"),
      );
    this.connecting ??= (async () => {
      const reader = new MessageReader();
      /**
       * This connection's transport. Once it is reset (dropConnection) it is no
       * longer `this.transport`, and what it still reports is ignored: a late
       * reply, and its own `closed`, which would otherwise reset the next
       * connection. (Nothing can arrive before it is set: openTransport resolves
       * in microtasks after the connect, before any I/O callback.)
       */
      let current: Transport | undefined;
      const live = (): boolean => current !== undefined && this.transport === current;
      try {
        const { transport, path } = await openTransport(this.options.paths ?? xenstorePaths(), {
          data: (chunk) => {
            if (!live()) return;
            let messages: XsMessage[];
            try {
              messages = reader.push(chunk);
            } catch (err) {
              this.dropConnection(
                new XenstoreError("EIO", "read", undefined, `xenstore: ${(err as Error).message}`),
              );
              return;
            }
            for (const msg of messages) this.dispatch(msg);
          },
          closed: (error) => {
            if (!live()) return;
            this.dropConnection(
              new XenstoreError(
                "ECONNRESET",
                "request",
                undefined,
                `xenstore connection lost${error === undefined ? "" : `: ${error.message}`}`,
              ),
            );
          },
        });
        current = transport;
        this.transport = transport;
        this.connectedPath = path;
        return transport;
      } catch (err) {
        throw new XenstoreError("ECONNREFUSED", "connect", undefined, (err as Error).message);
      } finally {
        this.connecting = undefined;
      }
    })();
    return this.connecting;
  }

  private dispatch(msg: XsMessage): void {
    if (msg.type === XsType.WATCH_EVENT) {
      const [path, token] = splitNul(msg.payload);
      if (path === undefined || token === undefined) return;
      this.watches.get(token)?.onEvent(path);
      return;
    }
    const pending = this.pending.get(msg.reqId);
    if (pending === undefined) return;
    this.pending.delete(msg.reqId);
    pending.resolve(msg);
  }

  private dropConnection(err: XenstoreError): void {
    const transport = this.transport;
    // Forgotten before it is closed: its `closed` (at once for the xenbus device) is then ignored.
    this.transport = undefined;
    transport?.close();
    this.failAll(err);
  }

  private failAll(err: XenstoreError): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending)
      p.reject(
        new XenstoreError(
          err.code,
          p.op,
          p.path,
          `${err.message} (during ${p.op}${p.path === undefined ? "" : ` ${p.path}`})`,
        ),
      );
    const watches = [...this.watches.values()];
    this.watches.clear();
    for (const w of watches) w.onClose(err);
  }
}

/** Paths are absolute here (relative ones are only meaningful to a domain's own connection). */
function checkPath(path: string): string {
  if (!path.startsWith("/") && !path.startsWith("@"))
    throw new XenstoreError("EINVAL", "path", path, `xenstore path '${path}' is not absolute`);
  if (path.length > ABS_PATH_MAX)
    throw new XenstoreError("EINVAL", "path", path, `xenstore path is longer than ${ABS_PATH_MAX} bytes`);
  return path;
}
