//! The S3 Object Lock archive against a real moto server (PyPI `moto[server]`, signature
//! checking on, a bucket with Object Lock): the S3 sink uploads sealed segments, the engine
//! archives a segment only once the bucket holds it with the same SHA-256, a locked version
//! cannot be deleted, a purge leaves the copy to expire, and the self-check sees a replaced
//! object.

use std::sync::Arc;

use mcptrail_event::EventKind;
use mcptrail_ledger::{verify, TombstoneState, Verdict};
use mcptrail_retention::{Action, Archive, S3Archive, Status};
use mcptrail_sinks::sink::s3::{xml_values, S3Client, S3SinkConfig};
use mcptrail_sinks::{ShipOptions, Shipper, SinkConfig, SinkTarget};
use mcptrail_test_support::siem::MotoS3;

use crate::*;

fn sink(moto: &MotoS3, days: u32) -> SinkConfig {
    std::env::set_var("MCPTRAIL_RETENTION_S3_ID", &moto.access_key_id);
    std::env::set_var("MCPTRAIL_RETENTION_S3_SECRET", &moto.secret_access_key);
    let text = format!(
        "name = \"worm\"\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"hosts/retention\"\naccess_key_id = {{ env = \"MCPTRAIL_RETENTION_S3_ID\" }}\nsecret_access_key = {{ env = \"MCPTRAIL_RETENTION_S3_SECRET\" }}\nretention_days = {days}\nbackoff_initial_ms = 10\nbackoff_max_ms = 100\n",
        moto.endpoint, moto.bucket
    );
    SinkConfig::from_table(toml::from_str(&text).unwrap()).unwrap()
}

fn s3_of(cfg: &SinkConfig) -> &S3SinkConfig {
    let SinkTarget::S3(c) = &cfg.target else {
        unreachable!()
    };
    c
}

fn ship(dir: &std::path::Path, cfg: &SinkConfig) {
    let s = mcptrail_sinks::build(cfg).unwrap();
    let st = Shipper::new(dir, cfg.clone(), s, None)
        .run(&ShipOptions {
            jitter_seed: Some(1),
            ..ShipOptions::default()
        })
        .unwrap();
    assert_eq!(st.failures, 0, "{st:?}");
}

#[test]
fn segments_are_archived_once_the_object_lock_bucket_holds_them_and_a_locked_version_stays() {
    let moto = MotoS3::start("mcptrail-retention");
    let f = Fixture::new(&[(0, &["pci"]), (1, &[])], 300);
    let names = f.segments();
    let cfg = sink(&moto, 400);
    let archive = Arc::new(S3Archive::new(s3_of(&cfg)).unwrap());
    let e = f.engine_with(vec![archive.clone()]);
    e.bootstrap(&pci_policy(), None, "ops").unwrap();

    // Day 120: seg1 (pci) is past its at-hand time, but the bucket does not hold it yet.
    f.at(120);
    let r = e.run().unwrap();
    assert!(r.archived.is_empty(), "{r:#?}");
    assert_eq!(r.held.len(), 1);
    assert!(r.held[0].1.contains("does not hold it yet"), "{:?}", r.held);
    assert_eq!(f.segments(), names);

    // The S3 sink uploads the sealed segments (under compliance Object Lock); now it is
    // archived (confirmed by SHA-256) and removed here, and seg2 purged behind it.
    ship(f.path(), &cfg);
    let r = e.run().unwrap();
    assert_eq!((r.archived.len(), r.purged.len()), (1, 1), "{r:#?}");
    assert!(
        r.archived[0].copies[0].starts_with("s3://mcptrail-retention/hosts/retention/segments/")
    );
    assert_eq!(f.segments(), names[2..]);
    let v = verify(f.path(), &verify_opts(f.path())).unwrap();
    assert_eq!(v.verdict, Verdict::Intact, "{:#?}", v.problems);
    assert_eq!(v.removed[0].state, TombstoneState::Archived);
    assert!(v.removed[0]
        .archive
        .as_deref()
        .unwrap()
        .starts_with("s3://"));
    // The purged seg2's copy in the bucket cannot be deleted: it is left to expire.
    assert!(
        r.purged[0].copies[0].contains("Object Lock until"),
        "{:?}",
        r.purged[0].copies
    );
    let sc = e.selfcheck().unwrap();
    assert!(sc.ok, "{:#?}", sc.checks);
    assert_eq!(sc.check("archive_integrity").unwrap().status, Status::Pass);
    // The copy of the purged segment is still in the bucket: a warning, not a failure.
    assert_eq!(sc.check("retention_archive").unwrap().status, Status::Warn);

    // Nobody can delete the locked version of the archived segment, not even with the
    // credentials the sink uses.
    let c = S3Client::from_config(s3_of(&cfg)).unwrap();
    let key = format!("hosts/retention/segments/{}", names[0]);
    let head = c.request("HEAD", &key, &[], &[], b"").unwrap();
    assert_eq!(head.header("x-amz-object-lock-mode"), Some("COMPLIANCE"));
    let version = head.header("x-amz-version-id").unwrap().to_string();
    let del = c
        .request("DELETE", &key, &[("versionId", &version)], &[], b"")
        .unwrap();
    assert_eq!(del.status, 403, "{}", String::from_utf8_lossy(&del.body));
    assert_eq!(xml_values(&del.body, "Code"), vec!["AccessDenied"]);

    // Someone puts other bytes under the same key (a new version): the self-check sees the
    // archived copy no longer matches the tombstone.
    c.put_locked(
        &key,
        b"{\"not\":\"the segment\"}\n",
        "application/x-ndjson",
        mcptrail_sinks::sink::s3::LockMode::Compliance,
        1,
    )
    .unwrap();
    let sc = e.selfcheck().unwrap();
    assert!(!sc.ok);
    let integrity = sc.check("archive_integrity").unwrap();
    assert_eq!(integrity.status, Status::Fail);
    assert!(
        integrity.details[0].contains("corrupt"),
        "{:?}",
        integrity.details
    );
    assert_eq!(
        f.events(EventKind::GovernanceSelfcheck).last().unwrap()["detail"]["ok"],
        false
    );

    // Day 370: seg1's retention is over: a purged tombstone, the copy left to Object Lock.
    f.at(370);
    let plan = e.plan().unwrap();
    assert_eq!(plan.segments[0].action, Action::Purge);
    let r = e.run().unwrap();
    assert_eq!(r.purged.len(), 1);
    assert!(archive.list().unwrap().contains(&names[0]));
    let v = verify(f.path(), &verify_opts(f.path())).unwrap();
    assert_eq!(v.verdict, Verdict::Intact, "{:#?}", v.problems);
    assert!(v.removed.iter().all(|s| s.state == TombstoneState::Purged));
}

