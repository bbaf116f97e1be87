//! Ledger append throughput with group commit, against a baseline measured in the same run:
//! writing the same bytes with one `write` + `fdatasync` per batch and no chain/serialisation
//! (the disk's bound). A third case appends events serialised beforehand, as the tap's writer
//! thread does (the recorder thread serialises them).
//!
//! `cargo bench -p mcptrail-ledger --bench append` — criterion reports elements/s (events/s).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mcptrail_event::{
    Event, EventKind, PeerInfo, ProcessInfo, ResponseSummary, ServerInfo, Status, UserIdentity,
};
use mcptrail_ledger::{Ledger, LedgerConfig, PreparedEvent};

fn sample_event(i: u64) -> Event {
    let mut e = Event::new(EventKind::McpResponse);
    e.agent_id = Some("claude-desktop".into());
    e.session_id = Some("0193a0f0-0000-7000-8000-000000000001".into());
    e.method = Some("tools/call".into());
    e.tool_invoked = Some("read_file".into());
    e.request_id = Some(serde_json::json!(i));
    e.parameters_used = Some(serde_json::json!({"path": "/home/user/projects/report.md"}));
    e.response_summary = Some(ResponseSummary {
        status: Status::Ok,
        is_error: false,
        error_code: None,
        error_message: None,
        size: 1834,
        sha256: Some("9f2c".repeat(16)),
        preview: Some("# Quarterly report\nRevenue grew by".into()),
        content_types: vec!["text".into()],
    });
    e.duration_ms = Some(1.25);
    // The context every event the tap writes carries (~950 bytes per stored line in all).
    e.user_identity = Some(UserIdentity {
        principal: "alice".into(),
        source: "os".into(),
        os_user: Some("alice".into()),
        os_uid: Some(1000),
    });
    e.client = Some(PeerInfo {
        name: "claude-desktop".into(),
        version: Some("0.14.2".into()),
    });
    e.host = Some("build-host-17".into());
    e.process = Some(ProcessInfo {
        tap_pid: 4581,
        server_pid: Some(4584),
        tap_version: "0.1.0".into(),
    });
    e.server = Some(ServerInfo {
        name: Some("filesystem".into()),
        version: Some("2026.8.31".into()),
        transport: "stdio".into(),
        command: vec![
            "npx".into(),
            "-y".into(),
            "@modelcontextprotocol/server-filesystem".into(),
        ],
        url: None,
    });
    e.request_event_id = Some("0193a0f0-0000-7000-8000-000000000002".into());
    e.protocol_version = Some("2025-11-25".into());
    e
}

fn bench(c: &mut Criterion) {
    const BATCH: usize = 1000;
    let mut g = c.benchmark_group("ledger_append");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(30);

    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    g.bench_function("group_commit_1000_fdatasync", |b| {
        b.iter_batched_ref(
            || (0..BATCH as u64).map(sample_event).collect::<Vec<_>>(),
            |events| ledger.append(events).unwrap(),
            BatchSize::SmallInput,
        )
    });

    // What the tap's writer thread does: events serialised beforehand (on the recorder
    // thread), the append completes, hashes, writes and fdatasyncs them.
    g.bench_function("group_commit_1000_prepared_fdatasync", |b| {
        b.iter_batched_ref(
            || {
                (0..BATCH as u64)
                    .map(|i| PreparedEvent::new(sample_event(i)).unwrap())
                    .collect::<Vec<_>>()
            },
            |events| ledger.append_prepared(events).unwrap(),
            BatchSize::SmallInput,
        )
    });

    // Baseline: the same number of bytes, one write + fdatasync, no serialisation or hashing.
    let mut probe = (0..BATCH as u64).map(sample_event).collect::<Vec<_>>();
    let bytes_per_batch: usize = probe
        .iter_mut()
        .map(|e| serde_json::to_vec(e).unwrap().len() + 1)
        .sum();
    let raw = vec![b'x'; bytes_per_batch];
    let path = dir.path().join("baseline.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    g.bench_function("baseline_raw_write_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&raw).unwrap();
            f.sync_data().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
