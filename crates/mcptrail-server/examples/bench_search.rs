//! Search-latency benchmark of `mcptrail serve` (issue 8); `scripts/bench-serve.sh` runs it.
//!
//! ```text
//! bench_search gen DATA_DIR EVENTS
//!     Write a ledger of EVENTS realistic events through the ledger API (group commit,
//!     fdatasync per batch, MACs and checkpoints as configured by default): agent sessions of
//!     many users, agents, servers and tools over four weeks — initialize, tools/list,
//!     tools/call requests with redacted parameters and responses with redacted previews,
//!     alerts — about 1 KB a record. Writes DATA_DIR/bench-manifest.json (what the queries
//!     pick from). The index is built afterwards with `mcptrail reindex`, as a user would.
//!
//! bench_search query DATA_DIR BASE_URL      (token in MCPTRAIL_BENCH_TOKEN)
//!     p50/p99 of investigator queries through the HTTP API of a running `mcptrail serve`
//!     (by session, by user and time range, by tool, full text, paging with before_seq,
//!     the session list, alerts), each next to the same search made straight on the index
//!     in this process (`Index::search`: the SQL without HTTP, authentication or
//!     meta-audit), and GET /api/v1/status as the floor of an authenticated request.
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mcptrail_event::{Event, EventKind, PeerInfo, ResponseSummary, ServerInfo, Status};
use mcptrail_index::{Index, Search};
use mcptrail_ledger::{Ledger, LedgerConfig, PreparedEvent};
use serde_json::{json, Value};

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["gen", dir, n] => generate(Path::new(dir), n.parse()?),
        ["query", dir, base] => {
            let token = std::env::var("MCPTRAIL_BENCH_TOKEN")
                .map_err(|_| "set MCPTRAIL_BENCH_TOKEN to an investigator token")?;
            query(Path::new(dir), base, &token)
        }
        _ => Err("usage: bench_search gen DATA_DIR EVENTS | query DATA_DIR BASE_URL".into()),
    }
}

/// splitmix64: deterministic, fast, good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    /// Roughly Zipf: rank r with weight 1/(r+1).
    fn zipf(&mut self, cdf: &[f64]) -> usize {
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64 * cdf[cdf.len() - 1];
        cdf.partition_point(|&c| c < x).min(cdf.len() - 1)
    }
    fn hex(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes * 2);
        while s.len() < bytes * 2 {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(bytes * 2);
        s
    }
}

fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    (0..n)
        .map(|r| {
            acc += 1.0 / (r as f64 + 1.0);
            acc
        })
        .collect()
}

const TOOLS: &[&str] = &[
    "read_file",
    "search_code",
    "list_directory",
    "read_text_file",
    "run_query",
    "fetch_url",
    "get_issue",
    "write_file",
    "create_pull_request",
    "search_issues",
    "get_file_contents",
    "list_commits",
    "send_message",
    "get_calendar",
    "create_event",
    "query_metrics",
    "describe_table",
    "list_buckets",
    "get_object",
    "put_object",
    "run_shell",
    "browser_navigate",
    "browser_click",
    "browser_snapshot",
    "search_docs",
    "get_customer",
    "update_customer",
    "list_invoices",
    "get_invoice",
    "refund_payment",
    "create_ticket",
    "comment_ticket",
    "translate_text",
    "summarise",
    "embed_text",
    "vector_search",
    "get_weather",
    "geocode",
    "sql_explain",
    "kubectl_get",
];

const AGENT_KINDS: &[&str] = &[
    "claude-desktop",
    "cursor",
    "vscode-copilot",
    "windsurf",
    "langgraph-worker",
    "crewai-agent",
];

