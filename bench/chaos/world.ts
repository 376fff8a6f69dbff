/**
 * What the soak runs: three jitsus (the process backend with most of the 20
 * VMs and its --persistdb on a small tmpfs that a fault fills, the qemu
 * backend with the test guest, libvirt's test driver in a private libvirtd),
 * and what each VM really is outside jitsu (a process, a QEMU, a domain), to
 * compare with what jitsu's /status says.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { LibvirtBackend } from "../../src/backends/libvirt/backend.js";
import { parseLibvirtUri } from "../../src/backends/libvirt/uri.js";
import { systemClock } from "../../src/clock/index.js";
import { silentLogger } from "../../src/log/index.js";
import { findByEnvironment } from "../../src/supervisor/index.js";
import { PrivateLibvirtd } from "../../test/doubles/libvirtd.js";
import { Instance, type ChaosVm } from "./instance.js";

/** dist/scripts/demo-service.js: an HTTP server after a boot delay (the process VMs). */
const DEMO_SERVICE = fileURLToPath(new URL("../../scripts/demo-service.js", import.meta.url));
const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

export interface WorldOptions {
  readonly processVms: number;
  readonly qemuVms: number;
  readonly libvirtVms: number;
  readonly log: (line: string) => void;
}

/** What runs a VM, as the world outside jitsu sees it. */
export interface Outside {
  /** label -> pids (process, qemu) or [0] for a running domain (libvirt). */
  readonly running: Map<string, number[]>;
  /** Labels whose VM jitsu may list as ready: running (or paused: a frozen VM is not dead). */
  readonly alive: Set<string>;
}

const DOMAIN_UUID = (i: number): string => `c4a05000-0000-4000-8000-${String(i).padStart(12, "0")}`;

function testDomainXml(name: string, i: number): string {
  return `<domain type='test'><name>${name}</name><uuid>${DOMAIN_UUID(i)}</uuid><memory>65536</memory><os><type>hvm</type></os></domain>`;
}

/** A free port below the ephemeral range (the soak's own client sockets could take one in it). */
async function stablePort(taken: Set<number>): Promise<number> {
  const { createServer } = await import("node:net");
  const { createSocket } = await import("node:dgram");
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 10_000 + Math.floor(Math.random() * 22_000);
    if (taken.has(port)) continue;
    const tcp = await new Promise<boolean>((res) => {
      const srv = createServer();
      srv.once("error", () => res(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => res(true)));
    });
    const udp =
      tcp &&
      (await new Promise<boolean>((res) => {
        const sock = createSocket("udp4");
        sock.once("error", () => res(false));
        sock.bind(port, "127.0.0.1", () => sock.close(() => res(true)));
      }));
    if (udp) {
      taken.add(port);
      return port;
    }
  }
  throw new Error("chaos: no free port below 32000 on loopback");
}

/** The test guest (kernel, initrd): $JITSU_GUEST_CACHE, else built by scripts/build-test-guest.sh. */
function testGuest(): { kernel: string; initrd: string } {
  const out = execFileSync("bash", [join(REPO_ROOT, "scripts/build-test-guest.sh")], {
    encoding: "utf8",
    timeout: 600_000,
  });
  const dir = out.trim().split("\n").at(-1)!;
  return { kernel: join(dir, "vmlinuz"), initrd: join(dir, "initrd.gz") };
}

export class World {
  readonly dir = mkdtempSync(join(tmpdir(), "jitsu-chaos-"));
  /** The process jitsu's --persistdb folder: a tmpfs of DB_FS_SIZE, filled by the disk-full fault. */
  readonly dbFs = join(this.dir, "dbfs");
  readonly instances: Instance[] = [];
  daemon: PrivateLibvirtd | null = null;
  private holder: LibvirtBackend | null = null;
  private libvirtUri = "";
  private domainNames: string[] = [];
  private mounted = false;

  constructor(private readonly opts: WorldOptions) {}

  get processInstance(): Instance {
    return this.instances.find((i) => i.backend === "process")!;
  }

