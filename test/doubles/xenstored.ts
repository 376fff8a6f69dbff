/**
 * A xenstored double: a unix-socket server speaking the wire protocol of
 * docs/misc/xenstore.txt (Xen 4.17), with a tree of nodes, watches and
 * transactions. Sections followed are named where they apply. Connections are
 * treated as dom0's (a socket client), so relative paths are under
 * /local/domain/0 ("Values commonly included in payloads: <path>").
 */
import type { Socket } from "node:net";
import { pathToFileURL } from "node:url";
import { T, decoder, encode, type Msg } from "./xenstored-wire.js";
import { UnixSocketDouble } from "./unix-server.js";

type Tree = Map<string, Buffer>;

interface Watch {
  conn: Socket;
  wpath: string;
  token: string;
}

interface Tx {
  conn: Socket;
  tree: Tree;
  /** The store's generation when the transaction started; a different one at commit means EAGAIN. */
  generation: number;
  changed: string[];
}

export interface XsLogEntry {
  readonly op: string;
  readonly path: string;
  readonly tx: number;
  readonly value?: Buffer;
}

const OPS: Record<number, string> = {
  1: "DIRECTORY",
  2: "READ",
  4: "WATCH",
  5: "UNWATCH",
  6: "TRANSACTION_START",
  7: "TRANSACTION_END",
  10: "GET_DOMAIN_PATH",
  11: "WRITE",
  12: "MKDIR",
  13: "RM",
  21: "RESET_WATCHES",
};

class XsErr extends Error {
  constructor(readonly errno: string) {
    super(errno);
  }
}

