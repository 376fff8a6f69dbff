/**
 * The status page at / in a real browser: Debian's headless Chromium driven
 * by playwright-core, against the built CLI (process backend, real dig). It
 * sees every VM, follows a summon live (off -> starting -> ready, no reload),
 * filters, stops a VM with the admin token, and takes a screenshot
 * (status-page.png in $JITSU_TEST_ARTIFACTS, else the test's temp dir). With
 * 10,000 VMs it measures how long the page takes to be usable.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { Page } from "playwright-core";
import { launchChromium, type Browser } from "../support/browser.js";
import { dig, freePort, localArgs, startCli, tempDir, type CliProcess } from "../support/index.js";

const TOKEN = "page-t0ken";

/**
 * What these tests touch in the page, for functions that run there (this file
 * is compiled without the DOM's types, and the page's CSP forbids strings).
 */
interface PageElement {
  readonly textContent: string | null;
  readonly dataset: Record<string, string | undefined>;
}
interface PageWindow {
  document: {
    querySelector(selector: string): PageElement | null;
    querySelectorAll(selector: string): { length: number };
  };
  seen: string[];
  notReloaded: boolean;
  jitsuReadyAt: number;
  MutationObserver: new (fn: () => void) => { observe(target: unknown, options: object): void };
  sessionStorage: { getItem(key: string): string | null };
  localStorage: { length: number };
}

