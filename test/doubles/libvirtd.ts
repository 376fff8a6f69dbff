/**
 * A private, real libvirtd for tests and benchmarks, in a temp dir.
 *
 * It runs as the unprivileged user `nobody` with HOME and every XDG directory
 * inside the temp dir, i.e. as a per-user ("session") daemon: nothing is
 * shared with /run/libvirt, so several of these (and a system libvirtd) can
 * run at once. Root's libvirtd takes machine-wide locks (/run/libvirt/network/
 * driver.pid), which is why a second root instance cannot start. Its socket is
 * `<dir>/run/libvirt-sock` with auth none; test:///... and qemu:///session
 * URIs work over it.
 *
 * Also the domain XMLs the tests and benchmarks define in it.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const NOBODY = 65534;
/** As root the daemon runs as nobody (see above); otherwise as ourselves, which is already a session daemon. */
const AS_ROOT = process.getuid?.() === 0;

function giveToDaemon(path: string): void {
  if (AS_ROOT) chownSync(path, NOBODY, NOBODY);
}

export interface DaemonOptions {
  /** libvirtd's keepalive_interval / keepalive_count (its pings to us). */
  keepaliveInterval?: number;
  keepaliveCount?: number;
  /** Also listen on 127.0.0.1 with TCP and TLS (auth none); `pkiDir` holds cacert, servercert, serverkey .pem. */
  network?: { tcpPort: number; tlsPort: number; pkiDir: string };
  /** Lines that replace the defaults for the same keys (e.g. `auth_unix_rw = "sasl"`). */
  config?: string[];
}

export class PrivateLibvirtd {
  readonly dir: string;
  readonly socket: string;
  private child: ChildProcess | null = null;
  private logText = "";

  constructor(private readonly options: DaemonOptions = {}) {
    this.dir = mkdtempSync(join(tmpdir(), "jitsu-libvirtd-"));
    chmodSync(this.dir, 0o755);
    this.socket = join(this.dir, "run", "libvirt-sock");
    const conf = [
      `unix_sock_dir = "${join(this.dir, "run")}"`,
      `unix_sock_rw_perms = "0777"`,
      `auth_unix_ro = "none"`,
      `auth_unix_rw = "none"`,
      `listen_tls = 0`,
      `listen_tcp = 0`,
      `keepalive_interval = ${options.keepaliveInterval ?? 5}`,
      `keepalive_count = ${options.keepaliveCount ?? 5}`,
      `log_outputs = "3:stderr"`,
      ...(options.network === undefined
        ? []
        : [
            `listen_tcp = 1`,
            `listen_tls = 1`,
            `listen_addr = "127.0.0.1"`,
            `tcp_port = "${options.network.tcpPort}"`,
            `tls_port = "${options.network.tlsPort}"`,
            `auth_tcp = "none"`,
            `auth_tls = "none"`,
            `ca_file = "${join(options.network.pkiDir, "cacert.pem")}"`,
            `cert_file = "${join(options.network.pkiDir, "servercert.pem")}"`,
            `key_file = "${join(options.network.pkiDir, "serverkey.pem")}"`,
          ]),
    ]
      .filter((line) => !(options.network !== undefined && /^listen_(tcp|tls) = 0$/.test(line)))
      .filter(
        (line) => !(options.config ?? []).some((c) => c.split("=")[0]!.trim() === line.split("=")[0]!.trim()),
      )
      .concat(options.config ?? [])
      .join("\n");
    writeFileSync(join(this.dir, "libvirtd.conf"), `${conf}\n`);
    mkdirSync(join(this.dir, "run"));
    for (const p of [this.dir, join(this.dir, "run"), join(this.dir, "libvirtd.conf")]) giveToDaemon(p);
  }

  /** Writes a file the daemon (and the guests it runs) can read. */
  writeFile(name: string, content: string | Buffer): string {
    const path = join(this.dir, name);
    writeFileSync(path, content);
    giveToDaemon(path);
    return path;
  }

  uri(driverAndPath: string): string {
    return `${driverAndPath.replace("://", "+unix://")}?socket=${this.socket}`;
  }

