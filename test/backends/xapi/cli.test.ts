/**
 * End to end: the built `jitsu -x xapi` against the XenAPI double, queried with
 * real `dig`. A query summons the VM (VM.start), the answer comes once it runs,
 * the idle VM is suspended (VM.suspend) and the next query resumes it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { dig, freePort, startCli, type CliProcess } from "../../support/index.js";
import { XapiServerDouble } from "../../doubles/xapi-server.js";

const PASSWORD = "e2e-Secret-pw";
const DB_UUID = "2d1e3c4b-5a69-4788-9a0b-1c2d3e4f5a6b";

describe("jitsu -x xapi (e2e with dig)", () => {
  let xapi: XapiServerDouble;
  let cli: CliProcess;
  let dns: number;

  before(async () => {
    xapi = await XapiServerDouble.start({
      users: { root: PASSWORD },
      vms: [
        { name: "www", macs: ["00:16:3e:00:00:01"] },
        { name: "db", uuid: DB_UUID },
        { name: "unrelated" },
      ],
    });
    dns = await freePort();
    cli = startCli([
      "-x",
      "xapi",
      "-c",
      xapi.urlWith("root", PASSWORD),
      "-f",
      "0.0.0.0",
      "-l",
      String(dns),
      "-t",
      "1",
      "-d",
      "0",
      "-m",
      "suspend",
      "dns=www.example.org,ip=10.0.0.1,name=www",
      `dns=db.example.org,ip=10.0.0.2,uuid=${DB_UUID}`,
    ]);
    await cli.waitFor(/Starting server on 127\.0\.0\.1:\d+/);
  });

  after(async () => {
    await cli?.stop();
    await xapi?.close();
  });

  it("connects without printing the password", () => {
    const out = cli.output();
    assert.match(out, /Connecting to http:\/\/root:\*\*\*@127\.0\.0\.1:\d+\.\.\./);
    assert.match(out, /Connected to http:\/\/root:\*\*\*@127\.0\.0\.1:\d+\n/);
    assert.ok(!out.includes(PASSWORD), out);
    assert.equal(xapi.vm("www").powerState, "Halted");
  });

  it("starts the VM named in CONFIG on a query, then answers", async () => {
    const res = await dig(dns, ["www.example.org", "A"]);
    assert.equal(res.status, "NOERROR");
    assert.deepEqual(
      res.answers.map((a) => [a.name, a.type, a.data]),
      [["www.example.org.", "A", "10.0.0.1"]],
    );
    assert.equal(xapi.vm("www").powerState, "Running");
    const start = xapi.methodCalls("VM.start");
    assert.equal(start.length, 1);
    assert.deepEqual(start[0]!.params.slice(1), [xapi.vm("www").ref, false, false]);
    assert.equal(xapi.vm("db").powerState, "Halted", "only the VM asked for");
  });

  it("starts a VM given by uuid", async () => {
    const res = await dig(dns, ["db.example.org", "A"]);
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["10.0.0.2"],
    );
    assert.equal(xapi.vm(DB_UUID).powerState, "Running");
    assert.equal(xapi.vm("unrelated").powerState, "Halted");
  });

  it("suspends idle VMs after 2 x TTL and resumes them on the next query", async () => {
    // -t 1: idle after 2 s; the reaper runs every 5 s.
    for (let i = 0; i < 150 && xapi.vm("www").powerState !== "Suspended"; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(xapi.vm("www").powerState, "Suspended");
    assert.ok(xapi.methodCalls("VM.suspend").length >= 1);
    const res = await dig(dns, ["www.example.org", "A"]);
    assert.deepEqual(
      res.answers.map((a) => a.data),
      ["10.0.0.1"],
    );
    assert.equal(xapi.vm("www").powerState, "Running");
    assert.ok(xapi.methodCalls("VM.resume").length >= 1);
  });
});

describe("jitsu -x xapi start-up failures (e2e)", () => {
  let xapi: XapiServerDouble;
  before(async () => {
    xapi = await XapiServerDouble.start({ users: { root: PASSWORD }, vms: [{ name: "www" }] });
  });
  after(async () => {
    await xapi?.close();
  });

  async function failing(
    args: string[],
    env: NodeJS.ProcessEnv = {},
  ): Promise<{ code: number | null; out: string }> {
    const dns = await freePort();
    const cli = startCli(["-x", "xapi", "-f", "0.0.0.0", "-l", String(dns), ...args], env);
    try {
      await cli.waitFor(/jitsu: /, 20_000);
      const code = await new Promise<number | null>((resolve) => {
        if (cli.child.exitCode !== null) resolve(cli.child.exitCode);
        else cli.child.once("exit", (c) => resolve(c));
      });
      return { code, out: cli.output() };
    } finally {
      await cli.stop();
    }
  }

  it("bad credentials: exits non-zero with one line naming authentication and the host, never the password", async () => {
    const { code, out } = await failing([
      "-c",
      xapi.urlWith("root", "Wrong-Password-42"),
      "dns=www.example.org,ip=10.0.0.1,name=www",
    ]);
    assert.notEqual(code, 0);
    const line = out.split("\n").find((l) => l.startsWith("jitsu: "));
    assert.equal(
      line,
      `jitsu: xapi: authentication failed for user 'root' at ${xapi.url} (SESSION_AUTHENTICATION_FAILED root Authentication failure)`,
    );
    assert.ok(!out.includes("Wrong-Password-42"), out);
  });

  it("bad password from JITSU_XAPI_PASSWORD is not printed either", async () => {
    const { code, out } = await failing(["-c", xapi.url, "dns=www.example.org,ip=10.0.0.1,name=www"], {
      JITSU_XAPI_USER: "root",
      JITSU_XAPI_PASSWORD: "Env-Wrong-Password",
    });
    assert.notEqual(code, 0);
    assert.match(out, /jitsu: xapi: authentication failed for user 'root' at http:\/\/127\.0\.0\.1:\d+/);
    assert.ok(!out.includes("Env-Wrong-Password"), out);
  });

  it("an unknown VM is a clear start-up error", async () => {
    const { code, out } = await failing([
      "-c",
      xapi.urlWith("root", PASSWORD),
      "dns=www.example.org,ip=10.0.0.1,name=nope",
    ]);
    assert.notEqual(code, 0);
    assert.match(
      out,
      /jitsu: VM 'nope', key 'name': no VM named 'nope' on http:\/\/127\.0\.0\.1:\d+ \(templates and snapshots are not counted\)/,
    );
    assert.ok(!out.includes(PASSWORD), out);
  });

  it("-m save is refused at start-up: XAPI has no such stop mode", async () => {
    const { code, out } = await failing([
      "-c",
      xapi.urlWith("root", PASSWORD),
      "-m",
      "save",
      "dns=www.example.org,ip=10.0.0.1,name=www",
    ]);
    assert.notEqual(code, 0);
    assert.match(out, /jitsu: .*xapi.*save/);
  });
});
