//! Evidence bundles: one session's records, exported with everything an auditor needs to check
//! them on another machine, and nothing else of the ledger.
//!
//! This module owns the bundle format, [`export_session`] (build one from a data directory),
//! [`write_bundle`] (store it, mode 0600) and [`verify_bundle`] (check one with nothing but its
//! bytes and, ideally, a key the auditor trusts). The CLI only prints.
//!
//! # Format (`"format": "mcptrail-evidence-bundle v2"`)
//!
//! One JSON document:
//!
//! - `key`: the ledger's public checkpoint key (`name+id+base64`, as in `keys/checkpoint.vkey`);
//! - `checkpoint`: a signed checkpoint note (C2SP `tlog-checkpoint`), verbatim, covering at
//!   least the session's last record; `tree_size` repeats its size;
//! - `events`: every record of the session in seq order, each with `seq`, `line` — the exact
//!   stored line as a JSON string (lines are UTF-8 JSON, so the bytes round-trip) — and
//!   `proof`, its RFC 9162 inclusion proof (hex) against the checkpoint's root: leaf index
//!   `seq - 1`, leaf `SHA-256(0x00 ‖ body)` where the body is the line without its `mac`
//!   member, as the ledger's checkpoints define (v1 bundles hashed the whole line twice);
//! - `statement`: a note signed by the same key naming the session, the checkpoint and the
//!   seqs of all its records in it, so a record removed from (or added to) the bundle after
//!   export is detected;
//! - a summary for readers (`session_id`, `first_seq`, `last_seq`, `count`, `session_start`,
//!   `session_end`): unsigned, so the verifier recomputes it and reports any disagreement.
//!
//! # What a verified bundle proves
//!
//! Under the key used: each line is, byte for byte, the record at its seq in the log the
//! checkpoint signs; the records are exactly the ones the exporter listed for the session.
//! It does not prove that the key is the ledger's — a bundle carries its own key, so anyone
//! can make a self-consistent one; an auditor must compare the key with one obtained out of
//! band (`--key`) — nor that the exporter, who holds the signing key, listed every record of
//! the session (the session's `session.start` and `session.end` records bound it). MACs are
//! not checked (they need the seed); the inclusion proofs already bind every byte.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mcptrail_integrity::merkle::{empty_root, node_hash, verify_inclusion, Hash};
use mcptrail_integrity::note::open as open_note;
use mcptrail_integrity::{Checkpoint, NoteSigner, NoteVerifier};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    checkpoint_file_name, list_checkpoints, local_verifier, CHECKPOINT_DIR, KEY_DIR,
    SIGNER_KEY_FILE, VERIFIER_KEY_FILE,
};
use crate::record::record_hash;
use crate::{Ledger, LedgerConfig, LedgerError, LedgerReader, Verdict, LEDGER_DIR};

/// The `format` of the bundles this version writes and reads.
pub const BUNDLE_FORMAT: &str = "mcptrail-evidence-bundle v2";
/// First line of the signed statement (never a valid checkpoint: its next line is no size).
const STATEMENT_HEADER: &str = "mcptrail evidence bundle v1";
/// Above this many (failing events × events), failed proofs are not matched against the
/// other events' proofs to tell a swapped proof from a modified record.
const MATCH_BUDGET: usize = 1_000_000;

/// An evidence bundle: see the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// When the bundle was made (RFC 3339 UTC); informational.
    pub created: String,
    /// The session whose records these are.
    pub session_id: String,
    /// The public checkpoint key, `name+id+base64`.
    pub key: String,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
    /// Records the checkpoint covers.
    pub tree_size: u64,
    /// Seq of the session's first record.
    pub first_seq: u64,
    /// Seq of the session's last record.
    pub last_seq: u64,
    /// Number of records.
    pub count: u64,
    /// Whether the records include the session's `session.start`.
    pub session_start: bool,
    /// Whether the records include the session's `session.end`.
    pub session_end: bool,
    /// The signed list of the session's seqs (absent when the exporter had no signing key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// The records, in seq order.
    pub events: Vec<BundleEvent>,
}

/// One record of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvent {
    /// Its seq (leaf index + 1).
    pub seq: u64,
    /// The exact stored line, without its newline.
    pub line: String,
    /// Inclusion proof against the checkpoint's root, hex hashes from the leaf up.
    pub proof: Vec<String>,
}

impl Bundle {
    /// Read a bundle from its JSON bytes; refuses other formats and versions.
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, BundleError> {
        #[derive(Deserialize)]
        struct Probe {
            format: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::NotABundle(format!("not a JSON object ({e})")))?;
        match probe.format {
            Some(serde_json::Value::String(f)) if f == BUNDLE_FORMAT => {}
            Some(other) => {
                return Err(BundleError::UnknownFormat(match other {
                    serde_json::Value::String(s) => s,
                    v => v.to_string(),
                }))
            }
            None => return Err(BundleError::NotABundle("it has no `format` member".into())),
        }
        serde_json::from_slice(bytes).map_err(|e| BundleError::NotABundle(e.to_string()))
    }

    /// The bundle as pretty-printed JSON (what [`write_bundle`] stores).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a bundle always serialises");
        out.push(b'\n');
        out
    }
}

