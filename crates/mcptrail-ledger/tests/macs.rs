//! Forward-secure MACs and the tamper classes: every record carries a MAC whose key evolves
//! one way; `verify` with the seed checks them epoch by epoch, and each tamper class of
//! [`mcptrail_ledger::tamper`] is reported with its class and location.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_integrity::Seed;
use mcptrail_ledger::tamper::{apply, Tamper};
use mcptrail_ledger::{
    default_seed_path, verify, CheckpointPolicy, Ledger, LedgerConfig, MacPolicy, Problem, Verdict,
    VerifyOptions, KEY_DIR, MAC_STATE_FILE,
};

fn ev(n: u64) -> Event {
    let mut e = Event::new(EventKind::McpRequest);
    e.agent_id = Some("mac-test".into());
    e.request_id = Some(serde_json::json!(n));
    e
}

fn config(anchor: &Path) -> LedgerConfig {
    LedgerConfig {
        segment_max_bytes: 4 * 1024,
        checkpoints: CheckpointPolicy {
            every_records: 8,
            interval: Duration::from_secs(3600),
            anchor_dir: Some(anchor.to_path_buf()),
            ..CheckpointPolicy::default()
        },
        macs: MacPolicy {
            epoch_records: 4,
            epoch_interval: Duration::from_secs(3600),
            ..MacPolicy::default()
        },
        ..LedgerConfig::default()
    }
}

/// 40 records in batches of 2 (so epochs of 4 records), several segments, checkpoints.
fn build(dir: &Path, anchor: &Path) {
    let mut l = Ledger::open(dir, config(anchor)).unwrap();
    for b in 0..20 {
        l.append(&mut [ev(2 * b), ev(2 * b + 1)]).unwrap();
    }
    l.checkpoint_now().unwrap();
}

fn opts(dir: &Path, anchor: &Path) -> VerifyOptions {
    VerifyOptions {
        seed: Some(Seed::read(&default_seed_path(dir)).unwrap()),
        anchor_dirs: vec![anchor.to_path_buf()],
        ..VerifyOptions::default()
    }
}

