//! Evidence bundles: a session exported with inclusion proofs, the covering signed checkpoint
//! and the key verifies on its own; every way of editing the bundle afterwards is caught and
//! named.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_integrity::{NoteSigner, NoteVerifier};
use mcptrail_ledger::{
    export_session, export_session_with, local_verifier, verify_bundle, write_bundle, Bundle,
    BundleError, BundleReport, CheckpointPolicy, ExportOptions, KeySource, Ledger, LedgerConfig,
    LedgerReader, Verdict, KEY_DIR,
};

const A: &str = "0190a1b2-aaaa-7000-8000-000000000001";
const B: &str = "0190a1b2-bbbb-7000-8000-000000000002";
/// Bytes that must survive the round trip through a JSON string unchanged.
const ODD_AGENT: &str = "agent \"é\" \\ \u{2028} \u{1F980} </script>";

fn config(every: u64) -> LedgerConfig {
    LedgerConfig {
        checkpoints: CheckpointPolicy {
            every_records: every,
            interval: Duration::from_secs(3600),
            anchor_dir: None,
            ..CheckpointPolicy::default()
        },
        ..LedgerConfig::default()
    }
}

fn ev(kind: EventKind, session: &str, n: u64) -> Event {
    let mut e = Event::new(kind);
    e.session_id = Some(session.into());
    e.agent_id = Some(ODD_AGENT.into());
    e.request_id = Some(serde_json::json!(n));
    e
}

/// Two sessions, interleaved in single-record and mixed batches, plus a record of no session;
/// a checkpoint every 4 records. Session A: 8 records, start and end; B: 6, no end.
fn two_sessions(dir: &Path) {
    let mut l = Ledger::open(dir, config(4)).unwrap();
    let mut batches = vec![
        vec![ev(EventKind::SessionStart, A, 0)],
        vec![ev(EventKind::SessionStart, B, 0)],
        vec![
            ev(EventKind::McpRequest, A, 1),
            ev(EventKind::McpRequest, B, 1),
        ],
        vec![Event::new(EventKind::SystemHeartbeat)],
        vec![
            ev(EventKind::McpResponse, B, 1),
            ev(EventKind::McpResponse, A, 1),
            ev(EventKind::McpRequest, A, 2),
        ],
        vec![ev(EventKind::McpRequest, B, 2)],
        vec![
            ev(EventKind::McpResponse, A, 2),
            ev(EventKind::McpResponse, B, 2),
            ev(EventKind::McpNotification, A, 3),
        ],
        vec![ev(EventKind::ToolCatalog, A, 4)],
        vec![
            ev(EventKind::McpNotification, B, 3),
            ev(EventKind::SessionEnd, A, 5),
        ],
    ];
    for b in &mut batches {
        l.append(b).unwrap();
    }
}

fn lines(dir: &Path) -> Vec<(u64, String, Option<String>)> {
    LedgerReader::open(dir, 1)
        .unwrap()
        .map(|r| {
            let line = String::from_utf8(r.unwrap().line).unwrap();
            let e: Event = serde_json::from_str(&line).unwrap();
            (e.seq, line, e.session_id)
        })
        .collect()
}

fn classes(r: &BundleReport) -> Vec<&'static str> {
    r.problems.iter().map(|p| p.class()).collect()
}

fn key(dir: &Path) -> NoteVerifier {
    local_verifier(dir).unwrap().unwrap()
}

/// Exported, a fresh copy for each tamper case.
struct Fixture {
    dir: tempfile::TempDir,
    bundle: Bundle,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    two_sessions(dir.path());
    let bundle = export_session(dir.path(), A).unwrap();
    Fixture { dir, bundle }
}

fn assert_tampered(r: &BundleReport, class: &str) {
    assert_eq!(r.verdict, Verdict::Tampered, "{:?}", r.problems);
    assert!(
        classes(r).contains(&class),
        "expected {class}, got {:?}",
        r.problems
    );
}

