//! Verification: walks every stored line once and checks the hash chain, the forward-secure
//! MACs epoch by epoch, the Merkle root at every signed checkpoint (local and anchored),
//! segment continuity and sealed-segment permissions; reports exactly what is wrong and where.
//!
//! Segments are read in large blocks; the per-line work that dominates (the record hash, which
//! is also the Merkle leaf, and the MAC over it) runs on all cores, the order-dependent checks
//! (links, seq, epochs, tree) in one pass after it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcptrail_event::{Event, EventKind, GENESIS_HASH};
use serde::Serialize;

use mcptrail_integrity::fsmac::{EpochKey, Seed};
use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::note::open as open_note;
use mcptrail_integrity::{Checkpoint, NoteVerifier};

use crate::anchor::{CheckpointAnchor, DirAnchor};
use crate::checkpoint::{list_checkpoints, local_verifier, CHECKPOINT_DIR};
use crate::record::{hash_record, read_fields, record_hash, RecordFields};
use crate::segment::{list_segments, SegmentInfo};
use crate::tombstone::{removed_through, Tombstone, Tombstones};
use crate::{LedgerError, LEDGER_DIR};
use sha2::Digest as _;

/// Called with the number of bytes verified so far (for a progress bar).
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Start at this seq (the chain link into it is trusted). 0 or 1 = from the beginning.
    /// Checkpoints are only checked from the beginning.
    pub from_seq: u64,
    /// The checkpoint key to trust; default: the ledger's own `keys/checkpoint.vkey`. An
    /// auditor passes the key they were given, so a replaced local key cannot fool them.
    pub verifier: Option<NoteVerifier>,
    /// Directories of anchored checkpoint copies to check besides `<data_dir>/checkpoints`.
    pub anchor_dirs: Vec<PathBuf>,
    /// Other anchors to check (sinks, object stores).
    pub anchors: Vec<Arc<dyn CheckpointAnchor>>,
    /// The MAC verification seed. Without it, records carrying MACs cannot be checked for
    /// MACs and the verdict is at best [`Verdict::CannotVerify`], unless `skip_macs`.
    pub seed: Option<Seed>,
    /// Accept not checking MACs (no seed at hand, e.g. the tap's own self-check): the verdict
    /// may then be intact on the chain and checkpoints alone.
    pub skip_macs: bool,
    /// Progress callback.
    pub progress: Option<Progress>,
    /// Hashing threads (default: one per core, at most 8).
    pub threads: Option<usize>,
}

