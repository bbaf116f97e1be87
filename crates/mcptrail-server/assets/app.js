// mcptrail dashboard: vanilla JS over the JSON API. Everything shown is inserted as text
// (textContent), never as HTML, so event content cannot script the page.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("mcptrail_token") || "";
let tailAbort = null;
let me = { name: "", roles: [] };
const has = (...roles) => roles.some((r) => me.roles.includes(r));

async function api(path, opts = {}) {
  const r = await fetch(path, {
    ...opts,
    headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(body.message || r.statusText);
    e.status = r.status;
    throw e;
  }
  return body;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fill(tableSel, rows, render) {
  const tb = $(tableSel + " tbody");
  tb.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    render(tr, row);
    tb.appendChild(tr);
  }
}

function showError(e) {
  $("#error").textContent = e ? (e.status === 403 ? "Your role cannot see this: " : "") + e.message : "";
}

// Each panel only for the roles that may read it: a refused call is a recorded refusal.
async function overview() {
  if (has("operator", "auditor")) {
    try {
      const i = await api("/api/v1/integrity");
      const b = $("#integrity");
      const v = i.last_server_verify;
      b.className = "badge " + (v ? (i.green ? "green" : "red") : "");
      b.textContent = v ? (i.green ? "intact" : v.verdict) + " — " + v.records + " records, verified " + v.at + " by " + v.by : "not verified by this server yet";
      $("#integrity-problems").textContent = v && v.problems && v.problems.length ? v.problems.join("\n") : "";
    } catch (e) { $("#integrity").textContent = e.message; }
  }
  $("#verify-now").hidden = !has("auditor");
  $("#operator-panels").hidden = !has("operator");
  if (!has("operator")) return;
  try {
    const s = await api("/api/v1/sinks");
    fill("#sinks", s.sinks, (tr, x) => { cell(tr, x.name); cell(tr, x.cursor); cell(tr, x.head); cell(tr, x.lag_records); cell(tr, x.lag_secs == null ? "" : x.lag_secs.toFixed(1)); });
  } catch (e) { fill("#sinks", [], () => {}); showError(e); }
  agentActivity("#agents-overview");
  try {
    const c = await api("/api/v1/counts");
    fill("#counts", Object.entries(c.by_kind), (tr, [k, n]) => { cell(tr, k); cell(tr, n); });
  } catch (e) { fill("#counts", [], () => {}); showError(e); }
}

// Activity per agent as a table with a bar (a <meter>, no inline style: the CSP forbids it).
async function agentActivity(tableSel) {
  try {
    const a = await api("/api/v1/agents?limit=50");
    const max = Math.max(1, ...a.agents.map((x) => x.events));
    fill(tableSel, a.agents, (tr, x) => {
      tr.dataset.agent = x.agent_id;
      cell(tr, x.agent_id); cell(tr, x.sessions); cell(tr, x.events);
      const td = cell(tr, "");
      const m = document.createElement("meter");
      m.min = 0; m.max = max; m.value = x.events;
      m.title = x.events + " events";
      td.appendChild(m);
      cell(tr, x.first_time); cell(tr, x.last_time);
    });
  } catch (e) { fill(tableSel, [], () => {}); showError(e); }
}

// The agents view: pick an agent, see its hourly tool calls against its baseline.
async function agents() {
  await agentActivity("#agents-list");
  for (const tr of document.querySelectorAll("#agents-list tbody tr")) {
    tr.classList.add("clickable");
    tr.addEventListener("click", () => agentDetail(tr.dataset.agent));
  }
  const first = $("#agents-list tbody tr");
  if (first) agentDetail(first.dataset.agent);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(parent, name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = String(text);
  parent.appendChild(el);
  return el;
}

async function agentDetail(agent) {
  for (const tr of document.querySelectorAll("#agents-list tbody tr")) tr.classList.toggle("selected", tr.dataset.agent === agent);
  let a;
  try {
    a = await api("/api/v1/agents/" + encodeURIComponent(agent) + "/activity");
  } catch (e) { showError(e); return; }
  $("#agent-detail").hidden = false;
  $("#agent-title").textContent = "Activity of " + agent;
  // One slot per clock hour of the window; hours without events are zero.
  const start = Math.floor(Date.parse(a.since) / 3600000) * 3600000;
  const end = Date.parse(a.until);
  const slots = [];
  for (let t = start; t < end; t += 3600000) slots.push({ t, calls: 0, events: 0, errors: 0 });
  for (const h of a.hours) {
    const i = Math.round((Date.parse(h.hour) - start) / 3600000);
    if (i >= 0 && i < slots.length) Object.assign(slots[i], { calls: h.calls, events: h.events, errors: h.errors });
  }
  const b = a.baseline;
  const p50 = b ? b.hourly_calls.p50 : null, p99 = b ? b.hourly_calls.p99 : null;
  const top = Math.max(1, p99 || 0, ...slots.map((s) => s.calls)) * 1.1;
  const chart = $("#activity-chart");
  chart.replaceChildren();
  const W = 760, H = 180, left = 40, bottom = 20, plotH = H - bottom - 8;
  const bw = (W - left - 4) / Math.max(1, slots.length);
  const y = (v) => 8 + plotH - (v / top) * plotH;
  svg(chart, "text", { x: 2, y: 14 }, Math.round(top));
  svg(chart, "text", { x: 2, y: H - bottom }, 0);
  slots.forEach((s, i) => {
    const over = p99 != null && s.calls > p99;
    const r = svg(chart, "rect", { x: left + i * bw + 1, y: y(s.calls), width: Math.max(1, bw - 2), height: Math.max(0, y(0) - y(s.calls)), class: over ? "bar over" : "bar" });
    r.dataset.hour = new Date(s.t).toISOString();
    r.dataset.calls = s.calls;
    svg(r, "title", {}, new Date(s.t).toISOString().slice(0, 13) + ":00Z — " + s.calls + " calls, " + s.events + " events, " + s.errors + " failed");
    if (i % 6 === 0 && left + i * bw < W - 60) svg(chart, "text", { x: left + i * bw, y: H - 4 }, new Date(s.t).toISOString().slice(5, 13).replace("T", " ") + "h");
  });
  for (const [v, cls] of [[p50, "p50"], [p99, "p99"]]) {
    if (v != null) svg(chart, "line", { x1: left, x2: W - 4, y1: y(v), y2: y(v), class: cls });
  }
  const total = slots.reduce((n, s) => n + s.calls, 0);
  const busiest = slots.reduce((m, s) => Math.max(m, s.calls), 0);
  const over = slots.filter((s) => p99 != null && s.calls > p99).length;
  $("#activity-summary").textContent = total + " tool calls from " + a.since.slice(0, 16) + "Z to " + a.until.slice(0, 16) + "Z; busiest hour " + busiest
    + (b ? "; baseline v" + b.version + ": p50 " + b.hourly_calls.p50.toFixed(1) + ", p99 " + b.hourly_calls.p99.toFixed(1) + " calls per active hour; " + over + " hour(s) above p99" : "");
  $("#baseline-none").hidden = !!b;
  try {
    const bl = await api("/api/v1/baselines?agent=" + encodeURIComponent(agent));
    const ab = bl.baseline && bl.baseline.agents[agent];
    const n = (v) => (v == null ? "" : Number(v).toLocaleString("en", { maximumFractionDigits: 1 }));
    const stat = (s) => "p50 " + n(s.p50) + " · p95 " + n(s.p95) + " · p99 " + n(s.p99) + " · max " + n(s.max) + " (n " + s.n + ")";
    const rows = ab ? [
      ["version", "v" + bl.baseline.version + " learnt " + bl.baseline.learnt_at + " from " + bl.baseline.since + " to " + bl.baseline.until],
      ["sessions / active days", ab.sessions + " / " + ab.active_days],
      ["tool calls per active hour", stat(ab.hourly_calls)],
      ["result bytes per session", stat(ab.session_bytes)],
      ["results per session", stat(ab.session_records)],
      ["result bytes per day", stat(ab.daily_bytes)],
      ["results per day", stat(ab.daily_records)],
      ["error rate", (100 * ab.error_rate).toFixed(2) + " % of " + ab.results + " results"],
      ["tools", Object.entries(ab.tools).sort((x, y) => y[1].calls - x[1].calls).slice(0, 8).map(([k, t]) => k + " (" + t.calls + ")").join(", ")],
      ["destinations", Object.entries(ab.destinations).map(([k, c]) => k + " (" + c + ")").join(", ") || "none"],
    ] : [];
    fill("#baseline", rows, (tr, [k, v]) => { cell(tr, k); cell(tr, v); });
  } catch (e) { fill("#baseline", [], () => {}); showError(e); }
}

async function sessions() {
  agentActivity("#agents-sessions");
  try {
    const s = await api("/api/v1/sessions?limit=100");
    fill("#sessions", s.sessions, (tr, x) => {
      tr.className = "clickable";
      tr.dataset.session = x.session_id;
      cell(tr, x.session_id); cell(tr, x.agent_id); cell(tr, x.user); cell(tr, x.first_time); cell(tr, x.last_time); cell(tr, x.events);
      tr.addEventListener("click", () => timeline(x.session_id));
    });
    showError(null);
  } catch (e) { showError(e); }
}

// The timeline of a session, oldest first; rows whose event id is in `evidence` are marked.
async function timeline(id, evidence = []) {
  try {
    const t = await api("/api/v1/sessions/" + encodeURIComponent(id) + "/timeline?limit=500");
    const marked = new Set(evidence);
    $("#timeline-title").hidden = false;
    $("#timeline-title").textContent = "Timeline of " + id + (marked.size ? " — evidence marked" : "");
    $("#timeline").hidden = false;
    fill("#timeline", t.events, (tr, e) => {
      tr.dataset.eventId = e.event_id;
      const isEvidence = marked.has(e.event_id);
      if (isEvidence) tr.className = "evidence";
      cell(tr, isEvidence ? "evidence" : "", "mark");
      cell(tr, e.seq); cell(tr, e.time); cell(tr, e.kind); cell(tr, e.method); cell(tr, e.tool_invoked);
      const td = cell(tr, JSON.stringify(e.parameters_used || e.response_summary || e.detail || ""), "detail");
      // Encrypted fields: a reveal is a request that a second principal approves.
      for (const r of (e.redactions || []).filter((r) => r.action === "encrypt")) {
        const b = document.createElement("button");
        b.className = "ask-reveal";
        b.dataset.field = r.path;
        b.textContent = "Request reveal of " + r.path;
        b.addEventListener("click", () => askReveal(e.event_id, r.path));
        td.append(document.createElement("br"), b);
      }
    });
    const first = $("#timeline tr.evidence");
    if (first) first.scrollIntoView({ block: "center" });
  } catch (e) { showError(e); }
}

function askReveal(eventId, field) {
  show("requests");
  $("#req-action").value = "reveal";
  $("#req-action").dispatchEvent(new Event("change"));
  $("#req-event").value = eventId;
  $("#req-field").value = field;
  $("#req-reason").focus();
}

async function alerts() {
  try {
    const a = await api("/api/v1/alerts?limit=100");
    fill("#alerts", a.events, (tr, e) => {
      const d = e.detail || {};
      const evidence = Array.isArray(d.evidence) ? d.evidence : [];
      tr.dataset.rule = d.rule || "";
      cell(tr, e.time); cell(tr, d.severity, "sev-" + (d.severity || "none")); cell(tr, d.rule || d.name || "");
      cell(tr, d.summary || ""); cell(tr, e.session_id);
      const td = cell(tr, evidence.join("\n"), "detail");
      if (e.session_id && evidence.length) {
        const b = document.createElement("button");
        b.className = "show-evidence";
        b.textContent = "Show evidence (" + evidence.length + ")";
        b.addEventListener("click", () => { show("sessions"); timeline(e.session_id, evidence); });
        td.prepend(b, document.createElement("br"));
      }
    });
    showError(null);
  } catch (e) { showError(e); }
}

async function tail() {
  if (tailAbort) return;
  tailAbort = new AbortController();
  try {
    const r = await fetch("/api/v1/tail", { headers: { Authorization: "Bearer " + token }, signal: tailAbort.signal });
    if (!r.ok) { const b = await r.json().catch(() => ({})); throw Object.assign(new Error(b.message || r.statusText), { status: r.status }); }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue;
        const li = document.createElement("li");
        const head = document.createElement("span");
        head.className = "head";
        try {
          const e = JSON.parse(data);
          head.textContent = ["#" + e.seq, e.time, e.kind, e.method, e.tool_invoked].filter(Boolean).join(" ");
          li.dataset.kind = e.kind;
        } catch (_) { head.textContent = "(not JSON)"; }
        const body = document.createElement("span");
        body.className = "detail";
        body.textContent = data;
        li.append(head, document.createElement("br"), body);
        $("#tail").prepend(li);
        while ($("#tail").children.length > 500) $("#tail").lastChild.remove();
      }
    }
  } catch (e) { if (e.name !== "AbortError") showError(e); }
  tailAbort = null;
}

