//! Tamper evidence through the CLI: `verify` exit codes and the MAC seed, `drill`, and the
//! tap's scheduled self-verification recorded as `system.verify` (and `alert` on failure).

use std::time::Duration;

use mcptrail_event::EventKind;
use mcptrail_test_support::target_bin;
use serde_json::json;

use crate::support::*;

/// A session that lasts past the recorder's first tick, so the start-up self-check lands.
fn session(data: &std::path::Path, config: Option<&std::path::Path>) {
    let mut extra = Vec::new();
    if let Some(c) = config {
        extra.extend(["--config", c.to_str().unwrap()]);
    }
    let mut w = Wrapped::start(
        data,
        &extra,
        &[target_bin("rmcp-echo-server").to_str().unwrap()],
    );
    w.initialize("integrity-client");
    w.request(
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hello"}}),
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (st, _, _) = w.finish(Duration::from_secs(10));
    assert!(st.success());
}

/// An attacker's edit: the tool argument "hello" becomes "HELLO" in the ledger. Returns the
/// segment edited.
fn edit_first_record_argument(data: &std::path::Path) -> std::path::PathBuf {
    let seg = std::fs::read_dir(data.join("ledger"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(&seg, text.replacen("hello", "HELLO", 1)).unwrap();
    seg
}

#[test]
fn verify_exit_codes_follow_the_seed_intact_tampered_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    session(&data, None);
    let d = data.to_str().unwrap();
    let (code, out, err) = run(&["--data-dir", d, "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("MACs valid across epochs 0..=0") || out.contains("MAC valid"),
        "{out}"
    );
    assert!(out.contains("OK    INTACT"), "{out}");

    // The seed moves off the machine, as the README says: now MACs cannot be checked.
    let seed = dir.path().join("offline.seed");
    std::fs::rename(data.join("keys/mac.seed"), &seed).unwrap();
    let (code, out, _) = run(&["--data-dir", d, "verify"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no verification seed was given"), "{out}");
    assert!(out.contains("CANNOT VERIFY"), "{out}");
    let (code, out, _) = run(&["--data-dir", d, "verify", "--skip-macs"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(&["--data-dir", d, "verify", "--seed", seed.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run(&["--data-dir", d, "verify", "--seed", "/nonexistent/seed"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--seed") && err.contains("/nonexistent/seed"),
        "{err}"
    );
    // The seed's bytes never appear in any output or error.
    let seed_hex = std::fs::read_to_string(&seed)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let (_, out, err) = run(&[
        "--data-dir",
        d,
        "verify",
        "--json",
        "--seed",
        seed.to_str().unwrap(),
    ]);
    assert!(!out.contains(&seed_hex) && !err.contains(&seed_hex));

    // A record edited in place: tampered, exit 1, named by class.
    edit_first_record_argument(&data);
    let (code, out, _) = run(&["--data-dir", d, "verify", "--seed", seed.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  [modified_record]"), "{out}");
    assert!(out.contains("TAMPERED"), "{out}");
}

#[test]
fn drill_shows_every_tamper_class_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "drill",
        "--practice",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for class in [
        "modified record",
        "inserted record",
        "deleted record",
        "reordered records",
        "truncated tail",
        "missing segment",
        "fork / rollback",
        "bad checkpoint signature",
        "history re-MACed with the current key",
        "oldest segment deleted, no tombstone",
        "tombstone forged for a middle segment",
        "modified tombstone",
    ] {
        let row = out
            .lines()
            .find(|l| l.starts_with(class))
            .unwrap_or_else(|| panic!("{class} missing:\n{out}"));
        assert!(row.contains(" yes "), "{row}");
    }
    assert!(
        out.contains("every applicable tamper class was detected"),
        "{out}"
    );

    // On a real (small) ledger without an anchor, the drill says honestly what it cannot see.
    let data = dir.path().join("data");
    session(&data, None);
    let (code, out, _) = run(&["--data-dir", data.to_str().unwrap(), "drill", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let truncated = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["class"] == "truncated tail")
        .unwrap();
    assert_eq!(truncated["detected"], false, "{truncated}");
    assert!(truncated["why_not"]
        .as_str()
        .unwrap()
        .contains("anchor_dir"));
    assert_eq!(code, 1);
}

#[test]
fn the_tap_verifies_the_ledger_and_raises_an_alert_when_it_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    session(&data, None);
    let recorded = events(&data);
    let checks = of_kind(&recorded, EventKind::SystemVerify);
    assert_eq!(checks.len(), 1, "one check at start-up");
    let detail = checks[0].detail.as_ref().unwrap();
    assert_eq!(detail["verdict"], "intact", "{detail}");
    assert!(of_kind(&recorded, EventKind::Alert).is_empty());

    // Someone edits the first session's record; the next tap notices and says so.
    let seg = edit_first_record_argument(&data);
    session(&data, None);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&seg)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let check = lines
        .iter()
        .rev()
        .find(|e| e["kind"] == "system.verify")
        .unwrap();
    assert_eq!(check["detail"]["verdict"], "tampered", "{check}");
    assert_eq!(check["detail"]["problems"][0]["class"], "broken_link");
    let alert = lines.iter().rev().find(|e| e["kind"] == "alert").unwrap();
    assert_eq!(alert["detail"]["rule"], "ledger_integrity");
    assert_eq!(alert["detail"]["severity"], "critical");

    // Turned off in the config: no check.
    let quiet = tempfile::tempdir().unwrap();
    let cfg = quiet.path().join("mcptrail.toml");
    std::fs::write(&cfg, "[tap]\nself_verify_interval_secs = 0\n").unwrap();
    let data2 = quiet.path().join("data");
    session(&data2, Some(&cfg));
    assert!(of_kind(&events(&data2), EventKind::SystemVerify).is_empty());
}

#[test]
fn checkpoint_exports_the_key_and_proves_consistency_with_a_kept_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    session(&data, None);
    let d = data.to_str().unwrap();
    let (code, vkey, err) = run(&["--data-dir", d, "checkpoint", "--public-key"]);
    assert_eq!(code, 0, "{err}");
    assert!(vkey.trim().starts_with("mcptrail.local/"), "{vkey}");
    assert_eq!(
        vkey.trim(),
        std::fs::read_to_string(data.join("keys/checkpoint.vkey"))
            .unwrap()
            .trim()
    );
    // The auditor keeps today's checkpoint.
    let (code, note, err) = run(&["--data-dir", d, "checkpoint"]);
    assert_eq!(code, 0, "{err}");
    let kept = dir.path().join("kept.note");
    std::fs::write(&kept, &note).unwrap();
    // More sessions later; the operator proves the log only grew.
    session(&data, None);
    let proof = dir.path().join("proof.json");
    let prove = || {
        run(&[
            "--data-dir",
            d,
            "checkpoint",
            "--since",
            kept.to_str().unwrap(),
            "--out",
            proof.to_str().unwrap(),
        ])
    };
    let (code, out, err) = prove();
    assert_eq!(code, 0, "{out}{err}");
    let key = vkey.trim();
    let check = |file: &std::path::Path, key: &str| {
        run(&[
            "verify",
            "--consistency",
            file.to_str().unwrap(),
            "--key",
            key,
        ])
    };
    let (code, out, err) = check(&proof, key);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("extends the one at"), "{out}");

    // A doctored proof, or one checked with another key, fails.
    let mut p: serde_json::Value = serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    let h = p["proof"][0].as_str().unwrap().to_string();
    p["proof"][0] = serde_json::Value::String(format!(
        "{}{}",
        if h.starts_with('0') { "1" } else { "0" },
        &h[1..]
    ));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&p).unwrap()).unwrap();
    let (code, out, _) = check(&bad, key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[fork_or_rollback]"), "{out}");
    let stranger = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let (code, out, _) = check(&proof, stranger);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[bad_signature]"), "{out}");

    // History rewritten after the kept checkpoint: no proof can be made.
    mcptrail_ledger::tamper::apply(&data, mcptrail_ledger::tamper::Tamper::Fork { from_seq: 2 })
        .unwrap();
    let (code, _, err) = prove();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rewritten since") || err.contains("do not match"),
        "{err}"
    );
}

#[test]
fn a_dead_anchor_is_reported_in_the_ledger_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let cfg = dir.path().join("mcptrail.toml");
    std::fs::write(
        &cfg,
        format!("[ledger]\nanchor_dir = \"{}/anchor\"\n", blocker.display()),
    )
    .unwrap();
    let data = dir.path().join("data");
    session(&data, Some(&cfg));
    let recorded = events(&data);
    let errors = of_kind(&recorded, EventKind::SystemError);
    let failed = errors
        .iter()
        .find(|e| e.detail.as_ref().unwrap()["error"] == "checkpoint_failed")
        .expect("the dead anchor is recorded");
    assert!(failed.detail.as_ref().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("could not be anchored"));
    // Every request and response once, the session closed: nothing lost or doubled.
    assert_eq!(of_kind(&recorded, EventKind::SessionEnd).len(), 1);
    let ids: std::collections::HashSet<_> = recorded.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids.len(), recorded.len());
    // The local checkpoint was still signed.
    let (code, out, _) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "verify",
    ]);
    assert!(out.contains("signed checkpoint"), "{out}");
    assert!(out.contains("could not be read"), "{out}");
    assert_eq!(
        code, 2,
        "the configured anchor cannot be read: cannot verify fully\n{out}"
    );
}
