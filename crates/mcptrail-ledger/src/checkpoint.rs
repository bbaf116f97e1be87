//! Signed Merkle checkpoints of the ledger.
//!
//! Every record is a leaf of an RFC 9162 Merkle tree whose entry is the record's body (the
//! stored line without its `mac` member): the leaf hash `SHA-256(0x00 ‖ body)` is the record
//! hash itself, the value the next record's `prev_hash` carries ([`crate::record`]). Under the
//! writer lock, the writer keeps the tree's right edge ([`Frontier`]) and, every
//! `checkpoint_every_records` records, every `checkpoint_interval` and whenever a segment is
//! sealed, signs a C2SP `tlog-checkpoint` (origin, size, root) with the ledger's Ed25519 key
//! and writes it to `<data_dir>/checkpoints/` and to the anchor directory, if configured.
//!
//! A checkpoint is what the hash chain alone cannot give: a signed statement of how long the
//! log was and what it held at a moment. `verify` recomputes the tree and reports a log that
//! is shorter than a checkpoint says (truncation, rollback) or whose first `size` records hash
//! to another root (history rewritten with the chain recomputed, or a fork).
//!
//! Files: `<data_dir>/keys/checkpoint.skey` (the signing key, 0600, created on first use),
//! `<data_dir>/keys/checkpoint.vkey` (the public key to hand to auditors), and
//! `<data_dir>/ledger/TREE`, a cache of the tree's right edge that any writer can rebuild
//! from the ledger when it is missing, stale or torn.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::{Checkpoint, NoteSigner, NoteVerifier};
use sha2::{Digest, Sha256};

use crate::anchor::{CheckpointAnchor, DirAnchor};
use crate::segment::{ensure_private_dir, sync_dir};
use crate::LedgerError;

/// Directory of checkpoint notes under the data directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Directory of keys under the data directory.
pub const KEY_DIR: &str = "keys";
/// The public key file, under [`KEY_DIR`].
pub const VERIFIER_KEY_FILE: &str = "checkpoint.vkey";
pub(crate) const SIGNER_KEY_FILE: &str = "checkpoint.skey";
const TREE_FILE: &str = "TREE";
const TREE_MAGIC: &str = "mcptrail-tree v2";

/// File name of the checkpoint at `size`.
pub fn checkpoint_file_name(size: u64) -> String {
    format!("cp-{size:020}.note")
}

