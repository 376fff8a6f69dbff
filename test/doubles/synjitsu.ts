/**
 * A Synjitsu listener double: a unix socket server standing for the Synjitsu
 * unikernel's vchan endpoint (port "synjitsu"). It reads the stream as the
 * unikernel does, in 10-byte messages: a MAC address (6 bytes) then an IPv4
 * address (4 bytes) (mirage/jitsu src/synjitsu.ml, send_garp), and records a
 * protocol error if a connection ends inside a message.
 */
import type { Socket } from "node:net";
import { UnixSocketDouble } from "./unix-server.js";

export interface SynjitsuMessage {
  readonly mac: string;
  readonly ip: string;
}

export class SynjitsuListenerDouble extends UnixSocketDouble {
  readonly messages: SynjitsuMessage[] = [];
  readonly errors: string[] = [];
  connections = 0;
  private waiters: (() => void)[] = [];

  /** Resolves once `n` messages have arrived (rejects after `timeoutMs`). */
  waitForMessages(n: number, timeoutMs = 20_000): Promise<void> {
    if (this.messages.length >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`only ${this.messages.length} of ${n} synjitsu messages arrived`)),
        timeoutMs,
      );
      const check = (): void => {
        if (this.messages.length >= n) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w !== check);
          resolve();
        }
      };
      this.waiters.push(check);
    });
  }

  protected accept(conn: Socket): void {
    this.connections++;
    this.conns.add(conn);
    let buf = Buffer.alloc(0);
    conn.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 10) {
        const m = buf.subarray(0, 10);
        buf = buf.subarray(10);
        this.messages.push({
          mac: [...m.subarray(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join(":"),
          ip: [...m.subarray(6, 10)].join("."),
        });
      }
      for (const w of [...this.waiters]) w();
    });
    conn.on("error", () => undefined);
    conn.on("close", () => {
      this.conns.delete(conn);
      if (buf.length !== 0)
        this.errors.push(`connection closed inside a message (${buf.length} of 10 bytes)`);
    });
  }
}
