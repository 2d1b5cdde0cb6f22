// The topology view: everything through the same API (and token) as the CLI; live through
// the watch long-poll. No framework, no CDN.
"use strict";

let token = sessionStorage.getItem("plexus-token") || "";
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) {
  token = hash.get("token");
  sessionStorage.setItem("plexus-token", token);
  history.replaceState(null, "", location.pathname); // keep the token out of history
}

const $ = (id) => document.getElementById(id);
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => (k === "class" ? (e.className = v) : k.startsWith("on") ? e.addEventListener(k.slice(2), v) : e.setAttribute(k, v)));
  kids.flat().forEach((k) => e.append(k instanceof Node ? k : String(k)));
  return e;
};

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (_) {}
    const err = new Error(`${r.status} ${detail}`);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

function showError(e) {
  $("error").textContent = e.status === 401 || e.status === 403 ? `The API refused the token: ${e.message}` : `Cannot reach the API: ${e.message}`;
  if (e.status === 401 || e.status === 403) $("login").hidden = false;
}

function detail(obj) {
  const d = $("detail");
  d.hidden = false;
  d.textContent = JSON.stringify(obj, null, 2);
  // An endpoint's packets can be traced from here, as `plexus trace` does.
  const t = $("trace");
  t.hidden = !(obj.network && obj.id && obj.host);
  t.dataset.network = obj.network || "";
  t.dataset.from = obj.id || "";
  $("trace-title").textContent = t.hidden ? "" : `trace a packet from ${obj.network}/${obj.id}`;
  $("trace-out").textContent = "";
}

async function trace(ev) {
  ev.preventDefault();
  const t = $("trace");
  const body = { network: t.dataset.network, from: t.dataset.from, to: $("trace-to").value.trim(), protocol: $("trace-proto").value };
  if (body.protocol !== "icmp") body.port = Number($("trace-port").value);
  $("trace-out").textContent = "tracing…";
  try {
    const r = await fetch("/v1/trace", { method: "POST", headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const v = await r.json();
    $("trace-out").textContent = r.ok
      ? `${v.delivered ? "DELIVERED" : "DROPPED"}: ${v.verdict}\n` + v.steps.map((s) => `${s.host} ${s.table_name}: ${s.object}`).join("\n")
      : `${r.status} ${v.detail}${v.field ? ` (field ${v.field})` : ""}`;
  } catch (e) {
    $("trace-out").textContent = `Cannot reach the API: ${e.message}`;
  }
}

function row(cells, obj) {
  return el("tr", { onclick: () => detail(obj) }, cells.map((c) => el("td", {}, c)));
}

async function load() {
  const [hosts, networks, routers, policies] = await Promise.all([api("/v1/hosts"), api("/v1/networks"), api("/v1/routers"), api("/v1/policies")]);
  const endpoints = (await Promise.all(networks.map((n) => api(`/v1/networks/${encodeURIComponent(n.name)}/endpoints`)))).flat();
  const switches = await Promise.all(hosts.map((h) => api(`/v1/hosts/${encodeURIComponent(h.name)}/flows`).catch(() => null)));
  const now = Date.now();
  $("hosts").replaceChildren(
    ...hosts.map((h, i) => {
      const s = switches[i];
      const alive = now - h.last_seen_ms < 15000;
      const sw = s
        ? [el("div", { class: s.in_sync && !s.last_error ? "ok" : "bad" }, `switch ${s.connected ? "connected" : "disconnected"}, ${s.role || "?"}, ${s.in_sync ? "in sync" : "not in sync"}, ${s.desired_flows} flows${s.held && s.held.received ? `, ${s.held.received} held` : ""}`),
           s.last_error ? el("div", { class: "bad" }, `last error: ${s.last_error}`) : ""]
        : [el("div", {}, "switch: not programmed by this node")];
      const eps = endpoints.filter((e) => e.host === h.name);
      return el("div", { class: "host", "data-host": h.name },
        el("h2", {}, h.name),
        el("div", { class: alive ? "ok" : "bad" }, `${alive ? "alive" : "silent"} · tunnel ${h.tunnel_ip} (${h.encap})`),
        ...sw,
        el("div", {}, `${eps.length} endpoint(s)`),
        ...eps.map((e) => el("div", { class: "ep", "data-endpoint": `${e.network}/${e.id}`, onclick: () => detail(e) }, `${e.network}/${e.id} ${e.ip}${Object.keys(e.labels || {}).length ? " " + Object.entries(e.labels).map(([k, v]) => `${k}=${v}`).join(",") : ""}`)));
    }));
  $("networks").replaceChildren(el("tr", {}, ["name", "kind", "subnet", "endpoints", "policies"].map((h) => el("th", {}, h))),
    ...networks.map((n) => row([n.name, n.kind.type === "overlay" ? `overlay vni ${n.kind.vni}` : `underlay ${n.kind.physical_network}${n.kind.vlan ? " vlan " + n.kind.vlan : ""}`, n.subnet,
      endpoints.filter((e) => e.network === n.name).length, policies.filter((p) => p.network === n.name).map((p) => p.name).join(", ")], n)));
  $("routers").replaceChildren(el("tr", {}, ["name", "networks", "external"].map((h) => el("th", {}, h))),
    ...routers.map((r) => row([r.name, r.networks.join(", "), r.external ? "yes" : "no"], r)));
  $("policies").replaceChildren(el("tr", {}, ["name", "network", "selects", "ingress rules", "egress rules"].map((h) => el("th", {}, h))),
    ...policies.map((p) => row([p.name, p.network, p.select, p.ingress ? p.ingress.length : "-", p.egress ? p.egress.length : "-"], p)));
  $("status").textContent = `${hosts.length} host(s), ${networks.length} network(s), ${endpoints.length} endpoint(s) · live`;
  $("error").textContent = "";
}

async function live() {
  let revision = (await api("/v1/cluster/state")).revision;
  for (;;) {
    try {
      const w = await api(`/v1/watch?since=${revision}&timeout=20`);
      if (w.changes.length) await load();
      revision = w.revision;
    } catch (e) {
      if (e.status === 410) { revision = (await api("/v1/cluster/state")).revision; await load(); continue; }
      showError(e);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

$("trace").addEventListener("submit", trace);

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("plexus-token", token);
  $("login").hidden = true;
  start();
});

async function start() {
  if (!token) { $("status").textContent = "give an API token (plexus pki token issues one)"; $("login").hidden = false; return; }
  try { await load(); live(); } catch (e) { showError(e); $("status").textContent = "not loaded"; }
}
start();