/// A pseudo-word vocabulary (word 0 is the most frequent).
fn vocabulary(rng: &mut Rng, n: usize) -> Vec<String> {
    const ON: &[&str] = &[
        "b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st",
        "tr", "pl", "gr",
    ];
    const NU: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou", "ea"];
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let syll = 2 + rng.below(3);
        let mut w = String::new();
        for _ in 0..syll {
            w.push_str(ON[rng.below(ON.len())]);
            w.push_str(NU[rng.below(NU.len())]);
        }
        if rng.chance(0.5) {
            w.push_str(ON[rng.below(ON.len())]);
        }
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// One session being recorded.
struct Session {
    id: String,
    user: usize,
    agent: usize,
    server: usize,
    calls_left: usize,
    step: usize,
    pending: Option<(String, &'static str, i64)>,
    next_request_id: i64,
    events: u64,
}

struct World {
    rng: Rng,
    vocab: Vec<String>,
    vocab_cdf: Vec<f64>,
    fragments: Vec<String>,
    tool_cdf: Vec<f64>,
    user_cdf: Vec<f64>,
    users: Vec<String>,
    user_tokens: Vec<String>,
    agents: Vec<String>,
    servers: Vec<(String, Vec<usize>)>,
    start_ms: i64,
    step_ms: f64,
    alerts: u64,
}

impl World {
    fn new(events: u64, key: &mcptrail_redact::TokenKey) -> World {
        let mut rng = Rng(0x6d63_7074_7261_696c);
        let vocab = vocabulary(&mut rng, 20_000);
        let vocab_cdf = zipf_cdf(vocab.len());
        // Preview text is made of fragments: 40k "sentences" of 6–14 Zipf-drawn words.
        let mut fragments = Vec::with_capacity(40_000);
        for _ in 0..40_000 {
            let n = 6 + rng.below(9);
            let words: Vec<&str> = (0..n)
                .map(|_| vocab[rng.zipf(&vocab_cdf)].as_str())
                .collect();
            fragments.push(words.join(" "));
        }
        let users: Vec<String> = (0..500)
            .map(|i| format!("user{i:04}@corp.example"))
            .collect();
        let user_tokens = users.iter().map(|u| key.pseudonym("user", u)).collect();
        let agents = (0..60)
            .map(|i| format!("{}-{i:02}", AGENT_KINDS[i % AGENT_KINDS.len()]))
            .collect();
        let servers = (0..12)
            .map(|i| {
                let tools: Vec<usize> = (0..8).map(|_| rng.below(TOOLS.len())).collect();
                (format!("mcp-server-{i:02}"), tools)
            })
            .collect();
        let start_ms = 1_790_812_800_000; // 2026-10-01T00:00:00Z
        let span_ms = 28.0 * 86_400_000.0;
        World {
            rng,
            vocab,
            vocab_cdf,
            fragments,
            tool_cdf: zipf_cdf(TOOLS.len()),
            user_cdf: zipf_cdf(500),
            users,
            user_tokens,
            agents,
            servers,
            start_ms,
            step_ms: span_ms / events.max(1) as f64,
            alerts: 0,
        }
    }

    fn text(&mut self, min_len: usize) -> String {
        let mut s = String::new();
        while s.len() < min_len {
            if !s.is_empty() {
                s.push_str(". ");
            }
            s.push_str(&self.fragments[self.rng.below(self.fragments.len())]);
        }
        s
    }

    fn new_session(&mut self, now_ms: i64) -> Session {
        let user = self.rng.zipf(&self.user_cdf);
        Session {
            id: uuid_at(&mut self.rng, now_ms),
            user,
            // A user works with a few agents.
            agent: (user * 7 + self.rng.below(3)) % self.agents.len(),
            server: self.rng.below(self.servers.len()),
            calls_left: 3 + self.rng.below(30),
            step: 0,
            pending: None,
            next_request_id: 1,
            events: 0,
        }
    }

    /// The next event of `s` at `now_ms`; `None` when the session has ended.
    fn next_event(&mut self, s: &mut Session, now_ms: i64) -> Option<Event> {
        let kind_method: (EventKind, Option<&str>) = match s.step {
            0 => (EventKind::SessionStart, None),
            1 => (EventKind::McpRequest, Some("initialize")),
            2 => (EventKind::McpResponse, Some("initialize")),
            3 => (EventKind::McpRequest, Some("tools/list")),
            4 => (EventKind::McpResponse, Some("tools/list")),
            _ if s.pending.is_some() => (EventKind::McpResponse, Some("tools/call")),
            _ if s.calls_left > 0 => (EventKind::McpRequest, Some("tools/call")),
            _ if s.step < usize::MAX => (EventKind::SessionEnd, None),
            _ => return None,
        };
        let mut e = Event::new(kind_method.0);
        e.event_id = uuid_at(&mut self.rng, now_ms);
        e.time = mcptrail_event::format_rfc3339_nanos(
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
                .expect("a time in range"),
        );
        e.session_id = Some(s.id.clone());
        e.agent_id = Some(self.agents[s.agent].clone());
        e.user_identity = Some(mcptrail_event::UserIdentity {
            principal: self.user_tokens[s.user].clone(),
            source: "os".into(),
            ..Default::default()
        });
        e.client = Some(PeerInfo {
            name: self.agents[s.agent]
                .split('-')
                .next()
                .unwrap_or("agent")
                .into(),
            version: Some("1.8.2".into()),
        });
        e.host = Some(format!("ws-{:03}.corp.example", s.user % 300));
        let (server_name, tools) = self.servers[s.server].clone();
        e.server = Some(ServerInfo {
            name: Some(server_name.clone()),
            version: Some("2026.8.31".into()),
            transport: "stdio".into(),
            command: vec!["npx".into(), format!("@corp/{server_name}")],
            ..Default::default()
        });
        e.method = kind_method.1.map(String::from);
        s.step += 1;
        s.events += 1;
        match (e.kind, kind_method.1) {
            (EventKind::McpRequest, Some("tools/call")) => {
                let tool = if self.rng.chance(0.7) {
                    TOOLS[tools[self.rng.below(tools.len())]]
                } else {
                    TOOLS[self.rng.zipf(&self.tool_cdf)]
                };
                let rid = s.next_request_id;
                s.next_request_id += 1;
                e.request_id = Some(json!(rid));
                e.tool_invoked = Some(tool.into());
                let w = |r: &mut Rng, v: &Vec<String>, c: &Vec<f64>| v[r.zipf(c)].clone();
                let (vocab, cdf) = (&self.vocab, &self.vocab_cdf);
                let params = match self.rng.below(4) {
                    0 => json!({"path": format!("/srv/projects/{}/{}-{}.md",
                        w(&mut self.rng, vocab, cdf), w(&mut self.rng, vocab, cdf), w(&mut self.rng, vocab, cdf))}),
                    1 => {
                        json!({"query": (0..3 + self.rng.below(4)).map(|_| w(&mut self.rng, vocab, cdf)).collect::<Vec<_>>().join(" "),
                        "limit": 20})
                    }
                    2 => json!({"invoice": format!("invoice-{:06}", self.rng.below(2_000_000)),
                        "customer": "[redacted:email]"}),
                    _ => {
                        json!({"url": format!("https://{}.example.com/{}", w(&mut self.rng, vocab, cdf), w(&mut self.rng, vocab, cdf))})
                    }
                };
                e.parameters_used = Some(params);
                e.bytes_in = Some(120 + self.rng.below(400) as u64);
                s.pending = Some((e.event_id.clone(), tool, rid));
                s.calls_left -= 1;
            }
            (EventKind::McpResponse, Some("tools/call")) => {
                let (req_event, tool, rid) = s.pending.take().expect("a pending call");
                e.request_id = Some(json!(rid));
                e.request_event_id = Some(req_event);
                e.tool_invoked = Some(tool.into());
                let error = self.rng.chance(0.04);
                let preview = if error {
                    format!("MCP error -32603: {}", self.text(40))
                } else {
                    let len = 250 + self.rng.below(300);
                    self.text(len)
                };
                e.response_summary = Some(ResponseSummary {
                    status: if error { Status::Error } else { Status::Ok },
                    is_error: error,
                    error_code: None,
                    error_message: None,
                    size: 200 + self.rng.below(60_000) as u64,
                    sha256: Some(self.rng.hex(32)),
                    preview: Some(preview),
                    content_types: vec!["text".into()],
                });
                e.duration_ms = Some(self.rng.below(4000) as f64 / 3.0);
                e.bytes_out = Some(200 + self.rng.below(60_000) as u64);
                if self.rng.chance(0.02) {
                    e.labels = vec!["pii".into()];
                }
            }
            (EventKind::McpRequest, Some(m)) => {
                e.request_id = Some(json!(0));
                if m == "initialize" {
                    e.parameters_used = Some(json!({"protocolVersion": "2025-06-18",
                        "capabilities": {"roots": {"listChanged": true}, "sampling": {}},
                        "clientInfo": {"name": self.agents[s.agent], "version": "1.8.2"}}));
                }
            }
            (EventKind::McpResponse, Some(_)) => {
                e.request_id = Some(json!(0));
                e.response_summary = Some(ResponseSummary {
                    status: Status::Ok,
                    is_error: false,
                    error_code: None,
                    error_message: None,
                    size: 900,
                    sha256: Some(self.rng.hex(32)),
                    preview: Some(format!(
                        "{{\"serverInfo\":{{\"name\":\"{server_name}\"}},\"tools\":{}}}",
                        tools.len()
                    )),
                    content_types: Vec::new(),
                });
            }
            (EventKind::SessionEnd, _) => s.step = usize::MAX,
            _ => {}
        }
        Some(e)
    }

    fn alert(&mut self, s: &Session, evidence: &str, now_ms: i64) -> Event {
        self.alerts += 1;
        let mut e = Event::new(EventKind::Alert);
        e.event_id = uuid_at(&mut self.rng, now_ms);
        e.time = mcptrail_event::format_rfc3339_nanos(
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
                .expect("a time in range"),
        );
        e.session_id = Some(s.id.clone());
        e.agent_id = Some(self.agents[s.agent].clone());
        e.detail = Some(json!({
            "source": "detect", "rule": "builtin.secret_in_tool_call", "rule_type": "match",
            "severity": "high", "summary": format!("secret data in tools/call of agent {}", self.agents[s.agent]),
            "evidence": [evidence], "evidence_total": 1,
        }));
        e
    }
}

fn uuid_at(rng: &mut Rng, ms: i64) -> String {
    let mut r = [0u8; 10];
    r[..8].copy_from_slice(&rng.next().to_le_bytes());
    r[8..].copy_from_slice(&rng.next().to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(ms.max(0) as u64, &r)
        .into_uuid()
        .to_string()
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Manifest {
    events: u64,
    bytes: u64,
    first_time: String,
    last_time: String,
    sessions: Vec<(String, u64)>,
    users: Vec<String>,
    tools: Vec<String>,
    /// Words by how many records hold them: (word, records).
    words: Vec<(String, u64)>,
    invoices: Vec<String>,
    alerts: u64,
}

fn generate(dir: &Path, events: u64) -> BoxResult<()> {
    if dir.join(mcptrail_ledger::LEDGER_DIR).exists() {
        return Err(format!("{} already holds a ledger", dir.display()).into());
    }
    std::fs::create_dir_all(dir)?;
    let key = mcptrail_redact::TokenKey::load_or_create(
        &dir.join(mcptrail_ledger::KEY_DIR)
            .join(mcptrail_redact::TOKEN_KEY_FILE),
    )?;
    let mut world = World::new(events, &key);
    // Probe words for the full-text queries: by rank in the vocabulary.
    let probes: Vec<String> = [0usize, 3, 40, 400, 4000, 19_000]
        .iter()
        .map(|&r| world.vocab[r].clone())
        .collect();
    let mut manifest = Manifest {
        users: world.users.clone(),
        tools: TOOLS.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    let mut word_counts = vec![0u64; probes.len()];
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<PreparedEvent>>(8);
    let dir2 = dir.to_path_buf();
    let writer = std::thread::spawn(move || -> BoxResult<u64> {
        let mut ledger = Ledger::open(&dir2, LedgerConfig::default())?;
        let mut bytes = 0u64;
        for batch in rx {
            bytes += batch.iter().map(|p| p.len() as u64 + 1).sum::<u64>();
            ledger.append_prepared(&batch)?;
        }
        ledger.checkpoint_now()?;
        Ok(bytes)
    });
    let t0 = Instant::now();
    let mut active: Vec<Session> = Vec::new();
    let mut batch = Vec::with_capacity(2000);
    let mut sample_every = 0u64;
    let mut written = 0u64;
    let mut reported = 0u64;
    while written < events {
        let now_ms = world.start_ms + (written as f64 * world.step_ms) as i64;
        while active.len() < 24 {
            let s = world.new_session(now_ms);
            active.push(s);
        }
        let i = world.rng.below(active.len());
        let mut s = active.swap_remove(i);
        let Some(mut e) = world.next_event(&mut s, now_ms) else {
            sample_every += 1;
            if sample_every.is_multiple_of(97) && manifest.sessions.len() < 2000 {
                manifest.sessions.push((s.id.clone(), s.events));
            }
            continue;
        };
        let alert = (e.kind == EventKind::McpResponse && world.rng.chance(0.002))
            .then(|| world.alert(&s, &e.event_id, now_ms));
        let p = PreparedEvent::prepare(&mut e)?;
        if e.kind == EventKind::McpResponse || e.kind == EventKind::McpRequest {
            let text = serde_json::to_string(&(&e.parameters_used, &e.response_summary))?;
            for (n, w) in word_counts.iter_mut().zip(&probes) {
                if text.contains(w.as_str()) {
                    *n += 1;
                }
            }
            if let Some(inv) = e
                .parameters_used
                .as_ref()
                .and_then(|p| p["invoice"].as_str())
            {
                if manifest.invoices.len() < 500 && world.rng.chance(0.01) {
                    manifest.invoices.push(inv.to_string());
                }
            }
        }
        if manifest.first_time.is_empty() {
            manifest.first_time = e.time.clone();
        }
        manifest.last_time = e.time.clone();
        batch.push(p);
        written += 1;
        if let Some(mut a) = alert {
            batch.push(PreparedEvent::prepare(&mut a)?);
            written += 1;
        }
        active.push(s);
        if batch.len() >= 2000 {
            tx.send(std::mem::replace(&mut batch, Vec::with_capacity(2000)))?;
        }
        if written / 1_000_000 > reported {
            reported = written / 1_000_000;
            eprintln!(
                "  {written} events, {:.0} s, {:.0} events/s",
                t0.elapsed().as_secs_f64(),
                written as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    if !batch.is_empty() {
        tx.send(batch)?;
    }
    drop(tx);
    let bytes = writer.join().map_err(|_| "the writer thread panicked")??;
    let secs = t0.elapsed().as_secs_f64();
    manifest.events = written;
    manifest.bytes = bytes;
    manifest.alerts = world.alerts;
    manifest.words = probes.into_iter().zip(word_counts).collect();
    std::fs::write(
        dir.join("bench-manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    println!(
        "generated {written} events ({:.2} GB, {:.0} bytes/record) in {secs:.0} s ({:.0} events/s), {} alerts",
        bytes as f64 / 1e9,
        bytes as f64 / written as f64,
        written as f64 / secs,
        world.alerts
    );
    Ok(())
}

/// Latencies of one query kind.
#[derive(Default)]
struct Timings {
    first: Vec<Duration>,
    warm: Vec<Duration>,
    direct: Vec<Duration>,
    returned: u64,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Client {
    fn get(&self, path: &str) -> BoxResult<Value> {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string()?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {text}").into());
        }
        Ok(serde_json::from_str(&text)?)
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(dir: &Path, base: &str, token: &str) -> BoxResult<()> {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("bench-manifest.json"))?)?;
    let key = mcptrail_redact::TokenKey::load(
        &dir.join(mcptrail_ledger::KEY_DIR)
            .join(mcptrail_redact::TOKEN_KEY_FILE),
    )?
    .ok_or("no pseudonym key in the data directory")?;
    let index = Index::open(dir)?;
    let client = Client {
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(900)))
            .build()
            .new_agent(),
        base: base.trim_end_matches('/').to_string(),
        token: token.to_string(),
    };
    let reps: usize = std::env::var("MCPTRAIL_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut rng = Rng(42);
    let first = mcptrail_event::parse_rfc3339(&manifest.first_time)?;
    let last = mcptrail_event::parse_rfc3339(&manifest.last_time)?;
    let span = (last - first).whole_seconds().max(1);
    let gov = || Some("governance.".to_string());

    // (name, [(http path, the same search)]).
    let mut plans: Vec<(&str, Vec<(String, Search)>)> = Vec::new();
    let mut mk = |name: &'static str, f: &mut dyn FnMut(&mut Rng) -> (String, Search)| {
        let v = (0..reps).map(|_| f(&mut rng)).collect();
        plans.push((name, v));
    };
    mk("session timeline (100)", &mut |r| {
        let (id, _) = &manifest.sessions[r.below(manifest.sessions.len())];
        (
            format!("/api/v1/sessions/{id}/timeline?limit=100"),
            Search {
                session: Some(id.clone()),
                limit: 100,
                ..Default::default()
            },
        )
    });
    mk("user + 24 h range (100)", &mut |r| {
        let u = &manifest.users[r.below(50)];
        let from = first + time::Duration::seconds(r.below(span as usize - 86_400) as i64);
        let to = from + time::Duration::days(1);
        let (s, u2) = (
            mcptrail_event::format_rfc3339_nanos(from),
            mcptrail_event::format_rfc3339_nanos(to),
        );
        (
            format!(
                "/api/v1/events?user={}&since={}&until={}&limit=100",
                enc(u),
                enc(&s),
                enc(&u2)
            ),
            Search {
                users: vec![u.clone(), key.pseudonym("user", u)],
                since: Some(s),
                until: Some(u2),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    mk("user, rare, 7 d range (100)", &mut |r| {
        let u = &manifest.users[400 + r.below(100)];
        let from = first + time::Duration::seconds(r.below(span as usize - 7 * 86_400) as i64);
        let to = from + time::Duration::days(7);
        let (s, u2) = (
            mcptrail_event::format_rfc3339_nanos(from),
            mcptrail_event::format_rfc3339_nanos(to),
        );
        (
            format!(
                "/api/v1/events?user={}&since={}&until={}&limit=100",
                enc(u),
                enc(&s),
                enc(&u2)
            ),
            Search {
                users: vec![u.clone(), key.pseudonym("user", u)],
                since: Some(s),
                until: Some(u2),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    mk("tool (100)", &mut |r| {
        let t = &manifest.tools[r.below(manifest.tools.len())];
        (
            format!("/api/v1/events?tool={t}&limit=100"),
            Search {
                tool: Some(t.clone()),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    mk("tool + 24 h range (100)", &mut |r| {
        let t = &manifest.tools[r.below(manifest.tools.len())];
        let from = first + time::Duration::seconds(r.below(span as usize - 86_400) as i64);
        let s = mcptrail_event::format_rfc3339_nanos(from);
        let u = mcptrail_event::format_rfc3339_nanos(from + time::Duration::days(1));
        (
            format!(
                "/api/v1/events?tool={t}&since={}&until={}&limit=100",
                enc(&s),
                enc(&u)
            ),
            Search {
                tool: Some(t.clone()),
                since: Some(s),
                until: Some(u),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    for (word, n) in &manifest.words {
        let name: &'static str =
            Box::leak(format!("q, a word in ~{n} records (100)").into_boxed_str());
        let w = word.clone();
        mk(name, &mut |_| {
            (
                format!("/api/v1/events?q={}&limit=100", enc(&w)),
                Search {
                    text: Some(w.clone()),
                    limit: 100,
                    exclude_kind_prefix: gov(),
                    ..Default::default()
                },
            )
        });
    }
    let stem: String = manifest.words[2].0.chars().take(4).collect();
    let prefix_name: &'static str =
        Box::leak(format!("q, prefix `{stem}*` (100)").into_boxed_str());
    mk(prefix_name, &mut |_| {
        (
            format!("/api/v1/events?q={}&limit=100", enc(&format!("{stem}*"))),
            Search {
                text: Some(format!("{stem}*")),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    mk("q, an invoice number (100)", &mut |r| {
        let inv = &manifest.invoices[r.below(manifest.invoices.len())];
        (
            format!("/api/v1/events?q={}&limit=100", enc(inv)),
            Search {
                text: Some(inv.clone()),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    mk("q, absent word (100)", &mut |r| {
        let w = format!("zzqx{}", r.below(1_000_000));
        (
            format!("/api/v1/events?q={w}&limit=100"),
            Search {
                text: Some(w),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    let (lo, hi) = index.seq_range()?.ok_or("empty index")?;
    mk("page at a random before_seq (100)", &mut |r| {
        let b = lo + (r.next() % (hi - lo)) + 1;
        (
            format!("/api/v1/events?before_seq={b}&limit=100"),
            Search {
                before_seq: Some(b),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    mk("tool, page at a random before_seq (100)", &mut |r| {
        let t = &manifest.tools[r.below(manifest.tools.len())];
        let b = lo + (r.next() % (hi - lo)) + 1;
        (
            format!("/api/v1/events?tool={t}&before_seq={b}&limit=100"),
            Search {
                tool: Some(t.clone()),
                before_seq: Some(b),
                limit: 100,
                exclude_kind_prefix: gov(),
                ..Default::default()
            },
        )
    });
    mk("alerts (100)", &mut |_| {
        (
            "/api/v1/alerts?limit=100".into(),
            Search {
                kind: Some("alert".into()),
                limit: 100,
                ..Default::default()
            },
        )
    });

    let mut rows: BTreeMap<usize, (String, Timings)> = BTreeMap::new();
    // The floor of an authenticated request (index sync, meta-audit included). The first
    // calls also let the index catch up with what the ledger gained since the last run.
    for _ in 0..20 {
        client.get("/api/v1/status")?;
    }
    let mut status = Vec::new();
    for _ in 0..reps.max(200) {
        let t = Instant::now();
        client.get("/api/v1/status")?;
        status.push(t.elapsed());
    }
    // Per kind, three passes over the same instances: HTTP on first touch (pages of the
    // index not in the page cache yet, as for an investigator's first query), the same search
    // straight on the index (now warm), HTTP again (warm): the ratio compares like with like.
    for (n, (name, plan)) in plans.iter().enumerate() {
        let mut t = Timings::default();
        for (path, _) in plan {
            let t0 = Instant::now();
            let v = client.get(path)?;
            t.first.push(t0.elapsed());
            t.returned += v["events"].as_array().map_or(0, |a| a.len() as u64);
        }
        for (_, search) in plan {
            let t0 = Instant::now();
            std::hint::black_box(index.search(search)?);
            t.direct.push(t0.elapsed());
        }
        for (path, _) in plan {
            let t0 = Instant::now();
            client.get(path)?;
            t.warm.push(t0.elapsed());
        }
        eprintln!("  {name}: done");
        rows.insert(n, (name.to_string(), t));
    }
    // The session list (the investigator's first view): `Index::sessions` is its twin.
    let mut t = Timings::default();
    for _ in 0..reps.min(50) {
        let t0 = Instant::now();
        client.get("/api/v1/sessions?limit=100")?;
        t.first.push(t0.elapsed());
        let t0 = Instant::now();
        std::hint::black_box(index.sessions(None, 100)?);
        t.direct.push(t0.elapsed());
        let t0 = Instant::now();
        client.get("/api/v1/sessions?limit=100")?;
        t.warm.push(t0.elapsed());
    }
    rows.insert(rows.len(), ("session list (100)".into(), t));

    let st50 = pct(&mut status, 0.50);
    let st99 = pct(&mut status, 0.99);
    println!(
        "index: {} records ({}..={}); {} requests per query kind\n",
        index.count()?,
        lo,
        hi,
        reps
    );
    println!("| query | HTTP first touch p50 / p99 ms | HTTP warm p50 / p99 ms | same search on the index, warm, p50 / p99 ms | HTTP ÷ index (warm p50) | HTTP ÷ status (warm p50) | avg returned |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!("| GET /api/v1/status (floor) | | {st50:.2} / {st99:.2} | | | 1.0 | |");
    let mut worst = 0.0f64;
    for (_, (name, mut t)) in rows {
        let n = t.first.len().max(1) as f64;
        let (f50, f99) = (pct(&mut t.first, 0.5), pct(&mut t.first, 0.99));
        let (h50, h99) = (pct(&mut t.warm, 0.5), pct(&mut t.warm, 0.99));
        let (d50, d99) = (pct(&mut t.direct, 0.5), pct(&mut t.direct, 0.99));
        worst = worst.max(f99).max(h99);
        println!(
            "| {name} | {f50:.2} / {f99:.2} | {h50:.2} / {h99:.2} | {d50:.2} / {d99:.2} | {:.1} | {:.1} | {:.0} |",
            h50 / d50.max(1e-6),
            h50 / st50.max(1e-6),
            t.returned as f64 / n
        );
    }
    println!("\nworst HTTP p99: {worst:.1} ms (target ≤ 100 ms)");
    Ok(())
}
