/**
 * The splice relay: the warm path of the hold ports in a native thread
 * (native/splice_relay.c, an N-API addon built by `npm run build`). It owns
 * the hold ports' listening sockets. While a port is enabled (its VM is
 * ready), each connection is accepted, connected to the VM and relayed with
 * splice(2) in that thread: no JavaScript per connection. Otherwise, and when
 * the VM refuses (it stopped behind our back; the port is then disabled), the
 * accepted socket's fd comes to `onAccepted` with its peer's address: the
 * activator gives it back (`relay`) if its VM is ready, else wraps it
 * (`SpliceRelay.socket`) and holds and relays it itself. Without the addon (no compiler when
 * jitsu was built) `SpliceRelay.load` returns null and the activator listens
 * and relays in JavaScript (relay.ts).
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import { fileURLToPath } from "node:url";

/** dist/native/jitsu_splice_relay.node, from dist/src/activator/splice-relay.js (scripts/build-native.mjs). */
export const SPLICE_ADDON = fileURLToPath(new URL("../../native/jitsu_splice_relay.node", import.meta.url));

/** Counts of the connections relayed in the native thread for one listener (the handed-over ones are not in them). */
export interface SpliceStats {
  /** Whether its next connection is relayed natively. */
  readonly fast: boolean;
  /** Relays open now (connecting to the VM or relaying). */
  readonly open: number;
  readonly accepted: number;
  /** Connected to the VM (spliced). */
  readonly connected: number;
  readonly toVm: number;
  readonly fromVm: number;
  /** Relays that ended with a reset (either side, or a failed pipe). */
  readonly errors: number;
  /** Milliseconds since the last connection was accepted here, or null if none was. */
  readonly sinceAcceptMs: number | null;
  /** Milliseconds since the last relay here ended, or null if none did. */
  readonly sinceCloseMs: number | null;
}

type Engine = object & { readonly __engine: unique symbol };

/** A socket the relay accepted: its fd, whether the VM refused it, its peer's address. */
export type OnAccepted = (listener: number, fd: number, refused: boolean, peer: string) => void;

interface Addon {
  create(onAccepted: (handed: (number | boolean | string)[]) => void): Engine;
  relay(e: Engine, id: number, fd: number): boolean;
  listen(e: Engine, host: string, port: number, backlog: number): number;
  port(e: Engine, id: number): number;
  unlisten(e: Engine, id: number): void;
  enable(e: Engine, id: number, host: string, port: number): void;
  disable(e: Engine, id: number, seenAccepted: number): boolean;
  stats(e: Engine, id: number): number[];
  stop(e: Engine): void;
}

export class SpliceRelay {
  private readonly engine: Engine;

  /** Whether the addon is built (it may still fail to load: `load` says). */
  static available(path: string = SPLICE_ADDON): boolean {
    return existsSync(path);
  }

  /** The addon at `path`, started, or null if it is not built (or cannot be loaded here). */
  static load(onAccepted: OnAccepted, path: string = SPLICE_ADDON): SpliceRelay | null {
    if (!existsSync(path)) return null;
    let addon: Addon;
    try {
      addon = createRequire(import.meta.url)(path) as Addon;
    } catch {
      return null;
    }
    return new SpliceRelay(addon, onAccepted);
  }

  /** A socket handed over by the relay as a net.Socket, half-open allowed, not reading (as net.Server's pauseOnConnect). */
  static socket(fd: number): net.Socket {
    const opts = { fd, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: true };
    return new net.Socket(opts as net.SocketConstructorOpts);
  }

  private constructor(
    private readonly addon: Addon,
    onAccepted: OnAccepted,
  ) {
    this.engine = addon.create((handed) => {
      for (let i = 0; i + 3 < handed.length; i += 4) {
        onAccepted(
          handed[i] as number,
          handed[i + 1] as number,
          handed[i + 2] as boolean,
          handed[i + 3] as string,
        );
      }
    });
  }

  /** Relays `fd` (handed over, not wrapped) natively, if `id` is enabled; false (fd untouched) if not. */
  relay(id: number, fd: number): boolean {
    return this.addon.relay(this.engine, id, fd);
  }

  /** Listens on host:port (an IP address); throws an Error with `code` (EADDRINUSE, ...). Returns its id. */
  listen(host: string, port: number, backlog: number): number {
    return this.addon.listen(this.engine, host, port, backlog);
  }

  port(id: number): number {
    return this.addon.port(this.engine, id);
  }

  /** Stops listening; its relays go on. */
  unlisten(id: number): void {
    this.addon.unlisten(this.engine, id);
  }

  /** Relays the next connections natively to host:port (an IP address). */
  enable(id: number, host: string, port: number): void {
    this.addon.enable(this.engine, id, host, port);
  }

  /**
   * Hands the next connections to JavaScript again, but only if none is open and
   * none was accepted since `seenAccepted` (or at once with -1). True if it is disabled.
   */
  disable(id: number, seenAccepted: number): boolean {
    return this.addon.disable(this.engine, id, seenAccepted);
  }

  stats(id: number): SpliceStats {
    const [fast, open, accepted, connected, toVm, fromVm, errors, sinceAccept, sinceClose] = this.addon.stats(
      this.engine,
      id,
    );
    return {
      sinceAcceptMs: sinceAccept! < 0 ? null : sinceAccept!,
      sinceCloseMs: sinceClose! < 0 ? null : sinceClose!,
      fast: fast === 1,
      open: open!,
      accepted: accepted!,
      connected: connected!,
      toVm: toVm!,
      fromVm: fromVm!,
      errors: errors!,
    };
  }

  /** Resets every native relay, closes every listener, ends the thread. */
  stop(): void {
    this.addon.stop(this.engine);
  }
}
