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
