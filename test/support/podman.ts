/**
 * A real Podman service (its Docker-compatible API) for tests and benches,
 * with all its state in a temp dir (../shared NOTES "Containers"): runc, vfs
 * storage, cgroupfs, host networking, rlimits under the host's hard limits.
 * `podman()` runs the podman CLI against the same storage and event log, so
 * what a test does "behind jitsu's back" reaches the service's event stream.
 *
 * The test image (`IMAGE`) is Debian's busybox-static in a root filesystem
 * made here (no registry is reachable), imported with `podman import`; the
 * tarball is built once per machine and user and cached (`imageTarball()`).
 * It has `/www/index.html`, so `httpd -f -p 127.0.0.1:PORT -h /www` answers
 * 200 to `GET /`.
 *
 * OCI hooks (`hooksDir`, the engine's hooks_dir) let a test hold the
 * service inside an operation: a poststart hook runs after the container's
 * process has started and before the service answers the start request.
 *
 * `destroy()` removes every container, stops the service, waits for conmon
 * and `podman container cleanup` (still running for a moment after a
 * container exits), kills what is left of the dir's processes, and removes
 * the dir: nothing is left running.
 */
import { spawn, type ChildProcess } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, type RunResult } from "./index.js";

export const IMAGE = "localhost/jitsu-busybox";
const BUSYBOX = "/bin/busybox";
const APPLETS = ["sh", "httpd", "sleep", "echo", "cat", "true", "nc"];

/** The cached rootfs tarball (built on first use, atomically: test files may run at once). */
export async function imageTarball(): Promise<string> {
  const dir = join(tmpdir(), `jitsu-podman-image-${process.getuid?.() ?? 0}`);
  const tar = join(dir, "busybox-rootfs.tar");
  if (existsSync(tar)) return tar;
  mkdirSync(dir, { recursive: true });
  const work = await mkdtemp(join(dir, "build-"));
  try {
    const root = join(work, "rootfs");
    for (const d of ["bin", "tmp", "www", "etc"]) mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, "bin", "busybox"), readFileSync(BUSYBOX), { mode: 0o755 });
    for (const a of APPLETS) symlinkSync("busybox", join(root, "bin", a));
    writeFileSync(join(root, "www", "index.html"), "jitsu test container\n");
    writeFileSync(join(root, "etc", "passwd"), "root:x:0:0:root:/:/bin/sh\n");
    const res = await run("tar", ["-C", root, "-cf", join(work, "rootfs.tar"), "."]);
    if (res.code !== 0) throw new Error(`tar failed: ${res.stderr}`);
    renameSync(join(work, "rootfs.tar"), tar);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return tar;
}

export class PodmanService {
  readonly socket: string;
  private service: ChildProcess | null = null;

  private constructor(readonly dir: string) {
    this.socket = join(dir, "podman.sock");
  }

  /** `unix://` URI of the service's socket (jitsu's -c). */
  get uri(): string {
    return `unix://${this.socket}`;
  }

  /** The service's OCI hooks dir (hooks_dir): `*.json` hook definitions put here apply to new containers. */
  get hooksDir(): string {
    return join(this.dir, "hooks");
  }

  /** The service's process id while it runs (for signals: SIGSTOP, SIGCONT, SIGKILL). */
  get pid(): number | undefined {
    return this.service?.pid;
  }

  /** Sends `signal` to the service process itself (not the containers it started). */
  signal(signal: NodeJS.Signals): void {
    if (this.service === null || this.service.exitCode !== null || this.service.signalCode !== null)
      throw new Error("the podman service is not running");
    this.service.kill(signal);
  }

  /** SIGKILLs the service (a crash, the OOM killer) and waits for its exit; containers keep running. */
  async killService(): Promise<void> {
    const child = this.service;
    this.service = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGCONT");
    child.kill("SIGKILL");
    await exited;
  }

  get env(): NodeJS.ProcessEnv {
    return { ...process.env, CONTAINERS_CONF: join(this.dir, "containers.conf") };
  }

