//! Removing the oldest segments under signed tombstones (the retention engine's write path):
//! the ledger still verifies — chain, MACs, checkpoints, bundles, consistency proofs — and
//! every way of abusing a tombstone is reported.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_integrity::{NoteSigner, Seed};
use mcptrail_ledger::{
    default_seed_path, export_session, list_segments, list_tombstones, local_verifier,
    prove_consistency, remove_segments, tombstone_file_name, verify, verify_bundle,
    CheckpointPolicy, Ledger, LedgerConfig, MacPolicy, Removal, RemovalOptions, RemovalStep,
    Tombstone, TombstoneState, Verdict, VerifyOptions, VerifyReport, LEDGER_DIR, TOMBSTONE_DIR,
};

const SESSION: &str = "0190a1b2-cccc-7000-8000-00000000000c";

fn config(anchor: Option<&Path>) -> LedgerConfig {
    LedgerConfig {
        segment_max_bytes: 2000,
        fsync: false,
        checkpoints: CheckpointPolicy {
            every_records: 5,
            interval: Duration::from_secs(3600),
            anchor_dir: anchor.map(Path::to_path_buf),
            ..CheckpointPolicy::default()
        },
        macs: MacPolicy {
            enabled: true,
            epoch_records: 3,
            epoch_interval: Duration::from_secs(3600),
            seed_path: None,
        },
        ..LedgerConfig::default()
    }
}

fn event(i: u64, session: Option<&str>) -> Event {
    let mut e = Event::new(EventKind::McpRequest);
    e.method = Some("tools/call".into());
    e.request_id = Some(serde_json::json!(i));
    e.session_id = session.map(String::from);
    if i.is_multiple_of(4) {
        e.labels = vec!["pii".into()];
    }
    e
}

/// `n` records, one per batch (so epochs step often), in segments of a few records.
fn ledger(dir: &Path, n: u64, anchor: Option<&Path>) {
    let mut l = Ledger::open(dir, config(anchor)).unwrap();
    for i in 1..=n {
        l.append(&mut [event(i, (i > n / 2).then_some(SESSION))])
            .unwrap();
    }
    l.checkpoint_now().unwrap();
}

fn opts(dir: &Path) -> VerifyOptions {
    VerifyOptions {
        seed: Some(Seed::read(&default_seed_path(dir)).unwrap()),
        verifier: Some(local_verifier(dir).unwrap().unwrap()),
        ..VerifyOptions::default()
    }
}

fn check(dir: &Path) -> VerifyReport {
    verify(dir, &opts(dir)).unwrap()
}

fn segment_names(dir: &Path) -> Vec<String> {
    list_segments(&dir.join(LEDGER_DIR))
        .unwrap()
        .iter()
        .map(|s| s.path.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

fn purge(names: &[String]) -> Vec<Removal> {
    names
        .iter()
        .map(|n| Removal {
            segment: n.clone(),
            state: TombstoneState::Purged,
            archive: None,
        })
        .collect()
}

fn meta() -> serde_json::Value {
    serde_json::json!({"policy": {"default": {"days": 90}}, "authorisation": {"request_id": "r-1", "requested_by": "alice", "approved_by": "bob"}})
}

fn remove(dir: &Path, names: &[String]) {
    remove_segments(
        dir,
        &purge(names),
        &RemovalOptions {
            meta: meta(),
            ..RemovalOptions::default()
        },
    )
    .unwrap();
}

fn classes(r: &VerifyReport) -> Vec<&'static str> {
    r.problems.iter().map(|p| p.class()).collect()
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
        let mode = std::fs::metadata(e.path()).unwrap().permissions();
        std::fs::set_permissions(&to, mode).unwrap();
    }
}

/// A ledger of 40 records with its first three segments purged.
fn purged_ledger() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    ledger(dir.path(), 40, None);
    let names = segment_names(dir.path());
    assert!(names.len() >= 6, "{names:?}");
    remove(dir.path(), &names[..3]);
    (dir, names)
}

