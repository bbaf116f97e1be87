//! The ledger's signed Merkle checkpoints and evidence bundles, checked by an implementation
//! that shares no code with ours: `checkpoint-verify`
//! (crates/mcptrail-test-support/go/checkpoint-verify), built on Go's reference packages
//! `golang.org/x/mod/sumdb/note` (signed notes, Ed25519) and `golang.org/x/mod/sumdb/tlog`
//! (RFC 6962/9162 tree hashes, inclusion and consistency proofs).
//!
//! It must accept every checkpoint the ledger signs (signature, body, root over the records,
//! inclusion and consistency proofs) and every bundle proof, and reject a modified record
//! (root mismatch), an altered checkpoint (invalid signature) and a foreign key.
//!
//! The binary is a test peer: `.ci/install-peers.sh` (which runs
//! `.ci/install-go-verifier.sh`) builds it into `<peers>/bin/checkpoint-verify`, where
//! `<peers>` is `$MCPTRAIL_PEERS_DIR` or `.ci/peers`. Without it these tests fail; they never
//! skip.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_integrity::NoteSigner;
use mcptrail_ledger::tamper::{apply, Tamper};
use sha2::{Digest, Sha256};

use mcptrail_ledger::{
    export_session, list_checkpoints, list_segments, write_bundle, CheckpointPolicy, Ledger,
    LedgerConfig, LedgerReader, CHECKPOINT_DIR, KEY_DIR, LEDGER_DIR, VERIFIER_KEY_FILE,
};

const SESSION: &str = "0190a1b2-cccc-7000-8000-000000000003";
const OTHER: &str = "0190a1b2-dddd-7000-8000-000000000004";
/// Bytes that must survive the bundle's JSON string and Go's decoder unchanged.
const ODD_AGENT: &str = "agent \"é\" \\ \u{2028} \u{1F980} </script>";
const RECORDS: u64 = 53;

/// `<peers>/bin/checkpoint-verify`; fails the test, with how to fix it, when missing.
fn verifier() -> PathBuf {
    let peers = match std::env::var_os("MCPTRAIL_PEERS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/peers"),
    };
    let bin = peers.join("bin").join("checkpoint-verify");
    assert!(
        bin.is_file(),
        "{} is missing: run .ci/install-peers.sh (or .ci/install-go-verifier.sh) to build the Go \
         reference verifier (needs the Debian packages golang-go and golang-golang-x-mod-dev)",
        bin.display()
    );
    // The install script stamps the binary with the SHA-256 of the source it was built from.
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mcptrail-test-support/go/checkpoint-verify/main.go");
    let want = hex::encode(Sha256::digest(std::fs::read(&source).unwrap()));
    let stamp = std::fs::read_to_string(peers.join("bin").join(".checkpoint-verify-stamp"))
        .unwrap_or_default();
    assert_eq!(
        stamp.split_whitespace().last(),
        Some(want.as_str()),
        "{} was not built from the current {}: run .ci/install-peers.sh (or \
         .ci/install-go-verifier.sh) again",
        bin.display(),
        source.display()
    );
    bin
}

struct Run {
    code: Option<i32>,
    stdout: String,
}

impl Run {
    /// The output lines starting with `prefix`.
    fn lines(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines(prefix).len()
    }

    /// The one line starting with `prefix` (e.g. `"ok   root        cp-…"`).
    fn line(&self, prefix: &str) -> &str {
        let found = self.lines(prefix);
        assert_eq!(found.len(), 1, "one line `{prefix}…` in:\n{}", self.stdout);
        found[0]
    }

    fn assert_passed(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "checkpoint-verify failed:\n{}",
            self.stdout
        );
        assert_eq!(self.count("FAIL"), 0, "{}", self.stdout);
        assert!(
            self.stdout.trim_end().ends_with(": all checks passed"),
            "{}",
            self.stdout
        );
    }

    fn assert_failed(&self) {
        assert_eq!(
            self.code,
            Some(1),
            "checkpoint-verify should fail:\n{}",
            self.stdout
        );
        assert!(
            self.stdout.trim_end().ends_with("FAILED"),
            "{}",
            self.stdout
        );
    }
}

fn run<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let bin = verifier();
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let out = Command::new(&bin).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "{} {args:?} wrote to stderr:\n{stderr}",
        bin.display()
    );
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
    }
}

fn ev(kind: EventKind, session: &str, n: u64) -> Event {
    let mut e = Event::new(kind);
    e.session_id = Some(session.into());
    e.agent_id = Some(ODD_AGENT.into());
    e.request_id = Some(serde_json::json!(n));
    e
}

