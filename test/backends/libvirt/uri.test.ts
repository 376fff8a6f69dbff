import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { daemonHint, parseLibvirtUri, tlsFiles, unixSocketPath } from "../../../src/backends/libvirt/uri.js";
import { sshArgs } from "../../../src/backends/libvirt/transport.js";
import { libvirtBackend } from "../../../src/backends/libvirt/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { systemClock } from "../../../src/clock/index.js";

describe("libvirt URIs", () => {
  it("reads local URIs as their drivers expect", () => {
    for (const [uri, driver, path, name] of [
      ["qemu:///system", "qemu", "/system", "qemu:///system"],
      ["qemu:///session", "qemu", "/session", "qemu:///session"],
      ["xen:///", "xen", "/", "xen:///"],
      ["xen://", "xen", "/", "xen:///"],
      ["test:///default", "test", "/default", "test:///default"],
      ["vbox:///session", "vbox", "/session", "vbox:///session"],
    ] as const) {
      const u = parseLibvirtUri(uri);
      assert.equal(u.driver, driver, uri);
      assert.equal(u.transport, "unix", uri);
      assert.equal(u.host, undefined, uri);
      assert.equal(u.path, path, uri);
      assert.equal(u.openName, name, uri);
    }
  });

  it("strips the transport and the remote driver's own parameters from the name sent to the daemon", () => {
    const u = parseLibvirtUri("test+unix:///tmp/a%20b/node.xml?socket=/tmp/s/libvirt-sock&mode=legacy");
    assert.equal(u.transport, "unix");
    assert.equal(u.path, "/tmp/a b/node.xml");
    assert.equal(u.params.get("socket"), "/tmp/s/libvirt-sock");
    assert.equal(u.openName, "test:///tmp/a b/node.xml");
    const r = parseLibvirtUri("qemu+ssh://root@kvm1.example.org:2222/system?keyfile=/k&no_tty=1&foo=bar");
    assert.equal(r.transport, "ssh");
    assert.equal(r.user, "root");
    assert.equal(r.host, "kvm1.example.org");
    assert.equal(r.port, 2222);
    assert.equal(r.openName, "qemu:///system?foo=bar");
    assert.equal(parseLibvirtUri("qemu://[2001:db8::1]/system").host, "2001:db8::1");
    assert.equal(parseLibvirtUri("qemu://h/system?name=qemu:///session").openName, "qemu:///session");
    assert.equal(parseLibvirtUri("remote://h/").openName, "");
  });

  it("picks the transport: unix without a host, TLS with one", () => {
    assert.equal(parseLibvirtUri("qemu://kvm1/system").transport, "tls");
    assert.equal(parseLibvirtUri("qemu+tcp://kvm1/system").transport, "tcp");
    assert.equal(parseLibvirtUri("qemu+tls://kvm1/system").transport, "tls");
  });

  it("rejects unsupported URIs with a line naming them", () => {
    assert.throws(
      () => parseLibvirtUri("nonsense"),
      /libvirt URI 'nonsense': expected driver\[\+transport\]/,
    );
    assert.throws(() => parseLibvirtUri("foo:///system"), /unsupported driver 'foo'/);
    assert.throws(() => parseLibvirtUri("qemu+libssh2://h/system"), /unsupported transport '\+libssh2'/);
    assert.throws(() => parseLibvirtUri("qemu+tcp:///system"), /tcp transport needs a host/);
    assert.throws(() => parseLibvirtUri("qemu+unix://h/system"), /unix transport cannot reach a host/);
    assert.throws(() => parseLibvirtUri("qemu://h:99999/system"), /bad port/);
    assert.throws(
      () =>
        libvirtBackend.create({
          connect: "bogus:///x",
          stateDir: "/tmp",
          settings: {},
          log: silentLogger(),
          clock: systemClock,
        }),
      /option '--connect': libvirt URI 'bogus:\/\/\/x': unsupported driver/,
    );
  });

  it("says which daemon a local URI needs and how to start it (jitsu does not autostart one)", () => {
    assert.equal(
      daemonHint(parseLibvirtUri("qemu:///system")),
      "no libvirt daemon serves qemu:///system here: start libvirtd, or virtqemud where libvirt runs one daemon per driver (systemctl start virtqemud or libvirtd), or point ?socket=PATH at the socket of one that runs",
    );
    assert.equal(
      daemonHint(parseLibvirtUri("test:///default")),
      "no libvirt daemon serves test:///default here (the test driver runs inside libvirtd too): start libvirtd (systemctl start libvirtd), or point ?socket=PATH at the socket of one that runs",
    );
    assert.equal(
      daemonHint(parseLibvirtUri("vbox:///session")),
      "no per-user libvirt daemon serves vbox:///session; unlike virsh, jitsu does not start one itself: start it first as this user (virtvboxd --daemon, or systemctl --user start virtvboxd.socket)",
    );
    assert.match(daemonHint(parseLibvirtUri("qemu:///session")), /virtqemud --daemon/);
  });

  it("finds the daemon's socket as libvirt does", () => {
    const none = (): boolean => false;
    const env = { XDG_RUNTIME_DIR: "/run/user/1000" };
    assert.equal(
      unixSocketPath(parseLibvirtUri("qemu:///system"), env, none),
      "/var/run/libvirt/libvirt-sock",
    );
    assert.equal(
      unixSocketPath(parseLibvirtUri("qemu:///session"), env, none),
      "/run/user/1000/libvirt/libvirt-sock",
    );
    assert.equal(unixSocketPath(parseLibvirtUri("qemu:///system?socket=/x/s"), env, none), "/x/s");
    // Modular daemons: virtqemud's socket when libvirtd's is absent.
    const modular = (p: string): boolean => p === "/var/run/libvirt/virtqemud-sock";
    assert.equal(
      unixSocketPath(parseLibvirtUri("qemu:///system"), env, modular),
      "/var/run/libvirt/virtqemud-sock",
    );
    assert.equal(
      unixSocketPath(parseLibvirtUri("xen:///?mode=direct"), env, none),
      "/var/run/libvirt/virtxend-sock",
    );
    assert.equal(
      unixSocketPath(parseLibvirtUri("qemu:///system?mode=legacy"), env, modular),
      "/var/run/libvirt/libvirt-sock",
    );
    assert.throws(
      () => unixSocketPath(parseLibvirtUri("qemu:///system?mode=bogus"), env, none),
      /mode must be/,
    );
  });

  it("finds TLS files in ?pkipath= or the usual places", () => {
    const none = (): boolean => false;
    assert.deepEqual(tlsFiles(parseLibvirtUri("qemu+tls://h/system?pkipath=/p"), {}, none, true), {
      ca: "/p/cacert.pem",
      cert: "/p/clientcert.pem",
      key: "/p/clientkey.pem",
    });
    assert.deepEqual(tlsFiles(parseLibvirtUri("qemu+tls://h/system"), {}, none, true), {
      ca: "/etc/pki/CA/cacert.pem",
      cert: "/etc/pki/libvirt/clientcert.pem",
      key: "/etc/pki/libvirt/private/clientkey.pem",
    });
  });

  it("builds the ssh command line as libvirt does", () => {
    const { command, args } = sshArgs(
      parseLibvirtUri("qemu+ssh://admin@kvm1:2222/system?keyfile=/k&no_tty=1&proxy=netcat&socket=/s/sock"),
    );
    assert.equal(command, "ssh");
    assert.deepEqual(args.slice(0, -1), [
      "-p",
      "2222",
      "-l",
      "admin",
      "-i",
      "/k",
      "-T",
      "-o",
      "BatchMode=yes",
      "-e",
      "none",
      "--",
      "kvm1",
    ]);
    assert.match(args.at(-1)!, /^sh -c '.*nc.* \$ARG -U .*\/s\/sock/);
    const auto = sshArgs(parseLibvirtUri("qemu+ssh://kvm1/system")).args.at(-1)!;
    assert.match(auto, /virt-ssh-helper/);
    assert.match(auto, /qemu:\/\/\/system/);
  });
});
