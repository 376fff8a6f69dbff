/**
 * What the doubles that listen on a unix socket share: start (replacing a
 * stale socket file), stop (dropping clients, removing the file), and
 * dropping every client connection on demand. Each double says what a
 * connection does in `accept`, and adds it to `conns` while it is open.
 */
import { rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";

export abstract class UnixSocketDouble {
  private server: Server | undefined;
  protected readonly conns = new Set<Socket>();

  constructor(readonly socketPath: string) {}

  protected abstract accept(conn: Socket): void;

  async start(): Promise<void> {
    rmSync(this.socketPath, { force: true });
    this.server = createServer((conn) => this.accept(conn));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.socketPath, () => resolve());
    });
  }

  async stop(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolve) =>
      this.server === undefined ? resolve() : this.server.close(() => resolve()),
    );
    this.server = undefined;
    rmSync(this.socketPath, { force: true });
  }

  /** Drops every client connection (to test reconnection). */
  dropConnections(): void {
    for (const c of this.conns) c.destroy();
  }
}
