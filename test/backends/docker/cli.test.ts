/**
 * The built CLI with `-x docker` against a real Podman service that the test
 * starts (test/support/podman.ts), queried with real dig: an existing
 * container started by a query and answered after its ready= probe; idle
 * stops with destroy, shutdown and pause (and unpause by the next query); a
 * container created from `image` on the first summon and reused; containers
 * killed and removed with `podman` behind jitsu's back, noticed through the
 * event stream; the service restarted while jitsu runs; the error messages.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { get } from "node:http";
import { after, before, describe, it } from "node:test";
import { CLI, dig, freePort, startCli, tempDir, type CliProcess } from "../../support/index.js";
import { IMAGE, PodmanService } from "../../support/podman.js";

function httpOk(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get({ host: "127.0.0.1", port, path: "/", timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
  });
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

const httpd = (port: number): string => `httpd -f -p 127.0.0.1:${port} -h /www`;

describe("jitsu -x docker (e2e with dig and a real Podman service)", { timeout: 300_000 }, () => {
  let podman: PodmanService;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const clis: CliProcess[] = [];

  before(async () => {
    dir = await tempDir();
    podman = await PodmanService.start();
  });

  after(async () => {
    for (const c of clis) await c.stop();
    await podman?.destroy();
    await dir?.remove();
  });

  async function jitsu(mode: string, ...vms: string[]): Promise<{ cli: CliProcess; port: number }> {
    const port = await freePort();
    const cli = startCli([
      ...["-x", "docker", "-c", podman.uri, "-l", String(port), "-f", "0.0.0.0", "-t", "1", "-d", "0"],
      ...["-m", mode, "--state-dir", dir.path, ...vms],
    ]);
    clis.push(cli);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
    return { cli, port };
  }

  /** Runs the CLI to its exit (a start-up error); its output. */
  function failingRun(args: readonly string[], asUser?: number): { code: number | null; out: string } {
    const argv = [process.execPath, CLI, "-l", "0", "-f", "0.0.0.0", "--state-dir", dir.path, ...args];
    const cmd =
      asUser === undefined
        ? argv
        : ["setpriv", `--reuid=${asUser}`, `--regid=${asUser}`, "--clear-groups", ...argv];
    const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8", timeout: 30_000 });
    return { code: r.status, out: r.stdout + r.stderr };
  }

  let destroyJitsu: { cli: CliProcess; port: number };
  let webPort = 0;
  let madePort = 0;

  it("starts an existing container on a query; the answer comes after its ready= probe", async () => {
    webPort = await freePort();
    madePort = await freePort();
    await podman.must(["create", "--name", "web", "--network", "host", IMAGE, ...httpd(webPort).split(" ")]);
    destroyJitsu = await jitsu(
      "destroy",
      `dns=web.jitsu.test,name=web,ready=http://127.0.0.1:${webPort}/`,
      `dns=made.jitsu.test,name=made,image=${IMAGE},cmd=${httpd(madePort)},network=host,ready=tcp:127.0.0.1:${madePort}`,
    );
    assert.match(destroyJitsu.cli.output(), /docker: unix:\/\/\S+podman\.sock is Podman \d/);
    assert.equal(await podman.status("web"), "created");
    assert.equal(await httpOk(webPort), false);
    const r = await dig(destroyJitsu.port, ["web.jitsu.test", "A"]);
    // The probe passed before the answer: the container serves at once.
    const served = await httpOk(webPort);
    assert.equal(r.status, "NOERROR");
    assert.deepEqual(
      r.answers.map((a) => a.data),
      ["127.0.0.1"],
      "network=host: the host's address",
    );
    assert.equal(served, true);
    assert.equal(await podman.status("web"), "running");
  });

  it("-m destroy: kills the idle container (2 x TTL)", async () => {
    await until("web killed when idle", async () => (await podman.status("web")) === "exited");
    assert.match(destroyJitsu.cli.output(), /Stopping VM 'web' \(destroy\) after \d+ s idle/);
    // A query starts it again.
    const r = await dig(destroyJitsu.port, ["web.jitsu.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.equal(await podman.status("web"), "running");
  });

  let madeId = "";
  it("creates a container from image on the first summon, labelled, and reuses it after", async () => {
    assert.equal(await podman.status("made"), "missing");
    const r = await dig(destroyJitsu.port, ["made.jitsu.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.equal(await podman.status("made"), "running");
    assert.equal(await httpOk(madePort), true);
    madeId = await podman.must(["inspect", "--format", "{{.Id}}", "made"]);
    assert.equal(
      await podman.must(["inspect", "--format", '{{index .Config.Labels "org.jitsu.created-for"}}', "made"]),
      "made",
    );
    assert.match(
      destroyJitsu.cli.output(),
      /created container 'made' from localhost\/jitsu-busybox for VM 'made'/,
    );
    await until("made killed when idle", async () => (await podman.status("made")) === "exited");
    const again = await dig(destroyJitsu.port, ["made.jitsu.test", "A"]);
    assert.equal(again.status, "NOERROR");
    assert.equal(await podman.must(["inspect", "--format", "{{.Id}}", "made"]), madeId, "the same container");
    assert.equal((destroyJitsu.cli.output().match(/created container 'made'/g) ?? []).length, 1);
  });

  // Changes behind jitsu's back, on a jitsu whose reaper stays out of the way (TTL 600 s, and a
  // pass every 600 s: its re-read, every 5 s by default, would notice a change first now and then,
  // and say no reason): what these tests see comes from the event stream alone.
  let watch: { cli: CliProcess; port: number };
  let watchedPort = 0;

  it("notices at once a container killed with podman behind its back", async () => {
    watchedPort = await freePort();
    const freshPort = await freePort();
    await podman.must([
      "create",
      "--name",
      "watched",
      "--network",
      "host",
      IMAGE,
      ...httpd(watchedPort).split(" "),
    ]);
    const port = await freePort();
    const cli = startCli([
      ...["-x", "docker", "-c", podman.uri, "-l", String(port), "-f", "0.0.0.0", "-t", "600", "-d", "0"],
      ...[
        "--reaper-interval",
        "600",
        "--state-dir",
        dir.path,
        `dns=watched.jitsu.test,name=watched,ready=http://127.0.0.1:${watchedPort}/`,
      ],
      // connect= naming -c's engine shares its one connection (one event stream: src/backends/hosts).
      `dns=fresh.jitsu.test,name=fresh,image=${IMAGE},cmd=${httpd(freshPort)},network=host,ready=tcp:127.0.0.1:${freshPort},connect=${podman.uri}`,
    ]);
    clis.push(cli);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
    assert.equal((cli.output().match(/ is Podman \d/g) ?? []).length, 1, "one connection to the engine");
    watch = { cli, port };
    assert.equal((await dig(port, ["watched.jitsu.test", "A"])).status, "NOERROR");
    const before = cli.output().length;
    await podman.must(["kill", "watched"]);
    // The reaper would say no reason (and is 600 s away): the event stream says why, within a moment.
    await until(
      "jitsu to notice the kill",
      () => /VM 'watched' is off \(died with exit code \d+\)/.test(cli.output().slice(before)),
      4000,
    );
    const r = await dig(port, ["watched.jitsu.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.equal(await podman.status("watched"), "running");
    // Paused behind its back: noticed, and the next query unpauses it.
    const pausedFrom = cli.output().length;
    await podman.must(["pause", "watched"]);
    await until(
      "jitsu to notice the pause",
      () => /VM 'watched' is paused \(pause\)/.test(cli.output().slice(pausedFrom)),
      4000,
    );
    assert.equal((await dig(port, ["watched.jitsu.test", "A"])).status, "NOERROR");
    assert.equal(await podman.status("watched"), "running");
  });

  it("notices a container removed behind its back, and creates it again on the next query", async () => {
    const { cli, port } = watch;
    assert.equal((await dig(port, ["fresh.jitsu.test", "A"])).status, "NOERROR");
    const id = await podman.must(["inspect", "--format", "{{.Id}}", "fresh"]);
    const before = cli.output().length;
    await podman.must(["rm", "--force", "--time", "0", "fresh"]);
    // `rm --force` sends stop, died and remove; the first re-read to find the container down
    // reports it: removed once it is gone (the usual case), else stopped or died.
    await until(
      "jitsu to notice the removal",
      () =>
        /VM 'fresh' is off \((removed|stopped|died with exit code \d+)\)/.test(cli.output().slice(before)),
      4000,
    );
    const r = await dig(port, ["fresh.jitsu.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.equal(await podman.status("fresh"), "running");
    assert.notEqual(await podman.must(["inspect", "--format", "{{.Id}}", "fresh"]), id);
  });

  it("follows the engine through a restart of the service (events reconnect)", async () => {
    const { cli, port } = watch;
    await podman.stopService();
    await cli.waitFor(/lost the event stream of unix:\/\/\S+ \([^)]*\); reconnecting/, 10_000);
    await podman.startService();
    await cli.waitFor(/docker: event stream of unix:\/\/\S+ is back/, 20_000);
    const before = cli.output().length;
    await podman.must(["kill", "watched"]);
    // From the event, or (killed in the moment before the engine follows its log again) from
    // the second read of every container a second after the reconnect.
    await until(
      "jitsu to notice a kill after the reconnect",
      () =>
        /VM 'watched' is off \((died with exit code \d+|seen after the engine reconnected)\)/.test(
          cli.output().slice(before),
        ),
      4000,
    );
    const r = await dig(port, ["watched.jitsu.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.equal(await httpOk(watchedPort), true);
    await cli.stop();
    await destroyJitsu.cli.stop();
  });

  it("-m shutdown: stops the idle container (SIGTERM, SIGKILL after stop_timeout)", async () => {
    const port = await freePort();
    await podman.must(["create", "--name", "calm", "--network", "host", IMAGE, ...httpd(port).split(" ")]);
    const { cli, port: dns } = await jitsu(
      "shutdown",
      `dns=calm.jitsu.test,name=calm,stop_timeout=1,ready=http://127.0.0.1:${port}/`,
    );
    const r = await dig(dns, ["calm.jitsu.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.equal(await httpOk(port), true);
    await until("calm stopped when idle", async () => (await podman.status("calm")) === "exited");
    assert.match(cli.output(), /Stopping VM 'calm' \(shutdown\) after \d+ s idle/);
    await cli.stop();
  });

  it("-m pause: pauses the idle container, and a query unpauses it", async () => {
    const port = await freePort();
    await podman.must(["create", "--name", "nap", "--network", "host", IMAGE, ...httpd(port).split(" ")]);
    const { cli, port: dns } = await jitsu(
      "pause",
      `dns=nap.jitsu.test,name=nap,ready=http://127.0.0.1:${port}/`,
    );
    assert.equal((await dig(dns, ["nap.jitsu.test", "A"])).status, "NOERROR");
    await until("nap paused when idle", async () => (await podman.status("nap")) === "paused");
    assert.equal(await httpOk(port), false, "a paused container does not answer");
    const r = await dig(dns, ["nap.jitsu.test", "A"]);
    assert.equal(r.status, "NOERROR");
    assert.equal(await podman.status("nap"), "running");
    assert.equal(await httpOk(port), true);
    await cli.stop();
  });

  it("errors are one line naming the URI and the VM", async () => {
    const uri = podman.uri.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const noContainer = failingRun(["-x", "docker", "-c", podman.uri, "dns=g.jitsu.test,name=ghost"]);
    assert.equal(noContainer.code, 1);
    assert.match(
      noContainer.out,
      new RegExp(`docker VM 'ghost': no such container 'ghost' at ${uri} \\(create it first`),
    );

    const noImage = failingRun([
      "-x",
      "docker",
      "-c",
      podman.uri,
      "dns=i.jitsu.test,name=img,image=localhost/nope",
    ]);
    assert.equal(noImage.code, 1);
    assert.match(
      noImage.out,
      new RegExp(`docker VM 'img': no such image 'localhost/nope' at ${uri} \\(pull or build it`),
    );

    const noEngine = failingRun([
      "-x",
      "docker",
      "-c",
      `unix://${podman.dir}/none.sock`,
      "dns=n.jitsu.test,name=web",
    ]);
    assert.equal(noEngine.code, 1);
    assert.match(
      noEngine.out,
      /docker: cannot connect to unix:\/\/\S+\/none\.sock: no socket at \S+none\.sock \(is the engine running\?/,
    );

    // DOCKER_HOST when -c is not given.
    const fromEnv = spawnSync(
      process.execPath,
      [CLI, "-l", "0", "-f", "0.0.0.0", "-x", "docker", "dns=g.jitsu.test,name=ghost"],
      {
        encoding: "utf8",
        timeout: 30_000,
        env: { ...process.env, DOCKER_HOST: podman.uri },
      },
    );
    assert.match(fromEnv.stdout + fromEnv.stderr, new RegExp(`no such container 'ghost' at ${uri}`));

    if (process.getuid?.() === 0) {
      const denied = failingRun(["-x", "docker", "-c", podman.uri, "dns=w.jitsu.test,name=web"], 65534);
      assert.equal(denied.code, 1);
      assert.match(
        denied.out,
        /docker: permission denied on the socket \S+podman\.sock \(run jitsu as root, or as a user in the socket's group/,
      );
    }

    // No CRIU here: -m suspend and save are refused at start-up, naming why.
    for (const mode of ["suspend", "save"]) {
      const r = failingRun(["-x", "docker", "-c", podman.uri, "-m", mode, "dns=w.jitsu.test,name=web"]);
      assert.equal(r.code, 2, r.out); // a UsageError, as every -m the backend cannot do
      assert.match(
        r.out,
        new RegExp(
          `option '--mode': the docker backend cannot ${mode} containers at ${uri} \\(Podman [\\d.]+\\): checkpoint and restore need CRIU`,
        ),
      );
    }

    // Keys: every problem at once, before connecting.
    const keys = failingRun([
      "-x",
      "docker",
      "-c",
      podman.uri,
      "dns=a.jitsu.test,name=a,image=x,publish=80",
      "dns=b.jitsu.test,name=b,env=NOPE,memory=1k,image=x",
      "dns=c.jitsu.test,name=c,cmd=sh",
    ]);
    assert.equal(keys.code, 1);
    assert.match(keys.out, /VM 'a', key 'publish': expected \[HOSTADDR:\]HOSTPORT:PORT/);
    assert.match(keys.out, /VM 'b', key 'env': expected NAME=VALUE, got 'NOPE'/);
    assert.match(keys.out, /VM 'b', key 'memory': 1024 bytes is below/);
    assert.match(keys.out, /VM 'c', key 'cmd': only applies to a container jitsu creates/);
  });
});
