//! Removing the oldest sealed segments (the retention engine's one write to the ledger
//! directory besides appends): check each segment, sign its tombstone, delete it — under the
//! writer lock, one segment at a time, oldest first.
//!
//! The order of the steps is what makes a crash harmless: the tombstone is durable (file and
//! directory fsynced) before the segment is deleted, so a crash between the two leaves a
//! segment that `verify` finds identical to what its tombstone signed (a notice, not a
//! problem), and the next removal deletes it. A segment is only tombstoned when its records
//! chain on from the previous tombstone (or the genesis), and every local checkpoint inside it
//! matches: a tombstone never launders a tampered segment.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::Checkpoint;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::checkpoint::{list_checkpoints, load_or_create_signer, local_verifier, CHECKPOINT_DIR};
use crate::record::{read_fields, record_hash};
use crate::segment::{list_segments, sync_dir, SegmentInfo};
use crate::tombstone::{
    removed_through, store, tombstone_file_name, Tombstone, TombstoneState, TOMBSTONE_DIR,
};
use crate::{LedgerError, LEDGER_DIR};

/// One segment to remove, by file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The segment's file name (`seg-….jsonl`).
    pub segment: String,
    /// Archived (a verified copy is kept elsewhere) or purged.
    pub state: TombstoneState,
    /// Where the copy is, for the tombstone.
    pub archive: Option<String>,
}

/// A step of a removal, for fault injection in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalStep {
    /// The segment's tombstone is durable; the segment is still there.
    TombstoneWritten,
    /// The segment file is deleted.
    SegmentDeleted,
}

/// A fault-injection hook: called after each step of a removal with the segment's name.
pub type RemovalHook<'a> = &'a dyn Fn(RemovalStep, &str) -> Result<(), String>;

/// How to remove.
#[derive(Default)]
pub struct RemovalOptions<'a> {
    /// Why, signed into every tombstone (policy, authorisation): a JSON object.
    pub meta: serde_json::Value,
    /// The time to sign into the tombstones (RFC 3339); default now.
    pub time: Option<String>,
    /// Also copy each tombstone to `<anchor_dir>/tombstones/`.
    pub anchor_dir: Option<PathBuf>,
    /// Called after each step with the segment's name; an error stops the removal there, as
    /// a crash would (tests).
    pub hook: Option<RemovalHook<'a>>,
}

impl std::fmt::Debug for RemovalOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemovalOptions")
            .field("meta", &self.meta)
            .field("anchor_dir", &self.anchor_dir)
            .finish_non_exhaustive()
    }
}

/// What one removal did.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The tombstone written (or found, when an interrupted removal is completed).
    pub tombstone: Tombstone,
    /// Its file.
    pub file: PathBuf,
    /// Whether the segment was still on disk (false: it was removed before, e.g. archived
    /// earlier and now marked purged).
    pub deleted_segment: bool,
}

/// The lines the removal needs from each record.
#[derive(Deserialize)]
struct Head {
    time: String,
    #[serde(default)]
    labels: Vec<String>,
}

fn refuse(path: &Path, offset: u64, reason: String) -> LedgerError {
    LedgerError::Corrupt {
        segment: path.to_path_buf(),
        offset,
        reason: format!("refusing to remove it: {reason}"),
    }
}

/// Remove `removals` — the oldest segments, in order — each leaving a signed tombstone.
/// Segments already removed are skipped, or get a `purged` tombstone when they were
/// `archived` and are now purged. The active (newest) segment is never removed.
pub fn remove_segments(
    data_dir: &Path,
    removals: &[Removal],
    opts: &RemovalOptions<'_>,
) -> Result<Vec<Removed>, LedgerError> {
    let ledger_dir = data_dir.join(LEDGER_DIR);
    let lock_path = ledger_dir.join("LOCK");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(LedgerError::io(&lock_path))?;
    lock.lock().map_err(LedgerError::io(&lock_path))?;
    let result = remove_locked(data_dir, removals, opts);
    let _ = lock.unlock();
    result
}

