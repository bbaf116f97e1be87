//! Where signed checkpoints are anchored outside the ledger directory: the
//! [`CheckpointAnchor`] seam. A directory ([`DirAnchor`]: another disk, a mount that leaves
//! the machine, a WORM share) is built in; sinks and S3 Object Lock plug in through the same
//! trait. The writer publishes every checkpoint to every anchor; `verify` fetches every
//! anchored checkpoint and checks the local log against each — the anchors are what make a
//! truncation, rollback or fork by someone with root on the machine visible.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{checkpoint_file_name, list_checkpoints};
use crate::segment::{ensure_private_dir, sync_dir};
use crate::LedgerError;

/// A place outside the ledger directory that keeps a copy of every signed checkpoint.
pub trait CheckpointAnchor: std::fmt::Debug + Send + Sync {
    /// Where it is, for reports (a path, a URL).
    fn label(&self) -> String;
    /// Store the signed checkpoint note of a tree of `size` records. Storing a size that is
    /// already there is not an error (the note is the same tree, possibly signed again).
    fn publish(&self, size: u64, note: &str) -> Result<(), LedgerError>;
    /// Every checkpoint it holds: (a label naming the item, the note text).
    fn fetch_all(&self) -> Result<Vec<(String, String)>, LedgerError>;
    /// Every tombstone it holds (retention), as (a label ending in the file name, the note
    /// text). Anchors that keep none return nothing.
    fn fetch_tombstones(&self) -> Result<Vec<(String, String)>, LedgerError> {
        Ok(Vec::new())
    }
}

/// A directory of `cp-<size>.note` files (0600 in a 0700 directory).
#[derive(Debug, Clone)]
pub struct DirAnchor {
    dir: PathBuf,
}

impl DirAnchor {
    /// An anchor in `dir` (created on first publish).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirAnchor { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl CheckpointAnchor for DirAnchor {
    fn label(&self) -> String {
        self.dir.display().to_string()
    }

    fn publish(&self, size: u64, note: &str) -> Result<(), LedgerError> {
        ensure_private_dir(&self.dir)?;
        let path = self.dir.join(checkpoint_file_name(size));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(note.as_bytes()).and_then(|_| f.sync_all()));
        match written {
            Ok(()) => {}
            // Another writer (or a retry) anchored this size already: same tree, keep it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(LedgerError::io(&path)(e)),
        }
        sync_dir(&self.dir)
    }

    fn fetch_all(&self) -> Result<Vec<(String, String)>, LedgerError> {
        let mut out = Vec::new();
        for (_, path) in list_checkpoints(&self.dir)? {
            let text = std::fs::read_to_string(&path).map_err(LedgerError::io(&path))?;
            out.push((path.display().to_string(), text));
        }
        Ok(out)
    }

    fn fetch_tombstones(&self) -> Result<Vec<(String, String)>, LedgerError> {
        let mut out = Vec::new();
        for path in crate::list_tombstones(&self.dir.join(crate::TOMBSTONE_DIR))? {
            let bytes = std::fs::read(&path).map_err(LedgerError::io(&path))?;
            out.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        Ok(out)
    }
}
