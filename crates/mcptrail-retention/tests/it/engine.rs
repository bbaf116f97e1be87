//! The engine with a local archive directory and a fake clock.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use mcptrail_event::EventKind;
use mcptrail_ledger::{verify, RemovalStep, TombstoneState, Verdict, LEDGER_DIR};
use mcptrail_retention::{Action, Archive, Place, RetentionError, Status};

use crate::*;

fn verdict(dir: &Path) -> mcptrail_ledger::VerifyReport {
    verify(dir, &verify_opts(dir)).unwrap()
}

fn failing(r: &mcptrail_retention::SelfcheckReport) -> Vec<&'static str> {
    r.checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect()
}

/// seg1 day 0 (default), seg2 day 10 (a pci event), seg3 day 20 (default), seg4 day 200,
/// active day 300.
fn year() -> Fixture {
    Fixture::new(&[(0, &[]), (10, &["pci"]), (20, &[]), (200, &["pii"])], 300)
}

#[test]
fn over_a_year_segments_archive_then_purge_under_tombstones_and_everything_verifies() {
    let f = year();
    let names = f.segments();
    assert_eq!(names.len(), 5);
    let e = f.engine();
    let ret = f.events(EventKind::GovernanceRetention);
    assert_eq!(ret.len(), 1);
    assert_eq!(ret[0]["detail"]["change"], "bootstrap");
    assert_eq!(ret[0]["detail"]["authority"]["source"], "config");

    // Day 50: everything at hand.
    f.at(50);
    let plan = e.plan().unwrap();
    assert!(
        plan.segments.iter().all(|s| s.action == Action::Keep),
        "{plan:#?}"
    );
    assert!(
        plan.segments[1].reason.contains("at hand until"),
        "{}",
        plan.segments[1].reason
    );
    let r = e.run().unwrap();
    assert!(r.archived.is_empty() && r.purged.is_empty() && r.events.is_empty());

    // Day 95: seg1's events (default, 90 days) are past retention; seg2 (pci) at hand until 100.
    f.at(95);
    let plan = e.plan().unwrap();
    let actions: Vec<Action> = plan.segments.iter().map(|s| s.action).collect();
    assert_eq!(
        actions,
        [
            Action::Purge,
            Action::Keep,
            Action::Keep,
            Action::Keep,
            Action::Keep
        ]
    );
    let r = e.run().unwrap();
    assert_eq!(r.purged.len(), 1);
    assert_eq!((r.purged[0].first_seq, r.purged[0].last_seq), (1, 3));
    assert_eq!(r.removed_through, 3);
    assert_eq!(f.segments(), names[1..]);
    let v = verdict(f.path());
    assert_eq!(v.verdict, Verdict::Intact, "{:#?}", v.problems);
    assert_eq!(v.removed.len(), 1);
    assert_eq!(v.removed[0].meta["authority"]["source"], "config");
    let sc = e.selfcheck().unwrap();
    assert!(sc.ok, "{:#?}", sc.checks);

    // Day 115: seg2 past at-hand (archived: copied, read back, removed here), seg3 purged.
    f.at(115);
    let r = e.run().unwrap();
    assert_eq!(r.archived.len(), 1, "{r:#?}");
    assert_eq!(r.archived[0].segment, names[1]);
    assert_eq!(r.purged.len(), 1);
    assert_eq!(r.purged[0].segment, names[2]);
    let copy = f.archive().segments_dir().join(&names[1]);
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert!(!f.archive().segments_dir().join(&names[2]).exists());
    let v = verdict(f.path());
    assert_eq!(v.verdict, Verdict::Intact, "{:#?}", v.problems);
    assert_eq!(
        v.removed.iter().map(|s| s.state).collect::<Vec<_>>(),
        [
            TombstoneState::Purged,
            TombstoneState::Archived,
            TombstoneState::Purged
        ]
    );
    let sc = e.selfcheck().unwrap();
    assert!(sc.ok, "{:#?}", sc.checks);
    assert_eq!(sc.check("archive_integrity").unwrap().status, Status::Pass);
    let archive_ev = f.events(EventKind::GovernanceArchive);
    assert_eq!(archive_ev.len(), 1);
    assert_eq!(archive_ev[0]["detail"]["segments"][0]["segment"], names[1]);

    // Day 380: seg2's pci retention (365 days) is over: its archive copy goes; seg4 (day 200,
    // 90 days) too. The active segment stays.
    f.at(380);
    let plan = e.plan().unwrap();
    assert_eq!(plan.segments[0].place, Place::Archived);
    assert_eq!(plan.segments[0].action, Action::Purge);
    let r = e.run().unwrap();
    assert_eq!(r.purged.len(), 2, "{r:#?}");
    assert!(!copy.exists(), "the archive copy is purged");
    assert!(f.archive().list().unwrap().is_empty());
    let v = verdict(f.path());
    assert_eq!(v.verdict, Verdict::Intact, "{:#?}", v.problems);
    assert!(v.removed.iter().all(|s| s.state == TombstoneState::Purged));
    assert_eq!(f.segments(), names[4..]);
    let sc = e.selfcheck().unwrap();
    assert!(sc.ok, "{:#?}", sc.checks);
    let purges = f.events(EventKind::GovernancePurge);
    assert_eq!(purges.len(), 3);
    assert_eq!(purges[2]["detail"]["outcome"], "purged");
    assert_eq!(f.events(EventKind::GovernanceSelfcheck).len(), 3);

    // A session after the purge still exports and verifies as evidence.
    let bundle = mcptrail_ledger::export_session(f.path(), SESSION).unwrap();
    let key = mcptrail_ledger::local_verifier(f.path()).unwrap().unwrap();
    assert!(mcptrail_ledger::verify_bundle(&bundle, Some(&key)).ok());
}

