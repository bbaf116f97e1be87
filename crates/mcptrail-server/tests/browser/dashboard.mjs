// End-to-end test of the dashboard of `mcptrail serve` in headless Chromium (Debian's
// chromium, driven by playwright-core). Run by crates/mcptrail/tests/cli/serve_browser.rs,
// which records a real session through `mcptrail wrap`, raises alerts with
// `mcptrail detect --append`, makes tokens and starts `mcptrail serve`; this script is the
// people in front of it:
//
//   ivy (investigator), in one browser: signs in (after a wrong token), opens a session
//     timeline, opens an alert and its evidence, watches the live tail while a new session
//     is recorded, asks for a `forget`;
//   audrey (auditor), in a second browser with its own profile: sees the request, approves
//     it, and verifies the ledger ("Verify now");
//   then ivy asks to reveal an encrypted field from the timeline, audrey approves without
//     seeing it, ivy collects the value once.
//
// Every step asserts what the page shows; a screenshot of each step goes to
// $MCPTRAIL_ARTIFACTS. Any page error, or an HTTP error the step did not expect, fails the
// run. Exit code 0 only when every step passed.
//
// Handshake with the Rust test over stdio (live tail): the script prints `TAIL_OPEN` when
// ivy's tail is open and waits for a line `TAIL_SENT` on stdin (a session was recorded).
//
// Environment: MCPTRAIL_BASE_URL, MCPTRAIL_TOKEN_IVY, MCPTRAIL_TOKEN_AUDREY,
// MCPTRAIL_ARTIFACTS, MCPTRAIL_PEERS_DIR (holds node_modules/playwright-core),
// MCPTRAIL_CHROMIUM (default /usr/bin/chromium), MCPTRAIL_TAIL_TOOL (the tool the new
// session calls), MCPTRAIL_SECRET (a value the trail must never show),
// MCPTRAIL_REVEAL_EXPECT (the clear value of the encrypted field).

import { createRequire } from "node:module";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const base = need("MCPTRAIL_BASE_URL");
const tokens = { ivy: need("MCPTRAIL_TOKEN_IVY"), audrey: need("MCPTRAIL_TOKEN_AUDREY") };
const artifacts = need("MCPTRAIL_ARTIFACTS");
const peers = need("MCPTRAIL_PEERS_DIR");
const chromiumPath = process.env.MCPTRAIL_CHROMIUM || "/usr/bin/chromium";
const tailTool = need("MCPTRAIL_TAIL_TOOL");
const secret = need("MCPTRAIL_SECRET");
const revealExpect = need("MCPTRAIL_REVEAL_EXPECT");
const TIMEOUT = 15_000;

let chromium;
try {
  ({ chromium } = createRequire(join(peers, "package.json"))("playwright-core"));
} catch (e) {
  console.error(`playwright-core is not installed under ${peers}/node_modules: run .ci/install-peers.sh (${e.message})`);
  process.exit(3);
}

mkdirSync(artifacts, { recursive: true });
const profiles = mkdtempSync(join(tmpdir(), "mcptrail-browser-"));
const flags = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const problems = [];
// HTTP errors a step provokes on purpose: [status, path prefix].
const expected = [];

function check(cond, what) {
  if (!cond) throw new Error("assertion failed: " + what);
}

