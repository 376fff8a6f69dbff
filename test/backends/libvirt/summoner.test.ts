/**
 * The Summoner driving the libvirt backend against a real libvirtd (test
 * driver): a request starts the VM and answers with the address libvirt
 * reports; every stop mode, then a request that brings the VM back; the
 * reaper stops an idle VM.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { LibvirtBackend } from "../../../src/backends/libvirt/backend.js";
import { parseLibvirtUri } from "../../../src/backends/libvirt/uri.js";
import type { StopMode } from "../../../src/backends/contract.js";
import { ManualClock, systemClock } from "../../../src/clock/index.js";
import { silentLogger } from "../../../src/log/index.js";
import { Summoner } from "../../../src/summoner/index.js";
import { PrivateLibvirtd } from "../../doubles/libvirtd.js";
import { NODE_XML, spec } from "./fixtures.js";
import { summonerOptions } from "../../support/summoner.js";

describe("Summoner with the libvirt backend (real libvirtd)", { timeout: 120_000 }, () => {
  const daemon = new PrivateLibvirtd();
  let backend: LibvirtBackend;
  let summoner: Summoner | undefined;

  before(async () => {
    const node = daemon.writeFile("node.xml", NODE_XML);
    await daemon.start();
    backend = new LibvirtBackend(parseLibvirtUri(daemon.uri(`test://${node}`)), {
      log: silentLogger(),
      clock: systemClock,
    });
    await backend.connect();
  });

  after(async () => {
    await summoner?.close();
    await backend.close();
    await daemon.destroy();
  });

  it("summons on request, answers with the discovered address, and comes back after every stop mode", async () => {
    summoner = await Summoner.create(
      summonerOptions({
        backend,
        backendName: "libvirt",
        specs: [spec("dns=www.example.org,name=www")],
        clock: systemClock,
        startTimeoutSeconds: 20,
        reaperIntervalMs: 3_600_000,
      }),
    );
    const s = summoner;
    const www = { label: "www", ref: "6695eb01-f6a4-8304-79aa-97f2502e193f" };
    assert.equal(await backend.state(www), "off");
    const ips = await s.request("www");
    assert.equal(ips.length, 1);
    assert.match(ips[0]!, /^192\.168\.122\.\d+$/);
    assert.equal(await backend.state(www), "running");
    // Hot path: synchronous while ready.
    assert.equal(s.request("www"), s.request("www"));

    const expected: Record<StopMode, string> = {
      destroy: "off",
      shutdown: "off",
      suspend: "paused",
      pause: "paused",
      save: "suspended",
    };
    for (const mode of ["suspend", "pause", "save", "shutdown", "destroy"] as const) {
      await s.stopVm("www", mode);
      assert.equal(await backend.state(www), expected[mode], `after stop (${mode})`);
      const again = await s.request("www");
      // The test driver hands out a lease by domain ID, which changes when the domain starts again.
      assert.deepEqual([...again], await backend.addresses(www), `after stop (${mode}) and a request`);
      assert.equal(await backend.state(www), "running", `running again after ${mode}`);
    }
    const status = s.status().find((v) => v.label === "www")!;
    assert.equal(status.state, "ready");
    assert.equal(status.totalStarts, 6);
    await s.close();
    summoner = undefined;
  });

  it("the reaper stops (suspends) a VM nobody asked for during 2 x TTL", async () => {
    const clock = new ManualClock(Date.now());
    const s = await Summoner.create(
      summonerOptions({
        backend,
        backendName: "libvirt",
        specs: [spec("dns=db.example.org,name=db,ip=10.0.0.2")],
        clock,
        ttlSeconds: 10,
        startTimeoutSeconds: 20,
        stopMode: "suspend",
        reaperIntervalMs: 5000,
      }),
    );
    summoner = s;
    const db = { label: "db", ref: "a1b2c3d4-0000-4000-8000-000000000002" };
    // db is already running: the first request adopts it.
    assert.deepEqual([...(await s.request("db"))], ["10.0.0.2"]);
    await clock.advance(15_000);
    await s.tick();
    assert.equal(await backend.state(db), "running", "not idle long enough yet");
    await clock.advance(10_000);
    await s.tick();
    assert.equal(await backend.state(db), "paused");
    assert.deepEqual([...(await s.request("db"))], ["10.0.0.2"]);
    assert.equal(await backend.state(db), "running");
    await s.close();
    summoner = undefined;
  });
});