  async start(): Promise<void> {
    const taken = new Set<number>();
    const common = (dns: number, http: number, stateDir: string): string[] => [
      ...["-l", String(dns), "-f", "0.0.0.0", "-d", "0", "--state-dir", stateDir],
      ...["--http", `127.0.0.1:${http}`, "--stop-on-exit", "--failure-reset", "20"],
    ];
    mkdirSync(this.dbFs);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", this.dbFs]);
    this.mounted = true;

    // process: demo services that boot in 0.1-1 s and answer HTTP, stopped (SIGTERM) 6 s after their last query.
    {
      const [dns, http] = [await stablePort(taken), await stablePort(taken)];
      const vms: ChaosVm[] = [];
      const configs: string[] = [];
      for (let i = 0; i < this.opts.processVms; i++) {
        const port = await stablePort(taken);
        const vm = { label: `p${i}`, name: `p${i}.chaos.test`, ip: `10.99.0.${i + 1}` };
        vms.push(vm);
        const boot = (0.1 + ((i * 7) % 10) / 10).toFixed(1);
        configs.push(
          `dns=${vm.name},ip=${vm.ip},name=${vm.label},exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${port} ${vm.label} ${boot},ready=http://127.0.0.1:${port}/`,
        );
      }
      const stateDir = join(this.dir, "process-state");
      const args = [
        ...["-x", "process", "-t", "3", "-m", "shutdown", "--start-timeout", "15"],
        ...common(dns, http, stateDir),
        ...["--persistdb", join(this.dbFs, "jitsu.db"), ...configs],
      ];
      this.instances.push(
        new Instance("process", args, dns, http, 15, vms, join(this.dir, "jitsu-process.log")),
      );
    }

    // qemu: the test guest under TCG (no KVM here: a boot takes seconds), paused when idle.
    if (this.opts.qemuVms > 0) {
      const guest = testGuest();
      const [dns, http] = [await stablePort(taken), await stablePort(taken)];
      const vms: ChaosVm[] = [];
      const configs: string[] = [];
      for (let i = 0; i < this.opts.qemuVms; i++) {
        const port = await stablePort(taken);
        const vm = { label: `q${i}`, name: `q${i}.chaos.test`, ip: `10.99.1.${i + 1}` };
        vms.push(vm);
        configs.push(
          `dns=${vm.name},ip=${vm.ip},name=${vm.label},kernel=${guest.kernel},initrd=${guest.initrd},hostfwd=tcp:127.0.0.1:${port}-:80,ready=http://127.0.0.1:${port}/`,
        );
      }
      const stateDir = join(this.dir, "qemu-state");
      const args = [
        ...["-x", "qemu", "-t", "10", "-m", "pause", "--start-timeout", "60"],
        ...common(dns, http, stateDir),
        ...["--persistdb", join(this.dir, "qemu.db"), ...configs],
      ];
      this.instances.push(new Instance("qemu", args, dns, http, 60, vms, join(this.dir, "jitsu-qemu.log")));
    }

    // libvirt: domains of the test driver in a private libvirtd (test:///default, held open).
    if (this.opts.libvirtVms > 0) {
      this.daemon = new PrivateLibvirtd();
      await this.daemon.start();
      this.libvirtUri = this.daemon.uri("test:///default");
      this.domainNames = Array.from({ length: this.opts.libvirtVms }, (_, i) => `l${i}`);
      await this.defineDomains();
      const [dns, http] = [await stablePort(taken), await stablePort(taken)];
      const vms = this.domainNames.map((label, i) => ({
        label,
        name: `${label}.chaos.test`,
        ip: `10.99.2.${i + 1}`,
      }));
      const args = [
        ...["-x", "libvirt", "-c", this.libvirtUri, "-t", "3", "-m", "destroy", "--start-timeout", "15"],
        ...common(dns, http, join(this.dir, "libvirt-state")),
        ...["--persistdb", join(this.dir, "libvirt.db")],
        ...vms.map((vm) => `dns=${vm.name},ip=${vm.ip},name=${vm.label}`),
      ];
      this.instances.push(
        new Instance("libvirt", args, dns, http, 15, vms, join(this.dir, "jitsu-libvirt.log")),
      );
    }

    for (const instance of this.instances) await instance.start();
  }

