//! Signed Merkle checkpoints: written by the writer, checked by `verify`, and catching what
//! the hash chain alone cannot — a truncated tail and history rewritten with the chain
//! recomputed.

use std::path::Path;
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_integrity::NoteSigner;
use mcptrail_ledger::{
    list_checkpoints, list_segments, verify, CheckpointPolicy, Ledger, LedgerConfig, Problem,
    VerifyOptions, CHECKPOINT_DIR,
};

fn ev(n: u64) -> Event {
    let mut e = Event::new(EventKind::McpRequest);
    e.agent_id = Some("cp-test".into());
    e.request_id = Some(serde_json::json!(n));
    e
}

fn config(every: u64, anchor: Option<&Path>) -> LedgerConfig {
    LedgerConfig {
        checkpoints: CheckpointPolicy {
            every_records: every,
            interval: Duration::from_secs(3600),
            anchor_dir: anchor.map(Path::to_path_buf),
            ..CheckpointPolicy::default()
        },
        ..LedgerConfig::default()
    }
}

/// 30 records in batches of 5, a checkpoint every 10.
fn ledger_with_checkpoints(dir: &Path, anchor: Option<&Path>) {
    let mut l = Ledger::open(dir, config(10, anchor)).unwrap();
    for b in 0..6 {
        let mut batch: Vec<Event> = (0..5).map(|i| ev(b * 5 + i)).collect();
        l.append(&mut batch).unwrap();
    }
}

fn seg_lines(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let seg = list_segments(&dir.join("ledger"))
        .unwrap()
        .pop()
        .unwrap()
        .path;
    let text = std::fs::read_to_string(&seg).unwrap();
    (seg, text.lines().map(String::from).collect())
}

fn write(seg: &Path, lines: &[String]) {
    std::fs::write(
        seg,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn checkpoints_are_signed_at_the_policy_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = tempfile::tempdir().unwrap();
    ledger_with_checkpoints(dir.path(), Some(anchor.path()));
    let local: Vec<u64> = list_checkpoints(&dir.path().join(CHECKPOINT_DIR))
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(local, [10, 20, 30]);
    let anchored: Vec<u64> = list_checkpoints(anchor.path())
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(anchored, local, "every checkpoint is anchored too");
    let report = verify(
        dir.path(),
        &VerifyOptions {
            anchor_dirs: vec![anchor.path().to_path_buf()],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.checkpoints_verified, 6);
    assert_eq!(report.latest_checkpoint, Some(30));
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&dir.path().join("keys/checkpoint.skey")), 0o600);
    assert_eq!(mode(&dir.path().join("keys")), 0o700);
}

#[test]
fn leaves_folded_while_the_segment_is_flushed_give_the_signed_roots() {
    // With fsync on, batches of 64 records or more fold their leaves into the tree on the
    // writer thread while a helper flushes the segment; smaller ones fold after the flush.
    // Mixed, and across a restart (the tree comes back from the TREE cache).
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for _round in 0..2 {
        let cfg = config(150, None);
        assert!(cfg.fsync);
        let mut l = Ledger::open(dir.path(), cfg).unwrap();
        for size in [100, 3, 100, 70, 1] {
            let mut batch: Vec<Event> = (0..size)
                .map(|_| {
                    n += 1;
                    ev(n)
                })
                .collect();
            l.append(&mut batch).unwrap();
        }
        l.checkpoint_now().unwrap();
    }
    let local: Vec<u64> = list_checkpoints(&dir.path().join(CHECKPOINT_DIR))
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(local, [203, 274, 477, 548]);
    // `verify` recomputes the tree from the lines and checks every signed root.
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.records, report.checkpoints_verified), (548, 4));
}

#[test]
fn a_truncated_tail_is_caught_although_the_chain_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    ledger_with_checkpoints(dir.path(), None);
    let (seg, lines) = seg_lines(dir.path());
    write(&seg, &lines[..25]);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert_eq!(
        report.problems,
        [Problem::Truncated {
            file: "checkpoints/cp-00000000000000000030.note".into(),
            size: 30,
            records: 25
        }],
        "only the checkpoint notices"
    );
    assert_eq!(report.latest_checkpoint, Some(20));
}

