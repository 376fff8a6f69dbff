/**
 * A worker's ClientSlots (--tcp-per-client with --workers): the primary
 * counts every worker's TCP connections per client address, so the limit
 * holds over all of them. One round trip per connection accepted, none per
 * query.
 */
import type { ClientSlots } from "../dns/index.js";
import type { ToPrimary } from "./protocol.js";

export class RemoteClientSlots implements ClientSlots {
  private readonly waiting = new Map<number, (granted: boolean) => void>();
  private nextId = 1;

  /** `send` delivers a message to the primary. */
  constructor(private readonly send: (msg: ToPrimary) => void) {}

  acquire(client: string): Promise<boolean> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.send({ t: "tcp-acquire", id, client });
    });
  }

  release(client: string): void {
    this.send({ t: "tcp-release", client });
  }

  /** The primary's answer to acquire `id`. */
  settle(id: number, granted: boolean): void {
    const resolve = this.waiting.get(id);
    this.waiting.delete(id);
    resolve?.(granted);
  }
}
