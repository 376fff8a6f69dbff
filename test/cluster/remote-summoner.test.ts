/**
 * The worker's SummonTarget: ready VMs from memory with stable arrays and a
 * count, one summon message per VM however many queries wait, errors keep
 * the primary's message.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RemoteSummoner, type ToPrimary } from "../../src/cluster/index.js";
import { SummonRefusedError } from "../../src/errors/index.js";

function setup(): { sent: ToPrimary[]; target: RemoteSummoner } {
  const sent: ToPrimary[] = [];
  return { sent, target: new RemoteSummoner((m) => sent.push(m)) };
}

describe("RemoteSummoner", () => {
  it("answers a ready VM synchronously with the same array, counting each request, sending nothing", () => {
    const { sent, target } = setup();
    target.setReady([["www", ["10.0.0.1"]]], []);
    const a = target.request("www");
    const b = target.request("www");
    assert.ok(Array.isArray(a));
    assert.equal(a, b);
    assert.deepEqual(a, ["10.0.0.1"]);
    // An unchanged push keeps the array (the DNS server's prepared answers key on it).
    target.setReady([["www", ["10.0.0.1"]]], []);
    assert.equal(target.request("www"), a);
    assert.equal(sent.length, 0);
    assert.deepEqual(target.takeCounts(), [["www", 3]]);
    assert.deepEqual(target.takeCounts(), []);
    target.setReady([["www", ["10.0.0.9"]]], []);
    assert.deepEqual(target.request("www"), ["10.0.0.9"]);
  });

  it("requestIfReady answers from the copy (counted) and never asks the primary to start a VM", () => {
    const { sent, target } = setup();
    assert.equal(target.requestIfReady("www"), null);
    target.setReady([["www", ["10.0.0.1"]]], []);
    const a = target.requestIfReady("www");
    assert.deepEqual(a, ["10.0.0.1"]);
    assert.equal(target.request("www"), a);
    target.setReady([], ["www"]);
    assert.equal(target.requestIfReady("www"), null);
    assert.deepEqual(sent, [], "no summon message");
    assert.deepEqual(target.takeCounts(), [["www", 2]]);
  });

  it("sends one summon for concurrent requests of a VM that is not ready, and counts those that joined", async () => {
    const { sent, target } = setup();
    const p = [target.request("www"), target.request("www"), target.request("www")];
    assert.ok(p.every((r) => r instanceof Promise));
    assert.deepEqual(sent, [{ t: "summon", id: 1, label: "www" }]);
    target.settle(1, { addresses: ["10.0.0.1"] });
    for (const r of await Promise.all(p)) assert.deepEqual(r, ["10.0.0.1"]);
    // The first was counted by the primary's request(); the two that joined are reported.
    assert.deepEqual(target.takeCounts(), [["www", 2]]);
  });

  it("rejects with the primary's message, and a later request summons again", async () => {
    const { sent, target } = setup();
    const r = target.request("www") as Promise<readonly string[]>;
    target.settle(1, { error: "VM 'www' was not ready after 30 s (starting)" });
    await assert.rejects(r, { message: "VM 'www' was not ready after 30 s (starting)" });
    void (target.request("www") as Promise<unknown>).catch(() => undefined);
    assert.equal(sent.length, 2);
    // An answer for an unknown id (a stale or duplicated message) changes nothing.
    target.settle(99, { addresses: ["10.0.0.1"] });
    target.failAll("the primary is gone");
  });

  it("sends the client's address; one summon per VM and client prefix, so a refusal is the prefix's own", async () => {
    const { sent, target } = setup();
    const a = target.request("www", "192.0.2.1") as Promise<readonly string[]>;
    assert.equal(target.request("www", "192.0.2.77"), a, "the same /24 joins");
    const b = target.request("www", "198.51.100.1") as Promise<readonly string[]>;
    assert.notEqual(b, a, "another prefix: its own summon");
    assert.equal(target.request("www", "198.51.100.9"), b);
    assert.deepEqual(sent, [
      { t: "summon", id: 1, label: "www", client: "192.0.2.1" },
      { t: "summon", id: 2, label: "www", client: "198.51.100.1" },
    ]);
    // The primary refuses the first prefix (over its rate) and starts the VM for the second.
    target.settle(1, { error: "client 192.0.2.0/24 is over --summon-rate", refused: "summon-rate" });
    target.settle(2, { addresses: ["10.0.0.1"] });
    await assert.rejects(
      a,
      (err: unknown) => err instanceof SummonRefusedError && err.reason === "summon-rate",
    );
    assert.deepEqual(await b, ["10.0.0.1"]);
    // Refused queries are not counted; the one that joined the second summon is.
    assert.deepEqual(target.takeCounts(), [["www", 1]]);
  });

  it("a VM no longer ready is summoned through the primary; its unreported count is kept", () => {
    const { sent, target } = setup();
    target.setReady([["www", ["10.0.0.1"]]], []);
    target.request("www");
    target.setReady([], ["www"]);
    const r = target.request("www");
    assert.ok(r instanceof Promise);
    r.catch(() => undefined);
    assert.deepEqual(sent, [{ t: "summon", id: 1, label: "www" }]);
    assert.deepEqual(target.takeCounts(), [["www", 1]]);
    target.failAll("closing");
  });
});