/// Why a bundle could not be made, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading the ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// There is no ledger in the data directory.
    #[error("no ledger in {0}")]
    NoLedger(PathBuf),
    /// No record of the ledger belongs to the session.
    #[error("session `{0}` has no records in the ledger")]
    NoSuchSession(String),
    /// The ledger has no public checkpoint key (it never signed a checkpoint).
    #[error("{0} does not exist: the ledger has never signed a checkpoint, so nothing can prove its records")]
    NoKey(PathBuf),
    /// No signed checkpoint covers the session's last record, and none could be signed.
    #[error(
        "no signed checkpoint covers seq {last_seq}, the session's last record (newest: {}); export where the ledger is writable, so that a fresh checkpoint can be signed",
        newest.map_or_else(|| "none".to_string(), |n| format!("{n} records"))
    )]
    NoCoveringCheckpoint {
        /// The session's last seq.
        last_seq: u64,
        /// Records covered by the newest checkpoint, if any.
        newest: Option<u64>,
    },
    /// The checkpoint to export does not verify against the ledger.
    #[error("checkpoint {path}: {reason}; run `mcptrail verify`")]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A ledger line cannot be exported (not an event, seq out of place, not UTF-8).
    #[error("ledger {segment} line {line}: {reason}; run `mcptrail verify`")]
    LedgerDamaged {
        /// The segment.
        segment: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The bundle file could not be written.
    #[error("cannot write the bundle to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an evidence bundle.
    #[error("not an mcptrail evidence bundle: {0}")]
    NotABundle(String),
    /// A bundle of another format or version.
    #[error("unknown bundle format `{0}`; this mcptrail reads `{BUNDLE_FORMAT}`")]
    UnknownFormat(String),
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Open the ledger with this configuration (its anchor directory, MAC seed path…) and sign
    /// a checkpoint covering every record first, so the bundle's checkpoint covers the
    /// session's newest record. `None`, or when the ledger cannot be written (a read-only
    /// copy): use the newest existing checkpoint that covers the session.
    pub sign_with: Option<LedgerConfig>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            sign_with: Some(LedgerConfig::default()),
        }
    }
}

/// What [`export_session_with`] made.
#[derive(Debug, Clone)]
pub struct Export {
    /// The bundle.
    pub bundle: Bundle,
    /// Whether the checkpoint covers the whole ledger as of the export (the writer signed it
    /// then, or one of exactly that size existed); `false`: the ledger could not be written and
    /// the newest checkpoint covering the session was used.
    pub fresh_checkpoint: bool,
    /// Things the person exporting should know (fallbacks taken).
    pub notices: Vec<String>,
}

/// Export the records of `session_id` (the exact id) from the ledger in `data_dir`, signing
/// a fresh checkpoint first when the ledger can be written.
pub fn export_session(data_dir: &Path, session_id: &str) -> Result<Bundle, BundleError> {
    export_session_with(data_dir, session_id, &ExportOptions::default()).map(|e| e.bundle)
}

/// [`export_session`] with options.
pub fn export_session_with(
    data_dir: &Path,
    session_id: &str,
    opts: &ExportOptions,
) -> Result<Export, BundleError> {
    if !data_dir.join(LEDGER_DIR).is_dir() {
        return Err(BundleError::NoLedger(data_dir.to_path_buf()));
    }
    let mut notices = Vec::new();
    let mut fresh = None;
    if let Some(cfg) = &opts.sign_with {
        match Ledger::open(data_dir, cfg.clone()).and_then(|mut l| l.checkpoint_now()) {
            Ok(size) => fresh = size,
            Err(e) => notices.push(format!(
                "could not sign a checkpoint of the whole ledger ({e}); using the newest signed checkpoint that covers the session"
            )),
        }
    }
    let key_path = data_dir.join(KEY_DIR).join(VERIFIER_KEY_FILE);
    let key = local_verifier(data_dir)?.ok_or(BundleError::NoKey(key_path))?;

    let scan = scan(data_dir, session_id, fresh)?;
    let Some(last_seq) = scan.events.last().map(|e| e.seq) else {
        return Err(BundleError::NoSuchSession(session_id.to_string()));
    };
    let removed = scan.base.as_ref().map_or(0, |b| b.last_seq);
    let records = removed + scan.leaves.len() as u64;
    let cp_dir = data_dir.join(CHECKPOINT_DIR);
    let (size, path) = match fresh {
        Some(size) => (size, cp_dir.join(checkpoint_file_name(size))),
        None => {
            let all = list_checkpoints(&cp_dir)?;
            let newest = all.last().map(|c| c.0);
            all.into_iter()
                .rev()
                .find(|(size, _)| (last_seq..=records).contains(size))
                .ok_or(BundleError::NoCoveringCheckpoint { last_seq, newest })?
        }
    };
    let bad = |reason: String| BundleError::BadCheckpoint {
        path: path.clone(),
        reason,
    };
    if size > records {
        return Err(bad(format!(
            "signed at {size} records but the ledger holds {records}"
        )));
    }
    let note = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let cp = open_note(&note, std::slice::from_ref(&key))
        .and_then(Checkpoint::parse)
        .map_err(|e| bad(e.to_string()))?;
    if cp.origin != key.name() || cp.size != size {
        return Err(bad(format!(
            "it is for {} at {} records, not this log at {size}",
            cp.origin, cp.size
        )));
    }
    if size < removed {
        return Err(bad(format!(
            "signed at {size} records, before records 1..={removed} were removed by retention"
        )));
    }
    let mut leaves = scan.leaves;
    leaves.truncate((size - removed) as usize);
    let tree = match &scan.base {
        Some(b) => Tree::with_base(&b.tree(), leaves),
        None => Tree::new(leaves),
    };
    if tree.root() != cp.root {
        return Err(bad(format!("records 1..={size} do not hash to its root")));
    }

    let seqs: Vec<u64> = scan.events.iter().map(|e| e.seq).collect();
    let statement = match read_signer(data_dir, &key) {
        Ok(signer) => {
            let text = statement_text(session_id, size, &cp.root, &seqs);
            Some(signer.sign(&text).map_err(|e| {
                BundleError::Ledger(LedgerError::Key {
                    path: data_dir.join(KEY_DIR).join(SIGNER_KEY_FILE),
                    reason: e.to_string(),
                })
            })?)
        }
        Err(why) => {
            notices.push(format!(
                "the list of the session's records is not signed ({why}): a verifier cannot tell whether records were removed from the bundle, and reports it as not verifiable"
            ));
            None
        }
    };
    let events = scan
        .events
        .into_iter()
        .map(|e| BundleEvent {
            seq: e.seq,
            proof: tree.proof(e.seq - 1).iter().map(hex::encode).collect(),
            line: e.line,
        })
        .collect::<Vec<_>>();
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_string(),
        created: mcptrail_event::now_rfc3339_nanos(),
        session_id: session_id.to_string(),
        key: key.to_vkey(),
        checkpoint: note,
        tree_size: size,
        first_seq: seqs[0],
        last_seq,
        count: seqs.len() as u64,
        session_start: scan.start,
        session_end: scan.end,
        statement,
        events,
    };
    Ok(Export {
        bundle,
        fresh_checkpoint: fresh.is_some(),
        notices,
    })
}

