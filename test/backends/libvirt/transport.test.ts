/**
 * Remote transports against real servers on 127.0.0.1: libvirtd listening
 * with +tcp and +tls (certificates made here with openssl: a CA, a server
 * certificate for 127.0.0.1/localhost, a client certificate; plus a rogue
 * client and a foreign CA for the failure cases), and +ssh through the real
 * ssh client and a private sshd, whose remote command joins the daemon's
 * socket with nc, as libvirt does.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LibvirtBackend } from "../../../src/backends/libvirt/backend.js";
import { parseLibvirtUri } from "../../../src/backends/libvirt/uri.js";
import { systemClock } from "../../../src/clock/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { freePort, tempDir } from "../../support/index.js";
import { PrivateLibvirtd } from "../../doubles/libvirtd.js";
import { rejectsWith, spec } from "./fixtures.js";

function sh(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
}

/** CA, server certificate (127.0.0.1, localhost) and client certificate, as libvirt's PKI layout wants them. */
function makePki(dir: string): { good: string; rogue: string; foreignCa: string } {
  const ssl = (...args: string[]): void => sh("openssl", args, dir);
  ssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "cakey.pem",
    "-out",
    "cacert.pem",
    "-days",
    "2",
    "-subj",
    "/CN=jitsu test CA",
  );
  const issue = (name: string, cn: string, ext: string): void => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    ssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${name}key.pem`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${cn}`,
    );
    ssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "cacert.pem",
      "-CAkey",
      "cakey.pem",
      "-CAcreateserial",
      "-out",
      `${name}cert.pem`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  };
  issue("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  issue("client", "jitsu client", "extendedKeyUsage=clientAuth\n");
  const good = join(dir, "good");
  const rogue = join(dir, "rogue");
  const foreignCa = join(dir, "foreign");
  for (const d of [good, rogue, foreignCa]) mkdirSync(d);
  for (const f of ["cacert.pem", "clientcert.pem", "clientkey.pem"])
    copyFileSync(join(dir, f), join(good, f));
  // A client certificate signed by nobody the daemon trusts.
  sh(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "clientkey.pem",
      "-out",
      "clientcert.pem",
      "-days",
      "2",
      "-subj",
      "/CN=rogue",
    ],
    rogue,
  );
  copyFileSync(join(dir, "cacert.pem"), join(rogue, "cacert.pem"));
  // The right client certificate, but a CA that did not sign the daemon's.
  sh(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "k.pem",
      "-out",
      "cacert.pem",
      "-days",
      "2",
      "-subj",
      "/CN=other",
    ],
    foreignCa,
  );
  for (const f of ["clientcert.pem", "clientkey.pem"]) copyFileSync(join(dir, f), join(foreignCa, f));
  spawnSync("chmod", ["-R", "a+rX", dir]);
  return { good, rogue, foreignCa };
}

