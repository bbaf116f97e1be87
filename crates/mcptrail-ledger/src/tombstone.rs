//! Signed tombstones: what a lawful removal of sealed segments (retention) leaves in their
//! place, so that `verify` can still check everything after them.
//!
//! One tombstone per removed segment, `<data_dir>/tombstones/ts-<first seq>-<state>.note`
//! (0600; copied to `<anchor_dir>/tombstones/` when an anchor directory is configured). A
//! tombstone is a C2SP `tlog-checkpoint` signed note with the ledger's checkpoint key — origin,
//! tree size (= the segment's last seq), the RFC 9162 root at that size — whose extension lines
//! carry what a verifier needs to continue after the removed records:
//!
//! ```text
//! mcptrail.local/laptop/1a2b3c4d           origin (the ledger's checkpoint key name)
//! 4096                                     tree size = last seq of the removed segment
//! <base64 root>                            RFC 9162 root of records 1..=4096
//! mcptrail-tombstone v1
//! state purged                             archived (removed here, kept in an archive) | purged
//! segment seg-00000000000000000001.jsonl 1 4096 <bytes> <sha256 of the file>
//! last-hash <hex>                          record hash of seq 4096 = prev_hash of seq 4097
//! frontier <hex> <hex> …                   the tree's right edge at 4096 (one root per set bit)
//! mac-epoch 7                              MAC epoch of seq 4096 (`none`: no MACs)
//! times <first event time> <last event time>
//! labels ["pci","pii"]                     labels of the segment's events (JSON)
//! archive "/mnt/archive"                   where a copy is kept (JSON string; `-`: nowhere)
//! time <when the tombstone was signed>
//! meta {"policy":…,"authorisation":…}      compact JSON: why (policy, who asked, who approved)
//!
//! — mcptrail.local/laptop/1a2b3c4d <base64 signature>
//! ```
//!
//! Because the body is a checkpoint, any C2SP tool can read the size and root. The frontier
//! (the compact range of the removed prefix) is enough to compute the root at every later size
//! and every inclusion proof for a later record, so checkpoints, evidence bundles and the
//! Merkle tree continue; `last-hash` continues the hash chain; `mac-epoch` continues the MAC
//! epoch sequence (the next epoch's transition tag binds `last seq` and `last-hash`).
//!
//! A segment archived first and purged later gets a second tombstone for the same range
//! (state `purged`); both must agree. `verify` requires the tombstones to cover exactly
//! `1..=P` without a gap or overlap, each validly signed, and the ledger to continue at
//! `P + 1`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::note::open as open_note;
use mcptrail_integrity::{Checkpoint, NoteSigner, NoteVerifier};
use serde::Serialize;

use crate::segment::{ensure_private_dir, sync_dir};
use crate::LedgerError;

/// Directory of tombstones under the data directory (and under an anchor directory).
pub const TOMBSTONE_DIR: &str = "tombstones";
const MAGIC: &str = "mcptrail-tombstone v1";

/// What happened to the records a tombstone covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TombstoneState {
    /// Removed from this machine; a verified copy is kept in an archive.
    Archived,
    /// Deleted everywhere mcptrail can delete (an Object Lock copy expires on its own).
    Purged,
}

impl TombstoneState {
    /// `archived` or `purged`.
    pub fn as_str(self) -> &'static str {
        match self {
            TombstoneState::Archived => "archived",
            TombstoneState::Purged => "purged",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "archived" => Some(TombstoneState::Archived),
            "purged" => Some(TombstoneState::Purged),
            _ => None,
        }
    }
}

/// The contents of one tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    /// The log's origin (the checkpoint key's name).
    pub origin: String,
    /// File name of the removed segment.
    pub segment: String,
    /// Its first seq.
    pub first_seq: u64,
    /// Its last seq (the tree size the tombstone signs).
    pub last_seq: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole segment file (hex), to check an archived copy against.
    pub sha256: String,
    /// Record hash of the last record (hex): the next record's `prev_hash`.
    pub last_hash: String,
    /// The Merkle tree's right edge after the last record: subtree roots, largest first (hex).
    pub frontier: Vec<String>,
    /// MAC epoch of the last record (`None`: records without MACs).
    pub mac_epoch: Option<u64>,
    /// Time of the first and of the last event in the segment (RFC 3339, as stored).
    pub times: (String, String),
    /// Labels of the segment's events.
    pub labels: Vec<String>,
    /// Archived or purged.
    pub state: TombstoneState,
    /// Where a copy is kept (a directory path, an `s3://` URL), if any.
    pub archive: Option<String>,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// Why: the policy and the authorisation (a JSON object).
    pub meta: serde_json::Value,
}