/// Store `bundle` at `path`, readable by the owner only (0600): written to a temporary file
/// next to it and renamed, so there is never a partial bundle under that name.
pub fn write_bundle(bundle: &Bundle, path: &Path) -> Result<(), BundleError> {
    let err = |source| BundleError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::other("not a file name")))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&bundle.to_json())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// A record of the session, as exported.
struct Found {
    seq: u64,
    line: String,
}

struct Scan {
    /// The newest tombstone: records `1..=base.last_seq` were removed by retention.
    base: Option<crate::Tombstone>,
    /// Merkle leaves of the records after those, up to the limit.
    leaves: Vec<Hash>,
    events: Vec<Found>,
    start: bool,
    end: bool,
}

/// The fields of a line the bundle code looks at (the rest is carried verbatim).
#[derive(Deserialize)]
struct LineHead {
    seq: u64,
    #[serde(default)]
    session_id: Option<String>,
    kind: String,
}

/// Read records `1..=limit` (all without a limit): every leaf, and the session's lines.
fn scan(data_dir: &Path, session_id: &str, limit: Option<u64>) -> Result<Scan, BundleError> {
    let base = crate::tombstone::removed_through(data_dir)?;
    let removed = base.as_ref().map_or(0, |b| b.last_seq);
    let mut out = Scan {
        base,
        leaves: Vec::new(),
        events: Vec::new(),
        start: false,
        end: false,
    };
    for rec in LedgerReader::open(data_dir, removed + 1)? {
        let rec = rec?;
        let expected = removed + out.leaves.len() as u64 + 1;
        if limit.is_some_and(|l| expected > l) {
            break;
        }
        let damaged = |reason: String| BundleError::LedgerDamaged {
            segment: rec.segment.clone(),
            line: rec.line_no,
            reason,
        };
        let head: LineHead = serde_json::from_slice(&rec.line)
            .map_err(|e| damaged(format!("not a valid event ({e})")))?;
        if head.seq <= removed {
            continue; // a removed segment still there (an interrupted removal)
        }
        if head.seq != expected {
            return Err(damaged(format!(
                "seq {} where {expected} was expected",
                head.seq
            )));
        }
        out.leaves.push(record_hash(&rec.line));
        if head.session_id.as_deref() == Some(session_id) {
            match head.kind.as_str() {
                "session.start" => out.start = true,
                "session.end" => out.end = true,
                _ => {}
            }
            let line = String::from_utf8(rec.line.clone())
                .map_err(|_| damaged("not UTF-8".to_string()))?;
            out.events.push(Found {
                seq: head.seq,
                line,
            });
        }
    }
    Ok(out)
}

