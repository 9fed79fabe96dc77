// The registry's read-only console: the population from one snapshot watch
// (Server-Sent Events on /v1/watch), kept live; the capability catalog from
// /v1/capabilities. Talks to nothing but the registry that served it.
"use strict";

const agents = new Map(); // agentId -> AgentInfo (proto3 JSON)
let pending = null;       // agents of a snapshot being received
let revision = "0";
let selected = null;
let source = null;
let renderQueued = false;
let catalogTimer = null;
const flashed = new Set();

const $ = (id) => document.getElementById(id);
const STATUSES = ["HEALTHY", "DEGRADED", "UNHEALTHY"];
const TYPES = ["WORKER", "SCOUT", "GUARD", "ANALYST"];

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function ago(secs) {
  const s = Number(secs || 0);
  if (!s) return "never";
  const delta = Math.round(Date.now() / 1000 - s);
  if (delta < 0) return "in " + -delta + " s";
  const d = delta;
  if (d < 60) return d + " s ago";
  if (d < 3600) return Math.floor(d / 60) + " min ago";
  if (d < 86400) return Math.floor(d / 3600) + " h ago";
  return new Date(s * 1000).toISOString();
}

function when(secs) {
  const s = Number(secs || 0);
  return s ? new Date(s * 1000).toISOString().replace(".000Z", "Z") + " (" + ago(s) + ")" : "—";
}

function connect() {
  if (source) source.close();
  setLive(false, "connecting…");
  pending = new Map();
  source = new EventSource("/v1/watch?snapshot=true");
  source.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { return; }
    apply(ev);
  };
  source.addEventListener("error", (m) => {
    // Either the server ended the stream (event "error" with a JSON body)
    // or the connection dropped: watch again with a fresh snapshot.
    let reason = "reconnecting…";
    if (m && m.data) {
      try { reason = JSON.parse(m.data).code + ", reconnecting…"; } catch (_) { /* keep */ }
    }
    source.close();
    source = null;
    setLive(false, reason);
    setTimeout(connect, 1000);
  });
}

function setLive(on, text) {
  const b = $("live");
  b.textContent = on ? "live" : text;
  b.className = "badge " + (on ? "on" : "off");
}

function apply(ev) {
  const a = ev.agent;
  switch (ev.eventType) {
    case "SNAPSHOT":
      if (pending && a) pending.set(a.agentId, a);
      break;
    case "SYNCED":
      agents.clear();
      if (pending) for (const [k, v] of pending) agents.set(k, v);
      pending = null;
      setLive(true);
      refreshCatalog();
      break;
    case "REGISTERED":
    case "UPDATED":
    case "STATUS_CHANGED":
      if (a) { agents.set(a.agentId, a); flashed.add(a.agentId); }
      scheduleCatalog();
      break;
    case "DEREGISTERED":
    case "EXPIRED":
      if (a) agents.delete(a.agentId);
      scheduleCatalog();
      break;
    default:
      break;
  }
  if (ev.revision) revision = ev.revision;
  queueRender();
}

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function filters() {
  return {
    type: $("f-type").value,
    status: $("f-status").value,
    namespace: $("f-namespace").value,
    capability: $("f-capability").value,
  };
}

function matches(a, f) {
  return (!f.type || a.agentType === f.type)
    && (!f.status || a.status === f.status)
    && (!f.namespace || a.namespace === f.namespace)
    && (!f.capability || (a.capabilities || []).includes(f.capability));
}

function byListOrder(x, y) {
  const d = Number(x.registeredAt) - Number(y.registeredAt);
  return d || (x.agentId < y.agentId ? -1 : x.agentId > y.agentId ? 1 : 0);
}

const MAX_ROWS = 500;

function render() {
  $("revision").textContent = "revision " + revision;
  const all = Array.from(agents.values());
  renderCounts(all);
  renderNamespaces(all);
  const f = filters();
  const shown = all.filter((a) => matches(a, f)).sort(byListOrder);
  const body = $("agents").tBodies[0];
  const rows = document.createDocumentFragment();
  for (const a of shown.slice(0, MAX_ROWS)) rows.appendChild(row(a));
  body.replaceChildren(rows);
  flashed.clear();
  $("empty").hidden = shown.length > 0;
  $("shown").textContent = shown.length > MAX_ROWS
    ? "showing " + MAX_ROWS + " of " + shown.length + " matching"
    : shown.length + " of " + all.length + " shown";
  renderDetail();
}