  get log(): string {
    return this.logText;
  }

  async start(timeoutMs = 30_000): Promise<void> {
    if (this.child !== null) throw new Error("libvirtd already running");
    rmSync(this.socket, { force: true });
    const d = this.dir;
    const child = spawn(
      AS_ROOT ? "setpriv" : "libvirtd",
      [
        ...(AS_ROOT ? [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "libvirtd"] : []),
        ...(this.options.network === undefined ? [] : ["--listen"]),
        "-f",
        join(d, "libvirtd.conf"),
      ],
      {
        cwd: d,
        env: {
          PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
          HOME: d,
          XDG_RUNTIME_DIR: join(d, "xdg-run"),
          XDG_CONFIG_HOME: join(d, "config"),
          XDG_CACHE_HOME: join(d, "cache"),
          XDG_DATA_HOME: join(d, "data"),
          JITSU_TEST_DAEMON_DIR: d,
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    this.child = child;
    const collect = (c: Buffer): void => {
      this.logText = (this.logText + c.toString()).slice(-20_000);
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        this.child = null;
        throw new Error(
          `libvirtd exited at start-up (${child.exitCode ?? child.signalCode}): ${this.logText.slice(-1000)}`,
        );
      }
      if (existsSync(this.socket) && (await canConnect(this.socket))) return;
      if (Date.now() > deadline) throw new Error(`libvirtd did not open ${this.socket} in ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) the daemon: a hung daemon; or kills it (SIGKILL: then `stop()`, `start()`). */
  signal(signal: "SIGSTOP" | "SIGCONT" | "SIGKILL"): void {
    if (this.child === null) throw new Error("libvirtd is not running");
    this.child.kill(signal);
  }

  /** Kills the daemon at once (SIGKILL), as a crash or the OOM killer would; `start()` runs it again. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGCONT");
    child.kill("SIGKILL");
    await exited;
  }

  /** Stops the daemon (SIGTERM, then SIGKILL). Domains it started keep running, as with a real libvirtd. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the daemon, every process it left behind (qemu, virtlogd), and removes the temp dir. */
  async destroy(): Promise<void> {
    await this.stop();
    for (const pid of processesOf(this.dir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Runs virsh against this daemon; throws with its stderr on failure. */
  virsh(uri: string, ...commands: string[]): string {
    const r = spawnSync("virsh", ["-q", "-c", uri, commands.join(" ; ")], {
      encoding: "utf8",
      timeout: 60_000,
    });
    if (r.status !== 0) throw new Error(`virsh ${commands.join(" ; ")}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Processes whose environment or command line names our temp dir (libvirtd's children: qemu, virtlogd). */
function processesOf(dir: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const env = readFileSync(`/proc/${pid}/environ`, "latin1");
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "latin1");
      if (env.includes(`=${dir}`) || cmd.includes(dir)) out.push(pid);
    } catch {
      // gone or not ours to read
    }
  }
  return out;
}

/** A domain to define with virsh in test:///default. */
export function extraDomainXml(name: string, uuid: string): string {
  return `<domain type='test'><name>${name}</name><uuid>${uuid}</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`;
}

/**
 * The test guest (scripts/build-test-guest.sh, in `dir`) as a qemu-driver
 * domain: TCG, its NIC and a hostfwd of 127.0.0.1:`hostPort` to the guest's
 * port 80 through <qemu:commandline> (qemu:///session has no port forwarding
 * without passt), console to `<dir>/<name>-console.log`.
 */
export function guestDomainXml(
  name: string,
  dir: string,
  hostPort: number,
  cmdline = "console=ttyS0 quiet panic=-1",
): string {
  return `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>${dir}/vmlinuz</kernel>
    <initrd>${dir}/initrd.gz</initrd>
    <cmdline>${cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='maximum'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='${dir}/${name}-console.log' append='on'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=hf0,hostfwd=tcp:127.0.0.1:${hostPort}-:80'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=hf0,mac=52:54:00:12:34:56,addr=0x10'/>
  </qemu:commandline>
</domain>
`;
}
