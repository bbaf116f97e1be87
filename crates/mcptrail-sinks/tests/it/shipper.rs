use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{list_segments, Ledger, LedgerConfig, LEDGER_DIR};
use mcptrail_sinks::{Cursor, LedgerAlerts, ShipOptions, Shipper};
use mcptrail_test_support::sinks::{event_id_of, free_loopback_port, write_ledger};

use crate::common::*;

fn file_sink(out: &std::path::Path) -> mcptrail_sinks::SinkConfig {
    sink_config(&format!(
        "name = \"f\"\ntype = \"file\"\npath = \"{}\"\nfsync = false\nbatch_max_wait_ms = 20\n",
        out.display()
    ))
}

fn shipped_ids(out: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| event_id_of(l.as_bytes()))
        .collect()
}

#[test]
fn a_torn_tail_is_never_shipped_and_the_record_written_in_its_place_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 100);
    let seg = list_segments(&data.join(LEDGER_DIR))
        .unwrap()
        .pop()
        .unwrap();
    // What a writer killed mid-write leaves: half a line without its newline.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg.path)
        .unwrap();
    f.write_all(br#"{"schema_version":"1.0","event_id":"0000-torn","seq":101,"ti"#)
        .unwrap();
    drop(f);
    let out = dir.path().join("out.jsonl");
    let st = ship(&data, &file_sink(&out));
    assert_eq!(
        (st.shipped, st.cursor),
        (100, 100),
        "stops before the torn line"
    );
    assert!(!std::fs::read_to_string(&out).unwrap().contains("torn"));
    // The next writer quarantines the fragment and appends after it; the shipper goes on.
    let more = write_ledger(&data, 10);
    let st = ship(&data, &file_sink(&out));
    let ids = shipped_ids(&out);
    assert_eq!(ids.len(), 111, "100 + the recovery record + 10");
    assert_eq!(&ids[101..], &more[..]);
    assert_eq!(st.cursor, 111);
}

#[test]
fn follow_mode_keeps_up_with_a_concurrent_writer_across_segment_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 10);
    let out = dir.path().join("out.jsonl");
    let cfg = file_sink(&out);
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut shipper = Shipper::new(&data, cfg, sink, None);
    let opts = ShipOptions {
        follow: true,
        poll_interval: Duration::from_millis(10),
        ..ShipOptions::default()
    };
    let stop = opts.stop.clone();
    let t = std::thread::spawn(move || shipper.run(&opts));
    // A writer with tiny segments, so the shipper has to cross many rotations.
    let writer_data = data.clone();
    let writer = std::thread::spawn(move || {
        let mut ledger = Ledger::open(
            &writer_data,
            LedgerConfig {
                fsync: false,
                segment_max_bytes: 8 * 1024,
                ..LedgerConfig::default()
            },
        )
        .unwrap();
        let mut ids = Vec::new();
        for i in 0..200u32 {
            let mut e = Event::new(EventKind::McpNotification);
            e.method = Some(format!("notifications/progress {i}"));
            ids.push(e.event_id.clone());
            ledger.append(&mut [e]).unwrap();
            if i.is_multiple_of(20) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        ids
    });
    let written = writer.join().unwrap();
    assert!(
        list_segments(&data.join(LEDGER_DIR)).unwrap().len() > 5,
        "rotated"
    );
    let start = Instant::now();
    while shipped_ids(&out).len() < 210 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} shipped",
            shipped_ids(&out).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let st = t.join().unwrap().unwrap();
    let ids = shipped_ids(&out);
    assert_eq!(ids.len(), 210, "each once");
    assert_eq!(&ids[10..], &written[..], "in ledger order");
    assert_eq!(st.cursor, 210);
}

#[test]
fn a_corrupt_or_foreign_cursor_stops_shipping_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 20);
    let out = dir.path().join("out.jsonl");
    let cfg = file_sink(&out);
    let run = || {
        let sink = mcptrail_sinks::build(&cfg).unwrap();
        Shipper::new(&data, cfg.clone(), sink, None).run(&ShipOptions::default())
    };
    let cursor = Cursor::new(&data, "f");
    std::fs::create_dir_all(cursor.path().parent().unwrap()).unwrap();
    std::fs::write(cursor.path(), b"{\"format\":\"mcptrail-sink-cur").unwrap();
    let e = run().unwrap_err().to_string();
    assert!(
        e.contains("f.cursor") && e.contains("--reset-cursor"),
        "{e}"
    );
    // A cursor naming an event this ledger does not have at that seq.
    cursor
        .store(7, "0190aaaa-0000-7000-8000-000000000000")
        .unwrap();
    let e = run().unwrap_err().to_string();
    assert!(e.contains("another ledger"), "{e}");
    // A cursor beyond the end.
    cursor.store(99, "x").unwrap();
    let e = run().unwrap_err().to_string();
    assert!(e.contains("ends at seq 20"), "{e}");
    assert!(
        !out.exists(),
        "nothing shipped from a cursor that cannot be trusted"
    );
}

