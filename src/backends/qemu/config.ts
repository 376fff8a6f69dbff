/**
 * The qemu backend's CONFIG keys (keys.ts) parsed into a typed machine
 * description.
 */
import { accessSync, constants, existsSync } from "node:fs";
import { createHash } from "node:crypto";
import { resolve } from "node:path";
import type { VmSpec } from "../../config/index.js";
import { ConfigError } from "../../errors/index.js";
import { fileProblem, missingReporter, lookupProgram } from "../preflight.js";
import {
  DEFAULT_CMDLINE,
  DEFAULT_MACHINE,
  DEFAULT_MEMORY_KIB,
  DEFAULT_QEMU,
  DEFAULT_SHUTDOWN_TIMEOUT_S,
} from "./keys.js";

export type Nic =
  | { readonly kind: "user"; readonly hostfwd: readonly string[] }
  | { readonly kind: "tap"; readonly ifname: string }
  | { readonly kind: "bridge"; readonly bridge: string };

export interface Disk {
  readonly file: string;
  readonly vdev: string;
  readonly format: "raw" | "qcow2";
}

/** One VM as QEMU will run it. */
export interface QemuMachine {
  readonly label: string;
  readonly qemu: string;
  readonly kernel: string;
  readonly initrd: string | undefined;
  readonly cmdline: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly machine: string;
  readonly accel: string;
  readonly uuid: string | undefined;
  readonly disks: readonly Disk[];
  readonly nics: readonly Nic[];
  /** Lower-case colon-separated, one per nic, derived from the label so they survive restarts. */
  readonly macs: readonly string[];
  readonly extraArgs: readonly string[];
  readonly shutdownTimeoutMs: number;
  /** Keep a QEMU waiting with `-incoming defer` while the VM is saved. */
  readonly standby: boolean;
}

