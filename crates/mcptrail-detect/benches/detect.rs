//! Detection cost per event with the built-in pack and monitors (a baseline in effect), over
//! an existing ledger, against plain ledger reading (read lines + parse events) measured in
//! the same run; with the full parse into `Event` and with the lean parse `mcptrail detect`
//! uses. Wall and thread CPU time per event.
//!
//! `cargo bench -p mcptrail-detect --bench detect`
//!
//! The ledger holds a realistic mix: catalogs, tool calls and responses (some labelled,
//! some failing), egress, heartbeats, across 200 sessions of 4 agents.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use mcptrail_detect::{Baseline, Detector, Engine, Learner, RuleSet};
use mcptrail_event::{
    Catalog, CatalogItem, Event, EventKind, ResponseSummary, ServerInfo, Status, UserIdentity,
};
use mcptrail_ledger::{Ledger, LedgerConfig, LedgerReader};

const N: usize = 100_000;

fn workload(n: usize) -> Vec<Event> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let tools = [
        "read_text_file",
        "list_directory",
        "search_files",
        "get_file_info",
    ];
    let t0 = time::OffsetDateTime::from_unix_timestamp(1_764_064_800).unwrap();
    let mut out = Vec::with_capacity(n);
    let mut ms = 0i64;
    while out.len() < n {
        let i = out.len();
        let session = format!("0199a0b0-0000-7000-8000-{:012}", (i / 500) % 200);
        ms += 1 + (next() % 200) as i64;
        let mut e = Event::new(EventKind::McpRequest);
        e.time = mcptrail_event::format_rfc3339_nanos(t0 + time::Duration::milliseconds(ms));
        e.session_id = Some(session);
        e.agent_id = Some(format!("agent-{}", i % 4));
        e.host = Some("laptop".into());
        e.user_identity = Some(UserIdentity {
            principal: "tok_8c2f1a".into(),
            source: "os".into(),
            ..Default::default()
        });
        e.server = Some(ServerInfo {
            name: Some("secure-filesystem-server".into()),
            version: Some("0.2.0".into()),
            transport: "stdio".into(),
            command: vec!["node".into(), "index.js".into(), "/srv".into()],
            url: None,
        });
        let tool = tools[(next() % 4) as usize];
        match (i % 500, i % 50) {
            (0, _) => {
                e.kind = EventKind::SessionStart;
                e.detail = Some(serde_json::json!({"heartbeat_interval_s": 30}));
            }
            (499, _) => e.kind = EventKind::SessionEnd,
            (_, 0) => {
                e.kind = EventKind::ToolCatalog;
                e.catalog = Some(Catalog {
                    list: "tools".into(),
                    hash: "ab".repeat(32),
                    items: tools
                        .iter()
                        .map(|t| CatalogItem {
                            name: (*t).into(),
                            hash: "cd".repeat(32),
                        })
                        .collect(),
                    next_cursor: None,
                    changed: vec![],
                    added: vec![],
                    removed: vec![],
                });
            }
            (_, 1) => {
                e.kind = EventKind::SystemHeartbeat;
                e.detail = Some(
                    serde_json::json!({"uptime_s": 30, "messages_in": 10, "messages_out": 10, "pending_requests": 0, "interval_s": 30}),
                );
            }
            (_, 2) => {
                e.kind = EventKind::NetEgress;
                e.bytes_in = Some(5120);
                e.bytes_out = Some(900);
                e.duration_ms = Some(120.0);
                e.detail = Some(
                    serde_json::json!({"host": "api.github.com", "port": 443, "scheme": "https", "sni": "api.github.com", "method": "CONNECT", "decision": "allow", "matched": "*.github.com"}),
                );
            }
            (_, k) if k % 2 == 1 => {
                e.kind = EventKind::McpResponse;
                e.method = Some("tools/call".into());
                e.tool_invoked = Some(tool.into());
                e.request_id = Some(serde_json::json!(i));
                e.request_event_id = Some(mcptrail_event::new_event_id());
                e.duration_ms = Some(1.0 + (next() % 300) as f64);
                e.bytes_in = Some(180);
                e.bytes_out = Some(600);
                if next() % 40 == 0 {
                    e.labels = vec!["pii".into()];
                }
                let failed = next() % 50 == 0;
                e.response_summary = Some(ResponseSummary {
                    status: if failed { Status::Error } else { Status::Ok },
                    is_error: failed,
                    error_code: None,
                    error_message: None,
                    size: 600,
                    sha256: Some("ef".repeat(32)),
                    preview: Some("{\"content\":[{\"type\":\"text\",\"text\":\"lorem ipsum dolor sit amet\"}]}".into()),
                    content_types: vec!["text".into()],
                });
            }
            _ => {
                e.method = Some("tools/call".into());
                e.tool_invoked = Some(tool.into());
                e.request_id = Some(serde_json::json!(i));
                e.bytes_in = Some(180);
                e.parameters_used = Some(
                    serde_json::json!({"path": format!("/srv/records/patient-{}.json", next() % 5000)}),
                );
            }
        }
        out.push(e);
    }
    out
}

fn write_ledger(dir: &Path, events: Vec<Event>) {
    let cfg = LedgerConfig {
        fsync: false,
        ..LedgerConfig::default()
    };
    let mut l = Ledger::open(dir, cfg).unwrap();
    for chunk in events.chunks(1000) {
        l.append(&mut chunk.to_vec()).unwrap();
    }
}