  /** Starts a service in a new temp dir, with the test image imported. */
  static async start(): Promise<PodmanService> {
    const dir = await mkdtemp(join(tmpdir(), "jitsu-podman-"));
    const p = new PodmanService(dir);
    try {
      for (const d of ["tmp", "net", "hooks"]) mkdirSync(join(dir, d));
      writeFileSync(
        join(dir, "containers.conf"),
        [
          "[containers]",
          'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]',
          'netns = "host"',
          "[engine]",
          'runtime = "runc"',
          'cgroup_manager = "cgroupfs"',
          `tmp_dir = "${dir}/tmp"`,
          'events_logger = "file"',
          `hooks_dir = ["${dir}/hooks"]`,
          `events_logfile_path = "${dir}/events.log"`,
          "[network]",
          `network_config_dir = "${dir}/net"`,
          "",
        ].join("\n"),
      );
      const imported = await p.podman(["import", await imageTarball(), IMAGE]);
      if (imported.code !== 0) throw new Error(`podman import failed: ${imported.stderr}`);
      await p.startService();
      return p;
    } catch (err) {
      await p.destroy();
      throw err;
    }
  }

  private globalArgs(): string[] {
    return [
      ...["--runtime", "runc", "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"],
      ...["--root", join(this.dir, "root"), "--runroot", join(this.dir, "runroot")],
    ];
  }

  /** The podman CLI on the service's storage (never throws for a non-zero exit). */
  podman(args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
    return new Promise((resolve) => {
      const child = spawn("podman", [...this.globalArgs(), ...args], { env: this.env });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
      child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 1, stdout, stderr });
      });
    });
  }

  /** Fails the test on a non-zero exit; the trimmed stdout otherwise. */
  async must(args: readonly string[]): Promise<string> {
    const res = await this.podman(args);
    if (res.code !== 0)
      throw new Error(`podman ${args.join(" ")} failed (${res.code}): ${res.stderr.trim()}`);
    return res.stdout.trim();
  }

  /** `State.Status` of a container (running, paused, exited, created), or "missing". */
  async status(name: string): Promise<string> {
    const res = await this.podman(["inspect", "--type", "container", "--format", "{{.State.Status}}", name]);
    return res.code === 0 ? res.stdout.trim() : "missing";
  }

  async startService(): Promise<void> {
    rmSync(this.socket, { force: true });
    const child = spawn("podman", [...this.globalArgs(), "system", "service", "--time=0", this.uri], {
      env: this.env,
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    });
    let err = "";
    child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
    this.service = child;
    const deadline = Date.now() + 20_000;
    while (!(await this.ping())) {
      if (child.exitCode !== null) throw new Error(`podman system service exited: ${err}`);
      if (Date.now() > deadline) throw new Error(`podman system service did not answer in 20 s: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops the service (containers keep running under conmon), waiting for its exit. */
  async stopService(): Promise<void> {
    const child = this.service;
    this.service = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGCONT");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  ping(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = request({ socketPath: this.socket, path: "/_ping", timeout: 2000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on("error", () => resolve(false));
      req.on("timeout", () => req.destroy());
      req.end();
    });
  }

  /** Removes every container, stops the service, ends what is left of this dir's processes, removes the dir. */
  async destroy(): Promise<void> {
    if (existsSync(join(this.dir, "root"))) await this.podman(["rm", "--all", "--force", "--time", "0"]);
    await this.stopService();
    // conmon and `podman container cleanup` name the dir on their command lines.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const left = processesNaming(this.dir);
      if (left.length === 0) break;
      if (Date.now() > deadline) {
        for (const pid of left) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // gone
          }
        }
        await new Promise((r) => setTimeout(r, 200));
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // vfs layers can hold read-only dirs and leftover mounts of shm: unmount, then remove.
    await run("sh", [
      "-c",
      `grep -o ' ${this.dir}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l`,
    ]).catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Processes whose command line mentions `text` (not this one). */
export function processesNaming(text: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmd.includes(text)) out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}
