//! Ledger append throughput with group commit, against a baseline measured in the same run:
//! writing the same bytes with one `write` + `fdatasync` per batch and no chain/serialisation
//! (the disk's bound). A third case appends events serialised beforehand, as the tap's writer
//! thread does (the recorder thread serialises them).
//!
//! `cargo bench -p mcptrail-ledger --bench append` — criterion reports elements/s (events/s).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
mod common;

use common::sample_event;
use mcptrail_ledger::{Ledger, LedgerConfig, PreparedEvent};

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
