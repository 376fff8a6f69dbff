/**
 * A client of the QEMU Machine Protocol (docs/interop/qmp-spec.rst in the QEMU
 * sources): JSON objects, one a line, over a unix socket. The server greets
 * with `{"QMP": {...}}`; we leave capabilities negotiation with
 * `qmp_capabilities`; commands carry an `id` that the reply echoes, so any
 * number may be in flight; `{"event": ...}` messages may arrive at any time.
 */
import { createConnection, type Socket } from "node:net";
import { systemClock, type Clock, type Timer } from "../../clock/index.js";
import { BackendError } from "../../errors/index.js";

const BACKEND = "qemu";

export interface QmpGreeting {
  readonly version: {
    readonly qemu: { major: number; minor: number; micro: number };
    readonly package: string;
  };
  readonly capabilities: readonly string[];
}

export interface QmpEvent {
  readonly event: string;
  readonly data: Readonly<Record<string, unknown>>;
  /** Seconds since the epoch, as QEMU stamps it. */
  readonly timestamp: number;
}

/** A QMP `error` reply: QEMU's class (GenericError, CommandNotFound, ...) and description are kept. */
export class QmpError extends BackendError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(BACKEND, `QMP command '${command}' failed`, { detail: `${errorClass}: ${desc}` });
  }
}

interface Pending {
  readonly command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: Timer | undefined;
}

export interface QmpConnectOptions {
  /** Bounds the connect, the greeting and qmp_capabilities (default 10 s). */
  readonly timeoutMs?: number;
  /** Every timeout of this client runs on it (default: the system clock). */
  readonly clock?: Clock;
}