/// The ledger's signing key, read only (never created), if it matches `key`.
fn read_signer(data_dir: &Path, key: &NoteVerifier) -> Result<NoteSigner, String> {
    let path = data_dir.join(KEY_DIR).join(SIGNER_KEY_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let signer =
        NoteSigner::from_skey(text.trim()).map_err(|e| format!("{}: {e}", path.display()))?;
    if signer.verifier() != *key {
        return Err(format!(
            "{} does not match the public key {VERIFIER_KEY_FILE}",
            path.display()
        ));
    }
    Ok(signer)
}

/// The RFC 9162 tree over a fixed list of leaves, all levels kept: each proof in O(log n).
///
/// Level `j + 1` pairs up level `j`; an odd last node is carried up unchanged. That is the
/// RFC 9162 tree (split at the largest power of two below `n`), and the sibling of a node at
/// each level, where it has one, is the RFC's audit path.
///
/// After retention removed records `0..P` (leaf indices), a level keeps only its nodes from
/// index `(P >> j) & !1` on: the nodes wholly inside the removed part are needed only where
/// they are the left sibling of a kept one, and those are exactly the subtree roots of the
/// removed prefix that its tombstone carries (one per set bit of `P`).
pub(crate) struct Tree {
    /// (index of the first node kept, the nodes from there, number of nodes at the level).
    levels: Vec<(u64, Vec<Hash>, u64)>,
}

impl Tree {
    fn new(leaves: Vec<Hash>) -> Tree {
        Tree::with_base(&mcptrail_integrity::merkle::Frontier::new(), leaves)
    }

    /// The tree of `base.size()` removed leaves (known by their subtree roots) followed by
    /// `leaves`.
    pub(crate) fn with_base(
        base: &mcptrail_integrity::merkle::Frontier,
        leaves: Vec<Hash>,
    ) -> Tree {
        let p = base.size();
        // (height, root) of each subtree of the removed prefix.
        let heights = (0..u64::BITS).rev().filter(|b| p >> b & 1 == 1);
        let roots: Vec<(u32, Hash)> = heights.zip(base.subtree_roots().copied()).collect();
        let frontier_at = |j: u32| roots.iter().find(|(h, _)| *h == j).map(|(_, r)| *r);
        let n = p + leaves.len() as u64;
        let start0 = p & !1;
        let mut level0 = Vec::with_capacity(leaves.len() + 1);
        if let Some(r) = frontier_at(0) {
            level0.push(r);
        }
        level0.extend(leaves);
        let mut levels = vec![(start0, level0, n)];
        let mut j = 0u32;
        loop {
            let (start, nodes, len) = levels.last().expect("never empty");
            if *len <= 1 {
                break;
            }
            let get = |i: u64| nodes.get((i - start) as usize).copied();
            let next_len = len.div_ceil(2);
            let next_start = (p >> (j + 1)) & !1;
            let mut next = Vec::new();
            for i in next_start..next_len {
                let is_frontier = p >> (j + 1) & 1 == 1 && i + 1 == p >> (j + 1);
                let node = match (is_frontier, frontier_at(j + 1)) {
                    (true, Some(r)) => r,
                    _ => {
                        let l = get(2 * i).expect("a kept node has its children");
                        match (2 * i + 1 < *len).then(|| get(2 * i + 1)).flatten() {
                            Some(r) => node_hash(&l, &r),
                            None => l,
                        }
                    }
                };
                next.push(node);
            }
            levels.push((next_start, next, next_len));
            j += 1;
        }
        Tree { levels }
    }

    pub(crate) fn root(&self) -> Hash {
        match self.levels.last() {
            Some((_, nodes, 1)) => nodes.first().copied().unwrap_or_else(empty_root),
            _ => empty_root(),
        }
    }

    /// The hash of the RFC 9162 node over leaves `start..end` (a node of this tree, not wholly
    /// inside a removed prefix unless it is one of its subtree roots).
    fn node(&self, start: u64, end: u64) -> Hash {
        let width = end - start;
        let j = if width <= 1 {
            0
        } else {
            u64::BITS - (width - 1).leading_zeros()
        } as usize;
        let (first, nodes, _) = &self.levels[j.min(self.levels.len() - 1)];
        nodes[((start >> j) - first) as usize]
    }

    /// The RFC 9162 consistency proof from the tree of the first `old_size` leaves to this
    /// one (`old_size` at least the removed prefix, at most the size).
    pub(crate) fn consistency(&self, old_size: u64) -> Vec<Hash> {
        let n = self.levels[0].2;
        let mut out = Vec::new();
        if old_size > 0 && old_size < n {
            self.subproof(old_size, 0, n, true, &mut out);
        }
        out
    }

    /// RFC 9162 §2.1.4.1 `SUBPROOF(m, D[start:end], b)`.
    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.node(start, end));
            }
            return;
        }
        let k = 1u64 << (u64::BITS - 1 - (n - 1).leading_zeros());
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.node(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.node(start, start + k));
        }
    }

    /// The audit path of leaf `index` (must be in the tree, after any removed prefix).
    fn proof(&self, mut index: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        for (start, nodes, len) in &self.levels[..self.levels.len() - 1] {
            let sib = index ^ 1;
            if sib < *len {
                if let Some(h) = sib.checked_sub(*start).and_then(|k| nodes.get(k as usize)) {
                    out.push(*h);
                }
            }
            index >>= 1;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The signed statement
// ---------------------------------------------------------------------------------------------

/// What the statement signs.
#[derive(Debug, PartialEq, Eq)]
struct Statement {
    session_id: String,
    size: u64,
    root: Hash,
    seqs: Vec<u64>,
}

fn statement_text(session_id: &str, size: u64, root: &Hash, seqs: &[u64]) -> String {
    let mut ranges = String::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        if !ranges.is_empty() {
            ranges.push(',');
        }
        ranges.push_str(&seqs[i].to_string());
        if j > i {
            ranges.push('-');
            ranges.push_str(&seqs[j].to_string());
        }
        i = j + 1;
    }
    format!(
        "{STATEMENT_HEADER}\nsession {}\ncheckpoint {size} {}\nrecords {} {ranges}\n",
        serde_json::to_string(session_id).expect("a string serialises"),
        hex::encode(root),
        seqs.len(),
    )
}

fn parse_statement(text: &str) -> Result<Statement, &'static str> {
    let mut lines = text
        .strip_suffix('\n')
        .ok_or("no final newline")?
        .split('\n');
    if lines.next() != Some(STATEMENT_HEADER) {
        return Err("not an evidence bundle statement");
    }
    let session_id = lines
        .next()
        .and_then(|l| l.strip_prefix("session "))
        .and_then(|s| serde_json::from_str::<String>(s).ok())
        .ok_or("no session line")?;
    let (size, root) = lines
        .next()
        .and_then(|l| l.strip_prefix("checkpoint "))
        .and_then(|l| l.split_once(' '))
        .ok_or("no checkpoint line")?;
    let size = size.parse().map_err(|_| "bad checkpoint size")?;
    let root = hex::decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or("bad checkpoint root")?;
    let (count, ranges) = lines
        .next()
        .and_then(|l| l.strip_prefix("records "))
        .and_then(|l| l.split_once(' '))
        .ok_or("no records line")?;
    let count: usize = count.parse().map_err(|_| "bad record count")?;
    let mut seqs: Vec<u64> = Vec::new();
    for range in ranges.split(',') {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (u64, u64) = (
            a.parse().map_err(|_| "bad seq range")?,
            b.parse().map_err(|_| "bad seq range")?,
        );
        if a > b || seqs.last().is_some_and(|&l| l >= a) || (b - a) as usize >= count {
            return Err("bad seq range");
        }
        seqs.extend(a..=b);
        if seqs.len() > count {
            return Err("more seqs than records");
        }
    }
    if seqs.len() != count || lines.next().is_some() {
        return Err("the record count does not match the seqs");
    }
    Ok(Statement {
        session_id,
        size,
        root,
        seqs,
    })
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Which key a bundle was checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The key inside the bundle: proves consistency, not origin.
    Bundled,
    /// A key the auditor supplied.
    Trusted,
}