function parent(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** "<child> is a child of <parent> if they're identical, or if <parent> is /, or if <parent>/ is an initial substring of <child>" */
function isChild(child: string, par: string): boolean {
  return child === par || par === "/" || child.startsWith(`${par}/`);
}

export class XenstoredDouble extends UnixSocketDouble {
  private tree: Tree = new Map([["/", Buffer.alloc(0)]]);
  private generation = 0;
  private watches: Watch[] = [];
  private txs = new Map<number, Tx>();
  private nextTx = 1;
  private readonly denied = new Set<string>();
  /** Every request that touched a path, in arrival order. */
  readonly log: XsLogEntry[] = [];

  /** Test hook: every request on `path` or below answers EACCES (the permissions system, simplified). */
  deny(path: string): void {
    this.denied.add(path);
  }

  /** Test-side direct access, as another dom0 tool would do it; fires watches. */
  write(path: string, value: string | Buffer): void {
    const changed: string[] = [];
    this.doWrite(this.tree, path, typeof value === "string" ? Buffer.from(value) : value, changed);
    this.generation++;
    this.fire(changed);
  }

  read(path: string): Buffer | undefined {
    return this.tree.get(path);
  }

  rm(path: string): void {
    const changed: string[] = [];
    this.doRm(this.tree, path, changed);
    this.generation++;
    this.fire(changed);
  }

  watchCount(): number {
    return this.watches.length;
  }

  connectionCount(): number {
    return this.conns.size;
  }

  protected accept(conn: Socket): void {
    this.conns.add(conn);
    const decode = decoder();
    conn.on("data", (chunk: Buffer) => {
      let messages: Msg[];
      try {
        messages = decode(chunk);
      } catch {
        // "If a client exceeds the limit, its xenstored connection will be immediately killed"
        conn.destroy();
        return;
      }
      for (const m of messages) this.handle(conn, m);
    });
    conn.on("error", () => undefined);
    conn.on("close", () => {
      this.conns.delete(conn);
      this.watches = this.watches.filter((w) => w.conn !== conn);
      for (const [id, tx] of this.txs) if (tx.conn === conn) this.txs.delete(id);
    });
  }

  private reply(conn: Socket, req: Msg, payload: Buffer): void {
    if (!conn.destroyed) conn.write(encode({ type: req.type, reqId: req.reqId, txId: req.txId, payload }));
  }

  /** "if an error occurs, a reply will be returned with type ERROR, and only req_id and tx_id copied" */
  private error(conn: Socket, req: Msg, errno: string): void {
    if (!conn.destroyed)
      conn.write(
        encode({ type: T.ERROR, reqId: req.reqId, txId: req.txId, payload: Buffer.from(`${errno}\0`) }),
      );
  }

  private handle(conn: Socket, m: Msg): void {
    try {
      this.dispatch(conn, m);
    } catch (err) {
      if (err instanceof XsErr) this.error(conn, m, err.errno);
      else this.error(conn, m, "EIO");
    }
  }

  private strings(payload: Buffer): string[] {
    const parts = payload.toString("utf8").split("\0");
    if (parts.at(-1) === "") parts.pop();
    return parts;
  }

  /** Path syntax: alphanumerics and -/_@, no doubled or trailing slashes, at most 3072 bytes. */
  private path(raw: string | undefined): string {
    if (raw === undefined || raw === "") throw new XsErr("EINVAL");
    const p = raw.startsWith("/") ? raw : `/local/domain/0/${raw}`;
    if (
      p.length > 3072 ||
      !/^[A-Za-z0-9\-/_@]+$/.test(p) ||
      p.includes("//") ||
      (p !== "/" && p.endsWith("/"))
    ) {
      throw new XsErr("EINVAL");
    }
    for (const d of this.denied) if (isChild(p, d)) throw new XsErr("EACCES");
    return p;
  }

  private dispatch(conn: Socket, m: Msg): void {
    const op = OPS[m.type];
    if (op === undefined) throw new XsErr("EINVAL");
    let tree = this.tree;
    let tx: Tx | undefined;
    // "The tx_id in a WATCH request is ignored"; "It is not legal to send non-0 tx_id in TRANSACTION_START".
    if (m.txId !== 0 && m.type !== T.WATCH && m.type !== T.UNWATCH) {
      if (m.type === T.TRANSACTION_START) throw new XsErr("EBUSY");
      tx = this.txs.get(m.txId);
      if (tx === undefined || tx.conn !== conn) throw new XsErr("ENOENT");
      tree = tx.tree;
    }
    const args = this.strings(m.payload);
    const logPath = m.type === T.TRANSACTION_START || m.type === T.TRANSACTION_END ? "" : (args[0] ?? "");
    this.log.push({
      op,
      path: logPath,
      tx: m.txId,
      ...(m.type === T.WRITE ? { value: m.payload.subarray(m.payload.indexOf(0) + 1) } : {}),
    });
    const ok = Buffer.from("OK\0");
    switch (m.type) {
      case T.READ: {
        // READ <path>| -> <value|>
        const v = tree.get(this.path(args[0]));
        if (v === undefined) throw new XsErr("ENOENT");
        return this.reply(conn, m, v);
      }
      case T.WRITE: {
        // WRITE <path>|<value|>: "creates any missing parent paths, with empty values"
        const nul = m.payload.indexOf(0);
        if (nul < 0) throw new XsErr("EINVAL");
        const path = this.path(m.payload.subarray(0, nul).toString("utf8"));
        const changed: string[] = [];
        this.doWrite(tree, path, Buffer.from(m.payload.subarray(nul + 1)), changed);
        this.commitOrQueue(tx, changed);
        return this.reply(conn, m, ok);
      }
      case T.MKDIR: {
        const path = this.path(args[0]);
        const changed: string[] = [];
        if (!tree.has(path)) this.doWrite(tree, path, Buffer.alloc(0), changed);
        this.commitOrQueue(tx, changed);
        return this.reply(conn, m, ok);
      }
      case T.RM: {
        // "It is not an error if <path> does not exist, but it _is_ an error if <path>'s immediate parent does not exist either."
        const path = this.path(args[0]);
        if (!tree.has(path)) {
          if (!tree.has(parent(path))) throw new XsErr("ENOENT");
          return this.reply(conn, m, ok);
        }
        if (path === "/") throw new XsErr("EINVAL");
        const changed: string[] = [];
        this.doRm(tree, path, changed);
        this.commitOrQueue(tx, changed);
        return this.reply(conn, m, ok);
      }
      case T.DIRECTORY: {
        // DIRECTORY <path>| -> <child-leaf-name>|*
        const path = this.path(args[0]);
        if (!tree.has(path)) throw new XsErr("ENOENT");
        const prefix = path === "/" ? "/" : `${path}/`;
        const names = [...tree.keys()].filter(
          (k) => k !== path && k.startsWith(prefix) && !k.slice(prefix.length).includes("/"),
        );
        return this.reply(conn, m, Buffer.from(names.map((n) => `${n.slice(prefix.length)}\0`).join("")));
      }
      case T.WATCH: {
        // WATCH <wpath>|<token>|? ; "When a watch is first set up it is triggered once straight away, with <path> equal to <wpath>."
        const [raw, token] = args;
        if (token === undefined) throw new XsErr("EINVAL");
        const wpath = raw?.startsWith("@") === true ? raw : this.path(raw);
        if (this.watches.some((w) => w.conn === conn && w.wpath === wpath && w.token === token))
          throw new XsErr("EEXIST");
        this.watches.push({ conn, wpath, token });
        this.reply(conn, m, ok);
        this.event(conn, raw!, token);
        return;
      }
      case T.UNWATCH: {
        const [raw, token] = args;
        const wpath = raw?.startsWith("@") === true ? raw : this.path(raw);
        const i = this.watches.findIndex((w) => w.conn === conn && w.wpath === wpath && w.token === token);
        if (i < 0) throw new XsErr("ENOENT");
        this.watches.splice(i, 1);
        return this.reply(conn, m, ok);
      }
      case T.RESET_WATCHES: {
        this.watches = this.watches.filter((w) => w.conn !== conn);
        for (const [id, t] of this.txs) if (t.conn === conn) this.txs.delete(id);
        return this.reply(conn, m, ok);
      }
      case T.TRANSACTION_START: {
        // "When transaction is started whole db is copied; reads and writes happen on the copy."
        const id = this.nextTx++;
        this.txs.set(id, { conn, tree: new Map(this.tree), generation: this.generation, changed: [] });
        return this.reply(conn, m, Buffer.from(`${id}\0`));
      }
      case T.TRANSACTION_END: {
        // "If F, the transaction is discarded. If T, it is committed: if there were any other intervening writes then our END gets EAGAIN."
        if (tx === undefined) throw new XsErr("ENOENT");
        const flag = args[0];
        if (flag !== "T" && flag !== "F") throw new XsErr("EINVAL");
        this.txs.delete(m.txId);
        if (flag === "T") {
          if (tx.generation !== this.generation) throw new XsErr("EAGAIN");
          this.tree = tx.tree;
          this.generation++;
          // "Changes made in transactions cause an event only if and when committed."
          this.fire(tx.changed);
        }
        return this.reply(conn, m, ok);
      }
      case T.GET_DOMAIN_PATH: {
        const domid = Number(args[0]);
        if (!Number.isInteger(domid) || domid < 0 || domid > 65535) throw new XsErr("EINVAL");
        return this.reply(conn, m, Buffer.from(`/local/domain/${domid}\0`));
      }
      default:
        throw new XsErr("ENOSYS");
    }
  }

  private commitOrQueue(tx: Tx | undefined, changed: string[]): void {
    if (tx !== undefined) {
      tx.changed.push(...changed);
      return;
    }
    if (changed.length > 0) this.generation++;
    this.fire(changed);
  }

  private doWrite(tree: Tree, path: string, value: Buffer, changed: string[]): void {
    const missing: string[] = [];
    for (let p = parent(path); !tree.has(p); p = parent(p)) missing.push(p);
    for (const p of missing.reverse()) tree.set(p, Buffer.alloc(0));
    tree.set(path, value);
    // One event, for the path written: C xenstored's do_write fires watches for that name only
    // (watches on the parents match it as a child; the implicitly created parents get none).
    changed.push(path);
  }

  private doRm(tree: Tree, path: string, changed: string[]): void {
    if (!tree.has(path)) return;
    for (const k of [...tree.keys()]) if (isChild(k, path)) tree.delete(k);
    changed.push(path);
  }

  /**
   * "The event's path matches the watch's <wpath> if it is an child of <wpath>."
   * "if the event was the recursive removal of an parent of <wpath>, <epath> is just <wpath>"
   */
  private fire(changed: string[]): void {
    const sent = new Set<string>();
    for (const path of changed) {
      for (const w of this.watches) {
        if (w.wpath.startsWith("@")) continue;
        let epath: string | undefined;
        if (isChild(path, w.wpath)) epath = path;
        else if (isChild(w.wpath, path) && !this.tree.has(w.wpath)) epath = w.wpath;
        if (epath === undefined) continue;
        const key = `${w.token}\0${epath}`;
        if (sent.has(key)) continue;
        sent.add(key);
        this.event(w.conn, epath, w.token);
      }
    }
  }

  /** WATCH_EVENT <epath>|<token>| ; "req_id and tx_id are both 0". */
  private event(conn: Socket, epath: string, token: string): void {
    if (!conn.destroyed)
      conn.write(
        encode({ type: T.WATCH_EVENT, reqId: 0, txId: 0, payload: Buffer.from(`${epath}\0${token}\0`) }),
      );
  }
}

// ------------------------------------------------------------ standalone

/**
 * Run as its own process, so that a test can SIGKILL or SIGSTOP xenstored:
 * node dist/test/doubles/xenstored.js --socket PATH. Prints
 * "xenstored double listening on PATH", then one line per request
 * ("WATCH /local/domain/1/data/ready"). A new process starts with an empty
 * tree, as a xenstored started afresh does.
 */
async function main(argv: string[]): Promise<void> {
  const i = argv.indexOf("--socket");
  const socketPath = i >= 0 ? argv[i + 1] : undefined;
  if (socketPath === undefined || socketPath === "" || argv.length !== 2) {
    throw new Error("usage: xenstored.js --socket PATH");
  }
  const double = new XenstoredDouble(socketPath);
  await double.start();
  console.log(`xenstored double listening on ${socketPath}`);
  let printed = 0;
  setInterval(() => {
    for (; printed < double.log.length; printed++) {
      const entry = double.log[printed]!;
      console.log(`${entry.op} ${entry.path}`);
    }
  }, 10);
  const stop = (): void => void double.stop().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  });
}