impl Tombstone {
    /// The record hash of the last record, as bytes.
    pub fn last_hash_bytes(&self) -> [u8; 32] {
        hex32(&self.last_hash).unwrap_or([0; 32])
    }

    /// The Merkle tree after the last record.
    pub fn tree(&self) -> Frontier {
        let roots = self.frontier.iter().filter_map(|h| hex32(h)).collect();
        Frontier::from_parts(self.last_seq, roots).unwrap_or_default()
    }

    /// The note body: a checkpoint with the tombstone's extension lines.
    pub fn to_text(&self) -> String {
        let tree = self.tree();
        let mut ext = vec![
            MAGIC.to_string(),
            format!("state {}", self.state.as_str()),
            format!(
                "segment {} {} {} {} {}",
                self.segment, self.first_seq, self.last_seq, self.bytes, self.sha256
            ),
            format!("last-hash {}", self.last_hash),
            format!("frontier {}", self.frontier.join(" ")),
            format!(
                "mac-epoch {}",
                self.mac_epoch
                    .map_or_else(|| "none".to_string(), |e| e.to_string())
            ),
            format!("times {} {}", self.times.0, self.times.1),
            format!("labels {}", serde_json::json!(self.labels)),
            format!(
                "archive {}",
                self.archive
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |a| serde_json::json!(a).to_string())
            ),
            format!("time {}", self.time),
            format!("meta {}", self.meta),
        ];
        ext.retain(|l| !l.is_empty());
        Checkpoint {
            origin: self.origin.clone(),
            size: self.last_seq,
            root: tree.root(),
            extensions: ext,
        }
        .to_text()
    }

    /// Sign with the ledger's checkpoint key.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, String> {
        let text = self.to_text();
        // What is signed must read back the same (no space in a name, no odd character).
        match Tombstone::parse_body(&text) {
            Ok(back) if back == *self => {}
            Ok(_) => return Err("the tombstone does not read back as written".into()),
            Err(e) => return Err(e),
        }
        signer.sign(&text).map_err(|e| e.to_string())
    }

    /// Check a tombstone note against the trusted key and read it.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Tombstone, String> {
        let text = open_note(note, std::slice::from_ref(verifier)).map_err(|e| e.to_string())?;
        let t = Tombstone::parse_body(text)?;
        if t.origin != verifier.name() {
            return Err(format!(
                "origin {} is not this log's ({})",
                t.origin,
                verifier.name()
            ));
        }
        Ok(t)
    }

    /// Read a tombstone note **without** checking its signature (the writer's own bookkeeping;
    /// `verify` always checks it).
    pub fn read_unverified(note: &str) -> Result<Tombstone, String> {
        let body = note
            .strip_suffix('\n')
            .and_then(|b| b.rfind("\n\n").map(|i| &note[..i + 1]))
            .ok_or("not a signed note")?;
        Tombstone::parse_body(body)
    }

    fn parse_body(text: &str) -> Result<Tombstone, String> {
        let cp = Checkpoint::parse(text).map_err(|e| e.to_string())?;
        let mut ext = cp.extensions.iter().map(String::as_str);
        if ext.next() != Some(MAGIC) {
            return Err(format!("not a tombstone (no `{MAGIC}` line)"));
        }
        let mut field = |name: &str| -> Result<&str, String> {
            let line = ext
                .next()
                .ok_or_else(|| format!("the `{name}` line is missing"))?;
            line.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' ').or((r.is_empty()).then_some("")))
                .ok_or_else(|| format!("expected the `{name}` line, found `{line}`"))
        };
        let state = field("state")?;
        let state = TombstoneState::parse(state).ok_or(format!("unknown state `{state}`"))?;
        let seg: Vec<&str> = field("segment")?.split(' ').collect();
        let [segment, first, last, bytes, sha256] = seg[..] else {
            return Err("the `segment` line is not `name first last bytes sha256`".into());
        };
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{what} `{s}` is not a number"))
        };
        let (first_seq, last_seq, bytes) = (
            num(first, "first seq")?,
            num(last, "last seq")?,
            num(bytes, "size")?,
        );
        if first_seq == 0 || first_seq > last_seq || last_seq != cp.size {
            return Err(format!(
                "the range {first_seq}..={last_seq} does not fit the signed tree size {}",
                cp.size
            ));
        }
        if hex32(sha256).is_none() {
            return Err("the segment's SHA-256 is not 64 hex digits".into());
        }
        let last_hash = field("last-hash")?.to_string();
        if hex32(&last_hash).is_none() {
            return Err("last-hash is not 64 hex digits".into());
        }
        let frontier: Vec<String> = field("frontier")?
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let roots = frontier
            .iter()
            .map(|h| hex32(h))
            .collect::<Option<Vec<_>>>()
            .ok_or("a frontier hash is not 64 hex digits")?;
        let tree = Frontier::from_parts(last_seq, roots)
            .ok_or("the frontier does not fit the tree size")?;
        if tree.root() != cp.root {
            return Err("the frontier does not hash to the signed root".into());
        }
        let mac_epoch = match field("mac-epoch")? {
            "none" => None,
            e => Some(num(e, "mac epoch")?),
        };
        let times = field("times")?
            .split_once(' ')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or("the `times` line is not `first last`")?;
        let labels: Vec<String> = serde_json::from_str(field("labels")?)
            .map_err(|e| format!("the `labels` line is not a JSON list of strings ({e})"))?;
        let archive = match field("archive")? {
            "-" => None,
            a => Some(
                serde_json::from_str::<String>(a)
                    .map_err(|e| format!("the `archive` line is not a JSON string ({e})"))?,
            ),
        };
        let time = field("time")?.to_string();
        let meta: serde_json::Value = serde_json::from_str(field("meta")?)
            .map_err(|e| format!("the `meta` line is not JSON ({e})"))?;
        if ext.next().is_some() {
            return Err("unexpected lines after `meta`".into());
        }
        Ok(Tombstone {
            origin: cp.origin,
            segment: segment.to_string(),
            first_seq,
            last_seq,
            bytes,
            sha256: sha256.to_string(),
            last_hash,
            frontier,
            mac_epoch,
            times,
            labels,
            state,
            archive,
            time,
            meta,
        })
    }

    /// Whether `other` describes the same removed records (same range, file and chain state).
    pub fn same_records(&self, other: &Tombstone) -> bool {
        (
            &self.segment,
            self.first_seq,
            self.last_seq,
            self.bytes,
            &self.sha256,
            &self.last_hash,
            &self.frontier,
            self.mac_epoch,
        ) == (
            &other.segment,
            other.first_seq,
            other.last_seq,
            other.bytes,
            &other.sha256,
            &other.last_hash,
            &other.frontier,
            other.mac_epoch,
        )
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}