#[test]
fn history_rewritten_with_the_chain_recomputed_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    ledger_with_checkpoints(dir.path(), None);
    let (seg, mut lines) = seg_lines(dir.path());
    // The attacker edits record 12 and recomputes every later prev_hash.
    lines[11] = lines[11].replace("cp-test", "cp-TEST");
    for i in 12..lines.len() {
        let prev = hex::encode(mcptrail_ledger::record_hash(lines[i - 1].as_bytes()));
        let mut e: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
        let old = e["prev_hash"].as_str().unwrap().to_string();
        e["prev_hash"] = prev.clone().into();
        lines[i] = lines[i].replace(&old, &prev);
    }
    write(&seg, &lines);
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    let files: Vec<String> = report
        .problems
        .iter()
        .map(|p| match p {
            Problem::CheckpointMismatch { file, .. } => file.clone(),
            other => panic!("only checkpoint mismatches expected, got {other}"),
        })
        .collect();
    assert_eq!(
        files,
        [
            "checkpoints/cp-00000000000000000020.note",
            "checkpoints/cp-00000000000000000030.note"
        ]
    );
    assert_eq!(
        report.latest_checkpoint,
        Some(10),
        "the checkpoint before the edit still matches"
    );
}

#[test]
fn forged_or_foreign_checkpoints_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    ledger_with_checkpoints(dir.path(), None);
    let cp_dir = dir.path().join(CHECKPOINT_DIR);
    // Claim a different size in a signed note: the signature no longer matches.
    let path = cp_dir.join("cp-00000000000000000020.note");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("\n20\n", "\n19\n", 1);
    std::fs::write(&path, text).unwrap();
    // A checkpoint signed by someone else's key.
    let other = NoteSigner::generate("mcptrail.local/attacker/00").unwrap();
    std::fs::write(
        cp_dir.join("cp-00000000000000000031.note"),
        other
            .sign("mcptrail.local/attacker/00\n31\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
            .unwrap(),
    )
    .unwrap();
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    let invalid: Vec<&str> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::CheckpointInvalid { file, .. } => Some(file.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        invalid,
        [
            "checkpoints/cp-00000000000000000020.note",
            "checkpoints/cp-00000000000000000031.note"
        ]
    );
    // An auditor who was handed the attacker's key trusts none of the ledger's checkpoints,
    // and the attacker's own claims a size the ledger does not reach.
    let report = verify(
        dir.path(),
        &VerifyOptions {
            verifier: Some(other.verifier()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.checkpoints_verified, 0);
    let invalid = report
        .problems
        .iter()
        .filter(|p| matches!(p, Problem::CheckpointInvalid { .. }))
        .count();
    assert_eq!(invalid, 3, "{:?}", report.problems);
    assert!(report
        .problems
        .iter()
        .any(|p| matches!(p, Problem::Truncated { size: 31, .. })));
}

#[test]
fn the_tree_cache_is_rebuilt_when_lost_or_torn_and_other_writers_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    ledger_with_checkpoints(dir.path(), None);
    std::fs::write(
        dir.path().join("ledger/TREE"),
        "mcptrail-tree v1\nsize 30\ntorn",
    )
    .unwrap();
    let mut a = Ledger::open(dir.path(), config(10, None)).unwrap();
    let mut b = Ledger::open(dir.path(), config(10, None)).unwrap();
    for i in 0..6u64 {
        let l = if i % 2 == 0 { &mut a } else { &mut b };
        l.append(&mut (0..3).map(|j| ev(100 + i * 3 + j)).collect::<Vec<_>>())
            .unwrap();
    }
    std::fs::remove_file(dir.path().join("ledger/TREE")).unwrap();
    a.append(&mut [ev(999)]).unwrap();
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 49);
    assert_eq!(
        report.latest_checkpoint,
        Some(42),
        "30, then 33..42 by both writers"
    );
}

