/**
 * The built CLI with `-x libvirt` against a real libvirtd (test driver,
 * test:///default, shared by every connection while one stays open), queried
 * with real dig: a query starts the domain and is answered with the address
 * libvirt reports; the idle domain is suspended (paused in memory); a query
 * resumes it; a domain destroyed with virsh behind jitsu's back is noticed
 * through events and started again by the next query; a domain with a ready=
 * probe started with virsh behind jitsu's back is adopted, but answered (and
 * shown ready in /status) only once its probe passes.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { LibvirtBackend } from "../../../src/backends/libvirt/backend.js";
import { parseLibvirtUri } from "../../../src/backends/libvirt/uri.js";
import { systemClock } from "../../../src/clock/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { dig, freePort, run, startCli, tempDir, type CliProcess } from "../../support/index.js";
import { getStatus } from "../../support/http.js";
import { PrivateLibvirtd } from "../../doubles/libvirtd.js";
import { NODE_XML } from "./fixtures.js";

const UUID = "0badc0de-0000-4000-8000-0000000c1100";
const DOMAIN = `<domain type='test'>
  <name>www</name><uuid>${UUID}</uuid><memory>65536</memory><os><type>hvm</type></os>
  <devices><interface type='network'><mac address='52:54:00:c1:00:01'/><source network='default'/></interface></devices>
</domain>`;

async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts `daemon` and defines the domain `xml` in its test:///default. That
 * driver's state lives while a connection is open: `holder` is one, held so
 * jitsu and virsh see the same domains; close it after jitsu.
 */
async function startWithDomain(
  daemon: PrivateLibvirtd,
  name: string,
  xml: string,
): Promise<{ uri: string; holder: LibvirtBackend }> {
  await daemon.start();
  const uri = daemon.uri("test:///default");
  const holder = new LibvirtBackend(parseLibvirtUri(uri), { log: silentLogger(), clock: systemClock });
  await holder.connect();
  daemon.virsh(uri, `define ${daemon.writeFile(`${name}.xml`, xml)}`);
  return { uri, holder };
}

/** The built CLI on the libvirt backend at `uri`, for one VM 'www' (TTL 1 s, so it idles fast). */
function startLibvirtCli(uri: string, port: number, mode: string, stateDir: string): CliProcess {
  return startCli([
    ...["-x", "libvirt", "-c", uri, "-l", String(port), "-f", "0.0.0.0", "-t", "1", "-d", "0"],
    ...["-m", mode, "--state-dir", stateDir, "dns=www.jitsu.test,name=www"],
  ]);
}

describe("jitsu -x libvirt (e2e with dig and a real libvirtd)", { timeout: 120_000 }, () => {
  const daemon = new PrivateLibvirtd();
  let holder: LibvirtBackend;
  let cli: CliProcess | undefined;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let uri = "";
  let port = 0;

  before(async () => {
    dir = await tempDir();
    ({ uri, holder } = await startWithDomain(daemon, "www", DOMAIN));
    port = await freePort();
    cli = startLibvirtCli(uri, port, "suspend", dir.path);
    // "Starting server on ..." or, once it listens, the stats table
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+|\n\s*\+-+\+/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    await holder?.close();
    await daemon.destroy();
    await dir?.remove();
  });

  const state = (): string => daemon.virsh(uri, "domstate www");

  it("says it is connecting, then that it connected", () => {
    assert.match(
      cli!.output(),
      /Connecting to test\+unix:\/\/\/default\?socket=\S+\.\.\.\n[^]*Connected to test\+unix:/,
    );
  });

  it("starts the domain on a query and answers with its address", async () => {
    assert.equal(state(), "shut off");
    const res = await dig(port, ["www.jitsu.test", "A"]);
    assert.equal(res.status, "NOERROR", res.raw);
    assert.equal(res.answers.length, 1, res.raw);
    assert.equal(res.answers[0]!.type, "A");
    assert.match(res.answers[0]!.data, /^192\.168\.122\.\d+$/); // from DOMAIN_INTERFACE_ADDRESSES (data only)
    assert.equal(state(), "running");
  });

  it("suspends the idle domain (paused in memory) and resumes it on the next query", async () => {
    await until("the idle domain to be paused", () => state() === "paused");
    const res = await dig(port, ["www.jitsu.test", "A"]);
    assert.equal(res.status, "NOERROR", res.raw);
    assert.equal(state(), "running");
    assert.match(cli!.output(), /Unpausing VM 'www'/);
  });

  it("notices a domain destroyed behind its back and starts it again on the next query", async () => {
    daemon.virsh(uri, "destroy www");
    await cli!.waitFor(/VM 'www' is off \(stopped \(destroyed\)\)/, 10_000);
    const res = await dig(port, ["www.jitsu.test", "A"]);
    assert.equal(res.status, "NOERROR", res.raw);
    assert.equal(state(), "running");
  });
});

