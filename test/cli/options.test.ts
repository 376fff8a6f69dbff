import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { describe, it } from "node:test";
import { BACKENDS } from "../../src/backends/index.js";
import { parseArgs } from "../../src/cli/command.js";
import { configHelp } from "../../src/cli/help.js";
import { OPTIONS } from "../../src/cli/options.js";
import { UsageError } from "../../src/errors/index.js";
import { CLI, run } from "../support/index.js";

describe("command line", () => {
  it("has the original's defaults", () => {
    const s = parseArgs([]);
    assert.equal(s.bind, "127.0.0.1");
    assert.equal(s.connect, "xen:///");
    assert.equal(s.delay, 0.1);
    assert.equal(s.forwarder, undefined);
    assert.equal(s.listen, 53);
    assert.equal(s.mode, "destroy");
    assert.equal(s.port, 53);
    assert.equal(s.ttl, 60);
    assert.equal(s.backend, "libvirt");
    assert.equal(s.startTimeout, 30);
    assert.deepEqual(s.configs, []);
  });

  it("admission control: --max-starting is the number of CPUs (at least 2), no --max-running, --summon-rate 10", () => {
    const s = parseArgs([]);
    assert.equal(s.maxStarting, Math.max(2, availableParallelism()));
    assert.equal(s.maxRunning, 0);
    assert.equal(s.summonRate, 10);
    const t = parseArgs(["--max-starting", "1", "--max-running", "3", "--summon-rate", "0.5"]);
    assert.deepEqual([t.maxStarting, t.maxRunning, t.summonRate], [1, 3, 0.5]);
    assert.equal(parseArgs(["--summon-rate", "0"]).summonRate, 0);
  });

  it("reads short and long forms and positional CONFIG strings in order", () => {
    const s = parseArgs([
      "-b",
      "::1",
      "--connect=qemu:///system",
      "-d",
      "0.5",
      "-f",
      "127.0.0.1",
      "-l",
      "5353",
      "-m",
      "suspend",
      "--port",
      "5300",
      "-t",
      "30",
      "-x",
      "process",
      "dns=a.example.org,ip=10.0.0.1",
      "dns=b.example.org,ip=10.0.0.2",
    ]);
    assert.equal(s.bind, "::1");
    assert.equal(s.connect, "qemu:///system");
    assert.equal(s.delay, 0.5);
    assert.equal(s.forwarder, "127.0.0.1");
    assert.equal(s.listen, 5353);
    assert.equal(s.mode, "suspend");
    assert.equal(s.port, 5300);
    assert.equal(s.ttl, 30);
    assert.equal(s.backend, "process");
    assert.deepEqual(s.configs, ["dns=a.example.org,ip=10.0.0.1", "dns=b.example.org,ip=10.0.0.2"]);
  });

  it("--workers is 1 unless given", () => {
    assert.equal(parseArgs([]).workers, 1);
    assert.equal(parseArgs(["--workers", "4"]).workers, 4);
  });

  it("--tcp-per-client is 8 unless given; 0 is no limit", () => {
    assert.equal(parseArgs([]).tcpPerClient, 8);
    assert.equal(parseArgs(["--tcp-per-client", "2"]).tcpPerClient, 2);
    assert.equal(parseArgs(["--tcp-per-client", "0"]).tcpPerClient, 0);
  });

  it("--allow-recursion is localhost,localnets and --allow-summon any unless given", () => {
    assert.deepEqual(parseArgs([]).allowRecursion, ["localhost", "localnets"]);
    assert.deepEqual(parseArgs([]).allowSummon, ["any"]);
    const s = parseArgs([
      "--allow-recursion",
      "10.0.0.0/8, 2001:db8::/32,localhost",
      "--allow-summon",
      "none",
    ]);
    assert.deepEqual(s.allowRecursion, ["10.0.0.0/8", "2001:db8::/32", "localhost"]);
    assert.deepEqual(s.allowSummon, ["none"]);
  });

  it("the forwarder's pool: 64 sockets, each replaced after 100 queries or 30 s; 0x20 off unless given", () => {
    assert.deepEqual(parseArgs([]).forwarding, {
      sockets: 64,
      socketQueries: 100,
      socketSeconds: 30,
      caseRandomization: false,
    });
    assert.deepEqual(
      parseArgs([
        "--forward-sockets",
        "256",
        "--forward-socket-queries",
        "500",
        "--forward-socket-seconds",
        "2.5",
        "--forward-random-case",
      ]).forwarding,
      { sockets: 256, socketQueries: 500, socketSeconds: 2.5, caseRandomization: true },
    );
  });

  it("-f 0.0.0.0 disables forwarding", () => {
    assert.equal(parseArgs(["-f", "0.0.0.0"]).forwarder, null);
  });

  const bad: [string[], RegExp][] = [
    [["-t", "abc"], /option '--ttl'.*'abc'/],
    [["-t", "0"], /option '--ttl'/],
    [["-l", "70000"], /option '--listen'.*70000/],
    [["-p", "-1"], /option '--port'/],
    [["-d", "soon"], /option '--delay'.*'soon'/],
    [["-m", "explode"], /option '--mode'.*destroy, shutdown, suspend, pause, save/],
    [["-b", "localhost"], /option '--bind'.*'localhost'/],
    [["-f", "dns.example"], /option '--forwarder'/],
    [["--start-timeout", "0"], /option '--start-timeout'/],
    [["--log-format", "xml"], /option '--log-format'/],
    [["--http", "localhost:80"], /option '--http'.*'localhost'/],
    [["--http", "127.0.0.1"], /option '--http': expected ADDR:PORT/],
    [["--http-token", ""], /option '--http-token': expected a non-empty value/],
    [
      ["--workers", "0"],
      /option '--workers': expected a whole number of worker processes from 1 to 64, got '0'/,
    ],
    [["--workers", "x"], /option '--workers': .*got 'x'/],
    [["--workers", "65"], /option '--workers'.*'65'/],
    [["--workers", "2.5"], /option '--workers'.*'2\.5'/],
    [
      ["--max-starting", "0"],
      /option '--max-starting': expected a whole number of VMs from 1 to 2147483647, got '0'/,
    ],
    [["--max-starting", "two"], /option '--max-starting'.*'two'/],
    [["--max-running", "-1"], /option '--max-running': expected a whole number of VMs \(0: no limit\).*'-1'/],
    [["--max-running", "1.5"], /option '--max-running'.*'1\.5'/],
    [["--summon-rate", "-2"], /option '--summon-rate': expected a number of summons per second .*'-2'/],
    [["--summon-rate", "fast"], /option '--summon-rate'.*'fast'/],
    [
      ["--tcp-per-client", "-1"],
      /option '--tcp-per-client': expected a whole number of connections from 0 \(no limit\) to 65535, got '-1'/,
    ],
    [["--tcp-per-client", "many"], /option '--tcp-per-client': .*got 'many'/],
    [
      ["--forward-sockets", "63"],
      /option '--forward-sockets': expected a whole number of sockets from 64 to 1024, got '63'/,
    ],
    [["--forward-sockets", "1025"], /option '--forward-sockets'.*'1025'/],
    [["--forward-sockets", "lots"], /option '--forward-sockets'.*'lots'/],
    [
      ["--forward-socket-queries", "0"],
      /option '--forward-socket-queries': expected a whole number of queries from 1 to 500, got '0'/,
    ],
    [["--forward-socket-queries", "501"], /option '--forward-socket-queries'.*'501'/],
    [
      ["--forward-socket-seconds", "0"],
      /option '--forward-socket-seconds': expected a number of seconds above 0 and at most 60, got '0'/,
    ],
    [["--forward-socket-seconds", "61"], /option '--forward-socket-seconds'.*'61'/],
    [["--forward-socket-seconds", "soon"], /option '--forward-socket-seconds'.*'soon'/],
    [
      ["--allow-recursion", "10.0.0.0/8,lan"],
      /option '--allow-recursion': entry 'lan': expected an IPv4 or IPv6/,
    ],
    [
      ["--allow-recursion", "192.168.1.1/24"],
      /option '--allow-recursion': entry '192\.168\.1\.1\/24'.*192\.168\.1\.0\/24/,
    ],
    [["--allow-summon", "any,none"], /option '--allow-summon': 'any' cannot be combined/],
    [["--allow-summon", ""], /option '--allow-summon': empty entry/],
  ];
  for (const [args, message] of bad) {
    it(`rejects ${args.join(" ")} naming the option`, () => {
      assert.throws(
        () => parseArgs(args),
        (err: unknown) => err instanceof UsageError && message.test(err.message),
      );
    });
  }
});