/// File name of the tombstone of the segment starting at `first_seq`.
pub fn tombstone_file_name(first_seq: u64, state: TombstoneState) -> String {
    format!("ts-{first_seq:020}-{}.note", state.as_str())
}

/// Tombstone files in `dir`, ordered by name (first seq, then state). A missing directory has
/// none.
pub fn list_tombstones(dir: &Path) -> Result<Vec<PathBuf>, LedgerError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LedgerError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(LedgerError::io(dir))?;
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("ts-") && n.ends_with(".note"))
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Write a signed tombstone note into `dir` (0600, created exclusively, fsynced with its
/// directory). An identical file already there is fine (a retry).
pub(crate) fn store(dir: &Path, name: &str, note: &str) -> Result<PathBuf, LedgerError> {
    ensure_private_dir(dir)?;
    let path = dir.join(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(note.as_bytes()).and_then(|_| f.sync_all()));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let there = std::fs::read_to_string(&path).map_err(LedgerError::io(&path))?;
            let same = match (
                Tombstone::read_unverified(&there),
                Tombstone::read_unverified(note),
            ) {
                (Ok(a), Ok(b)) => a.same_records(&b) && a.state == b.state,
                _ => false,
            };
            if !same {
                return Err(LedgerError::Corrupt {
                    segment: path,
                    offset: 0,
                    reason: "a different tombstone for this segment already exists".into(),
                });
            }
        }
        Err(e) => return Err(LedgerError::io(&path)(e)),
    }
    sync_dir(dir)?;
    Ok(path)
}