/// One thing wrong with a bundle. `event` is the 1-based position in the bundle's `events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BundleProblem {
    /// The bundled key does not parse.
    KeyInvalid {
        /// Why.
        reason: String,
    },
    /// The bundled key is not the trusted one: the bundle claims another log.
    KeyMismatch {
        /// The key in the bundle.
        bundled: String,
        /// The key trusted.
        trusted: String,
    },
    /// The checkpoint is not a checkpoint of this log signed by the key.
    CheckpointInvalid {
        /// Why.
        reason: String,
    },
    /// The statement is not signed by the key, or is not a statement.
    StatementInvalid {
        /// Why.
        reason: String,
    },
    /// The signed statement is about another session or checkpoint than the bundle.
    StatementMismatch {
        /// What differs.
        reason: String,
    },
    /// Records the signed statement lists are not in the bundle: removed after export.
    RecordsMissing {
        /// Their seqs.
        seqs: Vec<u64>,
    },
    /// Records in the bundle the signed statement does not list: added after export.
    RecordsAdded {
        /// Their seqs.
        seqs: Vec<u64>,
    },
    /// A line is not an event.
    Unparseable {
        /// Position in the bundle.
        event: usize,
        /// The seq listed for it.
        seq: u64,
        /// Parser message.
        error: String,
    },
    /// The seq listed for a line is not the seq inside it.
    SeqMismatch {
        /// Position in the bundle.
        event: usize,
        /// The seq listed.
        listed: u64,
        /// The seq in the line.
        line_seq: u64,
    },
    /// A record of another session.
    ForeignEvent {
        /// Position in the bundle.
        event: usize,
        /// Its seq.
        seq: u64,
        /// Its session id.
        session_id: Option<String>,
    },
    /// Seqs do not strictly increase.
    OutOfOrder {
        /// Position in the bundle.
        event: usize,
        /// Its seq.
        seq: u64,
        /// The seq before it.
        previous: u64,
    },
    /// A seq outside the records the checkpoint covers.
    NotCovered {
        /// Position in the bundle.
        event: usize,
        /// Its seq.
        seq: u64,
        /// Records the checkpoint covers.
        size: u64,
    },
    /// A proof that is not a list of 32-byte hex hashes.
    BadProof {
        /// Position in the bundle.
        event: usize,
        /// Its seq.
        seq: u64,
    },
    /// The line is not the record at its seq under the signed root: it was modified (or the
    /// seq changed).
    NotIncluded {
        /// Position in the bundle.
        event: usize,
        /// Its seq.
        seq: u64,
    },
    /// The line is the record at its seq, but its proof is another event's: proofs were
    /// swapped or replaced.
    ProofMismatch {
        /// Position in the bundle.
        event: usize,
        /// Its seq.
        seq: u64,
    },
    /// The unsigned summary disagrees with the records or the checkpoint.
    SummaryMismatch {
        /// The member.
        field: &'static str,
        /// What the bundle says.
        stated: String,
        /// What the records say.
        actual: String,
    },
}

impl BundleProblem {
    /// The tamper class, as the JSON report names it.
    pub fn class(&self) -> &'static str {
        match self {
            BundleProblem::KeyInvalid { .. } => "bad_key",
            BundleProblem::KeyMismatch { .. } => "key_mismatch",
            BundleProblem::CheckpointInvalid { .. } | BundleProblem::StatementInvalid { .. } => {
                "bad_signature"
            }
            BundleProblem::StatementMismatch { .. } => "statement_mismatch",
            BundleProblem::RecordsMissing { .. } => "deleted_record",
            BundleProblem::RecordsAdded { .. } => "inserted_record",
            BundleProblem::Unparseable { .. } => "unparseable",
            BundleProblem::SeqMismatch { .. } => "seq_mismatch",
            BundleProblem::ForeignEvent { .. } => "foreign_event",
            BundleProblem::OutOfOrder { .. } => "inserted_or_reordered",
            BundleProblem::NotCovered { .. } => "not_covered",
            BundleProblem::BadProof { .. } => "bad_proof",
            BundleProblem::NotIncluded { .. } => "modified_record",
            BundleProblem::ProofMismatch { .. } => "proof_mismatch",
            BundleProblem::SummaryMismatch { .. } => "summary_mismatch",
        }
    }
}

