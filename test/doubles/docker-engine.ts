/**
 * A Docker Engine API double on a unix socket, for the docker backend's
 * event handling: what jitsu reads of Podman 4.3's compatible service
 * (`GET /version`, `GET /containers/{id}/json`, `GET /events`), with the
 * containers' states in memory and every answer the test's to shape.
 *
 * As Podman does: containers are found by full id, name or id prefix; a
 * missing one is a 404 `no container with name or ID "X" found: no such
 * container`; events are one JSON object a line on a response kept open,
 * with `Type`, `Action`, `Actor.ID` and `Actor.Attributes` (name, exitCode).
 * `midRemoval(name)` answers as Podman does an inspect that waited for the
 * lock of a `podman rm` and found the container gone from its database: a
 * 500. `hold()` keeps the next inspect's answer until the test releases it,
 * so that a test can order a read against other reads.
 */
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** Podman's `State.Status` values. */
export type ContainerStatus = "created" | "running" | "paused" | "exited" | "stopping" | "removing";

interface Container {
  readonly id: string;
  readonly name: string;
  status: ContainerStatus;
}

interface Answer {
  readonly status: number;
  readonly body: unknown;
}

/**
 * How a held inspect is answered: the container removed meanwhile (404), found
 * gone once its lock was free (Podman's 500), an engine failure (500), or,
 * when undefined, the container's state at the release.
 */
export type HeldAnswer = "gone" | "mid-removal" | "error" | undefined;

/** An inspect held by `hold()`: answered with what `release` is given, or with the container's state then. */
export interface HeldInspect {
  /** Resolves when an inspect has arrived and is held. */
  readonly arrived: Promise<string>;
  release(answer?: HeldAnswer): void;
}

export class DockerEngineDouble {
  private server: Server | undefined;
  private readonly containers = new Map<string, Container>();
  private readonly streams = new Set<ServerResponse>();
  private readonly sockets = new Set<Socket>();
  private readonly midRemovals = new Set<string>();
  private held: { arrived: (id: string) => void; answer: Promise<HeldAnswer> }[] = [];
  /** Every inspect asked for, by the id or name in its path. */
  readonly inspects: string[] = [];

  constructor(readonly socketPath: string) {}

  get uri(): string {
    return `unix://${this.socketPath}`;
  }

