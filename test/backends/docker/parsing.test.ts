/**
 * The docker backend's parsers: -c / DOCKER_HOST targets (and the TLS
 * conventions), publish=, a VM's container plan, the event stream's lines
 * and the engine's states.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  dockerBackend,
  eventState,
  mapContainerState,
  parseDockerTarget,
  parseEvent,
  parsePublish,
  planContainer,
} from "../../../src/backends/docker/index.js";
import { specOptions } from "../../../src/backends/index.js";
import { buildVmSpec, parseConfigString } from "../../../src/config/index.js";
import { ConfigError, UsageError } from "../../../src/errors/index.js";

function spec(config: string) {
  return buildVmSpec(parseConfigString(config, "CONFIG #1"), "CONFIG #1", specOptions(dockerBackend));
}

describe("docker targets (-c, DOCKER_HOST)", () => {
  it("reads unix sockets, -c before DOCKER_HOST before the default", () => {
    const env = { DOCKER_HOST: "unix:///run/podman/podman.sock" };
    assert.equal(parseDockerTarget("unix:///var/run/docker.sock", env).socketPath, "/var/run/docker.sock");
    const fromEnv = parseDockerTarget(undefined, env);
    assert.equal(fromEnv.socketPath, "/run/podman/podman.sock");
    assert.equal(fromEnv.source, "DOCKER_HOST");
    assert.equal(parseDockerTarget(undefined, {}).socketPath, "/var/run/docker.sock");
  });

  it("reads tcp:// as plain HTTP on 2375, or TLS on 2376 with DOCKER_TLS_VERIFY, and https://", () => {
    const plain = parseDockerTarget("tcp://127.0.0.1", {});
    assert.deepEqual([plain.tls, plain.options.port, plain.options.protocol], ["none", 2375, "http"]);
    const certs = mkdtempSync(join(tmpdir(), "jitsu-docker-certs-"));
    try {
      for (const f of ["ca", "cert", "key"]) writeFileSync(join(certs, `${f}.pem`), `${f} bytes`);
      const tls = parseDockerTarget("tcp://engine.example.org", {
        DOCKER_TLS_VERIFY: "1",
        DOCKER_CERT_PATH: certs,
      });
      assert.deepEqual([tls.tls, tls.options.port, tls.options.protocol], ["verified", 2376, "https"]);
      assert.equal(String(tls.options.ca), "ca bytes");
      assert.equal(String(tls.options.key), "key bytes");
      const https = parseDockerTarget("https://[::1]:12376", { DOCKER_CERT_PATH: certs });
      assert.deepEqual([https.tls, https.options.host, https.options.port], ["verified", "::1", 12376]);
      assert.equal(
        parseDockerTarget("tcp://h", { DOCKER_TLS: "1", DOCKER_CERT_PATH: certs }).tls,
        "unverified",
      );
      rmSync(join(certs, "key.pem"));
      assert.throws(
        () => parseDockerTarget("https://h", { DOCKER_CERT_PATH: certs }),
        /has cert\.pem but no key\.pem: the client certificate needs both/,
      );
    } finally {
      rmSync(certs, { recursive: true, force: true });
    }
  });

  it("refuses what it cannot use, as a usage error naming -c, never showing a password", () => {
    const bad =
      (uri: string, env: NodeJS.ProcessEnv = {}) =>
      () =>
        parseDockerTarget(uri, env);
    assert.throws(
      bad("ssh://me@h"),
      (e: Error) => e instanceof UsageError && /unsupported scheme 'ssh'/.test(e.message),
    );
    assert.throws(bad("unix://relative.sock"), /is not an absolute socket path/);
    assert.throws(
      bad("tcp://u:s3cret@h:1/x"),
      (e: Error) => /has a path/.test(e.message) && !e.message.includes("s3cret"),
    );
    assert.throws(
      () => parseDockerTarget(undefined, { DOCKER_HOST: "xen:///" }),
      /'xen:\/\/\/' \(from DOCKER_HOST\)/,
    );
  });
});

describe("docker CONFIG keys", () => {
  it("parses publish= as docker run -p does", () => {
    assert.deepEqual(parsePublish("8080:80"), { hostIp: "", hostPort: 8080, port: 80, proto: "tcp" });
    assert.deepEqual(parsePublish("127.0.0.1:8080:80/udp"), {
      hostIp: "127.0.0.1",
      hostPort: 8080,
      port: 80,
      proto: "udp",
    });
    assert.deepEqual(parsePublish("[::1]:53:53"), { hostIp: "::1", hostPort: 53, port: 53, proto: "tcp" });
    assert.match(parsePublish("80") as string, /expected \[HOSTADDR:\]HOSTPORT:PORT/);
    assert.match(parsePublish("1.2.3.400:1:2") as string, /'1\.2\.3\.400' is not an IP address/);
    assert.match(parsePublish("70000:80") as string, /port 70000 is out of range/);
  });

  it("plans a created container: image, cmd, env, publish, network, memory, stop_timeout, the label", () => {
    const plan = planContainer(
      spec(
        "dns=w.t,name=web,image=nginx:1,cmd=sh -c 'exec httpd -f',env=A=1,env=B=x=y,publish=127.0.0.1:8080:80,network=appnet,memory=512m,stop_timeout=3",
      ),
    );
    assert.equal(plan.name, "web");
    assert.equal(plan.stopTimeout, 3);
    assert.deepEqual(plan.create, {
      name: "web",
      Image: "nginx:1",
      Labels: { "org.jitsu.created-for": "web" },
      Cmd: ["sh", "-c", "exec httpd -f"],
      Env: ["A=1", "B=x=y"],
      ExposedPorts: { "80/tcp": {} },
      StopTimeout: 3,
      HostConfig: {
        PortBindings: { "80/tcp": [{ HostIp: "127.0.0.1", HostPort: "8080" }] },
        NetworkMode: "appnet",
        Memory: 512 * 1024 * 1024,
      },
    });
    const existing = planContainer(spec("dns=w.t,name=web"));
    assert.equal(existing.create, undefined);
  });

  it("collects every problem of a VM for the preflight; throws the first otherwise", () => {
    const problems: ConfigError[] = [];
    planContainer(spec("dns=w.t,name=web,image=x,publish=80,env=NOPE,memory=1k,stop_timeout=1.5"), problems);
    assert.deepEqual(
      problems.map((p) => p.key),
      ["stop_timeout", "env", "publish", "memory"],
    );
    assert.throws(
      () => planContainer(spec("dns=w.t,name=web,network=host")),
      /key 'network': only applies to a container jitsu creates/,
    );
    assert.throws(
      () => planContainer(spec("dns=w.t,name=web,image=x,network=host,publish=1:1")),
      /no effect with network=host/,
    );
    assert.throws(() => spec("dns=w.t,image=x"), /key 'name': required key is missing/);
  });
});

describe("docker events and states", () => {
  it("reads Docker's and Podman's event lines", () => {
    const podman = parseEvent(
      '{"status":"die","id":"abc","Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"137","name":"web"}}}',
    );
    assert.deepEqual(podman, { action: "die", id: "abc", name: "web", exitCode: "137" });
    const exec = parseEvent(
      '{"Type":"container","Action":"exec_start: sh -c true","Actor":{"ID":"abc","Attributes":{}}}',
    );
    assert.equal(exec?.action, "exec_start");
    assert.equal(parseEvent('{"Type":"image","Action":"pull","Actor":{"ID":"x"}}'), null);
    assert.equal(parseEvent("not json"), null);
    assert.equal(parseEvent("[]"), null);
  });

  it("maps actions and states (Status, not Running: Podman 4.3's paused container)", () => {
    assert.equal(eventState("start"), "running");
    assert.equal(eventState("pause"), "paused");
    assert.equal(eventState("destroy"), "off");
    assert.equal(eventState("remove"), "off");
    assert.equal(eventState("kill"), undefined, "the die that follows says it");
    assert.equal(mapContainerState({ Status: "paused", Running: false } as never, false), "paused");
    assert.equal(mapContainerState({ Status: "exited" } as never, false), "off");
    assert.equal(mapContainerState({ Status: "exited" } as never, true), "suspended");
    assert.equal(mapContainerState({ Status: "dead" } as never, false), "crashed");
  });
});
