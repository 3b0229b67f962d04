// mcp-affinity status page: polls the sidecar's /metrics (Prometheus text) and draws what an
// operator needs: nodes and their states, sessions per node, view age, edge decisions over time.
// Plain script, no build step, no dependencies. Session ids never reach /metrics, so never here.
"use strict";

// Every metric this page reads (test/unit/ops-metrics.test.ts checks them against the sidecar).
const M = {
  ready: "mcp_affinity_ready",
  registryUp: "mcp_affinity_registry_up",
  viewAge: "mcp_affinity_view_age_seconds",
  sessions: "mcp_affinity_sessions",
  sessionsClosed: "mcp_affinity_sessions_closed",
  nodeState: "mcp_affinity_node_state",
  nodeInfo: "mcp_affinity_node_info",
  decisions: "mcp_affinity_edge_decisions_total",
  redisErrors: "mcp_affinity_redis_errors_total",
  eventsDropped: "mcp_affinity_edge_session_events_lost_total",
  eventFilesPending: "mcp_affinity_event_files_pending",
};
const POLL_MS = 2000;
const HISTORY = 150; // 5 minutes at 2 s
const STALE_AFTER_S = 5; // the plugin's default staleAfterMs
const REASONS = [
  "pass",
  "pin",
  "repair",
  "sessionless",
  "unknown",
  "lost",
  "unavailable",
  "reject",
  "invalid",
  "fail-open",
];
const COLORS = {
  pass: "#2b6cb0",
  pin: "#38a169",
  repair: "#d69e2e",
  sessionless: "#a0aec0",
  unknown: "#805ad5",
  lost: "#c53030",
  unavailable: "#dd6b20",
  reject: "#9b2c2c",
  invalid: "#d53f8c",
  "fail-open": "#1a202c",
};

/** Prometheus text format -> Map(name -> [{labels, value}]). */
function parseMetrics(text) {
  const out = new Map();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line[0] === "#") continue;
    let i = 0;
    while (i < line.length && /[A-Za-z0-9_:]/.test(line[i])) i++;
    const name = line.slice(0, i);
    const labels = {};
    if (line[i] === "{") {
      i++;
      while (i < line.length && line[i] !== "}") {
        const eq = line.indexOf("=", i);
        const key = line.slice(i, eq).trim();
        let j = eq + 2; // past ="
        let val = "";
        while (j < line.length && line[j] !== '"') {
          if (line[j] === "\\" && j + 1 < line.length) {
            const c = line[++j];
            val += c === "n" ? "\n" : c;
          } else val += line[j];
          j++;
        }
        labels[key] = val;
        i = j + 1;
        if (line[i] === ",") i++;
      }
      i++;
    }
    const value = Number(line.slice(i).trim().split(/\s+/)[0]);
    if (!name || Number.isNaN(value)) continue;
    if (!out.has(name)) out.set(name, []);
    out.get(name).push({ labels, value });
  }
  return out;
}

const samples = (m, name) => m.get(name) || [];
const sum = (m, name) => samples(m, name).reduce((a, s) => a + s.value, 0);
const one = (m, name) => (samples(m, name)[0] ? samples(m, name)[0].value : NaN);
const $ = (id) => document.getElementById(id);

function setText(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  if (cls !== undefined) el.className = cls;
}

function fmtAge(s) {
  if (!(s >= 0)) return "none";
  return s < 10 ? s.toFixed(1) + " s" : Math.round(s) + " s";
}

function renderNodes(m) {
  const nodes = new Map();
  for (const s of samples(m, M.nodeState))
    if (s.value === 1) nodes.set(s.labels.node, { state: s.labels.state, sessions: 0 });
  for (const s of samples(m, M.sessions)) {
    const n = nodes.get(s.labels.node) || { state: s.labels.state || "unknown", sessions: 0 };
    n.sessions += s.value;
    nodes.set(s.labels.node, n);
  }
  const names = new Map(samples(m, M.nodeInfo).map((s) => [s.labels.node, s.labels.name]));
  const tbody = $("nodes").tBodies[0];
  tbody.textContent = "";
  const order = { up: 0, draining: 1, down: 2, gone: 3 };
  const rows = [...nodes.entries()].sort(
    (a, b) => (order[a[1].state] ?? 9) - (order[b[1].state] ?? 9) || a[0].localeCompare(b[0]),
  );
  if (rows.length === 0) {
    const tr = tbody.insertRow();
    const td = tr.insertCell();
    td.colSpan = 3;
    td.className = "muted";
    td.textContent = "no nodes known yet";
  }
  for (const [node, n] of rows) {
    const tr = tbody.insertRow();
    tr.dataset.node = node;
    tr.dataset.state = n.state;
    tr.dataset.sessions = String(n.sessions);
    // The node's name first, its server URL (what Traefik and the metrics call it) below.
    const name = names.get(node) || "";
    tr.dataset.name = name;
    const cell = tr.insertCell();
    cell.className = "node";
    const b = document.createElement("div");
    b.textContent = name || node;
    cell.appendChild(b);
    if (name) {
      const u = document.createElement("div");
      u.className = "muted url";
      u.textContent = node;
      cell.appendChild(u);
    }
    const st = document.createElement("span");
    st.className = "state " + n.state;
    st.textContent = n.state;
    tr.insertCell().appendChild(st);
    const c = tr.insertCell();
    c.className = "n";
    c.textContent = n.sessions.toLocaleString();
  }
}

const history = []; // [{t, rates: {reason: per second}}]
let last = null; // {t, totals: {reason: count}}

