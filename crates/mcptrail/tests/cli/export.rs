//! `export`: a recorded session, through the real CLI, as an evidence bundle that verifies with
//! nothing but its own bytes (and the key an auditor was given).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use mcptrail_event::Event;
use mcptrail_ledger::{local_verifier, verify_bundle, Bundle, KeySource, Verdict};
use mcptrail_test_support::target_bin;
use serde_json::json;

use crate::support::*;

/// Two sessions recorded one after the other; returns the data dir and both session ids.
fn two_sessions() -> (tempfile::TempDir, std::path::PathBuf, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut ids = Vec::new();
    for client in ["export-client-1", "export-client-2"] {
        let mut w = Wrapped::start(
            &data,
            &[],
            &[target_bin("rmcp-echo-server").to_str().unwrap()],
        );
        w.initialize(client);
        w.request(
            1,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": format!("from {client}")}}),
        );
        let (st, _, _) = w.finish(Duration::from_secs(10));
        assert!(st.success());
        let evs = events(&data);
        ids.push(evs.last().unwrap().session_id.clone().unwrap());
    }
    (dir, data, ids)
}

#[test]
fn export_writes_a_bundle_that_verifies_on_its_own() {
    let (dir, data, ids) = two_sessions();
    let d = data.to_str().unwrap();
    let out = dir.path().join("evidence.json");
    let o = out.to_str().unwrap();
    let (code, stdout, err) = run(&[
        "--data-dir",
        d,
        "export",
        "--session",
        &ids[0][..13],
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.starts_with("exported ") && stdout.contains(&ids[0]),
        "{stdout}"
    );
    assert!(stdout.contains("mcptrail verify --bundle"), "{stdout}");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let bundle = Bundle::from_json(&std::fs::read(&out).unwrap()).unwrap();
    let all = events(&data);
    let mine: Vec<&Event> = all
        .iter()
        .filter(|e| e.session_id.as_deref() == Some(ids[0].as_str()))
        .collect();
    assert_eq!(bundle.session_id, ids[0]);
    assert_eq!(bundle.events.len(), mine.len());
    assert!(bundle.session_start && bundle.session_end);
    assert_eq!(bundle.tree_size, all.len() as u64);
    for (b, e) in bundle.events.iter().zip(&mine) {
        assert_eq!(b.seq, e.seq);
        assert_schema_valid(b.line.as_bytes());
    }

    // The auditor's side: the bundle alone, then with the key handed over separately.
    let key = local_verifier(&data).unwrap().unwrap();
    drop(all);
    std::fs::remove_dir_all(&data).unwrap();
    let r = verify_bundle(&bundle, None);
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
    assert_eq!(r.key_source, KeySource::Bundled);
    let r = verify_bundle(&bundle, Some(&key));
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
    assert_eq!(r.inclusions_verified, bundle.count);
    assert!(r.record_list_verified);

    // A record edited in the file is caught.
    let text = std::fs::read_to_string(&out).unwrap();
    let edited = text.replacen("from export-client-1", "from export-client-X", 1);
    assert_ne!(edited, text);
    let r = verify_bundle(&Bundle::from_json(edited.as_bytes()).unwrap(), Some(&key));
    assert_eq!(r.verdict, Verdict::Tampered);
    assert!(r.problems.iter().any(|p| p.class() == "modified_record"));
}

#[test]
fn export_json_summary_latest_and_errors() {
    let (dir, data, ids) = two_sessions();
    let d = data.to_str().unwrap();
    let out = dir.path().join("latest.json");
    let (code, stdout, err) = run(&[
        "--data-dir",
        d,
        "export",
        "--session",
        "latest",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["session_id"], ids[1].as_str());
    assert_eq!(summary["session_start"], true);
    assert_eq!(summary["session_end"], true);
    assert_eq!(summary["record_list_signed"], true);
    let bundle = Bundle::from_json(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(summary["records"], bundle.count);
    assert_eq!(verify_bundle(&bundle, None).verdict, Verdict::Intact);

    let (code, _, err) = run(&[
        "--data-dir",
        d,
        "export",
        "--session",
        "ffff",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no session matches"), "{err}");
    let empty = dir.path().join("nothing");
    let (code, _, err) = run(&[
        "--data-dir",
        empty.to_str().unwrap(),
        "export",
        "--session",
        "latest",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no ledger"), "{err}");
}