/// One integrity problem, located precisely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// A record's MAC does not match its content: the record was modified after it was
    /// written (or forged by someone without the key of its epoch).
    MacInvalid {
        /// Seq of the record (the first of a run of consecutive ones).
        seq: u64,
        /// Seq of the last record of the run.
        last_seq: u64,
        /// Segment file name.
        segment: String,
        /// 1-based line number.
        line: u64,
        /// The epoch the record claims.
        epoch: u64,
    },
    /// A record carries a MAC of an epoch that does not fit its place: epochs move forward
    /// one at a time and each step carries a tag made with the previous epoch's key, bound to
    /// the record before it. A record (or run of records) claiming a later epoch without that
    /// tag was re-MACed by someone holding only a later key, i.e. who took the machine later.
    MacWrongEpoch {
        /// Seq of the record (the first of a run).
        seq: u64,
        /// Segment file name.
        segment: String,
        /// 1-based line number.
        line: u64,
        /// The epoch the record claims.
        epoch: u64,
        /// The epoch of the records before it.
        previous_epoch: u64,
    },
    /// A record without a MAC after records with MACs: MACs were stripped or a record forged.
    MacMissing {
        /// Seq of the record.
        seq: u64,
        /// Segment file name.
        segment: String,
        /// 1-based line number.
        line: u64,
    },
    /// A whole segment is gone: the previous segment ends at `from_seq - 1` and the next one
    /// starts at `to_seq + 1`.
    SegmentMissing {
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
        /// The segment after the gap.
        segment: String,
    },
    /// A sealed segment (not the active one) is writable again: sealing makes it read-only,
    /// so someone changed its mode (perhaps to edit it).
    SegmentWritable {
        /// Segment file name.
        segment: String,
        /// Its mode.
        mode: String,
    },
    /// Two validly signed checkpoints of the same size disagree: the log forked (history was
    /// rolled back and rewritten after one of them was anchored).
    Fork {
        /// Records both cover.
        size: u64,
        /// The two checkpoint files.
        files: (String, String),
    },
    /// A line is not a valid event.
    Unparseable {
        /// Segment file name.
        segment: String,
        /// 1-based line number.
        line: u64,
        /// Parser message.
        error: String,
    },
    /// `prev_hash` does not match the hash of the preceding line: the preceding line was
    /// modified, or a line was removed or inserted here.
    ChainBroken {
        /// Seq of the record whose `prev_hash` does not match.
        seq: u64,
        /// Segment file name.
        segment: String,
        /// 1-based line number.
        line: u64,
        /// `prev_hash` stored in the record.
        stored_prev_hash: String,
        /// Hash of the line actually before it.
        actual_prev_hash: String,
    },
    /// Sequence numbers jump forward: records are missing.
    Missing {
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
        /// Segment file name where the gap was noticed.
        segment: String,
        /// 1-based line number of the record after the gap.
        line: u64,
    },
    /// Sequence numbers go backwards or repeat: records were inserted, duplicated or reordered.
    OutOfOrder {
        /// Seq found.
        seq: u64,
        /// Seq expected.
        expected: u64,
        /// Segment file name.
        segment: String,
        /// 1-based line number.
        line: u64,
    },
    /// A segment's file name says it starts at a different seq than its first record.
    SegmentMisnamed {
        /// Segment file name.
        segment: String,
        /// Seq of its first record.
        first_record_seq: u64,
    },
    /// The first record of the ledger does not start the chain.
    BadGenesis {
        /// Seq of the first record.
        seq: u64,
    },
    /// A checkpoint file that is not a valid checkpoint signed by the trusted key.
    CheckpointInvalid {
        /// The checkpoint file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The first `size` records hash to another root than the signed checkpoint says: records
    /// were changed (even with the hash chain recomputed), or the log forked.
    CheckpointMismatch {
        /// The checkpoint file.
        file: String,
        /// Records the checkpoint covers.
        size: u64,
        /// The first record that may differ: one after the newest checkpoint that matched.
        diverges_from: u64,
    },
    /// A signed checkpoint covers more records than the ledger holds: its newest records
    /// were removed (truncated or rolled back).
    Truncated {
        /// The checkpoint file.
        file: String,
        /// Records the checkpoint covers.
        size: u64,
        /// Records in the ledger.
        records: u64,
    },
    /// A tombstone that is not validly signed by the trusted key, cannot be read, or
    /// disagrees with another tombstone of the same segment: forged or modified.
    TombstoneInvalid {
        /// The tombstone file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A tombstone that does not continue the removed prefix: retention removes only the
    /// oldest segments, so tombstones cover `1..=P` without a gap. A gap means a tombstone
    /// was deleted, or one was made for records that are not the oldest.
    TombstoneNotPrefix {
        /// The tombstone file.
        file: String,
        /// The first seq it covers.
        first_seq: u64,
        /// The first seq the prefix needed next.
        expected: u64,
    },
    /// A segment that tombstones say was removed is still there but differs from what the
    /// tombstone signed, or the ledger does not continue where the tombstones end.
    TombstoneMismatch {
        /// The segment or tombstone concerned.
        file: String,
        /// What does not match.
        reason: String,
    },
    /// An unterminated last line with no writer active: a writer died mid-record. The next
    /// writer will quarantine it and append a `system.ledger_recovered` event.
    TornTail {
        /// Segment file name.
        segment: String,
        /// Byte offset of the fragment.
        offset: u64,
        /// Length of the fragment.
        length: u64,
    },
}

impl Problem {
    /// The first record the problem is about, when it is about records.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Problem::MacInvalid { seq, .. }
            | Problem::MacWrongEpoch { seq, .. }
            | Problem::MacMissing { seq, .. }
            | Problem::ChainBroken { seq, .. }
            | Problem::OutOfOrder { seq, .. }
            | Problem::BadGenesis { seq } => Some(*seq),
            Problem::Missing { from_seq, .. } | Problem::SegmentMissing { from_seq, .. } => {
                Some(*from_seq)
            }
            Problem::SegmentMisnamed {
                first_record_seq, ..
            } => Some(*first_record_seq),
            Problem::CheckpointMismatch { diverges_from, .. } => Some(*diverges_from),
            Problem::Truncated { records, .. } => Some(records + 1),
            _ => None,
        }
    }

    /// The tamper class, as `drill` and the JSON report name it.
    pub fn class(&self) -> &'static str {
        match self {
            Problem::MacInvalid { .. } => "modified_record",
            Problem::ChainBroken { .. } => "broken_link",
            Problem::Missing { .. } | Problem::BadGenesis { .. } => "deleted_record",
            Problem::OutOfOrder { .. } => "inserted_or_reordered",
            Problem::SegmentMissing { .. } | Problem::SegmentMisnamed { .. } => "missing_segment",
            Problem::Truncated { .. } => "truncated_tail",
            Problem::CheckpointMismatch { .. } | Problem::Fork { .. } => "fork_or_rollback",
            Problem::CheckpointInvalid { .. } => "bad_signature",
            Problem::MacWrongEpoch { .. } => "mac_wrong_epoch",
            Problem::MacMissing { .. } => "mac_missing",
            Problem::SegmentWritable { .. } => "segment_permissions",
            Problem::Unparseable { .. } => "unparseable",
            Problem::TornTail { .. } => "torn_tail",
            Problem::TombstoneInvalid { .. } => "bad_tombstone",
            Problem::TombstoneNotPrefix { .. } => "tombstone_not_prefix",
            Problem::TombstoneMismatch { .. } => "tombstone_mismatch",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::MacInvalid { seq, last_seq, segment, line, epoch } if last_seq > seq => write!(
                f,
                "{segment} line {line}: seq {seq}..={last_seq}: MACs (from epoch {epoch}) do not match the records — modified after they were written (a record changed and the chain recomputed after it), or forged"
            ),
            Problem::MacInvalid { seq, segment, line, epoch, .. } => write!(
                f,
                "{segment} line {line}: seq {seq}: MAC (epoch {epoch}) does not match the record — it was modified after it was written, or forged"
            ),
            Problem::MacWrongEpoch { seq, segment, line, epoch, previous_epoch } => write!(
                f,
                "{segment} line {line}: seq {seq} carries a MAC of epoch {epoch} after records of epoch {previous_epoch}, without an authenticated epoch step — re-MACed with another epoch's key"
            ),
            Problem::MacMissing { seq, segment, line } => write!(
                f,
                "{segment} line {line}: seq {seq} has no MAC although earlier records have — MAC stripped or record forged"
            ),
            Problem::SegmentMissing { from_seq, to_seq, segment } => write!(
                f,
                "{segment}: the segment holding seq {from_seq}..={to_seq} is missing (deleted)"
            ),
            Problem::SegmentWritable { segment, mode } => write!(
                f,
                "{segment}: sealed segment has mode {mode}, not read-only — its permissions were changed"
            ),
            Problem::Fork { size, files: (a, b) } => write!(
                f,
                "{a} and {b}: both signed at {size} records with different roots — the log forked (rolled back and rewritten)"
            ),
            Problem::Unparseable { segment, line, error } => write!(f, "{segment} line {line}: not a valid event ({error})"),
            Problem::ChainBroken { seq, segment, line, stored_prev_hash, actual_prev_hash } => write!(
                f,
                "{segment} line {line}: chain broken before seq {seq}: stored prev_hash {} but the preceding line hashes to {} — the preceding record was modified, or records were removed or inserted here",
                short(stored_prev_hash),
                short(actual_prev_hash)
            ),
            Problem::Missing { from_seq, to_seq, segment, line } => {
                write!(f, "{segment} line {line}: records seq {from_seq}..={to_seq} are missing (deleted)")
            }
            Problem::OutOfOrder { seq, expected, segment, line } => {
                write!(f, "{segment} line {line}: seq {seq} where {expected} was expected — records inserted, duplicated or reordered")
            }
            Problem::SegmentMisnamed { segment, first_record_seq } => {
                write!(f, "{segment}: file name does not match its first record (seq {first_record_seq}) — segment renamed or its head removed")
            }
            Problem::BadGenesis { seq } => write!(f, "the ledger starts at seq {seq} without the genesis hash — its beginning was removed"),
            Problem::CheckpointInvalid { file, reason } => write!(f, "{file}: not a valid checkpoint signed by the trusted key ({reason})"),
            Problem::CheckpointMismatch { file, size, diverges_from } => write!(
                f,
                "{file}: records 1..={size} do not match this signed checkpoint — records in seq {diverges_from}..={size} were altered (even if the hash chain was recomputed) or the log forked"
            ),
            Problem::Truncated { file, size, records } => write!(
                f,
                "{file}: signed at {size} records but the ledger holds {records} — records seq {}..={size} were removed (truncation or rollback)",
                records + 1
            ),
            Problem::TornTail { segment, offset, length } => write!(
                f,
                "{segment} byte {offset}: torn last line ({length} bytes) — a writer was killed mid-record; the next writer quarantines it"
            ),
            Problem::TombstoneInvalid { file, reason } => write!(
                f,
                "{file}: not a valid tombstone signed by the trusted key ({reason}) — forged or modified"
            ),
            Problem::TombstoneNotPrefix { file, first_seq, expected } => write!(
                f,
                "{file}: covers records from seq {first_seq} but the removed prefix needs seq {expected} next — a tombstone is missing, or records other than the oldest were removed"
            ),
            Problem::TombstoneMismatch { file, reason } => write!(f, "{file}: {reason}"),
        }
    }
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// Result of [`verify`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Segments checked.
    pub segments: usize,
    /// First seq seen.
    pub first_seq: Option<u64>,
    /// Last seq seen.
    pub last_seq: Option<u64>,
    /// SHA-256 of the last line: the head of the chain.
    pub head_hash: Option<String>,
    /// Integrity problems; empty means the chain verifies.
    pub problems: Vec<Problem>,
    /// Things an auditor should know that are not integrity failures (recoveries, writers active).
    pub notices: Vec<String>,
    /// Signed checkpoints whose root matched the records.
    pub checkpoints_verified: u64,
    /// Records covered by the newest verified checkpoint.
    pub latest_checkpoint: Option<u64>,
    /// Records whose MAC was checked against the seed.
    pub macs_checked: u64,
    /// Records carrying a MAC that could not be checked (no seed).
    pub macs_unchecked: u64,
    /// MAC epochs seen (first, last).
    pub mac_epochs: Option<(u64, u64)>,
    /// Bytes read.
    pub bytes: u64,
    /// What could not be checked and why (makes the verdict "cannot verify").
    pub unchecked: Vec<String>,
    /// Segments removed by retention, each under a validly signed tombstone, in seq order.
    pub removed: Vec<RemovedSegment>,
    /// The overall result.
    pub verdict: Verdict,
}