#[test]
fn a_failing_sink_raises_one_alert_per_condition_into_a_ledger_that_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 30);
    let port = free_loopback_port();
    let cfg = sink_config(&format!(
        "name = \"dead\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\nalert_failing_secs = 1\nalert_lag_records = 10\n"
    ));
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let alerts = LedgerAlerts {
        data_dir: data.clone(),
        config: LedgerConfig {
            fsync: false,
            ..LedgerConfig::default()
        },
    };
    let mut shipper = Shipper::new(&data, cfg, sink, Some(Box::new(alerts)));
    let status = shipper.status_handle();
    let opts = ShipOptions {
        follow: true,
        ..ShipOptions::default()
    };
    let stop = opts.stop.clone();
    let t = std::thread::spawn(move || shipper.run(&opts));
    let start = Instant::now();
    while status.lock().unwrap().alerts_raised < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            status.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let st = t.join().unwrap().unwrap();
    assert_eq!(st.shipped, 0);
    assert!(st.failures >= 2, "{st:?}");
    assert_eq!(
        st.alerts_raised, 2,
        "one lag and one failing alert, not one per retry"
    );
    let alerts: Vec<serde_json::Value> = ledger_lines(&data)
        .iter()
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "alert")
        .collect();
    let rules: Vec<&str> = alerts
        .iter()
        .map(|a| a["detail"]["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules.len(), 2, "{alerts:?}");
    assert!(
        rules.contains(&"sink_lag") && rules.contains(&"sink_failing"),
        "{rules:?}"
    );
    let failing = alerts
        .iter()
        .find(|a| a["detail"]["rule"] == "sink_failing")
        .unwrap();
    assert_eq!(failing["detail"]["sink"], "dead");
    assert!(
        failing["detail"]["last_error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{failing}"
    );
    // The ledger still verifies with the shipper's appends in it.
    let report =
        mcptrail_ledger::verify(&data, &mcptrail_ledger::VerifyOptions::default()).unwrap();
    assert!(
        report.problems.is_empty() && report.verdict != mcptrail_ledger::Verdict::Tampered,
        "{:?}",
        report.problems
    );
}

#[test]
fn one_shipper_per_sink_a_second_one_is_refused_or_waits_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 5);
    let out = dir.path().join("out.jsonl");
    let cfg = file_sink(&out);
    let start = |follow: bool| {
        let sink = mcptrail_sinks::build(&cfg).unwrap();
        let mut shipper = Shipper::new(&data, cfg.clone(), sink, None);
        let opts = ShipOptions {
            follow,
            poll_interval: Duration::from_millis(10),
            ..ShipOptions::default()
        };
        let stop = opts.stop.clone();
        (std::thread::spawn(move || shipper.run(&opts)), stop)
    };
    let (first, stop_first) = start(true);
    let t0 = Instant::now();
    while shipped_ids(&out).len() < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the first shipper did not ship"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Not following: refused while the first runs.
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let e = Shipper::new(&data, cfg.clone(), sink, None)
        .run(&ShipOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("another mcptrail process") && e.contains("f.lock"),
        "{e}"
    );
    // Following: waits, then takes over where the first stopped.
    let (second, stop_second) = start(true);
    std::thread::sleep(Duration::from_millis(100));
    stop_first.store(true, Ordering::Relaxed);
    first.join().unwrap().unwrap();
    write_ledger(&data, 3);
    let t0 = Instant::now();
    while shipped_ids(&out).len() < 8 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the second shipper did not take over"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_second.store(true, Ordering::Relaxed);
    assert_eq!(second.join().unwrap().unwrap().shipped, 3);
    assert_eq!(shipped_ids(&out).len(), 8, "no event shipped twice");
}

#[test]
fn a_missing_segment_stops_the_sink_at_the_gap_instead_of_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let mut ledger = Ledger::open(
            &data,
            LedgerConfig {
                fsync: false,
                segment_max_bytes: 4 * 1024,
                ..LedgerConfig::default()
            },
        )
        .unwrap();
        for i in 0..60 {
            let mut e = Event::new(EventKind::McpNotification);
            e.method = Some(format!("notifications/message {i}"));
            ledger.append(&mut [e]).unwrap();
        }
    }
    let segments = list_segments(&data.join(LEDGER_DIR)).unwrap();
    assert!(segments.len() >= 4, "{} segments", segments.len());
    let removed = &segments[2];
    std::fs::remove_file(&removed.path).unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = file_sink(&out);
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut shipper = Shipper::new(&data, cfg.clone(), sink, None);
    let e = shipper
        .run(&ShipOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("expected seq {}", removed.first_seq)) && e.contains("mcptrail verify"),
        "{e}"
    );
    // Everything before the gap was delivered and committed; nothing after it.
    let shipped = shipped_ids(&out).len() as u64;
    assert_eq!(shipped, removed.first_seq - 1);
    assert_eq!(
        Cursor::new(&data, "f").load().unwrap().unwrap().seq,
        removed.first_seq - 1
    );
}

