//! The S3 sink against a real moto S3 server (PyPI `moto[server]`, signature checking on, a
//! bucket with Object Lock): batches, sealed segments and checkpoints under compliance-mode
//! retention from the labels, deletion refused, and `verify` against the bucket as an anchor.

use std::sync::Arc;

use mcptrail_ledger::{CheckpointAnchor, Ledger, LedgerConfig, Verdict, VerifyOptions};
use mcptrail_sinks::sink::s3::{xml_values, S3Anchor, S3Client};
use mcptrail_sinks::sink::sigv4::Credentials;
use mcptrail_sinks::{SendErrorKind, SinkTarget};
use mcptrail_test_support::siem::MotoS3;
use mcptrail_test_support::sinks::write_ledger;

use crate::common::*;

fn s3_config(moto: &MotoS3, tag: &str, extra: &str) -> mcptrail_sinks::SinkConfig {
    std::env::set_var(format!("MCPTRAIL_TEST_S3_ID_{tag}"), &moto.access_key_id);
    std::env::set_var(
        format!("MCPTRAIL_TEST_S3_SECRET_{tag}"),
        &moto.secret_access_key,
    );
    sink_config(&format!(
        "name = \"archive\"\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"hosts/laptop-7\"\naccess_key_id = {{ env = \"MCPTRAIL_TEST_S3_ID_{tag}\" }}\nsecret_access_key = {{ env = \"MCPTRAIL_TEST_S3_SECRET_{tag}\" }}\nretention_days = 2\nlabel_retention_days = {{ pii = 30 }}\nbatch_max_events = 250\nbackoff_initial_ms = 10\nbackoff_max_ms = 100\n{extra}",
        moto.endpoint, moto.bucket
    ))
}

fn client(moto: &MotoS3) -> S3Client {
    S3Client::new(
        &moto.endpoint,
        &moto.bucket,
        "us-east-1",
        Credentials {
            access_key_id: moto.access_key_id.clone(),
            secret_access_key: mcptrail_sinks::secret::Secret::new(
                moto.secret_access_key.clone().into_bytes(),
            ),
            session_token: None,
        },
        None,
        10,
    )
    .unwrap()
}

/// A ledger of `n` events in small segments (so some are sealed), with a checkpoint.
fn small_segment_ledger(data: &std::path::Path, n: usize) -> Vec<String> {
    let cfg = LedgerConfig {
        fsync: false,
        segment_max_bytes: 64 * 1024,
        ..LedgerConfig::default()
    };
    let mut ledger = Ledger::open(data, cfg).unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let mut e = mcptrail_event::Event::new(if i % 2 == 0 {
            mcptrail_event::EventKind::McpRequest
        } else {
            mcptrail_event::EventKind::McpResponse
        });
        e.method = Some("tools/call".into());
        e.tool_invoked = Some(format!("tool-{}", i % 5));
        if i % 10 == 0 {
            e.labels = vec!["pii".into()];
        }
        ids.push(e.event_id.clone());
        ledger.append(&mut [e]).unwrap();
    }
    ledger.checkpoint_now().unwrap();
    ids
}

fn retain_until_days(head: &mcptrail_sinks::sink::s3::S3Response) -> i64 {
    let until = head.header("x-amz-object-lock-retain-until-date").unwrap();
    let t = time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{until}: {e}"));
    (t - time::OffsetDateTime::now_utc())
        .whole_hours()
        .div_euclid(24)
        + 1
}

#[test]
fn batches_sealed_segments_and_checkpoints_land_under_compliance_lock_with_label_retention() {
    let moto = MotoS3::start("mcptrail-archive-a");
    let dir = tempfile::tempdir().unwrap();
    let ids = small_segment_ledger(dir.path(), 1000);
    let cfg = s3_config(&moto, "A", "");
    let probe = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap();
    assert!(probe.contains("Object Lock enabled"), "{probe}");
    let st = ship(dir.path(), &cfg);
    assert_eq!(
        (st.shipped, st.failures, st.cursor),
        (1000, 0, 1000),
        "{st:?}"
    );

    let c = client(&moto);
    let keys = c.list("hosts/laptop-7/").unwrap();
    let events: Vec<&String> = keys.iter().filter(|k| k.contains("/events/")).collect();
    assert_eq!(events.len(), 4, "{keys:?}");
    assert_eq!(
        events[0].as_str(),
        "hosts/laptop-7/events/00000000000000000001-00000000000000000250.jsonl"
    );
    let sealed = mcptrail_ledger::list_segments(&dir.path().join(mcptrail_ledger::LEDGER_DIR))
        .unwrap()
        .iter()
        .filter(|s| s.sealed)
        .count();
    assert!(sealed >= 2, "the fixture has sealed segments");
    let segments: Vec<&String> = keys.iter().filter(|k| k.contains("/segments/")).collect();
    assert_eq!(segments.len(), sealed, "{keys:?}");
    assert!(keys.contains(&"hosts/laptop-7/checkpoints/cp-00000000000000001000.note".to_string()));

    // The batch object is the ledger lines, byte for byte.
    let body = c.get(events[0]).unwrap();
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let ledger = ledger_lines(dir.path());
    assert_eq!(lines.len(), 250);
    assert_eq!(lines[0], &ledger[0][..]);
    assert_eq!(
        mcptrail_test_support::sinks::event_id_of(lines[249]),
        ids[249]
    );

    // Compliance mode; pii events in the batch → 30 days; segments and checkpoints → the longest.
    for key in [
        events[0],
        segments[0],
        keys.iter().find(|k| k.ends_with(".note")).unwrap(),
    ] {
        let head = c.request("HEAD", key, &[], &[], b"").unwrap();
        assert_eq!(head.status, 200, "{key}");
        assert_eq!(
            head.header("x-amz-object-lock-mode"),
            Some("COMPLIANCE"),
            "{key}"
        );
        assert_eq!(retain_until_days(&head), 30, "{key}");
    }
    // A batch without a pii event keeps the default (2 days).
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 2);
    let plain: Vec<_> = (0..5)
        .map(|_| tail.next_record().unwrap().unwrap())
        .collect();
    sink.send(&plain).unwrap();
    let head = c
        .request(
            "HEAD",
            "hosts/laptop-7/events/00000000000000000002-00000000000000000006.jsonl",
            &[],
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(retain_until_days(&head), 2);
}

