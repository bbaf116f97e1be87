//! Detection cost per event with the built-in pack, over an existing ledger, against plain
//! ledger reading (read lines + parse events) measured in the same run.
//!
//! `cargo bench -p mcptrail-detect --bench detect`
//!
//! The ledger holds a realistic mix: catalogs, tool calls and responses (some labelled,
//! some failing), egress, heartbeats, across 200 sessions of 4 agents.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use mcptrail_detect::{Detector, Engine, RuleSet};
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
        match i % 50 {
            0 => {
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
            1 => {
                e.kind = EventKind::SystemHeartbeat;
                e.detail = Some(
                    serde_json::json!({"uptime_s": 30, "messages_in": 10, "messages_out": 10, "pending_requests": 0}),
                );
            }
            2 => {
                e.kind = EventKind::NetEgress;
                e.bytes_in = Some(5120);
                e.bytes_out = Some(900);
                e.duration_ms = Some(120.0);
                e.detail = Some(
                    serde_json::json!({"host": "api.github.com", "port": 443, "scheme": "https", "sni": "api.github.com", "method": "CONNECT", "decision": "allow", "matched": "*.github.com"}),
                );
            }
            k if k % 2 == 1 => {
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

/// Read and parse every event; with `detect`, also run the built-in pack.
fn pass(dir: &Path, detect: bool) -> usize {
    let mut det = detect.then(|| Detector::new(Engine::new(RuleSet::builtin())));
    let mut n = 0;
    for rec in LedgerReader::open(dir, 1).unwrap() {
        let e: Event = serde_json::from_slice(&rec.unwrap().line).unwrap();
        if let Some(d) = det.as_mut() {
            d.observe(&e);
        }
        black_box(&e);
        n += 1;
    }
    if let Some(d) = det.as_mut() {
        black_box(d.take_new());
    }
    n
}

fn best_of(runs: usize, f: impl Fn() -> usize) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), workload(N));
    let mut c = Criterion::default().configure_from_args().sample_size(10);
    {
        let mut g = c.benchmark_group("detect");
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function("ledger_read_parse", |b| b.iter(|| pass(dir.path(), false)));
        g.bench_function("ledger_read_parse_detect_builtin", |b| {
            b.iter(|| pass(dir.path(), true))
        });
        g.finish();
    }
    // The same two passes, interleaved, best of 5: the figures BENCHMARKS.md quotes.
    let plain = best_of(5, || pass(dir.path(), false));
    let with = best_of(5, || pass(dir.path(), true));
    let per = |d: Duration| d.as_secs_f64() * 1e6 / N as f64;
    println!(
        "detect summary: {N} events; plain read+parse {:.2} µs/event ({:.0} k events/s); with the built-in pack {:.2} µs/event ({:.0} k events/s); detection alone {:.2} µs/event; ratio {:.2}x",
        per(plain),
        N as f64 / plain.as_secs_f64() / 1e3,
        per(with),
        N as f64 / with.as_secs_f64() / 1e3,
        per(with) - per(plain),
        with.as_secs_f64() / plain.as_secs_f64()
    );
    c.final_summary();
}
