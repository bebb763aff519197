// fleetgate dashboard: the fleet table and the host page. Hand-written, no framework,
// no build step; served from the binary. Data comes from /v1/status and
// /v1/status/<host>, polled every POLL_MS with If-None-Match (a 304 costs nothing to
// render). Everything from the server is put into the page with textContent and SVG
// attributes, never as HTML.
"use strict";

const POLL_MS = 2000;
const STATES = ["failed", "blocked", "unreachable", "stale", "pending-reboot", "in-flight", "converged", "unknown"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function shortHash(path) {
  if (!path) return "-";
  const name = path.replace(/^\/nix\/store\//, "");
  const dash = name.indexOf("-");
  return dash === 32 ? name.slice(0, 7) : name;
}

function duration(secs) {
  secs = Math.max(0, Math.round(secs));
  if (secs < 120) return secs + " s";
  if (secs < 7200) return Math.floor(secs / 60) + " min";
  if (secs < 172800) return Math.floor(secs / 3600) + " h";
  return Math.floor(secs / 86400) + " days";
}

function badge(state) {
  return el("span", { class: "state " + state, "data-state": state }, state);
}

/// A system cell: "=" when it is the desired system, its short hash otherwise.
function systemCell(path, desired) {
  if (!path) return el("td", { class: "muted" }, "-");
  if (path === desired) return el("td", { class: "same mono", title: path }, "=");
  return el("td", { class: desired ? "differs mono" : "mono", title: path }, shortHash(path));
}

/// Polls `url` with If-None-Match; calls `render(json)` when the answer changed.
function poll(url, render) {
  let etag = null;
  let timer = null;
  const updated = document.getElementById("updated");
  async function tick() {
    try {
      const headers = etag ? { "If-None-Match": etag } : {};
      const resp = await fetch(url(), { headers, cache: "no-store", credentials: "same-origin" });
      if (resp.status === 401) {
        window.location.assign("/login");
        return;
      }
      if (resp.status === 200) {
        etag = resp.headers.get("ETag");
        render(await resp.json());
        updated.textContent = "updated " + new Date().toLocaleTimeString();
      } else if (resp.status === 404) {
        updated.textContent = "no such host";
      } else if (resp.status !== 304) {
        updated.textContent = "the server answered " + resp.status;
      }
      updated.dataset.polls = String(Number(updated.dataset.polls || 0) + 1);
    } catch (e) {
      updated.textContent = "cannot reach the server (" + e.message + ")";
    }
    timer = setTimeout(tick, POLL_MS);
  }
  tick();
  return {
    now() {
      etag = null;
      clearTimeout(timer);
      tick();
    },
  };
}

// ---- the fleet page ------------------------------------------------------------

function fleetPage() {
  const params = new URLSearchParams(window.location.search);
  const stateFilter = document.getElementById("state-filter");
  const hostFilter = document.getElementById("host-filter");
  for (const s of STATES) stateFilter.append(el("option", { value: s }, s));
  stateFilter.value = params.get("state") || "";
  hostFilter.value = params.get("q") || "";

  const url = () => {
    const q = new URLSearchParams();
    if (stateFilter.value) q.set("state", stateFilter.value);
    if (hostFilter.value.trim()) q.set("q", hostFilter.value.trim());
    return "/v1/status?" + q.toString();
  };
  const poller = poll(url, renderFleet);
  const changed = () => {
    const q = new URLSearchParams();
    if (stateFilter.value) q.set("state", stateFilter.value);
    if (hostFilter.value.trim()) q.set("q", hostFilter.value.trim());
    history.replaceState(null, "", q.toString() ? "?" + q : "/");
    poller.now();
  };
  stateFilter.addEventListener("change", changed);
  hostFilter.addEventListener("input", changed);

  function renderFleet(page) {
    const summary = document.getElementById("summary");
    summary.replaceChildren();
    for (const s of STATES) {
      const n = page.summary.states[s] || 0;
      const chip = el("button", { type: "button", class: "chip" + (n ? "" : " zero") + (stateFilter.value === s ? " active" : ""), "data-state": s },
        el("b", {}, n), badge(s));
      chip.addEventListener("click", () => {
        stateFilter.value = stateFilter.value === s ? "" : s;
        changed();
      });
      summary.append(chip);
    }
    summary.append(el("span", { class: "chip", id: "boot-debt" }, el("b", {}, page.summary.boot_debt), "boot debt (generations on " + page.summary.hosts_with_boot_debt + " hosts)"));
    summary.append(el("span", { class: "chip", id: "pending-reboots" }, el("b", {}, page.summary.pending_reboots), "pending reboots"));
    if (page.summary.oldest_manifest_age !== null) {
      summary.append(el("span", { class: "chip" }, el("b", {}, duration(page.summary.oldest_manifest_age)), "oldest manifest"));
    }
    document.getElementById("matching").textContent = page.matching + " of " + page.summary.hosts + " hosts";

    const body = document.querySelector("#fleet tbody");
    body.replaceChildren();
    for (const h of page.hosts) {
      const desired = h.desired ? h.desired.system : null;
      const debt = h.boot_debt === null ? "?" : h.boot_debt.length;
      const reboot = h.pending_reboot ? h.pending_reboot.reasons.join(", ") : "";
      const seen = h.last_seen === null ? "never" : duration(page.generated_at - h.last_seen) + " ago";
      body.append(el("tr", { "data-host": h.host, "data-state": h.state },
        el("td", {}, el("a", { href: "/hosts/" + encodeURIComponent(h.host) }, h.host)),
        el("td", {}, badge(h.state)),
        el("td", { class: "mono", title: desired || "" }, desired ? shortHash(desired) : "-"),
        systemCell(h.current, desired),
        systemCell(h.booted, desired),
        systemCell(h.default ? h.default.system : null, desired),
        el("td", { class: debt ? "debt" : "muted" }, debt),
        el("td", {}, reboot),
        el("td", { class: "muted" }, seen),
        el("td", {}, h.why)));
    }
  }
}

// ---- the host page -------------------------------------------------------------

function hostPage() {
  const host = decodeURIComponent(window.location.pathname.replace(/^\/hosts\//, ""));
  document.getElementById("host-name").textContent = host;
  document.title = "fleetgate — " + host;
  poll(() => "/v1/status/" + encodeURIComponent(host), renderHost);
}

function renderHost(doc) {
  const h = doc.host;
  const now = Date.now() / 1000;
  document.getElementById("host-state").replaceChildren(badge(h.state));
  document.getElementById("why").textContent = h.why;

  const desired = h.desired ? h.desired.system : null;
  const rows = [
    ["desired", desired, h.desired ? [h.desired.commit ? "commit " + h.desired.commit.slice(0, 12) : null,
      "from the " + h.desired.source, h.desired.since ? "since " + duration(now - h.desired.since) + " ago" : null].filter(Boolean).join(" · ") : "no desired system"],
    ["current", h.current, "/run/current-system"],
    ["booted", h.booted, "/run/booted-system"],
    ["default", h.default ? h.default.system : null, h.default ? "entry " + h.default.entry : "boot loader default unknown"],
  ];
  const truths = document.querySelector("#truths tbody");
  truths.replaceChildren();
  for (const [name, path, note] of rows) {
    const cls = !path ? "muted" : (name !== "desired" && desired && path !== desired ? "differs mono" : "mono");
    truths.append(el("tr", { "data-truth": name }, el("th", {}, name), el("td", { class: cls }, path || "-"), el("td", { class: "muted" }, note)));
  }
  const extra = [];
  if (h.pending_reboot) extra.push(["pending reboot", h.pending_reboot.reasons.join(", ") + (h.pending_reboot.detail ? " — " + h.pending_reboot.detail : "")]);
  extra.push(["boot debt", h.boot_debt === null ? "cannot be told" : h.boot_debt.length === 0 ? "none" :
    h.boot_debt.map((d) => "generation " + d.generation).join(", ") + " never booted"]);
  extra.push(["last seen", h.last_seen === null ? "never" : duration(now - h.last_seen) + " ago"]);
  if (h.manifest_age !== null) extra.push(["manifest age", duration(h.manifest_age)]);
  if (h.agent_version) extra.push(["agent", h.agent_version]);
  for (const [k, v] of extra) truths.append(el("tr", { "data-truth": k }, el("th", {}, k), el("td", { colspan: 2 }, v)));

  renderTimeline(h);

  const result = document.getElementById("result");
  const r = h.last_result;
  result.replaceChildren(r ? el("span", {}, el("b", { "data-outcome": r.outcome }, r.outcome), " " + duration(now - r.at) + " ago, from the " + r.source + (r.message ? ": " + r.message : "")) : "no result yet");
  const findings = document.getElementById("findings");
  findings.replaceChildren();
  for (const f of r ? r.findings : []) {
    findings.append(el("div", { class: "finding " + f.severity, "data-finding": f.id },
      el("div", {}, el("span", { class: "id" }, f.id), " ", el("span", { class: "muted" }, f.severity)),
      el("div", {}, f.message),
      f.evidence.length ? el("ul", {}, ...f.evidence.map((e) => el("li", {}, e))) : null,
      f.fix ? el("div", { class: "fix" }, f.fix) : null));
  }

  const reports = document.querySelector("#reports tbody");
  reports.replaceChildren();
  for (const rep of doc.reports) {
    reports.append(el("tr", {},
      el("td", {}, new Date(rep.received_at * 1000).toLocaleString()),
      el("td", {}, rep.version),
      el("td", {}, rep.status),
      el("td", { class: "mono", title: rep.system || "" }, shortHash(rep.system)),
      el("td", {}, rep.message || "")));
  }
}

/// The generation timeline: one mark per profile generation, oldest left. Filled green:
/// booted; white: never booted; grey: not known; red: failed. A ring: was the default.
/// "next boot": the default entry's generation. ▲: the generation that runs now.
function renderTimeline(h) {
  const box = document.getElementById("timeline");
  box.replaceChildren();
  const gens = h.generations;
  if (!gens.length) {
    box.append(el("p", { class: "muted" }, "No generation data yet (it comes with agent reports of version 2, or fleetgate status --live)."));
    return;
  }
  const step = 64, left = 40, y = 52, width = left * 2 + step * (gens.length - 1);
  const root = svg("svg", { width: Math.max(width, 300), height: 120, role: "img", "aria-label": "generation timeline" });
  root.append(svg("line", { x1: left, y1: y, x2: left + step * (gens.length - 1), y2: y, stroke: "#90a4ae", "stroke-width": 2 }));
  const defaultGen = h.default ? h.default.generation : null;
  const debt = new Set((h.boot_debt || []).map((d) => d.generation));
  gens.forEach((g, i) => {
    const x = left + step * i;
    const fill = g.failed ? "#c62828" : g.booted === true ? "#2e7d32" : g.booted === false || debt.has(g.number) ? "#ffffff" : "#cfd8dc";
    const mark = svg("g", { "data-generation": g.number, "data-booted": String(g.booted), "data-failed": String(g.failed), "data-default": String(g.default) });
    if (g.default === true || g.number === defaultGen) {
      mark.append(svg("circle", { cx: x, cy: y, r: 15, fill: "none", stroke: "#263238", "stroke-width": 2 }));
    }
    mark.append(svg("circle", { cx: x, cy: y, r: 10, fill, stroke: g.failed ? "#c62828" : "#455a64", "stroke-width": 2 }));
    if (g.failed) {
      mark.append(svg("path", { d: `M${x - 5} ${y - 5} L${x + 5} ${y + 5} M${x + 5} ${y - 5} L${x - 5} ${y + 5}`, stroke: "#fff", "stroke-width": 2 }));
    }
    mark.append(svg("text", { x, y: y - 24, "text-anchor": "middle" }, String(g.number)));
    if (g.system === h.current) mark.append(svg("text", { x, y: y + 32, "text-anchor": "middle" }, "▲"));
    if (g.number === defaultGen) mark.append(svg("text", { x, y: y + 48, "text-anchor": "middle", "font-weight": "bold" }, "next boot"));
    mark.append(svg("title", {}, "generation " + g.number + ": " + g.system));
    root.append(mark);
  });
  box.append(root);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "fleet") fleetPage();
  if (page === "host") hostPage();
});