async function requests() {
  try {
    const r = await api("/api/v1/requests");
    fill("#requests", r.requests, (tr, x) => {
      tr.dataset.request = x.id;
      const what = x.action === "reveal" ? "reveal " + x.field + " of " + x.event_id : x.action;
      cell(tr, x.created); cell(tr, what + (x.reason ? ": " + x.reason : "")); cell(tr, x.requested_by);
      cell(tr, (x.expired ? "expired" : x.state) + (x.decided_by ? " by " + x.decided_by : ""), "state"); cell(tr, x.expires_at);
      const td = cell(tr, "");
      // An approved reveal is collected once, by whoever asked for it.
      if (x.action === "reveal" && x.state === "approved" && x.requested_by === me.name) {
        const b = document.createElement("button");
        b.textContent = "Collect value";
        b.className = "collect";
        b.addEventListener("click", async () => {
          let failed = null;
          try {
            const v = await api("/api/v1/requests/" + encodeURIComponent(x.id) + "/reveal", { method: "POST", body: "{}" });
            $("#revealed").textContent = v.value;
            $("#revealed-box").hidden = false;
            notice("Revealed " + v.field + " of " + v.event_id + " (recorded as governance.reveal)");
          } catch (e) { failed = e; }
          await requests();
          showError(failed);
        });
        td.appendChild(b);
      }
      // Approving is the auditor's, and never of one's own request (the server refuses both).
      if (x.state === "pending" && !x.expired && has("auditor") && x.requested_by !== me.name) {
        for (const [label, verb] of [["Approve", "approve"], ["Deny", "deny"]]) {
          const b = document.createElement("button");
          b.textContent = label;
          b.dataset.request = x.id;
          b.className = verb;
          b.addEventListener("click", async () => {
            let failed = null;
            try {
              const r = await api("/api/v1/requests/" + encodeURIComponent(x.id) + "/" + verb, { method: "POST", body: "{}" });
              notice("Request " + r.id + ": " + r.state + (r.decided_by ? " by " + r.decided_by : ""));
            } catch (e) { failed = e; }
            await requests();
            showError(failed);
          });
          td.appendChild(b);
        }
      }
    });
    showError(null);
  } catch (e) { showError(e); }
}