#[test]
fn an_exported_session_verifies_with_nothing_else() {
    let f = fixture();
    let b = &f.bundle;
    let stored = lines(f.dir.path());
    let total = stored.len() as u64;
    let of_a: Vec<&(u64, String, Option<String>)> = stored
        .iter()
        .filter(|(_, _, s)| s.as_deref() == Some(A))
        .collect();

    assert_eq!(b.format, "mcptrail-evidence-bundle v2");
    assert_eq!(b.session_id, A);
    assert_eq!(b.count, 8);
    assert_eq!(b.events.len(), 8);
    assert_eq!((b.first_seq, b.last_seq), (1, total));
    assert!(b.session_start && b.session_end);
    assert_eq!(b.tree_size, total, "a fresh checkpoint covers every record");
    assert_eq!(b.key, key(f.dir.path()).to_vkey());
    assert!(b.statement.is_some());
    for (e, (seq, line, _)) in b.events.iter().zip(&of_a) {
        assert_eq!(e.seq, *seq);
        assert_eq!(e.line.as_bytes(), line.as_bytes(), "exact stored bytes");
    }
    assert!(
        b.events[0].line.contains("\\\"é\\\""),
        "escapes kept as stored"
    );

    // On another machine: only the bundle's bytes.
    let bytes = b.to_json();
    drop(f);
    let again = Bundle::from_json(&bytes).unwrap();
    let r = verify_bundle(&again, None);
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
    assert!(r.problems.is_empty() && r.unchecked.is_empty());
    assert_eq!(r.inclusions_verified, 8);
    assert!(r.record_list_verified);
    assert_eq!(r.key_source, KeySource::Bundled);
    assert!(
        r.notices.iter().any(|n| n.contains("--key")),
        "a bundled key is flagged: {:?}",
        r.notices
    );
    assert_eq!((r.session_start, r.session_end), (Some(1), Some(total)));
    assert_eq!(r.checkpoint_size, Some(total));
}

#[test]
fn the_trusted_key_is_used_and_must_match() {
    let f = fixture();
    let r = verify_bundle(&f.bundle, Some(&key(f.dir.path())));
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
    assert_eq!(r.key_source, KeySource::Trusted);
    assert!(!r.notices.iter().any(|n| n.contains("--key")));

    let stranger = NoteSigner::generate("mcptrail.local/other/01").unwrap();
    let r = verify_bundle(&f.bundle, Some(&stranger.verifier()));
    assert_tampered(&r, "key_mismatch");
    assert_tampered(&r, "bad_signature");
    assert_eq!(r.inclusions_verified, 0);
}

#[test]
fn a_modified_byte_is_caught() {
    let mut b = fixture().bundle;
    b.events[2].line = b.events[2].line.replacen("agent", "agenT", 1);
    let r = verify_bundle(&b, None);
    assert_tampered(&r, "modified_record");
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.inclusions_verified, 7);
    assert!(r.problems[0].to_string().starts_with("event #3 (seq "));
}

#[test]
fn a_removed_record_is_caught_even_with_the_summary_fixed() {
    let mut b = fixture().bundle;
    let gone = b.events.remove(3).seq;
    let r = verify_bundle(&b, None);
    assert_tampered(&r, "deleted_record");
    assert_tampered(&r, "summary_mismatch");
    b.count -= 1;
    let r = verify_bundle(&b, None);
    assert_eq!(classes(&r), ["deleted_record"], "{:?}", r.problems);
    assert!(r.problems[0].to_string().contains(&gone.to_string()));
    assert_eq!(
        r.inclusions_verified, 7,
        "the remaining records are genuine"
    );
}

#[test]
fn swapped_proofs_are_told_apart_from_modified_records() {
    let mut b = fixture().bundle;
    let p = b.events[1].proof.clone();
    b.events[1].proof = b.events[4].proof.clone();
    b.events[4].proof = p;
    let r = verify_bundle(&b, None);
    assert_eq!(classes(&r), ["proof_mismatch", "proof_mismatch"]);

    b.events[4].proof[0] = "00".repeat(32);
    assert_tampered(&verify_bundle(&b, None), "modified_record");
    b.events[4].proof[0] = "zz".into();
    assert_tampered(&verify_bundle(&b, None), "bad_proof");
}