#[test]
fn purge_is_a_prefix_a_younger_expired_segment_waits_for_an_older_one() {
    // seg1 holds a pci event (365 days), seg2 only default events (90 days).
    let f = Fixture::new(&[(0, &["pci"]), (1, &[])], 300);
    let names = f.segments();
    // Without an archive, seg1 stays here until day 365, and seg2 waits behind it.
    let e = f.engine_with(vec![]);
    e.bootstrap(&pci_policy(), None, "ops").unwrap();
    f.at(120);
    let plan = e.plan().unwrap();
    assert_eq!(plan.segments[0].action, Action::Keep);
    assert!(
        plan.segments[0].reason.contains("no archive"),
        "{}",
        plan.segments[0].reason
    );
    assert_eq!(plan.segments[1].action, Action::Keep);
    assert!(
        plan.segments[1].reason.contains("oldest first"),
        "{}",
        plan.segments[1].reason
    );
    e.run().unwrap();
    assert_eq!(f.segments(), names);
    // The self-check says the young one is overdue, and why.
    let sc = e.selfcheck().unwrap();
    assert_eq!(failing(&sc), ["retention_local"], "{:#?}", sc.checks);
    assert!(sc.check("retention_local").unwrap().details[0].contains("oldest first"));

    // With an archive, seg1 is archived and seg2 purged in the same run: the local removal
    // is still a prefix.
    let e = f.engine_with(vec![Arc::new(f.archive())]);
    let r = e.run().unwrap();
    assert_eq!((r.archived.len(), r.purged.len()), (1, 1), "{r:#?}");
    assert_eq!(f.segments(), names[2..]);
    assert_eq!(verdict(f.path()).verdict, Verdict::Intact);
    assert!(e.selfcheck().unwrap().ok);
}

