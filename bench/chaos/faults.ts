/**
 * The faults the soak injects, one at a time, each for real: signals to a VM
 * process, to a jitsu and to libvirtd, a domain destroyed or paused behind
 * jitsu's back, and the state database's file system filled up. Each fault
 * ends before the next begins (a frozen process is thawed, the disk freed).
 */
import type { Prng } from "../fuzz/prng.js";
import type { Instance } from "./instance.js";
import type { World } from "./world.js";

export const FAULT_KINDS = [
  "vm-kill",
  "vm-stop",
  "jitsu-kill",
  "jitsu-stop",
  "libvirtd-kill",
  "libvirtd-stop",
  "disk-full",
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** How often each kind is drawn (relative). */
const WEIGHTS: Record<FaultKind, number> = {
  "vm-kill": 4,
  "vm-stop": 2,
  "jitsu-kill": 3,
  "jitsu-stop": 1,
  "libvirtd-kill": 1,
  "libvirtd-stop": 1,
  "disk-full": 1,
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Faults {
  /** When libvirtd could not answer (killed, restarting, stopped). */
  readonly libvirtdOutages: { from: number; to: number }[] = [];
  /** When the state database's file system was full. */
  readonly diskFull: { from: number; to: number }[] = [];
  libvirtdRestarts = 0;

  constructor(
    private readonly world: World,
    private readonly rng: Prng,
  ) {}

  /** A kind to inject, among those this world can have. */
  draw(): FaultKind {
    const kinds = FAULT_KINDS.filter((k) => this.world.daemon !== null || !k.startsWith("libvirtd"));
    const total = kinds.reduce((n, k) => n + WEIGHTS[k], 0);
    let r = this.rng.int(total);
    for (const k of kinds) {
      r -= WEIGHTS[k];
      if (r < 0) return k;
    }
    return kinds[0]!;
  }

  /** Injects `kind` and lets it end; resolves with what was done (for the log). */
  async inject(kind: FaultKind): Promise<string> {
    const rng = this.rng;
    switch (kind) {
      case "vm-kill":
      case "vm-stop": {
        const target = await this.runningVm();
        if (target === null) return "no VM runs: nothing to do";
        const { instance, label, pid } = target;
        if (instance.backend === "libvirt") {
          if (kind === "vm-kill") {
            this.world.virsh(`destroy ${label}`);
            return `libvirt domain ${label} destroyed behind jitsu's back`;
          }
          const ms = rng.range(1000, 5000);
          this.world.virsh(`suspend ${label}`);
          await sleep(ms);
          try {
            this.world.virsh(`resume ${label}`);
          } catch {
            // stopped or destroyed meanwhile (jitsu's reaper)
          }
          return `libvirt domain ${label} paused behind jitsu's back for ${ms} ms`;
        }
        if (kind === "vm-kill") {
          signalGroup(pid, "SIGKILL");
          return `${instance.backend} VM ${label} (pid ${pid}) SIGKILLed`;
        }
        const ms = rng.range(1000, 5000);
        signalGroup(pid, "SIGSTOP");
        await sleep(ms);
        signalGroup(pid, "SIGCONT");
        return `${instance.backend} VM ${label} (pid ${pid}) SIGSTOPped for ${ms} ms`;
      }
      case "jitsu-kill": {
        const instance = rng.pick(this.world.instances);
        const down = rng.range(200, 2000);
        await instance.killAndRestart(down);
        return `jitsu -x ${instance.backend} SIGKILLed, restarted after ${down} ms`;
      }
      case "jitsu-stop": {
        const instance = rng.pick(this.world.instances);
        const ms = rng.range(500, 3000);
        await instance.freeze(ms);
        return `jitsu -x ${instance.backend} SIGSTOPped for ${ms} ms`;
      }
      case "libvirtd-kill": {
        const daemon = this.world.daemon!;
        const outage = { from: Date.now(), to: Infinity };
        this.libvirtdOutages.push(outage);
        await daemon.kill();
        const down = rng.range(500, 3000);
        await sleep(down);
        await daemon.start();
        await this.world.defineDomains();
        this.libvirtdRestarts++;
        outage.to = Date.now();
        return `libvirtd SIGKILLed, restarted after ${down} ms`;
      }
      case "libvirtd-stop": {
        const daemon = this.world.daemon!;
        const outage = { from: Date.now(), to: Infinity };
        this.libvirtdOutages.push(outage);
        const ms = rng.range(1000, 5000);
        daemon.signal("SIGSTOP");
        await sleep(ms);
        daemon.signal("SIGCONT");
        outage.to = Date.now();
        return `libvirtd SIGSTOPped for ${ms} ms`;
      }
      case "disk-full": {
        const full = { from: Date.now(), to: Infinity };
        this.diskFull.push(full);
        this.world.fillDisk();
        const ms = rng.range(6000, 20_000);
        await sleep(ms);
        this.world.freeDisk();
        full.to = Date.now();
        return `the process jitsu's --persistdb file system full for ${ms} ms`;
      }
    }
  }

  /** A VM that runs now, drawn at random over every instance. */
  private async runningVm(): Promise<{ instance: Instance; label: string; pid: number } | null> {
    const candidates: { instance: Instance; label: string; pid: number }[] = [];
    for (const instance of this.world.instances) {
      if (instance.backend === "libvirt" && this.libvirtdOutages.some((o) => o.to === Infinity)) continue;
      try {
        for (const [label, pids] of (await this.world.outside(instance)).running) {
          for (const pid of pids) candidates.push({ instance, label, pid });
        }
      } catch {
        // libvirtd restarting
      }
    }
    return candidates.length === 0 ? null : this.rng.pick(candidates);
  }
}

/** A signal to a VM's process group (the process backend and QEMU run each VM as one). */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}