/// A segment removed under a signed tombstone (see [`crate::Tombstone`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedSegment {
    /// First seq of the removed records.
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// The segment's file name.
    pub segment: String,
    /// Archived (a copy kept elsewhere) or purged.
    pub state: crate::TombstoneState,
    /// The tombstone file (the newest for the segment).
    pub tombstone: String,
    /// When it was signed.
    pub time: String,
    /// Where a copy is kept, if archived.
    pub archive: Option<String>,
    /// Why (policy, authorisation), as the tombstone says.
    pub meta: serde_json::Value,
}

/// The overall result of a verification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Everything that can be checked was, and it holds.
    #[default]
    Intact,
    /// At least one problem: the ledger was altered (or damaged).
    Tampered,
    /// No problem found, but something could not be checked (e.g. MACs without the seed).
    CannotVerify,
}

impl Verdict {
    /// The process exit code `mcptrail verify` uses: 0 intact, 1 tampered, 2 cannot verify.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Intact => 0,
            Verdict::Tampered => 1,
            Verdict::CannotVerify => 2,
        }
    }
}

impl VerifyReport {
    /// True when no problem was found (what could not be checked aside).
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn settle(&mut self) {
        self.verdict = if !self.problems.is_empty() {
            Verdict::Tampered
        } else if !self.unchecked.is_empty() {
            Verdict::CannotVerify
        } else {
            Verdict::Intact
        };
    }
}

/// Bytes read from a segment at a time.
const BLOCK: usize = 8 << 20;
/// Below this many bytes a block is hashed on the calling thread.
const PARALLEL_MIN: usize = 256 << 10;