#[test]
fn the_selfcheck_reports_a_corrupted_archive_copy_an_early_deletion_and_loose_modes() {
    let f = year();
    let names = f.segments();
    let e = f.engine();
    f.at(115);
    e.run().unwrap();
    assert!(e.selfcheck().unwrap().ok);
    let copy = f.archive().segments_dir().join(&names[1]);

    // A corrupted archive copy.
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o400)).unwrap();
    let sc = e.selfcheck().unwrap();
    assert!(!sc.ok);
    assert_eq!(failing(&sc), ["archive_integrity"], "{:#?}", sc.checks);
    assert!(sc.check("archive_integrity").unwrap().details[0].contains("corrupt"));
    // The copy deleted.
    std::fs::remove_file(&copy).unwrap();
    let sc = e.selfcheck().unwrap();
    assert!(sc.check("archive_integrity").unwrap().details[0].contains("missing"));
    let recorded = f.events(EventKind::GovernanceSelfcheck);
    assert_eq!(recorded.last().unwrap()["detail"]["ok"], false);

    // A segment deleted early, by hand, inside its at-hand time: verify catches it.
    let f = year();
    let names = f.segments();
    let e = f.engine();
    f.at(50);
    std::fs::remove_file(f.path().join(LEDGER_DIR).join(&names[1])).unwrap();
    let sc = e.selfcheck().unwrap();
    assert_eq!(failing(&sc), ["verify"], "{:#?}", sc.checks);
    assert!(sc.check("verify").unwrap().details[0].contains("missing_segment"));
    // And the run refuses to remove anything from a ledger that does not verify.
    f.at(95);
    let err = e.run().unwrap_err();
    assert!(matches!(err, RetentionError::Tampered(_)), "{err}");
    assert_eq!(f.segments().len(), 4, "nothing removed");
    let refused = f.events(EventKind::GovernancePurge);
    assert_eq!(refused.last().unwrap()["detail"]["outcome"], "refused");

    // Loose modes.
    let f = year();
    let e = f.engine();
    let vkey_dir = f.path().join("keys");
    std::fs::set_permissions(
        f.path().join("retention/policy.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&vkey_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sc = e.selfcheck().unwrap();
    assert_eq!(failing(&sc), ["file_modes"], "{:#?}", sc.checks);
    let d = &sc.check("file_modes").unwrap().details;
    assert!(d.iter().any(|l| l.contains("policy.json")), "{d:?}");
    assert!(d.iter().any(|l| l.contains("keys: mode 0755")), "{d:?}");
}

#[test]
fn a_crash_in_the_middle_of_a_run_is_explained_by_verify_and_finished_by_the_next_run() {
    let f = year();
    let names = f.segments();
    let mut e = f.engine();
    f.at(115);
    // Killed after seg2's tombstone was written, before seg2 was deleted.
    let target = names[1].clone();
    e.fault = Some(Arc::new(move |step, seg| {
        if step == RemovalStep::TombstoneWritten && seg == target {
            Err("killed".into())
        } else {
            Ok(())
        }
    }));
    let err = e.run().unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    assert!(f.path().join("retention/JOURNAL").exists());
    assert_eq!(f.segments(), names[1..], "seg1 gone, seg2 still there");
    let v = verdict(f.path());
    assert_eq!(v.verdict, Verdict::Intact, "{:#?}", v.problems);
    assert!(
        v.notices.iter().any(|n| n.contains("interrupted removal")),
        "{:?}",
        v.notices
    );
    // No governance event was written for the interrupted run yet.
    assert!(f.events(EventKind::GovernancePurge).is_empty());

    e.fault = None;
    let plan = e.plan().unwrap();
    assert!(plan.segments.iter().any(|s| s.interrupted), "{plan:#?}");
    let r = e.run().unwrap();
    assert!(r.recovered);
    assert_eq!(f.segments(), names[3..]);
    assert!(!f.path().join("retention/JOURNAL").exists());
    let purges = f.events(EventKind::GovernancePurge);
    assert_eq!(purges.len(), 1);
    let d = &purges[0]["detail"];
    assert_eq!(
        d["completed_interrupted_run"]["segments"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(verdict(f.path()).verdict, Verdict::Intact);
    assert!(e.selfcheck().unwrap().ok);

    // Killed after the segment was deleted, before the events: also finished and recorded.
    let f = year();
    let mut e = f.engine();
    f.at(95);
    e.fault = Some(Arc::new(|step, _| {
        if step == RemovalStep::SegmentDeleted {
            Err("killed".into())
        } else {
            Ok(())
        }
    }));
    e.run().unwrap_err();
    assert_eq!(verdict(f.path()).verdict, Verdict::Intact);
    e.fault = None;
    let r = e.run().unwrap();
    assert!(r.recovered);
    let purges = f.events(EventKind::GovernancePurge);
    assert_eq!(purges.len(), 1);
    assert_eq!(purges[0]["detail"]["outcome"], "recovered");
    assert!(e.selfcheck().unwrap().ok);
}

#[test]
fn an_ad_hoc_purge_needs_a_second_principal_whole_segments_and_is_recorded() {
    let f = year();
    let names = f.segments();
    let e = f.engine();
    f.at(30);
    let last_of_seg2 = 6;
    // Self-approved: refused and recorded.
    let err = e
        .purge(last_of_seg2, &auth("alice", "alice"), "erasure order 7")
        .unwrap_err();
    assert!(matches!(err, RetentionError::Unauthorised(_)), "{err}");
    // Not the end of a segment.
    let err = e
        .purge(5, &auth("alice", "bob"), "erasure order 7")
        .unwrap_err();
    assert!(err.to_string().contains("whole sealed segments"), "{err}");
    // No reason.
    assert!(e.purge(last_of_seg2, &auth("alice", "bob"), " ").is_err());
    let refused = f.events(EventKind::GovernancePurge);
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|r| r["detail"]["outcome"] == "refused"));
    assert_eq!(f.segments(), names);

    let r = e
        .purge(last_of_seg2, &auth("alice", "bob"), "erasure order 7")
        .unwrap();
    assert_eq!(r.purged.len(), 2);
    assert_eq!(f.segments(), names[2..]);
    let v = verdict(f.path());
    assert_eq!(v.verdict, Verdict::Intact, "{:#?}", v.problems);
    assert_eq!(v.removed[0].meta["outside_policy"], true);
    assert_eq!(v.removed[0].meta["authorisation"]["approved_by"], "bob");
    let ev = f.events(EventKind::GovernancePurge);
    assert_eq!(
        ev.last().unwrap()["detail"]["authority"]["reason"],
        "erasure order 7"
    );
    // Removed before the policy's time, but authorised: the self-check agrees.
    let sc = e.selfcheck().unwrap();
    assert!(sc.ok, "{:#?}", sc.checks);
}

#[test]
fn the_policy_is_bootstrapped_once_and_changed_only_with_an_approval() {
    let f = year();
    let e = f.engine();
    let mut longer = pci_policy();
    longer.default.days = 180;
    longer.default.at_hand_days = 180;
    // A different [retention] in the config does not override the effective policy.
    let (p, note) = e.bootstrap(&longer, None, "ops").unwrap();
    assert_eq!(p.policy, pci_policy());
    assert!(note.unwrap().contains("not applied"));
    assert_eq!(f.events(EventKind::GovernanceRetention).len(), 1);
    // Self-approved: refused, recorded.
    assert!(e.set_policy(&longer, &auth("carol", "carol")).is_err());
    let p = e.set_policy(&longer, &auth("carol", "dave")).unwrap();
    assert_eq!(p.policy, longer);
    let ev = f.events(EventKind::GovernanceRetention);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[1]["detail"]["change"], "refused");
    let d = &ev[2]["detail"];
    assert_eq!(d["change"], "set");
    assert_eq!(d["old"]["default"]["days"], 90);
    assert_eq!(d["new"]["default"]["days"], 180);
    assert_eq!(d["authority"]["requested_by"], "carol");
    assert_eq!(d["authority"]["approved_by"], "dave");
    assert_eq!(
        e.effective_policy().unwrap().unwrap().event_seq,
        ev[2]["seq"].as_u64().unwrap()
    );
    // The new policy rules the next run: at day 95 nothing is past 180 days.
    f.at(95);
    assert!(e.run().unwrap().purged.is_empty());
    // A policy file edited by hand is refused.
    let path = f.path().join("retention/policy.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("180", "1")).unwrap();
    assert!(e
        .effective_policy()
        .unwrap_err()
        .to_string()
        .contains("digest"));
}

#[test]
fn the_policy_event_is_recorded_again_when_it_is_purged() {
    // The bootstrap event lands in the active segment; once that one is sealed and purged,
    // the policy is re-recorded.
    let f = Fixture::new(&[(0, &[])], 1);
    let e = f.engine();
    let first = e.effective_policy().unwrap().unwrap().event_seq;
    // Seal the active segment (holding the bootstrap event) by appending after rotation.
    let mut l = mcptrail_ledger::Ledger::open(f.path(), ledger_config(1)).unwrap();
    let mut ev = mcptrail_event::Event::new(EventKind::SystemHeartbeat);
    ev.time = mcptrail_event::format_rfc3339_nanos(day(200));
    l.append(&mut [ev]).unwrap();
    drop(l);
    f.at(400);
    // The bootstrap event itself is timed by the fake clock (t0): long past its retention.
    let r = e.run().unwrap();
    assert!(r.removed_through >= first, "{r:#?}");
    let p = e.effective_policy().unwrap().unwrap();
    assert!(p.event_seq > r.removed_through);
    let ev = f.events(EventKind::GovernanceRetention);
    assert_eq!(ev.last().unwrap()["detail"]["change"], "reaffirmed");
    assert_eq!(verdict(f.path()).verdict, Verdict::Intact);
}

#[test]
fn the_index_and_a_sink_cursor_cope_with_a_ledger_that_starts_after_seq_1() {
    let f = year();
    let e = f.engine();
    let mut idx = mcptrail_index::Index::open(f.path()).unwrap();
    idx.sync().unwrap();
    assert_eq!(idx.seq_range().unwrap().unwrap().0, 1);
    // A sink that shipped only up to seq 2 holds the purge back.
    let cursor = mcptrail_sinks::Cursor::new(f.path(), "siem");
    let id2 = f.events(EventKind::McpRequest)[1]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    cursor.store(2, &id2).unwrap();
    let waiting = mcptrail_retention::Engine::new(
        f.path(),
        mcptrail_retention::EngineConfig {
            ledger: ledger_config(64 << 20),
            archives: vec![Arc::new(f.archive())],
            verify: verify_opts(f.path()),
            wait_for_sinks: vec!["siem".into()],
            ..Default::default()
        },
        f.clock.clone(),
    );
    f.at(95);
    let plan = waiting.plan().unwrap();
    assert_eq!(plan.segments[0].action, Action::Keep);
    assert!(
        plan.segments[0].reason.contains("sink siem"),
        "{}",
        plan.segments[0].reason
    );
    // Without waiting, the purge goes ahead; the index loses the purged rows.
    let r = e.run().unwrap();
    assert_eq!(r.removed_through, 3);
    assert_eq!(r.index_rows_purged, 3);
    let mut idx = mcptrail_index::Index::open(f.path()).unwrap();
    assert_eq!(idx.seq_range().unwrap().unwrap().0, 4);
    idx.sync().unwrap();
    assert_eq!(idx.seq_range().unwrap().unwrap().0, 4);
    // A rebuilt index starts at the first record kept.
    let mut idx = mcptrail_index::Index::recreate(f.path()).unwrap();
    idx.rebuild().unwrap();
    assert_eq!(idx.seq_range().unwrap().unwrap().0, 4);
    // The lagging sink's tail continues after the removed records instead of stopping.
    let mut tail = mcptrail_sinks::LedgerTail::open(f.path(), 3);
    let rec = tail.next_record().unwrap().unwrap();
    assert_eq!(rec.seq, 4);
    assert_eq!(tail.skipped_removed(), Some((3, 3)));
    // A new sink starts at the first record kept.
    let mut tail = mcptrail_sinks::LedgerTail::open(f.path(), 1);
    assert_eq!(tail.next_record().unwrap().unwrap().seq, 4);
    assert!(e.selfcheck().unwrap().ok);
}

#[test]
fn forgotten_subjects_are_checked_and_a_restored_key_fails_the_check() {
    let f = year();
    let e = f.engine();
    let keys = f.path().join("keys/subjects");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = keys.join("subj-1.key");
    std::fs::write(&key, b"wrapped key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(mcptrail_redact::forget_subject(f.path(), "subj-1").unwrap());
    let mut ev = mcptrail_event::Event::new(EventKind::GovernanceForget);
    ev.detail = Some(serde_json::json!({"subject": "subj-1", "reason": "GDPR 17"}));
    mcptrail_ledger::Ledger::open(f.path(), ledger_config(64 << 20))
        .unwrap()
        .append(&mut [ev])
        .unwrap();
    let sc = e.selfcheck().unwrap();
    assert_eq!(sc.check("forgotten_subjects").unwrap().status, Status::Pass);
    assert!(sc.check("forgotten_subjects").unwrap().details[0].starts_with("1 forgotten"));
    // Someone restores the key from a backup: the erasure no longer holds.
    std::fs::write(&key, b"wrapped key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sc = e.selfcheck().unwrap();
    assert_eq!(failing(&sc), ["forgotten_subjects"], "{:#?}", sc.checks);
}

#[test]
fn a_tampered_tombstone_fails_verify_and_the_selfcheck() {
    let f = year();
    let e = f.engine();
    f.at(115);
    e.run().unwrap();
    let work = tempfile::tempdir().unwrap();
    copy_dir(f.path(), work.path());
    let ts = mcptrail_ledger::list_tombstones(&work.path().join("tombstones")).unwrap();
    let text = std::fs::read_to_string(&ts[0]).unwrap();
    std::fs::write(&ts[0], text.replacen("\"policy\"", "\"pol1cy\"", 1)).unwrap();
    let v = verify(work.path(), &verify_opts(f.path())).unwrap();
    assert_eq!(v.verdict, Verdict::Tampered);
    assert!(
        v.problems.iter().any(|p| p.class() == "bad_tombstone"),
        "{:#?}",
        v.problems
    );
}

#[test]
fn a_poisoned_plan_cache_never_purges_early() {
    let f = year();
    let names = f.segments();
    let e = f.engine();
    f.at(50);
    e.plan().unwrap();
    let cache = f.path().join("retention/segments.cache");
    let text = std::fs::read_to_string(&cache).unwrap();
    // Claim seg1's events are from the year 2000.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for entry in v[&names[0]]["newest"].as_array_mut().unwrap() {
        entry[1] = serde_json::json!("2000-01-01T00:00:00.000000000Z");
    }
    std::fs::write(&cache, v.to_string()).unwrap();
    assert_eq!(e.plan().unwrap().segments[0].action, Action::Purge);
    let err = e.run().unwrap_err();
    assert!(
        err.to_string().contains("do not bear out the plan"),
        "{err}"
    );
    assert_eq!(f.segments(), names, "nothing removed");
    assert!(!cache.exists(), "the stale cache is dropped");
    // The next run sees the truth.
    let r = e.run().unwrap();
    assert!(r.purged.is_empty() && r.archived.is_empty(), "{r:#?}");
    assert_eq!(verdict(f.path()).verdict, Verdict::Intact);
}

#[test]
fn with_the_master_key_the_selfcheck_shows_a_forgotten_subjects_values_do_not_open() {
    let f = year();
    f.engine(); // bootstraps the policy
    let master = mcptrail_redact::MasterKey::from_bytes([7; 32]);
    let vault = mcptrail_redact::Vault::new(f.path(), master.clone());
    let mut ev = mcptrail_event::Event::new(EventKind::McpRequest);
    let sealed = vault
        .seal(
            "national_id",
            "subj-2",
            &ev.event_id,
            "/parameters_used/ssn",
            "123-45-6789",
        )
        .unwrap();
    ev.parameters_used = Some(serde_json::json!({ "ssn": sealed }));
    let mut forget = mcptrail_event::Event::new(EventKind::GovernanceForget);
    forget.detail = Some(serde_json::json!({"subject": "subj-2", "reason": "GDPR 17"}));
    let mut l = mcptrail_ledger::Ledger::open(f.path(), ledger_config(64 << 20)).unwrap();
    l.append(&mut [ev]).unwrap();
    let key = f.path().join("keys/subjects/subj-2.key");
    let saved = std::fs::read(&key).unwrap();
    assert!(mcptrail_redact::forget_subject(f.path(), "subj-2").unwrap());
    l.append(&mut [forget]).unwrap();
    drop(l);
    let e = mcptrail_retention::Engine::new(
        f.path(),
        mcptrail_retention::EngineConfig {
            ledger: ledger_config(64 << 20),
            verify: verify_opts(f.path()),
            master_key: Some(Arc::new(master)),
            ..Default::default()
        },
        f.clock.clone(),
    );
    let sc = e.selfcheck().unwrap();
    let c = sc.check("forgotten_subjects").unwrap();
    assert_eq!(c.status, Status::Pass, "{:#?}", sc.checks);
    assert!(
        c.details[0].contains("do not open with the master key"),
        "{:?}",
        c.details
    );
    // The key restored from a backup: the value decrypts again, and the check says so.
    std::fs::write(&key, saved).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sc = e.selfcheck().unwrap();
    let c = sc.check("forgotten_subjects").unwrap();
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.details.iter().any(|d| d.contains("still decrypts")),
        "{:?}",
        c.details
    );
}

#[test]
fn a_second_run_while_one_is_in_progress_is_refused() {
    let f = year();
    let e = f.engine();
    f.at(95);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(f.path().join("retention/LOCK"))
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(f.path().join("retention/LOCK"))
        })
        .unwrap();
    lock.lock().unwrap();
    let err = e.run().unwrap_err();
    assert!(err.to_string().contains("in progress"), "{err}");
    assert_eq!(f.segments().len(), 5, "nothing removed");
    lock.unlock().unwrap();
    assert_eq!(e.run().unwrap().purged.len(), 1);
}