fn remove_locked(
    data_dir: &Path,
    removals: &[Removal],
    opts: &RemovalOptions<'_>,
) -> Result<Vec<Removed>, LedgerError> {
    let ledger_dir = data_dir.join(LEDGER_DIR);
    let ts_dir = data_dir.join(TOMBSTONE_DIR);
    let signer = load_or_create_signer(data_dir)?;
    let time = opts
        .time
        .clone()
        .unwrap_or_else(mcptrail_event::now_rfc3339_nanos);
    let verifier = local_verifier(data_dir)?;
    let checkpoints: Vec<Checkpoint> = list_checkpoints(&data_dir.join(CHECKPOINT_DIR))?
        .into_iter()
        .filter_map(|(_, p)| {
            let text = std::fs::read_to_string(p).ok()?;
            let body =
                mcptrail_integrity::note::open(&text, std::slice::from_ref(verifier.as_ref()?))
                    .ok()?;
            Checkpoint::parse(body).ok()
        })
        .collect();
    let mut out = Vec::new();
    for r in removals {
        let segments = list_segments(&ledger_dir)?;
        let base = removed_through(data_dir)?;
        let first_seq = parse_first_seq(&r.segment).ok_or_else(|| {
            refuse(
                &ledger_dir.join(&r.segment),
                0,
                "not a segment file name".into(),
            )
        })?;
        let existing = existing_tombstones(&ts_dir, first_seq)?;
        let here = segments.iter().position(|s| s.first_seq == first_seq);
        let Some(i) = here else {
            // Gone already: at most a state change from archived to purged.
            let Some(prev) = existing.iter().max_by_key(|t| t.state) else {
                return Err(refuse(
                    &ledger_dir.join(&r.segment),
                    0,
                    "no such segment and no tombstone for it".into(),
                ));
            };
            if prev.state >= r.state {
                continue; // done before
            }
            let t = Tombstone {
                state: r.state,
                archive: r.archive.clone().or_else(|| prev.archive.clone()),
                time: time.clone(),
                meta: opts.meta.clone(),
                ..prev.clone()
            };
            let file = write_tombstone(&ts_dir, &t, &signer, opts)?;
            hook(opts, RemovalStep::TombstoneWritten, &r.segment)?;
            out.push(Removed {
                tombstone: t,
                file,
                deleted_segment: false,
            });
            continue;
        };
        let seg = &segments[i];
        if i + 1 == segments.len() {
            return Err(refuse(
                &seg.path,
                0,
                "it is the active segment (the newest is never removed)".into(),
            ));
        }
        if i != 0 {
            return Err(refuse(
                &seg.path,
                0,
                format!(
                    "{} older segment(s) are still there: only the oldest segments are removed, in order",
                    i
                ),
            ));
        }
        if !seg.sealed {
            return Err(refuse(&seg.path, 0, "it is not sealed".into()));
        }
        let bytes = std::fs::read(&seg.path).map_err(LedgerError::io(&seg.path))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if let Some(prev) = existing.iter().find(|t| t.sha256 == sha) {
            // Tombstoned before a crash, not yet deleted: finish (and record the new state).
            let (t, file) = if prev.state < r.state {
                let t = Tombstone {
                    state: r.state,
                    archive: r.archive.clone(),
                    time: time.clone(),
                    meta: opts.meta.clone(),
                    ..prev.clone()
                };
                let file = write_tombstone(&ts_dir, &t, &signer, opts)?;
                (t, file)
            } else {
                (
                    prev.clone(),
                    ts_dir.join(tombstone_file_name(prev.first_seq, prev.state)),
                )
            };
            delete_segment(&ledger_dir, seg)?;
            hook(opts, RemovalStep::SegmentDeleted, &r.segment)?;
            out.push(Removed {
                tombstone: t,
                file,
                deleted_segment: true,
            });
            continue;
        }
        if !existing.is_empty() {
            return Err(refuse(
                &seg.path,
                0,
                "a tombstone for it exists but its bytes differ — run `mcptrail verify`".into(),
            ));
        }
        let t = check_segment(
            seg,
            &bytes,
            sha,
            base.as_ref(),
            &checkpoints,
            r,
            &time,
            opts,
        )?;
        let t = Tombstone {
            origin: signer.verifier().name().to_string(),
            ..t
        };
        let file = write_tombstone(&ts_dir, &t, &signer, opts)?;
        hook(opts, RemovalStep::TombstoneWritten, &r.segment)?;
        delete_segment(&ledger_dir, seg)?;
        hook(opts, RemovalStep::SegmentDeleted, &r.segment)?;
        out.push(Removed {
            tombstone: t,
            file,
            deleted_segment: true,
        });
    }
    Ok(out)
}

fn hook(opts: &RemovalOptions<'_>, step: RemovalStep, segment: &str) -> Result<(), LedgerError> {
    match opts.hook {
        Some(h) => h(step, segment).map_err(|reason| LedgerError::Corrupt {
            segment: PathBuf::from(segment),
            offset: 0,
            reason: format!("removal stopped after {step:?}: {reason}"),
        }),
        None => Ok(()),
    }
}

