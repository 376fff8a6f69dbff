/**
 * Groups through the built CLI with the process backend and real dig: three
 * processes (web after= db, and a worker) that stamp their own start and
 * ready times. One query starts all three, web only once db is ready, and is
 * answered when all are; they stop together with -m shutdown (web before
 * db); a member that fails to start answers SERVFAIL with one clear log line.
 * Also with --workers 2: queries for one member answered by a worker keep
 * the whole group up.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { httpCall } from "../support/http.js";
import {
  DEMO_SERVICE,
  dig,
  freePort,
  localArgs,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
} from "../support/index.js";

interface Stamps {
  start: number;
  ready: number | undefined;
}

function readStamps(dir: string, name: string): Stamps | null {
  const file = join(dir, name);
  if (!existsSync(file)) return null;
  const text = readFileSync(file, "utf8");
  const ready = /^ready (\d+)$/m.exec(text)?.[1];
  return {
    start: Number(/^start (\d+)$/m.exec(text)![1]),
    ready: ready === undefined ? undefined : Number(ready),
  };
}

/** jitsu's JSON log messages, in order. */
function messages(cli: CliProcess): string[] {
  return cli
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => (JSON.parse(l) as { msg: string }).msg);
}

interface StatusBody {
  groups: { name: string; state: string; members: string[]; lastError: string | null }[];
  vms: { label: string; state: string; group: string | null; after: string[] }[];
}

/** /status polled every 200 ms until `check` holds. */
function until(http: number, check: (body: StatusBody) => boolean, ms: number, what: string): Promise<void> {
  return waitFor(
    async () => {
      await new Promise((r) => setTimeout(r, 200));
      return check(await status(http));
    },
    ms,
    what,
  );
}

async function status(http: number): Promise<StatusBody> {
  const res = await httpCall(http, "GET", "/status");
  assert.equal(res.status, 200, res.body);
  return JSON.parse(res.body) as StatusBody;
}

/** The three members: db boots in 1 s, web (after db) in 0.3 s, worker in 1 s. */
async function shop(stamps: string, dbExec?: string): Promise<string[]> {
  const [db, web, worker] = [await freePort(), await freePort(), await freePort()];
  const exec = (name: string, port: number, boot: number): string =>
    `exec='${process.execPath}' '${DEMO_SERVICE}' 127.0.0.1 ${port} ${name} ${boot} '${join(stamps, name)}'`;
  return [
    `name=db,dns=db.shop.test,ip=127.0.0.1,group=shop,${dbExec ?? exec("db", db, 1)},ready=tcp:127.0.0.1:${db}`,
    `name=web,dns=web.shop.test,ip=127.0.0.2,group=shop,after=db,${exec("web", web, 0.3)},ready=tcp:127.0.0.1:${web}`,
    `name=worker,dns=worker.shop.test,ip=127.0.0.3,group=shop,${exec("worker", worker, 1)},ready=tcp:127.0.0.1:${worker}`,
  ];
}

async function startJitsu(
  t: TestContext,
  args: readonly string[],
  configs: readonly string[],
): Promise<{ cli: CliProcess; port: number; http: number }> {
  const dir = await tempDir();
  const port = await freePort();
  const http = await freePort();
  const cli = startCli([
    ...localArgs(port, dir.path),
    ...["--log-format", "json", "--http", `127.0.0.1:${http}`, "--start-timeout", "20"],
    ...args,
    ...configs,
  ]);
  t.after(async () => {
    await cli.stop();
    await dir.remove();
  });
  await cli.waitFor(/Serving \/status/, 30_000);
  return { cli, port, http };
}

