// mcptrail dashboard: vanilla JS over the JSON API. Everything shown is inserted as text
// (textContent), never as HTML, so event content cannot script the page.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("mcptrail_token") || "";
let tailAbort = null;

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

async function overview() {
  try {
    const i = await api("/api/v1/integrity");
    const b = $("#integrity");
    const v = i.last_server_verify;
    b.className = "badge " + (v ? (i.green ? "green" : "red") : "");
    b.textContent = v ? (i.green ? "intact" : v.verdict) + " — " + v.records + " records, verified " + v.at : "not verified by this server yet";
  } catch (e) { $("#integrity").textContent = e.message; }
  try {
    const s = await api("/api/v1/sinks");
    fill("#sinks", s.sinks, (tr, x) => { cell(tr, x.name); cell(tr, x.cursor); cell(tr, x.head); cell(tr, x.lag_records); cell(tr, x.lag_secs == null ? "" : x.lag_secs.toFixed(1)); });
  } catch (e) { fill("#sinks", [], () => {}); }
  try {
    const c = await api("/api/v1/counts");
    fill("#counts", Object.entries(c.by_kind), (tr, [k, n]) => { cell(tr, k); cell(tr, n); });
  } catch (e) { fill("#counts", [], () => {}); }
}

async function sessions() {
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

async function timeline(id) {
  try {
    const t = await api("/api/v1/sessions/" + encodeURIComponent(id) + "/timeline?limit=500");
    $("#timeline-title").hidden = false;
    $("#timeline-title").textContent = "Timeline of " + id;
    $("#timeline").hidden = false;
    fill("#timeline", t.events, (tr, e) => {
      cell(tr, e.seq); cell(tr, e.time); cell(tr, e.kind); cell(tr, e.method); cell(tr, e.tool_invoked);
      cell(tr, JSON.stringify(e.parameters_used || e.response_summary || e.detail || ""), "detail");
    });
  } catch (e) { showError(e); }
}

async function alerts() {
  try {
    const a = await api("/api/v1/alerts?limit=100");
    fill("#alerts", a.events, (tr, e) => {
      const d = e.detail || {};
      cell(tr, e.time); cell(tr, e.session_id); cell(tr, d.rule || d.name || "");
      cell(tr, JSON.stringify(d.evidence || d), "detail");
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
        li.textContent = data;
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
      cell(tr, x.created); cell(tr, x.action); cell(tr, x.requested_by);
      cell(tr, x.expired ? "expired" : x.state); cell(tr, x.expires_at);
      const td = cell(tr, "");
      if (x.state === "pending" && !x.expired) {
        for (const [label, verb] of [["Approve", "approve"], ["Deny", "deny"]]) {
          const b = document.createElement("button");
          b.textContent = label;
          b.dataset.request = x.id;
          b.className = verb;
          b.addEventListener("click", async () => {
            try { await api("/api/v1/requests/" + encodeURIComponent(x.id) + "/" + verb, { method: "POST", body: "{}" }); showError(null); }
            catch (e) { showError(e); }
            requests();
          });
          td.appendChild(b);
        }
      }
    });
    showError(null);
  } catch (e) { showError(e); }
}

const views = { overview, sessions, alerts, tail, requests };

function show(name) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === name);
  showError(null);
  views[name]();
}

async function start() {
  try {
    const me = await api("/api/v1/whoami");
    $("#who").textContent = me.name + " (" + me.roles.join(", ") + ")";
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#logout").hidden = false;
    show(me.roles.includes("investigator") ? "sessions" : me.roles.includes("auditor") ? "requests" : "overview");
  } catch (e) {
    $("#login-error").textContent = token ? "Sign-in failed: " + e.message : "";
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
  try { await api("/api/v1/integrity/verify", { method: "POST", body: "{}" }); } catch (e) { showError(e); }
  overview();
});
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.view));
start();
