/**
 * End to end: the built CLI with `-x libxl`, xl found on PATH (the xl double)
 * and xenstored at XENSTORED_PATH (the xenstored double), queried with real
 * dig. The README's MirageOS and rumprun examples: dig -> the xl double creates
 * the domain from the expected config file -> the rumprun JSON is in xenstore
 * before unpause -> the answer waits until the test writes wait_for_key ->
 * answer. An xl error answers SERVFAIL and its stderr reaches the log.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI, dig, freePort, run, startCli, type CliProcess } from "../../support/index.js";
import { SynjitsuListenerDouble } from "../../doubles/synjitsu.js";
import { readXlState } from "../../doubles/xl.js";
import { xenFixture, type XenFixture } from "../../doubles/xen-fixture.js";

describe("jitsu -x libxl through the xl and xenstored doubles (e2e)", () => {
  let fx: XenFixture;
  let cli: CliProcess;
  let port: number;
  let json: Buffer;
  let synjitsu: SynjitsuListenerDouble;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    // xenFixture wants a TestContext for cleanup; give it one that records.
    fx = await xenFixture({
      after: (fn: () => Promise<void>) => cleanups.push(fn),
    } as unknown as import("node:test").TestContext);
    const mirage = await fx.kernel("mirage-www.xen");
    const nginx = await fx.kernel("nginx.bin");
    const bad = await fx.kernel("broken.xen", false);
    await writeFile(join(fx.dir, "stubetc.iso"), "iso");
    await writeFile(join(fx.dir, "data.iso"), "iso");
    json = Buffer.from(
      '{"net":{"if":"xenif0","cloner":"true","type":"inet","method":"static","addr":"10.0.0.2","mask":"24"},"cmdline":"nginx.bin -c /data/conf/nginx.conf"}',
    );
    await writeFile(join(fx.dir, "json.cfg"), json);
    port = await freePort();
    synjitsu = new SynjitsuListenerDouble(join(fx.dir, "synjitsu.sock"));
    await synjitsu.start();
    cleanups.push(() => synjitsu.stop());
    cli = startCli(
      [
        "--synjitsu",
        "6e696eb7-09f4-484c-981b-8d34efa0304d",
        "--synjitsu-socket",
        synjitsu.socketPath,
        "-x",
        "libxl",
        "-l",
        String(port),
        "-f",
        "0.0.0.0",
        "-d",
        "0",
        "--state-dir",
        join(fx.dir, "state"),
        `dns=www.example.org,ip=10.0.0.1,kernel=${mirage},memory=64000,name=www,nic=br0,use_synjitsu=1`,
        `dns=rump.example.org,memory=64000,ip=10.0.0.2,name=rumprun,kernel=${nginx},disk=${fx.dir}/stubetc.iso@xvda,disk=${fx.dir}/data.iso@xvdb,nic=br0,rumprun_config=${fx.dir}/json.cfg,wait_for_key=data/ready`,
        `dns=bad.example.org,ip=10.0.0.3,kernel=${bad},memory=32M,name=bad`,
      ],
      { ...fx.env, PATH: `${fx.bin}:${process.env.PATH ?? ""}` },
    );
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/, 60_000);
  });

  after(async () => {
    await cli?.stop();
    for (const c of cleanups.reverse()) await c();
  });

  it("MirageOS example: dig starts the domain from the generated config and gets the address", async () => {
    const res = await dig(port, ["www.example.org", "A"]);
    assert.equal(res.status, "NOERROR", res.raw);
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["10.0.0.1"],
    );
    const dom = readXlState(fx.xlState).domains.find((d) => d.name === "www");
    assert.ok(dom !== undefined, "the xl double created the domain");
    assert.equal(dom.state, "running");
    assert.equal(dom.memoryMiB, 63);
    assert.deepEqual(
      dom.vifs.map((v) => v.bridge),
      ["br0"],
    );
    assert.match(dom.configText, /^kernel = ".*mirage-www\.xen"$/m);
    // use_synjitsu: Synjitsu hears the MAC and address of the VM that started.
    await synjitsu.waitForMessages(1);
    assert.deepEqual(synjitsu.messages, [{ mac: dom.vifs[0]!.mac, ip: "10.0.0.1" }]);
  });

  it("rumprun example: JSON in xenstore before unpause, and the answer waits for wait_for_key", async () => {
    let answered = false;
    const query = dig(port, ["rump.example.org", "A", "+time=40"]).then((r) => {
      answered = true;
      return r;
    });
    let dom;
    for (let i = 0; i < 300; i++) {
      dom = readXlState(fx.xlState).domains.find((d) => d.name === "rumprun" && d.state === "running");
      if (dom !== undefined) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(dom !== undefined, "the domain was created and unpaused");
    assert.equal(
      dom.rumprunAtUnpause,
      json.toString("base64"),
      "the rumprun JSON was at /local/domain/<domid>/rumprun/cfg, byte for byte, at unpause",
    );
    assert.deepEqual(
      dom.disks.map((d) => `${d.vdev}=${d.target}`),
      [`xvda=${fx.dir}/stubetc.iso`, `xvdb=${fx.dir}/data.iso`],
    );
    for (let i = 0; i < 100 && fx.xsd.watchCount() === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(fx.xsd.watchCount(), 1, "jitsu watches the key");
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(answered, false, "no answer before the key exists");
    fx.xsd.write(`/local/domain/${dom.domid}/data/ready`, "1");
    const res = await query;
    assert.equal(res.status, "NOERROR", res.raw);
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["10.0.0.2"],
    );
  });

  it("an xl error answers SERVFAIL and xl's own message is in the log", async () => {
    const res = await dig(port, ["bad.example.org", "A"]);
    assert.equal(res.status, "SERVFAIL", res.raw);
    await cli.waitFor(
      /VM 'bad' could not be started: .*xc_dom_find_loader: no loader found: Invalid kernel/,
      30_000,
    );
  });

  it("--xl PATH that does not exist: a clear error at start-up, naming the option", async () => {
    const res = await run(process.execPath, [
      CLI,
      "-x",
      "libxl",
      "--xl",
      "/nonexistent/xl",
      "-f",
      "0.0.0.0",
      "-l",
      "0",
      "--state-dir",
      join(fx.dir, "s2"),
      `dns=x.example.org,ip=10.0.0.9,kernel=${fx.dir}/mirage-www.xen,memory=64M,name=x`,
    ]);
    assert.notEqual(res.code, 0);
    assert.match(
      res.stderr,
      /^jitsu: option '--xl': program '\/nonexistent\/xl' does not exist; install xen-utils, or give its path with --xl PATH$/m,
    );
  });
});
