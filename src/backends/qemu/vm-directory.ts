/**
 * Where one VM's QEMU keeps its files under --state-dir: the pid files and QMP
 * socket that let a restarted jitsu re-adopt it, the serial console log, and
 * the saved memory image of a suspended VM.
 */
import { createHash } from "node:crypto";
import { access, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError } from "../../errors/index.js";
import { PidFile } from "../../supervisor/index.js";
import type { RunPaths } from "./command-line.js";

/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** What we keep beside a saved memory image: it only loads into the same machine. */
export interface SavedImageMeta {
  readonly machineHash: string;
  readonly savedAt: number;
  /** The image's size when it was committed (absent in images of older versions). */
  readonly bytes?: number;
}

/** How many images moved aside are kept for inspection (the oldest go first). */
const KEEP_BAD_IMAGES = 2;

export class VmDirectory implements RunPaths {
  readonly path: string;
  /** QEMU's own `-pidfile` (a bare pid, written and locked by QEMU). */
  readonly pidFile: string;
  /** The supervisor's pid file (pid, start time, boot id, command line), written by jitsu. */
  readonly processFile: string;
  readonly qmpSocket: string;
  readonly consoleLog: string;
  readonly image: string;
  readonly imageMeta: string;

  constructor(stateDir: string, label: string) {
    this.path = join(stateDir, "qemu", VmDirectory.dirName(label));
    this.pidFile = join(this.path, "qemu.pid");
    this.processFile = join(this.path, "process.json");
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

  /** Whether a command line is this directory's QEMU: it has `-pidfile <our qemu.pid>`. */
  isItsQemu(cmdline: readonly string[]): boolean {
    const i = cmdline.indexOf("-pidfile");
    return i >= 0 && cmdline[i + 1] === this.pidFile;
  }

  /**
   * Removes QEMU's pid file and socket: before a launch (`pid` null, then our
   * pid file too), or once QEMU `pid` is gone (only if its pid file still
   * names it; our pid file the supervisor removes when it sees the exit).
   */
  async clearRun(pid: number | null): Promise<void> {
    const named = pid === null ? null : (new PidFile(this.pidFile).readSync()?.pid ?? null);
    if (named !== null && named !== pid) return;
    await rm(this.pidFile, { force: true });
    if (pid === null) await rm(this.processFile, { force: true });
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
    meta = { ...meta, bytes: (await stat(tmp)).size };
    await rename(tmp, this.image);
    await writeFile(`${this.imageMeta}.tmp`, JSON.stringify(meta));
    await rename(`${this.imageMeta}.tmp`, this.imageMeta);
  }

  /**
   * Why the image on disk cannot be the one its meta describes (its size
   * differs: cut short or overwritten), or null when it may be.
   */
  async imageProblem(meta: SavedImageMeta): Promise<string | null> {
    if (meta.bytes === undefined) return null;
    const size = await stat(this.image).then(
      (s) => s.size,
      () => -1,
    );
    return size === meta.bytes ? null : `it has ${size} bytes, ${meta.bytes} were saved`;
  }

  /**
   * Moves a memory image that must not be loaded (`file`: the image, or a
   * partial one) aside as bad-<time>-<kind>.img in this directory, kept for
   * inspection (the newest KEEP_BAD_IMAGES), drops the meta, and returns
   * the new path (null when there was no file).
   */
  async moveImageAside(file: string, kind: "partial" | "unloadable", now: number): Promise<string | null> {
    await rm(this.imageMeta, { force: true });
    const aside = join(this.path, `bad-${new Date(now).toISOString().replace(/[:.]/g, "-")}-${kind}.img`);
    try {
      await rename(file, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    const bad = (await readdir(this.path)).filter((f) => f.startsWith("bad-") && f.endsWith(".img")).sort();
    for (const old of bad.slice(0, Math.max(0, bad.length - KEEP_BAD_IMAGES)))
      await rm(join(this.path, old), { force: true });
    return aside;
  }

  async dropImage(): Promise<void> {
    await rm(this.imageMeta, { force: true });
    await rm(this.image, { force: true });
  }
}
