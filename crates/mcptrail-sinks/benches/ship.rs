//! Events/s shipped per sink with batching, against baselines measured in the same run:
//!
//! - `read raw`: the ledger's own reader returning every line (the ceiling for any consumer);
//! - `read+parse`: the sinks' tail reader (complete lines, seq check, head fields parsed).
//!
//! ```sh
//! taskset -c 0 cargo bench -p mcptrail-sinks --bench ship      # the shipper on one core
//! MCPTRAIL_BENCH_EVENTS=500000 cargo bench -p mcptrail-sinks --bench ship
//! ```
//!
//! NATS JetStream must run at 127.0.0.1:4222 (a stream is created for the run and deleted).
//! Every figure is the median of 5 runs; nothing here is asserted.

use std::time::{Duration, Instant};

use mcptrail_sinks::{Cursor, ShipOptions, Shipper, SinkConfig};

fn sink(text: &str) -> SinkConfig {
    SinkConfig::from_table(toml::from_str(text).unwrap()).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median time of `f` over `runs` runs; `setup` runs before each, untimed.
fn time_runs(runs: usize, mut setup: impl FnMut(), mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                setup();
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn ship_all(data: &std::path::Path, cfg: &SinkConfig, n: u64) {
    let s = mcptrail_sinks::build(cfg).unwrap();
    let st = Shipper::new(data, cfg.clone(), s, None)
        .run(&ShipOptions::default())
        .unwrap();
    assert_eq!(st.shipped, n, "every event shipped: {st:?}");
}

fn main() {
    let n: usize = std::env::var("MCPTRAIL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mcptrail_test_support::sinks::write_ledger(&data, n);
    let bytes: u64 = mcptrail_ledger::list_segments(&data.join(mcptrail_ledger::LEDGER_DIR))
        .unwrap()
        .iter()
        .map(|s| s.len)
        .sum();
    println!(
        "ship bench: {n} events, {:.0} MiB ledger ({} B/event)",
        bytes as f64 / (1 << 20) as f64,
        bytes / n as u64
    );
    let runs = 5;
    let mut rows: Vec<(String, Duration)> = Vec::new();

    rows.push((
        "read raw (LedgerReader)".into(),
        time_runs(
            runs,
            || {},
            || {
                let c = mcptrail_ledger::LedgerReader::open(&data, 1)
                    .unwrap()
                    .count();
                assert_eq!(c, n);
            },
        ),
    ));
    rows.push((
        "read+parse (LedgerTail)".into(),
        time_runs(
            runs,
            || {},
            || {
                let mut t = mcptrail_sinks::LedgerTail::open(&data, 1);
                let mut c = 0;
                while t.next_record().unwrap().is_some() {
                    c += 1;
                }
                assert_eq!(c, n);
            },
        ),
    ));
    let out = dir.path().join("out/events.jsonl");
    for (label, extra) in [
        ("file json, batch 1000, fdatasync/batch", ""),
        (
            "file cef, batch 1000, fdatasync/batch",
            "format = \"cef\"\n",
        ),
    ] {
        let cfg = sink(&format!(
            "name = \"file\"\ntype = \"file\"\npath = \"{}\"\nbatch_max_events = 1000\nmax_bytes = 100000000000\n{extra}",
            out.display()
        ));
        rows.push((
            label.into(),
            time_runs(
                runs,
                || {
                    let _ = std::fs::remove_file(&out);
                    Cursor::new(&data, &cfg.name).store(0, "").unwrap();
                },
                || ship_all(&data, &cfg, n as u64),
            ),
        ));
    }

    // NATS JetStream: a stream for this run, large enough to hold every run's messages.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let unique = format!(
        "{}_{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let stream = format!("MCPTRAIL_BENCH_{unique}");
    let subject = format!("mcptrail.bench.{unique}");
    let js = {
        let client = rt
            .block_on(async_nats::connect("nats://127.0.0.1:4222"))
            .expect("NATS JetStream must run at 127.0.0.1:4222");
        let _in_runtime = rt.enter();
        async_nats::jetstream::new(client)
    };
    rt.block_on(js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        // Every run re-sends the same ids: a short window keeps the dedupe table small, and
        // messages are discarded, not kept, so the server's disk is not the bottleneck.
        duplicate_window: Duration::from_secs(1),
        max_messages: 10_000,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    }))
    .unwrap();
    let cfg = sink(&format!(
        "name = \"nats\"\ntype = \"nats\"\nsubject = \"{subject}\"\nbatch_max_events = 1000\n"
    ));
    rows.push((
        "nats jetstream json, batch 1000, PubAck each".into(),
        time_runs(
            runs,
            || {
                std::thread::sleep(Duration::from_millis(1100)); // past the duplicate window
                Cursor::new(&data, &cfg.name).store(0, "").unwrap();
            },
            || ship_all(&data, &cfg, n as u64),
        ),
    ));
    let _ = rt.block_on(js.delete_stream(&stream));

    let base = rows[0].1;
    println!("{:<46} {:>12} {:>10}", "", "events/s", "vs raw read");
    for (label, d) in &rows {
        println!(
            "{label:<46} {:>12.0} {:>9.1}%",
            n as f64 / d.as_secs_f64(),
            100.0 * base.as_secs_f64() / d.as_secs_f64()
        );
    }
}
