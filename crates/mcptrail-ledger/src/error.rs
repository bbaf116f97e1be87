//! Errors of the ledger, each naming the file or record concerned and what to do about it.

use std::path::PathBuf;

/// Something went wrong reading or writing the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// An I/O operation on a ledger file failed (disk full, permissions, …).
    #[error("ledger I/O failed on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The last complete record of the active segment cannot be parsed, so the writer cannot
    /// continue the chain from it.
    #[error("ledger segment {segment} is corrupt at byte {offset}: {reason}; run `mcptrail verify` for details")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad line.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An event could not be serialised (should not happen).
    #[error("could not serialise an event: {0}")]
    Serialise(#[from] serde_json::Error),
    /// The checkpoint key file cannot be used.
    /// A checkpoint could not be anchored (the records and the local checkpoint are safe).
    #[error("checkpoint could not be anchored to {anchor}: {reason}; the records and the local checkpoint are written, and the next checkpoint will try again — check the anchor")]
    Anchor {
        /// The anchor's label.
        anchor: String,
        /// What went wrong.
        reason: String,
    },
    #[error("checkpoint key {path} cannot be used: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The ledger directory has insecure permissions.
    #[error("ledger directory {path} is accessible by other users (mode {mode:o}); run `chmod 700 {path}`")]
    InsecurePermissions {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

impl LedgerError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LedgerError {
        let path = path.into();
        move |source| LedgerError::Io { path, source }
    }

    /// True when the error is the disk being full (ENOSPC) or over quota.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LedgerError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(28) | Some(122)))
    }
}