impl std::fmt::Display for BundleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleProblem::KeyInvalid { reason } => write!(f, "the bundled key is not a key ({reason})"),
            BundleProblem::KeyMismatch { bundled, trusted } => write!(
                f,
                "the bundled key {bundled} is not the trusted key {trusted} — the bundle claims to come from another log"
            ),
            BundleProblem::CheckpointInvalid { reason } => write!(
                f,
                "the checkpoint is not a checkpoint of this log signed by the key ({reason}) — it was altered or forged"
            ),
            BundleProblem::StatementInvalid { reason } => write!(
                f,
                "the signed list of records is not valid ({reason}) — it was altered or forged"
            ),
            BundleProblem::StatementMismatch { reason } => {
                write!(f, "the signed list of records {reason}")
            }
            BundleProblem::RecordsMissing { seqs } => write!(
                f,
                "records seq {} are signed as the session's but missing from the bundle — removed after export",
                list(seqs)
            ),
            BundleProblem::RecordsAdded { seqs } => write!(
                f,
                "records seq {} are in the bundle but not in the signed list — added after export",
                list(seqs)
            ),
            BundleProblem::Unparseable { event, seq, error } => {
                write!(f, "event #{event} (seq {seq}): not a valid event ({error})")
            }
            BundleProblem::SeqMismatch { event, listed, line_seq } => write!(
                f,
                "event #{event}: listed as seq {listed} but the record says seq {line_seq}"
            ),
            BundleProblem::ForeignEvent { event, seq, session_id } => write!(
                f,
                "event #{event} (seq {seq}) belongs to {} — not this session's",
                session_id
                    .as_deref()
                    .map_or_else(|| "no session".to_string(), |s| format!("session {s}"))
            ),
            BundleProblem::OutOfOrder { event, seq, previous } => write!(
                f,
                "event #{event}: seq {seq} after seq {previous} — records duplicated or reordered"
            ),
            BundleProblem::NotCovered { event, seq, size } => write!(
                f,
                "event #{event}: seq {seq} is outside the {size} records the checkpoint covers"
            ),
            BundleProblem::BadProof { event, seq } => write!(
                f,
                "event #{event} (seq {seq}): the inclusion proof is not a list of hex SHA-256 hashes"
            ),
            BundleProblem::NotIncluded { event, seq } => write!(
                f,
                "event #{event} (seq {seq}): the record is not the one the signed checkpoint holds at seq {seq} — it was modified"
            ),
            BundleProblem::ProofMismatch { event, seq } => write!(
                f,
                "event #{event} (seq {seq}): the record is intact but its inclusion proof belongs to another record — proofs were swapped"
            ),
            BundleProblem::SummaryMismatch { field, stated, actual } => write!(
                f,
                "the bundle says {field} = {stated} but its records say {actual} — the bundle was edited"
            ),
        }
    }
}

fn list(seqs: &[u64]) -> String {
    const SHOWN: usize = 20;
    let mut s = seqs
        .iter()
        .take(SHOWN)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if seqs.len() > SHOWN {
        s.push_str(&format!(" and {} more", seqs.len() - SHOWN));
    }
    s
}

/// Result of [`verify_bundle`].
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    /// The session the bundle is about.
    pub session_id: String,
    /// Records in the bundle.
    pub events: u64,
    /// First and last seq listed.
    pub first_seq: Option<u64>,
    /// Last seq listed.
    pub last_seq: Option<u64>,
    /// Seq of the session's `session.start` record, when in the bundle.
    pub session_start: Option<u64>,
    /// Seq of the session's `session.end` record, when in the bundle.
    pub session_end: Option<u64>,
    /// Records the verified checkpoint covers.
    pub checkpoint_size: Option<u64>,
    /// Name of the key the checkpoint was checked with.
    pub key_name: Option<String>,
    /// Where that key came from.
    pub key_source: KeySource,
    /// Records whose inclusion proof verified against the signed root.
    pub inclusions_verified: u64,
    /// Whether the signed list of records verified and matches the bundle.
    pub record_list_verified: bool,
    /// Integrity problems; empty means the bundle verifies.
    pub problems: Vec<BundleProblem>,
    /// Things an auditor should know that are not failures.
    pub notices: Vec<String>,
    /// What could not be checked and why (makes the verdict "cannot verify").
    pub unchecked: Vec<String>,
    /// The overall result.
    pub verdict: Verdict,
}

impl BundleReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as JSON, each problem with its `class` and `message`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a report always serialises");
        if let Some(problems) = v.get_mut("problems").and_then(|p| p.as_array_mut()) {
            for (p, problem) in problems.iter_mut().zip(&self.problems) {
                if let Some(obj) = p.as_object_mut() {
                    obj.insert("class".into(), problem.class().into());
                    obj.insert("message".into(), problem.to_string().into());
                }
            }
        }
        v
    }
}

