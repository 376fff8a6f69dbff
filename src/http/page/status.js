// The status page: reads /status and /history once, then follows /events
// (Server-Sent Events) without reloading. Plain JavaScript, no build step, no
// request outside this host. Only the rows of the current page are in the
// DOM, so 10,000 VMs cost one JSON parse and a sort. See src/http/README.md.
"use strict";

(() => {
  const HOUR_MS = 3_600_000;
  const TOKEN_KEY = "jitsu-token";
  /** /status on one line with only what the page shows of each VM (10,000 VMs: a third of the bytes). */
  const STATUS_URL =
    "/status?compact&fields=label,name,dns,ips,state,stateSince,lastRequest,startedAt,totalStarts," +
    "totalRequests,stopMode,ttl,lastError,backend,host";
  const $ = (id) => document.getElementById(id);

  /** label -> VM as /status gives it, times turned into ms. */
  let vms = new Map();
  /** Labels sorted by name; the current filter's matches; the page shown. */
  let order = [];
  let matches = [];
  let page = 0;
  /** label -> the <tr> of a VM on the current page. */
  const rows = new Map();
  /** Server time minus ours, so ages and countdowns use jitsu's clock. */
  let skew = 0;
  let info = { version: "", admin: false, host: null, startedAt: Date.now() };
  let qps = [];
  let starts = [];
  let dnsCounters = {};
  let source = null;
  let lastEventId = null;
  /** While /status loads, events wait here; those it already reflects (id <= its lastEventId) are dropped. */
  let queued = null;
  let reconnectDelay = 1000;

  const now = () => Date.now() + skew;
  const ms = (iso) => (iso === null || iso === undefined ? null : Date.parse(iso));

  // ---- formatting ---------------------------------------------------------

  function duration(msValue) {
    if (msValue === null || !Number.isFinite(msValue)) return "–";
    const s = Math.max(0, Math.round(msValue / 1000));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }
  const ago = (t) => (t === null ? "never" : `${duration(now() - t)} ago`);
  const num = (n) => (typeof n === "number" ? n.toLocaleString("en") : "–");
  const startMs = (d) => (d < 1000 ? `${Math.round(d)} ms` : `${(d / 1000).toFixed(2)} s`);

  /** A ready VM's idle stop, as the reaper decides it: 2 x TTL after its last request. */
  function idleStopAt(vm) {
    if (vm.state !== "ready") return null;
    return Math.max(vm.lastRequest ?? 0, vm.stateSince ?? 0) + 2 * vm.ttl * 1000;
  }

  // ---- loading ------------------------------------------------------------

  function adopt(raw) {
    return {
      label: raw.label,
      name: raw.name ?? raw.label,
      dns: raw.dns,
      ips: raw.ips,
      state: raw.state,
      stateSince: ms(raw.stateSince),
      lastRequest: ms(raw.lastRequest),
      startedAt: ms(raw.startedAt),
      totalStarts: raw.totalStarts,
      totalRequests: raw.totalRequests,
      stopMode: raw.stopMode,
      ttl: raw.ttl,
      lastError: raw.lastError,
      backend: raw.backend ?? "",
      host: raw.host ?? null,
      // What the filter matches besides the state and the error.
      text: [raw.label, raw.name ?? "", ...raw.dns, ...raw.ips, raw.backend ?? "", raw.host ?? ""]
        .join(" ")
        .toLowerCase(),
    };
  }

  async function loadStatus() {
    queued = [];
    let body;
    try {
      const res = await fetch(STATUS_URL, { cache: "no-store" });
      if (!res.ok) throw new Error(`/status answered ${res.status}`);
      body = await res.json();
    } catch (err) {
      queued = null;
      throw err;
    }
    skew = Date.parse(body.now) - Date.now();
    info = {
      version: body.version ?? "",
      admin: body.admin === true,
      startedAt: now() - body.uptimeSeconds * 1000,
    };
    vms = new Map(body.vms.map((raw) => [raw.label, adopt(raw)]));
    order = [...vms.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    dnsCounters = body.dns?.counters ?? {};
    $("admin").hidden = !info.admin;
    showToken();
    refilter(false);
    renderCounters();
    renderAbout();
    const waiting = queued;
    queued = null;
    const seen = typeof body.lastEventId === "number" ? body.lastEventId : -1;
    for (const event of waiting) if (event.id > seen) dispatch(event);
  }

  function dispatch(event) {
    if (queued !== null) return void queued.push(event);
    const handle = handlers[event.type];
    if (handle !== undefined) handle(event); // types this page does not know are ignored
  }

  async function loadHistory() {
    const res = await fetch("/history", { cache: "no-store" });
    if (!res.ok) return;
    const body = await res.json();
    qps = body.queriesPerSecond;
    starts = body.starts;
    renderCharts();
  }

  // ---- the table ----------------------------------------------------------

  function matchesFilter(vm, words, state) {
    if (state !== "" && vm.state !== state) return false;
    for (const w of words) {
      if (!vm.text.includes(w) && vm.state !== w && !(vm.lastError ?? "").toLowerCase().includes(w))
        return false;
    }
    return true;
  }

  /** Recomputes the matches; `keepPage` keeps the page number (a live change), else back to the first. */
  function refilter(keepPage) {
    const words = $("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    const state = $("state-filter").value;
    matches =
      words.length === 0 && state === ""
        ? order
        : order.filter((l) => matchesFilter(vms.get(l), words, state));
    if (!keepPage) page = 0;
    render();
  }

  function pageSize() {
    return Number($("page-size").value) || 100;
  }

  function render() {
    const size = pageSize();
    const pages = Math.max(1, Math.ceil(matches.length / size));
    page = Math.min(page, pages - 1);
    const first = page * size;
    const shown = matches.slice(first, first + size);
    const body = document.createElement("tbody");
    rows.clear();
    for (const label of shown) {
      const tr = makeRow(vms.get(label));
      rows.set(label, tr);
      body.append(tr);
    }
    $("vms").tBodies[0].replaceWith(body);
    const total = vms.size;
    const range = matches.length === 0 ? "none" : `${first + 1}–${first + shown.length}`;
    $("vms-caption").textContent =
      matches.length === total
        ? `VMs ${range} of ${num(total)}`
        : `VMs ${range} of ${num(matches.length)} matching (${num(total)} in all)`;
    $("page-info").textContent = `Page ${page + 1} of ${pages}`;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
  }

  function cell(tag, className) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    return el;
  }

  function makeRow(vm) {
    const tr = document.createElement("tr");
    tr.dataset.vm = vm.label;
    const name = cell("th");
    name.scope = "row";
    name.textContent = vm.name;
    const dns = cell("td", "dns");
    dns.textContent = vm.dns.join(", ");
    if (vm.ips.length > 0) {
      const sub = cell("div", "sub");
      sub.textContent = vm.ips.join(", ");
      dns.append(sub);
    }
    const backend = cell("td");
    backend.textContent = vm.backend;
    const host = cell("div", "sub");
    host.textContent = vm.host ?? "this host";
    backend.append(host);
    tr.append(
      name,
      dns,
      backend,
      cell("td", "state-cell"),
      cell("td", "last"),
      cell("td", "num starts"),
      cell("td", "num requests"),
      cell("td", "mode"),
      cell("td", "idle"),
      cell("td", "error"),
      cell("td", "actions-cell"),
    );
    fillRow(tr, vm);
    return tr;
  }

  /** The cells that change: state and age, counts, countdown, error, buttons. */
  function fillRow(tr, vm) {
    const c = tr.cells;
    const state = c[3];
    state.textContent = "";
    const badge = cell("span", `state state-${vm.state}`);
    badge.textContent = vm.state;
    const age = cell("span", "age");
    age.textContent = ` ${vm.stateSince === null ? "" : duration(now() - vm.stateSince)}`;
    state.append(badge, age);
    c[4].textContent = ago(vm.lastRequest);
    c[5].textContent = num(vm.totalStarts);
    c[6].textContent = num(vm.totalRequests);
    c[7].textContent = vm.stopMode;
    const stopAt = idleStopAt(vm);
    c[8].textContent = stopAt === null ? "–" : duration(stopAt - now());
    c[9].textContent = vm.lastError ?? "";
    const actions = c[10];
    if (!info.admin) {
      actions.textContent = "–";
      return;
    }
    let box = actions.firstElementChild;
    if (box === null || box.className !== "actions") {
      actions.textContent = "";
      box = cell("div", "actions");
      for (const action of ["start", "stop"]) {
        const b = cell("button");
        b.type = "button";
        b.dataset.action = action;
        b.textContent = action === "start" ? "Start" : "Stop";
        b.setAttribute("aria-label", `${b.textContent} ${vm.name}`);
        box.append(b);
      }
      actions.append(box);
    }
    const busy = vm.state === "starting" || vm.state === "stopping" || vm.pending === true;
    box.children[0].disabled = busy || vm.state === "ready";
    box.children[1].disabled = busy || vm.state === "off";
  }

  function refreshRow(label) {
    const tr = rows.get(label);
    if (tr !== undefined) fillRow(tr, vms.get(label));
  }

  /** Every second: ages and countdowns on the rows shown. */
  function tick() {
    for (const [label, tr] of rows) {
      const vm = vms.get(label);
      const c = tr.cells;
      c[3].lastChild.textContent = ` ${vm.stateSince === null ? "" : duration(now() - vm.stateSince)}`;
      c[4].textContent = ago(vm.lastRequest);
      const stopAt = idleStopAt(vm);
      c[8].textContent = stopAt === null ? "–" : duration(stopAt - now());
    }
    renderAbout();
  }

  // ---- counters and charts ------------------------------------------------

  function renderAbout() {
    $("about").textContent =
      `${info.version ? `version ${info.version}, ` : ""}up ${duration(now() - info.startedAt)}`;
  }

  function fillList(dl, entries) {
    const items = [];
    for (const [label, value] of entries) {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = num(value);
      div.append(dd, dt);
      items.push(div);
    }
    dl.replaceChildren(...items);
  }

  function renderCounters() {
    const byState = { ready: 0, starting: 0, stopping: 0, failed: 0, paused: 0, suspended: 0, off: 0 };
    for (const vm of vms.values()) byState[vm.state] = (byState[vm.state] ?? 0) + 1;
    fillList($("vm-counts"), [["VMs", vms.size], ...Object.entries(byState)]);
    const d = dnsCounters;
    fillList($("dns-counters"), [
      ["DNS queries", d.queries],
      ["forwarded", d.forwarded],
      ["forward failures", d.forwardFailures],
      ["refused", d.refused],
      ["malformed", d.malformed],
      ["dropped", d.dropped],
      ["truncated", d.truncated],
      ["TCP connections", d.tcpConnections],
    ]);
  }

  let countersPending = false;
  /** Counts by state at most once per frame (a burst of events costs one pass over the VMs). */
  function scheduleCounters() {
    if (countersPending) return;
    countersPending = true;
    requestAnimationFrame(() => {
      countersPending = false;
      renderCounters();
    });
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  /** One chart: points [time, value] over the last hour, as a line (or dots), with its peak. */
  function chart(svg, points, { dots, unit }) {
    // Drawn in the element's own pixels, so the text keeps its size at any width.
    const W = Math.max(100, Math.round(svg.clientWidth || 300));
    const H = Math.max(40, Math.round(svg.clientHeight || 90));
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const top = 14;
    const t1 = now();
    const t0 = t1 - HOUR_MS;
    const max = Math.max(1e-9, ...points.map((p) => p[1]));
    const pad = 4; // so that a dot at "now" is not cut in half
    const x = (t) => pad + ((t - t0) / HOUR_MS) * (W - 2 * pad);
    const y = (v) => H - (v / max) * (H - top);
    const parts = [];
    if (dots) {
      for (const p of points) parts.push(svgEl("circle", { class: "dot", cx: x(p[0]), cy: y(p[1]), r: 2.5 }));
    } else if (points.length > 0) {
      const path = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
      const line = path.join(" ");
      parts.push(
        svgEl("path", {
          class: "area",
          d: `${line} L${x(points.at(-1)[0])},${H} L${x(points[0][0])},${H} Z`,
        }),
      );
      parts.push(svgEl("path", { class: "line", d: line }));
    }
    const peak = svgEl("text", { class: "axis", x: 2, y: 10 });
    peak.textContent = points.length === 0 ? "no data yet" : `peak ${unit(max)}`;
    const left = svgEl("text", { class: "axis", x: 2, y: H - 2 });
    left.textContent = "−60 min";
    const right = svgEl("text", { class: "axis", x: W - 2, y: H - 2, "text-anchor": "end" });
    right.textContent = "now";
    svg.replaceChildren(...parts, peak, left, right);
  }

  function renderCharts() {
    const cutoff = now() - HOUR_MS;
    qps = qps.filter((p) => p[0] >= cutoff);
    starts = starts.filter((p) => p[0] >= cutoff);
    chart($("qps-chart"), qps, { dots: false, unit: (v) => `${v.toFixed(1)}/s` });
    chart($("starts-chart"), starts, { dots: true, unit: startMs });
    const current = qps.length === 0 ? 0 : qps.at(-1)[1];
    const peak = Math.max(0, ...qps.map((p) => p[1]));
    $("qps-text").textContent = `Now ${current.toFixed(1)} per second; peak ${peak.toFixed(1)} per second.`;
    if (starts.length === 0) $("starts-text").textContent = "No cold starts in the last hour.";
    else {
      const sorted = starts.map((s) => s[1]).sort((a, b) => a - b);
      const slowest = starts.reduce((a, b) => (b[1] > a[1] ? b : a));
      $("starts-text").textContent =
        `${starts.length} cold start${starts.length === 1 ? "" : "s"}; median ${startMs(sorted[Math.floor(sorted.length / 2)])}, ` +
        `slowest ${startMs(slowest[1])} (${slowest[2]}).`;
    }
  }

  // ---- announcements (aria-live) ------------------------------------------

  let spoken = [];
  let speakTimer = null;
  /** State changes, read out at most once a second: a burst of 1,000 is one sentence, not 1,000. */
  function announce(text) {
    spoken.push(text);
    if (speakTimer !== null) return;
    speakTimer = setTimeout(() => {
      const head = spoken.slice(0, 3).join(". ");
      const more = spoken.length > 3 ? `. And ${spoken.length - 3} more changes` : "";
      $("announcer").textContent = `${head}${more}.`;
      spoken = [];
      speakTimer = null;
    }, 1000);
  }

  // ---- the event stream ---------------------------------------------------

  const handlers = {
    "vm.state"(e) {
      const vm = vms.get(e.vm);
      if (vm === undefined) return;
      vm.state = e.to;
      vm.stateSince = Date.parse(e.time);
      vm.pending = false;
      if (e.to === "ready") vm.lastError = null;
      refreshRow(e.vm);
      scheduleCounters();
      announce(`${vm.name} is ${e.to}`);
      // With a state filter, the row may leave or join the matches (the page keeps its place).
      if ($("state-filter").value !== "" || $("filter").value.trim() !== "") refilter(true);
    },
    "vm.started"(e) {
      const vm = vms.get(e.vm);
      if (e.how !== "adopt") {
        starts.push([Date.parse(e.time), e.durationMs, e.vm]);
        if (vm !== undefined) {
          vm.totalStarts += 1;
          vm.startedAt = Date.parse(e.time) - e.durationMs;
        }
        renderCharts();
      }
      refreshRow(e.vm);
    },
    "vm.failed"(e) {
      const vm = vms.get(e.vm);
      if (vm === undefined) return;
      vm.lastError = e.error;
      refreshRow(e.vm);
      announce(`${vm.name} failed: ${e.error}`);
    },
    stats(e) {
      dnsCounters = e.dns;
      qps.push([Date.parse(e.time), e.queriesPerSecond]);
      for (const [label, total, last] of e.requests) {
        const vm = vms.get(label);
        if (vm === undefined) continue;
        vm.totalRequests = total;
        vm.lastRequest = last;
        refreshRow(label);
      }
      renderCounters();
      renderCharts();
    },
    "config.reloaded"(e) {
      if (e.ok) void loadStatus().catch(showError);
    },
    "stream.reset"() {
      void loadStatus().catch(showError);
    },
  };

  function live(state, text) {
    const el = $("live");
    el.dataset.state = state;
    el.textContent = text;
  }

  function connect() {
    // EventSource sends Last-Event-ID itself on its own reconnects; after a 503 or our own
    // reconnect it cannot, so the id goes in the URL.
    const url = lastEventId === null ? "/events" : `/events?lastEventId=${lastEventId}`;
    source = new EventSource(url);
    source.onopen = () => {
      reconnectDelay = 1000;
      live("live", "Live");
    };
    source.onmessage = (message) => {
      if (message.lastEventId) lastEventId = message.lastEventId;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      dispatch(event);
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (a 503: too many streams) or the server went away: try again, more slowly each time.
        live("down", `Disconnected; retrying in ${Math.round(reconnectDelay / 1000)} s`);
        setTimeout(connect, reconnectDelay);
        reconnectDelay = Math.min(30_000, reconnectDelay * 2);
      } else live("down", "Reconnecting…");
    };
  }

  // ---- admin --------------------------------------------------------------

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function showToken() {
    const has = token() !== null;
    $("token-forget").hidden = !has;
    $("admin-note").textContent = has
      ? "Token set for this session."
      : "Enter the token to start and stop VMs.";
  }

  async function act(label, action) {
    const vm = vms.get(label);
    const t = token();
    if (t === null) {
      $("admin-note").textContent = "Enter the admin token first.";
      $("token").focus();
      return;
    }
    vm.pending = true;
    refreshRow(label);
    try {
      const res = await fetch(`/vms/${encodeURIComponent(label)}/${action}`, {
        method: "POST",
        headers: { authorization: `Bearer ${t}` },
      });
      const body = await res.json().catch(() => ({}));
      if (res.status === 401 || res.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        showToken();
        $("admin-note").textContent = `Token refused: ${body.error ?? res.status}. Enter it again.`;
      } else if (!res.ok) {
        $("admin-note").textContent = `${action} ${vm.name}: ${body.error ?? res.status}`;
      } else {
        $("admin-note").textContent = `${vm.name}: ${body.state}`;
      }
    } catch (err) {
      $("admin-note").textContent = `${action} ${vm.name}: ${err.message}`;
    } finally {
      vm.pending = false;
      refreshRow(label);
    }
  }

  // ---- start --------------------------------------------------------------

  function showError(err) {
    live("down", `Could not read /status: ${err.message}`);
  }

  function wire() {
    let filterTimer = null;
    $("filter").addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => refilter(false), vms.size > 2000 ? 120 : 0);
    });
    $("state-filter").addEventListener("change", () => refilter(false));
    $("page-size").addEventListener("change", () => render());
    $("prev").addEventListener("click", () => {
      page -= 1;
      render();
    });
    $("next").addEventListener("click", () => {
      page += 1;
      render();
    });
    $("vms").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-action]");
      if (button === null) return;
      void act(button.closest("tr").dataset.vm, button.dataset.action);
    });
    $("admin").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("token").value.trim();
      if (value === "") return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      showToken();
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showToken();
    });
  }

  async function main() {
    wire();
    connect(); // first, so nothing that happens while /status loads is missed
    try {
      await loadStatus();
    } catch (err) {
      showError(err);
    }
    document.body.dataset.ready = "true";
    window.jitsuReadyAt = performance.now();
    void loadHistory().catch(() => undefined);
    setInterval(tick, 1000);
    setInterval(renderCharts, 60_000);
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(renderCharts, 150);
    });
  }

  void main();
})();
