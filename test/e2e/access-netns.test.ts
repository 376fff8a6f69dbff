/**
 * --allow-recursion and --allow-summon seen from real clients on a network:
 * jitsu (the built CLI) in the root namespace, bound to :: (IPv4 clients
 * arrive as ::ffff:a.b.c.d), forwarding to a local upstream on 127.0.0.1.
 * Namespaces made here:
 *
 *   root  10.210.N.1 / fd00:210:N::1  ── veth ──  "router" 10.210.N.2 / fd00:210:N::2   (a local subnet)
 *                                                  "router" 10.211.N.1 / fd00:211:N::1
 *                                                     └── veth ──  "client" 10.211.N.2 / fd00:211:N::2
 *                                                                  (routed: not a subnet of this host)
 *
 * dig runs inside the namespaces (`ip netns exec`). Needs root and iproute2.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startUpstream, type TestUpstream } from "../doubles/dns-upstream.js";
import { httpCall } from "../support/http.js";
import {
  dig,
  freePort,
  localArgs,
  startCli,
  tempDir,
  waitFor,
  type CliProcess,
  type DigAnswer,
} from "../support/index.js";
import { NetnsLab, freeSubnetNumber, ip } from "../support/netns.js";

const VMS = [
  "dns=www.jitsu.test,ip=127.0.0.5,name=www,exec=sleep 60",
  "dns=two.jitsu.test,ip=127.0.0.6,name=two,exec=sleep 60",
];

describe("access control from local and routed clients (e2e, network namespaces)", () => {
  const lab = new NetnsLab();
  let n: number;
  let router: string;
  let client: string;
  let upstream: TestUpstream;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let jitsu: CliProcess | undefined;
  let dnsPort = 0;
  let httpPort = 0;

  const v4 = (net: 210 | 211, host: number): string => `10.${net}.${n}.${host}`;
  const v6 = (net: 210 | 211, host: number): string => `fd00:${net}:${n}::${host}`;
  /** dig from a namespace (or from the root one on loopback) at jitsu's v4 or v6 address. */
  const ask = (from: string | null, family: 4 | 6, args: readonly string[]): Promise<DigAnswer> =>
    from === null
      ? dig(dnsPort, args, family === 4 ? "127.0.0.1" : "::1")
      : dig(dnsPort, args, family === 4 ? v4(210, 1) : v6(210, 1), from);

  before(async () => {
    n = await freeSubnetNumber([210, 211]);
    try {
      router = await lab.namespace("router");
      client = await lab.namespace("client");
      await lab.veth(
        { ns: null, addrs: [`${v4(210, 1)}/24`, `${v6(210, 1)}/64`] },
        { ns: router, addrs: [`${v4(210, 2)}/24`, `${v6(210, 2)}/64`] },
      );
      await lab.veth(
        { ns: router, addrs: [`${v4(211, 1)}/24`, `${v6(211, 1)}/64`] },
        { ns: client, addrs: [`${v4(211, 2)}/24`, `${v6(211, 2)}/64`] },
      );
      await ip([
        "netns",
        "exec",
        router,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
      ]);
      await ip(["route", "add", "default", "via", v4(211, 1)], client);
      await ip(["-6", "route", "add", "default", "via", v6(211, 1)], client);
      // Routes in the root namespace to the client's subnet, through the router only.
      await ip(["route", "add", `10.211.${n}.0/24`, "via", v4(210, 2)]);
      await ip(["-6", "route", "add", `fd00:211:${n}::/64`, "via", v6(210, 2)]);
    } catch (err) {
      await lab.remove();
      throw err;
    }
    upstream = await startUpstream("192.0.2.7");
    dir = await tempDir("jitsu-acl-");
  });

  after(async () => {
    await jitsu?.stop();
    await lab.remove();
    await upstream?.close();
    await dir?.remove();
  });

  /** Starts jitsu bound to :: with `extra` options; stops the previous one. */
  async function start(extra: readonly string[]): Promise<void> {
    await jitsu?.stop();
    httpPort = await freePort();
    jitsu = startCli([
      ...localArgs(0, dir.path, { upstream: upstream.port }),
      "-b",
      "::",
      "--http",
      `127.0.0.1:${httpPort}`,
      ...extra,
      ...VMS,
    ]);
    await jitsu.waitFor(/Serving \/status/);
    dnsPort = Number(/Starting server on :::(\d+)\.\.\./.exec(jitsu.output())![1]);
  }

  async function refused(reason: string): Promise<number> {
    const text = (await httpCall(httpPort, "GET", "/metrics")).body;
    const line = text.split("\n").find((l) => l.startsWith(`jitsu_dns_refused_total{reason="${reason}"} `));
    return Number(line?.split(" ")[1]);
  }

  const FORWARDED = "192.0.2.7";

  it("default (localhost,localnets): the routed client is REFUSED forwarded names, both get managed names", async () => {
    await start([]);
    // The start-up line on a network says what localnets stands for.
    const line = /Recursion allowed to localhost,localnets \(localnets: [^)]*\); summons allowed to any/.exec(
      jitsu!.output(),
    )?.[0];
    assert.ok(line?.includes(`10.210.${n}.0/24`) === true && line.includes(`fd00:210:${n}::/64`), line);
    assert.ok(!line.includes(`10.211.${n}.`), line);
    for (const family of [4, 6] as const) {
      // The router is on a subnet of this host: recursion.
      const local = await ask(router, family, ["www.example.com"]);
      assert.equal(local.status, "NOERROR", local.raw);
      assert.equal(local.answers[0]?.data, FORWARDED);
      // The client is not: REFUSED (question echoed, OPT kept), over UDP and TCP.
      const far = await ask(client, family, ["www.example.com"]);
      assert.equal(far.status, "REFUSED", far.raw);
      assert.match(far.raw, /;www\.example\.com\.\s+IN\s+A/);
      assert.match(far.raw, /OPT PSEUDOSECTION/);
      assert.equal((await ask(client, family, ["+tcp", "www.example.com"])).status, "REFUSED");
      // Inside the managed zone, a name we would forward.
      assert.equal((await ask(client, family, ["ftp.jitsu.test"])).status, "REFUSED");
      // Our own data, to everyone.
      for (const from of [router, client]) {
        const a = await ask(from, family, ["www.jitsu.test"]);
        assert.equal(a.answers[0]?.data, "127.0.0.5", a.raw);
        assert.equal((await ask(from, family, ["jitsu.test", "SOA"])).answers[0]?.type, "SOA");
        assert.equal((await ask(from, family, ["jitsu.test", "NS"])).answers[0]?.data, "ns.jitsu.test.");
        assert.equal((await ask(from, family, ["-x", "127.0.0.5"])).answers[0]?.data, "www.jitsu.test.");
      }
      // And localhost.
      assert.equal((await ask(null, family, ["www.example.com"])).answers[0]?.data, FORWARDED);
    }
    assert.equal(await refused("recursion"), 6);
    const status = JSON.parse((await httpCall(httpPort, "GET", "/status")).body) as {
      dns: { allowRecursion: string[]; allowSummon: string[]; refused: Record<string, number> };
    };
    assert.deepEqual(status.dns.allowRecursion, ["localhost", "localnets"]);
    assert.deepEqual(status.dns.allowSummon, ["any"]);
    assert.equal(status.dns.refused.recursion, 6);
  });

  it("SIGHUP re-reads localnets: a subnet added to an interface becomes local", async () => {
    assert.equal((await ask(client, 4, ["www.example.com"])).status, "REFUSED");
    // The client's subnets on an interface of this host, without routes (the route stays via the router).
    const extra = await lab.stubInterface([`${v4(211, 200)}/24`, `${v6(211, 200)}/64`]);
    try {
      jitsu!.child.kill("SIGHUP");
      await jitsu!.waitFor(new RegExp(`local networks \\(localnets\\) are now .*10\\.211\\.${n}\\.0/24`));
      for (const family of [4, 6] as const) {
        assert.equal((await ask(client, family, ["www.example.com"])).answers[0]?.data, FORWARDED);
      }
    } finally {
      await lab.removeLink(extra);
    }
    jitsu!.child.kill("SIGHUP");
    await waitFor(
      async () => (await ask(client, 4, ["www.example.com"])).status === "REFUSED",
      5000,
      "the client to be refused again once the subnet is gone",
    );
  });

  it("--allow-recursion any and --allow-summon localnets with --workers 2: the routed client gets ready VMs, never starts one", async () => {
    await start(["--allow-recursion", "any", "--allow-summon", "localnets", "--workers", "2"]);
    for (const family of [4, 6] as const) {
      assert.equal((await ask(client, family, ["www.example.com"])).answers[0]?.data, FORWARDED);
      assert.equal((await ask(client, family, ["www.jitsu.test"])).status, "REFUSED");
    }
    assert.match((await httpCall(httpPort, "GET", "/status")).body, /"state": "off"/);
    // The router may summon: the VM starts.
    assert.equal((await ask(router, 4, ["www.jitsu.test"])).answers[0]?.data, "127.0.0.5");
    // Now it is ready, the client is answered too (by whichever worker gets the query).
    await waitFor(
      async () => (await ask(client, 6, ["www.jitsu.test"])).answers[0]?.data === "127.0.0.5",
      5000,
      "the routed client to get the ready VM",
    );
    assert.equal((await ask(client, 4, ["www.jitsu.test"])).answers[0]?.data, "127.0.0.5");
    assert.equal((await ask(client, 4, ["two.jitsu.test"])).status, "REFUSED");
    assert.equal(await refused("summon"), 3);
    assert.equal(await refused("recursion"), 0);
    // SIGHUP reaches the workers: the client's subnet becomes local, and it may summon.
    const extra = await lab.stubInterface([`${v4(211, 200)}/24`]);
    try {
      jitsu!.child.kill("SIGHUP");
      await jitsu!.waitFor(new RegExp(`local networks \\(localnets\\) are now .*10\\.211\\.${n}\\.0/24`));
      await waitFor(
        async () => (await ask(client, 4, ["two.jitsu.test"])).answers[0]?.data === "127.0.0.6",
        5000,
        "the client, local after SIGHUP, to start 'two'",
      );
    } finally {
      await lab.removeLink(extra);
    }
  });

  it("explicit CIDRs from the config file's list: only the routed subnet may recurse", async () => {
    const file = join(dir.path, "acl.yaml");
    await writeFile(
      file,
      `allow-recursion:\n  - 10.211.${n}.0/24\n  - "fd00:211:${n}::/64"\nallow-summon: [localhost]\n`,
    );
    await start(["--config", file]);
    for (const family of [4, 6] as const) {
      assert.equal((await ask(client, family, ["www.example.com"])).answers[0]?.data, FORWARDED);
      assert.equal((await ask(router, family, ["www.example.com"])).status, "REFUSED");
      assert.equal((await ask(null, family, ["www.example.com"])).status, "REFUSED");
      // dig +norec: a client allowed to recurse that does not ask for it.
      assert.equal((await ask(client, family, ["+norec", "www.example.com"])).status, "REFUSED");
      // allow-summon localhost: the VM is off and only loopback may start it.
      assert.equal((await ask(client, family, ["www.jitsu.test"])).status, "REFUSED");
    }
    assert.equal(await refused("recursion"), 4);
    assert.equal(await refused("norec"), 2);
    assert.equal(await refused("summon"), 2);
    assert.equal((await ask(null, 6, ["www.jitsu.test"])).answers[0]?.data, "127.0.0.5");
  });
});