describe("groups (e2e, process backend)", () => {
  it("one query starts all three (web after db), is answered when all are ready; they stop together, web before db", async (t) => {
    const stamps = await tempDir("jitsu-group-stamps-");
    t.after(() => stamps.remove());
    const { cli, port, http } = await startJitsu(t, ["-t", "1", "-m", "shutdown"], await shop(stamps.path));

    const before = await status(http);
    assert.deepEqual(
      before.groups.map((g) => [g.name, g.state, g.members]),
      [["shop", "off", ["db", "worker", "web"]]],
    );
    assert.deepEqual(
      before.vms.map((v) => [v.label, v.group, v.after]),
      [
        ["db", "shop", []],
        ["web", "shop", ["db"]],
        ["worker", "shop", []],
      ],
    );

    const asked = Date.now();
    const answer = await dig(port, ["web.shop.test", "A"]);
    const answered = Date.now();
    assert.equal(answer.status, "NOERROR", answer.raw);
    assert.deepEqual(
      answer.answers.map((a) => a.data),
      ["127.0.0.2"],
    );

    const db = readStamps(stamps.path, "db")!;
    const web = readStamps(stamps.path, "web")!;
    const worker = readStamps(stamps.path, "worker")!;
    // db and worker in parallel; web only once db was ready; the answer after all three.
    assert.ok(worker.start < db.ready!, `worker started at ${worker.start}, db ready at ${db.ready}`);
    assert.ok(Math.abs(worker.start - db.start) < 900, `db ${db.start}, worker ${worker.start}`);
    assert.ok(web.start >= db.ready!, `web started at ${web.start}, before db was ready at ${db.ready}`);
    for (const s of [db, web, worker]) assert.ok(answered >= s.ready!, "answered before a member was ready");
    assert.ok(answered - asked >= 1300, `answered after ${answered - asked} ms`);
    assert.ok(messages(cli).some((m) => /^Group 'shop' is ready after \d+ ms \(db, worker, web\)$/.test(m)));
    const up = await status(http);
    assert.equal(up.groups[0]!.state, "ready");

    // Ready members are answered at once.
    const warm = await dig(port, ["db.shop.test", "A"]);
    assert.deepEqual(
      warm.answers.map((a) => a.data),
      ["127.0.0.1"],
    );

    // 2 x TTL (2 s) after the last query, at a reaper pass (every 5 s): all three, web before db.
    await until(http, (b) => b.vms.every((v) => v.state === "off"), 20_000, "the group to stop");
    const log = messages(cli);
    assert.ok(
      log.some((m) =>
        /^Stopping group 'shop' \(shutdown\) after \d+ s idle: worker and web, then db$/.test(m),
      ),
      log.join("\n"),
    );
    const webStopped = log.findIndex((m) => m.startsWith("VM 'web' stopped (shutdown)"));
    const dbStopping = log.findIndex((m) => m.startsWith("Stopping VM 'db' (shutdown) with group 'shop'"));
    assert.ok(webStopped >= 0 && dbStopping > webStopped, log.join("\n"));
    assert.ok(log.some((m) => m.startsWith("Stopping VM 'worker' (shutdown) with group 'shop'")));
  });

  it("a member that fails to start answers SERVFAIL with a clear log line; the others stay as they are", async (t) => {
    const stamps = await tempDir("jitsu-group-stamps-");
    t.after(() => stamps.remove());
    // db's program exits at once (as a server that cannot open its data directory).
    const { cli, port, http } = await startJitsu(
      t,
      ["-t", "60"],
      await shop(stamps.path, "exec=sh -c 'echo db: cannot open /var/lib/db >&2; exit 3'"),
    );
    const answer = await dig(port, ["web.shop.test", "A"]);
    assert.equal(answer.status, "SERVFAIL", answer.raw);
    await cli.waitFor(/Group 'shop' is not ready/, 10_000);
    const line = messages(cli).find((m) => m.startsWith("Group 'shop' is not ready"))!;
    assert.match(
      line,
      /^Group 'shop' is not ready: VM 'db' could not be started: .+; worker is (starting|ready); web was not started \(it starts after db\) \(the members up stay up\)$/,
    );
    // web was never started; worker (in parallel) runs and stays up.
    assert.equal(readStamps(stamps.path, "web"), null);
    await until(http, (b) => b.vms.find((v) => v.label === "worker")?.state === "ready", 10_000, "worker");
    const body = await status(http);
    assert.equal(body.groups[0]!.state, "failed");
    assert.match(body.groups[0]!.lastError ?? "", /^VM 'db' could not be started: /);
    assert.equal(body.vms.find((v) => v.label === "db")?.state, "failed");
    // Within db's back-off, a query for another member fails at once, starting nothing.
    const again = await dig(port, ["worker.shop.test", "A"]);
    assert.equal(again.status, "SERVFAIL");
  });

  it("--workers 2: queries for one member, answered by the workers, keep the whole group up", async (t) => {
    const stamps = await tempDir("jitsu-group-stamps-");
    t.after(() => stamps.remove());
    const { port, http } = await startJitsu(t, ["-t", "2", "--workers", "2"], await shop(stamps.path));
    assert.equal((await dig(port, ["web.shop.test", "A"])).status, "NOERROR");
    // worker only, every second for 9 s (past 2 x TTL and a reaper pass): db and web stay up.
    for (let i = 0; i < 9; i++) {
      const a = await dig(port, ["worker.shop.test", "A"]);
      assert.deepEqual(
        a.answers.map((r) => r.data),
        ["127.0.0.3"],
      );
      await new Promise((r) => setTimeout(r, 1000));
    }
    const body = await status(http);
    assert.deepEqual(
      body.vms.map((v) => v.state),
      ["ready", "ready", "ready"],
      JSON.stringify(body.vms),
    );
    // Then nobody asks: the whole group stops.
    await until(http, (b) => b.groups[0]!.state === "off", 20_000, "the group to stop");
  });
});