export interface QmpCommandOptions {
  /** Rejects when no reply came within this time (default: none). */
  readonly timeoutMs?: number;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export class QmpClient {
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly eventListeners: ((event: QmpEvent) => void)[] = [];
  private readonly closeListeners: ((reason: string) => void)[] = [];
  private buffer = "";
  private closedReason: string | null = null;
  private greetingWaiter: { resolve(g: QmpGreeting): void; reject(err: Error): void } | null = null;
  private greetingValue: QmpGreeting | null = null;

  private constructor(
    private readonly socket: Socket,
    readonly path: string,
    private readonly clock: Clock,
  ) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", (err: NodeJS.ErrnoException) =>
      this.shutdown(`${err.code ?? "error"}: ${err.message}`),
    );
    socket.on("close", () => this.shutdown("the connection was closed (QEMU exited?)"));
  }

  /** Connects, reads the greeting and enters command mode. */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const clock = options.clock ?? systemClock;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection({ path });
      // The clock's timer, not the socket's own timeout: that one measures idleness, not the connect.
      const timer = clock.setTimer(timeoutMs, () => {
        s.destroy();
        reject(new BackendError(BACKEND, `QMP socket ${path}: no connection after ${timeoutMs} ms`));
      });
      s.once("connect", () => {
        timer.cancel();
        s.removeAllListeners("error");
        resolve(s);
      });
      s.once("error", (err: NodeJS.ErrnoException) => {
        timer.cancel();
        reject(
          new BackendError(BACKEND, `cannot connect to the QMP socket ${path}`, {
            detail: `${err.code ?? "error"}: ${err.message}`,
            cause: err,
          }),
        );
      });
    });
    const client = new QmpClient(socket, path, clock);
    try {
      await client.waitGreeting(timeoutMs);
      await client.execute("qmp_capabilities", undefined, { timeoutMs });
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** What QEMU said when we connected (its version and capabilities). */
  get greeting(): QmpGreeting {
    if (this.greetingValue === null) throw new Error("QMP greeting not received yet");
    return this.greetingValue;
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** Runs a command and resolves with its `return` value; a QMP error rejects with a QmpError. */
  execute<T = unknown>(
    command: string,
    args?: Readonly<Record<string, unknown>>,
    options: QmpCommandOptions = {},
  ): Promise<T> {
    if (this.closedReason !== null) {
      return Promise.reject(
        new BackendError(BACKEND, `cannot send '${command}': QMP socket ${this.path} is closed`, {
          detail: this.closedReason,
        }),
      );
    }
    const id = `jitsu-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const pending: Pending = {
        command,
        resolve: resolve as (v: unknown) => void,
        reject,
        timer: undefined,
      };
      if (options.timeoutMs !== undefined) {
        pending.timer = this.clock.setTimer(options.timeoutMs, () => {
          this.pending.delete(id);
          reject(
            new BackendError(BACKEND, `QMP command '${command}' got no reply within ${options.timeoutMs} ms`),
          );
        });
      }
      this.pending.set(id, pending);
      const msg = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(`${JSON.stringify(msg)}\n`);
    });
  }

  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.eventListeners.push(listener);
    return () => {
      const i = this.eventListeners.indexOf(listener);
      if (i >= 0) this.eventListeners.splice(i, 1);
    };
  }

  /** Called once when the connection ends, with the reason; returns a function that unregisters it. */
  onClose(listener: (reason: string) => void): () => void {
    if (this.closedReason !== null) {
      listener(this.closedReason);
      return () => undefined;
    }
    this.closeListeners.push(listener);
    return () => {
      const i = this.closeListeners.indexOf(listener);
      if (i >= 0) this.closeListeners.splice(i, 1);
    };
  }

  /** Resolves with the next event named `name` (matching `filter`), or rejects on timeout or close. */
  waitForEvent(
    name: string,
    timeoutMs: number,
    filter: (e: QmpEvent) => boolean = () => true,
  ): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      if (this.closedReason !== null) {
        reject(
          new BackendError(BACKEND, `QMP socket ${this.path} is closed; no ${name} event will come`, {
            detail: this.closedReason,
          }),
        );
        return;
      }
      const done = (): void => {
        timer.cancel();
        offEvent();
        offClose();
      };
      const timer = this.clock.setTimer(timeoutMs, () => {
        done();
        reject(new BackendError(BACKEND, `no QMP event ${name} within ${timeoutMs} ms`));
      });
      const offEvent = this.onEvent((e) => {
        if (e.event !== name || !filter(e)) return;
        done();
        resolve(e);
      });
      const offClose = this.onClose((reason) => {
        done();
        reject(
          new BackendError(BACKEND, `QMP socket ${this.path} closed while waiting for ${name}`, {
            detail: reason,
          }),
        );
      });
    });
  }

  close(): void {
    this.socket.destroy();
    this.shutdown("closed by jitsu");
  }

  /** Lets the process exit while this connection is open (it stays usable). */
  unref(): void {
    this.socket.unref();
  }

  private waitGreeting(timeoutMs: number): Promise<QmpGreeting> {
    if (this.greetingValue !== null) return Promise.resolve(this.greetingValue);
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimer(timeoutMs, () => {
        this.greetingWaiter = null;
        reject(new BackendError(BACKEND, `QMP socket ${this.path}: no greeting within ${timeoutMs} ms`));
      });
      this.greetingWaiter = {
        resolve: (g) => {
          timer.cancel();
          resolve(g);
        },
        reject: (err) => {
          timer.cancel();
          reject(err);
        },
      };
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line !== "") this.onMessage(line);
    }
    if (this.buffer.length > 16 * 1024 * 1024) this.fail("a QMP message longer than 16 MiB");
  }

  private onMessage(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.fail(`QEMU sent a line that is not JSON: ${line.slice(0, 80)}`);
      return;
    }
    if (!isRecord(msg)) {
      this.fail(`QEMU sent a JSON value that is not an object: ${line.slice(0, 80)}`);
      return;
    }
    if ("QMP" in msg) {
      const g = msg["QMP"];
      const greeting: QmpGreeting = isRecord(g)
        ? (g as unknown as QmpGreeting)
        : { version: { qemu: { major: 0, minor: 0, micro: 0 }, package: "" }, capabilities: [] };
      this.greetingValue = greeting;
      this.greetingWaiter?.resolve(greeting);
      this.greetingWaiter = null;
      return;
    }
    if (typeof msg["event"] === "string") {
      const ts = msg["timestamp"];
      const timestamp = isRecord(ts)
        ? Number(ts["seconds"] ?? 0) + Number(ts["microseconds"] ?? 0) / 1e6
        : this.clock.now() / 1000;
      const event: QmpEvent = {
        event: msg["event"],
        data: isRecord(msg["data"]) ? msg["data"] : {},
        timestamp,
      };
      for (const l of [...this.eventListeners]) l(event);
      return;
    }
    const id = typeof msg["id"] === "string" ? msg["id"] : undefined;
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (pending === undefined) {
      // An error without an id answers a message QEMU could not parse; we only send valid JSON.
      if ("error" in msg && id === undefined) {
        const err = isRecord(msg["error"]) ? msg["error"] : {};
        this.fail(`QEMU rejected a message: ${String(err["class"])}: ${String(err["desc"])}`);
      }
      return;
    }
    this.pending.delete(id!);
    pending.timer?.cancel();
    if ("return" in msg) {
      pending.resolve(msg["return"]);
    } else if (isRecord(msg["error"])) {
      const err = msg["error"];
      pending.reject(
        new QmpError(
          pending.command,
          typeof err["class"] === "string" ? err["class"] : "UnknownError",
          typeof err["desc"] === "string" ? err["desc"] : JSON.stringify(err),
        ),
      );
    } else {
      pending.reject(
        new BackendError(BACKEND, `QMP reply to '${pending.command}' has neither 'return' nor 'error'`, {
          detail: line.slice(0, 120),
        }),
      );
    }
  }

  private fail(reason: string): void {
    this.socket.destroy();
    this.shutdown(reason);
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    const err = (command: string): BackendError =>
      new BackendError(BACKEND, `QMP socket ${this.path} closed before the reply to '${command}'`, {
        detail: reason,
      });
    for (const p of this.pending.values()) {
      p.timer?.cancel();
      p.reject(err(p.command));
    }
    this.pending.clear();
    this.greetingWaiter?.reject(
      new BackendError(BACKEND, `QMP socket ${this.path} closed before the greeting`, { detail: reason }),
    );
    this.greetingWaiter = null;
    for (const l of this.closeListeners.splice(0)) l(reason);
  }
}
