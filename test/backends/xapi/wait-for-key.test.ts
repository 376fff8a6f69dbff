/**
 * wait_for_key with -x xapi: jitsu in the XAPI host's dom0 waits for the key
 * in xenstore (the xenstored double at XENSTORED_PATH, as libxenstore reads
 * it) under the domid XAPI reports, before it answers.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { XapiServerDouble } from "../../doubles/xapi-server.js";
import { XenstoredDouble } from "../../doubles/xenstored.js";
import { dig, freePort, startCli, tempDir } from "../../support/index.js";

test("-x xapi: the answer waits until wait_for_key appears under /local/domain/<domid>/", async (t) => {
  const dir = await tempDir();
  const xsd = new XenstoredDouble(join(dir.path, "xenstored.sock"));
  await xsd.start();
  const xapi = await XapiServerDouble.start({ users: { root: "pw" }, vms: [{ name: "www" }] });
  const dns = await freePort();
  const cli = startCli(
    [
      "-x",
      "xapi",
      "-c",
      xapi.urlWith("root", "pw"),
      "-f",
      "0.0.0.0",
      "-l",
      String(dns),
      "-d",
      "0",
      "dns=www.example.org,ip=10.0.0.1,name=www,wait_for_key=data/ready",
    ],
    { XENSTORED_PATH: xsd.socketPath },
  );
  t.after(async () => {
    await cli.stop();
    await xapi.close();
    await xsd.stop();
    await dir.remove();
  });
  await cli.waitFor(/Starting server/);
  let answered = false;
  const query = dig(dns, ["www.example.org"]).then((res) => {
    answered = true;
    return res;
  });
  await cli.waitFor(/Starting VM 'www'/);
  for (let i = 0; i < 50 && xapi.vm("www").powerState !== "Running"; i++)
    await new Promise((r) => setTimeout(r, 20));
  assert.equal(xapi.vm("www").powerState, "Running");
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(answered, false, "answered before the key was written");
  xsd.write(`/local/domain/${xapi.vm("www").domid}/data/ready`, "1");
  const res = await query;
  assert.equal(res.status, "NOERROR");
  assert.equal(res.answers[0]?.data, "10.0.0.1");
});