function recordDecisions(m, now) {
  const totals = {};
  for (const s of samples(m, M.decisions)) totals[s.labels.reason] = (totals[s.labels.reason] || 0) + s.value;
  if (last) {
    const dt = (now - last.t) / 1000;
    const rates = {};
    for (const [reason, v] of Object.entries(totals)) {
      const prev = last.totals[reason] || 0;
      // A restarted sidecar starts its counters at zero again.
      rates[reason] = dt > 0 ? (v >= prev ? v - prev : v) / dt : 0;
    }
    history.push({ t: now, rates });
    if (history.length > HISTORY) history.shift();
  }
  last = { t: now, totals };
  renderDecisionTable(totals);
  drawChart();
}

function renderDecisionTable(totals) {
  const tbody = $("decision-totals").tBodies[0];
  tbody.textContent = "";
  const latest = history.length ? history[history.length - 1].rates : {};
  for (const reason of Object.keys(totals).sort((a, b) => REASONS.indexOf(a) - REASONS.indexOf(b))) {
    const tr = tbody.insertRow();
    tr.dataset.reason = reason;
    tr.insertCell().textContent = reason;
    const t = tr.insertCell();
    t.className = "n";
    t.textContent = totals[reason].toLocaleString();
    const r = tr.insertCell();
    r.className = "n";
    r.textContent = latest[reason] !== undefined ? latest[reason].toFixed(1) : "–";
  }
}

function drawChart() {
  const canvas = $("decisions");
  canvas.dataset.points = String(history.length);
  const ctx = canvas.getContext("2d");
  // Draw at the size the canvas is shown (a phone is not 1200 px wide), in device pixels.
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth || canvas.width;
  const H = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const pad = { l: 48, r: 8, t: 8, b: 20 };
  ctx.clearRect(0, 0, W, H);
  const reasons = REASONS.filter((r) => history.some((h) => h.rates[r] > 0));
  let max = 1;
  for (const h of history)
    max = Math.max(
      max,
      reasons.reduce((a, r) => a + (h.rates[r] || 0), 0),
    );
  max = niceCeil(max);
  // axes and grid
  ctx.strokeStyle = "#d9dee3";
  ctx.fillStyle = "#68717a";
  ctx.font = "12px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + ((H - pad.t - pad.b) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(W - pad.r, y);
    ctx.stroke();
    ctx.fillText(String(Math.round(max - (max * i) / 4)), 4, y + 4);
  }
  ctx.fillText(`last ${Math.round((HISTORY * POLL_MS) / 60000)} min`, pad.l, H - 4);
  if (history.length < 1) {
    ctx.fillText("collecting… (two polls make the first point)", pad.l + 80, H / 2);
    renderLegend(reasons);
    return;
  }
  const x = (i) => pad.l + ((W - pad.l - pad.r) * (i + HISTORY - history.length)) / (HISTORY - 1);
  const y = (v) => H - pad.b - ((H - pad.t - pad.b) * v) / max;
  // stacked areas, bottom to top
  const base = history.map(() => 0);
  for (const r of reasons) {
    const top = history.map((h, i) => base[i] + (h.rates[r] || 0));
    ctx.beginPath();
    history.forEach((_, i) => (i ? ctx.lineTo(x(i), y(top[i])) : ctx.moveTo(x(i), y(top[i]))));
    for (let i = history.length - 1; i >= 0; i--) ctx.lineTo(x(i), y(base[i]));
    ctx.closePath();
    ctx.fillStyle = COLORS[r] || "#718096";
    ctx.globalAlpha = 0.75;
    ctx.fill();
    ctx.globalAlpha = 1;
    top.forEach((v, i) => (base[i] = v));
  }
  renderLegend(reasons);
}

function renderLegend(reasons) {
  const el = $("legend");
  el.textContent = "";
  for (const r of reasons) {
    const span = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = COLORS[r] || "#718096";
    span.append(i, r);
    el.appendChild(span);
  }
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const k of [1, 2, 5, 10]) if (v <= k * p) return k * p;
  return 10 * p;
}

async function poll() {
  try {
    const res = await fetch("metrics", { cache: "no-store" });
    if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
    const m = parseMetrics(await res.text());
    const now = Date.now();
    const ready = one(m, M.ready) === 1;
    setText("ready", ready ? "ready" : "not ready", "pill " + (ready ? "ok" : "bad"));
    const up = one(m, M.registryUp) === 1;
    setText("registry", up ? "registry up" : "registry down", "pill " + (up ? "ok" : "bad"));
    const age = one(m, M.viewAge);
    setText("view-age", fmtAge(age));
    $("view-age").dataset.seconds = String(age);
    $("view-age").style.color = age >= 0 && age <= STALE_AFTER_S ? "" : "var(--bad)";
    setText("sessions-total", sum(m, M.sessions).toLocaleString());
    setText("sessions-closed", sum(m, M.sessionsClosed).toLocaleString());
    setText("redis-errors", sum(m, M.redisErrors).toLocaleString());
    setText("events-dropped", sum(m, M.eventsDropped).toLocaleString());
    setText("event-files", sum(m, M.eventFilesPending).toLocaleString());
    renderNodes(m);
    recordDecisions(m, now);
    setText("updated", new Date(now).toLocaleTimeString());
    $("updated").dataset.ts = String(now);
    $("error").style.display = "none";
    document.body.classList.remove("stale");
  } catch (err) {
    // Nothing shown may look current: the pills say unknown, the figures are greyed out as of
    // the last successful read.
    const e = $("error");
    const since = $("updated").dataset.ts ? ` Figures below are from ${$("updated").textContent}.` : "";
    e.textContent = `Cannot read the sidecar's metrics: ${err && err.message ? err.message : err}.${since}`;
    e.style.display = "block";
    document.body.classList.add("stale");
    setText("ready", "ready: unknown", "pill unknown");
    setText("registry", "registry: unknown", "pill unknown");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
