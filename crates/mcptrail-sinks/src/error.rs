//! Errors of the sinks: typed, each saying what to do about it, none carrying a secret.
//!
//! Secrets (webhook keys, NATS tokens, TLS private keys) never reach an error: the code that
//! reads them reports the *source* (environment variable name or file path), never the value,
//! and receivers' answers are quoted only by status code and a short, length-capped body.

use std::path::PathBuf;

/// Everything that can stop a sink from running (as opposed to one failed delivery, which is a
/// [`SendError`] and is retried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `[[sinks]]` table is wrong: an unknown key, a wrong type, a missing value.
    #[error("sink \"{sink}\": {message}")]
    Config {
        /// The sink's `name` (or its position when it has none).
        sink: String,
        /// What is wrong and, where possible, the valid choices.
        message: String,
    },
    /// A cursor file cannot be trusted. Shipping stops rather than skipping or repeating
    /// events silently; `fix` says how to reset it deliberately.
    #[error("sink \"{sink}\": cursor {path}: {problem}; {fix}")]
    Cursor {
        /// The sink.
        sink: String,
        /// The cursor file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to proceed.
        fix: String,
    },
    /// A file or directory of the sink framework could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] mcptrail_ledger::LedgerError),
    /// The ledger is not the contiguous sequence a consumer needs (a gap or an unparsable
    /// line): shipping stops at the last good record instead of skipping.
    #[error("ledger {path}: {problem} (run `mcptrail verify`)")]
    LedgerContent {
        /// The segment.
        path: PathBuf,
        /// What was found.
        problem: String,
    },
    /// Another process is shipping this sink (it holds `sinks/<name>.lock`).
    #[error("sink \"{sink}\": another mcptrail process is shipping it (it holds {path}); wait for it to finish or stop it")]
    Busy {
        /// The sink.
        sink: String,
        /// The lock file.
        path: PathBuf,
    },
    /// A sink could not be set up (a TLS certificate or a secret could not be loaded).
    #[error("sink \"{sink}\": {message}")]
    Setup {
        /// The sink.
        sink: String,
        /// What failed; never a secret's value.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Why one delivery failed. Every kind is retried with backoff (the ledger is the buffer, so
/// nothing is dropped); the kind tells an operator where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The receiver could not be reached (refused, unreachable, DNS, TLS handshake).
    Connect,
    /// The connection broke or timed out during the exchange, or a local write failed.
    Transport,
    /// The receiver is overloaded or asked us to slow down (HTTP 429/503, NATS no responders).
    Throttled,
    /// The receiver refused the batch (HTTP 4xx other than 429, a JetStream error): retrying
    /// will not help until someone fixes the receiver or the configuration.
    Rejected,
    /// An event could not be encoded in the sink's format.
    Encode,
}

impl SendErrorKind {
    /// Short name for status lines.
    pub fn as_str(self) -> &'static str {
        match self {
            SendErrorKind::Connect => "connect",
            SendErrorKind::Transport => "transport",
            SendErrorKind::Throttled => "throttled",
            SendErrorKind::Rejected => "rejected",
            SendErrorKind::Encode => "encode",
        }
    }
}

/// One failed delivery.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} error: {message}", kind.as_str())]
pub struct SendError {
    /// Where it failed.
    pub kind: SendErrorKind,
    /// What happened, for a person; never a secret.
    pub message: String,
    /// The receiver asked to wait this long before retrying (HTTP `Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl SendError {
    /// A failure of `kind`.
    pub fn new(kind: SendErrorKind, message: impl Into<String>) -> Self {
        SendError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}
