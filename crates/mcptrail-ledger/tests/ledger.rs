//! Integration tests of the ledger: chain, rotation, concurrent writers, tampering, torn
//! tails and a writer killed with SIGKILL.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{
    list_segments, verify, Ledger, LedgerConfig, LedgerReader, Problem, VerifyOptions,
};

fn ev(agent: &str, n: u64) -> Event {
    let mut e = Event::new(EventKind::McpRequest);
    e.agent_id = Some(agent.to_string());
    e.request_id = Some(serde_json::json!(n));
    e.method = Some("tools/call".into());
    e
}

fn all_events(dir: &Path) -> Vec<Event> {
    LedgerReader::open(dir, 1)
        .unwrap()
        .map(|r| serde_json::from_slice::<Event>(&r.unwrap().line).unwrap())
        .collect()
}

fn segment_lines(dir: &Path) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let seg = list_segments(&dir.join("ledger"))
        .unwrap()
        .pop()
        .unwrap()
        .path;
    let bytes = std::fs::read(&seg).unwrap();
    let lines = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    (seg, lines)
}

fn write_lines(seg: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(seg, out).unwrap();
}

#[test]
fn append_assigns_contiguous_seq_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let mut batch: Vec<Event> = (0..5).map(|i| ev("a", i)).collect();
    let r = l.append(&mut batch).unwrap();
    assert_eq!((r.first_seq, r.last_seq), (1, 5));
    let r = l.append(&mut [ev("a", 5)]).unwrap();
    assert_eq!((r.first_seq, r.last_seq), (6, 6));
    let events = all_events(dir.path());
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(events[0].prev_hash, mcptrail_event::GENESIS_HASH);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 6);

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("ledger")), 0o700);
    for s in list_segments(&dir.path().join("ledger")).unwrap() {
        assert_eq!(mode(&s.path), 0o600);
    }
}

#[test]
fn rotation_seals_segments_and_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LedgerConfig {
        segment_max_bytes: 2_000,
        ..Default::default()
    };
    let mut l = Ledger::open(dir.path(), cfg).unwrap();
    for i in 0..60 {
        l.append(&mut [ev("a", i)]).unwrap();
    }
    let segs = list_segments(&dir.path().join("ledger")).unwrap();
    assert!(
        segs.len() > 3,
        "expected rotation, got {} segments",
        segs.len()
    );
    for s in &segs[..segs.len() - 1] {
        assert!(s.sealed, "{} not sealed", s.path.display());
        assert_eq!(
            std::fs::metadata(&s.path).unwrap().permissions().mode() & 0o777,
            0o400
        );
    }
    assert!(!segs.last().unwrap().sealed);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 60);
    // A second handle (another process after restart) continues the same chain.
    drop(l);
    let mut l2 = Ledger::open(
        dir.path(),
        LedgerConfig {
            segment_max_bytes: 2_000,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(l2.append(&mut [ev("b", 0)]).unwrap().first_seq, 61);
    assert!(verify(dir.path(), &VerifyOptions::default()).unwrap().ok());
}

#[test]
fn ten_concurrent_writers_never_interleave_or_lose() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LedgerConfig {
        segment_max_bytes: 200_000,
        ..Default::default()
    };
    std::thread::scope(|s| {
        for w in 0..10 {
            let path = dir.path().to_path_buf();
            let cfg = cfg.clone();
            s.spawn(move || {
                // Each writer has its own handle, as separate `wrap` processes would.
                let mut l = Ledger::open(&path, cfg).unwrap();
                let agent = format!("writer-{w}");
                let mut n = 0u64;
                for round in 0..40 {
                    let size = 1 + (round * 7 + w) % 13;
                    let mut batch: Vec<Event> = (0..size)
                        .map(|_| {
                            n += 1;
                            ev(&agent, n)
                        })
                        .collect();
                    l.append(&mut batch).unwrap();
                }
                n
            });
        }
    });
    let events = all_events(dir.path());
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let mut per_writer: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &events {
        per_writer
            .entry(e.agent_id.clone().unwrap())
            .or_default()
            .push(e.request_id.as_ref().unwrap().as_u64().unwrap());
    }
    assert_eq!(per_writer.len(), 10);
    for (w, ns) in per_writer {
        // Every record of every writer is there exactly once, in the writer's own order.
        assert_eq!(ns, (1..=ns.len() as u64).collect::<Vec<_>>(), "{w}");
    }
    assert_eq!(report.records as usize, events.len());
}

#[test]
fn modified_record_breaks_the_chain_at_the_next_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    l.append(&mut (0..10).map(|i| ev("a", i)).collect::<Vec<_>>())
        .unwrap();
    let (seg, mut lines) = segment_lines(dir.path());
    let s = String::from_utf8(lines[4].clone())
        .unwrap()
        .replace("tools/call", "tools/kall");
    lines[4] = s.into_bytes();
    write_lines(&seg, &lines);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem::ChainBroken {
                seq: 6,
                line: 6,
                ..
            }]
        ),
        "{:?}",
        report.problems
    );
}