  async start(): Promise<void> {
    rmSync(this.socketPath, { force: true });
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.socketPath, () => resolve());
    });
  }

  async stop(): Promise<void> {
    for (const r of this.streams) r.end();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) =>
      this.server === undefined ? resolve() : this.server.close(() => resolve()),
    );
    this.server = undefined;
    rmSync(this.socketPath, { force: true });
  }

  /** Adds a container; its id. */
  add(name: string, status: ContainerStatus): string {
    const id = randomBytes(32).toString("hex");
    this.containers.set(id, { id, name, status });
    return id;
  }

  setStatus(name: string, status: ContainerStatus): void {
    this.find(name)!.status = status;
  }

  /** Removed: inspects answer 404 from now on. */
  remove(name: string): void {
    const c = this.find(name);
    if (c !== undefined) this.containers.delete(c.id);
  }

  /** Inspects of `name` answer Podman's 500 for a container removed while the inspect waited. */
  midRemoval(name: string): void {
    this.midRemovals.add(this.find(name)!.id);
  }

  /** Open event streams (GET /events requests being answered). */
  get eventStreams(): number {
    return this.streams.size;
  }

  /** Sends a container event, as Podman's compat /events does, to every open stream. */
  emit(action: string, name: string, attributes: Record<string, string> = {}): void {
    const c = this.find(name);
    const id = c?.id ?? name;
    const line = JSON.stringify({
      status: action,
      id,
      from: "localhost/test",
      Type: "container",
      Action: action,
      Actor: { ID: id, Attributes: { name, image: "localhost/test", ...attributes } },
      scope: "local",
      time: Math.floor(Date.now() / 1000),
      timeNano: Date.now() * 1e6,
    });
    for (const r of this.streams) r.write(`${line}\n`);
  }

  /** Holds the next inspect's answer until `release`. */
  hold(): HeldInspect {
    let arrived!: (id: string) => void;
    let release!: (answer: HeldAnswer) => void;
    const arrivedP = new Promise<string>((r) => (arrived = r));
    const answer = new Promise<HeldAnswer>((r) => (release = r));
    this.held.push({ arrived, answer });
    return { arrived: arrivedP, release: (a) => release(a) };
  }

  private find(idOrName: string): Container | undefined {
    const exact = this.containers.get(idOrName);
    if (exact !== undefined) return exact;
    for (const c of this.containers.values()) if (c.name === idOrName) return c;
    const byPrefix = [...this.containers.values()].filter((c) => c.id.startsWith(idOrName));
    return byPrefix.length === 1 ? byPrefix[0] : undefined;
  }

  private send(res: ServerResponse, a: Answer): void {
    const body = JSON.stringify(a.body);
    res.writeHead(a.status, {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(body),
    });
    res.end(body);
  }

  private notFound(idOrName: string): Answer {
    const message = `no container with name or ID "${idOrName}" found: no such container`;
    return { status: 404, body: { cause: "no such container", message, response: 404 } };
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://d");
    // Podman serves the API with and without a version prefix.
    const path = url.pathname.replace(/^\/v[\d.]+\//, "/");
    if (req.method === "GET" && path === "/_ping") {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end("OK");
      return;
    }
    if (req.method === "GET" && path === "/version") {
      this.send(res, {
        status: 200,
        body: {
          Platform: { Name: "linux/amd64/debian-12" },
          Components: [{ Name: "Podman Engine", Version: "4.3.1" }],
          Version: "4.3.1",
          ApiVersion: "1.41",
          MinAPIVersion: "1.24",
        },
      });
      return;
    }
    if (req.method === "GET" && path === "/events") {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.flushHeaders();
      this.streams.add(res);
      res.on("close", () => this.streams.delete(res));
      return;
    }
    const inspect = /^\/containers\/([^/]+)\/json$/.exec(path);
    if (req.method === "GET" && inspect !== null) {
      const idOrName = decodeURIComponent(inspect[1]!);
      this.inspects.push(idOrName);
      const held = this.held.shift();
      if (held === undefined) {
        this.send(res, this.inspect(idOrName));
        return;
      }
      held.arrived(idOrName);
      void held.answer.then((a) => {
        if (a === "error") {
          const message = "database is locked";
          this.send(res, { status: 500, body: { cause: message, message, response: 500 } });
          return;
        }
        if (a === "gone") this.remove(idOrName);
        if (a === "mid-removal") this.midRemoval(idOrName);
        this.send(res, this.inspect(idOrName));
      });
      return;
    }
    this.send(res, { status: 404, body: { message: "page not found", response: 404 } });
  }

  private inspect(idOrName: string): Answer {
    const c = this.find(idOrName);
    if (c === undefined) return this.notFound(idOrName);
    if (this.midRemovals.has(c.id)) {
      const message = `container ${c.id} does not exist in database: no such container`;
      return { status: 500, body: { cause: "no such container", message, response: 500 } };
    }
    return {
      status: 200,
      body: {
        Id: c.id,
        Name: c.name,
        Created: new Date().toISOString(),
        State: {
          Status: c.status,
          Running: c.status === "running",
          Paused: c.status === "paused",
          Restarting: false,
          OOMKilled: false,
          Dead: false,
          Pid: 0,
          ExitCode: c.status === "exited" ? 137 : 0,
        },
        Config: { Labels: {} },
        HostConfig: { NetworkMode: "host" },
        NetworkSettings: { Networks: {} },
      },
    };
  }
}