/// Verify the ledger in `data_dir`: see the module doc for what is checked.
pub fn verify(data_dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, LedgerError> {
    let ledger_dir = data_dir.join(LEDGER_DIR);
    let segments = list_segments(&ledger_dir)?;
    let mut report = VerifyReport::default();
    let verifier = match &opts.verifier {
        Some(v) => Some(v.clone()),
        None => local_verifier(data_dir)?,
    };
    let removed = load_removed(data_dir, opts, verifier.as_ref(), &segments, &mut report)?;
    let through = removed.as_ref().map_or(0, |b| b.last_seq);
    // Segments still there inside the removed prefix were checked against their tombstones.
    let kept = segments.partition_point(|s| s.first_seq <= through);
    let from = opts.from_seq.max(1).max(through + 1);
    let start = kept.max(
        segments
            .iter()
            .rposition(|s| s.first_seq <= from)
            .unwrap_or(0),
    );
    report.segments = segments.len() - start.min(segments.len());
    let mut walk = Walk {
        report,
        from,
        check_tree: from <= through + 1,
        checkpoints: Vec::new(),
        next_cp: 0,
        frontier: Frontier::new(),
        prev: None,
        max_seq: 0,
        late: Default::default(),
        epochs: EpochTrack::default(),
        saw_mac: false,
        has_seed: opts.seed.is_some(),
        keys: opts.seed.as_ref().map(KeyCursor::new),
        matched_sizes: Vec::new(),
        recovered: false,
    };
    if let Some(base) = removed.as_ref().filter(|_| from == through + 1) {
        // Continue the chain, the tree and the MAC epochs where the removed prefix ended.
        walk.frontier = base.tree();
        walk.prev = Some((base.last_seq, base.last_hash_bytes()));
        walk.max_seq = base.last_seq;
        walk.epochs.trusted = base.mac_epoch;
        walk.epochs.max_seen = base.mac_epoch;
        walk.saw_mac = base.mac_epoch.is_some();
        if segments.get(kept).is_none() {
            walk.report.problems.push(Problem::TombstoneMismatch {
                file: LEDGER_DIR.to_string(),
                reason: format!(
                    "no segment follows the removed records 1..={through}: the active segment is gone (retention never removes it)"
                ),
            });
        }
    }
    if walk.check_tree {
        walk.checkpoints = load_checkpoints(data_dir, opts, verifier.as_ref(), &mut walk.report)?;
        if through > 0 {
            // Checkpoints of removed records only: their signatures were checked, their
            // roots cannot be (the records are gone; the tombstones carry the state).
            let before = walk
                .checkpoints
                .partition_point(|(_, cp)| cp.size < through);
            if before > 0 {
                walk.report.notices.push(format!(
                    "{before} signed checkpoint(s) cover only removed records (signatures checked; the tombstones carry the tree from there)"
                ));
            }
            walk.next_cp = before;
            walk.check_checkpoints();
        }
    }
    let threads = opts.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut done_bytes = 0u64;
    let last_index = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate().skip(start) {
        let seg_name = name_of(&seg.path);
        check_permissions(seg, i == last_index, &seg_name, &mut walk.report)?;
        let mut file = File::open(&seg.path).map_err(LedgerError::io(&seg.path))?;
        let mut line_no = 0u64;
        let mut offset = 0u64;
        let mut carry = 0usize;
        loop {
            // No bigger than what is left of the segment (small ledgers verify fast).
            let left =
                usize::try_from(seg.len.saturating_sub(offset + carry as u64)).unwrap_or(BLOCK);
            buf.resize(carry + BLOCK.min(left + 1).max(4096), 0);
            let mut filled = carry;
            while filled < buf.len() {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(LedgerError::io(&seg.path)(e)),
                }
            }
            let eof = filled < buf.len();
            let data = &buf[..filled];
            let complete = match memchr::memrchr(b'\n', data) {
                Some(i) => i + 1,
                None => 0,
            };
            let mut ranges = Vec::new();
            let mut s = 0;
            for nl in memchr::memchr_iter(b'\n', &data[..complete]) {
                ranges.push((s, nl));
                s = nl + 1;
            }
            let epoch_bound = walk.epochs.max_seen.unwrap_or(0) + ranges.len() as u64 + 1;
            let results = hash_lines(
                &data[..complete],
                &ranges,
                opts.seed.as_ref(),
                epoch_bound,
                threads,
            );
            for ((a, b), res) in ranges.iter().zip(results) {
                line_no += 1;
                walk.line(&data[*a..*b], res, &seg_name, line_no)?;
            }
            offset += complete as u64;
            done_bytes += complete as u64;
            if let Some(p) = &opts.progress {
                (p.0)(done_bytes);
            }
            // Keep the unterminated rest for the next block.
            buf.copy_within(complete..filled, 0);
            carry = filled - complete;
            if eof {
                break;
            }
            if carry >= BLOCK {
                // A "line" longer than a block: no writer produces one (events are bounded).
                walk.report.problems.push(Problem::Unparseable {
                    segment: seg_name.clone(),
                    line: line_no + 1,
                    error: format!("a line longer than {} MiB", BLOCK >> 20),
                });
                carry = 0;
                break;
            }
        }
        if carry > 0 {
            if i == last_index && writer_active(&ledger_dir) {
                walk.report.notices.push(format!("{seg_name}: a writer is appending right now; its unfinished line at byte {offset} was not checked"));
            } else {
                walk.report.problems.push(Problem::TornTail {
                    segment: seg_name.clone(),
                    offset,
                    length: carry as u64,
                });
            }
        }
        walk.report.bytes += offset + carry as u64;
    }
    Ok(walk.finish(opts))
}