function row(a) {
  const tr = el("tr");
  tr.dataset.id = a.agentId;
  if (a.agentId === selected) tr.classList.add("selected");
  if (flashed.has(a.agentId)) tr.classList.add("flash");
  tr.appendChild(el("td", a.agentId.slice(0, 8), "id")).title = a.agentId;
  tr.appendChild(el("td", a.agentType));
  tr.appendChild(el("td", a.status, "status " + a.status));
  tr.appendChild(el("td", a.namespace));
  const caps = el("td", null, "caps");
  for (const c of a.capabilities || []) caps.appendChild(el("span", c, "tag"));
  tr.appendChild(caps);
  tr.appendChild(el("td", a.endpoint || "—"));
  tr.appendChild(el("td", ago(a.lastSeen)));
  tr.appendChild(el("td", a.revision));
  tr.addEventListener("click", () => { selected = a.agentId; queueRender(); });
  return tr;
}

function renderCounts(all) {
  $("count-total").textContent = all.length;
  const stat = (label, n, cls) => {
    const d = el("div", null, "stat");
    d.appendChild(el("b", n, cls));
    d.appendChild(el("span", label));
    return d;
  };
  const status = $("count-status");
  status.replaceChildren(...STATUSES.map((s) => stat(s, all.filter((a) => a.status === s).length, s)));
  const type = $("count-type");
  type.replaceChildren(...TYPES.map((t) => stat(t, all.filter((a) => a.agentType === t).length)));
}

function fillSelect(select, values) {
  const current = select.value;
  const have = Array.from(select.options).slice(1).map((o) => o.value);
  if (have.length === values.length && have.every((v, i) => v === values[i])) return;
  const option = (value, label) => { const o = el("option", label); o.value = value; return o; };
  select.replaceChildren(option("", "any"), ...values.map((v) => option(v, v)));
  select.value = values.includes(current) ? current : "";
}

function renderNamespaces(all) {
  const ns = Array.from(new Set(all.map((a) => a.namespace))).sort();
  const current = $("f-namespace").value;
  if (current && !ns.includes(current)) ns.push(current);
  fillSelect($("f-namespace"), ns.sort());
}

function renderDetail() {
  const box = $("detail");
  const a = selected && agents.get(selected);
  if (!a) { box.hidden = true; return; }
  box.hidden = false;
  const dl = $("detail-fields");
  const t = a.telemetry || {};
  const hc = a.healthCheck;
  const fields = [
    ["id", a.agentId],
    ["type", a.agentType],
    ["status", a.status],
    ["namespace", a.namespace],
    ["cluster", a.cluster],
    ["version", a.version],
    ["endpoint", a.endpoint || "—"],
    ["capabilities", (a.capabilities || []).join(", ")],
    ["registered", when(a.registeredAt)],
    ["last seen", when(a.lastSeen)],
    ["expires", when(a.expiresAt)],
    ["revision", a.revision],
    ["success rate", t.successRate !== undefined ? Number(t.successRate).toFixed(3) : "—"],
    ["executions", (t.totalExecutions || "0") + " (" + (t.failedExecutions || "0") + " failed)"],
    ["avg duration", (t.avgDurationMs || "0") + " ms"],
    ["last execution", when(t.lastExecutionAt)],
    ["health check", hc && hc.kind && hc.kind !== "NONE"
      ? hc.kind + " " + (hc.target || a.endpoint || "") + (hc.path || "") + " every " + hc.intervalSeconds + " s"
      : "none"],
    ["health output", a.healthOutput || "—"],
  ];
  for (const [k, v] of Object.entries(a.metadata || {}).sort()) fields.push(["metadata." + k, v]);
  const out = document.createDocumentFragment();
  for (const [k, v] of fields) { out.appendChild(el("dt", k)); out.appendChild(el("dd", v)); }
  dl.replaceChildren(out);
}

function scheduleCatalog() {
  if (catalogTimer) return;
  catalogTimer = setTimeout(() => { catalogTimer = null; refreshCatalog(); }, 500);
}

async function refreshCatalog() {
  let catalog;
  try {
    const r = await fetch("/v1/capabilities");
    if (!r.ok) return;
    catalog = (await r.json()).capabilities || [];
  } catch (_) { return; }
  const body = $("catalog").tBodies[0];
  body.replaceChildren(...catalog.map((c) => {
    const tr = el("tr");
    tr.appendChild(el("td", c.name));
    tr.appendChild(el("td", c.agents));
    tr.appendChild(el("td", c.healthy));
    tr.addEventListener("click", () => { $("f-capability").value = c.name; queueRender(); });
    return tr;
  }));
  const names = catalog.map((c) => c.name);
  const current = $("f-capability").value;
  if (current && !names.includes(current)) names.push(current);
  fillSelect($("f-capability"), names.sort());
}

for (const id of ["f-type", "f-status", "f-namespace", "f-capability"]) {
  $(id).addEventListener("change", queueRender);
}
$("detail-close").addEventListener("click", () => { selected = null; queueRender(); });
setInterval(queueRender, 5000); // keeps "last seen" fresh
connect();