let shot = 0;
async function screenshot(page, name) {
  shot += 1;
  const file = join(artifacts, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

// One user: a browser of their own (fresh --user-data-dir), one page, errors collected.
async function browserFor(who) {
  const ctx = await chromium.launchPersistentContext(join(profiles, who), {
    executablePath: chromiumPath,
    headless: true,
    args: flags,
    viewport: { width: 1400, height: 1000 },
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on("console", (m) => {
    // A failed fetch is logged as a console error too; responses are judged below.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`${who}: console error: ${m.text()}`);
    }
  });
  page.on("response", (r) => {
    if (r.status() < 400) return;
    const path = new URL(r.url()).pathname;
    const i = expected.findIndex(([st, p]) => st === r.status() && path.startsWith(p));
    if (i >= 0) expected.splice(i, 1);
    else problems.push(`${who}: unexpected HTTP ${r.status()} for ${r.request().method()} ${path}`);
  });
  return { ctx, page };
}

async function signIn(page, who) {
  await page.goto(base + "/");
  await page.fill("#token", tokens[who]);
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction((n) => document.querySelector("#who").textContent.startsWith(n + " ("), who);
  check(await page.isHidden("#login"), `${who}: the sign-in form is gone`);
}

const lines = createInterface({ input: process.stdin });
const stdinLines = lines[Symbol.asyncIterator]();
async function waitFor(line) {
  for (;;) {
    const { value, done } = await stdinLines.next();
    if (done) throw new Error(`stdin closed before ${line}`);
    if (value.trim() === line) return;
  }
}

let ivy, audrey;
try {
  // --- ivy, investigator --------------------------------------------------------------
  ivy = await browserFor("ivy");
  const p = ivy.page;
  await p.goto(base + "/");
  check(await p.isVisible("#login-form"), "the sign-in form is shown first");
  expected.push([401, "/api/v1/whoami"]);
  await p.fill("#token", "mct_not-a-real-token");
  await p.click("#login-form button[type=submit]");
  await p.waitForFunction(() => document.querySelector("#login-error").textContent.includes("Sign-in failed"));
  check(await p.isHidden("#app"), "a wrong token does not open the dashboard");
  await screenshot(p, "wrong-token");
  await signIn(p, "ivy");
  check((await p.textContent("#who")) === "ivy (investigator)", "whoami shows the principal and role");
  check(await p.isHidden("nav button[data-view=overview]"), "an investigator has no operator overview");

  // Activity per agent, then a session and its timeline.
  const agentRow = '#agents-sessions tbody tr[data-agent="browser-test-agent"]';
  await p.waitForSelector(agentRow);
  check(Number(await p.textContent(agentRow + " td:nth-child(3)")) >= 10, "the agent's events are counted");
  check((await p.$$(agentRow + " meter")).length === 1, "the agent's activity bar is drawn");
  await p.waitForSelector("#sessions tbody tr");
  const sessionIds = await p.$$eval("#sessions tbody tr", (rows) => rows.map((r) => r.dataset.session));
  check(sessionIds.length >= 1, "the recorded session is listed");
  await p.click(`#sessions tbody tr[data-session="${sessionIds[0]}"]`);
  await p.waitForSelector("#timeline tbody tr");
  const kinds = await p.$$eval("#timeline tbody tr td:nth-child(4)", (c) => c.map((x) => x.textContent));
  check(kinds[0] === "session.start", `the timeline starts with session.start (got ${kinds[0]})`);
  check(kinds.includes("mcp.request") && kinds.includes("mcp.response"), "the timeline holds requests and responses");
  const tools = await p.$$eval("#timeline tbody tr td:nth-child(6)", (c) => c.map((x) => x.textContent));
  check(tools.includes("read_text_file"), "the tools/call of read_text_file is in the timeline");
  check(!(await p.content()).includes(secret), "the secret the tool read is not shown (the trail is redacted)");
  await screenshot(p, "session-timeline");

  // The agents view: the agent's tool calls per hour against its baseline.
  await p.click("nav button[data-view=agents]");
  const listRow = '#agents-list tbody tr[data-agent="browser-test-agent"]';
  await p.waitForSelector(listRow);
  await p.click(listRow);
  await p.waitForFunction(() => document.querySelector("#agent-title").textContent === "Activity of browser-test-agent");
  await p.waitForSelector("#activity-chart rect.bar", { state: "attached" }); // empty hours have no height
  const bars = await p.$$eval("#activity-chart rect.bar", (r) => r.map((x) => Number(x.dataset.calls)));
  check(bars.length >= 48 && bars.length <= 49, `one bar per hour of the last 48 (got ${bars.length})`);
  check(bars.reduce((a, b) => a + b, 0) === 2, `the two tool calls are drawn (got ${bars.filter((b) => b > 0)})`);
  check((await p.$$("#activity-chart line.p50")).length === 1 && (await p.$$("#activity-chart line.p99")).length === 1, "the baseline's p50 and p99 are drawn");
  const baselineRows = await p.$$eval("#baseline tbody tr td:first-child", (c) => c.map((x) => x.textContent));
  check(baselineRows.includes("tool calls per active hour"), `the baseline table: ${baselineRows}`);
  check((await p.textContent("#baseline")).includes("read_text_file (1)"), "the baseline lists the agent's tools");
  await screenshot(p, "agent-activity");

  // An alert and its evidence.
  await p.click("nav button[data-view=alerts]");
  const alertRow = '#alerts tbody tr[data-rule="builtin.secret_in_tool_call"]';
  await p.waitForSelector(alertRow);
  check((await p.textContent(alertRow + " td:nth-child(2)")) === "high", "the alert's severity is shown");
  check((await p.textContent(alertRow + " td:nth-child(4)")).length > 0, "the alert's summary is shown");
  await screenshot(p, "alerts");
  await p.click(alertRow + " button.show-evidence");
  await p.waitForSelector("#timeline tbody tr.evidence");
  const evidence = await p.$$eval("#timeline tbody tr.evidence", (rows) =>
    rows.map((r) => ({ id: r.dataset.eventId, kind: r.children[3].textContent, tool: r.children[5].textContent })));
  check(evidence.length >= 1, "the evidence is marked in the timeline");
  check(evidence.every((e) => e.tool === "read_text_file"), `the evidence is the read of the secret: ${JSON.stringify(evidence)}`);
  check(await p.isVisible("#view-sessions"), "the evidence opens in the session view");
  check(!(await p.content()).includes(secret), "the evidence shows no secret either");
  await screenshot(p, "alert-evidence");

  // The live tail, while a new session is recorded.
  // Wait for the stream's response registered before the click: it can come back at once.
  const tailOpen = p.waitForResponse((r) => r.url().includes("/api/v1/tail") && r.status() === 200);
  await p.click("nav button[data-view=tail]");
  await tailOpen;
  console.log("TAIL_OPEN");
  await waitFor("TAIL_SENT");
  await p.waitForFunction((tool) => [...document.querySelectorAll("#tail li .head")].some((h) => h.textContent.includes(tool)), tailTool);
  const tailKinds = await p.$$eval("#tail li", (li) => li.map((x) => x.dataset.kind));
  check(tailKinds.includes("session.start"), "the new session's start came down the tail");
  check(!tailKinds.some((k) => k && k.startsWith("governance.")), "the investigator's tail leaves the meta-audit out");
  await screenshot(p, "live-tail");

  // A request: forget a subject.
  await p.click("nav button[data-view=requests]");
  await p.selectOption("#req-action", "forget");
  await p.fill("#req-subject", "mallory@example.com");
  await p.fill("#req-reason", "GDPR art. 17, request 42");
  await p.click("#request-form button[type=submit]");
  await p.waitForFunction(() => document.querySelector("#notice").textContent.includes("waiting for a second principal"));
  const reqId = (await p.textContent("#notice")).match(/Request (\S+) made/)[1];
  const row = `#requests tbody tr[data-request="${reqId}"]`;
  await p.waitForSelector(row);
  check((await p.textContent(row + " td.state")) === "pending", "the request is pending");
  check((await p.textContent(row + " td:nth-child(3)")) === "ivy", "requested by ivy");
  check((await p.$$(row + " button")).length === 0, "an investigator gets no approve button");
  check(!(await p.textContent("#requests")).includes("mallory@example.com"), "the request keeps the subject's keyed token, not the subject");
  await screenshot(p, "request-made");

  // --- audrey, auditor, in a second browser ------------------------------------------------
  audrey = await browserFor("audrey");
  const a = audrey.page;
  await signIn(a, "audrey");
  check((await a.textContent("#who")) === "audrey (auditor)", "whoami shows audrey as auditor");
  await a.waitForSelector(row);
  check((await a.textContent(row + " td.state")) === "pending", "audrey sees ivy's pending request");
  // Her own request gets no approve button: the second principal must be someone else.
  await a.selectOption("#req-action", "purge");
  await a.fill("#req-through", "1");
  await a.fill("#req-reason", "court order 7");
  await a.click("#request-form button[type=submit]");
  await a.waitForFunction(() => document.querySelector("#notice").textContent.includes("waiting for a second principal"));
  const ownId = (await a.textContent("#notice")).match(/Request (\S+) made/)[1];
  await a.waitForSelector(`#requests tbody tr[data-request="${ownId}"]`);
  check((await a.$$(`#requests tbody tr[data-request="${ownId}"] button`)).length === 0, "no approve button on one's own request");
  await screenshot(a, "approvals-pending");
  await a.click(row + " button.approve");
  await a.waitForFunction((sel) => document.querySelector(sel + " td.state").textContent === "executed by audrey", row);
  check((await a.textContent("#notice")).includes("executed by audrey"), "the approval's result is shown");
  check((await a.textContent("#error")) === "", "no error after approving");
  await screenshot(a, "request-approved");

  // Integrity: unverified, then "Verify now".
  await a.click("nav button[data-view=overview]");
  await a.waitForFunction(() => document.querySelector("#integrity").textContent.includes("not verified"));
  check(await a.isHidden("#operator-panels"), "an auditor sees no operator panels");
  await a.click("#verify-now");
  await a.waitForSelector("#integrity.green");
  const badge = await a.textContent("#integrity");
  check(/^intact — \d+ records, verified .* by audrey$/.test(badge), `the integrity badge: ${badge}`);
  await screenshot(a, "integrity-verified");

  // ivy sees the decision in her list.
  await p.click("nav button[data-view=requests]");
  await p.waitForFunction((sel) => document.querySelector(sel + " td.state").textContent === "executed by audrey", row);
  await screenshot(p, "request-executed-seen-by-requester");

  // A reveal: ivy asks from the timeline, audrey approves, ivy collects the value once.
  await p.click("nav button[data-view=sessions]");
  await p.click(`#sessions tbody tr[data-session="${sessionIds[0]}"]`);
  const askRow = "#timeline tbody tr:has(button.ask-reveal)";
  await p.waitForSelector(askRow);
  check((await p.textContent(askRow + " td:nth-child(6)")) === "read_text_file", "the encrypted path is on the read_text_file call");
  check(!(await p.textContent("#timeline")).includes(revealExpect), "the timeline shows the path encrypted");
  await p.click(askRow + " button.ask-reveal");
  check((await p.inputValue("#req-field")) === "/parameters_used/path", "the form is filled from the timeline");
  await p.fill("#req-reason", "incident 2026-118: which file was read");
  await p.click("#request-form button[type=submit]");
  await p.waitForFunction(() => document.querySelector("#notice").textContent.includes("waiting for a second principal"));
  const revealId = (await p.textContent("#notice")).match(/Request (\S+) made/)[1];
  const revealRow = `#requests tbody tr[data-request="${revealId}"]`;
  await p.waitForSelector(revealRow);
  check((await p.$$(revealRow + " button")).length === 0, "nothing to collect before approval");
  await screenshot(p, "reveal-requested");
  await a.click("nav button[data-view=requests]");
  await a.waitForSelector(revealRow + " button.approve");
  await a.click(revealRow + " button.approve");
  await a.waitForFunction((sel) => document.querySelector(sel + " td.state").textContent === "approved by audrey", revealRow);
  check(!(await a.content()).includes(revealExpect), "the approver never sees the value");
  await screenshot(a, "reveal-approved");
  await p.click("nav button[data-view=requests]");
  await p.waitForSelector(revealRow + " button.collect");
  await p.click(revealRow + " button.collect");
  await p.waitForSelector("#revealed-box:not([hidden])");
  check((await p.textContent("#revealed")) === revealExpect, `the revealed value: ${await p.textContent("#revealed")}`);
  await p.waitForFunction((sel) => document.querySelector(sel + " td.state").textContent === "executed by audrey", revealRow);
  check((await p.$$(revealRow + " button.collect")).length === 0, "a value is collected once");
  await screenshot(p, "reveal-collected");
  await p.click("nav button[data-view=alerts]");
  check(!(await p.content()).includes(revealExpect), "the value is gone from the page when the view changes");

  check(expected.length === 0, `expected HTTP errors that never happened: ${JSON.stringify(expected)}`);
  if (problems.length) throw new Error("the browsers reported:\n  " + problems.join("\n  "));
  console.log("BROWSER_OK " + JSON.stringify({ request: reqId, own_request: ownId, reveal: revealId, screenshots: shot }));
} catch (e) {
  for (const [who, b] of [["ivy", ivy], ["audrey", audrey]]) {
    if (b) await b.page.screenshot({ path: join(artifacts, `failure-${who}.png`), fullPage: true }).catch(() => {});
  }
  console.error("BROWSER_FAILED " + (e.stack || e));
  if (problems.length) console.error("browser problems:\n  " + problems.join("\n  "));
  process.exitCode = 1;
} finally {
  lines.close();
  for (const b of [ivy, audrey]) if (b) await b.ctx.close().catch(() => {});
  rmSync(profiles, { recursive: true, force: true });
}