/** True when /dev/kvm exists and we may open it read-write. */
export function kvmUsable(): boolean {
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether `accel` defaults to kvm: /dev/kvm is usable and is not only PVM's.
 * A nested host without VT-x or AMD-V can offer /dev/kvm through kvm_pvm,
 * which runs only guest kernels built for PVM: an ordinary kernel sits there
 * with no console output at all (seen on this project's test machines), so
 * there the default is tcg, and `accel=kvm` is for those who have such a guest.
 */
export function kvmDefault(modules = "/sys/module"): boolean {
  if (!kvmUsable()) return false;
  const loaded = (name: string): boolean => existsSync(`${modules}/${name}`);
  return loaded("kvm_intel") || loaded("kvm_amd") || !loaded("kvm_pvm");
}

const HOSTFWD = /^(tcp|udp):([0-9.]*):(\d{1,5})-([0-9.]*):(\d{1,5})$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * Reads and checks the qemu keys of one VM; ConfigError naming the VM and key
 * when one cannot be used. With `problems` (the preflight), what is missing on
 * this machine (the QEMU binary, the kernel, initrd and disk files, KVM) is added
 * there, every one, and the reading goes on; other errors still throw.
 */
export function parseMachine(spec: VmSpec, problems?: ConfigError[]): QemuMachine {
  const o = spec.options;
  const label = spec.label;
  const missing = missingReporter(spec.label, problems);
  const fileKey = (key: string, value: string): string => {
    const path = resolve(value);
    const problem = fileProblem(path, value);
    if (problem !== null) missing(problem, key);
    return path;
  };
  const qemuName = o.str("qemu") ?? DEFAULT_QEMU;
  const found = lookupProgram(qemuName);
  if ("problem" in found) {
    missing(`QEMU binary ${found.problem}; install qemu-system-x86 or set qemu=PATH`, "qemu");
  }
  const qemu = "path" in found ? found.path : qemuName;
  const kernel = fileKey("kernel", o.requireStr("kernel"));
  const initrdValue = o.str("initrd");
  const initrd = initrdValue === undefined ? undefined : fileKey("initrd", initrdValue);

  const memoryBytes = o.sizeBytes("memory", 1024) ?? DEFAULT_MEMORY_KIB * 1024;
  const memoryMiB = Math.ceil(memoryBytes / (1024 * 1024));
  if (memoryMiB < 16) {
    throw new ConfigError(`${memoryMiB} MiB is too little for a VM (at least 16M)`, {
      vm: label,
      key: "memory",
    });
  }
  const cpus = o.int("cpus") ?? 1;
  if (cpus < 1 || cpus > 255)
    throw new ConfigError(`expected 1 to 255 CPUs, got ${cpus}`, { vm: label, key: "cpus" });

  const accelValue = o.str("accel");
  let accel: string;
  if (accelValue === undefined) {
    accel = kvmDefault() ? "kvm" : "tcg";
  } else if (accelValue === "kvm" || accelValue === "tcg") {
    if (accelValue === "kvm" && !kvmUsable())
      missing("/dev/kvm is missing or not writable here (use accel=tcg)", "accel");
    accel = accelValue;
  } else {
    throw new ConfigError(`expected kvm or tcg, got '${accelValue}'`, { vm: label, key: "accel" });
  }

  const disks: Disk[] = [];
  const usedVdevs = new Set<string>();
  const diskTuples = o.tuples("disk");
  for (const t of diskTuples) {
    if (t.left === undefined)
      throw new ConfigError("expected FILE@vdX, the file is missing", { vm: label, key: "disk" });
    let vdev = t.right;
    if (vdev === undefined) {
      for (let c = 0; c < 26; c++) {
        const name = `vd${String.fromCharCode(97 + c)}`;
        if (!usedVdevs.has(name) && !diskTuples.some((d) => d.right === name)) {
          vdev = name;
          break;
        }
      }
    }
    if (vdev === undefined || !/^vd[a-z]$/.test(vdev)) {
      throw new ConfigError(`expected a virtio disk name vda to vdz after '@', got '${t.right ?? ""}'`, {
        vm: label,
        key: "disk",
      });
    }
    if (usedVdevs.has(vdev))
      throw new ConfigError(`disk name '${vdev}' is given twice`, { vm: label, key: "disk" });
    usedVdevs.add(vdev);
    const file = fileKey("disk", t.left);
    disks.push({ file, vdev, format: file.endsWith(".qcow2") ? "qcow2" : "raw" });
  }
  disks.sort((a, b) => a.vdev.localeCompare(b.vdev));

  const hostfwd = o.all("hostfwd");
  for (const h of hostfwd) {
    const m = HOSTFWD.exec(h);
    if (m === null || Number(m[3]) > 65535 || Number(m[5]) > 65535) {
      throw new ConfigError(`expected tcp:127.0.0.1:HOSTPORT-:GUESTPORT, got '${h}'`, {
        vm: label,
        key: "hostfwd",
      });
    }
  }
  const nicValues = o.all("nic");
  const nics: Nic[] = [];
  let fwdGiven = false;
  for (const v of nicValues.length === 0 ? ["user"] : nicValues) {
    if (v === "user") {
      nics.push({ kind: "user", hostfwd: fwdGiven ? [] : hostfwd });
      fwdGiven = true;
      continue;
    }
    const m = /^(tap|bridge):(.*)$/.exec(v);
    if (m === null || !IFNAME.test(m[2]!)) {
      throw new ConfigError(`expected user, tap:NAME or bridge:NAME (an interface name), got '${v}'`, {
        vm: label,
        key: "nic",
      });
    }
    nics.push(m[1] === "tap" ? { kind: "tap", ifname: m[2]! } : { kind: "bridge", bridge: m[2]! });
  }
  if (hostfwd.length > 0 && !fwdGiven) {
    throw new ConfigError("needs a user nic (nic=user) to forward into", { vm: label, key: "hostfwd" });
  }

  const extraArgs = o.all("qemu_arg").flatMap((v) => v.split(" ").filter((w) => w !== ""));
  const shutdownTimeout = o.float("shutdown_timeout") ?? DEFAULT_SHUTDOWN_TIMEOUT_S;

  return {
    label,
    qemu,
    kernel,
    initrd,
    cmdline: o.str("cmdline") ?? DEFAULT_CMDLINE,
    memoryMiB,
    cpus,
    machine: o.str("machine") ?? DEFAULT_MACHINE,
    accel,
    uuid: o.str("uuid"),
    disks,
    nics,
    macs: nics.map((_, i) => macFor(label, i)),
    extraArgs,
    shutdownTimeoutMs: shutdownTimeout * 1000,
    standby: o.bool("standby") ?? false,
  };
}

/** A stable locally-administered MAC in QEMU's 52:54:00 range, from the VM's label and nic index. */
export function macFor(label: string, index: number): string {
  const h = createHash("sha256").update(`${label}\0${index}`).digest();
  return ["52", "54", "00", h[0]!, h[1]!, h[2]!]
    .map((b) => (typeof b === "string" ? b : b.toString(16).padStart(2, "0")))
    .join(":");
}