#[test]
fn checkpoint_now_covers_every_record_and_an_empty_log_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), config(1000, None)).unwrap();
    assert_eq!(l.checkpoint_now().unwrap(), None);
    assert!(
        list_segments(&dir.path().join("ledger"))
            .unwrap()
            .is_empty(),
        "no empty segment made"
    );
    l.append(&mut (0..7).map(ev).collect::<Vec<_>>()).unwrap();
    assert_eq!(l.checkpoint_now().unwrap(), Some(7));
    assert_eq!(
        l.checkpoint_now().unwrap(),
        Some(7),
        "nothing new: no second checkpoint"
    );
    assert_eq!(
        list_checkpoints(&dir.path().join(CHECKPOINT_DIR))
            .unwrap()
            .len(),
        1
    );
    let report = verify(dir.path(), &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.latest_checkpoint, Some(7));
}

/// An anchor through the `CheckpointAnchor` seam: in memory, for the test.
#[derive(Debug, Default)]
struct MemoryAnchor(std::sync::Mutex<Vec<(u64, String)>>);

impl mcptrail_ledger::CheckpointAnchor for MemoryAnchor {
    fn label(&self) -> String {
        "memory".into()
    }
    fn publish(&self, size: u64, note: &str) -> Result<(), mcptrail_ledger::LedgerError> {
        self.0.lock().unwrap().push((size, note.to_string()));
        Ok(())
    }
    fn fetch_all(&self) -> Result<Vec<(String, String)>, mcptrail_ledger::LedgerError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(s, n)| (format!("memory/{s}"), n.clone()))
            .collect())
    }
}

#[test]
fn anchors_plug_in_through_the_seam_and_a_dead_anchor_never_fails_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = std::sync::Arc::new(MemoryAnchor::default());
    let mut cfg = config(10, None);
    cfg.checkpoints.anchors.push(anchor.clone());
    // And a directory anchor that cannot exist (a path under a regular file).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    cfg.checkpoints.anchor_dir = Some(blocker.join("anchor"));
    let data = dir.path().join("data");
    let mut l = Ledger::open(&data, cfg).unwrap();
    for b in 0..3 {
        let mut batch: Vec<Event> = (0..5).map(|i| ev(b * 5 + i)).collect();
        l.append(&mut batch)
            .expect("a dead anchor does not fail the append");
    }
    let problem = l
        .take_checkpoint_problem()
        .expect("the dead anchor is reported");
    assert!(
        problem.to_string().contains("could not be anchored"),
        "{problem}"
    );
    assert!(l.take_checkpoint_problem().is_none());
    assert_eq!(
        anchor.0.lock().unwrap().len(),
        1,
        "the checkpoint at 10 reached the memory anchor"
    );

    // verify reads the seam's anchor like any other; the unreadable one makes it "cannot verify".
    let report = verify(
        &data,
        &VerifyOptions {
            anchors: vec![anchor.clone()],
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 15, "no record written twice");
    assert_eq!(
        report.checkpoints_verified, 2,
        "local and memory copies of the one at 10"
    );
    let report = verify(
        &data,
        &VerifyOptions {
            anchor_dirs: vec![blocker.join("anchor")],
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        report.verdict,
        mcptrail_ledger::Verdict::CannotVerify,
        "{:?}",
        report.unchecked
    );

    // A rollback is caught by the seam's anchor alone.
    anchor.0.lock().unwrap()[0].1 = std::fs::read_to_string(
        list_checkpoints(&data.join(CHECKPOINT_DIR)).unwrap()[0]
            .1
            .clone(),
    )
    .unwrap();
    let (seg, lines) = seg_lines(&data);
    let mut mode = std::fs::metadata(&seg).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o600);
    std::fs::set_permissions(&seg, mode).unwrap();
    write(&seg, &lines[..lines.len().min(3)]);
    for (_, p) in list_checkpoints(&data.join(CHECKPOINT_DIR)).unwrap() {
        std::fs::remove_file(p).unwrap();
    }
    let report = verify(
        &data,
        &VerifyOptions {
            anchors: vec![anchor],
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.class() == "truncated_tail"),
        "{:?}",
        report.problems
    );
}