/// Where a record is.
struct Site<'s> {
    seq: u64,
    segment: &'s str,
    line: u64,
}

/// Per-line results of the parallel pass.
struct LineHashes {
    /// The record hash, which is also its Merkle leaf.
    hash: [u8; 32],
    /// The line looks like a `system.ledger_recovered` event (checked properly later).
    recovered: bool,
    fields: Option<RecordFields>,
    /// `Some(ok)` when the MAC was checked; `None`: no MAC, no seed, or an impossible epoch.
    mac_ok: Option<bool>,
    /// The claimed epoch is beyond any the writer can have reached here.
    impossible_epoch: bool,
    /// The line is well-formed JSON (the layout reader alone does not check that).
    json_ok: bool,
}

fn hash_lines(
    data: &[u8],
    ranges: &[(usize, usize)],
    seed: Option<&Seed>,
    epoch_bound: u64,
    threads: usize,
) -> Vec<LineHashes> {
    let work = |part: &[(usize, usize)]| {
        let mut keys = seed.map(KeyCursor::new);
        part.iter()
            .map(|&(a, b)| hash_one(&data[a..b], keys.as_mut(), epoch_bound))
            .collect::<Vec<_>>()
    };
    if threads <= 1 || data.len() < PARALLEL_MIN {
        return work(ranges);
    }
    let per = ranges.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .chunks(per)
            .map(|part| s.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("hashing a line does not panic"))
            .collect()
    })
}

fn hash_one(line: &[u8], keys: Option<&mut KeyCursor<'_>>, epoch_bound: u64) -> LineHashes {
    let fields = read_fields(line);
    let recovered = recovered_finder()
        .find(&line[..line.len().min(400)])
        .is_some();
    // Lines outside the layout get the full parse in the walk, which decides about them.
    let hash = match &fields {
        Some(f) => hash_record(line, f.prefix_len),
        None => record_hash(line),
    };
    let mut out = LineHashes {
        hash,
        recovered,
        fields,
        mac_ok: None,
        impossible_epoch: false,
        json_ok: true,
    };
    let Some(f) = fields else { return out };
    if let Some((epoch, tag)) = f.mac {
        // The writer evolves at most once per batch, so a record's epoch is below its seq.
        if epoch >= f.seq || epoch > epoch_bound {
            out.impossible_epoch = true;
        } else if let Some(keys) = keys {
            out.mac_ok = Some(keys.at(epoch).verify32(&hash, &tag));
        }
    }
    // Fields were found by layout; the line must also be JSON. A valid MAC already proves
    // the writer (which only writes serialised events) made it; otherwise check the syntax.
    if out.mac_ok != Some(true) {
        out.json_ok = serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
    }
    out
}

/// The searcher for the kind of a recovery record, built once.
fn recovered_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\"kind\":\"system.ledger_recovered\""))
}

/// Epoch keys derived from the seed, with a snapshot every [`KeyCursor::STRIDE`] epochs so a
/// jump back (a forged record) costs at most that many steps.
struct KeyCursor<'a> {
    seed: &'a Seed,
    current: EpochKey,
    snapshots: Vec<EpochKey>,
}

impl<'a> KeyCursor<'a> {
    const STRIDE: u64 = 1024;

    fn new(seed: &'a Seed) -> Self {
        KeyCursor {
            seed,
            current: seed.first_key(),
            snapshots: vec![seed.first_key()],
        }
    }

    fn at(&mut self, epoch: u64) -> &EpochKey {
        if epoch < self.current.epoch() {
            let idx = (epoch / Self::STRIDE) as usize;
            self.current = self
                .snapshots
                .get(idx)
                .cloned()
                .unwrap_or_else(|| self.seed.first_key());
        }
        while self.current.epoch() < epoch {
            self.current.evolve();
            let e = self.current.epoch();
            if e.is_multiple_of(Self::STRIDE) && (e / Self::STRIDE) as usize == self.snapshots.len()
            {
                self.snapshots.push(self.current.clone());
            }
        }
        &self.current
    }
}

/// The MAC epochs seen so far.
#[derive(Default)]
struct EpochTrack {
    /// The epoch of the newest record that fitted.
    trusted: Option<u64>,
    /// The epoch of a run of records that did not fit (reported once, at its first record).
    blamed_run: Option<u64>,
    max_seen: Option<u64>,
    first: Option<u64>,
    last: Option<u64>,
}

/// The order-dependent checks, one line after the other.
struct Walk<'a> {
    report: VerifyReport,
    /// Keys for the epoch transitions (checked here: they bind the previous line).
    keys: Option<KeyCursor<'a>>,
    from: u64,
    check_tree: bool,
    checkpoints: Vec<(String, Checkpoint)>,
    next_cp: usize,
    frontier: Frontier,
    prev: Option<(u64, [u8; 32])>,
    max_seq: u64,
    /// Seqs that turned up out of order: a "missing" range they cover was a reordering.
    late: std::collections::BTreeSet<u64>,
    epochs: EpochTrack,
    saw_mac: bool,
    has_seed: bool,
    /// Sizes of the checkpoints that matched, ascending.
    matched_sizes: Vec<u64>,
    /// Whether the current line looked like a recovery record.
    recovered: bool,
}

