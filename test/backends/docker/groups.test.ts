/**
 * Groups of containers (issue 19) through the built CLI with `-x docker`
 * against a real Podman service, queried with real dig: a group of three
 * (web after= db, and a worker) started by one query for web, db before web
 * (web's container starts only once db's ready= probe passed), the answer
 * only when all three serve; the three stopped together when idle, web before
 * db (-m shutdown); a member that cannot start (its command exits at once) answers
 * SERVFAIL with one log line naming the group and the member, and the member
 * that starts after it is not started.
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { dig, freePort, startCli, tempDir, waitFor, type CliProcess } from "../../support/index.js";
import { IMAGE, PodmanService } from "../../support/podman.js";

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port, timeout: 1000 }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
    s.on("timeout", () => {
      s.destroy();
      resolve(false);
    });
  });
}

/** A container's command serving GET / on a 127.0.0.1 port. */
const httpd = (port: number): string => `httpd -f -p 127.0.0.1:${port} -h /www`;

describe("groups of containers (-x docker, a real Podman service)", { timeout: 300_000 }, () => {
  let podman: PodmanService;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let cli: CliProcess | undefined;
  let port = 0;
  const ports = { db: 0, web: 0, worker: 0, ghost: 0 };

  before(async () => {
    dir = await tempDir();
    podman = await PodmanService.start();
    for (const name of ["db", "web", "worker"] as const) ports[name] = await freePort();
    // db takes a second to listen: web must not be started before it does.
    await podman.must([
      "create",
      "--name",
      "db",
      "--network",
      "host",
      IMAGE,
      "sh",
      "-c",
      `sleep 1; exec ${httpd(ports.db)}`,
    ]);
    for (const name of ["web", "worker"] as const) {
      await podman.must([
        "create",
        "--name",
        name,
        "--network",
        "host",
        IMAGE,
        ...httpd(ports[name]).split(" "),
      ]);
    }
    await podman.must(["create", "--name", "front", "--network", "host", IMAGE, "sleep", "600"]);
    ports.ghost = await freePort();
    await podman.must(["create", "--name", "ghost", "--network", "host", IMAGE, "false"]);
    port = await freePort();
    cli = startCli([
      ...["-x", "docker", "-c", podman.uri, "-l", String(port), "-f", "0.0.0.0", "-t", "1", "-d", "0"],
      ...["-m", "shutdown", "--start-timeout", "20", "--state-dir", dir.path],
      `dns=db.shop.test,name=db,group=shop,stop_timeout=1,ready=tcp:127.0.0.1:${ports.db}`,
      `dns=web.shop.test,name=web,group=shop,after=db,stop_timeout=1,ready=http://127.0.0.1:${ports.web}/`,
      `dns=worker.shop.test,name=worker,group=shop,stop_timeout=1,ready=tcp:127.0.0.1:${ports.worker}`,
      // ghost's command exits at once: it never passes its probe.
      `dns=ghost.broken.test,name=ghost,group=broken,ready=tcp:127.0.0.1:${ports.ghost}`,
      "dns=front.broken.test,name=front,group=broken,after=ghost,stop_timeout=1",
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    await podman?.destroy();
    await dir?.remove();
  });

  const startedAt = async (name: string): Promise<number> =>
    Date.parse(await podman.must(["inspect", "--format", "{{.State.StartedAt}}", name]));
  const finishedAt = async (name: string): Promise<number> =>
    Date.parse(await podman.must(["inspect", "--format", "{{.State.FinishedAt}}", name]));

  it("one query for web starts all three, web after db is ready, and is answered when all serve", async () => {
    const r = await dig(port, ["web.shop.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.deepEqual(
      r.answers.map((a) => a.data),
      ["127.0.0.1"],
    );
    // Answered only once every member serves.
    for (const name of ["db", "web", "worker"] as const) {
      assert.equal(await podman.status(name), "running", name);
      assert.equal(await listening(ports[name]), true, `${name} serves`);
    }
    // db sleeps 1 s before listening, and web starts only after db's probe passed.
    const [db, web, worker] = [await startedAt("db"), await startedAt("web"), await startedAt("worker")];
    assert.ok(web - db >= 900, `web started ${web - db} ms after db`);
    assert.ok(worker - db < 900, `worker started with db (${worker - db} ms apart), not after it`);
    assert.equal(await podman.status("front"), "created", "another group is left alone");
  });

  it("the group stops together when idle, web before db", async () => {
    await waitFor(
      async () => {
        for (const name of ["db", "web", "worker"])
          if ((await podman.status(name)) !== "exited") return false;
        return true;
      },
      60_000,
      "the whole group stopped",
    );
    assert.ok((await finishedAt("web")) <= (await finishedAt("db")), "web stopped before db");
    assert.match(cli!.output(), /Stopping group 'shop' \(shutdown\)/);
    // A query for the worker alone brings the whole group back.
    const r = await dig(port, ["worker.shop.test", "A"]);
    assert.equal(r.status, "NOERROR");
    for (const name of ["db", "web", "worker"]) assert.equal(await podman.status(name), "running", name);
  });

  it("a member that cannot start fails the query with one clear line; its dependant is not started", async () => {
    const r = await dig(port, ["front.broken.test", "A"]);
    assert.equal(r.status, "SERVFAIL");
    assert.match(cli!.output(), /Group 'broken' is not ready: VM 'ghost' could not be started: /);
    assert.equal(await podman.status("front"), "created", "front starts after ghost: never started");
  });
});
