import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseArgs } from "../../src/cli/command.js";
import { ConfigError, UsageError } from "../../src/errors/index.js";

test("--config: the file's options under the command line's; its VMs in settings.file", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "jitsu-cli-config-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "jitsu.yaml");
  await writeFile(
    file,
    [
      "ttl: 90",
      "listen: 5353",
      "start-timeout: 12",
      "stop-on-exit: true",
      "http: '[::1]:9053'",
      "http-token: from-the-file",
      "persistdb: /var/lib/jitsu/state.db",
      "max-starting: 4",
      "max-running: 12",
      "summon-rate: 2.5",
      "vms:",
      "  - {name: www, dns: www.example.org, ip: 10.0.0.1}",
      "",
    ].join("\n"),
  );
  const s = parseArgs([
    "--config",
    file,
    "-t",
    "30",
    "--start-timeout",
    "5",
    "dns=cli.example.org,ip=10.0.0.9",
  ]);
  assert.equal(s.ttl, 30);
  assert.equal(s.startTimeout, 5);
  assert.equal(s.listen, 5353);
  assert.equal(s.stopOnExit, true);
  assert.deepEqual(s.http, { host: "::1", port: 9053 });
  assert.equal(s.httpToken, "from-the-file");
  assert.equal(s.persistdb, "/var/lib/jitsu/state.db");
  assert.deepEqual([s.maxStarting, s.maxRunning, s.summonRate], [4, 12, 2.5]);
  assert.deepEqual(s.configs, ["dns=cli.example.org,ip=10.0.0.9"]);
  assert.equal(s.file?.path, file);
  assert.deepEqual(
    s.file?.vms.map((v) => v.label),
    ["www"],
  );

  // A bad value from the file is reported like the option's.
  await writeFile(file, "ttl: soon\n");
  assert.throws(
    () => parseArgs(["--config", file]),
    (err) =>
      err instanceof ConfigError &&
      err.message === `config file '${file}': option '--ttl': expected an integer, got 'soon'`,
  );
  // The same option given badly on the command line is the command line's error.
  assert.throws(
    () => parseArgs(["--config", file, "-t", "later"]),
    (err) => err instanceof UsageError && /'later'/.test(err.message),
  );
  await writeFile(file, "max-running: lots\n");
  assert.throws(
    () => parseArgs(["--config", file]),
    (err) =>
      err instanceof ConfigError &&
      err.message.startsWith(`config file '${file}': option '--max-running': expected a whole number`),
  );
  await writeFile(file, "stop-on-exit: maybe\n");
  assert.throws(
    () => parseArgs(["--config", file]),
    (err) => err instanceof ConfigError && /option 'stop-on-exit': expected true\/false/.test(err.message),
  );
});

test("--config: allow-recursion and allow-summon as YAML lists or comma-separated text", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "jitsu-cli-config-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "jitsu.yaml");
  await writeFile(
    file,
    "allow-recursion:\n  - localhost\n  - 192.0.2.0/24\n  - '2001:db8::/32'\nallow-summon: localnets, ::1\n",
  );
  const s = parseArgs(["--config", file]);
  assert.deepEqual(s.allowRecursion, ["localhost", "192.0.2.0/24", "2001:db8::/32"]);
  assert.deepEqual(s.allowSummon, ["localnets", "::1/128"]);
  // The command line wins.
  assert.deepEqual(parseArgs(["--config", file, "--allow-recursion", "any"]).allowRecursion, ["any"]);
  const json = join(dir, "jitsu.json");
  await writeFile(json, JSON.stringify({ "allow-recursion": ["10.0.0.0/8", "localnets"] }));
  assert.deepEqual(parseArgs(["--config", json]).allowRecursion, ["10.0.0.0/8", "localnets"]);

  // A bad entry names the file, the option and the entry.
  await writeFile(file, "allow-recursion: [localhost, 10.0.0.1/8]\n");
  assert.throws(
    () => parseArgs(["--config", file]),
    (err) =>
      err instanceof ConfigError &&
      err.message.startsWith(`config file '${file}': option '--allow-recursion': entry '10.0.0.1/8': `),
  );
  await writeFile(file, "allow-summon: []\n");
  assert.throws(
    () => parseArgs(["--config", file]),
    (err) => err instanceof ConfigError && /option 'allow-summon': empty list/.test(err.message),
  );
  await writeFile(file, "allow-summon: [{a: 1}]\n");
  assert.throws(
    () => parseArgs(["--config", file]),
    (err) =>
      err instanceof ConfigError &&
      /option 'allow-summon': item 1: expected one value, got a map/.test(err.message),
  );
  // Other options still take one value.
  await writeFile(file, "ttl: [60, 90]\n");
  assert.throws(
    () => parseArgs(["--config", file]),
    (err) =>
      err instanceof ConfigError && /option 'ttl': expected a single value, got a list/.test(err.message),
  );
});