function notice(text) {
  $("#notice").textContent = text || "";
}

function requestBody() {
  const action = $("#req-action").value;
  const reason = $("#req-reason").value;
  if (action === "forget") return { action, subject: $("#req-subject").value, reason };
  if (action === "purge") return { action, through_seq: Number($("#req-through").value), reason };
  if (action === "reveal") return { action, event_id: $("#req-event").value.trim(), field: $("#req-field").value.trim(), reason };
  return { action, reason };
}

const views = { overview, sessions, agents, alerts, tail, requests };

// The views each role can use (the API enforces it; this only spares the user a 403).
const roleViews = {
  operator: ["overview", "agents"],
  investigator: ["sessions", "agents", "alerts", "tail", "requests"],
  auditor: ["overview", "agents", "requests"],
  admin: ["requests"],
};

function show(name) {
  // Neither a notice nor a revealed value outlives the view it was shown in.
  notice(null);
  $("#revealed").textContent = "";
  $("#revealed-box").hidden = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === name);
  showError(null);
  views[name]();
}

async function start() {
  // No token yet: the sign-in form, without an unauthenticated call (each is a recorded refusal).
  if (!token) {
    $("#login").hidden = false;
    $("#app").hidden = true;
    return;
  }
  try {
    me = await api("/api/v1/whoami");
    $("#who").textContent = me.name + " (" + me.roles.join(", ") + ")";
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#logout").hidden = false;
    const usable = new Set(me.roles.flatMap((r) => roleViews[r] || []));
    for (const b of document.querySelectorAll("nav button")) b.hidden = !usable.has(b.dataset.view);
    show(me.roles.includes("investigator") ? "sessions" : me.roles.includes("auditor") ? "requests" : "overview");
  } catch (e) {
    $("#login-error").textContent = "Sign-in failed: " + e.message;
    // A refused credential is not kept for the next visit.
    if (e.status === 401) { sessionStorage.removeItem("mcptrail_token"); token = ""; }
    $("#login").hidden = false;
    $("#app").hidden = true;
  }
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("mcptrail_token", token);
  start();
});
$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("mcptrail_token");
  token = "";
  if (tailAbort) tailAbort.abort();
  location.reload();
});
$("#verify-now").addEventListener("click", async () => {
  $("#integrity").textContent = "verifying…";
  let failed = null;
  try { await api("/api/v1/integrity/verify", { method: "POST", body: "{}" }); } catch (e) { failed = e; }
  await overview();
  showError(failed);
});
$("#revealed-hide").addEventListener("click", () => {
  $("#revealed").textContent = "";
  $("#revealed-box").hidden = true;
});
$("#req-action").addEventListener("change", () => {
  for (const l of document.querySelectorAll(".req-field")) l.hidden = l.dataset.action !== $("#req-action").value;
});
$("#request-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  let failed = null;
  try {
    const r = await api("/api/v1/requests", { method: "POST", body: JSON.stringify(requestBody()) });
    notice("Request " + r.id + " made: waiting for a second principal with the auditor role");
    for (const f of ["#req-subject", "#req-through", "#req-event", "#req-field", "#req-reason"]) $(f).value = "";
  } catch (e) { failed = e; notice(null); }
  await requests();
  showError(failed);
});
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.view));
start();