/// 53 records in batches of 1 to 4, two sessions interleaved; small segments (several are
/// sealed, each seal signs a checkpoint) and a checkpoint every 7 records, so checkpoints land
/// on many tree shapes, most not a power of two; a last checkpoint covers every record.
fn build(dir: &Path) {
    let mut l = Ledger::open(
        dir,
        LedgerConfig {
            segment_max_bytes: 4 * 1024,
            checkpoints: CheckpointPolicy {
                every_records: 7,
                interval: Duration::from_secs(3600),
                anchor_dir: None,
                ..CheckpointPolicy::default()
            },
            ..LedgerConfig::default()
        },
    )
    .unwrap();
    l.append(&mut [ev(EventKind::SessionStart, SESSION, 0)])
        .unwrap();
    let mut n = 1;
    let mut batch = 0;
    while n < RECORDS - 1 {
        let size = (batch % 4 + 1).min(RECORDS - 1 - n);
        let mut events: Vec<Event> = (n..n + size)
            .map(|i| {
                let session = if i % 3 == 0 { OTHER } else { SESSION };
                let kind = if i % 2 == 0 {
                    EventKind::McpRequest
                } else {
                    EventKind::McpResponse
                };
                ev(kind, session, i)
            })
            .collect();
        l.append(&mut events).unwrap();
        n += size;
        batch += 1;
    }
    l.append(&mut [ev(EventKind::SessionEnd, SESSION, n)])
        .unwrap();
    l.checkpoint_now().unwrap();
}

fn checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    list_checkpoints(&dir.join(CHECKPOINT_DIR)).unwrap()
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let records = LedgerReader::open(dir.path(), 1).unwrap().count() as u64;
    assert_eq!(records, RECORDS);
    assert!(list_segments(&dir.path().join(LEDGER_DIR)).unwrap().len() >= 3);
    let cps = checkpoints(dir.path());
    assert!(cps.len() >= 6, "{cps:?}");
    assert_eq!(cps.last().unwrap().0, RECORDS);
    dir
}

#[test]
fn every_checkpoint_verifies_with_the_go_reference_code() {
    let dir = fixture();
    let cps = checkpoints(dir.path());

    let r = run([dir.path()]);
    r.assert_passed();
    assert!(r.line("ok   ledger").ends_with(&format!(
        ": {RECORDS} records, leaf i = tlog.RecordHash(line i without its MAC)"
    )));
    // The Go code derives the chain from the same definition of a record hash.
    r.line("ok   chain       ");
    for (size, path) in &cps {
        let name = file_name(path);
        r.line(&format!("ok   signature   {name}: note.Open: signed by "));
        assert!(r
            .line(&format!("ok   checkpoint  {name}: "))
            .contains(&format!(", size {size}, root ")));
        assert!(r
            .line(&format!("ok   root        {name}: "))
            .contains(&format!(
                "tlog.TreeHash({size}) of the ledger = signed root "
            )));
        let proofs = r.count(&format!("ok   inclusion   {name}: record "));
        assert_eq!(proofs as u64, (*size).min(8), "{}", r.stdout);
    }
    assert_eq!(r.count("ok   consistency "), cps.len() - 1, "{}", r.stdout);

    // Each checkpoint on its own, with the key, the note and the segment files named.
    let vkey = dir.path().join(KEY_DIR).join(VERIFIER_KEY_FILE);
    let segments: Vec<PathBuf> = list_segments(&dir.path().join(LEDGER_DIR))
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    for (size, path) in &cps {
        let mut args: Vec<OsString> = vec![
            "-proofs".into(),
            "1000".into(),
            "-vkey".into(),
            vkey.clone().into(),
            "-checkpoint".into(),
            path.clone().into(),
        ];
        args.extend(segments.iter().map(|s| s.clone().into_os_string()));
        let r = run(args);
        r.assert_passed();
        r.line(&format!("ok   root        {}: ", file_name(path)));
        // Every leaf of the tree, proved and checked.
        assert_eq!(r.count("ok   inclusion "), *size as usize, "{}", r.stdout);
    }
}

#[test]
fn bundle_proofs_check_with_tlog_and_equal_its_own() {
    let dir = fixture();
    let bundle = export_session(dir.path(), SESSION).unwrap();
    assert!(bundle.events.len() >= 30);
    let path = dir.path().join("session.bundle.json");
    write_bundle(&bundle, &path).unwrap();

    // With the ledger: proofs verify and are hash for hash what tlog.ProveRecord makes.
    let mut args: Vec<OsString> = vec!["-bundle".into(), path.clone().into()];
    args.push(dir.path().into());
    let r = run(args);
    r.assert_passed();
    r.line("ok   key         session.bundle.json: the bundle's key is the trusted key");
    r.line("ok   statement   session.bundle.json: note.Open: ");
    r.line("ok   root        session.bundle.json: ");
    let n = bundle.events.len();
    assert_eq!(
        r.count("ok   inclusion   session.bundle.json seq "),
        n,
        "{}",
        r.stdout
    );
    assert_eq!(
        r.count("ok   same-proof  session.bundle.json seq "),
        n,
        "{}",
        r.stdout
    );

    // The bundle alone, as an auditor without the ledger would check it.
    let r = run([OsString::from("-bundle"), path.clone().into()]);
    r.assert_passed();
    r.line(
        "ok   key         session.bundle.json: no trusted key given: using the bundle's own key",
    );
    assert_eq!(r.count("ok   inclusion "), n, "{}", r.stdout);
    assert_eq!(r.count("ok   same-proof "), 0);

    // One byte of one record changed in the bundle: its proof no longer leads to the root.
    let mut altered = bundle.clone();
    let seq = altered.events[3].seq;
    altered.events[3].line = altered.events[3].line.replacen("agent", "agenT", 1);
    let bad = dir.path().join("altered.bundle.json");
    write_bundle(&altered, &bad).unwrap();
    let r = run([OsString::from("-bundle"), bad.into()]);
    r.assert_failed();
    assert_eq!(
        r.line("FAIL"),
        format!(
            "FAIL inclusion   altered.bundle.json seq {seq}: tlog.CheckRecord with the bundle's proof: invalid transparency proof"
        )
    );
    assert_eq!(r.count("ok   inclusion "), n - 1);
}

