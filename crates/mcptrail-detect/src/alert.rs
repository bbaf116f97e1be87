//! Alerts and the `alert` event they become.
//!
//! # The `alert` event
//!
//! `kind = "alert"`, `event_id` = the alert id (below), `time` = when it was raised (the
//! caller stamps it; the time of the triggering event is in `detail.event_time`),
//! `session_id`/`agent_id`/`user_identity`/`server` copied from the triggering event, and
//!
//! ```json
//! "detail": {
//!   "source": "detect",
//!   "rule": "builtin.secret_then_egress",
//!   "rule_type": "sequence",            // match | threshold | sequence | drift | anomaly | silence
//!   "severity": "critical",             // info | low | medium | high | critical
//!   "summary": "secret data read in session …, then a connection to evil.test:443 …",
//!   "evidence": ["<event_id>", "…"],    // the triggering events, oldest first
//!   "evidence_total": 2,                // > evidence.len() when the list was capped
//!   "group": {"session_id": "…"},       // the values of the rule's group_by fields
//!   "event_time": "2026-…Z",            // time of the last evidence event
//!   "first_time": "2026-…Z",            // time of the first evidence event
//!   "value": 12.0,                      // thresholds: the aggregate that crossed…
//!   "threshold": 10.0,                  // …this value
//!   "baseline_version": 3               // anomaly rules: the stored baseline judged against
//! }
//! ```
//!
//! # Alert ids
//!
//! A UUIDv7 whose 48-bit timestamp is the time of the last evidence event and whose other
//! bits are SHA-256(rule id ‖ 0 ‖ evidence ids joined by `\n`). The same rule over the same
//! events always gives the same id, so running detection again (streaming after a restart,
//! `mcptrail detect --append` after the streaming detector) never appends an alert twice:
//! appenders skip ids already in the ledger.

use std::collections::BTreeMap;

use mcptrail_event::{Event, EventKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::rules::Severity;

/// One alert raised by a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Deterministic id (see the module docs); becomes the alert event's `event_id`.
    pub id: String,
    /// The rule.
    pub rule: String,
    /// `match`, `threshold` or `sequence`.
    pub rule_type: &'static str,
    /// Severity.
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// Ids of the triggering events, oldest first (capped; see `evidence_total`).
    pub evidence: Vec<String>,
    /// How many events the evidence had before capping.
    pub evidence_total: usize,
    /// The group's field values.
    pub group: BTreeMap<String, String>,
    /// Time of the first evidence event.
    pub first_time: String,
    /// Time of the last (triggering) event.
    pub event_time: String,
    /// Threshold rules: the aggregate and the threshold it reached.
    pub value: Option<f64>,
    /// See `value`.
    pub threshold: Option<f64>,
    /// Copied from the triggering event.
    pub session_id: Option<String>,
    /// Copied from the triggering event.
    pub agent_id: Option<String>,
    /// Copied from the triggering event.
    pub user_identity: Option<mcptrail_event::UserIdentity>,
    /// Copied from the triggering event.
    pub server: Option<mcptrail_event::ServerInfo>,
    /// Anomaly rules: the version of the stored baseline the event was judged against.
    pub baseline_version: Option<u64>,
}

/// An alert raised by a built-in monitor (baselines, silence) rather than a rule.
pub(crate) struct Raise<'a> {
    pub(crate) rule: &'static str,
    pub(crate) rule_type: &'static str,
    pub(crate) severity: Severity,
    pub(crate) summary: String,
    /// Oldest first; capped to `max_evidence` (first and last kept).
    pub(crate) evidence: Vec<String>,
    /// How many events the evidence stands for (at least `evidence.len()`).
    pub(crate) evidence_total: usize,
    pub(crate) group: BTreeMap<String, String>,
    pub(crate) first_time: String,
    pub(crate) event_time: String,
    /// Stamp of the id: the time of the last evidence event, ms.
    pub(crate) ms: i64,
    pub(crate) value: Option<f64>,
    pub(crate) threshold: Option<f64>,
    /// Who: copied onto the alert.
    pub(crate) from: Option<&'a Event>,
    pub(crate) baseline_version: Option<u64>,
}

impl Raise<'_> {
    pub(crate) fn into_alert(self, max_evidence: usize) -> Alert {
        let mut evidence = self.evidence;
        let total = evidence.len();
        if total > max_evidence {
            let head = max_evidence / 2;
            let tail = max_evidence - head;
            evidence.drain(head..total - tail);
        }
        Alert {
            id: alert_id(self.rule, &evidence, self.ms),
            rule: self.rule.to_string(),
            rule_type: self.rule_type,
            severity: self.severity,
            summary: self.summary,
            evidence,
            evidence_total: self.evidence_total.max(total),
            group: self.group,
            first_time: self.first_time,
            event_time: self.event_time,
            value: self.value,
            threshold: self.threshold,
            session_id: self.from.and_then(|e| e.session_id.clone()),
            agent_id: self.from.and_then(|e| e.agent_id.clone()),
            user_identity: self.from.and_then(|e| e.user_identity.clone()),
            server: self.from.and_then(|e| e.server.clone()),
            baseline_version: self.baseline_version,
        }
    }
}

/// The deterministic id of an alert of `rule` over `evidence`, stamped `event_ms`.
pub fn alert_id(rule: &str, evidence: &[String], event_ms: i64) -> String {
    let mut h = Sha256::new();
    h.update(rule.as_bytes());
    h.update([0]);
    for (i, id) in evidence.iter().enumerate() {
        if i > 0 {
            h.update(b"\n");
        }
        h.update(id.as_bytes());
    }
    let digest = h.finalize();
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(event_ms.max(0) as u64, &rand)
        .into_uuid()
        .to_string()
}

impl Alert {
    /// The `detail` object of the alert event.
    pub fn detail(&self) -> Value {
        let mut d = json!({
            "source": "detect",
            "rule": self.rule,
            "rule_type": self.rule_type,
            "severity": self.severity.as_str(),
            "summary": self.summary,
            "evidence": self.evidence,
            "evidence_total": self.evidence_total,
            "group": self.group,
            "event_time": self.event_time,
            "first_time": self.first_time,
        });
        if let Some(v) = self.value {
            d["value"] = json!(v);
        }
        if let Some(t) = self.threshold {
            d["threshold"] = json!(t);
        }
        if let Some(v) = self.baseline_version {
            d["baseline_version"] = json!(v);
        }
        d
    }

    /// The `alert` event, stamped `now` (RFC 3339); `seq`/`prev_hash` are the ledger's.
    pub fn to_event(&self, now: &str) -> Event {
        let mut e = Event::new(EventKind::Alert);
        e.event_id = self.id.clone();
        e.time = now.to_string();
        e.session_id = self.session_id.clone();
        e.agent_id = self.agent_id.clone();
        e.user_identity = self.user_identity.clone();
        e.server = self.server.clone();
        e.detail = Some(self.detail());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_uuid_v7_and_depend_on_rule_and_evidence() {
        let ev = vec!["a".to_string(), "b".to_string()];
        let a = alert_id("r", &ev, 1_764_000_000_000);
        assert_eq!(a, alert_id("r", &ev, 1_764_000_000_000));
        assert_ne!(a, alert_id("r2", &ev, 1_764_000_000_000));
        assert_ne!(a, alert_id("r", &ev[..1], 1_764_000_000_000));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 7);
        // Time-ordered like every other event id.
        assert!(a < alert_id("r", &ev, 1_764_000_001_000));
    }
}
