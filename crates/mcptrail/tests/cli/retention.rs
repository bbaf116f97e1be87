//! `mcptrail retention plan | run | selfcheck | policy` on a ledger with events of the past
//! year: archive to a directory, purge, tombstones that `verify` reports, the index, an
//! evidence bundle after the purge, and the refusals.

use std::path::Path;
use std::time::Duration;

use mcptrail_event::{format_rfc3339_nanos, Event, EventKind};
use mcptrail_ledger::{CheckpointPolicy, Ledger, LedgerConfig};

use crate::support::{events, run};

const SESSION: &str = "0190a1b2-ffff-7000-8000-0000000000ff";

fn ago(days: i64) -> String {
    format_rfc3339_nanos(time::OffsetDateTime::now_utc() - time::Duration::days(days))
}

/// Segments of events 400, 200 (one pci), 150 and 100 days old, then an active one with a
/// session of today.
fn old_ledger(dir: &Path) {
    let cfg = |bytes| LedgerConfig {
        segment_max_bytes: bytes,
        segment_max_age: Duration::from_secs(100 * 365 * 86_400),
        fsync: false,
        checkpoints: CheckpointPolicy {
            interval: Duration::from_secs(3600),
            ..CheckpointPolicy::default()
        },
        ..LedgerConfig::default()
    };
    let mut l = Ledger::open(dir, cfg(1)).unwrap();
    for (age, label) in [(400, None), (200, Some("pci")), (150, None), (100, None)] {
        let mut batch: Vec<Event> = (0..3)
            .map(|i| {
                let mut e = Event::new(EventKind::McpRequest);
                e.time = ago(age);
                e.method = Some("tools/call".into());
                e.tool_invoked = Some(format!("old-tool-{age}"));
                e.request_id = Some(serde_json::json!(i));
                if i == 1 {
                    e.labels = label.map(|l| vec![l.to_string()]).unwrap_or_default();
                }
                e
            })
            .collect();
        l.append(&mut batch).unwrap();
    }
    let mut s = Event::new(EventKind::SessionStart);
    s.session_id = Some(SESSION.into());
    l.append(&mut [s]).unwrap();
    drop(l);
    let mut l = Ledger::open(dir, cfg(64 << 20)).unwrap();
    let mut end = Event::new(EventKind::SessionEnd);
    end.session_id = Some(SESSION.into());
    l.append(&mut [end]).unwrap();
    l.checkpoint_now().unwrap();
}

