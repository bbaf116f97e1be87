//! Errors of the retention engine, each saying what to do about it.

use std::path::PathBuf;

/// Something the retention engine could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// The policy cannot be applied (a key and why).
    #[error("retention policy: {0}")]
    Policy(String),
    /// The authorisation of a change or an ad-hoc purge is missing or not acceptable.
    #[error("not authorised: {0}")]
    Unauthorised(String),
    /// The request cannot be carried out as asked (nothing was changed).
    #[error("{0}")]
    Refused(String),
    /// The ledger does not verify: nothing is removed from a ledger that may be tampered
    /// with (a tombstone would make the tampering look lawful).
    #[error("the ledger does not verify ({0}); nothing was archived or purged — run `mcptrail verify` and resolve it first")]
    Tampered(String),
    /// The archive could not be written or checked.
    #[error("archive {archive}: {reason}")]
    Archive {
        /// Which archive.
        archive: String,
        /// What went wrong.
        reason: String,
    },
    /// A file of the engine's state could not be read or written.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] mcptrail_ledger::LedgerError),
    /// The index could not be updated.
    #[error(transparent)]
    Index(#[from] mcptrail_index::IndexError),
}

impl RetentionError {
    pub(crate) fn state(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |e| RetentionError::State {
            path,
            reason: e.to_string(),
        }
    }
}