/// How a pass reads the ledger.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// Read and parse every line into `Event` (plain ledger reading: the baseline).
    Plain,
    /// Plain, and run the built-in pack and monitors on every event.
    FullDetect,
    /// Parse only what the rules read (`Detector::parse_line`), no detection.
    Lean,
    /// What `mcptrail detect` does: lean parse, built-in pack and monitors.
    LeanDetect,
}

fn detector(baseline: &Baseline) -> Detector {
    let mut d = Detector::new(Engine::new(RuleSet::builtin()));
    d.engine_mut().add_baseline(baseline.clone());
    d
}

/// One pass over the ledger.
fn pass(dir: &Path, how: Pass, baseline: &Baseline) -> usize {
    let mut det = detector(baseline);
    let mut n = 0;
    for rec in LedgerReader::open(dir, 1).unwrap() {
        let rec = rec.unwrap();
        match how {
            Pass::Plain | Pass::FullDetect => {
                let e: Event = serde_json::from_slice(&rec.line).unwrap();
                if how == Pass::FullDetect {
                    det.observe(&e);
                }
                black_box(&e);
            }
            Pass::Lean | Pass::LeanDetect => {
                let e = det.parse_line(&rec.line).unwrap();
                if how == Pass::LeanDetect {
                    det.observe_line(&e, &rec.line);
                }
                black_box(&e);
            }
        }
        n += 1;
    }
    let alerts = det.take_new();
    if std::env::var_os("DETECT_BENCH_PASS").is_some() {
        let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
        for a in &alerts {
            *by.entry(a.rule.as_str()).or_default() += 1;
        }
        println!("{} alerts: {by:?}", alerts.len());
    }
    black_box(alerts);
    n
}

/// CPU time of this thread so far (`/proc/thread-self/schedstat`, ns).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// Best of `runs` (wall, CPU of the thread).
fn best_of(runs: usize, f: impl Fn() -> usize) -> (Duration, Duration) {
    (0..runs)
        .map(|_| {
            let (t, c) = (Instant::now(), thread_cpu());
            black_box(f());
            (t.elapsed(), thread_cpu() - c)
        })
        .min()
        .unwrap()
}

/// A baseline of the same workload, in effect from before its first event, so every event
/// is judged by the anomaly rules too.
fn baseline_of(events: &[Event]) -> Baseline {
    let mut l = Learner::new();
    for e in events {
        l.observe(e);
    }
    let t0 = 1_764_064_800_000;
    let mut b = l.finish(t0 - 86_400_000, t0, "bench");
    b.version = 1;
    b
}

fn main() {
    // `DETECT_BENCH_PASS=plain|full|lean|lean_detect|none [DETECT_BENCH_N=20000]`: one pass
    // only, for instruction counts that contention does not skew:
    //   valgrind --tool=callgrind target/release/deps/detect-… (see BENCHMARKS.md)
    if let Ok(which) = std::env::var("DETECT_BENCH_PASS") {
        let n = std::env::var("DETECT_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let dir = tempfile::tempdir().unwrap();
        let events = workload(n);
        let baseline = baseline_of(&events);
        write_ledger(dir.path(), events);
        let how = match which.as_str() {
            "plain" => Some(Pass::Plain),
            "full" => Some(Pass::FullDetect),
            "lean" => Some(Pass::Lean),
            "lean_detect" => Some(Pass::LeanDetect),
            _ => None,
        };
        if let Some(how) = how {
            println!("{which}: {} events", pass(dir.path(), how, &baseline));
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let events = workload(N);
    let baseline = baseline_of(&events);
    write_ledger(dir.path(), events);
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    {
        let mut g = c.benchmark_group("detect");
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function("ledger_read_parse", |b| {
            b.iter(|| pass(dir.path(), Pass::Plain, &baseline))
        });
        g.bench_function("ledger_read_parse_detect_builtin", |b| {
            b.iter(|| pass(dir.path(), Pass::FullDetect, &baseline))
        });
        g.bench_function("ledger_read_lean_parse_detect_builtin", |b| {
            b.iter(|| pass(dir.path(), Pass::LeanDetect, &baseline))
        });
        g.finish();
    }
    // The passes, best of 5 each, in the same run: the figures BENCHMARKS.md quotes.
    let plain = best_of(5, || pass(dir.path(), Pass::Plain, &baseline));
    let full = best_of(5, || pass(dir.path(), Pass::FullDetect, &baseline));
    let lean = best_of(5, || pass(dir.path(), Pass::Lean, &baseline));
    let lean_detect = best_of(5, || pass(dir.path(), Pass::LeanDetect, &baseline));
    let per = |d: Duration| d.as_secs_f64() * 1e6 / N as f64;
    let line = |name: &str, (wall, cpu): (Duration, Duration)| {
        println!(
            "detect summary: {name:<44} {:.2} µs/event wall ({:>4.0} k events/s), {:.2} µs/event CPU; {:.2}x plain reading",
            per(wall),
            N as f64 / wall.as_secs_f64() / 1e3,
            per(cpu),
            wall.as_secs_f64() / plain.0.as_secs_f64()
        );
    };
    println!("detect summary: {N} events, built-in pack + monitors with a baseline in effect");
    line("plain reading (read + parse into Event)", plain);
    line("plain reading + detection", full);
    line("lean parse (what the rules read)", lean);
    line("lean parse + detection (mcptrail detect)", lean_detect);
    c.final_summary();
}
