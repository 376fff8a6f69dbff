/**
 * Start-up refusals through the built CLI: a state database that is locked by
 * another jitsu or corrupt, and a config file with a mistake, each end jitsu
 * with one clear line and exit code 1, leaving the file as it was.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, it } from "node:test";
import { CLI, freePort, localArgs, run, startCli, tempDir, type CliProcess } from "../support/index.js";

const clis: CliProcess[] = [];
const dirs: { remove(): Promise<void> }[] = [];
after(async () => {
  for (const cli of clis) await cli.stop("SIGKILL");
  for (const d of dirs) await d.remove();
});

function args(port: number, db: string, stateDir: string): string[] {
  return [...localArgs(port, stateDir), "--persistdb", db, "dns=a.jitsu.test,ip=127.0.0.1,exec=/bin/true"];
}

it("a database another jitsu holds is refused as locked; a corrupt one as corrupt", async () => {
  const dir = await tempDir("jitsu-persist-errors-");
  dirs.push(dir);
  const db = join(dir.path, "state.db");
  const first = startCli(args(await freePort(), db, dir.path));
  clis.push(first);
  await first.waitFor(/Starting server on/);
  const second = await run(process.execPath, [CLI, ...args(await freePort(), db, dir.path)]);
  assert.equal(second.code, 1);
  assert.match(
    second.stderr,
    /^jitsu: state database '.*state\.db': is locked by another process \(.*\); is another jitsu using it\? Stop it or use another --persistdb file\n$/,
  );
  assert.equal(await first.stop("SIGTERM"), 0);

  const garbage = join(dir.path, "garbage.db");
  const bytes = Buffer.from("not a database\n".repeat(300));
  await writeFile(garbage, bytes);
  const res = await run(process.execPath, [CLI, ...args(await freePort(), garbage, dir.path)]);
  assert.equal(res.code, 1);
  assert.match(
    res.stderr,
    /^jitsu: state database '.*garbage\.db': is corrupt or not a SQLite database \(file is not a database/,
  );
  assert.equal(res.stderr.trim().split("\n").length, 1);
  assert.deepEqual(await readFile(garbage), bytes);
});

it("a config file with a mistake names the file, the VM and the key", async () => {
  const dir = await tempDir("jitsu-config-errors-");
  dirs.push(dir);
  const file = join(dir.path, "jitsu.json");
  await writeFile(
    file,
    JSON.stringify({
      backend: "process",
      vms: [
        { name: "ok", dns: "ok.jitsu.test", ip: "127.0.0.1", exec: "/bin/true" },
        { name: "bad", dns: "bad.jitsu.test", ip: "127.0.0.1", exec: "/bin/true", colour: "blue" },
      ],
    }),
  );
  const res = await run(process.execPath, [
    CLI,
    "--config",
    file,
    "-l",
    String(await freePort()),
    "-f",
    "0.0.0.0",
  ]);
  assert.equal(res.code, 1);
  assert.match(
    res.stderr,
    /^jitsu: config file '.*jitsu\.json': vms #2 \(bad\): VM 'bad', key 'colour': unknown key for the process backend/,
  );
  await writeFile(file, '{"ttl": 60, "tll": 60}');
  const typo = await run(process.execPath, [CLI, "--config", file]);
  assert.notEqual(typo.code, 0);
  assert.match(
    typo.stderr,
    /^jitsu: config file '.*jitsu\.json': unknown option 'tll' \(known: vms, allow-recursion, allow-summon, backend, bind,/,
  );
});
