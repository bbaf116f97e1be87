//! What tamper evidence costs, each figure against a baseline measured in the same run, in
//! alternating rounds so disk and CPU drift hit both sides alike:
//!
//! 1. **Writer overhead**: appending ~1 KB events in batches of 1,000 with forward-secure
//!    MACs and Merkle checkpoints (the defaults) vs ledger v1 alone (MACs off, no
//!    checkpoints), with `fdatasync` (what runs) and without (the CPU path alone).
//! 2. **`verify` throughput** on a ledger of `MCPTRAIL_BENCH_VERIFY_MB` MB (default 1024):
//!    full verification with the seed (chain, MACs, Merkle roots at every checkpoint) vs this
//!    machine's raw SHA-256 over the same bytes on one core, read the same way.
//!
//! `cargo bench -p mcptrail-ledger --bench integrity`

use std::io::Read;
use std::time::Instant;

mod common;

use common::sample_event;
use mcptrail_integrity::Seed;
use mcptrail_ledger::{
    default_seed_path, list_segments, verify, CheckpointPolicy, Ledger, LedgerConfig, MacPolicy,
    PreparedEvent, Verdict, VerifyOptions, LEDGER_DIR,
};
use sha2::{Digest, Sha256};

fn v1(fsync: bool) -> LedgerConfig {
    LedgerConfig {
        fsync,
        // Ledger v1: no Merkle tree, no checkpoints, no MACs.
        checkpoints: CheckpointPolicy {
            enabled: false,
            ..CheckpointPolicy::default()
        },
        macs: MacPolicy {
            enabled: false,
            ..MacPolicy::default()
        },
        ..LedgerConfig::default()
    }
}

fn full(fsync: bool) -> LedgerConfig {
    LedgerConfig {
        fsync,
        ..LedgerConfig::default()
    }
}

/// The Merkle tree and checkpoints as by default, MACs off.
fn merkle_only(fsync: bool) -> LedgerConfig {
    let mut c = full(fsync);
    c.macs.enabled = false;
    c
}

/// MACs as by default, no tree or checkpoints.
fn macs_only(fsync: bool) -> LedgerConfig {
    let mut c = full(fsync);
    c.checkpoints.enabled = false;
    c
}

/// The defaults, but a MAC epoch and a signed checkpoint every 10,000 records.
fn frequent(fsync: bool) -> LedgerConfig {
    let mut c = full(fsync);
    c.checkpoints.every_records = 10_000;
    c.macs.epoch_records = 10_000;
    c
}

/// Append `batches` × 1,000 prepared events to a fresh ledger; events/s.
fn append_rate(cfg: LedgerConfig, batches: &[Vec<PreparedEvent>]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), cfg).unwrap();
    // First start creates the MAC seed and state and the signing key (several fsyncs): a
    // one-time cost per ledger, kept out of the per-record figure on both sides.
    l.append_prepared(&batches[0][..1]).unwrap();
    l.checkpoint_now().unwrap();
    let n: usize = batches.iter().map(Vec::len).sum();
    let t = Instant::now();
    for b in batches {
        l.append_prepared(b).unwrap();
    }
    l.checkpoint_now().unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn writer_overhead() {
    const BATCHES: usize = 100;
    let batches: Vec<Vec<PreparedEvent>> = (0..BATCHES)
        .map(|b| {
            (0..1000)
                .map(|i| PreparedEvent::new(sample_event((b * 1000 + i) as u64)).unwrap())
                .collect()
        })
        .collect();
    type Config = fn(bool) -> LedgerConfig;
    let cases: [(&str, Config, bool); 5] = [
        ("defaults, fsync", full, true),
        ("defaults, no fsync (CPU path)", full, false),
        (
            "Merkle+checkpoints only (MACs off), fsync",
            merkle_only,
            true,
        ),
        ("MACs only (no tree), fsync", macs_only, true),
        ("epoch+checkpoint every 10k, fsync", frequent, true),
    ];
    for (name, with, fsync) in cases {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..9 {
            // Alternate which side goes first.
            if round % 2 == 0 {
                a.push(append_rate(v1(fsync), &batches));
                b.push(append_rate(with(fsync), &batches));
            } else {
                b.push(append_rate(with(fsync), &batches));
                a.push(append_rate(v1(fsync), &batches));
            }
        }
        let (ma, mb) = (median(a), median(b));
        println!(
            "writer {name:<42} v1 {ma:>8.0} ev/s   with {mb:>8.0} ev/s   overhead {:>5.1} %  (median of 9 alternating rounds of 100k events)",
            (ma / mb - 1.0) * 100.0
        );
    }
}