#[test]
fn deleted_and_reordered_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    l.append(&mut (0..10).map(|i| ev("a", i)).collect::<Vec<_>>())
        .unwrap();
    let (seg, lines) = segment_lines(dir.path());

    let mut deleted = lines.clone();
    deleted.drain(3..5); // seq 4 and 5
    write_lines(&seg, &deleted);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(
        report.problems.contains(&Problem::Missing {
            from_seq: 4,
            to_seq: 5,
            segment: seg.file_name().unwrap().to_str().unwrap().into(),
            line: 4
        }),
        "{:?}",
        report.problems
    );

    let mut swapped = lines.clone();
    swapped.swap(6, 7);
    write_lines(&seg, &swapped);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::OutOfOrder {
                seq: 7,
                expected: 9,
                ..
            }
        )),
        "{:?}",
        report.problems
    );
    assert!(
        !report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::Missing { .. })),
        "a swap is not a deletion: {:?}",
        report.problems
    );

    let mut head_cut = lines.clone();
    head_cut.remove(0);
    write_lines(&seg, &head_cut);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::BadGenesis { seq: 2 })),
        "{:?}",
        report.problems
    );
}

#[test]
fn torn_tail_is_reported_then_quarantined_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    l.append(&mut (0..3).map(|i| ev("a", i)).collect::<Vec<_>>())
        .unwrap();
    drop(l);
    let (seg, _) = segment_lines(dir.path());
    let torn = br#"{"schema_version":"1.0","event_id":"0193"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(torn)
        .unwrap();

    // verify reports it, precisely.
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    let seg_len = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(
        report.problems,
        vec![Problem::TornTail {
            segment: seg.file_name().unwrap().to_str().unwrap().into(),
            offset: seg_len - torn.len() as u64,
            length: torn.len() as u64
        }]
    );
    assert_eq!(
        report.records, 3,
        "the complete records before it are intact"
    );

    // The next writer quarantines it and says so in the chain.
    let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let r = l.append(&mut [ev("b", 0)]).unwrap();
    assert_eq!((r.first_seq, r.last_seq), (5, 5));
    let events = all_events(dir.path());
    assert_eq!(events[3].kind, EventKind::SystemLedgerRecovered);
    let detail = events[3].detail.as_ref().unwrap();
    assert_eq!(detail["length"], torn.len());
    assert_eq!(detail["sha256"], mcptrail_event::sha256_hex(torn));
    let q = dir
        .path()
        .join("ledger")
        .join(detail["quarantined_to"].as_str().unwrap());
    assert_eq!(std::fs::read(q).unwrap(), torn);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let recoveries = report
        .notices
        .iter()
        .filter(|n| n.contains("torn record"))
        .count();
    assert_eq!(recoveries, 1, "{:?}", report.notices);
}

#[test]
fn corrupt_last_record_stops_the_writer_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    l.append(&mut [ev("a", 0)]).unwrap();
    drop(l);
    let (seg, _) = segment_lines(dir.path());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(b"garbage\n")
        .unwrap();
    let mut l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let err = l.append(&mut [ev("a", 1)]).unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains("mcptrail verify"),
        "{err}"
    );
    // Nothing was appended after the corrupt line.
    assert_eq!(segment_lines(dir.path()).1.len(), 2);
}

/// Child half of `sigkill_loses_nothing_acknowledged`: appends forever, printing each
/// acknowledged last seq. Does nothing unless started by the parent test.
#[test]
fn sigkill_child_writer() {
    let Ok(dir) = std::env::var("MCPTRAIL_LEDGER_TEST_CHILD_DIR") else {
        return;
    };
    let mut l = Ledger::open(Path::new(&dir), LedgerConfig::default()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let mut batch: Vec<Event> = (0..50).map(|j| ev("child", i * 50 + j)).collect();
        let r = l.append(&mut batch).unwrap();
        writeln!(out, "ACK {}", r.last_seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MCPTRAIL_LEDGER_TEST_CHILD_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = 0u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked < 2_000 * (round + 1) {
            assert!(
                std::time::Instant::now() < deadline,
                "child writer too slow"
            );
            let line = lines.next().expect("child ended").unwrap();
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = n.trim().parse().unwrap();
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Read whatever else it acknowledged before dying.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ") {
                acked = n.trim().parse().unwrap();
            }
        }
        let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
        let torn_only = report
            .problems
            .iter()
            .all(|p| matches!(p, Problem::TornTail { .. }));
        assert!(torn_only, "{:?}", report.problems);
        assert!(
            report.last_seq.unwrap() >= acked,
            "acknowledged {acked} but ledger ends at {:?}",
            report.last_seq
        );
    }
    // A fresh writer continues cleanly and everything verifies.
    Ledger::open(dir.path(), LedgerConfig::default())
        .unwrap()
        .append(&mut [ev("after", 0)])
        .unwrap();
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
