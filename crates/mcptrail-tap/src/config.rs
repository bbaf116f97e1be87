//! Settings of a tap (`[tap]` in `mcptrail.toml`).

use std::time::Duration;

use serde::Deserialize;

/// How a tap behaves. Every field has a default fit for a laptop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TapConfig {
    /// Seconds between `system.heartbeat` events while the tap runs.
    pub heartbeat_interval_secs: u64,
    /// After the client closes stdin: seconds to wait for the server to exit before SIGTERM,
    /// and again before SIGKILL.
    pub shutdown_grace_secs: u64,
    /// A request unanswered for this many seconds is recorded as `timeout` (a late response
    /// is still recorded, flagged `late_response`).
    pub request_timeout_secs: u64,
    /// Messages up to this size are parsed; larger ones are forwarded and recorded by size,
    /// SHA-256 and prefix only (`too_large_to_parse`).
    pub max_message_bytes: usize,
    /// Parameters larger than this are not stored, only their size and SHA-256 (`oversize`).
    pub max_stored_payload_bytes: usize,
    /// Characters of result preview kept in `response_summary.preview`.
    pub preview_chars: usize,
    /// Verify the ledger (chain, checkpoints, anchors; MACs need the seed, which the tap does
    /// not hold) when the tap starts and then every this many seconds, recording a
    /// `system.verify` event, and an `alert` on failure. 0: never.
    pub self_verify_interval_secs: u64,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            heartbeat_interval_secs: 30,
            shutdown_grace_secs: 5,
            request_timeout_secs: 300,
            max_message_bytes: 64 * 1024 * 1024,
            max_stored_payload_bytes: 64 * 1024,
            preview_chars: 200,
            self_verify_interval_secs: 3600,
        }
    }
}

impl TapConfig {
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs.max(1))
    }
    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
    /// Characters the recorder keeps for previews: the preview plus a margin the redactor
    /// scans before the preview is cut (see `Preparer`).
    pub(crate) fn preview_scan_chars(&self) -> usize {
        self.preview_chars + crate::PREVIEW_SCAN_MARGIN
    }
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }
}