describe("jitsu -x libvirt across a libvirtd restart (e2e)", { timeout: 120_000 }, () => {
  const daemon = new PrivateLibvirtd();
  let cli: CliProcess | undefined;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let port = 0;

  before(async () => {
    dir = await tempDir();
    const node = daemon.writeFile("node.xml", NODE_XML);
    await daemon.start();
    port = await freePort();
    cli = startLibvirtCli(daemon.uri(`test://${node}`), port, "destroy", dir.path);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+|\n\s*\+-+\+/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    await daemon.destroy();
    await dir?.remove();
  });

  it("answers a query that arrived while the daemon was down, once it is back", async () => {
    const first = await dig(port, ["www.jitsu.test", "A"]);
    assert.equal(first.status, "NOERROR", first.raw);
    await cli!.waitFor(/Stopping VM 'www' \(destroy\)/, 20_000); // idle for 2 x TTL
    await new Promise((r) => setTimeout(r, 500));
    await daemon.stop();
    await cli!.waitFor(/lost the connection to test\+unix/, 10_000);
    const waiting = run(
      "dig",
      ["@127.0.0.1", "-p", String(port), "+time=30", "+tries=1", "www.jitsu.test", "A"],
      40_000,
    );
    await new Promise((r) => setTimeout(r, 1000));
    await daemon.start();
    const res = await waiting;
    assert.match(res.stdout, /status: NOERROR/, `${res.stdout}\n${cli!.output()}`);
    assert.match(res.stdout, /^www\.jitsu\.test\.\s+1\s+IN\s+A\s+192\.168\.122\.\d+$/m, res.stdout);
    assert.match(cli!.output(), /libvirt: reconnected to test\+unix/);
  });
});

describe("jitsu -x libvirt: a probed domain started behind its back (e2e)", { timeout: 120_000 }, () => {
  const daemon = new PrivateLibvirtd();
  const PROBED_UUID = "0badc0de-0000-4000-8000-0000000c1200";
  const PROBED = `<domain type='test'>
  <name>probed</name><uuid>${PROBED_UUID}</uuid><memory>65536</memory><os><type>hvm</type></os>
  <devices><interface type='network'><mac address='52:54:00:c1:00:02'/><source network='default'/></interface></devices>
</domain>`;
  let holder: LibvirtBackend;
  let cli: CliProcess | undefined;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  /** The probe's service: listens only once the test says the VM's service is up. */
  const service: Server = createServer((c) => c.end());
  let uri = "";
  let port = 0;
  let http = 0;
  let probePort = 0;

  before(async () => {
    dir = await tempDir();
    ({ uri, holder } = await startWithDomain(daemon, "probed", PROBED));
    [port, http, probePort] = [await freePort(), await freePort(), await freePort()];
    cli = startCli([
      ...["-x", "libvirt", "-c", uri, "-l", String(port), "-f", "0.0.0.0", "-t", "60", "-d", "0"],
      ...["--start-timeout", "60", "--http", `127.0.0.1:${http}`, "--state-dir", dir.path],
      `dns=probed.jitsu.test,name=probed,ip=127.0.0.1,ready=tcp:127.0.0.1:${probePort}`,
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 30_000);
    await cli.waitFor(/Serving \/status/, 30_000);
  });

  after(async () => {
    await cli?.stop();
    await holder?.close();
    await daemon.destroy();
    await new Promise((r) => service.close(r));
    await dir?.remove();
  });

  it("is adopted, but answered and shown ready only once its probe passes", async () => {
    const status = async (): Promise<{ state: string; totalStarts: number; totalRequests: number }> =>
      (await getStatus(http)).get("probed")!;
    assert.equal((await status()).state, "off");
    daemon.virsh(uri, "start probed");
    await cli!.waitFor(/VM 'probed' was started behind our back; adopting it/, 10_000);
    assert.equal((await status()).state, "starting", "not ready while nothing listens on its probe's port");
    // A query waits for the adoption's probe.
    let answered = false;
    const query = run(
      "dig",
      ["@127.0.0.1", "-p", String(port), "+time=30", "+tries=1", "probed.jitsu.test", "A"],
      40_000,
    ).finally(() => (answered = true));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(answered, false, `answered before its probe passed:\n${cli!.output()}`);
    assert.equal((await status()).state, "starting");
    assert.doesNotMatch(cli!.output(), /VM 'probed' is ready after/);

    await new Promise<void>((resolve, reject) => {
      service.once("error", reject);
      service.listen(probePort, "127.0.0.1", resolve);
    });
    const res = await query;
    assert.match(res.stdout, /status: NOERROR/, `${res.stdout}\n${cli!.output()}`);
    assert.match(res.stdout, /^probed\.jitsu\.test\.\s+\d+\s+IN\s+A\s+127\.0\.0\.1$/m, res.stdout);
    const adopted = await status();
    assert.equal(adopted.state, "ready");
    assert.equal(adopted.totalStarts, 0, "adopted, not started by jitsu");
    assert.equal(adopted.totalRequests, 1, "the query, not the event");
    assert.match(cli!.output(), /VM 'probed' is ready after \d+ ms/);
    assert.doesNotMatch(cli!.output(), /Starting VM 'probed'/);
    assert.equal(daemon.virsh(uri, "domstate probed"), "running");
  });
});