fn config(dir: &Path, archive: &Path) -> std::path::PathBuf {
    let path = dir.join("mcptrail.toml");
    std::fs::write(
        &path,
        format!(
            "[ledger]\nsegment_max_age_secs = 3153600000\n[retention]\nretention_days = 120\nat_hand_days = 120\nlabel_retention_days = {{ pci = 365 }}\nlabel_at_hand_days = {{ pci = 90 }}\narchive_dir = \"{}\"\n",
            archive.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn plan_run_selfcheck_and_verify_after_archive_and_purge() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    old_ledger(&data);
    let archive = home.path().join("archive");
    let cfg = config(home.path(), &archive);
    let d = data.to_str().unwrap();
    let c = cfg.to_str().unwrap();
    // Index the old events first: the purge must take them out of the index too.
    let (code, out, err) = run(&[
        "--data-dir",
        d,
        "--config",
        c,
        "log",
        "--tool",
        "old-tool-400",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("old-tool-400"), "{out}");

    let (code, out, err) = run(&["--data-dir", d, "--config", c, "retention", "policy"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("configured default 120d, pci 365d (at hand 90d)"),
        "{out}"
    );
    assert!(out.contains("effective  none"), "{out}");

    // Read only: the plan says what and why, and nothing is recorded.
    let before = events(&data).len();
    let (code, out, err) = run(&["--data-dir", d, "--config", c, "retention", "plan"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PURGE") && l.contains("seg-00000000000000000001")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ARCHIVE") && l.contains("seg-00000000000000000004")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PURGE") && l.contains("seg-00000000000000000007")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("keep")
            && l.contains("seg-00000000000000000010")
            && l.contains("at hand until")),
        "{out}"
    );
    assert!(out.contains("not in effect yet"), "{out}");
    assert_eq!(events(&data).len(), before, "plan wrote nothing");
    // A plan a year ago: nothing due.
    let (code, out, _) = run(&[
        "--data-dir",
        d,
        "--config",
        c,
        "retention",
        "plan",
        "--now",
        &ago(365),
        "--json",
    ]);
    assert_eq!(code, 0);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        plan["segments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] == "keep"),
        "{plan:#}"
    );

    // run refuses a time in the future.
    let future = format_rfc3339_nanos(time::OffsetDateTime::now_utc() + time::Duration::days(30));
    let (code, _, err) = run(&[
        "--data-dir",
        d,
        "--config",
        c,
        "retention",
        "run",
        "--now",
        &future,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("may not be in the future"), "{err}");

    let (code, out, err) = run(&["--data-dir", d, "--config", c, "retention", "run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("purged    seg-00000000000000000001.jsonl (seq 1..=3)"),
        "{out}"
    );
    assert!(
        out.contains("archived  seg-00000000000000000004.jsonl (seq 4..=6)"),
        "{out}"
    );
    assert!(
        out.contains("purged    seg-00000000000000000007.jsonl (seq 7..=9)"),
        "{out}"
    );
    assert!(out.contains("index     9 removed record(s)"), "{out}");
    assert!(out.contains("OK    self-check passed"), "{out}");
    assert!(archive
        .join("segments/seg-00000000000000000004.jsonl")
        .exists());

    // verify reports the removed ranges honestly and passes.
    let (code, out, err) = run(&["--data-dir", d, "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK    seq 1..=3 purged under policy default 120d, pci 365d (at hand 90d) by tombstone tombstones/ts-00000000000000000001-purged.note, signature OK"), "{out}");
    assert!(
        out.contains("OK    seq 4..=6 removed here (archived to"),
        "{out}"
    );
    assert!(out.contains("OK    INTACT"), "{out}");
    // Every event, the governance ones included, is valid under the schema.
    let evs = events(&data);
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    for k in [
        EventKind::GovernanceRetention,
        EventKind::GovernanceArchive,
        EventKind::GovernancePurge,
        EventKind::GovernanceSelfcheck,
    ] {
        assert!(kinds.contains(&k), "{k} missing");
    }
    // The purged events are gone from the index.
    let (code, out, _) = run(&[
        "--data-dir",
        d,
        "--config",
        c,
        "log",
        "--tool",
        "old-tool-400",
    ]);
    assert_eq!(code, 0);
    assert!(!out.contains("old-tool-400"), "{out}");

    // A session of today exports and verifies as evidence after the purge.
    let bundle = home.path().join("b.json");
    let (code, _, err) = run(&[
        "--data-dir",
        d,
        "export",
        "--session",
        SESSION,
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let vkey = data.join("keys/checkpoint.vkey");
    let (code, out, err) = run(&[
        "verify",
        "--bundle",
        bundle.to_str().unwrap(),
        "--key",
        vkey.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // Corrupt the archive copy: the self-check fails, exit 1.
    let copy = archive.join("segments/seg-00000000000000000004.jsonl");
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(&copy, b"not the segment\n").unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let (code, out, _) = run(&["--data-dir", d, "--config", c, "retention", "selfcheck"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  archive_integrity"), "{out}");
    assert!(out.contains("self-check FAILED"), "{out}");

    // A changed [retention] is not applied without an approval.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace(
            "retention_days = 120\nat_hand_days = 120",
            "retention_days = 30\nat_hand_days = 30",
        ),
    )
    .unwrap();
    let (code, out, err) = run(&["--data-dir", d, "--config", c, "retention", "policy"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("differs, not applied"), "{out}");
}

#[test]
fn run_every_keeps_running_the_scheduled_retention_and_selfcheck() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    old_ledger(&data);
    let cfg = config(home.path(), &home.path().join("archive"));
    let mut child = crate::support::mcptrail()
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(["retention", "run", "--every", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let selfchecks = || {
        mcptrail_ledger::LedgerReader::open(&data, 1)
            .map(|r| {
                r.filter_map(Result::ok)
                    .filter(|rec| {
                        String::from_utf8_lossy(&rec.line)
                            .contains("\"kind\":\"governance.selfcheck\"")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while selfchecks() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        selfchecks() >= 2,
        "the schedule ran the self-check at least twice"
    );
    // Killed at any moment: the ledger verifies, and what the first run removed stays removed.
    let (code, out, err) = run(&["--data-dir", data.to_str().unwrap(), "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("purged under policy"), "{out}");
}
