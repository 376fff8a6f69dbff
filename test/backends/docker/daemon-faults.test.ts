/**
 * The Podman service failing under jitsu -x docker (issue 16), with real
 * signals to the real service process (test/support/podman.ts) and the built
 * CLI queried with dig:
 * - hung (SIGSTOP): a ready VM is still answered from memory, forwarding
 *   works, cold queries SERVFAIL by --start-timeout (not later), naming the
 *   backend, the URI and the VM; the call in flight is abandoned at the call
 *   timeout; after SIGCONT the next query starts the VM (no back-off, and
 *   not counted: jitsu runs with --max-failures 1);
 * - the backend's bound: with the service hung, at most `maxCalls` calls wait;
 *   the others fail at once as `unavailable`, the waiting ones at the call
 *   timeout, and the backend works again after SIGCONT;
 * - killed (SIGKILL) mid-start, after the OCI runtime started the container
 *   and before the service recorded it (the container's runtime is runc
 *   behind a wrapper that holds `runc start`'s return until the test has
 *   killed the service): SERVFAIL naming backend, URI and VM; while the
 *   service is down, queries fail fast and ready VMs are answered; once it is
 *   restarted, the next query succeeds without restarting jitsu and the
 *   container the dead service started is adopted, not started twice;
 * - no service at all (ENOENT, ECONNREFUSED): `unavailable` errors.
 */
import assert from "node:assert/strict";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { get } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { DockerBackend } from "../../../src/backends/docker/backend.js";
import { parseDockerTarget } from "../../../src/backends/docker/target.js";
import { systemClock } from "../../../src/clock/index.js";
import { dockerBackend } from "../../../src/backends/docker/index.js";
import { buildVmSpec, parseConfigString, type VmSpec } from "../../../src/config/index.js";
import { BackendError } from "../../../src/errors/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { startUpstream, type TestUpstream } from "../../doubles/dns-upstream.js";
import { answered, freePort, startCli, tempDir, timedDig, type CliProcess } from "../../support/index.js";
import { IMAGE, PodmanService } from "../../support/podman.js";

const TIMEOUT_S = 3;

function spec(config: string): VmSpec {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", {
    backendKeys: dockerBackend.keys,
    backendName: "docker",
  });
}

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

