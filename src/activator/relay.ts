/**
 * Relays one client connection to the VM and back, as a TCP proxy does
 * (systemd-socket-proxyd, HAProxy in TCP mode):
 *
 * - each direction is a pipe: what one side reads is written to the other,
 *   and reading stops while the other side's write buffer is full (Node's
 *   highWaterMark, 16 KiB a socket), so a peer that stops reading holds the
 *   other back through TCP's own window: nothing buffers without bound;
 * - half-close: a FIN from one side is passed on as a FIN to the other once
 *   everything before it is written (both sockets are allowHalfOpen), and the
 *   other direction goes on until it ends too;
 * - an error (a reset, a write to a closed peer) on either side resets the
 *   other, so a client never mistakes a cut-off reply for a complete one.
 *
 * Both sockets must be allowHalfOpen and not yet reading (the client was
 * accepted with pauseOnConnect: what it sent while held is still in the
 * kernel and is relayed first).
 */
import type net from "node:net";

export interface RelayResult {
  /** Bytes read from the client and passed to the VM. */
  readonly toVm: number;
  /** Bytes read from the VM and passed to the client. */
  readonly fromVm: number;
  /** The first error on either side, if any (both were then reset). */
  readonly error: Error | null;
}

export function relay(client: net.Socket, vm: net.Socket): Promise<RelayResult> {
  return new Promise((resolve) => {
    let error: Error | null = null;
    let open = 2;
    const fail = (err: Error): void => {
      error ??= err;
      // resetAndDestroy sends an RST where the socket still has a handle; destroy() otherwise.
      for (const s of [client, vm]) if (!s.destroyed) s.resetAndDestroy();
    };
    const closed = (): void => {
      if (--open > 0) return;
      resolve({ toVm: client.bytesRead, fromVm: vm.bytesRead, error });
    };
    client.on("error", fail);
    vm.on("error", fail);
    client.once("close", closed);
    vm.once("close", closed);
    client.pipe(vm);
    vm.pipe(client);
  });
}
