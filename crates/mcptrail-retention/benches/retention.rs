//! What retention costs, as ratios against the physical minimum measured in the same run:
//! reading every sealed segment and hashing it (SHA-256), which any plan or removal must do
//! at least once.
//!
//!     cargo bench -p mcptrail-retention --bench retention
//!
//! A ledger of 40 sealed segments of ~1 MiB (~1 KB events, MACs and checkpoints on) is built
//! once; then, each timed (wall and CPU time of this process, getrusage):
//! - `plan, cold`: `Engine::plan` without its cache (reads and parses every segment);
//! - `plan, warm`: with the cache of the previous plan (reads only directory listings);
//! - `remove_segments`: removing all 40 under signed tombstones (check, sign, fsync, delete);
//! - `verify after`: `verify` of what is left plus the 40 tombstones, against `verify` of the
//!   same records in a copy taken before the removal (the tombstones' own cost).
//!
//! The machine may be shared: compare the ratios, not the times.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcptrail_event::{format_rfc3339_nanos, Event, EventKind};
use mcptrail_ledger::{
    list_segments, remove_segments, verify, Ledger, LedgerConfig, Removal, RemovalOptions,
    TombstoneState, VerifyOptions, LEDGER_DIR,
};
use mcptrail_retention::{Engine, EngineConfig, FixedClock, RetentionConfig};
use sha2::{Digest, Sha256};

fn cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (w, c) = (Instant::now(), cpu());
    let out = f();
    (out, w.elapsed(), cpu() - c)
}

fn event(i: u64, t: time::OffsetDateTime) -> Event {
    let mut e = Event::new(EventKind::McpResponse);
    e.time = format_rfc3339_nanos(t);
    e.agent_id = Some("claude-desktop".into());
    e.session_id = Some("0193a0f0-0000-7000-8000-000000000001".into());
    e.method = Some("tools/call".into());
    e.tool_invoked = Some("read_file".into());
    e.request_id = Some(serde_json::json!(i));
    e.parameters_used =
        Some(serde_json::json!({"path": "/home/user/projects/report.md", "pad": "x".repeat(600)}));
    if i.is_multiple_of(7) {
        e.labels = vec!["pii".into()];
    }
    e
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("retention: bench");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t0 = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let cfg = LedgerConfig {
        segment_max_bytes: 1 << 20,
        segment_max_age: Duration::from_secs(100 * 365 * 86_400),
        fsync: false,
        ..LedgerConfig::default()
    };
    let mut l = Ledger::open(&data, cfg.clone()).unwrap();
    let mut i = 0u64;
    while list_segments(&data.join(LEDGER_DIR)).unwrap().len() < 41 {
        let mut batch: Vec<Event> = (0..100).map(|k| event(i + k, t0)).collect();
        i += 100;
        l.append(&mut batch).unwrap();
    }
    l.checkpoint_now().unwrap();
    drop(l);
    let segs = list_segments(&data.join(LEDGER_DIR)).unwrap();
    let sealed: Vec<_> = segs[..segs.len() - 1].to_vec();
    let bytes: u64 = sealed.iter().map(|s| s.len).sum();
    println!(
        "ledger: {i} records, {} sealed segments, {:.1} MiB sealed",
        sealed.len(),
        bytes as f64 / 1048576.0
    );

    // Baseline: read and hash every sealed segment.
    let (_, base_w, base_c) = timed(|| {
        for s in &sealed {
            let b = std::fs::read(&s.path).unwrap();
            std::hint::black_box(Sha256::digest(&b));
        }
    });

    let policy = RetentionConfig {
        retention_days: Some(90),
        label_retention_days: [("pii".into(), 30)].into(),
        ..RetentionConfig::default()
    }
    .policy()
    .unwrap()
    .unwrap();
    let clock = Arc::new(FixedClock::new(t0 + time::Duration::days(200)));
    let engine = Engine::new(
        &data,
        EngineConfig {
            ledger: cfg,
            verify: VerifyOptions {
                skip_macs: true,
                ..VerifyOptions::default()
            },
            ..EngineConfig::default()
        },
        clock,
    );
    engine.bootstrap(&policy, None, "bench").unwrap();
    let _ = std::fs::remove_file(data.join("retention/segments.cache"));
    let (plan, cold_w, cold_c) = timed(|| engine.plan().unwrap());
    assert!(
        plan.segments
            .iter()
            .filter(|s| s.action == mcptrail_retention::Action::Purge)
            .count()
            >= 40
    );
    let (_, warm_w, warm_c) = timed(|| engine.plan().unwrap());

    let before = dir.path().join("before");
    copy_dir(&data, &before);
    let removals: Vec<Removal> = sealed
        .iter()
        .map(|s| Removal {
            segment: s.path.file_name().unwrap().to_str().unwrap().into(),
            state: TombstoneState::Purged,
            archive: None,
        })
        .collect();
    let (_, rm_w, rm_c) = timed(|| {
        remove_segments(&data, &removals, &RemovalOptions::default()).unwrap();
    });
    let opts = VerifyOptions {
        skip_macs: true,
        threads: Some(1),
        ..VerifyOptions::default()
    };
    let (r, va_w, va_c) = timed(|| verify(&data, &opts).unwrap());
    assert_eq!(r.removed.len(), 40);
    let (_, vb_w, vb_c) = timed(|| verify(&before, &opts).unwrap());

    let row = |name: &str, w: Duration, c: Duration, bw: Duration, bc: Duration, what: &str| {
        println!(
            "{name:<34} wall {:>9.2} ms  cpu {:>9.2} ms  = {:>6.2}x wall, {:>6.2}x cpu of {what}",
            w.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3,
            w.as_secs_f64() / bw.as_secs_f64(),
            c.as_secs_f64() / bc.as_secs_f64().max(1e-9),
        )
    };
    row(
        "read + SHA-256 of the 40 segments",
        base_w,
        base_c,
        base_w,
        base_c,
        "itself (baseline)",
    );
    row("plan, cold", cold_w, cold_c, base_w, base_c, "the baseline");
    row("plan, warm", warm_w, warm_c, base_w, base_c, "the baseline");
    row(
        "remove_segments, 40 tombstones",
        rm_w,
        rm_c,
        base_w,
        base_c,
        "the baseline",
    );
    println!(
        "{:<34} {:.2} ms cpu per segment removed",
        "",
        rm_c.as_secs_f64() * 1e3 / 40.0
    );
    row(
        "verify after (1 segment + 40 ts)",
        va_w,
        va_c,
        vb_w,
        vb_c,
        "verify of all 41 segments before",
    );
}
