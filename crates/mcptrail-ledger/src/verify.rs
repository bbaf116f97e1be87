//! Chain verification: walks every stored line and reports exactly what is wrong and where.

use std::fs::File;
use std::path::{Path, PathBuf};

use mcptrail_event::{Event, EventKind, GENESIS_HASH};
use serde::Serialize;
use sha2::{Digest, Sha256};

use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::note::open as open_note;
use mcptrail_integrity::{Checkpoint, NoteVerifier};

use crate::checkpoint::{list_checkpoints, local_verifier, record_leaf, CHECKPOINT_DIR};
use crate::{LedgerError, LedgerReader, LEDGER_DIR};

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
}

/// One integrity problem, located precisely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
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

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
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
            Problem::CheckpointMismatch { file, size } => write!(
                f,
                "{file}: records 1..={size} do not match this signed checkpoint — records were altered (even if the hash chain was recomputed) or the log forked"
            ),
            Problem::Truncated { file, size, records } => write!(
                f,
                "{file}: signed at {size} records but the ledger holds {records} — records {}..={size} were removed (truncation or rollback)",
                records + 1
            ),
            Problem::TornTail { segment, offset, length } => write!(
                f,
                "{segment} byte {offset}: torn last line ({length} bytes) — a writer was killed mid-record; the next writer quarantines it"
            ),
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
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify the hash chain of the ledger in `data_dir`.
pub fn verify(data_dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport, LedgerError> {
    let ledger_dir = data_dir.join(LEDGER_DIR);
    let mut reader = LedgerReader::open(data_dir, opts.from_seq)?;
    let mut report = VerifyReport {
        segments: reader.segments().len(),
        ..Default::default()
    };
    let mut prev: Option<(u64, [u8; 32])> = None;
    let mut current_segment: Option<PathBuf> = None;
    let from = opts.from_seq.max(1);
    // Seqs that turned up out of order: a "missing" range they cover was a reordering.
    let mut late = std::collections::BTreeSet::new();
    let mut max_seq = 0u64;
    let check_tree = from <= 1;
    let mut checkpoints = if check_tree {
        load_checkpoints(data_dir, opts, &mut report)?
    } else {
        Vec::new()
    };
    let mut next_cp = 0usize;
    let mut frontier = Frontier::new();

    while let Some(rec) = reader.next_record()? {
        let seg_name = name_of(&rec.segment);
        let new_segment = current_segment.as_deref() != Some(rec.segment.as_path());
        if new_segment {
            current_segment = Some(rec.segment.clone());
        }
        let hash: [u8; 32] = Sha256::digest(&rec.line).into();
        if check_tree {
            frontier.push(record_leaf(&hash));
            while let Some((file, cp)) = checkpoints.get(next_cp) {
                if cp.size > frontier.size() {
                    break;
                }
                if cp.size == frontier.size() {
                    if cp.root == frontier.root() {
                        report.checkpoints_verified += 1;
                        report.latest_checkpoint = Some(cp.size);
                    } else {
                        report.problems.push(Problem::CheckpointMismatch {
                            file: file.clone(),
                            size: cp.size,
                        });
                    }
                }
                next_cp += 1;
            }
        }
        let ev: Event = match serde_json::from_slice(&rec.line) {
            Ok(ev) => ev,
            Err(e) => {
                report.problems.push(Problem::Unparseable {
                    segment: seg_name,
                    line: rec.line_no,
                    error: e.to_string(),
                });
                // Keep the hash so the next record's link is still checked against these bytes.
                prev = Some((max_seq + 1, hash));
                max_seq += 1;
                continue;
            }
        };
        if ev.seq < from {
            max_seq = ev.seq;
            prev = Some((ev.seq, hash));
            continue;
        }
        if new_segment {
            let named = rec
                .segment
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("seg-"))
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok());
            if rec.line_no == 1 && named != Some(ev.seq) {
                report.problems.push(Problem::SegmentMisnamed {
                    segment: seg_name.clone(),
                    first_record_seq: ev.seq,
                });
            }
        }
        match prev {
            None => {
                if from <= 1 && (ev.seq != 1 || ev.prev_hash != GENESIS_HASH) {
                    report.problems.push(Problem::BadGenesis { seq: ev.seq });
                }
            }
            Some((_, phash)) => {
                let expected = max_seq + 1;
                if ev.seq > expected {
                    report.problems.push(Problem::Missing {
                        from_seq: expected,
                        to_seq: ev.seq - 1,
                        segment: seg_name.clone(),
                        line: rec.line_no,
                    });
                } else if ev.seq < expected {
                    late.insert(ev.seq);
                    report.problems.push(Problem::OutOfOrder {
                        seq: ev.seq,
                        expected,
                        segment: seg_name.clone(),
                        line: rec.line_no,
                    });
                }
                let actual = hex::encode(phash);
                if ev.prev_hash != actual {
                    report.problems.push(Problem::ChainBroken {
                        seq: ev.seq,
                        segment: seg_name.clone(),
                        line: rec.line_no,
                        stored_prev_hash: ev.prev_hash.clone(),
                        actual_prev_hash: actual,
                    });
                }
            }
        }
        if ev.kind == EventKind::SystemLedgerRecovered {
            report.notices.push(format!(
                "seq {}: a torn record left by a killed writer was quarantined: {}",
                ev.seq,
                ev.detail
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ));
        }
        report.records += 1;
        max_seq = max_seq.max(ev.seq);
        report.first_seq.get_or_insert(ev.seq);
        report.last_seq = Some(ev.seq);
        report.head_hash = Some(hex::encode(hash));
        prev = Some((ev.seq, hash));
    }

    for (file, cp) in checkpoints.drain(next_cp..) {
        report.problems.push(Problem::Truncated {
            file,
            size: cp.size,
            records: frontier.size(),
        });
    }

    report.problems.retain(|p| match p {
        Problem::Missing {
            from_seq, to_seq, ..
        } => !(*from_seq..=*to_seq).all(|s| late.contains(&s)),
        _ => true,
    });

    if let Some((path, offset, length)) = reader.torn_tail().cloned() {
        if writer_active(&ledger_dir) {
            report.notices.push(format!("{}: a writer is appending right now; its unfinished line at byte {offset} was not checked", name_of(&path)));
        } else {
            report.problems.push(Problem::TornTail {
                segment: name_of(&path),
                offset,
                length,
            });
        }
    }
    Ok(report)
}

/// Every checkpoint file (local and anchored), checked against the trusted key, sorted by
/// size. Invalid ones become problems; no key and no checkpoints is a notice.
fn load_checkpoints(
    data_dir: &Path,
    opts: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<Vec<(String, Checkpoint)>, LedgerError> {
    let dirs: Vec<PathBuf> = std::iter::once(data_dir.join(CHECKPOINT_DIR))
        .chain(opts.anchor_dirs.iter().cloned())
        .collect();
    let mut files = Vec::new();
    for dir in &dirs {
        files.extend(list_checkpoints(dir)?);
    }
    let verifier = match &opts.verifier {
        Some(v) => Some(v.clone()),
        None => local_verifier(data_dir)?,
    };
    let Some(verifier) = verifier else {
        if files.is_empty() {
            report
                .notices
                .push("no signed checkpoints yet: only the hash chain was checked".into());
        } else {
            report.problems.push(Problem::CheckpointInvalid {
                file: "keys/checkpoint.vkey".into(),
                reason: "checkpoints exist but the public key to check them is missing".into(),
            });
        }
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (_, path) in files {
        let label = path
            .strip_prefix(data_dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        let text = std::fs::read_to_string(&path).map_err(LedgerError::io(&path))?;
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
    Ok(out)
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