#[test]
fn an_altered_checkpoint_is_caught() {
    let b = fixture().bundle;
    // Another root.
    let mut lines: Vec<String> = b.checkpoint.split('\n').map(String::from).collect();
    lines[2] = format!("A{}", &lines[2][1..]);
    if lines[2] == b.checkpoint.split('\n').nth(2).unwrap() {
        lines[2] = format!("B{}", &lines[2][1..]);
    }
    let mut c = b.clone();
    c.checkpoint = lines.join("\n");
    let r = verify_bundle(&c, None);
    assert_tampered(&r, "bad_signature");
    assert_eq!(r.inclusions_verified, 0);

    // Another signature.
    let mut c = b.clone();
    let sig_at = c.checkpoint.rfind(' ').unwrap() + 5;
    let mut bytes = c.checkpoint.into_bytes();
    bytes[sig_at] = if bytes[sig_at] == b'A' { b'B' } else { b'A' };
    c.checkpoint = String::from_utf8(bytes).unwrap();
    assert_tampered(&verify_bundle(&c, None), "bad_signature");

    // Another size in the summary.
    let mut c = b;
    c.tree_size += 1;
    assert_tampered(&verify_bundle(&c, None), "summary_mismatch");
}

#[test]
fn a_substituted_key_is_caught_and_a_forged_bundle_needs_the_trusted_key() {
    let f = fixture();
    let b = &f.bundle;
    let origin = key(f.dir.path()).name().to_string();
    let forger = NoteSigner::generate(&origin).unwrap();

    // Only the key replaced: nothing is signed by it.
    let mut c = b.clone();
    c.key = forger.verifier().to_vkey();
    let r = verify_bundle(&c, None);
    assert_tampered(&r, "bad_signature");

    // Everything re-signed with the forger's key, and a record changed with a made-up proof:
    // self-consistent, so only a key obtained out of band exposes it.
    let mut c = b.clone();
    c.events[2].line = c.events[2].line.replacen("agent", "agenT", 1);
    // The forger presents the session's records as a log of their own, at seqs 1..=n.
    for (i, e) in c.events.iter_mut().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(&e.line).unwrap();
        v["seq"] = (i as u64 + 1).into();
        e.seq = i as u64 + 1;
        e.line = serde_json::to_string(&v).unwrap();
    }
    let leaves: Vec<[u8; 32]> = c
        .events
        .iter()
        .map(|e| mcptrail_ledger::record_hash(e.line.as_bytes()))
        .collect();
    let n = leaves.len() as u64;
    let root = mcptrail_integrity::merkle::root(&leaves);
    for (i, e) in c.events.iter_mut().enumerate() {
        e.proof = mcptrail_integrity::merkle::inclusion_proof(&leaves, i as u64)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect();
    }
    let cp = mcptrail_integrity::Checkpoint {
        origin: origin.clone(),
        size: n,
        root,
        extensions: Vec::new(),
    };
    c.checkpoint = forger.sign(&cp.to_text()).unwrap();
    c.tree_size = n;
    c.first_seq = 1;
    c.last_seq = n;
    c.key = forger.verifier().to_vkey();
    c.statement = Some(
        forger
            .sign(&format!(
                "mcptrail evidence bundle v1\nsession \"{A}\"\ncheckpoint {n} {}\nrecords {n} 1-{n}\n",
                hex::encode(root)
            ))
            .unwrap(),
    );
    let r = verify_bundle(&c, None);
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
    assert!(r.notices.iter().any(|n| n.contains("--key")));
    let r = verify_bundle(&c, Some(&key(f.dir.path())));
    assert_tampered(&r, "key_mismatch");
    assert_tampered(&r, "bad_signature");
}

#[test]
fn a_record_of_another_session_is_caught() {
    let f = fixture();
    let mut a = f.bundle.clone();
    let b = export_session(f.dir.path(), B).unwrap();
    assert_eq!(
        b.checkpoint, a.checkpoint,
        "no new records: same checkpoint"
    );
    assert!(!b.session_end);
    // A genuine record with a valid proof, but B's.
    let intruder = b.events[2].clone();
    let at = a.events.iter().position(|e| e.seq > intruder.seq).unwrap();
    a.events.insert(at, intruder);
    a.count += 1;
    let r = verify_bundle(&a, None);
    assert_eq!(
        classes(&r),
        ["foreign_event", "inserted_record"],
        "{:?}",
        r.problems
    );
    assert_eq!(
        r.inclusions_verified, 9,
        "the intruder is in the log all right"
    );
}

