/**
 * group= and after=: one VM's keys (spec.ts) and the whole configuration
 * (groups.ts groupPlans), as start-up (the CLI's checkSettings) and a reload
 * check them: start order, and a clear error for each mistake.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseArgs } from "../../src/cli/command.js";
import { checkSettings } from "../../src/cli/run.js";
import { groupPlans, type VmSpec } from "../../src/config/index.js";
import { ConfigError } from "../../src/errors/index.js";
import { spec } from "../doubles/test-backend.js";

const specs = (...configs: string[]): VmSpec[] => configs.map(spec);

function rejects(configs: string[], message: RegExp, maxRunning = 0): void {
  assert.throws(
    () => groupPlans(specs(...configs), { maxRunning }),
    (err: unknown) => err instanceof ConfigError && message.test(err.message),
  );
}

describe("group= and after=", () => {
  it("orders each group's members after their after= members, ties in configuration order", () => {
    const plans = groupPlans(
      specs(
        "dns=web.t,ip=10.0.0.1,name=web,group=shop,after=db,after=cache.t",
        "dns=db.t,ip=10.0.0.2,name=db,group=shop",
        "dns=worker.t,ip=10.0.0.3,name=worker,group=shop,after=db",
        "dns=cache.t,ip=10.0.0.4,name=cache,group=shop",
        "dns=solo.t,ip=10.0.0.5,name=solo",
        "dns=a.t,ip=10.0.0.6,name=a,group=other",
      ),
    );
    assert.deepEqual([...plans.keys()], ["shop", "other"]);
    const shop = plans.get("shop")!;
    assert.deepEqual(shop.members, ["db", "cache", "web", "worker"]);
    // after= by a DNS name is resolved to the member's label.
    assert.deepEqual(shop.after.get("web"), ["db", "cache"]);
    assert.deepEqual(plans.get("other")!.members, ["a"]);
  });

  it("after= naming no VM says so, with the nearest member", () => {
    rejects(
      ["dns=web.t,ip=10.0.0.1,name=web,group=shop,after=dbb", "dns=db.t,ip=10.0.0.2,name=db,group=shop"],
      /^VM 'web', key 'after': no VM 'dbb' is configured; did you mean 'db'\? \(after= names another member of group 'shop' by its name, uuid or a DNS name\)$/,
    );
  });

  it("after= itself, or a VM of another group or none, is an error naming both", () => {
    rejects(
      ["dns=web.t,ip=10.0.0.1,name=web,group=shop,after=web"],
      /^VM 'web', key 'after': a VM cannot start after itself$/,
    );
    rejects(
      ["dns=web.t,ip=10.0.0.1,name=web,group=shop,after=db", "dns=db.t,ip=10.0.0.2,name=db,group=data"],
      /^VM 'web', key 'after': VM 'db' is in group 'data', not in group 'shop'; after= orders members of the same group/,
    );
    rejects(
      ["dns=web.t,ip=10.0.0.1,name=web,group=shop,after=db", "dns=db.t,ip=10.0.0.2,name=db"],
      /^VM 'web', key 'after': VM 'db' is in no group, not in group 'shop'.*give it group=shop/,
    );
  });

  it("a cycle of after= names the members in it", () => {
    rejects(
      [
        "dns=a.t,ip=10.0.0.1,name=a,group=g,after=c",
        "dns=b.t,ip=10.0.0.2,name=b,group=g,after=a",
        "dns=c.t,ip=10.0.0.3,name=c,group=g,after=b",
        "dns=d.t,ip=10.0.0.4,name=d,group=g",
      ],
      /^VM 'a', key 'after': after= makes a cycle in group 'g' \(a after c after b after a\): none of them could start first/,
    );
  });

  it("after= without group=, and a bad group name, are errors of the VM", () => {
    assert.throws(
      () => spec("dns=web.t,ip=10.0.0.1,name=web,after=db"),
      /^ConfigError: VM 'web', key 'after': after= orders the start of a group's members, but this VM has no group=/,
    );
    assert.throws(
      () => spec("dns=web.t,ip=10.0.0.1,name=web,group=my shop"),
      /^ConfigError: VM 'web', key 'group': expected a group name of letters, digits/,
    );
  });

  it("a group larger than --max-running could never be up: an error at start-up", () => {
    rejects(
      ["dns=a.t,ip=10.0.0.1,name=a,group=g", "dns=b.t,ip=10.0.0.2,name=b,group=g"],
      /^group 'g' has 2 members \(a, b\) but --max-running is 1: they could never all be up at once/,
      1,
    );
    assert.throws(
      () =>
        checkSettings(
          parseArgs([
            "-x",
            "process",
            "--max-running",
            "1",
            "dns=a.t,ip=127.0.0.1,name=a,group=g,exec=true",
            "dns=b.t,ip=127.0.0.1,name=b,group=g,after=a,exec=true",
          ]),
        ),
      /group 'g' has 2 members \(a, b\) but --max-running is 1/,
    );
    assert.throws(
      () =>
        checkSettings(parseArgs(["-x", "process", "dns=a.t,ip=127.0.0.1,name=a,group=g,after=b,exec=true"])),
      /VM 'a', key 'after': no VM 'b' is configured/,
    );
  });
});
