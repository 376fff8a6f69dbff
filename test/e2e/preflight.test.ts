/**
 * Mistakes caught at start-up, not at the first query: the built CLI refuses
 * to start (exit 1) with one line per problem, every VM's at once, naming the
 * VM and the key (or the option); a SIGHUP reload with such a problem is
 * rejected and the running configuration stays, as dig shows.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  CLI,
  dig,
  freePort,
  killVmGroups,
  localArgs,
  run,
  startCli,
  tempDir,
  yamlHeader,
  yamlVm,
  type CliProcess,
} from "../support/index.js";

/** The `jitsu: ` lines of a run's stderr, without the prefix. */
function errorLines(stderr: string): string[] {
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("jitsu: "))
    .map((l) => l.slice("jitsu: ".length));
}

/** The start of a command line for `backend`, serving no DNS worth querying (none of them starts). */
function backendArgs(backend: string, stateDir: string): string[] {
  return ["-x", backend, "-l", "0", "-f", "0.0.0.0", "--state-dir", stateDir];
}

/** Runs the CLI to completion with `args` (none of them can start: each test expects exit 1). */
async function refused(args: readonly string[]): Promise<string[]> {
  const res = await run(process.execPath, [CLI, ...args], 30_000);
  assert.equal(res.code, 1, `exit status\n${res.stdout}${res.stderr}`);
  // Nothing was listening, nothing was started.
  assert.doesNotMatch(res.stdout + res.stderr, /Starting server on|Started process/);
  return errorLines(res.stderr);
}

describe("start-up checks (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const mounts: string[] = [];

  before(async () => {
    dir = await tempDir("jitsu-preflight-");
    await writeFile(join(dir.path, "plain"), "echo not executable\n", { mode: 0o644 });
    await writeFile(join(dir.path, "bad.json"), '{"net": {"if": "xenif0",}}');
    await writeFile(join(dir.path, "kernel"), "not really a kernel");
  });

  after(async () => {
    for (const m of mounts) execFileSync("umount", [m]);
    await dir.remove();
  });

  /** A small tmpfs (mount needs root: the tests run as root), unmounted in `after`. */
  async function tmpfs(name: string, options: string): Promise<string> {
    const path = join(dir.path, name);
    await mkdir(path);
    execFileSync("mount", ["-t", "tmpfs", "-o", options, "tmpfs", path]);
    mounts.push(path);
    return path;
  }

  it("process: a missing cwd, a program not on PATH, one not executable, a bad env: one line each, every VM's", async () => {
    const state = join(dir.path, "state");
    const lines = await refused([
      ...localArgs(0, state),
      "dns=ok.jitsu.test,ip=127.0.0.5,name=ok,exec=sleep 60",
      "dns=web.jitsu.test,ip=127.0.0.6,name=web,exec=jitsu-no-such-program --port 8080,cwd=/nonexistent/srv",
      `dns=api.jitsu.test,ip=127.0.0.7,name=api,exec=./plain,cwd=${dir.path}`,
      "dns=env.jitsu.test,ip=127.0.0.8,name=env,exec=sleep 60,env=PATH=/nonexistent/bin,env=JUNK",
    ]);
    assert.deepEqual(lines, [
      "VM 'web', key 'cwd': directory '/nonexistent/srv' does not exist",
      `VM 'web', key 'exec': program 'jitsu-no-such-program' is not on PATH (${process.env["PATH"]})`,
      `VM 'api', key 'exec': program '${join(dir.path, "plain")}' is not executable (chmod +x?)`,
      "VM 'env', key 'env': expected NAME=VALUE, got 'JUNK'",
    ]);
  });

  it("a read-only --state-dir: one line naming the option, the backend's folder and EROFS", async () => {
    const ro = await tmpfs("ro", "ro,size=64k");
    const lines = await refused([
      ...localArgs(0, ro),
      "dns=ok.jitsu.test,ip=127.0.0.5,name=ok,exec=sleep 60",
    ]);
    assert.deepEqual(lines, [
      `option '--state-dir': the process backend cannot write its files in ${ro}/process: the file system is read-only (EROFS); choose a writable directory with --state-dir`,
    ]);
  });

  it("a full --state-dir: ENOSPC, with the VMs' own problems on the lines after", async () => {
    const full = await tmpfs("full", "size=64k");
    // Fill it: dd stops with ENOSPC (its non-zero exit is the point).
    await run("dd", ["if=/dev/zero", `of=${join(full, "fill")}`, "bs=4k"]);
    const lines = await refused([
      ...localArgs(0, full),
      "dns=ok.jitsu.test,ip=127.0.0.5,name=ok,exec=sleep 60,cwd=/nonexistent/srv",
    ]);
    assert.deepEqual(lines, [
      `option '--state-dir': the process backend cannot write its files in ${full}/process: the file system is full (ENOSPC); free some space or choose another directory with --state-dir`,
      "VM 'ok', key 'cwd': directory '/nonexistent/srv' does not exist",
    ]);
  });

  it("qemu: the binary, kernel, initrd and disk files of every VM", async () => {
    const lines = await refused([
      ...backendArgs("qemu", join(dir.path, "qemu-state")),
      `dns=a.jitsu.test,ip=10.0.2.15,name=a,kernel=/nonexistent/vmlinuz,initrd=/nonexistent/initrd.gz,accel=tcg,qemu=/bin/true`,
      `dns=b.jitsu.test,ip=10.0.2.15,name=b,kernel=${join(dir.path, "kernel")},disk=/nonexistent/data.img@vdb,qemu=/nonexistent/qemu,accel=tcg`,
    ]);
    assert.deepEqual(lines, [
      "VM 'a', key 'kernel': file '/nonexistent/vmlinuz' does not exist",
      "VM 'a', key 'initrd': file '/nonexistent/initrd.gz' does not exist",
      "VM 'b', key 'qemu': QEMU binary '/nonexistent/qemu' does not exist; install qemu-system-x86 or set qemu=PATH",
      "VM 'b', key 'disk': file '/nonexistent/data.img' does not exist",
    ]);
  });

  it("libxl: xl, the kernel and disk files, a rumprun_config that is not JSON", async () => {
    const lines = await refused([
      ...backendArgs("libxl", join(dir.path, "libxl-state")),
      "--xl",
      "/nonexistent/xl",
      `dns=www.jitsu.test,ip=10.0.0.1,name=www,memory=64M,kernel=/nonexistent/mirage-www.xen,disk=/nonexistent/data.iso@xvdb`,
      `dns=rump.jitsu.test,ip=10.0.0.2,name=rump,memory=64M,kernel=${join(dir.path, "kernel")},rumprun_config=${join(dir.path, "bad.json")}`,
    ]);
    assert.equal(lines.length, 4, lines.join("\n"));
    assert.equal(
      lines[0],
      "option '--xl': program '/nonexistent/xl' does not exist; install xen-utils, or give its path with --xl PATH",
    );
    assert.equal(lines[1], "VM 'www', key 'kernel': file '/nonexistent/mirage-www.xen' does not exist");
    assert.equal(lines[2], "VM 'www', key 'disk': file '/nonexistent/data.iso' does not exist");
    assert.match(
      lines[3]!,
      /^VM 'rump', key 'rumprun_config': '.*bad\.json' is not valid JSON \(.+\); rumprun reads it as JSON/,
    );
  });
});