#[test]
fn a_sink_whose_cursor_is_at_the_last_purged_record_ships_on_after_the_purge() {
    let f = year();
    let e = f.engine();
    let out = tempfile::tempdir().unwrap();
    let text = format!(
        "name = \"files\"\ntype = \"file\"\npath = \"{}\"\nfsync = false\n",
        out.path().join("events.jsonl").display()
    );
    let cfg = mcptrail_sinks::SinkConfig::from_table(toml::from_str(&text).unwrap()).unwrap();
    let ship = || {
        let sink = mcptrail_sinks::build(&cfg).unwrap();
        mcptrail_sinks::Shipper::new(f.path(), cfg.clone(), sink, None)
            .run(&mcptrail_sinks::ShipOptions {
                jitter_seed: Some(1),
                ..Default::default()
            })
            .unwrap()
    };
    let first = ship();
    assert_eq!(first.failures, 0);
    // The sink had shipped exactly the segment that is purged next (its cursor names seq 3).
    let id3 = f.events(EventKind::McpRequest)[2]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    mcptrail_sinks::Cursor::new(f.path(), "files")
        .store(3, &id3)
        .unwrap();
    f.at(95);
    assert_eq!(e.run().unwrap().removed_through, 3);
    let again = ship();
    assert_eq!(again.failures, 0, "{again:?}");
    assert!(again.last_error.is_none(), "{again:?}");
    assert!(again.shipped > 0);
    assert_eq!(again.cursor, again.head, "caught up");
}