async function until(what: string, check: () => boolean, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe(
  "the Podman service hung or killed under jitsu -x docker (real service, real signals)",
  { timeout: 300_000 },
  () => {
    let podman: PodmanService;
    let upstream: TestUpstream;
    let cli: CliProcess | undefined;
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let port = 0;
    const ports: Record<string, number> = {};
    /** The wrapper runtime's files: one line per `runc start` it ran; the file that lets it return. */
    let starts = "";
    let release = "";

    const httpd = (name: string): string[] => ["httpd", "-f", "-p", `127.0.0.1:${ports[name]}`, "-h", "/www"];

    before(async () => {
      dir = await tempDir("jitsu-dockerfault-");
      podman = await PodmanService.start();
      for (const name of ["up", "cold", "cold2", "slow"]) ports[name] = await freePort();
      // runc, but a `start` does not return to the service before the test says so.
      starts = join(podman.dir, "runtime-starts");
      release = join(podman.dir, "runtime-release");
      const runtime = join(podman.dir, "held-runc");
      writeFileSync(
        runtime,
        [
          "#!/bin/sh",
          'case " $* " in',
          '*" start "*)',
          '  /usr/sbin/runc "$@"; rc=$?',
          `  echo start >> ${starts}`,
          `  i=0; while [ ! -e ${release} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done`,
          "  exit $rc;;",
          "esac",
          'exec /usr/sbin/runc "$@"',
          "",
        ].join("\n"),
      );
      chmodSync(runtime, 0o755);
      for (const name of ["up", "cold", "cold2"])
        await podman.must(["create", "--name", name, "--network", "host", IMAGE, ...httpd(name)]);
      await podman.must([
        "create",
        "--name",
        "slow",
        "--network",
        "host",
        "--runtime",
        runtime,
        IMAGE,
        ...httpd("slow"),
      ]);
      upstream = await startUpstream("answer");
      upstream.address = "192.0.2.53";
      port = await freePort();
      cli = startCli([
        ...[
          "-x",
          "docker",
          "-c",
          podman.uri,
          "-l",
          String(port),
          "-f",
          "127.0.0.1",
          "-p",
          String(upstream.port),
        ],
        ...["-t", "600", "-d", "0", "--start-timeout", String(TIMEOUT_S), "--max-failures", "1"],
        ...["--state-dir", dir.path],
        "dns=up.jitsu.test,name=up,ip=10.0.0.1",
        "dns=cold.jitsu.test,name=cold,ip=10.0.0.2",
        "dns=cold2.jitsu.test,name=cold2,ip=10.0.0.3",
        "dns=slow.jitsu.test,name=slow,ip=10.0.0.4",
      ]);
      await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
      // The first start may take longer than the timeout on a busy machine: ask again.
      await answered(port, "up.jitsu.test", 30_000);
    });

    after(async () => {
      try {
        podman?.signal("SIGCONT");
      } catch {
        // not running
      }
      if (release !== "") writeFileSync(release, "");
      await cli?.stop();
      await upstream?.close();
      await podman?.destroy();
      await dir?.remove();
    });

    it("hung: ready VMs answered from memory, forwarding works, cold queries SERVFAIL by the timeout; SIGCONT recovers", async () => {
      podman.signal("SIGSTOP");
      try {
        const warm = await timedDig(port, "up.jitsu.test");
        assert.equal(warm.data, "10.0.0.1", "a ready VM is answered from memory");
        assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
        const fwd = await timedDig(port, "elsewhere.example");
        assert.equal(fwd.data, "192.0.2.53", "forwarding does not go through the backend");
        const cold = await Promise.all([1, 2, 3].map((k) => timedDig(port, "cold.jitsu.test", k)));
        for (const c of cold) {
          assert.equal(c.status, "SERVFAIL");
          assert.ok(c.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${c.ms} ms, not by ${TIMEOUT_S} s + 1`);
        }
        assert.match(
          cli!.output(),
          /VM 'cold' could not be started: VM 'cold' was not ready after 3 s \(still waiting for the docker backend at unix:\/\/\S+podman\.sock to start it\)/,
        );
        // The call in flight is abandoned at the call timeout (its request aborted), named in the log.
        await cli!.waitFor(
          /docker VM 'cold': no answer from unix:\/\/\S+podman\.sock for 3 s while trying to read the state; the call was abandoned/,
          5000,
        );
      } finally {
        podman.signal("SIGCONT");
      }
      // Not counted (--max-failures 1 would refuse it), no back-off: the first queries after SIGCONT start it.
      const back = await answered(port, "cold.jitsu.test", 10_000);
      assert.equal(back.data, "10.0.0.2");
      assert.ok(back.tries <= 2, `answered after ${back.tries} queries`);
      assert.equal(await podman.status("cold"), "running");
      assert.equal(await httpOk(ports["cold"]!), true);
    });

    it("a hung service gathers at most maxCalls calls: the others fail at once, the rest at the call timeout; SIGCONT recovers", async () => {
      const backend = new DockerBackend(
        parseDockerTarget(podman.uri),
        { log: silentLogger(), clock: systemClock, settings: {}, callTimeoutMs: 2000 },
        { maxCalls: 4 },
      );
      await backend.connect();
      try {
        const ref = await backend.resolve(spec("dns=up.jitsu.test,name=up,ip=10.0.0.1"));
        podman.signal("SIGSTOP");
        const t0 = Date.now();
        const calls = Array.from({ length: 10 }, () =>
          backend.state(ref).then(
            (s) => ({ ok: s as string, ms: Date.now() - t0 }),
            (e: unknown) => ({ err: e, ms: Date.now() - t0 }),
          ),
        );
        const refused = await Promise.all(calls.slice(4));
        for (const r of refused) {
          assert.ok("err" in r && r.err instanceof BackendError, "refused with a BackendError");
          assert.equal(r.err.unavailable, true, "a daemon fault");
          assert.match(r.err.message, /4 calls to unix:\/\/\S+ are already waiting for an answer/);
          assert.ok(r.ms < 500, `refused after ${r.ms} ms`);
        }
        assert.equal(backend.calls.waiting, 4);
        assert.equal(backend.calls.stats.refused, 6);
        const waited = await Promise.all(calls.slice(0, 4));
        for (const r of waited) {
          assert.ok("err" in r && r.err instanceof BackendError);
          assert.equal(r.err.unavailable, true);
          assert.match(r.err.message, /no answer from unix:\/\/\S+ for 2 s while trying to read the state/);
          assert.ok(r.ms >= 1900 && r.ms < 3500, `abandoned after ${r.ms} ms`);
        }
        assert.equal(backend.calls.waiting, 0);
        podman.signal("SIGCONT");
        assert.equal(await backend.state(ref), "running", "the backend works again");
      } finally {
        podman.signal("SIGCONT");
        await backend.close();
      }
    });

    it("killed mid-start: SERVFAIL naming backend, URI and VM; once restarted, the container it had started is adopted, not started twice", async () => {
      const pending = timedDig(port, "slow.jitsu.test");
      await until("runc start of 'slow'", () => existsSync(starts));
      // The container's process runs (its httpd may take a moment to listen), the service has not answered.
      const t0 = Date.now();
      while (!(await httpOk(ports["slow"]!))) {
        assert.ok(Date.now() - t0 < 2000, "the container's process serves within 2 s of runc start");
        await new Promise((r) => setTimeout(r, 20));
      }
      await podman.killService();
      const failed = await pending;
      assert.equal(failed.status, "SERVFAIL");
      assert.ok(failed.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${failed.ms} ms`);
      await cli!.waitFor(/VM 'slow' could not be started: /, 5000);
      const line = cli!
        .output()
        .split("\n")
        .find((l) => l.includes("VM 'slow' could not be started"))!;
      assert.match(line, /docker/);
      assert.match(line, /unix:\/\/\S+podman\.sock/);
      assert.match(
        line,
        /lost the connection to unix:\S+ while trying to start the container|not ready after 3 s/,
      );
      writeFileSync(release, "");

      // While the service is down: ready VMs answered, cold ones fail fast, naming the URI.
      const warm = await timedDig(port, "up.jitsu.test");
      assert.equal(warm.data, "10.0.0.1");
      assert.ok(warm.ms < 1000, `answered in ${warm.ms} ms`);
      const down = await timedDig(port, "cold2.jitsu.test");
      assert.equal(down.status, "SERVFAIL");
      assert.ok(down.ms <= (TIMEOUT_S + 1) * 1000, `SERVFAIL after ${down.ms} ms`);
      await cli!.waitFor(
        /VM 'cold2' could not be started: docker VM 'cold2': cannot connect to unix:\/\/\S+: connection refused/,
        5000,
      );

      await podman.startService();
      const back = await answered(port, "slow.jitsu.test", 15_000);
      assert.equal(back.data, "10.0.0.4");
      assert.ok(back.tries <= 2, `answered after ${back.tries} queries`);
      assert.match(cli!.output(), /VM 'slow' (is already running|was started behind our back); adopting it/);
      assert.match(
        cli!.output(),
        /docker: VM 'slow': unix:\/\/\S+ reports container 'slow' as created, but its process \(pid \d+\) runs: the engine lost track of a start/,
      );
      assert.equal(readFileSync(starts, "utf8").trim().split("\n").length, 1, "runc start ran once");
      assert.equal(await httpOk(ports["slow"]!), true);
      const again = await answered(port, "cold2.jitsu.test", 15_000);
      assert.equal(again.data, "10.0.0.3");
      assert.ok(again.tries <= 2, `answered after ${again.tries} queries`);
    });

    it("no service: a missing socket and a refused connection are `unavailable`, naming the URI", async () => {
      const missing = join(dir.path, "no-such.sock");
      const backend = new DockerBackend(parseDockerTarget(`unix://${missing}`), {
        log: silentLogger(),
        clock: systemClock,
        settings: {},
        callTimeoutMs: 2000,
      });
      await assert.rejects(backend.connect(), (err: unknown) => {
        assert.ok(err instanceof BackendError);
        assert.equal(err.unavailable, true);
        assert.match(err.message, new RegExp(`cannot connect to unix://${missing}: no socket at ${missing}`));
        return true;
      });
      await backend.close();
      // A socket file nobody listens on (what a SIGKILLed service leaves): refused.
      await podman.killService();
      try {
        const refused = new DockerBackend(parseDockerTarget(podman.uri), {
          log: silentLogger(),
          clock: systemClock,
          settings: {},
        });
        await assert.rejects(refused.connect(), (err: unknown) => {
          assert.ok(err instanceof BackendError);
          assert.equal(err.unavailable, true);
          assert.match(err.message, /cannot connect to unix:\/\/\S+podman\.sock: connection refused/);
          return true;
        });
        await refused.close();
      } finally {
        await podman.startService();
      }
    });
  },
);