#[test]
fn a_ledger_verifies_after_its_oldest_segments_are_purged_and_keeps_growing() {
    let (dir, names) = purged_ledger();
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    assert_eq!(r.removed.len(), 3);
    let through = r.removed[2].last_seq;
    assert_eq!(r.removed[0].first_seq, 1);
    assert_eq!(r.first_seq, Some(through + 1));
    assert_eq!(r.last_seq, Some(40));
    assert_eq!(r.records, 40 - through);
    assert_eq!(r.macs_checked, 40 - through, "every remaining MAC checked");
    assert_eq!(r.latest_checkpoint, Some(40));
    assert_eq!(r.removed[1].meta["authorisation"]["approved_by"], "bob");
    assert_eq!(segment_names(dir.path()), names[3..]);

    // A writer that lost its TREE cache rebuilds the tree from the tombstone and goes on.
    std::fs::remove_file(dir.path().join(LEDGER_DIR).join("TREE")).unwrap();
    let mut l = Ledger::open(dir.path(), config(None)).unwrap();
    for i in 41..=50 {
        l.append(&mut [event(i, Some(SESSION))]).unwrap();
    }
    assert_eq!(l.checkpoint_now().unwrap(), Some(50));
    drop(l);
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    assert_eq!((r.last_seq, r.latest_checkpoint), (Some(50), Some(50)));

    // An evidence bundle of a session after the purge verifies offline.
    let bundle = export_session(dir.path(), SESSION).unwrap();
    let key = local_verifier(dir.path()).unwrap().unwrap();
    let br = verify_bundle(&bundle, Some(&key));
    assert!(br.ok(), "{br:?}");

    // A consistency proof from a checkpoint after the purge point still works.
    let kept = std::fs::read_to_string(
        dir.path()
            .join("checkpoints")
            .join(mcptrail_ledger::checkpoint_file_name(40)),
    )
    .unwrap();
    let proof = prove_consistency(dir.path(), &kept).unwrap();
    assert_eq!(
        mcptrail_ledger::check_consistency(&proof, &key).unwrap(),
        (40, 50)
    );
}

#[test]
fn archived_then_purged_gets_a_second_tombstone_and_tombstones_are_anchored() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = tempfile::tempdir().unwrap();
    ledger(dir.path(), 30, Some(anchor.path()));
    let names = segment_names(dir.path());
    let archived: Vec<Removal> = names[..2]
        .iter()
        .map(|n| Removal {
            segment: n.clone(),
            state: TombstoneState::Archived,
            archive: Some("/mnt/archive \"x\"".into()),
        })
        .collect();
    let o = RemovalOptions {
        meta: meta(),
        anchor_dir: Some(anchor.path().to_path_buf()),
        ..RemovalOptions::default()
    };
    let done = remove_segments(dir.path(), &archived, &o).unwrap();
    assert!(done.iter().all(|d| d.deleted_segment));
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    assert!(r
        .removed
        .iter()
        .all(|s| s.state == TombstoneState::Archived));
    // Later the archive copies are purged: the segment is gone already, a purged tombstone
    // is added for the same records.
    let done = remove_segments(dir.path(), &purge(&names[..1]), &o).unwrap();
    assert_eq!(done.len(), 1);
    assert!(!done[0].deleted_segment);
    // Doing it again is a no-op.
    assert!(remove_segments(dir.path(), &purge(&names[..1]), &o)
        .unwrap()
        .is_empty());
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    assert_eq!(
        r.removed.iter().map(|s| s.state).collect::<Vec<_>>(),
        [TombstoneState::Purged, TombstoneState::Archived]
    );
    assert_eq!(
        list_tombstones(&anchor.path().join(TOMBSTONE_DIR))
            .unwrap()
            .len(),
        3
    );
    // With the local tombstones gone, the anchored copies still explain the removal.
    std::fs::remove_dir_all(dir.path().join(TOMBSTONE_DIR)).unwrap();
    let mut o2 = opts(dir.path());
    o2.anchor_dirs = vec![anchor.path().to_path_buf()];
    let r = verify(dir.path(), &o2).unwrap();
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    // Without them, the missing head is reported.
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(classes(&r).contains(&"deleted_record"), "{:?}", r.problems);
}

#[test]
fn removal_refuses_the_active_segment_a_non_prefix_and_a_tampered_segment() {
    let dir = tempfile::tempdir().unwrap();
    ledger(dir.path(), 30, None);
    let names = segment_names(dir.path());
    let o = RemovalOptions::default();
    let err = remove_segments(dir.path(), &purge(&names[1..2]), &o).unwrap_err();
    assert!(err.to_string().contains("oldest"), "{err}");
    let err = remove_segments(dir.path(), &purge(&names[names.len() - 1..]), &o).unwrap_err();
    assert!(err.to_string().contains("active"), "{err}");
    // A record of the first segment altered: no tombstone launders it.
    let path = dir.path().join(LEDGER_DIR).join(&names[0]);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("tools/call", "tools/cell", 1)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let err = remove_segments(dir.path(), &purge(&names[..1]), &o).unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    assert!(list_tombstones(&dir.path().join(TOMBSTONE_DIR))
        .unwrap()
        .is_empty());
    assert_eq!(segment_names(dir.path()), names);
}