#[test]
fn seqs_must_match_and_increase() {
    let b = fixture().bundle;
    let mut c = b.clone();
    c.events[1].seq += 1;
    let r = verify_bundle(&c, None);
    assert_tampered(&r, "seq_mismatch");

    let mut c = b.clone();
    c.events.swap(2, 3);
    assert_tampered(&verify_bundle(&c, None), "inserted_or_reordered");

    let mut c = b;
    let dup = c.events[5].clone();
    c.events.insert(5, dup);
    assert_tampered(&verify_bundle(&c, None), "inserted_or_reordered");
}

#[test]
fn an_altered_or_missing_statement() {
    let b = fixture().bundle;
    let mut c = b.clone();
    c.statement = c
        .statement
        .map(|s| s.replacen("records 8 ", "records 7 ", 1));
    assert_tampered(&verify_bundle(&c, None), "bad_signature");

    let mut c = b;
    c.statement = None;
    let r = verify_bundle(&c, None);
    assert_eq!(r.verdict, Verdict::CannotVerify, "{:?}", r.problems);
    assert!(r.problems.is_empty());
    assert!(!r.unchecked.is_empty());
}

#[test]
fn other_documents_are_refused() {
    let b = fixture().bundle;
    let mut v: serde_json::Value = serde_json::from_slice(&b.to_json()).unwrap();
    v["format"] = "mcptrail-evidence-bundle v9".into();
    assert!(matches!(
        Bundle::from_json(v.to_string().as_bytes()),
        Err(BundleError::UnknownFormat(f)) if f.ends_with("v9")
    ));
    assert!(matches!(
        Bundle::from_json(b"{\"events\": []}"),
        Err(BundleError::NotABundle(_))
    ));
    assert!(matches!(
        Bundle::from_json(b"not json"),
        Err(BundleError::NotABundle(_))
    ));
}

#[test]
fn bundles_are_written_private() {
    let f = fixture();
    let out = f.dir.path().join("a.bundle.json");
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_bundle(&f.bundle, &out).unwrap();
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let back = Bundle::from_json(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(back, f.bundle);
}

#[test]
fn without_writing_the_newest_covering_checkpoint_is_used() {
    let dir = tempfile::tempdir().unwrap();
    two_sessions(dir.path());
    let total = lines(dir.path()).len() as u64; // 15: checkpoints at 4, 8, 12
    let read_only = ExportOptions { sign_with: None };
    // A ends at the last record: no checkpoint covers it yet.
    let err = export_session_with(dir.path(), A, &read_only).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::NoCoveringCheckpoint {
                last_seq,
                newest: Some(12)
            } if last_seq == total
        ),
        "{err}"
    );
    // B's last record (seq 14) is not covered either; one more checkpoint covers both.
    Ledger::open(dir.path(), config(4))
        .unwrap()
        .append(&mut [
            Event::new(EventKind::SystemHeartbeat),
            Event::new(EventKind::SystemHeartbeat),
        ])
        .unwrap();
    let e = export_session_with(dir.path(), B, &read_only).unwrap();
    assert!(!e.fresh_checkpoint);
    assert_eq!(e.bundle.tree_size, 17);
    assert_eq!(verify_bundle(&e.bundle, None).verdict, Verdict::Intact);

    // A copy without the signing key: the list of records cannot be signed.
    std::fs::remove_file(dir.path().join(KEY_DIR).join("checkpoint.skey")).unwrap();
    let e = export_session_with(dir.path(), B, &read_only).unwrap();
    assert!(e.bundle.statement.is_none());
    assert!(!e.notices.is_empty());
    let r = verify_bundle(&e.bundle, None);
    assert_eq!(r.verdict, Verdict::CannotVerify, "{:?}", r.problems);
}

#[test]
fn unknown_sessions_and_missing_ledgers_are_errors() {
    let f = fixture();
    assert!(matches!(
        export_session(f.dir.path(), "no-such-session"),
        Err(BundleError::NoSuchSession(_))
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        export_session(empty.path(), A),
        Err(BundleError::NoLedger(_))
    ));
    assert!(
        !empty.path().join("ledger").exists(),
        "export creates nothing"
    );
}