  /**
   * test:///default lives while a connection is open, and is reset when
   * libvirtd restarts: hold a connection, and define the domains again (what a
   * real libvirtd reads back from its persistent configs).
   */
  async defineDomains(): Promise<void> {
    await this.holder?.close().catch(() => undefined);
    this.holder = new LibvirtBackend(parseLibvirtUri(this.libvirtUri), {
      log: silentLogger(),
      clock: systemClock,
    });
    await this.holder.connect();
    this.domainNames.forEach((name, i) => {
      const file = this.daemon!.writeFile(`${name}.xml`, testDomainXml(name, i));
      this.daemon!.virsh(this.libvirtUri, `define ${file}`);
    });
  }

  virsh(command: string): string {
    return this.daemon!.virsh(this.libvirtUri, command);
  }

  /** What runs each VM of `instance` now. */
  async outside(instance: Instance): Promise<Outside> {
    const running = new Map<string, number[]>();
    const alive = new Set<string>();
    const add = (label: string, pid: number): void => {
      running.set(label, [...(running.get(label) ?? []), pid]);
      alive.add(label);
    };
    if (instance.backend === "process") {
      const marker = resolve(this.dir, "process-state", "process");
      for (const p of await findByEnvironment("JITSU_STATE_DIR", marker))
        add(p.env.get("JITSU_VM") ?? "?", p.pid);
    } else if (instance.backend === "qemu") {
      const prefix = resolve(this.dir, "qemu-state", "qemu") + "/";
      for (const { pid, cmdline } of processes()) {
        const i = cmdline.indexOf("-pidfile");
        const file = i >= 0 ? cmdline[i + 1] : undefined;
        if (file !== undefined && file.startsWith(prefix)) add(basename(dirname(file)), pid);
      }
    } else {
      for (const name of this.domainNames) {
        const state = this.virsh(`domstate ${name}`).trim();
        if (state === "running" || state === "paused") add(name, 0);
      }
    }
    return { running, alive };
  }

  async close(): Promise<void> {
    try {
      await this.stopEverything();
    } finally {
      if (this.mounted) {
        this.mounted = false;
        try {
          execFileSync("umount", ["-l", this.dbFs]);
        } catch {
          // not mounted
        }
      }
    }
  }

  private async stopEverything(): Promise<void> {
    for (const instance of this.instances) await instance.stop().catch(() => undefined);
    // Whatever a jitsu left (it was killed with its VMs up and not restarted): by marker and pid file.
    for (const instance of this.instances) {
      if (instance.backend === "libvirt") continue;
      for (const pids of (await this.outside(instance)).running.values()) {
        for (const pid of pids) {
          try {
            process.kill(-pid, "SIGKILL");
          } catch {
            try {
              process.kill(pid, "SIGKILL");
            } catch {
              // gone
            }
          }
        }
      }
    }
    await this.holder?.close().catch(() => undefined);
    await this.daemon?.destroy().catch(() => undefined);
  }

  /** Removes the temp dir (after the report: the logs are in it until then). */
  remove(keep: boolean): void {
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }

  /** Fills the database's tmpfs (dd stops at ENOSPC). */
  fillDisk(): void {
    try {
      execFileSync("dd", ["if=/dev/zero", `of=${join(this.dbFs, "fill")}`, "bs=64k"], { stdio: "ignore" });
    } catch {
      // dd exits 1 at ENOSPC: the point
    }
  }

  freeDisk(): void {
    rmSync(join(this.dbFs, "fill"), { force: true });
  }

  writeNote(name: string, text: string): void {
    writeFileSync(join(this.dir, name), text);
  }
}

/** Every process's pid and command line (for QEMUs by their -pidfile). */
function processes(): { pid: number; cmdline: string[] }[] {
  const out: { pid: number; cmdline: string[] }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2)[0];
      if (state === "Z" || state === "X") continue;
      const words = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      out.push({ pid: Number(entry), cmdline: words });
    } catch {
      // gone
    }
  }
  return out;
}
