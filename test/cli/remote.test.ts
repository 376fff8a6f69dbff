/**
 * `jitsu status`, `jitsu start NAME`, `jitsu stop NAME` through the built CLI
 * against a running jitsu (process backend, --http with --http-token), and
 * their errors: nothing listening, token missing or wrong, an unknown VM.
 */
import assert from "node:assert/strict";
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
  type CliProcess,
} from "../support/index.js";
import { getStatus } from "../support/http.js";

const TOKEN = "opscli-secret";

describe("jitsu status, start and stop (e2e)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess;
  let dns: number;
  let http: number;
  const idle = "sleep 1000";
  const jitsu = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      void import("node:child_process").then(({ execFile }) =>
        execFile(
          process.execPath,
          [CLI, ...args],
          {
            env: { ...process.env, NO_COLOR: "", JITSU_HTTP_TOKEN: "", JITSU_HTTP: "", ...env },
            timeout: 60_000,
          },
          (err, stdout, stderr) =>
            resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stdout, stderr }),
        ),
      );
    });

  before(async () => {
    dir = await tempDir("jitsu-opscli-");
    dns = await freePort();
    http = await freePort();
    cli = startCli([
      ...localArgs(dns, dir.path),
      "--http",
      `127.0.0.1:${http}`,
      "--http-token",
      TOKEN,
      `dns=www.jitsu.test,ip=127.0.0.1,name=www,exec=${idle}`,
      `dns=db.jitsu.test,ip=127.0.0.2,name=db,exec=${idle}`,
    ]);
    await cli.waitFor(/Serving \/status/);
  });

  after(async () => {
    await cli.stop("SIGTERM");
    killVmGroups(cli.output());
    await dir.remove();
  });

  it("status prints one row per VM with its state, and --json the /status document", async () => {
    const res = await jitsu(["status", "--http", `127.0.0.1:${http}`]);
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.trimEnd().split("\n");
    assert.match(lines[0]!, /^jitsu \S+, up \d+s: 2 VMs, 2 off$/);
    assert.match(
      lines[1]!,
      /^NAME\s+STATE\s+FOR\s+DNS\s+IP\s+STARTS\s+REQUESTS\s+LAST REQUEST\s+IDLE STOP\s+STOP\s+ERROR$/,
    );
    assert.match(
      lines[2]!,
      /^www\s+off\s+\d+s\s+www\.jitsu\.test\s+127\.0\.0\.1\s+0\s+0\s+never\s+-\s+destroy$/,
    );
    assert.match(lines[3]!, /^db\s+off\s+/);
    // Not a terminal: no colour codes.
    assert.ok(!res.stdout.includes("\x1b["), "colour codes in piped output");

    const json = await jitsu(["status", "--http", `127.0.0.1:${http}`, "--json", "db.jitsu.test"]);
    assert.equal(json.code, 0, json.stderr);
    const doc = JSON.parse(json.stdout) as { vms: { label: string }[]; version: string };
    assert.deepEqual(
      doc.vms.map((v) => v.label),
      ["db"],
    );
    assert.equal(typeof doc.version, "string");
  });

  it("start and stop change the VM's state, as status and dig see it", async () => {
    const started = await jitsu(["start", "--http", `127.0.0.1:${http}`, "--http-token", TOKEN, "www"]);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stdout, `VM 'www' is ready (http://127.0.0.1:${http})\n`);
    assert.equal((await getStatus(http)).get("www")?.state, "ready");
    const row = await jitsu(["status", "www"], { JITSU_HTTP: `127.0.0.1:${http}` });
    assert.match(
      row.stdout,
      /\nwww\s+ready\s+\d+s\s+www\.jitsu\.test\s+127\.0\.0\.1\s+1\s+0\s+never\s+in \d+[smh]\s+destroy/,
    );
    assert.ok(!row.stdout.includes("\ndb "), "status NAME shows only that VM");
    assert.deepEqual(
      (await dig(dns, ["www.jitsu.test", "A"])).answers.map((a) => a.data),
      ["127.0.0.1"],
    );

    // The token from the environment, the VM by a DNS name.
    const stopped = await jitsu(["stop", "--http", `127.0.0.1:${http}`, "www.jitsu.test"], {
      JITSU_HTTP_TOKEN: TOKEN,
    });
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout, `VM 'www' is off (http://127.0.0.1:${http})\n`);
    assert.equal((await getStatus(http)).get("www")?.state, "off");
  });

  it("a wrong or missing token is one clear line, and nothing changes", async () => {
    const wrong = await jitsu(["start", "--http", `127.0.0.1:${http}`, "--http-token", "nope", "db"]);
    assert.equal(wrong.code, 1);
    assert.match(
      wrong.stderr,
      /^jitsu start: the jitsu at http:\/\/127\.0\.0\.1:\d+ refused the token \(wrong token\)/,
    );
    assert.equal(wrong.stderr.trimEnd().split("\n").length, 1);
    const missing = await jitsu(["start", "--http", `127.0.0.1:${http}`, "db"]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /needs the admin token: give --http-token TOKEN or set JITSU_HTTP_TOKEN/);
    assert.equal((await getStatus(http)).get("db")?.state, "off");
  });

  it("an unknown VM gets the closest name", async () => {
    const res = await jitsu(["stop", "--http", `127.0.0.1:${http}`, "--http-token", TOKEN, "wwww"]);
    assert.equal(res.code, 1);
    assert.equal(res.stderr, "jitsu stop: no VM 'wwww' in that jitsu; did you mean 'www'?\n");
    const status = await jitsu(["status", "--http", `127.0.0.1:${http}`, "dbb.jitsu.test"]);
    assert.equal(status.code, 1);
    assert.match(status.stderr, /no VM 'dbb\.jitsu\.test' in that jitsu; did you mean 'db\.jitsu\.test'\?/);
  });

  it("nothing listening: names the address and how to point at another", async () => {
    const port = await freePort();
    const res = await jitsu(["status", "--http", `127.0.0.1:${port}`]);
    assert.equal(res.code, 1);
    assert.equal(res.stderr.trimEnd().split("\n").length, 1);
    assert.match(
      res.stderr,
      new RegExp(
        `^jitsu status: cannot reach jitsu at http://127\\.0\\.0\\.1:${port} \\(connection refused, from --http\\): is jitsu running with --http 127\\.0\\.0\\.1:${port}\\? If it listens elsewhere, point at it with --http ADDR:PORT`,
      ),
    );
    // A port where something else answers (jitsu's DNS over TCP is no HTTP server).
    const other = await jitsu(["status", "--http", `127.0.0.1:${dns}`, "--timeout", "1"]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /no answer from .* within 1 s: is that jitsu's --http address/);
  });

  it("subcommands come first; the seed command line is unchanged", async () => {
    const res = await run(process.execPath, [CLI, "-x", "process", "-f", "0.0.0.0", "status"]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /'status' is a command, and commands come first: jitsu status/);
    const help = await run(process.execPath, [CLI, "status", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: jitsu status \[--http ADDR:PORT\] \[--json\] \[NAME\.\.\.\]/);
  });
});