#[test]
fn a_locked_version_cannot_be_deleted_and_a_repeated_put_is_harmless() {
    let moto = MotoS3::start("mcptrail-archive-b");
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 100);
    let cfg = s3_config(&moto, "B", "segments = false\n");
    assert_eq!(ship(dir.path(), &cfg).shipped, 100);
    let c = client(&moto);
    let key = "hosts/laptop-7/events/00000000000000000001-00000000000000000100.jsonl";
    let head = c.request("HEAD", key, &[], &[], b"").unwrap();
    let version = head.header("x-amz-version-id").unwrap().to_string();
    let del = c
        .request("DELETE", key, &[("versionId", &version)], &[], b"")
        .unwrap();
    assert_eq!(del.status, 403, "{}", String::from_utf8_lossy(&del.body));
    assert_eq!(xml_values(&del.body, "Code"), vec!["AccessDenied"]);
    assert_eq!(
        c.request("HEAD", key, &[("versionId", &version)], &[], b"")
            .unwrap()
            .status,
        200
    );
    // Shipping again (a lost cursor) writes the same key with the same bytes: a new version.
    let before = c.get(key).unwrap();
    mcptrail_sinks::Cursor::new(dir.path(), "archive")
        .store(0, "")
        .unwrap();
    assert_eq!(ship(dir.path(), &cfg).shipped, 100);
    assert_eq!(c.get(key).unwrap(), before);
    let versions = c
        .request("GET", "", &[("versions", ""), ("prefix", key)], &[], b"")
        .unwrap();
    assert_eq!(xml_values(&versions.body, "VersionId").len(), 2);
}

#[test]
fn verify_checks_the_local_ledger_against_the_bucket_and_catches_a_truncation() {
    let moto = MotoS3::start("mcptrail-archive-c");
    let dir = tempfile::tempdir().unwrap();
    small_segment_ledger(dir.path(), 600);
    let cfg = s3_config(&moto, "C", "segments = false\n");
    assert_eq!(ship(dir.path(), &cfg).cursor, 600);
    let SinkTarget::S3(s3cfg) = &cfg.target else {
        unreachable!()
    };
    let anchor = S3Anchor::new(s3cfg).unwrap();
    // One note per segment seal plus the final one, each under Object Lock.
    let notes = anchor.fetch_all().unwrap();
    assert!(
        notes.iter().any(
            |(label, note)| label.ends_with("cp-00000000000000000600.note")
                && note.contains("\n600\n")
        ),
        "{notes:?}"
    );
    let opts = || VerifyOptions {
        anchors: vec![Arc::new(S3Anchor::new(s3cfg).unwrap()) as Arc<dyn CheckpointAnchor>],
        skip_macs: true,
        ..VerifyOptions::default()
    };
    let report = mcptrail_ledger::verify(dir.path(), &opts()).unwrap();
    assert_eq!(report.verdict, Verdict::Intact, "{:?}", report.problems);
    // Someone with root rolls the machine back: the newest segment and the local checkpoint
    // go. The local chain is still consistent; the checkpoint in the bucket is not met.
    let segs =
        mcptrail_ledger::list_segments(&dir.path().join(mcptrail_ledger::LEDGER_DIR)).unwrap();
    std::fs::remove_file(&segs.last().unwrap().path).unwrap();
    std::fs::remove_dir_all(dir.path().join(mcptrail_ledger::CHECKPOINT_DIR)).unwrap();
    let report = mcptrail_ledger::verify(dir.path(), &opts()).unwrap();
    assert_eq!(report.verdict, Verdict::Tampered, "{report:?}");
    let problems = format!("{:?}", report.problems);
    assert!(problems.contains("Truncated"), "{problems}");
    assert!(
        problems.contains("s3://mcptrail-archive-c/hosts/laptop-7/checkpoints/"),
        "{problems}"
    );
}

#[test]
fn a_wrong_secret_is_a_signature_error_that_never_shows_the_secret() {
    let moto = MotoS3::start("mcptrail-archive-d");
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 3);
    let mut cfg = s3_config(&moto, "D", "segments = false\n");
    std::env::set_var(
        "MCPTRAIL_TEST_S3_SECRET_D",
        "Wr0ngSecretWr0ngSecretWr0ngSecret000000",
    );
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 1);
    let e = sink
        .send(&[tail.next_record().unwrap().unwrap()])
        .unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected, "{e}");
    assert!(
        e.message.contains("SignatureDoesNotMatch")
            && e.message.contains("check secret_access_key"),
        "{e}"
    );
    assert!(!format!("{e:?} {cfg:?}").contains("Wr0ngSecret"), "{e:?}");
    // A bucket that does not exist says how to make one.
    if let SinkTarget::S3(c) = &mut cfg.target {
        c.bucket = "no-such-bucket-here".into();
    }
    std::env::set_var("MCPTRAIL_TEST_S3_SECRET_D", &moto.secret_access_key);
    let e = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap_err();
    assert!(
        e.message.contains("NoSuchBucket") && e.message.contains("Object Lock enabled"),
        "{e}"
    );
}