describe("start-up checks on SIGHUP reload (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess;
  let dns: number;
  let file: string;

  const header = (): string =>
    yamlHeader({
      backend: "process",
      forwarder: "0.0.0.0",
      listen: dns,
      delay: 0,
      "stop-on-exit": true,
      "state-dir": dir.path,
    });

  before(async () => {
    dir = await tempDir("jitsu-preflight-reload-");
    dns = await freePort();
    file = join(dir.path, "jitsu.yaml");
    await writeFile(file, header() + yamlVm("www", "127.0.0.1"));
    cli = startCli(["--config", file]);
    await cli.waitFor(/Starting server on/);
  });

  after(async () => {
    await cli.stop("SIGTERM");
    killVmGroups(cli.output());
    await dir.remove();
  });

  it("a reload with a missing cwd and a missing program is rejected, one line each; the running VMs stay", async () => {
    await writeFile(
      file,
      header() +
        yamlVm("www", "127.0.0.1") +
        "  - name: fresh\n    dns: fresh.jitsu.test\n    ip: 127.0.0.2\n    exec: jitsu-no-such-program\n    cwd: /nonexistent/srv\n",
    );
    cli.child.kill("SIGHUP");
    await cli.waitFor(
      /Reload rejected, keeping the running configuration: VM 'fresh', key 'exec': program 'jitsu-no-such-program' is not on PATH/,
    );
    assert.match(
      cli.output(),
      /Reload rejected, keeping the running configuration: VM 'fresh', key 'cwd': directory '\/nonexistent\/srv' does not exist\n/,
    );
    assert.doesNotMatch(cli.output(), /Reloaded '/);
    const www = await dig(dns, ["www.jitsu.test", "A"]);
    assert.equal(www.status, "NOERROR");
    assert.equal(www.answers[0]?.data, "127.0.0.1");
    // Not added: with forwarding off, not ours is an authoritative NXDOMAIN.
    assert.equal((await dig(dns, ["fresh.jitsu.test", "A"])).status, "NXDOMAIN");

    // Fixed: the same VM is taken.
    await writeFile(file, header() + yamlVm("www", "127.0.0.1") + yamlVm("fresh", "127.0.0.2"));
    cli.child.kill("SIGHUP");
    await cli.waitFor(/Reloaded '.*jitsu\.yaml': 2 VMs/);
    assert.equal((await dig(dns, ["fresh.jitsu.test", "A"])).answers[0]?.data, "127.0.0.2");
    assert.equal(cli.child.exitCode, null, "still running");
  });
});