describe("the status page in headless Chromium", () => {
  const clis: CliProcess[] = [];
  const dirs: Awaited<ReturnType<typeof tempDir>>[] = [];
  let browser: Browser | undefined;

  after(async () => {
    await browser?.close();
    for (const cli of clis) await cli.stop("SIGKILL");
    for (const dir of dirs) await dir.remove();
  });

  async function jitsu(args: string[]): Promise<{ dns: number; http: number; dir: string }> {
    const dir = await tempDir("jitsu-page-");
    dirs.push(dir);
    const dns = await freePort();
    const http = await freePort();
    const cli = startCli([
      ...localArgs(dns, dir.path),
      "--http",
      `127.0.0.1:${http}`,
      "--http-token",
      TOKEN,
      ...args,
    ]);
    clis.push(cli);
    await cli.waitFor(/Serving \/status/, 60_000);
    return { dns, http, dir: dir.path };
  }

  async function page(): Promise<Page> {
    browser ??= await launchChromium({ width: 1180, height: 760 });
    const p = await browser.context.newPage();
    p.on("pageerror", (err) => assert.fail(`an error on the page: ${err.message}`));
    return p;
  }

  const stateOf = (p: Page, vm: string): Promise<string> =>
    p.locator(`tr[data-vm="${vm}"] .state`).innerText();

  it("shows every VM, follows a summon live, filters, stops a VM with the token, and is saved as a screenshot", async () => {
    const vms = [
      // Ready 1.5 s after its process starts: long enough to see "starting".
      "name=www,dns=www.jitsu.test,dns=jitsu.test,ip=127.0.0.9,response_delay=1.5,exec=sleep 300",
      "name=db,dns=db.jitsu.test,ip=127.0.0.10,exec=sleep 300",
      "name=ci,dns=ci.jitsu.test,ip=127.0.0.11,exec=sleep 300",
      "name=wiki,dns=wiki.jitsu.test,ip=127.0.0.12,exec=sleep 300",
      "name=grafana,dns=grafana.jitsu.test,ip=127.0.0.13,exec=sleep 300",
      // Exits at once: its start fails, and the page shows why.
      "name=broken,dns=broken.jitsu.test,ip=127.0.0.14,response_delay=1,exec=false",
    ];
    const { dns, http, dir } = await jitsu(vms);
    // Something to show: one VM up, one failed, a few queries.
    assert.equal((await dig(dns, ["db.jitsu.test", "A"])).status, "NOERROR");
    assert.equal((await dig(dns, ["broken.jitsu.test", "A"])).status, "SERVFAIL");

    const p = await page();
    const url = `http://127.0.0.1:${http}/`;
    const requested: string[] = [];
    p.on("request", (r) => requested.push(r.url()));
    await p.goto(url);
    await p.waitForSelector("body[data-ready]");

    // Every VM has a row, with table semantics: a caption, column headers, a row header per VM.
    for (const label of ["www", "db", "ci", "wiki", "grafana", "broken"]) {
      assert.equal(await p.locator(`tr[data-vm="${label}"]`).count(), 1, `the row of ${label}`);
    }
    assert.equal(await p.locator("table#vms tbody tr").count(), 6);
    assert.match(await p.locator("table#vms caption").innerText(), /VMs 1–6 of 6/);
    assert.equal(await p.locator("table#vms thead th[scope=col]").count(), 11);
    assert.equal(await p.locator("table#vms tbody th[scope=row]").count(), 6);
    assert.equal(await p.getByLabel("Filter").count(), 1, "the filter box has a label");
    assert.equal(await p.locator("[aria-live=polite]").count(), 1);
    assert.equal(await stateOf(p, "db"), "ready");
    assert.equal(await stateOf(p, "broken"), "failed");
    assert.notEqual(await p.locator('tr[data-vm="broken"] td.error').innerText(), "");

    // Live: record every state the www row shows, then summon it with dig. No reload.
    await p.evaluate(() => {
      const w = globalThis as unknown as PageWindow;
      w.notReloaded = true;
      w.seen = [];
      const note = (): void => {
        const state = w.document.querySelector('tr[data-vm="www"] .state')?.textContent ?? "";
        if (w.seen.at(-1) !== state) w.seen.push(state);
      };
      note();
      new w.MutationObserver(note).observe(w.document.querySelector("table#vms"), {
        subtree: true,
        childList: true,
        characterData: true,
      });
    });
    const answer = await dig(dns, ["www.jitsu.test", "A"]);
    assert.deepEqual(
      answer.answers.map((a) => a.data),
      ["127.0.0.9"],
    );
    await p.waitForFunction(() => (globalThis as unknown as PageWindow).seen.includes("ready"));
    const seen = await p.evaluate(() => (globalThis as unknown as PageWindow).seen);
    assert.deepEqual(seen, ["off", "starting", "ready"]);
    assert.equal(await p.evaluate(() => (globalThis as unknown as PageWindow).notReloaded), true);
    assert.match(await p.locator("#announcer").innerText({ timeout: 5000 }), /www is (starting|ready)/);

    // The filter: by name, then by DNS name, then cleared.
    await p.getByLabel("Filter").fill("wiki");
    await p.waitForFunction(
      () =>
        (globalThis as unknown as PageWindow).document.querySelectorAll("table#vms tbody tr").length === 1,
    );
    assert.equal(await p.locator('tr[data-vm="wiki"]').count(), 1);
    await p.getByLabel("Filter").fill("grafana.jitsu");
    await p.waitForFunction(
      () =>
        (globalThis as unknown as PageWindow).document.querySelector("table#vms tbody tr")?.dataset.vm ===
        "grafana",
    );
    await p.getByLabel("Filter").fill("");
    await p.waitForFunction(
      () =>
        (globalThis as unknown as PageWindow).document.querySelectorAll("table#vms tbody tr").length === 6,
    );

    // Stop with the token: entered once, kept in sessionStorage only.
    await p.getByLabel("Admin token").fill(TOKEN);
    await p.getByRole("button", { name: "Use token" }).click();
    assert.equal(
      await p.evaluate(() => (globalThis as unknown as PageWindow).sessionStorage.getItem("jitsu-token")),
      TOKEN,
    );
    assert.equal(await p.evaluate(() => (globalThis as unknown as PageWindow).localStorage.length), 0);
    await p.getByRole("button", { name: "Stop www" }).click();
    await p.waitForFunction(
      () =>
        (globalThis as unknown as PageWindow).document.querySelector('tr[data-vm="www"] .state')
          ?.textContent === "off",
    );
    assert.deepEqual((await p.evaluate(() => (globalThis as unknown as PageWindow).seen)).slice(-2), [
      "stopping",
      "off",
    ]);

    // Nothing was fetched from anywhere but jitsu.
    for (const r of requested) assert.ok(r.startsWith(url), `a request to ${r}`);

    // The counters follow the `stats` events (every 5 s): www's request arrives without a reload.
    await p.waitForFunction(
      () =>
        (globalThis as unknown as PageWindow).document.querySelector('tr[data-vm="www"] td.requests')
          ?.textContent === "1",
      undefined,
      { timeout: 15_000 },
    );

    // The artifact: the whole page as it is now (www stopped, db ready, broken failed).
    await p.locator("h1").click();
    const out = process.env.JITSU_TEST_ARTIFACTS ?? dir;
    mkdirSync(out, { recursive: true });
    const shot = join(out, "status-page.png");
    await p.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot) && statSync(shot).size > 10_000, `a screenshot at ${shot}`);
    await p.close();
  });

  it("with 10,000 VMs: usable within 2 s, filtered and paged", async (t) => {
    const n = 10_000;
    const dir = await tempDir("jitsu-page-10k-");
    dirs.push(dir);
    const config = join(dir.path, "vms.yaml");
    let yaml = "vms:\n";
    for (let i = 0; i < n; i++) {
      yaml += `  - name: m${i}\n    dns: h${i}.many.test\n    ip: 127.1.${i >> 8}.${i & 255}\n    exec: sleep 300\n`;
    }
    writeFileSync(config, yaml);
    const { http } = await jitsu(["--config", config]);

    const p = await page();
    const began = Date.now();
    await p.goto(`http://127.0.0.1:${http}/`);
    await p.waitForSelector("body[data-ready]", { timeout: 30_000 });
    const readyMs = await p.evaluate(() => (globalThis as unknown as PageWindow).jitsuReadyAt);
    assert.match(await p.locator("table#vms caption").innerText(), /VMs 1–100 of 10,000/);
    assert.equal(await p.locator("table#vms tbody tr").count(), 100, "one page of rows in the DOM");
    // Interactive: the filter answers.
    const f0 = Date.now();
    await p.getByLabel("Filter").fill("h9999.many");
    await p.waitForFunction(
      () =>
        (globalThis as unknown as PageWindow).document.querySelector("table#vms tbody tr")?.dataset.vm ===
        "m9999",
    );
    const filterMs = Date.now() - f0;
    const totalMs = Date.now() - began;
    await p.getByLabel("Filter").fill("");
    await p.getByRole("button", { name: "Next" }).click();
    await p.waitForFunction(
      () =>
        (globalThis as unknown as PageWindow).document.querySelector("#page-info")?.textContent ===
        "Page 2 of 100",
    );
    t.diagnostic(
      `10,000 VMs: page usable ${Math.round(readyMs)} ms after navigation began (/status read and the first page drawn); ` +
        `the filter answered in ${filterMs} ms; ${totalMs} ms from goto to the filtered row`,
    );
    // The bound is 2 s (met on a quiet machine); a loaded CI machine gets 8 s before this fails.
    assert.ok(readyMs < 8000, `usable after ${Math.round(readyMs)} ms`);
    await p.close();
  });
});