#[test]
fn every_record_is_maced_and_epochs_advance() {
    let (dir, anchor) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build(dir.path(), anchor.path());
    let r = verify(dir.path(), &opts(dir.path(), anchor.path())).unwrap();
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
    assert_eq!((r.records, r.macs_checked), (40, 40));
    let (first, last) = r.mac_epochs.unwrap();
    assert_eq!(first, 0);
    assert!(last >= 8, "epochs advanced every 4 records: {last}");
    assert!(r.segments >= 3);

    // Without the seed: the chain and checkpoints verify, the MACs cannot be.
    let no_seed = verify(
        dir.path(),
        &VerifyOptions {
            anchor_dirs: vec![anchor.path().to_path_buf()],
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(no_seed.verdict, Verdict::CannotVerify);
    assert_eq!(no_seed.macs_unchecked, 40);
    let skipped = verify(
        dir.path(),
        &VerifyOptions {
            skip_macs: true,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(skipped.verdict, Verdict::Intact);

    // A wrong seed fails every MAC.
    let wrong = verify(
        dir.path(),
        &VerifyOptions {
            seed: Some(Seed::generate().unwrap()),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(wrong.verdict, Verdict::Tampered);

    // The key state holds only the current key, and is private.
    let state = dir.path().join(KEY_DIR).join(MAC_STATE_FILE);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains(&format!("epoch {last}\n")), "{text}");
}

#[test]
fn each_tamper_class_is_reported_with_its_class_and_place() {
    let cases: &[(Tamper, &[&str])] = &[
        (Tamper::ModifyRecord { seq: 10 }, &["modified_record"]),
        (Tamper::ModifyAndRechain { seq: 10 }, &["modified_record"]),
        (Tamper::RemacWithCurrentKey { seq: 6 }, &["mac_wrong_epoch"]),
        (Tamper::DeleteRecord { seq: 10 }, &["deleted_record"]),
        (
            Tamper::InsertForged { after_seq: 10 },
            &["inserted_or_reordered"],
        ),
        (Tamper::SwapRecords { seq: 9 }, &["inserted_or_reordered"]),
        (Tamper::TruncateTail { records: 3 }, &["truncated_tail"]),
        (Tamper::DeleteSegment, &["missing_segment"]),
        (Tamper::Fork { from_seq: 38 }, &["fork_or_rollback"]),
        (Tamper::BadSignature, &["bad_signature"]),
        (Tamper::UnsealSegment, &["segment_permissions"]),
    ];
    for (t, classes) in cases {
        let (dir, anchor) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        build(dir.path(), anchor.path());
        let site = apply(dir.path(), *t).unwrap();
        let r = verify(dir.path(), &opts(dir.path(), anchor.path())).unwrap();
        assert_eq!(r.verdict, Verdict::Tampered, "{t:?} not detected");
        for class in *classes {
            assert!(
                r.problems.iter().any(|p| p.class() == *class),
                "{t:?}: expected {class}, got {:#?}",
                r.problems
            );
        }
        // A problem of the expected class names the place that was tampered with.
        let named = r
            .problems
            .iter()
            .filter(|p| classes.contains(&p.class()))
            .any(|p| {
                let text = p.to_string();
                let in_range = match p {
                    Problem::CheckpointMismatch {
                        size,
                        diverges_from,
                        ..
                    } => site
                        .seq
                        .is_some_and(|s| (*diverges_from..=*size).contains(&s)),
                    _ => false,
                };
                in_range
                    || site.seq.is_some_and(|s| text.contains(&format!("seq {s}")))
                    || text.contains(&site.file)
            });
        assert!(named, "{t:?} at {site:?}: {:#?}", r.problems);
    }
}

#[test]
fn within_the_current_epoch_only_anchored_checkpoints_catch_a_rewrite() {
    // The documented limit: the current key can re-MAC records of the current epoch. Shown
    // here so the README's threat model stays true: the MACs pass, the anchored checkpoint
    // does not.
    let (dir, anchor) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build(dir.path(), anchor.path());
    let last_epoch = verify(dir.path(), &opts(dir.path(), anchor.path()))
        .unwrap()
        .mac_epochs
        .unwrap()
        .1;
    apply(dir.path(), Tamper::Fork { from_seq: 40 }).unwrap();
    let with_anchor = verify(dir.path(), &opts(dir.path(), anchor.path())).unwrap();
    assert!(with_anchor
        .problems
        .iter()
        .all(|p| p.class() == "fork_or_rollback"));
    assert_eq!(with_anchor.verdict, Verdict::Tampered);
    let mut local_only = opts(dir.path(), anchor.path());
    local_only.anchor_dirs.clear();
    let r = verify(dir.path(), &local_only).unwrap();
    assert_eq!(r.mac_epochs.unwrap().1, last_epoch);
    assert_eq!(
        r.verdict,
        Verdict::Intact,
        "without the anchor, a rewrite of the current epoch is undetectable: {:?}",
        r.problems
    );
}

#[test]
fn writers_share_the_key_and_recover_a_stale_state() {
    let (dir, anchor) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Ledger::open(dir.path(), config(anchor.path())).unwrap();
    let mut b = Ledger::open(dir.path(), config(anchor.path())).unwrap();
    let state = dir.path().join(KEY_DIR).join(MAC_STATE_FILE);
    let mut old_state = None;
    for i in 0..30 {
        let l = if i % 3 == 0 { &mut a } else { &mut b };
        l.append(&mut [ev(i)]).unwrap();
        if i == 5 {
            old_state = Some(std::fs::read(&state).unwrap());
        }
    }
    // A crash lost the latest state renames: the file is back to an older epoch.
    std::fs::write(&state, old_state.unwrap()).unwrap();
    let mut c = Ledger::open(dir.path(), config(anchor.path())).unwrap();
    for i in 30..40 {
        c.append(&mut [ev(i)]).unwrap();
    }
    let r = verify(dir.path(), &opts(dir.path(), anchor.path())).unwrap();
    assert_eq!(r.verdict, Verdict::Intact, "{:#?}", r.problems);
    assert_eq!(r.macs_checked, 40);
}

#[test]
fn a_lost_key_state_stops_appends_with_a_clear_error_and_a_seed_is_never_overwritten() {
    let (dir, anchor) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build(dir.path(), anchor.path());
    let state = dir.path().join(KEY_DIR).join(MAC_STATE_FILE);
    std::fs::remove_file(&state).unwrap();
    let mut l = Ledger::open(dir.path(), config(anchor.path())).unwrap();
    let err = l.append(&mut [ev(99)]).unwrap_err().to_string();
    assert!(err.contains("MAC key state is missing"), "{err}");
    assert!(err.contains("restore"), "{err}");
    assert!(!state.exists());

    // A fresh ledger whose seed path is taken: refuse rather than overwrite someone's seed.
    let other = tempfile::tempdir().unwrap();
    let mut cfg = config(anchor.path());
    cfg.macs.seed_path = Some(default_seed_path(dir.path()));
    let mut l = Ledger::open(other.path(), cfg).unwrap();
    let err = l.append(&mut [ev(1)]).unwrap_err().to_string();
    assert!(err.contains("move it away"), "{err}");
}

#[test]
fn macs_can_be_turned_off_and_a_later_record_without_mac_is_flagged() {
    let (dir, anchor) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut off = config(anchor.path());
    off.macs.enabled = false;
    let mut l = Ledger::open(dir.path(), off.clone()).unwrap();
    l.append(&mut [ev(1), ev(2)]).unwrap();
    drop(l);
    // Turning MACs on later is fine: epoch 0 starts at the first MAC'd record.
    let mut l = Ledger::open(dir.path(), config(anchor.path())).unwrap();
    l.append(&mut [ev(3), ev(4)]).unwrap();
    drop(l);
    let r = verify(dir.path(), &opts(dir.path(), anchor.path())).unwrap();
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
    assert_eq!(r.macs_checked, 2);
    // Turning them off again leaves records a verifier must flag.
    let mut l = Ledger::open(dir.path(), off).unwrap();
    l.append(&mut [ev(5)]).unwrap();
    let r = verify(dir.path(), &opts(dir.path(), anchor.path())).unwrap();
    assert!(r.problems.iter().any(|p| p.class() == "mac_missing"));
}

/// Found by fuzzing: a forged seq of u64::MAX followed by any line overflowed the walk.
/// And a line in the writer's layout that is not JSON must not pass as a record.
#[test]
fn hostile_lines_are_reported_not_panicked_on() {
    let (dir, anchor) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = config(anchor.path());
    cfg.macs.enabled = false;
    let mut l = Ledger::open(dir.path(), cfg).unwrap();
    l.append(&mut [ev(1), ev(2)]).unwrap();
    drop(l);
    let seg = mcptrail_ledger::list_segments(&dir.path().join("ledger"))
        .unwrap()
        .pop()
        .unwrap()
        .path;
    let text = std::fs::read_to_string(&seg).unwrap();
    let last = text.lines().last().unwrap();
    let last_hash = hex::encode(mcptrail_ledger::record_hash(last.as_bytes()));
    let zeros = "0".repeat(64);
    let max = format!(
        r#"{{"schema_version":"1","event_id":"x","seq":18446744073709551615,"prev_hash":"{zeros}"}}"#
    );
    let not_json = format!(r#"{{x","seq":3,y,"prev_hash":"{last_hash}"}}"#);
    for (extra, class) in [
        (format!("{max}\n{max}\n"), "deleted_record"),
        (format!("{not_json}\n"), "unparseable"),
    ] {
        std::fs::write(&seg, format!("{text}{extra}")).unwrap();
        let r = verify(dir.path(), &VerifyOptions::default()).unwrap();
        assert_eq!(r.verdict, Verdict::Tampered);
        assert!(
            r.problems.iter().any(|p| p.class() == class),
            "{class}: {:#?}",
            r.problems
        );
    }
}