describe("libvirt over TCP, TLS and SSH (real libvirtd, real sshd)", { timeout: 120_000 }, () => {
  let pkiDir: Awaited<ReturnType<typeof tempDir>>;
  let pki: ReturnType<typeof makePki>;
  let daemon: PrivateLibvirtd;
  let tcpPort = 0;
  let tlsPort = 0;
  const opened: LibvirtBackend[] = [];

  const open = async (uri: string): Promise<LibvirtBackend> => {
    const b = new LibvirtBackend(parseLibvirtUri(uri), { log: silentLogger(), clock: systemClock });
    opened.push(b);
    await b.connect();
    return b;
  };
  /** test:///default has a domain "test", running. */
  const stateOfTest = async (b: LibvirtBackend): Promise<string> =>
    b.state(await b.resolve(spec("dns=t.example.org,name=test")));

  before(async () => {
    pkiDir = await tempDir("jitsu-pki-");
    chmodSync(pkiDir.path, 0o755);
    pki = makePki(pkiDir.path);
    tcpPort = await freePort();
    tlsPort = await freePort();
    daemon = new PrivateLibvirtd({ network: { tcpPort, tlsPort, pkiDir: pkiDir.path } });
    await daemon.start();
  });

  after(async () => {
    for (const b of opened) await b.close().catch(() => undefined);
    await daemon?.destroy();
    await pkiDir?.remove();
  });

  it("+tcp", async () => {
    const b = await open(`test+tcp://127.0.0.1:${tcpPort}/default`);
    assert.equal(await stateOfTest(b), "running");
    const closed = await freePort();
    await rejectsWith(
      open(`test+tcp://127.0.0.1:${closed}/default`),
      new RegExp(
        `^libvirt: cannot connect to test\\+tcp://127\\.0\\.0\\.1:${closed}/default: connection refused by 127\\.0\\.0\\.1:${closed} \\(is libvirtd running\\?\\)$`,
      ),
    );
  });

  it("+tls with ?pkipath=, checking both certificates", async () => {
    for (const host of ["127.0.0.1", "localhost"]) {
      const b = await open(`test+tls://${host}:${tlsPort}/default?pkipath=${pki.good}`);
      assert.equal(await stateOfTest(b), "running", host);
    }
    await rejectsWith(
      open(`test+tls://127.0.0.1:${tlsPort}/default?pkipath=${pki.rogue}`),
      new RegExp(`: 127\\.0\\.0\\.1:${tlsPort} refused our TLS client certificate`),
    );
    await rejectsWith(
      open(`test+tls://127.0.0.1:${tlsPort}/default?pkipath=${pki.foreignCa}`),
      /presented a certificate we do not trust: .*\(check cacert\.pem, or \?no_verify=1\)$/,
    );
    const b = await open(`test+tls://127.0.0.1:${tlsPort}/default?pkipath=${pki.foreignCa}&no_verify=1`);
    assert.equal(await stateOfTest(b), "running");
    await rejectsWith(
      open(`test+tls://127.0.0.1:${tlsPort}/default?pkipath=/nonexistent`),
      /cannot read the TLS CA certificate \/nonexistent\/cacert\.pem/,
    );
  });

  describe("+ssh", () => {
    let sshd: ChildProcess | undefined;
    let sshDir: Awaited<ReturnType<typeof tempDir>>;
    let sshPort = 0;
    let sshLog = "";

    before(async () => {
      sshDir = await tempDir("jitsu-sshd-");
      const d = sshDir.path;
      sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(d, "host_key")], d);
      sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(d, "id")], d);
      writeFileSync(join(d, "authorized_keys"), readFileSync(join(d, "id.pub")));
      sshPort = await freePort();
      writeFileSync(
        join(d, "known_hosts"),
        `[127.0.0.1]:${sshPort} ${readFileSync(join(d, "host_key.pub"), "utf8").split(" ").slice(0, 2).join(" ")}\n`,
      );
      writeFileSync(
        join(d, "sshd_config"),
        [
          `ListenAddress 127.0.0.1`,
          `Port ${sshPort}`,
          `HostKey ${join(d, "host_key")}`,
          `AuthorizedKeysFile ${join(d, "authorized_keys")}`,
          `PidFile ${join(d, "sshd.pid")}`,
          `PermitRootLogin prohibit-password`,
          `PasswordAuthentication no`,
          `KbdInteractiveAuthentication no`,
          `UsePAM no`,
          `StrictModes no`,
        ].join("\n") + "\n",
      );
      mkdirSync("/run/sshd", { recursive: true }); // sshd's privilege separation directory
      sshd = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(d, "sshd_config")], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      sshd.stderr!.on("data", (c: Buffer) => (sshLog = (sshLog + c.toString()).slice(-5000)));
      const deadline = Date.now() + 15_000;
      while (!/Server listening on 127\.0\.0\.1/.test(sshLog)) {
        if (sshd.exitCode !== null || Date.now() > deadline) throw new Error(`sshd did not start: ${sshLog}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    });

    after(async () => {
      if (sshd !== undefined && sshd.exitCode === null) {
        const exited = new Promise((r) => sshd!.once("exit", r));
        sshd.kill("SIGTERM");
        await exited;
      }
      await sshDir?.remove();
    });

    it("reaches the daemon through ssh and nc, as libvirt does", async () => {
      const d = sshDir.path;
      const uri = `test+ssh://${userInfo().username}@127.0.0.1:${sshPort}/default?keyfile=${d}/id&known_hosts=${d}/known_hosts&no_tty=1&socket=${daemon.socket}`;
      const b = await open(uri);
      assert.equal(await stateOfTest(b), "running");
      // The connection lives in the ssh process: several calls in flight over it.
      const vm = await b.resolve(spec("dns=t.example.org,name=test"));
      const states = await Promise.all(Array.from({ length: 20 }, () => b.state(vm)));
      assert.deepEqual(new Set(states), new Set(["running"]));
    });

    it("says why when ssh cannot log in", async () => {
      const d = sshDir.path;
      await rejectsWith(
        open(
          `test+ssh://nobody@127.0.0.1:${sshPort}/default?keyfile=${d}/id&known_hosts=${d}/known_hosts&no_tty=1&socket=${daemon.socket}`,
        ),
        /^libvirt: cannot connect to test\+ssh:\/\/nobody@127\.0\.0\.1:.*: ssh nobody@127\.0\.0\.1 exited \(status 255\): .*Permission denied/,
      );
    });
  });

  it("refuses SASL with a clear error", async () => {
    const sasl = new PrivateLibvirtd({ config: [`auth_unix_rw = "sasl"`] });
    try {
      await sasl.start();
      await rejectsWith(
        open(sasl.uri("test:///default")),
        /^libvirt: cannot connect to test\+unix:\/\/\/default\?socket=.*: .*libvirt-sock requires SASL authentication, which is not supported yet/,
      );
    } finally {
      await sasl.destroy();
    }
  });
});