#[test]
fn an_object_lock_shorter_than_the_policy_is_reported() {
    let moto = MotoS3::start("mcptrail-retention-short");
    let f = Fixture::new(&[(0, &["pci"])], 300);
    // The sink locks for 1 day; the policy keeps pci events 365 days.
    let cfg = sink(&moto, 1);
    ship(f.path(), &cfg);
    let e = f.engine_with(vec![Arc::new(S3Archive::new(s3_of(&cfg)).unwrap())]);
    e.bootstrap(&pci_policy(), None, "ops").unwrap();
    f.at(120);
    let r = e.run().unwrap();
    assert_eq!(r.archived.len(), 1, "{r:#?}");
    let sc = e.selfcheck().unwrap();
    let c = sc.check("archive_integrity").unwrap();
    assert_eq!(c.status, Status::Warn, "{:#?}", sc.checks);
    assert!(c.details[0].contains("Object Lock ends"), "{:?}", c.details);
}

#[test]
fn tombstones_reach_the_bucket_and_verify_trusts_them_when_the_local_ones_are_gone() {
    let moto = MotoS3::start("mcptrail-retention-ts");
    let f = Fixture::new(&[(0, &[]), (1, &[])], 300);
    let cfg = sink(&moto, 400);
    let e = f.engine_with(vec![]);
    e.bootstrap(&pci_policy(), None, "ops").unwrap();
    f.at(120);
    assert_eq!(e.run().unwrap().purged.len(), 2);
    // The sink uploads the tombstones with its next batch, under Object Lock.
    ship(f.path(), &cfg);
    let c = S3Client::from_config(s3_of(&cfg)).unwrap();
    let keys = c.list("hosts/retention/tombstones/").unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let head = c.request("HEAD", &keys[0], &[], &[], b"").unwrap();
    assert_eq!(head.header("x-amz-object-lock-mode"), Some("COMPLIANCE"));
    // Shipping again uploads nothing new.
    ship(f.path(), &cfg);
    let versions = c
        .request(
            "GET",
            "",
            &[("versions", ""), ("prefix", "hosts/retention/tombstones/")],
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(xml_values(&versions.body, "VersionId").len(), 2);

    // Someone deletes the local tombstones: on its own the ledger has lost its beginning; with
    // the bucket as an anchor, the removal is still proven lawful.
    std::fs::remove_dir_all(f.path().join("tombstones")).unwrap();
    let alone = verify(f.path(), &verify_opts(f.path())).unwrap();
    assert_eq!(alone.verdict, Verdict::Tampered);
    let mut opts = verify_opts(f.path());
    opts.anchors = mcptrail_sinks::checkpoints::sink_anchors(std::slice::from_ref(&cfg));
    let anchored = verify(f.path(), &opts).unwrap();
    assert_eq!(
        anchored.verdict,
        Verdict::Intact,
        "{:#?}",
        anchored.problems
    );
    assert_eq!(anchored.removed.len(), 2);
    assert!(anchored.removed[0].tombstone.starts_with("s3://"));
}
