/**
 * The start-up checks backends share (src/backends/preflight.ts): a program
 * found as spawn finds it, a VM's file or directory, a --state-dir that can
 * be written in, and runPreflight gathering a backend's problems.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { VmBackend } from "../../src/backends/contract.js";
import {
  directoryProblem,
  fileProblem,
  lookupProgram,
  stateDirProblem,
} from "../../src/backends/preflight.js";
import { runPreflight } from "../../src/backends/index.js";
import {
  ConfigError,
  PreflightError,
  UsageError,
  describeError,
  describeErrorLines,
} from "../../src/errors/index.js";

describe("preflight checks", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "jitsu-preflight-"));
    await mkdir(join(dir, "bin"));
    await mkdir(join(dir, "app"));
    await writeFile(join(dir, "bin", "tool"), "#!/bin/sh\necho tool\n", { mode: 0o755 });
    await writeFile(join(dir, "bin", "plain"), "not a program\n", { mode: 0o644 });
    await writeFile(join(dir, "app", "run.sh"), "#!/bin/sh\necho run\n", { mode: 0o755 });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("finds a program as spawn does: a slash is relative to the child's cwd, a bare name is on its PATH", () => {
    const bin = join(dir, "bin");
    assert.deepEqual(lookupProgram("./run.sh", { cwd: join(dir, "app") }), {
      path: join(dir, "app", "run.sh"),
    });
    assert.deepEqual(lookupProgram("tool", { searchPath: `/nonexistent:${bin}` }), {
      path: join(bin, "tool"),
    });
    // A relative PATH entry is taken from the child's cwd too.
    assert.deepEqual(lookupProgram("tool", { cwd: dir, searchPath: "bin" }), { path: join(bin, "tool") });
    // spawn agrees with each of these.
    assert.equal(spawnSync("./run.sh", { cwd: join(dir, "app"), encoding: "utf8" }).stdout, "run\n");
    assert.equal(spawnSync("tool", { cwd: dir, env: { PATH: "bin" }, encoding: "utf8" }).stdout, "tool\n");
    assert.equal(spawnSync("./run.sh", { cwd: dir }).error?.message, "spawnSync ./run.sh ENOENT");
  });

  it("says why a program cannot run: missing, a directory, not executable, not on PATH", () => {
    assert.deepEqual(lookupProgram("./run.sh", { cwd: dir }), {
      problem: `'${join(dir, "run.sh")}' does not exist`,
    });
    assert.deepEqual(lookupProgram(join(dir, "bin")), { problem: `'${join(dir, "bin")}' is a directory` });
    assert.deepEqual(lookupProgram(join(dir, "bin", "plain")), {
      problem: `'${join(dir, "bin", "plain")}' is not executable (chmod +x?)`,
    });
    assert.deepEqual(lookupProgram("plain", { searchPath: join(dir, "bin") }), {
      problem: `'plain' is on PATH as ${join(dir, "bin", "plain")}, which is not executable (chmod +x?)`,
    });
    assert.deepEqual(lookupProgram("jitsu-no-such-program", { searchPath: "/nonexistent:/also-not" }), {
      problem: "'jitsu-no-such-program' is not on PATH (/nonexistent:/also-not)",
    });
  });

  it("a VM's file and directory", () => {
    assert.equal(fileProblem(join(dir, "bin", "plain")), null);
    assert.equal(fileProblem(join(dir, "nope"), "nope"), "file 'nope' does not exist");
    assert.equal(fileProblem(dir), `'${dir}' is a directory, not a file`);
    assert.equal(directoryProblem(dir), null);
    assert.equal(directoryProblem(join(dir, "nope")), `directory '${join(dir, "nope")}' does not exist`);
    assert.equal(
      directoryProblem(join(dir, "bin", "tool")),
      `'${join(dir, "bin", "tool")}' is not a directory`,
    );
  });

  it("--state-dir: created if missing, written in, and the probe file removed", async () => {
    const state = join(dir, "state", "process");
    assert.equal(await stateDirProblem("process", state), null);
    assert.deepEqual(await readdir(state), []);
  });

  it("--state-dir that cannot be made or written: a UsageError naming the option, the backend and the code", async () => {
    const blocker = join(dir, "a-file");
    await writeFile(blocker, "");
    const notDir = await stateDirProblem("qemu", join(blocker, "qemu"));
    assert.ok(notDir instanceof UsageError);
    assert.equal(notDir.option, "--state-dir");
    assert.match(
      notDir.message,
      /^option '--state-dir': the qemu backend cannot write its files in .*a-file\/qemu: a part of the path is a file, not a directory \((ENOTDIR|EEXIST)\)$/,
    );
  });

  it("--state-dir without write permission (as user nobody): EACCES and what to do", async () => {
    await chmod(dir, 0o755); // mkdtemp made it 0700: nobody could not even look inside
    const locked = join(dir, "locked");
    const open = join(dir, "open");
    await mkdir(locked);
    await chmod(locked, 0o555);
    await mkdir(open);
    await chmod(open, 0o777);
    // Root may write anywhere: run the check as nobody, through the built module.
    const asNobody = (path: string): string => {
      const script = `
        import { stateDirProblem } from ${JSON.stringify(new URL("../../src/backends/preflight.js", import.meta.url).href)};
        const p = await stateDirProblem("process", ${JSON.stringify(path)});
        process.stdout.write(p === null ? "null" : p.message);
      `;
      const res = spawnSync(
        "setpriv",
        [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          process.execPath,
          "--input-type=module",
          "-e",
          script,
        ],
        { encoding: "utf8" },
      );
      assert.equal(res.status, 0, res.stderr);
      return res.stdout;
    };
    assert.equal(asNobody(join(open, "process")), "null");
    assert.equal(
      asNobody(join(locked, "process")),
      `option '--state-dir': the process backend cannot write its files in ${join(locked, "process")}: permission denied (EACCES); run jitsu as a user who may write there, or choose another directory with --state-dir`,
    );
  });

  it("runPreflight: nothing to say, or a PreflightError with one line per problem", async () => {
    const backend = (problems: (ConfigError | UsageError)[]): VmBackend =>
      ({ preflight: () => Promise.resolve(problems) }) as unknown as VmBackend;
    await runPreflight(backend([]), []);
    // A backend without local checks has nothing to say.
    await runPreflight({} as VmBackend, []);
    const err = await runPreflight(
      backend([
        new ConfigError("directory '/nope' does not exist", { vm: "web", key: "cwd" }),
        new UsageError("the process backend cannot write its files in /ro/process", "--state-dir"),
      ]),
      [],
    ).then(
      () => assert.fail("expected a PreflightError"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof PreflightError);
    assert.equal(err.code, "ERR_PREFLIGHT");
    assert.deepEqual(describeErrorLines(err), [
      "VM 'web', key 'cwd': directory '/nope' does not exist",
      "option '--state-dir': the process backend cannot write its files in /ro/process",
    ]);
    assert.equal(describeError(err), "VM 'web', key 'cwd': directory '/nope' does not exist");
    assert.deepEqual(describeErrorLines(new Error("one\ntwo")), ["one"]);
  });
});
