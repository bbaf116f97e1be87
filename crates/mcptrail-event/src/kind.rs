//! The `kind` of an event: a closed list of dotted names (DESIGN.md §2).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an event records. Serialised as its dotted name, e.g. `"mcp.request"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub enum EventKind {
    /// A tap started supervising a server (stdio) or accepted a session.
    #[serde(rename = "session.start")]
    #[default]
    SessionStart,
    /// The session ended; `session.end_reason` says why.
    #[serde(rename = "session.end")]
    SessionEnd,
    /// A JSON-RPC request, either direction.
    #[serde(rename = "mcp.request")]
    McpRequest,
    /// A JSON-RPC response (result or error), either direction.
    #[serde(rename = "mcp.response")]
    McpResponse,
    /// A JSON-RPC notification, either direction.
    #[serde(rename = "mcp.notification")]
    McpNotification,
    /// A snapshot of `tools/list`, `prompts/list` or `resources/list` with per-item hashes.
    #[serde(rename = "tool.catalog")]
    ToolCatalog,
    /// A catalog item's definition changed within a session.
    #[serde(rename = "tool.changed")]
    ToolChanged,
    /// A network call made by a tool server (egress proxy).
    #[serde(rename = "net.egress")]
    NetEgress,
    /// Liveness of a tap: written periodically while it runs.
    #[serde(rename = "system.heartbeat")]
    SystemHeartbeat,
    /// The ledger found and quarantined a torn (incomplete) last line left by a killed writer.
    #[serde(rename = "system.ledger_recovered")]
    SystemLedgerRecovered,
    /// The tap could not do its job fully (e.g. ledger write retried); detail says what.
    #[serde(rename = "system.error")]
    SystemError,
    /// A configuration change.
    #[serde(rename = "system.config")]
    SystemConfig,
    /// A tap verified the ledger's integrity (scheduled self-check); detail holds the verdict.
    #[serde(rename = "system.verify")]
    SystemVerify,
    /// A subject's data key was deleted (crypto-shredding); detail: subject token, reason.
    #[serde(rename = "governance.forget")]
    GovernanceForget,
    /// An encrypted field was decrypted for someone; detail: event, field, reason, by whom.
    #[serde(rename = "governance.reveal")]
    GovernanceReveal,
    /// The effective retention policy, as set (bootstrapped from config, or changed with an
    /// approval); detail: old and new policy, who requested, who approved.
    #[serde(rename = "governance.retention")]
    GovernanceRetention,
    /// Sealed segments were archived (copied and their hash checked) and removed locally
    /// under signed tombstones; detail: segments, where, policy, tombstones.
    #[serde(rename = "governance.archive")]
    GovernanceArchive,
    /// Records were purged (segments deleted everywhere mcptrail can) under signed
    /// tombstones; detail: range, segments, policy, authorisation, tombstones.
    #[serde(rename = "governance.purge")]
    GovernancePurge,
    /// The retention self-check: whether retention, encryption and deletion did what the
    /// policy says; detail: every check with its result.
    #[serde(rename = "governance.selfcheck")]
    GovernanceSelfcheck,
    /// A governance request (forget, reveal, purge, retention policy change) was made at the
    /// server; detail: request id, action, who asked, expiry.
    #[serde(rename = "governance.request")]
    GovernanceRequest,
    /// A second principal approved or denied a request (or a self-approval was refused);
    /// detail: request id, decision, by whom.
    #[serde(rename = "governance.decision")]
    GovernanceDecision,
    /// An approved request was carried out (or failed); detail: request id, outcome.
    #[serde(rename = "governance.execution")]
    GovernanceExecution,
    /// A read of the trail through the server; detail: principal, role, endpoint, query,
    /// number of events returned.
    #[serde(rename = "governance.read")]
    GovernanceRead,
    /// The server refused a request (no or bad credentials, wrong role); detail: reason,
    /// endpoint, principal if known (never the token).
    #[serde(rename = "governance.access")]
    GovernanceAccess,
    /// The gateway refused a request: no credentials, or credentials that did not verify;
    /// detail says why (never the token itself).
    #[serde(rename = "auth.denied")]
    AuthDenied,
    /// The gateway could not reach the upstream server or it failed mid-stream; the client
    /// got a JSON-RPC error. detail says what happened.
    #[serde(rename = "upstream.error")]
    UpstreamError,
    /// A detection raised an alert.
    #[serde(rename = "alert")]
    Alert,
    /// A message that could not be parsed as JSON-RPC; it was forwarded unchanged.
    #[serde(rename = "malformed")]
    Malformed,
}

impl EventKind {
    /// Every kind, in documentation order.
    pub const ALL: &'static [EventKind] = &[
        EventKind::SessionStart,
        EventKind::SessionEnd,
        EventKind::McpRequest,
        EventKind::McpResponse,
        EventKind::McpNotification,
        EventKind::ToolCatalog,
        EventKind::ToolChanged,
        EventKind::NetEgress,
        EventKind::SystemHeartbeat,
        EventKind::SystemLedgerRecovered,
        EventKind::SystemError,
        EventKind::SystemConfig,
        EventKind::SystemVerify,
        EventKind::GovernanceForget,
        EventKind::GovernanceReveal,
        EventKind::GovernanceRetention,
        EventKind::GovernanceArchive,
        EventKind::GovernancePurge,
        EventKind::GovernanceSelfcheck,
        EventKind::GovernanceRequest,
        EventKind::GovernanceDecision,
        EventKind::GovernanceExecution,
        EventKind::GovernanceRead,
        EventKind::GovernanceAccess,
        EventKind::AuthDenied,
        EventKind::UpstreamError,
        EventKind::Alert,
        EventKind::Malformed,
    ];

    /// The dotted name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionStart => "session.start",
            EventKind::SessionEnd => "session.end",
            EventKind::McpRequest => "mcp.request",
            EventKind::McpResponse => "mcp.response",
            EventKind::McpNotification => "mcp.notification",
            EventKind::ToolCatalog => "tool.catalog",
            EventKind::ToolChanged => "tool.changed",
            EventKind::NetEgress => "net.egress",
            EventKind::SystemHeartbeat => "system.heartbeat",
            EventKind::SystemLedgerRecovered => "system.ledger_recovered",
            EventKind::SystemError => "system.error",
            EventKind::SystemConfig => "system.config",
            EventKind::SystemVerify => "system.verify",
            EventKind::GovernanceForget => "governance.forget",
            EventKind::GovernanceReveal => "governance.reveal",
            EventKind::GovernanceRetention => "governance.retention",
            EventKind::GovernanceArchive => "governance.archive",
            EventKind::GovernancePurge => "governance.purge",
            EventKind::GovernanceSelfcheck => "governance.selfcheck",
            EventKind::GovernanceRequest => "governance.request",
            EventKind::GovernanceDecision => "governance.decision",
            EventKind::GovernanceExecution => "governance.execution",
            EventKind::GovernanceRead => "governance.read",
            EventKind::GovernanceAccess => "governance.access",
            EventKind::AuthDenied => "auth.denied",
            EventKind::UpstreamError => "upstream.error",
            EventKind::Alert => "alert",
            EventKind::Malformed => "malformed",
        }
    }

    /// Parse a dotted name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
        }
    }
}