/// A receiver model for the framework's invariants: it stores batches, and, driven by a
/// seeded generator, refuses some (nothing stored), loses the acknowledgement of others
/// (stored, but the shipper sees an error), or "crashes" the shipper right after storing (the
/// stop flag is set before the cursor can be committed).
struct FlakyReceiver {
    rng: mcptrail_sinks::backoff::SplitMix64,
    stored: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    crash: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl mcptrail_sinks::Sink for FlakyReceiver {
    fn send(
        &mut self,
        batch: &[mcptrail_sinks::ShipRecord],
    ) -> Result<(), mcptrail_sinks::SendError> {
        use mcptrail_sinks::{SendError, SendErrorKind};
        let roll = self.rng.next_u64() % 100;
        if roll < 25 {
            return Err(SendError::new(SendErrorKind::Transport, "refused"));
        }
        self.stored
            .lock()
            .unwrap()
            .extend(batch.iter().map(|r| r.seq));
        if roll < 35 {
            return Err(SendError::new(SendErrorKind::Transport, "ack lost"));
        }
        if roll < 42 {
            self.crash.store(true, Ordering::Relaxed);
            return Err(SendError::new(
                SendErrorKind::Transport,
                "crashed before the commit",
            ));
        }
        Ok(())
    }

    fn probe(&mut self) -> Result<String, mcptrail_sinks::SendError> {
        Ok("model".into())
    }
}

#[test]
fn at_least_once_in_order_and_the_cursor_never_overtakes_delivery_under_random_faults() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 700);
    for seed in 0..12u64 {
        let cfg = sink_config(&format!(
            "name = \"model{seed}\"\ntype = \"file\"\npath = \"/unused\"\nbatch_max_events = {}\nbackoff_initial_ms = 1\nbackoff_max_ms = 2\nkinds = [\"mcp.request\"]\n",
            1 + seed * 13 % 97
        ));
        let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs < 1000, "seed {seed}: no progress");
            let crash = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sink = FlakyReceiver {
                rng: mcptrail_sinks::backoff::SplitMix64::new(seed * 1000 + runs),
                stored: stored.clone(),
                crash: crash.clone(),
            };
            let before = Cursor::new(&data, &cfg.name)
                .load()
                .unwrap()
                .map_or(0, |c| c.seq);
            let st = Shipper::new(&data, cfg.clone(), Box::new(sink), None)
                .run(&ShipOptions {
                    stop: crash,
                    jitter_seed: Some(seed),
                    ..ShipOptions::default()
                })
                .unwrap();
            let delivered = stored.lock().unwrap().clone();
            // The cursor only moves forward, and never past what the receiver holds.
            assert!(st.cursor >= before, "seed {seed}: cursor went back");
            let requests_upto = |c: u64| (1..=c).filter(|s| (s - 1) % 3 != 2).count();
            let distinct: std::collections::BTreeSet<u64> = delivered.iter().copied().collect();
            assert!(
                distinct.len() >= requests_upto(st.cursor),
                "seed {seed}: cursor {} ahead of the {} delivered",
                st.cursor,
                distinct.len()
            );
            if st.cursor == 700 {
                break;
            }
        }
        let delivered = stored.lock().unwrap().clone();
        let distinct: std::collections::BTreeSet<u64> = delivered.iter().copied().collect();
        let expected: std::collections::BTreeSet<u64> =
            (1..=700).filter(|s| (s - 1) % 3 != 2).collect();
        assert_eq!(
            distinct, expected,
            "seed {seed}: every request at least once, nothing else"
        );
        // In order: every delivery is a repeat of something already stored or exactly the
        // next event not stored yet; nothing ever overtakes an event that is missing.
        let mut seen = std::collections::BTreeSet::new();
        let mut next = expected.iter().copied();
        let mut needed = next.next();
        for &s in &delivered {
            assert!(
                seen.contains(&s) || Some(s) == needed,
                "seed {seed}: {s} delivered while {needed:?} was missing"
            );
            seen.insert(s);
            while needed.is_some_and(|n| seen.contains(&n)) {
                needed = next.next();
            }
        }
    }
}
