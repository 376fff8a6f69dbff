/**
 * Where one VM's QEMU keeps its files under --state-dir: the pid file and QMP
 * socket that let a restarted jitsu re-adopt it, the serial console log, and
 * the saved memory image of a suspended VM.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { access, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError } from "../../errors/index.js";
import type { RunPaths } from "./command-line.js";

/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** What we keep beside a saved memory image: it only loads into the same machine. */
export interface SavedImageMeta {
  readonly machineHash: string;
  readonly savedAt: number;
}

export class VmDirectory implements RunPaths {
  readonly path: string;
  readonly pidFile: string;
  readonly qmpSocket: string;
  readonly consoleLog: string;
  readonly image: string;
  readonly imageMeta: string;

  constructor(stateDir: string, label: string) {
    this.path = join(stateDir, "qemu", VmDirectory.dirName(label));
    this.pidFile = join(this.path, "qemu.pid");
    this.qmpSocket = join(this.path, "qmp.sock");
    this.consoleLog = join(this.path, "console.log");
    this.image = join(this.path, "memory.img");
    this.imageMeta = join(this.path, "memory.json");
    if (Buffer.byteLength(this.qmpSocket) > MAX_SOCKET_PATH) {
      throw new ConfigError(
        `the QMP socket path ${this.qmpSocket} is longer than ${MAX_SOCKET_PATH} bytes (a unix socket limit): use a shorter --state-dir`,
        { vm: label },
      );
    }
  }

  /** The label when it is a safe, short file name; else a cleaned prefix and a hash, so two labels never share one. */
  static dirName(label: string): string {
    const clean = label.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 32);
    if (clean === label && !label.startsWith(".")) return label;
    return `${clean.replace(/^\./, "_")}-${createHash("sha256").update(label).digest("hex").slice(0, 8)}`;
  }

  async create(): Promise<void> {
    await mkdir(this.path, { recursive: true, mode: 0o700 });
  }

  /** The pid in the pid file, or null when there is none (or it is unreadable). */
  readPid(): number | null {
    try {
      const pid = Number(readFileSync(this.pidFile, "utf8").trim());
      return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
    } catch {
      return null;
    }
  }

  /** Removes the pid file and socket of a QEMU that is gone (only if the pid file still names `pid`). */
  async clearRun(pid: number | null): Promise<void> {
    if (pid !== null && this.readPid() !== pid && this.readPid() !== null) return;
    await rm(this.pidFile, { force: true });
    await rm(this.qmpSocket, { force: true });
  }

  async readImageMeta(): Promise<SavedImageMeta | null> {
    try {
      const meta = JSON.parse(await readFile(this.imageMeta, "utf8")) as SavedImageMeta;
      await access(this.image);
      return meta;
    } catch {
      return null;
    }
  }

  /** Moves a completed image into place, then writes its meta (the meta's presence marks a usable image). */
  async commitImage(tmp: string, meta: SavedImageMeta): Promise<void> {
    await rename(tmp, this.image);
    await writeFile(`${this.imageMeta}.tmp`, JSON.stringify(meta));
    await rename(`${this.imageMeta}.tmp`, this.imageMeta);
  }

  async dropImage(): Promise<void> {
    await rm(this.imageMeta, { force: true });
    await rm(this.image, { force: true });
  }
}

/** True if `pid` is a live process (not a zombie) whose command line has `-pidfile <pidFile>`: our QEMU. */
export function isOurQemu(pid: number, pidFile: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "Z" || state === "X") return false;
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const i = argv.indexOf("-pidfile");
    return i >= 0 && argv[i + 1] === pidFile;
  } catch {
    return false;
  }
}
