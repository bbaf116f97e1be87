//! mcptrail taps: where MCP traffic is observed.
//!
//! A tap forwards every byte unchanged and as soon as it is read; only a *copy* is parsed.
//! The pipeline inside a tap is:
//!
//! ```text
//! relay threads ──frames──► Recorder (parse, correlate, build events) ──events──► LedgerWriter
//! (byte-for-byte copy)        framing.rs, jsonrpc.rs, recorder.rs                  writer.rs
//! ```
//!
//! [`stdio::run_wrap`] is the stdio tap behind `mcptrail wrap`.

mod config;
pub mod egress;
mod framing;
mod identity;
mod jsonrpc;
mod queue;
mod recorder;
pub mod selfcheck;
pub mod stdio;
mod writer;

pub use config::TapConfig;
pub use framing::{Frame, FrameBody, FrameContext, LineSplitter, MessageCopy, TraceIds};
pub use identity::Identity;
pub use jsonrpc::{classify, Message};
pub use recorder::{Recorder, SessionContext, SessionEnd};
pub use writer::{prepare, LedgerWriter, Preparer, WriterStats, PREVIEW_SCAN_MARGIN};

/// Nice value of the recorder and writer threads. Recording is background work: when a relay
/// wakes on a busy CPU it should run before them, not after a batch of their work.
const BACKGROUND_NICE: i32 = 10;

/// Lower the calling thread's scheduling priority (Linux keeps a nice value per thread).
/// Best effort: where it cannot be changed, the thread keeps the normal priority.
pub fn run_in_background() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE);
}

/// Errors of a tap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// The server command could not be started.
    #[error("could not start the MCP server `{command}`: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The egress proxy could not start (`--egress`).
    #[error(transparent)]
    Egress(#[from] mcptrail_egress::EgressError),
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] mcptrail_ledger::LedgerError),
    /// Another I/O failure of the tap itself.
    #[error("{what}: {source}")]
    Io {
        /// What the tap was doing.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