fn verify_throughput() {
    let mb: u64 = std::env::var("MCPTRAIL_BENCH_VERIFY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let cfg = LedgerConfig {
        fsync: false,
        ..LedgerConfig::default()
    };
    let mut l = Ledger::open(dir.path(), cfg).unwrap();
    let mut written = 0u64;
    let mut i = 0u64;
    let gen = Instant::now();
    while written < mb << 20 {
        let batch: Vec<PreparedEvent> = (0..1000)
            .map(|_| {
                i += 1;
                PreparedEvent::new(sample_event(i)).unwrap()
            })
            .collect();
        written += batch.iter().map(|p| p.len() as u64 + 100).sum::<u64>();
        l.append_prepared(&batch).unwrap();
    }
    l.checkpoint_now().unwrap();
    drop(l);
    let segs = list_segments(&dir.path().join(LEDGER_DIR)).unwrap();
    let bytes: u64 = segs.iter().map(|s| s.len).sum();
    println!(
        "ledger for verify: {} records, {:.0} MB in {} segments (built in {:.1} s)",
        i,
        bytes as f64 / 1e6,
        segs.len(),
        gen.elapsed().as_secs_f64()
    );
    let seed = Seed::read(&default_seed_path(dir.path())).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [cores, 1] {
        verify_rounds(dir.path(), &segs, bytes, i, &seed, threads);
    }
}

fn verify_rounds(
    dir: &std::path::Path,
    segs: &[mcptrail_ledger::SegmentInfo],
    bytes: u64,
    i: u64,
    seed: &Seed,
    threads: usize,
) {
    let (mut raw, mut ver) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let run_raw = || {
            // Baseline: read every segment in 8 MiB blocks and SHA-256 it, one core.
            let t = Instant::now();
            let mut buf = vec![0u8; 8 << 20];
            let mut h = Sha256::new();
            for s in segs {
                let mut f = std::fs::File::open(&s.path).unwrap();
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            std::hint::black_box(h.finalize());
            bytes as f64 / t.elapsed().as_secs_f64()
        };
        let run_verify = || {
            let t = Instant::now();
            let r = verify(
                dir,
                &VerifyOptions {
                    seed: Some(seed.clone()),
                    threads: Some(threads),
                    ..VerifyOptions::default()
                },
            )
            .unwrap();
            assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
            assert_eq!(r.macs_checked, i);
            bytes as f64 / t.elapsed().as_secs_f64()
        };
        if round % 2 == 0 {
            raw.push(run_raw());
            ver.push(run_verify());
        } else {
            ver.push(run_verify());
            raw.push(run_raw());
        }
    }
    let (r, v) = (median(raw), median(ver));
    let records_per_s = v / (bytes as f64 / i as f64);
    println!(
        "verify {threads} thread(s) {:>7.0} MB/s {:>9.0} records/s   raw SHA-256 (1 core) {:>7.0} MB/s   ratio {:>5.1} %  (median of 6 alternating rounds)",
        v / 1e6,
        records_per_s,
        r / 1e6,
        v / r * 100.0,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants speed.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        std::env::set_var("MCPTRAIL_BENCH_VERIFY_MB", "4");
        verify_throughput();
        return;
    }
    // MCPTRAIL_BENCH_ONLY=writer|verify runs one part.
    let only = std::env::var("MCPTRAIL_BENCH_ONLY").unwrap_or_default();
    if only != "verify" {
        writer_overhead();
    }
    if only != "writer" {
        verify_throughput();
    }
}