#[test]
fn a_crash_between_tombstone_and_delete_is_explained_and_completed() {
    let dir = tempfile::tempdir().unwrap();
    ledger(dir.path(), 30, None);
    let names = segment_names(dir.path());
    let crash = |step: RemovalStep, seg: &str| {
        if step == RemovalStep::TombstoneWritten && seg == names[1] {
            Err("killed".to_string())
        } else {
            Ok(())
        }
    };
    let o = RemovalOptions {
        meta: meta(),
        hook: Some(&crash),
        ..RemovalOptions::default()
    };
    let err = remove_segments(dir.path(), &purge(&names[..3]), &o).unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    // Segment 1 gone, segment 2 tombstoned but still there, segment 3 untouched.
    assert_eq!(segment_names(dir.path()), names[1..]);
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    assert!(
        r.notices.iter().any(|n| n.contains("interrupted removal")),
        "{:?}",
        r.notices
    );
    // A writer coming along meanwhile is not confused either.
    std::fs::remove_file(dir.path().join(LEDGER_DIR).join("TREE")).unwrap();
    let mut l = Ledger::open(dir.path(), config(None)).unwrap();
    l.append(&mut [event(31, None)]).unwrap();
    drop(l);
    assert_eq!(check(dir.path()).verdict, Verdict::Intact);
    // The next run completes.
    remove(dir.path(), &names[..3]);
    assert_eq!(segment_names(dir.path()), names[3..]);
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    assert!(r.notices.iter().all(|n| !n.contains("interrupted")));
    assert_eq!(r.removed.len(), 3);
}

/// Tamper with a copy of the purged ledger; the report must be `Tampered` with `class`.
fn tampered(tamper: impl FnOnce(&Path, &[String]), class: &str) -> VerifyReport {
    let (dir, names) = purged_ledger();
    let work = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), work.path());
    tamper(work.path(), &names);
    let r = verify(work.path(), &opts(dir.path())).unwrap();
    assert_eq!(r.verdict, Verdict::Tampered, "{class}: {:#?}", r.problems);
    assert!(classes(&r).contains(&class), "{class}: {:#?}", r.problems);
    r
}

fn ts_path(dir: &Path, names: &[String], i: usize) -> PathBuf {
    let first: u64 = names[i][4..24].parse().unwrap();
    dir.join(TOMBSTONE_DIR)
        .join(tombstone_file_name(first, TombstoneState::Purged))
}

#[test]
fn a_deleted_modified_or_forged_tombstone_is_reported() {
    // The newest tombstone deleted: the records it covered are simply missing.
    tampered(
        |d, n| std::fs::remove_file(ts_path(d, n, 2)).unwrap(),
        "missing_segment",
    );
    // A middle one deleted: the prefix has a gap.
    tampered(
        |d, n| std::fs::remove_file(ts_path(d, n, 1)).unwrap(),
        "tombstone_not_prefix",
    );
    // Every tombstone deleted: the ledger's beginning is gone.
    tampered(
        |d, _| std::fs::remove_dir_all(d.join(TOMBSTONE_DIR)).unwrap(),
        "deleted_record",
    );
    // One byte of a tombstone changed (its range widened).
    tampered(
        |d, n| {
            let p = ts_path(d, n, 1);
            let t = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, t.replacen("state purged", "state archived", 1)).unwrap();
        },
        "bad_tombstone",
    );
    // A tombstone signed with another key.
    tampered(
        |d, n| {
            let p = ts_path(d, n, 2);
            let t = Tombstone::read_unverified(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let other = NoteSigner::generate(&t.origin).unwrap();
            std::fs::write(&p, t.sign(&other).unwrap()).unwrap();
        },
        "bad_tombstone",
    );
    // A tombstone renamed (claims to be another segment's).
    tampered(
        |d, n| {
            std::fs::rename(
                ts_path(d, n, 2),
                d.join(TOMBSTONE_DIR)
                    .join(tombstone_file_name(999, TombstoneState::Purged)),
            )
            .unwrap()
        },
        "bad_tombstone",
    );
}

