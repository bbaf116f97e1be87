//! Signed checkpoints shipped through sinks (issue 11, item 4): the evidence of integrity
//! leaves the machine beside the events.
//!
//! The ledger writes every signed checkpoint (a C2SP `tlog-checkpoint` note: origin, tree
//! size, root hash, signature) to `<data_dir>/checkpoints/cp-<size>.note`. A sink that carries
//! them reads the notes newer than the last one it shipped and sends them with its next batch:
//!
//! - S3 (Object Lock): each note is an object `<prefix>checkpoints/cp-<size>.note`, and the
//!   bucket is a [`CheckpointAnchor`](mcptrail_ledger::CheckpointAnchor) `verify` checks the
//!   local log against ([`crate::sink::s3::S3Anchor`]).
//! - Splunk HEC and Elasticsearch: one record per note in the same request as the batch
//!   (sourcetype `mcptrail:checkpoint`; `_id` = [`CheckpointNote::record_id`]), so a SOC can
//!   compare the newest tree size it holds with what a host still has.
//!
//! Which note was shipped last is kept per sink in `sinks/<name>.checkpoints` (a decimal tree
//! size, written atomically after the receiver acknowledged). Losing that file only means the
//! notes are sent again: receivers dedupe them by their id.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cursor::SINKS_DIR;

/// At most this many notes ride along with one batch (a first run over an old ledger sends
/// the rest with the following batches).
pub const NOTES_PER_BATCH: usize = 64;

/// One signed checkpoint as a sink ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointNote {
    /// Tree size (records covered).
    pub size: u64,
    /// The log's origin line (its name).
    pub origin: String,
    /// Root hash, base64 as in the note.
    pub root: String,
    /// The whole signed note, byte for byte.
    pub note: String,
    /// `cp-<size>.note`.
    pub file_name: String,
    /// When the note was written (RFC 3339), from the file's modification time.
    pub written: String,
}

impl CheckpointNote {
    /// A stable id across sends and hosts: `checkpoint-<16 hex of SHA-256(origin)>-<size>`.
    pub fn record_id(&self) -> String {
        let h = Sha256::digest(self.origin.as_bytes());
        format!("checkpoint-{}-{}", hex::encode(&h[..8]), self.size)
    }

    /// The note as a JSON object (`kind` = `checkpoint`), the record Splunk and
    /// Elasticsearch receive.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "checkpoint",
            "checkpoint_id": self.record_id(),
            "origin": self.origin,
            "size": self.size,
            "root": self.root,
            "written": self.written,
            "note": self.note,
        })
    }
}

/// Origin, size and root hash of a signed note (its first three lines), without checking the
/// signature (`verify` does that with the trusted key).
pub fn parse_note(text: &str) -> Option<(String, u64, String)> {
    let mut lines = text.lines();
    let origin = lines.next()?.to_string();
    let size = lines.next()?.parse().ok()?;
    let root = lines.next()?.to_string();
    (!origin.is_empty() && !root.is_empty()).then_some((origin, size, root))
}

/// The checkpoints of `data_dir` with a tree size above `after`, oldest first, at most
/// `limit`.
pub fn pending(data_dir: &Path, after: u64, limit: usize) -> Result<Vec<CheckpointNote>, String> {
    let dir = data_dir.join(mcptrail_ledger::CHECKPOINT_DIR);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (size, path) in mcptrail_ledger::list_checkpoints(&dir).map_err(|e| e.to_string())? {
        if size <= after {
            continue;
        }
        if out.len() >= limit {
            break;
        }
        let note =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Some((origin, parsed_size, root)) = parse_note(&note) else {
            return Err(format!(
                "{} is not a signed checkpoint note (run `mcptrail verify`)",
                path.display()
            ));
        };
        if parsed_size != size {
            return Err(format!(
                "{} holds the checkpoint of size {parsed_size} (run `mcptrail verify`)",
                path.display()
            ));
        }
        let written = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .map(time::OffsetDateTime::from)
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        out.push(CheckpointNote {
            size,
            origin,
            root,
            note,
            file_name: mcptrail_ledger::checkpoint_file_name(size),
            written,
        });
    }
    Ok(out)
}

/// `sinks/<name>.checkpoints`: the largest tree size a sink has delivered.
#[derive(Debug, Clone)]
pub struct CheckpointProgress {
    path: PathBuf,
}

impl CheckpointProgress {
    /// The progress file of sink `name` in `data_dir`.
    pub fn new(data_dir: &Path, name: &str) -> Self {
        CheckpointProgress {
            path: data_dir.join(SINKS_DIR).join(format!("{name}.checkpoints")),
        }
    }

    /// A progress file of the same kind at `sinks/<file_name>` (the S3 sink keeps the first
    /// seq of the newest sealed segment it uploaded in `sinks/<name>.segments`).
    pub fn named(data_dir: &Path, file_name: &str) -> Self {
        CheckpointProgress {
            path: data_dir.join(SINKS_DIR).join(file_name),
        }
    }