/// Checkpoint files in `dir`, ordered by the size in their name.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LedgerError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(LedgerError::io(dir))?;
        let name = entry.file_name();
        let Some(size) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cp-"))
            .and_then(|n| n.strip_suffix(".note"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((size, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Read the ledger's public checkpoint key from `<data_dir>/keys/checkpoint.vkey`.
pub fn local_verifier(data_dir: &Path) -> Result<Option<NoteVerifier>, LedgerError> {
    let path = data_dir.join(KEY_DIR).join(VERIFIER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NoteVerifier::from_vkey(text.trim())
            .map(Some)
            .map_err(|e| LedgerError::Key {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LedgerError::io(path)(e)),
    }
}

/// Checkpoint policy (part of [`crate::LedgerConfig`]).
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// Keep the Merkle tree and sign checkpoints (on by default; off only for measuring the
    /// ledger without them — nothing then detects a truncated tail).
    pub enabled: bool,
    /// More places to anchor every checkpoint (besides `anchor_dir`): sinks, object stores.
    pub anchors: Vec<std::sync::Arc<dyn crate::CheckpointAnchor>>,
    /// Sign a checkpoint once this many records were appended since the last one (0: never
    /// by count).
    pub every_records: u64,
    /// Sign a checkpoint at the first append this long after the last one.
    pub interval: Duration,
    /// Also write every checkpoint here (a directory outside the data directory, ideally on
    /// another machine or medium).
    pub anchor_dir: Option<PathBuf>,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_records: 100_000,
            interval: Duration::from_secs(60),
            anchor_dir: None,
            anchors: Vec::new(),
            enabled: true,
        }
    }
}

/// The writer's view of the tree, valid while it holds the lock and its tail view is current.
pub(crate) struct TreeState {
    pub(crate) frontier: Frontier,
    /// Size and time of the newest checkpoint.
    pub(crate) last_checkpoint: (u64, SystemTime),
}

impl TreeState {
    /// Load the TREE cache if it describes the first `size` records or fewer (the writer
    /// catches up from there); else `None`.
    pub(crate) fn load(ledger_dir: &Path, size: u64) -> Option<TreeState> {
        let text = std::fs::read_to_string(ledger_dir.join(TREE_FILE)).ok()?;
        let (body, sum) = text.rsplit_once("sha256 ")?;
        if hex::encode(Sha256::digest(body.as_bytes())) != sum.trim_end() {
            return None; // torn or edited: rebuild
        }
        let mut lines = body.lines();
        if lines.next()? != TREE_MAGIC {
            return None;
        }
        let stored: u64 = lines.next()?.strip_prefix("size ")?.parse().ok()?;
        if stored > size {
            return None;
        }
        let (cp_size, cp_secs) = lines.next()?.strip_prefix("checkpoint ")?.split_once(' ')?;
        let last_checkpoint = (
            cp_size.parse().ok()?,
            UNIX_EPOCH + Duration::from_secs(cp_secs.parse().ok()?),
        );
        let roots = lines
            .map(|l| hex::decode(l).ok()?.try_into().ok())
            .collect::<Option<Vec<[u8; 32]>>>()?;
        Some(TreeState {
            frontier: Frontier::from_parts(stored, roots)?,
            last_checkpoint,
        })
    }

    /// The newest checkpoint the TREE cache knows of (it is saved at every checkpoint, by
    /// whichever writer signed it): lets a writer that caught up follow the shared schedule.
    pub(crate) fn cached_checkpoint(ledger_dir: &Path) -> Option<(u64, SystemTime)> {
        let t = TreeState::load(ledger_dir, u64::MAX)?;
        Some(t.last_checkpoint)
    }

    /// Rebuild from the record hashes (the leaves) of the whole ledger and the checkpoints on
    /// disk.
    /// `start` is the tree of the records removed by retention (empty when none were).
    pub(crate) fn rebuild(
        data_dir: &Path,
        start: Frontier,
        record_hashes: impl Iterator<Item = [u8; 32]>,
    ) -> Result<TreeState, LedgerError> {
        let mut frontier = start;
        for h in record_hashes {
            frontier.push(h);
        }
        let last = list_checkpoints(&data_dir.join(CHECKPOINT_DIR))?
            .into_iter()
            .rfind(|(size, _)| *size <= frontier.size());
        let last_checkpoint = match last {
            Some((size, path)) => (
                size,
                std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH),
            ),
            None => (0, SystemTime::now()),
        };
        Ok(TreeState {
            frontier,
            last_checkpoint,
        })
    }

    /// Rewrite the TREE cache (no fsync: it is caught up or rebuilt when stale or lost).
    pub(crate) fn save(&self, ledger_dir: &Path) {
        let secs = self
            .last_checkpoint
            .1
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut body = format!(
            "{TREE_MAGIC}\nsize {}\ncheckpoint {} {secs}\n",
            self.frontier.size(),
            self.last_checkpoint.0
        );
        for r in self.frontier.subtree_roots() {
            body.push_str(&hex::encode(r));
            body.push('\n');
        }
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        let path = ledger_dir.join(TREE_FILE);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{body}sha256 {sum}\n").as_bytes()));
        if written.is_err() {
            // A missing or torn cache only costs a rebuild; the checksum catches a torn one.
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Whether a checkpoint is due after an append (or before a seal: `sealing`).
    pub(crate) fn due(&self, policy: &CheckpointPolicy, sealing: bool) -> bool {
        let size = self.frontier.size();
        let (last_size, last_time) = self.last_checkpoint;
        if size == 0 || size == last_size {
            return false;
        }
        sealing
            || (policy.every_records > 0 && size - last_size >= policy.every_records)
            || last_time.elapsed().unwrap_or_default() >= policy.interval
    }
}

/// The ledger's checkpoint signer, created on first use.
pub(crate) fn load_or_create_signer(data_dir: &Path) -> Result<NoteSigner, LedgerError> {
    let dir = data_dir.join(KEY_DIR);
    ensure_private_dir(&dir)?;
    let skey_path = dir.join(SIGNER_KEY_FILE);
    match std::fs::read_to_string(&skey_path) {
        Ok(text) => {
            return NoteSigner::from_skey(text.trim()).map_err(|e| LedgerError::Key {
                path: skey_path,
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LedgerError::io(skey_path)(e)),
    }
    let signer = NoteSigner::generate(&origin_name()).map_err(|e| LedgerError::Key {
        path: skey_path.clone(),
        reason: e.to_string(),
    })?;
    write_new_private(&skey_path, format!("{}\n", signer.to_skey()).as_bytes())?;
    let vkey_path = dir.join(VERIFIER_KEY_FILE);
    write_new_private(
        &vkey_path,
        format!("{}\n", signer.verifier().to_vkey()).as_bytes(),
    )?;
    sync_dir(&dir)?;
    Ok(signer)
}

/// `mcptrail.local/<host>/<random>`: unique per ledger, no spaces or '+'.
fn origin_name() -> String {
    let host: String = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!("mcptrail.local/{host}/{}", hex::encode(r))
}

fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(LedgerError::io(path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(LedgerError::io(path))
}

/// Sign the checkpoint of `state` and write it locally and to the anchor.
pub(crate) fn write_checkpoint(
    data_dir: &Path,
    signer: &NoteSigner,
    state: &mut TreeState,
    policy: &CheckpointPolicy,
) -> Result<(), LedgerError> {
    let cp = Checkpoint {
        origin: signer.verifier().name().to_string(),
        size: state.frontier.size(),
        root: state.frontier.root(),
        extensions: Vec::new(),
    };
    let note = signer.sign(&cp.to_text()).map_err(|e| LedgerError::Key {
        path: data_dir.join(KEY_DIR).join(SIGNER_KEY_FILE),
        reason: e.to_string(),
    })?;
    // Locally first: that is the ledger's own record of what it signed.
    DirAnchor::new(data_dir.join(CHECKPOINT_DIR)).publish(cp.size, &note)?;
    state.last_checkpoint = (cp.size, SystemTime::now());
    // Then every anchor; one that fails does not stop the others (the next checkpoint
    // covers everything again), but the failure is reported.
    let mut failed = None;
    let dir_anchor = policy.anchor_dir.clone().map(DirAnchor::new);
    let anchors = dir_anchor
        .iter()
        .map(|a| a as &dyn CheckpointAnchor)
        .chain(policy.anchors.iter().map(|a| a.as_ref()));
    for anchor in anchors {
        if let Err(e) = anchor.publish(cp.size, &note) {
            failed.get_or_insert(LedgerError::Anchor {
                anchor: anchor.label(),
                reason: e.to_string(),
            });
        }
    }
    failed.map_or(Ok(()), Err)
}