impl Walk<'_> {
    fn line(
        &mut self,
        line: &[u8],
        res: LineHashes,
        segment: &str,
        line_no: u64,
    ) -> Result<(), LedgerError> {
        let hash = res.hash;
        self.recovered = res.recovered;
        if self.check_tree {
            self.frontier.push(res.hash);
            self.check_checkpoints();
        }
        // The integrity members: from the layout, or from a full parse of an odd line.
        let (seq, prev_hash, mac, transition) = match res.fields {
            Some(f) if !res.json_ok => {
                // In the writer's layout but not JSON: no reader can use it. Report it, and
                // keep checking the chain through it.
                self.report.problems.push(Problem::Unparseable {
                    segment: segment.to_string(),
                    line: line_no,
                    error: "the line has the ledger's layout but is not valid JSON".into(),
                });
                (f.seq, f.prev_hash, f.mac.map(|m| m.0), f.transition)
            }
            Some(f) => (f.seq, f.prev_hash, f.mac.map(|m| m.0), f.transition),
            None => match serde_json::from_slice::<Event>(line) {
                Ok(ev) => {
                    let prev = hex::decode(&ev.prev_hash)
                        .ok()
                        .and_then(|v| <[u8; 32]>::try_from(v).ok())
                        .unwrap_or([0xff; 32]);
                    if ev.mac.is_some() {
                        // A MAC member the writer did not write in its layout cannot be valid.
                        self.report.problems.push(Problem::MacInvalid {
                            seq: ev.seq,
                            last_seq: ev.seq,
                            segment: segment.to_string(),
                            line: line_no,
                            epoch: 0,
                        });
                    }
                    (ev.seq, prev, None, None)
                }
                Err(e) => {
                    self.report.problems.push(Problem::Unparseable {
                        segment: segment.to_string(),
                        line: line_no,
                        error: e.to_string(),
                    });
                    // Keep the hash so the next record's link is still checked against these bytes.
                    self.max_seq = self.max_seq.saturating_add(1);
                    self.prev = Some((self.max_seq, hash));
                    return Ok(());
                }
            },
        };
        // Before the first record checked (`--from`), lines only carry the chain forward. A
        // line claiming a seq below `from` once checking has begun (or seq 0 from the start)
        // is checked like any other, and reported.
        if self.from > 1 && seq < self.from && self.report.first_seq.is_none() {
            self.max_seq = seq;
            self.prev = Some((seq, hash));
            return Ok(());
        }
        if line_no == 1 {
            let named = segment
                .strip_prefix("seg-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok());
            if named != Some(seq) {
                self.report.problems.push(Problem::SegmentMisnamed {
                    segment: segment.to_string(),
                    first_record_seq: seq,
                });
            }
        }
        match self.prev {
            None => {
                if self.from <= 1 && (seq != 1 || hex::encode(prev_hash) != GENESIS_HASH) {
                    self.report.problems.push(Problem::BadGenesis { seq });
                }
            }
            Some((_, phash)) => {
                // A forged seq may be u64::MAX: never overflow, just report.
                let expected = self.max_seq.saturating_add(1);
                if seq > expected {
                    self.report.problems.push(if line_no == 1 {
                        Problem::SegmentMissing {
                            from_seq: expected,
                            to_seq: seq - 1,
                            segment: segment.to_string(),
                        }
                    } else {
                        Problem::Missing {
                            from_seq: expected,
                            to_seq: seq - 1,
                            segment: segment.to_string(),
                            line: line_no,
                        }
                    });
                } else if seq < expected {
                    self.late.insert(seq);
                    self.report.problems.push(Problem::OutOfOrder {
                        seq,
                        expected,
                        segment: segment.to_string(),
                        line: line_no,
                    });
                }
                if prev_hash != phash {
                    self.report.problems.push(Problem::ChainBroken {
                        seq,
                        segment: segment.to_string(),
                        line: line_no,
                        stored_prev_hash: hex::encode(prev_hash),
                        actual_prev_hash: hex::encode(phash),
                    });
                }
            }
        }
        match mac {
            Some(epoch) => {
                self.saw_mac = true;
                let at = Site {
                    seq,
                    segment,
                    line: line_no,
                };
                self.epoch(epoch, &at, res.impossible_epoch, transition);
                match res.mac_ok {
                    Some(true) => self.report.macs_checked += 1,
                    Some(false) => {
                        // Consecutive failures are one run (a record changed and the chain
                        // recomputed after it fails every later MAC).
                        if let Some(Problem::MacInvalid { last_seq, .. }) = self
                            .report
                            .problems
                            .iter_mut()
                            .rfind(|p| matches!(p, Problem::MacInvalid { .. }))
                        {
                            if last_seq.checked_add(1) == Some(seq) {
                                *last_seq = seq;
                                return self.after(line, hash, seq);
                            }
                        }
                        self.report.problems.push(Problem::MacInvalid {
                            seq,
                            last_seq: seq,
                            segment: segment.to_string(),
                            line: line_no,
                            epoch,
                        })
                    }
                    None if !self.has_seed => self.report.macs_unchecked += 1,
                    None => {} // impossible epoch: reported by `epoch`
                }
            }
            None if self.saw_mac => self.report.problems.push(Problem::MacMissing {
                seq,
                segment: segment.to_string(),
                line: line_no,
            }),
            None => {}
        }
        self.after(line, hash, seq)
    }

    /// Book-keeping once a record is checked.
    fn after(&mut self, line: &[u8], hash: [u8; 32], seq: u64) -> Result<(), LedgerError> {
        if self.recovered {
            if let Ok(ev) = serde_json::from_slice::<Event>(line) {
                if ev.kind == EventKind::SystemLedgerRecovered {
                    self.report.notices.push(format!(
                        "seq {}: a torn record left by a killed writer was quarantined: {}",
                        ev.seq,
                        ev.detail.map(|d| d.to_string()).unwrap_or_default()
                    ));
                }
            }
        }
        self.report.records += 1;
        self.max_seq = self.max_seq.max(seq);
        self.report.first_seq.get_or_insert(seq);
        self.report.last_seq = Some(seq);
        self.prev = Some((seq, hash));
        Ok(())
    }

    /// Epochs only move forward, one at a time, and each step is authenticated by the tag
    /// that closed the previous epoch (bound to the record before it). A record that does not
    /// fit is blamed; a run of records continuing its epoch is reported once.
    fn epoch(&mut self, epoch: u64, at: &Site<'_>, impossible: bool, transition: Option<[u8; 32]>) {
        let t = &mut self.epochs;
        t.first.get_or_insert(epoch);
        t.last = Some(epoch);
        let trusted = t.trusted;
        let fits = !impossible
            && match trusted {
                // The first MAC'd record starts at epoch 0 (unless we start mid-ledger).
                None => epoch == 0 || self.from > 1,
                Some(e) if epoch == e => true,
                Some(e) if e.checked_add(1) == Some(epoch) => {
                    match (transition, self.keys.as_mut(), self.prev) {
                        (None, _, _) => false,
                        (Some(tag), Some(keys), Some((pseq, phash))) => {
                            keys.at(e).verify_transition(pseq, &phash, &tag)
                        }
                        // No seed: the step is plausible, its tag unchecked.
                        (Some(_), _, _) => true,
                    }
                }
                Some(_) => false,
            };
        if fits {
            t.trusted = Some(epoch);
            t.blamed_run = None;
            t.max_seen = Some(t.max_seen.map_or(epoch, |m| m.max(epoch)));
            return;
        }
        if t.blamed_run == Some(epoch) {
            return; // the rest of a run already reported
        }
        t.blamed_run = Some(epoch);
        let e = trusted.unwrap_or(0);
        if !impossible && trusted.is_none_or(|tr| epoch > tr) {
            // A step forward that is not authenticated: report it once and follow it, so the
            // epochs after it are judged against it rather than all reported again.
            t.trusted = Some(epoch);
            t.max_seen = Some(t.max_seen.map_or(epoch, |m| m.max(epoch)));
        }
        self.report.problems.push(Problem::MacWrongEpoch {
            seq: at.seq,
            segment: at.segment.to_string(),
            line: at.line,
            epoch,
            previous_epoch: e,
        });
    }

    fn check_checkpoints(&mut self) {
        while let Some((file, cp)) = self.checkpoints.get(self.next_cp) {
            if cp.size > self.frontier.size() {
                break;
            }
            if cp.size == self.frontier.size() {
                if cp.root == self.frontier.root() {
                    self.matched_sizes.push(cp.size);
                    self.report.checkpoints_verified += 1;
                    self.report.latest_checkpoint = Some(cp.size);
                } else {
                    self.report.problems.push(Problem::CheckpointMismatch {
                        file: file.clone(),
                        size: cp.size,
                        diverges_from: self
                            .matched_sizes
                            .iter()
                            .rfind(|&&m| m < cp.size)
                            .copied()
                            .unwrap_or(0)
                            + 1,
                    });
                }
            }
            self.next_cp += 1;
        }
    }

    fn finish(mut self, opts: &VerifyOptions) -> VerifyReport {
        let records = self.frontier.size();
        if self.report.records > 0 {
            self.report.head_hash = self.prev.map(|(_, h)| hex::encode(h));
        }
        for (file, cp) in self.checkpoints.drain(self.next_cp..) {
            self.report.problems.push(Problem::Truncated {
                file,
                size: cp.size,
                records,
            });
        }
        let late = std::mem::take(&mut self.late);
        self.report.problems.retain(|p| match p {
            Problem::Missing {
                from_seq, to_seq, ..
            } => !(*from_seq..=*to_seq).all(|s| late.contains(&s)),
            _ => true,
        });
        if let (Some(first), Some(last)) = (self.epochs.first, self.epochs.last) {
            self.report.mac_epochs = Some((first, last));
        }
        if self.report.macs_unchecked > 0 && !opts.skip_macs {
            self.report.unchecked.push(format!(
                "{} records carry MACs but no verification seed was given: MACs not checked",
                self.report.macs_unchecked
            ));
        }
        if opts.seed.is_some() && !self.saw_mac && self.report.records > 0 {
            self.report
                .notices
                .push("a seed was given but no record carries a MAC (MACs were off)".into());
        }
        // Earliest place first: that is where to start looking; file-level problems last.
        self.report.problems.sort_by_key(|p| match p {
            // A mismatch spans a range; the precise record problems inside it come first.
            Problem::CheckpointMismatch { size, .. } => (0, *size),
            _ => p.seq().map_or((1, 0), |s| (0, s)),
        });
        self.report.settle();
        self.report
    }
}

