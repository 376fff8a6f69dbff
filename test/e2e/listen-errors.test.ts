/**
 * A DNS or --http socket that cannot be bound: jitsu exits 1 with one line
 * that names the socket, the system's code, and what to do about it.
 */
import assert from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { chmod } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { CLI, freePort, run, tempDir } from "../support/index.js";

const VM = "dns=a.jitsu.test,ip=127.0.0.5,name=a,exec=sleep 60";

describe("listen errors (e2e)", () => {
  let dir: { path: string; remove(): Promise<void> };

  before(async () => {
    dir = await tempDir("jitsu-listen-");
    await chmod(dir.path, 0o777); // the unprivileged run below writes its state here
  });

  after(async () => {
    await dir.remove();
  });

  const jitsu = (args: readonly string[]): string[] => [
    CLI,
    "-x",
    "process",
    "-f",
    "0.0.0.0",
    "--state-dir",
    dir.path,
    ...args,
    VM,
  ];

  it("a port below 1024 without privileges: says how to get them or which option to change", async () => {
    // As user nobody (the tests run as root, which may bind anything).
    const res = await run("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      process.execPath,
      ...jitsu(["-l", "53"]),
    ]);
    assert.equal(res.code, 1, res.stderr);
    const line = errorLine(res.stderr);
    assert.match(line, /^jitsu: cannot listen on UDP 127\.0\.0\.1:53: permission denied \(EACCES\): /);
    assert.match(line, /run jitsu as root/i);
    assert.match(line, /setcap cap_net_bind_service=\+ep/);
    assert.match(line, /a port of 1024 or above with -l$/);
  });

  for (const workers of ["1", "2"]) {
    it(`a port another program holds (--workers ${workers}): EADDRINUSE, how to find the holder, and -l, as the last line`, async () => {
      const port = await freePort();
      const blocker: Socket = createSocket("udp4");
      await new Promise<void>((resolve) => blocker.bind(port, "127.0.0.1", () => resolve()));
      try {
        const res = await run(process.execPath, jitsu(["-l", String(port), "--workers", workers]));
        assert.equal(res.code, 1, res.stderr);
        // The zone's start-up lines were logged before the error: they come before it.
        assert.match(res.stderr, /Adding domain 'a\.jitsu\.test'/);
        assert.equal(
          errorLine(res.stderr),
          `jitsu: cannot listen on UDP 127.0.0.1:${port}: the port is already in use (EADDRINUSE) by another program. ` +
            `See which with: ss -lntup 'sport = :${port}'; stop it, or choose another port with -l`,
        );
      } finally {
        blocker.close();
      }
    });
  }

  it("an address the machine does not have: EADDRNOTAVAIL and -b", async () => {
    // Binding sends nothing: 192.0.2.1 (TEST-NET-1) only has to be absent from this machine.
    const res = await run(process.execPath, jitsu(["-l", String(await freePort()), "-b", "192.0.2.1"]));
    assert.equal(res.code, 1, res.stderr);
    assert.match(
      res.stderr,
      /cannot listen on UDP 192\.0\.2\.1:\d+: 192\.0\.2\.1 is not an address of this machine \(EADDRNOTAVAIL\); choose one it has with -b/,
    );
  });

  it("--http on a port in use names --http, not -l", async () => {
    const httpPort = await freePort();
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(httpPort, "127.0.0.1", () => resolve()));
    try {
      const res = await run(
        process.execPath,
        jitsu(["-l", String(await freePort()), "--http", `127.0.0.1:${httpPort}`]),
      );
      assert.equal(res.code, 1, res.stderr);
      assert.match(
        res.stderr,
        new RegExp(
          `cannot listen on HTTP \\(--http\\) 127\\.0\\.0\\.1:${httpPort}: the port is already in use \\(EADDRINUSE\\).* choose another port with --http`,
        ),
      );
    } finally {
      blocker.close();
    }
  });
});

/** The one line jitsu prints for a fatal error (the log's lines go to stderr too), which is the last line: nothing follows it. */
function errorLine(stderr: string): string {
  const lines = stderr.split("\n").filter((l) => l.startsWith("jitsu: "));
  assert.equal(lines.length, 1, stderr);
  assert.equal(stderr.trimEnd().split("\n").at(-1), lines[0], `the error is not the last line:\n${stderr}`);
  return lines[0]!;
}