/// Check `bundle` with nothing else: the checkpoint's signature by `trusted` (the key the
/// auditor was given; the bundled key must then be the same) or else by the bundled key, every
/// record's inclusion at its seq under the signed root, that every record is the session's and
/// seqs strictly increase, the signed list of records, and the unsigned summary.
pub fn verify_bundle(bundle: &Bundle, trusted: Option<&NoteVerifier>) -> BundleReport {
    let mut r = BundleReport {
        session_id: bundle.session_id.clone(),
        events: bundle.events.len() as u64,
        first_seq: bundle.events.first().map(|e| e.seq),
        last_seq: bundle.events.last().map(|e| e.seq),
        session_start: None,
        session_end: None,
        checkpoint_size: None,
        key_name: None,
        key_source: if trusted.is_some() {
            KeySource::Trusted
        } else {
            KeySource::Bundled
        },
        inclusions_verified: 0,
        record_list_verified: false,
        problems: Vec::new(),
        notices: Vec::new(),
        unchecked: Vec::new(),
        verdict: Verdict::Intact,
    };

    // The key.
    let bundled = NoteVerifier::from_vkey(bundle.key.trim());
    let key = match (trusted, bundled) {
        (Some(t), Ok(b)) => {
            if b != *t {
                r.problems.push(BundleProblem::KeyMismatch {
                    bundled: b.to_vkey(),
                    trusted: t.to_vkey(),
                });
            }
            Some(t.clone())
        }
        (Some(t), Err(e)) => {
            r.problems.push(BundleProblem::KeyInvalid {
                reason: e.to_string(),
            });
            Some(t.clone())
        }
        (None, Ok(b)) => {
            r.notices.push(format!(
                "checked with the key inside the bundle ({}): that proves the bundle is consistent, not where it comes from — compare that key with the ledger's key obtained independently, or verify with --key VKEY|FILE",
                b.to_vkey()
            ));
            Some(b)
        }
        (None, Err(e)) => {
            r.problems.push(BundleProblem::KeyInvalid {
                reason: e.to_string(),
            });
            None
        }
    };
    r.key_name = key.as_ref().map(|k| k.name().to_string());

    // The checkpoint.
    let cp = key.as_ref().and_then(|key| {
        let checked = open_note(&bundle.checkpoint, std::slice::from_ref(key))
            .and_then(Checkpoint::parse)
            .map_err(|e| e.to_string())
            .and_then(|cp| {
                if cp.origin == key.name() {
                    Ok(cp)
                } else {
                    Err(format!(
                        "origin {} is not the key's log {}",
                        cp.origin,
                        key.name()
                    ))
                }
            });
        match checked {
            Ok(cp) => Some(cp),
            Err(reason) => {
                r.problems.push(BundleProblem::CheckpointInvalid { reason });
                None
            }
        }
    });
    r.checkpoint_size = cp.as_ref().map(|c| c.size);
    if let Some(cp) = &cp {
        if bundle.tree_size != cp.size {
            r.problems.push(BundleProblem::SummaryMismatch {
                field: "tree_size",
                stated: bundle.tree_size.to_string(),
                actual: cp.size.to_string(),
            });
        }
    } else {
        r.notices.push(
            "without an authentic checkpoint, no record's inclusion in the log can be checked"
                .into(),
        );
    }

    // The records.
    let mut proofs: Vec<Option<Vec<Hash>>> = Vec::with_capacity(bundle.events.len());
    let mut leaves: Vec<Hash> = Vec::with_capacity(bundle.events.len());
    let mut failing = Vec::new();
    let mut previous: Option<u64> = None;
    for (i, ev) in bundle.events.iter().enumerate() {
        let event = i + 1;
        let seq = ev.seq;
        match serde_json::from_str::<LineHead>(&ev.line) {
            Err(e) => r.problems.push(BundleProblem::Unparseable {
                event,
                seq,
                error: e.to_string(),
            }),
            Ok(head) => {
                if head.seq != seq {
                    r.problems.push(BundleProblem::SeqMismatch {
                        event,
                        listed: seq,
                        line_seq: head.seq,
                    });
                }
                if head.session_id.as_deref() != Some(bundle.session_id.as_str()) {
                    r.problems.push(BundleProblem::ForeignEvent {
                        event,
                        seq,
                        session_id: head.session_id,
                    });
                } else {
                    match head.kind.as_str() {
                        "session.start" => r.session_start = r.session_start.or(Some(seq)),
                        "session.end" => r.session_end = r.session_end.or(Some(seq)),
                        _ => {}
                    }
                }
            }
        }
        if let Some(p) = previous.filter(|&p| seq <= p) {
            r.problems.push(BundleProblem::OutOfOrder {
                event,
                seq,
                previous: p,
            });
        }
        previous = Some(seq);
        let proof = ev
            .proof
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| <Hash>::try_from(b).ok()))
            .collect::<Option<Vec<Hash>>>();
        if proof.is_none() {
            r.problems.push(BundleProblem::BadProof { event, seq });
        }
        let leaf = record_hash(ev.line.as_bytes());
        leaves.push(leaf);
        if let Some(cp) = &cp {
            if seq == 0 || seq > cp.size {
                r.problems.push(BundleProblem::NotCovered {
                    event,
                    seq,
                    size: cp.size,
                });
            } else if let Some(p) = &proof {
                if verify_inclusion(&leaf, seq - 1, cp.size, p, &cp.root).is_ok() {
                    r.inclusions_verified += 1;
                } else {
                    failing.push(i);
                }
            }
        }
        proofs.push(proof);
    }
    // A record that fails with its own proof but verifies with another event's proof is
    // intact: only the proofs were tampered with.
    if let Some(cp) = &cp {
        let try_others = failing.len().saturating_mul(proofs.len()) <= MATCH_BUDGET;
        for i in failing {
            let seq = bundle.events[i].seq;
            let event = i + 1;
            let intact = try_others
                && proofs.iter().enumerate().any(|(j, p)| {
                    j != i
                        && p.as_ref().is_some_and(|p| {
                            verify_inclusion(&leaves[i], seq - 1, cp.size, p, &cp.root).is_ok()
                        })
                });
            r.problems.push(if intact {
                BundleProblem::ProofMismatch { event, seq }
            } else {
                BundleProblem::NotIncluded { event, seq }
            });
        }
    }

    check_statement(bundle, key.as_ref(), cp.as_ref(), &mut r);
    check_summary(bundle, &mut r);
    r.verdict = if !r.problems.is_empty() {
        Verdict::Tampered
    } else if !r.unchecked.is_empty() {
        Verdict::CannotVerify
    } else {
        Verdict::Intact
    };
    r
}