    /// The size shipped last (0: none, or an unreadable file — the notes are then sent again).
    pub fn load(&self) -> u64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Record that every note up to `size` was delivered (atomic and durable, 0600: see
    /// [`mcptrail_ledger::write_private_atomic`]).
    pub fn store(&self, size: u64) -> Result<(), String> {
        let dir = self.path.parent().expect("a file in sinks/");
        mcptrail_ledger::create_private_dir(dir)
            .and_then(|()| {
                mcptrail_ledger::write_private_atomic(&self.path, format!("{size}\n").as_bytes())
            })
            .map_err(|e| e.to_string())
    }
}

/// Which retention tombstones a sink has delivered: their file names, one a line, in
/// `sinks/<name>.tombstones` (written atomically, 0600, after the receiver acknowledged).
/// Losing the file only means they are sent again: receivers dedupe them.
pub struct TombstoneProgress {
    path: PathBuf,
}

impl TombstoneProgress {
    /// The tombstone progress of sink `name` in `data_dir`.
    pub fn new(data_dir: &Path, name: &str) -> Self {
        TombstoneProgress {
            path: data_dir.join(SINKS_DIR).join(format!("{name}.tombstones")),
        }
    }

    /// The tombstones of the ledger in `data_dir` not delivered yet, oldest first:
    /// (file name, signed note).
    pub fn pending(&self, data_dir: &Path) -> Result<Vec<(String, String)>, String> {
        let done = self.done();
        let files =
            mcptrail_ledger::list_tombstones(&data_dir.join(mcptrail_ledger::TOMBSTONE_DIR))
                .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for path in files {
            let name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if done.contains(&name) {
                continue;
            }
            let note =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.push((name, note));
        }
        Ok(out)
    }

    fn done(&self) -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Record that the tombstones `names` were delivered (besides those recorded before).
    pub fn store<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let mut done = self.done();
        done.extend(names.into_iter().map(String::from));
        let text: String = done.iter().map(|n| format!("{n}\n")).collect();
        let dir = self.path.parent().expect("a file in sinks/");
        mcptrail_ledger::create_private_dir(dir)
            .and_then(|()| mcptrail_ledger::write_private_atomic(&self.path, text.as_bytes()))
            .map_err(|e| e.to_string())
    }
}

/// A tombstone's delivery id across sends and hosts:
/// `tombstone-<16 hex of SHA-256(origin)>-<file name>`.
pub fn tombstone_id(origin: &str, file_name: &str) -> String {
    let h = Sha256::digest(origin.as_bytes());
    format!("tombstone-{}-{file_name}", hex::encode(&h[..8]))
}

/// The checkpoint anchors of the configured sinks, for `verify`: every S3 sink with
/// `checkpoints = true`. A sink whose anchor cannot be set up (missing credentials) is still
/// returned, as an anchor that fails to fetch with the reason, so the report says what was not
/// checked instead of passing silently.
pub fn sink_anchors(
    sinks: &[crate::SinkConfig],
) -> Vec<std::sync::Arc<dyn mcptrail_ledger::CheckpointAnchor>> {
    let mut out: Vec<std::sync::Arc<dyn mcptrail_ledger::CheckpointAnchor>> = Vec::new();
    for s in sinks {
        if let crate::SinkTarget::S3(c) = &s.target {
            if !c.checkpoints {
                continue;
            }
            match crate::sink::s3::S3Anchor::new(c) {
                Ok(a) => out.push(std::sync::Arc::new(a)),
                Err(reason) => out.push(std::sync::Arc::new(UnavailableAnchor {
                    label: format!("sink \"{}\" (s3://{})", s.name, c.bucket),
                    reason,
                })),
            }
        }
    }
    out
}

/// An anchor that could not be set up: fetching says why.
#[derive(Debug)]
pub struct UnavailableAnchor {
    /// Which anchor.
    pub label: String,
    /// Why it is unavailable (never a secret).
    pub reason: String,
}

impl mcptrail_ledger::CheckpointAnchor for UnavailableAnchor {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn publish(&self, _size: u64, _note: &str) -> Result<(), mcptrail_ledger::LedgerError> {
        Err(self.error())
    }

    fn fetch_all(&self) -> Result<Vec<(String, String)>, mcptrail_ledger::LedgerError> {
        Err(self.error())
    }
}

impl UnavailableAnchor {
    fn error(&self) -> mcptrail_ledger::LedgerError {
        mcptrail_ledger::LedgerError::Anchor {
            anchor: self.label.clone(),
            reason: self.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_parse_and_get_stable_ids() {
        let text = "mcptrail.local/h/ab12\n42\nq6o1hGnqW1SuI8SxTS3IHAl6d7qJjvEMuFb6x7tRgtI=\n\n— mcptrail.local/h/ab12 AAAA\n";
        let (origin, size, root) = parse_note(text).unwrap();
        assert_eq!((origin.as_str(), size), ("mcptrail.local/h/ab12", 42));
        assert!(root.ends_with('='));
        assert_eq!(parse_note("x\nnot a number\nr\n"), None);
        let n = CheckpointNote {
            size,
            origin,
            root,
            note: text.into(),
            file_name: mcptrail_ledger::checkpoint_file_name(42),
            written: String::new(),
        };
        assert!(n.record_id().starts_with("checkpoint-"));
        assert!(n.record_id().ends_with("-42"));
        assert_eq!(n.to_json()["kind"], "checkpoint");
    }

    #[test]
    fn progress_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = CheckpointProgress::new(dir.path(), "s");
        assert_eq!(p.load(), 0);
        p.store(77).unwrap();
        assert_eq!(p.load(), 77);
    }
}