/// Where the removed prefix ends, as the newest local tombstone says (signature **not**
/// checked: for the writer's and the readers' bookkeeping). `None`: nothing was removed.
pub fn removed_through(data_dir: &Path) -> Result<Option<Tombstone>, LedgerError> {
    let dir = data_dir.join(TOMBSTONE_DIR);
    let mut best: Option<Tombstone> = None;
    for path in list_tombstones(&dir)? {
        let bytes = std::fs::read(&path).map_err(LedgerError::io(&path))?;
        let text = String::from_utf8_lossy(&bytes);
        let t = Tombstone::read_unverified(&text).map_err(|reason| LedgerError::Corrupt {
            segment: path.clone(),
            offset: 0,
            reason: format!("not a readable tombstone ({reason}); run `mcptrail verify`"),
        })?;
        if best.as_ref().is_none_or(|b| t.last_seq > b.last_seq) {
            best = Some(t);
        }
    }
    Ok(best)
}

/// The tombstones of a ledger as `verify` sees them: every file (local and anchored) checked
/// against the trusted key, grouped by range.
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    /// One entry per removed segment, in seq order: (label of the newest file, tombstone).
    pub(crate) ranges: Vec<(String, Tombstone)>,
    /// (file, why) of every tombstone that is not valid or does not fit.
    pub(crate) invalid: Vec<(String, String)>,
    /// (file, first seq, seq expected) of tombstones that leave a gap or overlap.
    pub(crate) not_prefix: Vec<(String, u64, u64)>,
    /// Tombstone files found at all (valid or not).
    pub(crate) files: usize,
    /// Anchor directories whose tombstones could not be read.
    pub(crate) unreadable: Vec<String>,
}

impl Tombstones {
    /// The end of the removed prefix (0: none).
    pub(crate) fn through(&self) -> u64 {
        self.ranges.last().map_or(0, |(_, t)| t.last_seq)
    }

