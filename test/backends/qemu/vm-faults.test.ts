/**
 * A QEMU that dies at the worst moment (issue 16), with the real test guest
 * and real SIGKILLs, through the backend:
 * - during `migrate` to the save file: the stop fails, the VM is off, the
 *   partial image is moved aside (named in the log) and never resumed from;
 *   the next start boots afresh;
 * - a saved image cut short (its size is not what was saved): moved aside,
 *   and the resume boots afresh in the same call;
 * - a saved image whose content is damaged (same size): QEMU exits during its
 *   -incoming restore; the image is moved aside and the resume boots afresh;
 * - during shutdown: the stop completes and the VM is off;
 * - during boot: the VM is seen dead (off or crashed), and starts again.
 */
import assert from "node:assert/strict";
import {
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  truncateSync,
  writeSync,
  closeSync,
  statSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { VmBackend, VmRef } from "../../../src/backends/contract.js";
import { qemuBackend } from "../../../src/backends/qemu/index.js";
import { systemClock } from "../../../src/clock/index.js";
import { buildVmSpec, parseConfigString } from "../../../src/config/index.js";
import { createLogger } from "../../../src/log/index.js";
import { freePort, tempDir } from "../../support/index.js";
import { killQemus, qemuPids, testGuest, waitHttp, waitUntil } from "./fixtures.js";

const BOOT_MS = 180_000;

describe(
  "qemu backend: the VM killed mid-start, mid-save, mid-stop (real QEMU, real SIGKILL)",
  { timeout: 900_000 },
  () => {
    let dir: { path: string; remove(): Promise<void> };
    let vmDir = "";
    let pidFile = "";
    let port = 0;
    let backend: VmBackend;
    let ref: VmRef;
    const lines: string[] = [];

    before(async () => {
      const guest = await testGuest();
      dir = await tempDir("jitsu-qemu-faults-");
      port = await freePort();
      vmDir = join(dir.path, "qemu", "vf");
      pidFile = join(vmDir, "qemu.pid");
      const spec = buildVmSpec(
        parseConfigString(
          `dns=vf.test,ip=10.0.2.15,name=vf,kernel=${guest.kernel},initrd=${guest.initrd},hostfwd=tcp:127.0.0.1:${port}-:80`,
          "CONFIG #1",
        ),
        "CONFIG #1",
        { backendKeys: qemuBackend.keys, backendName: "qemu" },
      );
      const log = createLogger({
        level: "info",
        format: "text",
        destination: { write: (line: string) => void lines.push(line) },
      });
      backend = qemuBackend.create({
        connect: "",
        stateDir: dir.path,
        settings: {},
        log,
        clock: systemClock,
      });
      ref = await backend.resolve(spec);
    });
    after(async () => {
      await backend?.close();
      killQemus(pidFile);
      await dir?.remove();
    });

    const qemuPid = (): number => {
      const pids = qemuPids(pidFile);
      assert.equal(pids.length, 1, `one QEMU for the VM, found ${pids.length}`);
      return pids[0]!;
    };
    const asideFiles = (kind: string): string[] =>
      readdirSync(vmDir).filter((f) => f.startsWith("bad-") && f.endsWith(`-${kind}.img`));
    const booted = (): number =>
      (readFileSync(join(vmDir, "console.log"), "utf8").match(/jitsu-test-guest: up/g) ?? []).length;

    it(
      "SIGKILL during migrate to the save file: off, the partial file moved aside and named, the next start boots",
      { timeout: BOOT_MS * 2 },
      async () => {
        await backend.start(ref);
        await waitHttp(port, BOOT_MS);
        const pid = qemuPid();
        const partial = join(vmDir, "memory.img.partial");
        const saving = backend.stop(ref, "save").then(
          () => null,
          (e: Error) => e,
        );
        await waitUntil("the save has begun writing", () => existsSync(partial), 30_000);
        process.kill(pid, "SIGKILL");
        const err = await saving;
        assert.ok(err instanceof Error, "the save fails");
        assert.match(err.message, /qemu VM 'vf': cannot save the memory to a file/);
        assert.equal(await backend.state(ref), "off");
        assert.equal(existsSync(join(vmDir, "memory.img")), false);
        assert.equal(existsSync(join(vmDir, "memory.json")), false);
        const aside = asideFiles("partial");
        assert.equal(aside.length, 1, "the partial image is kept aside");
        assert.ok(
          lines.some((l) => l.includes(`moved aside to ${join(vmDir, aside[0]!)}`)),
          "and named in the log",
        );
        await backend.start(ref);
        await waitHttp(port, BOOT_MS);
        assert.equal(booted(), 1, "booted afresh (a fresh console per QEMU)");
      },
    );

    it(
      "a saved image cut short is moved aside; the resume boots afresh in the same call",
      { timeout: BOOT_MS },
      async () => {
        await backend.stop(ref, "save");
        assert.equal(await backend.state(ref), "suspended");
        const image = join(vmDir, "memory.img");
        truncateSync(image, Math.floor(statSync(image).size / 2));
        await backend.resume(ref);
        await waitHttp(port, BOOT_MS);
        assert.equal(booted(), 1, "booted afresh, not restored");
        assert.equal(asideFiles("unloadable").length, 1);
        assert.ok(
          lines.some((l) =>
            /VM 'vf': its saved memory is damaged \(it has \d+ bytes, \d+ were saved\); moved aside to \S+unloadable\.img; booting it afresh/.test(
              l,
            ),
          ),
        );
        assert.equal(await backend.state(ref), "running");
      },
    );

    it(
      "QEMU exiting during its -incoming restore (damaged image): moved aside, booted afresh in the same call",
      { timeout: BOOT_MS },
      async () => {
        await backend.stop(ref, "save");
        const image = join(vmDir, "memory.img");
        const size = statSync(image).size;
        const fd = openSync(image, "r+");
        // Garbage over the stream's header and a stretch of RAM pages: QEMU rejects it while loading.
        for (const at of [0, Math.floor(size / 3)])
          writeSync(fd, Buffer.alloc(64 * 1024, 0x5a), 0, 64 * 1024, at);
        closeSync(fd);
        assert.equal(statSync(image).size, size);
        await backend.resume(ref);
        await waitHttp(port, BOOT_MS);
        assert.equal(booted(), 1, "booted afresh after the failed restore");
        assert.ok(
          lines.some((l) =>
            /VM 'vf': its saved memory could not be loaded \(.*\); moved aside to \S+unloadable\.img; booting it afresh/.test(
              l,
            ),
          ),
        );
        assert.equal(asideFiles("unloadable").length, 2);
        assert.equal(existsSync(image), false);
      },
    );

    it("SIGKILL during shutdown: the stop completes and the VM is off", async () => {
      const pid = qemuPid();
      const stopping = backend.stop(ref, "shutdown");
      await new Promise((r) => setTimeout(r, 20));
      process.kill(pid, "SIGKILL"); // ESRCH if QEMU had already gone (then this would test nothing)
      await stopping;
      assert.equal(await backend.state(ref), "off");
      assert.deepEqual(qemuPids(pidFile), []);
    });

    it(
      "SIGKILL during boot: the VM is seen dead, and the next start boots it",
      { timeout: BOOT_MS },
      async () => {
        await backend.start(ref);
        process.kill(qemuPid(), "SIGKILL");
        await waitUntil("QEMU is gone", () => qemuPids(pidFile).length === 0, 10_000);
        await new Promise((r) => setTimeout(r, 300));
        assert.ok(["off", "crashed"].includes(await backend.state(ref)));
        await backend.start(ref);
        await waitHttp(port, BOOT_MS);
        await backend.stop(ref, "destroy");
        assert.equal(await backend.state(ref), "off");
      },
    );
  },
);