/// Walk the segment's records from where the removed prefix ends: seqs follow on, each
/// `prev_hash` links, every checkpoint inside matches. Returns its tombstone (unsigned).
#[allow(clippy::too_many_arguments)]
fn check_segment(
    seg: &SegmentInfo,
    bytes: &[u8],
    sha256: String,
    base: Option<&Tombstone>,
    checkpoints: &[Checkpoint],
    r: &Removal,
    time: &str,
    opts: &RemovalOptions<'_>,
) -> Result<Tombstone, LedgerError> {
    let (mut frontier, mut last_seq, mut last_hash, mut epoch) = match base {
        Some(b) => (b.tree(), b.last_seq, b.last_hash_bytes(), b.mac_epoch),
        None => (Frontier::new(), 0, [0u8; 32], None),
    };
    if seg.first_seq != last_seq + 1 {
        return Err(refuse(
            &seg.path,
            0,
            format!(
                "it starts at seq {} but the removed prefix ends at {last_seq}",
                seg.first_seq
            ),
        ));
    }
    if bytes.last().is_some_and(|&b| b != b'\n') {
        return Err(refuse(&seg.path, 0, "its last line is torn".into()));
    }
    let mut times: Option<(String, String)> = None;
    let mut labels: Vec<String> = Vec::new();
    let mut offset = 0u64;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let bad = |why: String| refuse(&seg.path, offset, why);
        let f = read_fields(line).ok_or_else(|| bad("a line is not a ledger record".into()))?;
        if f.seq != last_seq + 1 {
            return Err(bad(format!(
                "seq {} where {} was expected",
                f.seq,
                last_seq + 1
            )));
        }
        if f.prev_hash != last_hash {
            return Err(bad(format!("the chain is broken before seq {}", f.seq)));
        }
        let head: Head = serde_json::from_slice(line)
            .map_err(|e| bad(format!("seq {} is not a valid event ({e})", f.seq)))?;
        last_hash = record_hash(line);
        last_seq = f.seq;
        epoch = f.mac.map(|(e, _)| e);
        frontier.push(last_hash);
        if let Some(cp) = checkpoints.iter().find(|c| c.size == last_seq) {
            if cp.root != frontier.root() {
                return Err(bad(format!(
                    "records 1..={last_seq} do not match the signed checkpoint of that size"
                )));
            }
        }
        match &mut times {
            None => times = Some((head.time.clone(), head.time)),
            Some((_, last)) => *last = head.time,
        }
        for l in head.labels {
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        offset += line.len() as u64 + 1;
    }
    let times = times.ok_or_else(|| refuse(&seg.path, 0, "it holds no record".into()))?;
    labels.sort();
    Ok(Tombstone {
        origin: String::new(),
        segment: name_of(&seg.path),
        first_seq: seg.first_seq,
        last_seq,
        bytes: bytes.len() as u64,
        sha256,
        last_hash: hex::encode(last_hash),
        frontier: frontier.subtree_roots().map(hex::encode).collect(),
        mac_epoch: epoch,
        times,
        labels,
        state: r.state,
        archive: r.archive.clone(),
        time: time.to_string(),
        meta: opts.meta.clone(),
    })
}

fn write_tombstone(
    dir: &Path,
    t: &Tombstone,
    signer: &mcptrail_integrity::NoteSigner,
    opts: &RemovalOptions<'_>,
) -> Result<PathBuf, LedgerError> {
    let note = t.sign(signer).map_err(|reason| LedgerError::Key {
        path: dir.to_path_buf(),
        reason: format!("could not sign the tombstone of {}: {reason}", t.segment),
    })?;
    let name = tombstone_file_name(t.first_seq, t.state);
    let path = store(dir, &name, &note)?;
    if let Some(anchor) = &opts.anchor_dir {
        store(&anchor.join(TOMBSTONE_DIR), &name, &note)?;
    }
    Ok(path)
}

fn delete_segment(ledger_dir: &Path, seg: &SegmentInfo) -> Result<(), LedgerError> {
    std::fs::remove_file(&seg.path).map_err(LedgerError::io(&seg.path))?;
    sync_dir(ledger_dir)
}

fn existing_tombstones(dir: &Path, first_seq: u64) -> Result<Vec<Tombstone>, LedgerError> {
    let mut out = Vec::new();
    for state in [TombstoneState::Archived, TombstoneState::Purged] {
        let path = dir.join(tombstone_file_name(first_seq, state));
        match std::fs::read_to_string(&path) {
            Ok(text) => out.push(Tombstone::read_unverified(&text).map_err(|reason| {
                LedgerError::Corrupt {
                    segment: path.clone(),
                    offset: 0,
                    reason: format!("not a readable tombstone ({reason}); run `mcptrail verify`"),
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LedgerError::io(&path)(e)),
        }
    }
    Ok(out)
}

fn parse_first_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string()
}