    pub(crate) fn load(
        data_dir: &Path,
        anchor_dirs: &[PathBuf],
        anchors: &[std::sync::Arc<dyn crate::CheckpointAnchor>],
        verifier: Option<&NoteVerifier>,
    ) -> Result<Tombstones, LedgerError> {
        let mut out = Tombstones::default();
        // Bytes that are not UTF-8 cannot be a note: an invalid tombstone, not an I/O error.
        let mut files: Vec<(String, String)> = Vec::new();
        let local = data_dir.join(TOMBSTONE_DIR);
        for path in list_tombstones(&local)? {
            let bytes = std::fs::read(&path).map_err(LedgerError::io(&path))?;
            let label = format!("{TOMBSTONE_DIR}/{}", file_name(&path));
            match String::from_utf8(bytes) {
                Ok(text) => files.push((label, text)),
                Err(_) => out.invalid.push((label, "not UTF-8 text".into())),
            }
        }
        for dir in anchor_dirs {
            let read = list_tombstones(&dir.join(TOMBSTONE_DIR)).and_then(|paths| {
                paths
                    .into_iter()
                    .map(|path| {
                        std::fs::read(&path)
                            .map(|b| {
                                let text = String::from_utf8(b).unwrap_or_else(|e| {
                                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                                });
                                (path.display().to_string(), text)
                            })
                            .map_err(LedgerError::io(&path))
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
            match read {
                Ok(found) => files.extend(found),
                Err(e) => out.unreadable.push(format!(
                    "the tombstones anchored at {} could not be read: {e}",
                    dir.display()
                )),
            }
        }
        for a in anchors {
            match a.fetch_tombstones() {
                Ok(found) => files.extend(found),
                Err(e) => out.unreadable.push(format!(
                    "the tombstones anchored at {} could not be read: {e}",
                    a.label()
                )),
            }
        }
        out.files = files.len() + out.invalid.len();
        let Some(verifier) = verifier else {
            // Without the key nothing can be trusted: the caller reports it.
            return Ok(out);
        };
        let mut valid: Vec<(String, Tombstone)> = Vec::new();
        for (label, text) in files {
            match Tombstone::open(&text, verifier) {
                Ok(t) => {
                    let expected = tombstone_file_name(t.first_seq, t.state);
                    if !label.ends_with(&expected) {
                        out.invalid.push((
                            label,
                            format!("its name does not match its contents (should be {expected})"),
                        ));
                    } else {
                        valid.push((label, t));
                    }
                }
                Err(reason) => out.invalid.push((label, reason)),
            }
        }
        valid.sort_by(|a, b| {
            (a.1.first_seq, a.1.state, &a.0).cmp(&(b.1.first_seq, b.1.state, &b.0))
        });
        // Group the files of each range; all must describe the same records.
        for (label, t) in valid {
            if let Some((plabel, prev)) = out.ranges.last_mut() {
                if prev.first_seq == t.first_seq {
                    if prev.same_records(&t) {
                        if t.state >= prev.state {
                            *plabel = label;
                            *prev = t;
                        }
                    } else {
                        out.invalid.push((
                            label,
                            format!(
                                "it disagrees with {plabel} about the records of seq {}..={}",
                                prev.first_seq, prev.last_seq
                            ),
                        ));
                    }
                    continue;
                }
            }
            let expected = out.through() + 1;
            if t.first_seq != expected {
                out.not_prefix.push((label, t.first_seq, expected));
                // Nothing after a gap can be trusted to continue the chain.
                continue;
            }
            out.ranges.push((label, t));
        }
        Ok(out)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(signer: &NoteSigner) -> Tombstone {
        let mut f = Frontier::new();
        for i in 0u8..5 {
            f.push([i; 32]);
        }
        Tombstone {
            origin: signer.verifier().name().to_string(),
            segment: "seg-00000000000000000001.jsonl".into(),
            first_seq: 1,
            last_seq: 5,
            bytes: 2000,
            sha256: "ab".repeat(32),
            last_hash: hex::encode([4u8; 32]),
            frontier: f.subtree_roots().map(hex::encode).collect(),
            mac_epoch: Some(2),
            times: (
                "2026-01-01T00:00:00.000000000Z".into(),
                "2026-01-02T00:00:00.000000000Z".into(),
            ),
            labels: vec!["pci".into(), "pii".into()],
            state: TombstoneState::Purged,
            archive: Some("/mnt/archive".into()),
            time: "2027-01-03T00:00:00Z".into(),
            meta: serde_json::json!({"policy": {"default_days": 90}, "authorisation": {"requested_by": "a \"b\"\nc"}}),
        }
    }

    #[test]
    fn round_trips_and_is_a_checkpoint() {
        let signer = NoteSigner::generate("mcptrail.test/ts").unwrap();
        let t = sample(&signer);
        let note = t.sign(&signer).unwrap();
        assert_eq!(Tombstone::open(&note, &signer.verifier()).unwrap(), t);
        assert_eq!(Tombstone::read_unverified(&note).unwrap(), t);
        // Any checkpoint reader sees size 5 and the root of the 5 leaves.
        let body = open_note(&note, &[signer.verifier()]).unwrap();
        let cp = Checkpoint::parse(body).unwrap();
        assert_eq!((cp.size, cp.root), (5, t.tree().root()));
    }

    #[test]
    fn a_meta_number_reads_back_the_same_from_the_tombstones_own_text() {
        // Found by the `tombstone` fuzz target: a float that JSON parsing without exact
        // rounding read as a neighbour of the number the text was written from.
        let signer = NoteSigner::generate("mcptrail.test/ts").unwrap();
        let mut t = sample(&signer);
        let note = t.sign(&signer).unwrap();
        let text = note.replace(
            "\"default_days\":90",
            "\"default_days\":2665364527374987.987e14",
        );
        t = Tombstone::read_unverified(&text).unwrap();
        let again = Tombstone::read_unverified(&format!("{}\n— x AAAA\n", t.to_text())).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn tampered_or_foreign_tombstones_are_refused() {
        let signer = NoteSigner::generate("mcptrail.test/ts").unwrap();
        let note = sample(&signer).sign(&signer).unwrap();
        let edited = note.replace("state purged", "state archived");
        assert!(Tombstone::open(&edited, &signer.verifier()).is_err());
        let other = NoteSigner::generate("mcptrail.test/ts").unwrap();
        assert!(Tombstone::open(&note, &other.verifier()).is_err());
        // A frontier that does not hash to the signed root is refused even when signed.
        let mut t = sample(&signer);
        t.frontier[0] = "00".repeat(32);
        let text = t.to_text();
        let root_line = text.lines().nth(2).unwrap().to_string();
        let good_root = sample(&signer)
            .to_text()
            .lines()
            .nth(2)
            .unwrap()
            .to_string();
        let forged = signer.sign(&text.replace(&root_line, &good_root)).unwrap();
        let err = Tombstone::open(&forged, &signer.verifier()).unwrap_err();
        assert!(err.contains("frontier"), "{err}");
    }
}
