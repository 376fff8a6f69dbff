/**
 * Real etcd members for tests (Debian's etcd-server, NOTES "etcd"): a single
 * member or a cluster of three on free loopback ports, all state in a temp
 * dir. A member can be killed (SIGKILL) and started again on the same ports
 * and data dir. `destroy()` kills every member and removes the dir.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, run, waitFor } from "./index.js";

interface Member {
  name: string;
  client: number;
  peer: number;
  child: ChildProcess | null;
  log: string;
}

export class EtcdCluster {
  private constructor(
    readonly dir: string,
    private readonly members: Member[],
  ) {}

  /** Starts `size` members (1 or 3) and waits until the cluster is healthy. */
  static async start(size = 1): Promise<EtcdCluster> {
    const dir = await mkdtemp(join(tmpdir(), "jitsu-etcd-"));
    const members: Member[] = [];
    for (let i = 1; i <= size; i++) {
      members.push({ name: `e${i}`, client: await freePort(), peer: await freePort(), child: null, log: "" });
    }
    const cluster = new EtcdCluster(dir, members);
    try {
      for (let i = 0; i < size; i++) cluster.startMember(i);
      await cluster.waitHealthy();
      return cluster;
    } catch (err) {
      await cluster.destroy();
      throw err;
    }
  }

  /** The --etcd value: every member's client URL. */
  get endpoints(): string {
    return this.members.map((m) => `http://127.0.0.1:${m.client}`).join(",");
  }

  endpoint(i: number): string {
    return `http://127.0.0.1:${this.members[i]!.client}`;
  }

  get size(): number {
    return this.members.length;
  }

  startMember(i: number): void {
    const m = this.members[i]!;
    if (m.child !== null) return;
    const initial = this.members.map((x) => `${x.name}=http://127.0.0.1:${x.peer}`).join(",");
    const child = spawn(
      "etcd",
      [
        ...["--name", m.name, "--data-dir", join(this.dir, m.name)],
        ...["--listen-client-urls", `http://127.0.0.1:${m.client}`],
        ...["--advertise-client-urls", `http://127.0.0.1:${m.client}`],
        ...["--listen-peer-urls", `http://127.0.0.1:${m.peer}`],
        ...["--initial-advertise-peer-urls", `http://127.0.0.1:${m.peer}`],
        ...["--initial-cluster", initial, "--initial-cluster-token", `jitsu-test-${this.dir}`],
        ...["--heartbeat-interval", "100", "--election-timeout", "1000"],
        ...["--log-level", "warn"],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const keep = (chunk: Buffer): void => {
      m.log = (m.log + chunk.toString()).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.on("exit", () => {
      if (m.child === child) m.child = null;
    });
    m.child = child;
  }

  /** SIGKILLs member `i` and waits for its exit. */
  async kill(i: number): Promise<void> {
    const child = this.members[i]!.child;
    if (child === null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
    this.members[i]!.child = null;
  }

  async killAll(): Promise<void> {
    for (let i = 0; i < this.members.length; i++) await this.kill(i);
  }

  startAll(): void {
    for (let i = 0; i < this.members.length; i++) this.startMember(i);
  }

  /** Waits until every running member answers `endpoint health`. */
  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const running = this.members.filter((m) => m.child !== null);
    await waitFor(
      async () => {
        const r = await run(
          "etcdctl",
          ["--endpoints", running.map((m) => `http://127.0.0.1:${m.client}`).join(","), "endpoint", "health"],
          5000,
        );
        return r.code === 0;
      },
      timeoutMs,
      "etcd to be healthy",
    ).catch((err: unknown) => {
      throw new Error(`etcd did not become healthy: ${String(err)}\n${running.map((m) => m.log).join("\n")}`);
    });
  }

  /** etcdctl against the cluster (ETCDCTL_API=3). */
  etcdctl(args: readonly string[]): ReturnType<typeof run> {
    return run("etcdctl", ["--endpoints", this.endpoints, ...args], 10_000);
  }

  async destroy(): Promise<void> {
    await this.killAll();
    await rm(this.dir, { recursive: true, force: true });
  }
}