fn check_statement(
    bundle: &Bundle,
    key: Option<&NoteVerifier>,
    cp: Option<&Checkpoint>,
    r: &mut BundleReport,
) {
    let Some(note) = &bundle.statement else {
        r.unchecked.push(
            "the bundle carries no signed list of the session's records (it was exported without the signing key): records removed from it after export would go unnoticed"
                .into(),
        );
        return;
    };
    let Some(key) = key else { return };
    let statement = match open_note(note, std::slice::from_ref(key))
        .map_err(|e| e.to_string())
        .and_then(|text| parse_statement(text).map_err(str::to_string))
    {
        Ok(s) => s,
        Err(reason) => {
            r.problems.push(BundleProblem::StatementInvalid { reason });
            return;
        }
    };
    let mut consistent = true;
    if statement.session_id != bundle.session_id {
        consistent = false;
        r.problems.push(BundleProblem::StatementMismatch {
            reason: format!(
                "is for session {}, not {}",
                statement.session_id, bundle.session_id
            ),
        });
    }
    if let Some(cp) = cp {
        if statement.size != cp.size || statement.root != cp.root {
            consistent = false;
            r.problems.push(BundleProblem::StatementMismatch {
                reason: format!(
                    "is under the checkpoint of {} records, not the bundle's of {}",
                    statement.size, cp.size
                ),
            });
        }
    }
    let signed: BTreeSet<u64> = statement.seqs.iter().copied().collect();
    let listed: BTreeSet<u64> = bundle.events.iter().map(|e| e.seq).collect();
    let missing: Vec<u64> = signed.difference(&listed).copied().collect();
    let added: Vec<u64> = listed.difference(&signed).copied().collect();
    if !missing.is_empty() {
        consistent = false;
        r.problems
            .push(BundleProblem::RecordsMissing { seqs: missing });
    }
    if !added.is_empty() {
        consistent = false;
        r.problems.push(BundleProblem::RecordsAdded { seqs: added });
    }
    r.record_list_verified = consistent && cp.is_some();
}

fn check_summary(bundle: &Bundle, r: &mut BundleReport) {
    let mut check = |field: &'static str, stated: String, actual: String| {
        if stated != actual {
            r.problems.push(BundleProblem::SummaryMismatch {
                field,
                stated,
                actual,
            });
        }
    };
    let show = |s: Option<u64>| s.map_or_else(|| "none".to_string(), |s| s.to_string());
    check(
        "count",
        bundle.count.to_string(),
        bundle.events.len().to_string(),
    );
    check(
        "first_seq",
        bundle.first_seq.to_string(),
        show(bundle.events.first().map(|e| e.seq)),
    );
    check(
        "last_seq",
        bundle.last_seq.to_string(),
        show(bundle.events.last().map(|e| e.seq)),
    );
    check(
        "session_start",
        bundle.session_start.to_string(),
        r.session_start.is_some().to_string(),
    );
    check(
        "session_end",
        bundle.session_end.to_string(),
        r.session_end.is_some().to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptrail_integrity::merkle::{inclusion_proof, leaf_hash, root};

    #[test]
    fn tree_matches_rfc9162() {
        for n in 0u64..=70 {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let tree = Tree::new(leaves.clone());
            assert_eq!(tree.root(), root(&leaves), "root of {n}");
            for i in 0..n {
                let p = tree.proof(i);
                assert_eq!(p, inclusion_proof(&leaves, i).unwrap(), "proof {i} of {n}");
                verify_inclusion(&leaves[i as usize], i, n, &p, &tree.root()).unwrap();
            }
        }
    }

    #[test]
    fn tree_after_a_removed_prefix_matches_rfc9162() {
        use mcptrail_integrity::merkle::Frontier;
        for n in 1u64..=40 {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            for p in 0..=n {
                let mut base = Frontier::new();
                for l in &leaves[..p as usize] {
                    base.push(*l);
                }
                let tree = Tree::with_base(&base, leaves[p as usize..].to_vec());
                assert_eq!(tree.root(), root(&leaves), "root of {n} after {p} removed");
                for i in p..n {
                    let proof = tree.proof(i);
                    assert_eq!(
                        proof,
                        inclusion_proof(&leaves, i).unwrap(),
                        "proof {i} of {n} after {p} removed"
                    );
                }
            }
        }
    }

    #[test]
    fn consistency_after_a_removed_prefix_matches_rfc9162() {
        use mcptrail_integrity::merkle::{consistency_proof, verify_consistency, Frontier};
        for n in 2u64..=34 {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            for p in 0..n {
                let mut base = Frontier::new();
                for l in &leaves[..p as usize] {
                    base.push(*l);
                }
                let tree = Tree::with_base(&base, leaves[p as usize..].to_vec());
                for m in p.max(1)..n {
                    let proof = tree.consistency(m);
                    assert_eq!(
                        proof,
                        consistency_proof(&leaves, m).unwrap(),
                        "{m}->{n} after {p}"
                    );
                    verify_consistency(m, n, &root(&leaves[..m as usize]), &tree.root(), &proof)
                        .unwrap();
                }
            }
        }
    }

    #[test]
    fn statement_round_trips() {
        let root = [7u8; 32];
        for seqs in [
            vec![1],
            vec![1, 2, 3, 7, 9, 10, 20],
            vec![4, 6, 8],
            (1..=100).collect(),
        ] {
            let text = statement_text("s\"é\u{2028}", 120, &root, &seqs);
            assert!(Checkpoint::parse(&text).is_err(), "never a checkpoint");
            assert_eq!(
                parse_statement(&text).unwrap(),
                Statement {
                    session_id: "s\"é\u{2028}".into(),
                    size: 120,
                    root,
                    seqs,
                }
            );
        }
        let t = statement_text("s", 9, &root, &[1, 2, 3]);
        assert!(parse_statement(&t.replace("records 3", "records 2")).is_err());
        assert!(parse_statement(&t.replace("1-3", "3-1")).is_err());
        assert!(parse_statement(&t.replace("1-3", "1-3,2")).is_err());
    }
}
