/**
 * `jitsu check` through the built CLI: a good configuration passes and starts
 * nothing; each broken one names its problem (every one of them at once), and
 * the exit code is 1.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI, freePort, localArgs, run, tempDir } from "../support/index.js";

describe("jitsu check (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let stamp: string;
  const check = (args: string[]) => run(process.execPath, [CLI, "check", ...args], 60_000);

  before(async () => {
    dir = await tempDir("jitsu-check-");
    stamp = join(dir.path, "started");
  });
  after(async () => dir.remove());

  /** A VM that, were it started, would create `stamp`. */
  const vm = (name: string): string =>
    `dns=${name}.jitsu.test,ip=127.0.0.1,name=${name},exec=sh -c 'touch ${stamp}; exec sleep 1000'`;

  it("a good configuration: OK, exit 0, nothing started, nothing left listening", async () => {
    const dns = await freePort();
    const http = await freePort();
    const file = join(dir.path, "good.yaml");
    await writeFile(
      file,
      `ttl: 30\nvms:\n  - name: filevm\n    dns: filevm.jitsu.test\n    ip: 127.0.0.3\n    exec: /bin/sleep 100\n`,
    );
    const res = await check([
      ...localArgs(dns, dir.path),
      "--http",
      `127.0.0.1:${http}`,
      "--config",
      file,
      vm("www"),
      vm("db"),
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stderr, "");
    assert.match(
      res.stdout,
      /^jitsu check: OK: config file .*good\.yaml; 3 VMs \(process backend\); 3 of 3 VMs resolved by the backend; DNS on 127\.0\.0\.1:\d+; --http 127\.0\.0\.1:\d+\. Nothing was started\.\n$/,
    );
    assert.ok(!existsSync(stamp), "check started a VM");
    assert.deepEqual(
      readdirSync(dir.path).filter((f) => f !== "good.yaml" && f !== "process"),
      [],
    );
    // Both ports are free again.
    for (const port of [dns, http]) {
      await new Promise<void>((resolve, reject) => {
        const s: Server = createServer();
        s.once("error", reject);
        s.listen(port, "127.0.0.1", () => s.close(() => resolve()));
      });
    }
  });

  it("broken VMs and options: one line each, every one at once, and a summary", async () => {
    const dns = await freePort();
    const res = await check([
      ...localArgs(dns, dir.path),
      "-m",
      "hibernate",
      "-t",
      "soon",
      vm("www"),
      "dsn=x.jitsu.test,name=typo,exec=/bin/true",
      `dns=www.jitsu.test,ip=127.0.0.9,name=again,exec=/bin/true`,
      "dns=gone.jitsu.test,ip=127.0.0.1,name=gone,exec=/nonexistent/program",
      "dns=cwd.jitsu.test,ip=127.0.0.1,name=cwd,exec=/bin/true,cwd=/nonexistent-dir",
    ]);
    assert.equal(res.code, 1);
    const lines = res.stderr.trimEnd().split("\n");
    const expect = [
      /^jitsu check: option '--mode': expected one of destroy, shutdown, suspend, pause, save, got 'hibernate'$/,
      /^jitsu check: option '--ttl': .*'soon'/,
      /^jitsu check: VM 'typo', key 'dsn': unknown key for the process backend; did you mean 'dns'\?/,
      /www\.jitsu\.test/, // the same DNS name for two VMs
      /^jitsu check: VM 'gone', key 'exec': program '\/nonexistent\/program' does not exist$/,
      /^jitsu check: VM 'cwd', key 'cwd': directory '\/nonexistent-dir' does not exist$/,
    ];
    for (const re of expect)
      assert.ok(
        lines.some((l) => re.test(l)),
        `no line matches ${re}:\n${res.stderr}`,
      );
    assert.match(lines.at(-1)!, /^jitsu check: 6 problems found \(fine: .*\)\. Nothing was started\.$/);
    assert.equal(lines.length, 7, res.stderr);
    assert.ok(!existsSync(stamp));
  });

  it("a port in use: names the address, the program holding it and the option", async () => {
    const dns = await freePort();
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(dns, "127.0.0.1", resolve));
    try {
      const res = await check([...localArgs(dns, dir.path), vm("www")]);
      assert.equal(res.code, 1);
      assert.match(
        res.stderr,
        new RegExp(
          `^jitsu check: cannot listen on TCP 127\\.0\\.0\\.1:${dns}: the port is already in use \\(EADDRINUSE\\).*choose another port with -l\\n`,
        ),
      );
      assert.match(res.stderr, /1 problem found/);
    } finally {
      holder.close();
    }
  });

  it("an unreachable libvirt socket: the backend cannot be reached, said once", async () => {
    const dns = await freePort();
    const sock = join(dir.path, "no-libvirt-sock");
    const res = await check([
      "-x",
      "libvirt",
      "-c",
      `qemu+unix:///system?socket=${sock}`,
      "-l",
      String(dns),
      "-f",
      "0.0.0.0",
      "--state-dir",
      dir.path,
      "dns=www.jitsu.test,ip=127.0.0.1,name=www",
    ]);
    assert.equal(res.code, 1);
    const lines = res.stderr.trimEnd().split("\n");
    assert.match(
      lines[0]!,
      new RegExp(
        `^jitsu check: cannot reach the libvirt backend at qemu\\+unix:///system\\?socket=${sock.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: .*`,
      ),
    );
    assert.match(lines[0]!, /ENOENT|no such file|does not exist/i);
    assert.equal(lines.length, 2, res.stderr);
  });

  it("a config file that is not there, and an unknown option", async () => {
    const missing = await check(["--config", join(dir.path, "nope.yaml"), "-x", "process", "-f", "0.0.0.0"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope\.yaml/);
    const unknown = await check(["--bogus"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^jitsu check: unknown option '--bogus'/);
  });
});