fn check_permissions(
    seg: &SegmentInfo,
    is_last: bool,
    name: &str,
    report: &mut VerifyReport,
) -> Result<(), LedgerError> {
    if is_last {
        return Ok(());
    }
    let mode = std::fs::metadata(&seg.path)
        .map_err(LedgerError::io(&seg.path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o222 != 0 {
        report.problems.push(Problem::SegmentWritable {
            segment: name.to_string(),
            mode: format!("{mode:04o}"),
        });
    }
    Ok(())
}

/// Every checkpoint file (local and anchored), checked against the trusted key, sorted by
/// size. Invalid ones become problems; no key and no checkpoints is a notice.
fn load_checkpoints(
    data_dir: &Path,
    opts: &VerifyOptions,
    verifier: Option<&NoteVerifier>,
    report: &mut VerifyReport,
) -> Result<Vec<(String, Checkpoint)>, LedgerError> {
    // (label, note text) of every checkpoint: local files, then each anchor's.
    let mut files: Vec<(String, String)> = Vec::new();
    for (_, path) in list_checkpoints(&data_dir.join(CHECKPOINT_DIR))? {
        let text = std::fs::read_to_string(&path).map_err(LedgerError::io(&path))?;
        let label = path
            .strip_prefix(data_dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        files.push((label, text));
    }
    let dir_anchors: Vec<DirAnchor> = opts.anchor_dirs.iter().map(DirAnchor::new).collect();
    let anchors = dir_anchors
        .iter()
        .map(|a| a as &dyn CheckpointAnchor)
        .chain(opts.anchors.iter().map(|a| a.as_ref()));
    for anchor in anchors {
        match anchor.fetch_all() {
            Ok(items) => files.extend(items),
            Err(e) => report.unchecked.push(format!(
                "the checkpoints anchored at {} could not be read: {e}",
                anchor.label()
            )),
        }
    }
    let Some(verifier) = verifier.cloned() else {
        if files.is_empty() {
            report
                .notices
                .push("no signed checkpoints yet: only the hash chain was checked".into());
        } else {
            report.unchecked.push(format!(
                "{} checkpoint files exist but the public key to check them is missing (keys/checkpoint.vkey, or pass the key you were given)",
                files.len()
            ));
        }
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (label, text) in files {
        let parsed = open_note(&text, std::slice::from_ref(&verifier))
            .and_then(Checkpoint::parse)
            .map_err(|e| e.to_string())
            .and_then(|cp| {
                if cp.origin == verifier.name() {
                    Ok(cp)
                } else {
                    Err(format!(
                        "origin {} is not this log's ({})",
                        cp.origin,
                        verifier.name()
                    ))
                }
            });
        match parsed {
            Ok(cp) => out.push((label, cp)),
            Err(reason) => report.problems.push(Problem::CheckpointInvalid {
                file: label,
                reason,
            }),
        }
    }
    out.sort_by_key(|(_, cp)| cp.size);
    // Two signed statements about the same size must agree.
    for pair in out.windows(2) {
        let ((fa, a), (fb, b)) = (&pair[0], &pair[1]);
        if a.size == b.size && a.root != b.root {
            report.problems.push(Problem::Fork {
                size: a.size,
                files: (fa.clone(), fb.clone()),
            });
        }
    }
    Ok(out)
}

/// The tombstones of the removed prefix, checked: problems for invalid ones, gaps and
/// segments still present that differ from what was tombstoned; the report lists the removed
/// segments. Returns the newest tombstone of the prefix (where the walk continues).
fn load_removed(
    data_dir: &Path,
    opts: &VerifyOptions,
    verifier: Option<&NoteVerifier>,
    segments: &[SegmentInfo],
    report: &mut VerifyReport,
) -> Result<Option<Tombstone>, LedgerError> {
    let mut tombs = Tombstones::load(data_dir, &opts.anchor_dirs, &opts.anchors, verifier)?;
    report.unchecked.append(&mut tombs.unreadable);
    if tombs.files == 0 {
        return Ok(None);
    }
    if verifier.is_none() {
        report.unchecked.push(format!(
            "{} tombstone files exist but the public key to check them is missing (keys/checkpoint.vkey, or pass the key you were given)",
            tombs.files
        ));
        // Follow the (unchecked) newest one, so the records after it are still checked.
        return removed_through(data_dir);
    }
    let through = tombs.through();
    for (file, reason) in std::mem::take(&mut tombs.invalid) {
        report
            .problems
            .push(Problem::TombstoneInvalid { file, reason });
    }
    for (file, first_seq, expected) in std::mem::take(&mut tombs.not_prefix) {
        report.problems.push(Problem::TombstoneNotPrefix {
            file,
            first_seq,
            expected,
        });
    }
    for seg in segments.iter().filter(|s| s.first_seq <= through) {
        let name = name_of(&seg.path);
        let Some((label, t)) = tombs
            .ranges
            .iter()
            .find(|(_, t)| t.first_seq == seg.first_seq)
        else {
            report.problems.push(Problem::TombstoneMismatch {
                file: name,
                reason: format!(
                    "this segment starts inside the removed records 1..={through} but no tombstone starts with it"
                ),
            });
            continue;
        };
        let bytes = std::fs::read(&seg.path).map_err(LedgerError::io(&seg.path))?;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        if name != t.segment || sha != t.sha256 || bytes.len() as u64 != t.bytes {
            report.problems.push(Problem::TombstoneMismatch {
                file: name,
                reason: format!(
                    "still present but not the segment {label} signed as removed (SHA-256 {} instead of {}) — modified after it was tombstoned",
                    short(&sha),
                    short(&t.sha256)
                ),
            });
        } else {
            report.notices.push(format!(
                "{name}: removed under {label} but still present (an interrupted removal; the next `mcptrail retention run` deletes it); its bytes match the tombstone"
            ));
        }
    }
    report.removed = tombs
        .ranges
        .iter()
        .map(|(label, t)| RemovedSegment {
            first_seq: t.first_seq,
            last_seq: t.last_seq,
            segment: t.segment.clone(),
            state: t.state,
            tombstone: label.clone(),
            time: t.time.clone(),
            archive: t.archive.clone(),
            meta: t.meta.clone(),
        })
        .collect();
    Ok(tombs.ranges.into_iter().last().map(|(_, t)| t))
}

/// Whether another process holds the writer lock at this moment.
fn writer_active(ledger_dir: &Path) -> bool {
    let Ok(f) = File::open(ledger_dir.join("LOCK")) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(_) => true,
    }
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string()
}