#[test]
fn a_segment_deleted_without_a_tombstone_or_a_non_prefix_tombstone_is_reported() {
    // The next segment after the purged ones deleted by hand.
    tampered(
        |d, n| {
            std::fs::remove_file(d.join(LEDGER_DIR).join(&n[3])).unwrap();
        },
        "missing_segment",
    );
    // A tombstone, validly signed with the ledger's own key, for a segment that is not next
    // in the prefix (segment 5 removed while 4 stays): the signing key alone does not make a
    // hole in the middle look lawful.
    tampered(
        |d, n| {
            let ts =
                Tombstone::read_unverified(&std::fs::read_to_string(ts_path(d, n, 2)).unwrap())
                    .unwrap();
            let skey = std::fs::read_to_string(d.join("keys/checkpoint.skey")).unwrap();
            let signer = NoteSigner::from_skey(skey.trim()).unwrap();
            let first: u64 = n[4][4..24].parse().unwrap();
            let forged = Tombstone {
                segment: n[4].clone(),
                first_seq: first,
                last_seq: first + 1,
                ..ts
            };
            // The frontier no longer fits its size: the forger would have to recompute it.
            let mut f = forged.tree();
            while f.size() < forged.last_seq {
                f.push([9; 32]);
            }
            let forged = Tombstone {
                frontier: f.subtree_roots().map(hex::encode).collect(),
                ..forged
            };
            std::fs::write(
                d.join(TOMBSTONE_DIR)
                    .join(tombstone_file_name(first, TombstoneState::Purged)),
                forged.sign(&signer).unwrap(),
            )
            .unwrap();
            std::fs::remove_file(d.join(LEDGER_DIR).join(&n[4])).unwrap();
        },
        "tombstone_not_prefix",
    );
}

#[test]
fn a_tombstoned_segment_left_behind_and_modified_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    ledger(dir.path(), 30, None);
    let names = segment_names(dir.path());
    let crash = |step: RemovalStep, _: &str| {
        if step == RemovalStep::TombstoneWritten {
            Err("killed".to_string())
        } else {
            Ok(())
        }
    };
    let o = RemovalOptions {
        hook: Some(&crash),
        ..RemovalOptions::default()
    };
    remove_segments(dir.path(), &purge(&names[..1]), &o).unwrap_err();
    let path = dir.path().join(LEDGER_DIR).join(&names[0]);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("tools/call", "tools/cell", 1)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let r = check(dir.path());
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(
        classes(&r).contains(&"tombstone_mismatch"),
        "{:#?}",
        r.problems
    );
    // And the removal refuses to finish the job on the altered bytes.
    let err =
        remove_segments(dir.path(), &purge(&names[..1]), &RemovalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("differ"), "{err}");
}

#[test]
fn tampering_after_the_tombstone_is_still_detected() {
    // The first record after the purge point modified: its MAC fails.
    tampered(
        |d, n| {
            let path = d.join(LEDGER_DIR).join(&n[3]);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replacen("tools/call", "tools/cell", 1)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        },
        "modified_record",
    );
    // Its prev_hash no longer links to the tombstone's last hash.
    tampered(
        |d, n| {
            let path = d.join(LEDGER_DIR).join(&n[3]);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let at = text.find("\"prev_hash\":\"").unwrap() + 13;
            let mut b = text.into_bytes();
            b[at] = if b[at] == b'0' { b'1' } else { b'0' };
            std::fs::write(&path, b).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        },
        "broken_link",
    );
}

#[test]
fn a_session_whose_beginning_was_purged_exports_what_is_left_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = Ledger::open(dir.path(), config(None)).unwrap();
    let mut start = Event::new(EventKind::SessionStart);
    start.session_id = Some(SESSION.into());
    l.append(&mut [start]).unwrap();
    for i in 1..=20 {
        l.append(&mut [event(i, Some(SESSION))]).unwrap();
    }
    l.checkpoint_now().unwrap();
    drop(l);
    let names = segment_names(dir.path());
    remove(dir.path(), &names[..2]);
    let bundle = export_session(dir.path(), SESSION).unwrap();
    assert!(!bundle.session_start, "session.start was purged");
    assert!(bundle.first_seq > 1);
    let key = local_verifier(dir.path()).unwrap().unwrap();
    let r = verify_bundle(&bundle, Some(&key));
    assert!(r.ok(), "{r:?}");
}