#[test]
fn a_modified_record_fails_the_root_of_every_checkpoint_covering_it() {
    let dir = fixture();
    let seq = 20;
    apply(dir.path(), Tamper::ModifyRecord { seq }).unwrap();

    let r = run([dir.path()]);
    r.assert_failed();
    let cps = checkpoints(dir.path());
    for (size, path) in &cps {
        let name = file_name(path);
        // The signatures still verify: the notes are intact, the log is not.
        r.line(&format!("ok   signature   {name}: "));
        if *size < seq {
            r.line(&format!("ok   root        {name}: "));
        } else {
            let line = r.line(&format!("FAIL root        {name}: "));
            assert!(
                line.contains(&format!(
                    "root mismatch: the checkpoint signs {}",
                    signed_root(path)
                )) && line.contains(&format!("the ledger's first {size} records is ")),
                "{line}"
            );
        }
    }
    // The record after the edited one no longer links to it.
    let chain = r.line("FAIL chain       ");
    assert!(
        chain.contains(&format!("record {}: prev_hash ", seq + 1)),
        "{chain}"
    );
    let failing = cps.iter().filter(|(s, _)| *s >= seq).count();
    assert!(failing >= 2);
    assert_eq!(r.count("FAIL"), failing + 1, "{}", r.stdout);
}

#[test]
fn an_altered_checkpoint_or_a_foreign_key_fails_the_signature() {
    let dir = fixture();
    let cps = checkpoints(dir.path());
    let name = file_name(&cps.last().unwrap().1);
    // `name+hash` of the vkey `name+hash+base64` (the base64 may contain '+').
    let vkey_text =
        std::fs::read_to_string(dir.path().join(KEY_DIR).join(VERIFIER_KEY_FILE)).unwrap();
    let mut parts = vkey_text.trim().splitn(3, '+');
    let (key_name, key_hash) = (parts.next().unwrap(), parts.next().unwrap());
    let key_id = format!("{key_name}+{key_hash}");

    // The newest checkpoint's root rewritten (what an attacker rewriting history would need).
    apply(dir.path(), Tamper::BadSignature).unwrap();
    let r = run([dir.path()]);
    r.assert_failed();
    assert_eq!(
        r.line("FAIL"),
        format!("FAIL signature   {name}: note.Open: invalid signature for key {key_id}")
    );
    assert_eq!(r.count("ok   signature "), cps.len() - 1);

    // The signature itself altered, in the first checkpoint.
    let first = &cps[0].1;
    let text = std::fs::read_to_string(first).unwrap();
    let at = text.rfind(' ').unwrap() + 21; // inside the Ed25519 signature, past the key id
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::set_permissions(first, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(first, bytes).unwrap();
    let r = run([dir.path()]);
    r.assert_failed();
    r.line(&format!(
        "FAIL signature   {}: note.Open: invalid signature for key {key_id}",
        file_name(first)
    ));
    assert_eq!(r.count("FAIL"), 2, "{}", r.stdout);

    // Intact notes under another key: no signature the verifier knows.
    let stranger = NoteSigner::generate(key_name).unwrap().verifier();
    let vkey = dir.path().join("stranger.vkey");
    std::fs::write(&vkey, format!("{}\n", stranger.to_vkey())).unwrap();
    let cp = &cps[1].1;
    let mut args: Vec<OsString> = vec![
        "-vkey".into(),
        vkey.into(),
        "-checkpoint".into(),
        cp.clone().into(),
    ];
    args.extend(
        list_segments(&dir.path().join(LEDGER_DIR))
            .unwrap()
            .into_iter()
            .map(|s| s.path.into_os_string()),
    );
    let r = run(args);
    r.assert_failed();
    assert_eq!(
        r.line("FAIL"),
        format!(
            "FAIL signature   {}: note.Open: note has no verifiable signatures",
            file_name(cp)
        )
    );
}

/// The base64 root line of a checkpoint note.
fn signed_root(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .nth(2)
        .unwrap()
        .to_string()
}