describe("the backend registry in --help", () => {
  it("names every registered backend for -x, and those that connect somewhere for -c", () => {
    const doc = (name: string): string => OPTIONS.find((o) => o.name === name)!.doc;
    assert.equal(doc("backend"), "Which backend to use: libvirt, process, xapi, libxl, qemu or docker.");
    assert.equal(
      doc("connect"),
      "Libvirt, Xapi and Docker connection string (e.g. xen+ssh://x.x.x.x/system or vbox:///session)",
    );
    const help = configHelp(BACKENDS);
    for (const b of BACKENDS) {
      const modes = [...b.capabilities.stopModes].join(", ");
      assert.ok(help.includes(`(-x ${b.name}; stop modes: ${modes})`), `--help lacks the ${b.name} section`);
    }
  });
});

describe("the jitsu binary", () => {
  /** The built CLI with the process backend, forwarding off (never this machine's resolver), and `args`. */
  const runProcessCli = (...args: string[]) =>
    run(process.execPath, [CLI, "-x", "process", "-f", "0.0.0.0", ...args]);

  it("--help lists every option and the CONFIG keys of each backend", async () => {
    const res = await run(process.execPath, [CLI, "--help"]);
    assert.equal(res.code, 0);
    for (const flag of [
      "-b, --bind",
      "-c, --connect",
      "-d, --delay",
      "-f, --forwarder",
      "-l, --listen",
      "-m, --mode",
    ]) {
      assert.ok(res.stdout.includes(flag), `--help lacks ${flag}`);
    }
    for (const flag of [
      "-p, --port",
      "-t, --ttl",
      "-x, --backend",
      "--persistdb",
      "--synjitsu",
      "--workers",
      "--max-starting",
      "--max-running",
      "--summon-rate",
      "--allow-recursion <LIST>",
      "--allow-summon <LIST>",
      "--tcp-per-client",
      "--forward-sockets <N>",
      "--forward-socket-queries <N>",
      "--forward-socket-seconds <SECONDS>",
      "--forward-random-case",
      "--version",
    ]) {
      assert.ok(res.stdout.includes(flag), `--help lacks ${flag}`);
    }
    assert.match(res.stdout, /\(absent=localhost,localnets\)/);
    assert.match(res.stdout, /COMMON CONFIGURATION/);
    assert.match(res.stdout, /response_delay/);
    assert.match(res.stdout, /wait_for_key/);
    assert.match(res.stdout, /PROCESS CONFIGURATION/);
    assert.match(res.stdout, /\bexec\b/);
  });

  it("--help=plain works as in the original", async () => {
    const res = await run(process.execPath, [CLI, "--help=plain"]);
    assert.equal(res.code, 0);
    assert.match(res.stdout, /COMMON CONFIGURATION/);
  });

  it("--version prints the package version", async () => {
    const res = await run(process.execPath, [CLI, "--version"]);
    assert.equal(res.code, 0);
    assert.match(res.stdout.trim(), /^\d+\.\d+\.\d+$/);
  });

  it("a bad value exits non-zero with one line naming the option", async () => {
    const res = await run(process.execPath, [CLI, "-t", "soon"]);
    assert.equal(res.code, 2);
    assert.equal(res.stderr.trim().split("\n").length, 1);
    assert.match(res.stderr, /^jitsu: option '--ttl': expected/);
  });

  it("an unknown option exits non-zero with one line", async () => {
    const res = await run(process.execPath, [CLI, "--colour"]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /^jitsu: unknown option '--colour'/);
  });

  it("a bad CONFIG value names the VM and the key", async () => {
    const res = await runProcessCli("dns=www.example.org,ip=10.0.0.300,name=www,exec=true");
    assert.equal(res.code, 1);
    assert.equal(res.stderr.trim().split("\n").length, 1);
    assert.match(res.stderr, /VM 'www', key 'ip': expected an IPv4 or IPv6 address/);
  });

  it("an unknown CONFIG key names the VM and the key", async () => {
    const res = await runProcessCli("dns=www.example.org,ip=10.0.0.1,name=www,exec=true,colour=red");
    assert.equal(res.code, 1);
    assert.match(res.stderr, /VM 'www', key 'colour': unknown key for the process backend/);
  });

  it("a mistyped key gets a suggestion, and the known keys leave out what the backend cannot do", async () => {
    const res = await runProcessCli("dsn=www.example.org,ip=10.0.0.1,name=www,exec=true");
    assert.equal(res.code, 1);
    assert.equal(
      res.stderr.trim(),
      "jitsu: VM 'www', key 'dsn': unknown key for the process backend; did you mean 'dns'? " +
        "(known keys: after, cwd, dns, env, exec, group, hold, hold_address, ip, name, ready, response_delay, stop_grace, use_synjitsu)",
    );
  });

  it("an unknown backend fails with one line naming the option and the known ones", async () => {
    const res = await run(process.execPath, [
      CLI,
      "-x",
      "vbox",
      "-f",
      "0.0.0.0",
      "dns=www.example.org,ip=10.0.0.1,name=www",
    ]);
    assert.equal(res.code, 2);
    assert.equal(res.stderr.trim().split("\n").length, 1);
    assert.match(
      res.stderr,
      /option '--backend': unknown backend 'vbox' \(known: libvirt, process, xapi, libxl, qemu, docker\)/,
    );
  });

  it("a stop mode the backend cannot do is rejected at start-up", async () => {
    const res = await runProcessCli("-m", "save", "dns=www.example.org,ip=10.0.0.1,name=www,exec=true");
    assert.equal(res.code, 2, "a usage error");
    assert.match(res.stderr, /option '--mode': the process backend cannot save VMs/);
  });

  it("a key the backend cannot honour is rejected at start-up", async () => {
    const res = await runProcessCli(
      "dns=www.example.org,ip=10.0.0.1,name=www,exec=true,wait_for_key=data/ready",
    );
    assert.equal(res.code, 1);
    assert.match(res.stderr, /VM 'www', key 'wait_for_key': the process backend cannot wait for keys/);
    const noIp = await runProcessCli("dns=www.example.org,exec=true");
    assert.equal(noIp.code, 1);
    assert.match(
      noIp.stderr,
      /VM 'www.example.org', key 'ip': required key is missing \(the process backend cannot discover addresses\)/,
    );
  });

  it("two VMs with the same name are refused at start-up (one would answer for the other)", async () => {
    const res = await runProcessCli(
      "dns=a.test,ip=127.0.0.5,name=one,exec=sleep 101",
      "dns=b.test,ip=127.0.0.6,name=one,exec=sleep 102",
    );
    assert.equal(res.code, 1);
    assert.equal(
      res.stderr.trim(),
      "jitsu: VM 'one', key 'name': another VM is configured with the same name and different settings; give each VM its own name (or describe it once)",
    );
  });
});
