//! Dual authorisation. `forget`, `reveal`, ad-hoc retention purges and retention policy
//! changes are *requests*: one principal asks (`governance.request`), a second, different
//! principal with the auditor role decides within the time limit (`governance.decision`), and
//! on approval the server carries the action out through the library code — `mcptrail-redact`
//! for `forget` and `reveal`, `mcptrail-retention` for purges and policy changes, which take
//! the [`Authorisation`] and sign it into what they write (`governance.execution`). A
//! self-approval or a decision on an expired request is refused, and the refusal recorded.
//!
//! A `reveal` is carried out when the *requester* collects it (`POST
//! /api/v1/requests/{id}/reveal`), once, within the time limit counted from the approval: the
//! field is decrypted then, returned in that one response and recorded as `governance.reveal`
//! (who asked, who approved, why, which field, whether it opened — never the value). The
//! approver decides without seeing the value, and the clear value is held by the server only
//! while it builds that response.
//!
//! The state of every request is derived from those events in the ledger, so a restart
//! keeps pending requests pending and decided ones decided: [`Requests::load`] replays them.

use std::collections::BTreeMap;
use std::path::Path;

use mcptrail_event::{Event, EventKind};
use mcptrail_retention::{Authorisation, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Crypto-shred a subject. `subject_token` is the keyed token of the principal (the
    /// server computes it from `subject`; the clear principal is never stored).
    Forget {
        /// The subject's token.
        subject_token: String,
        /// Why (an erasure request's reference).
        reason: String,
    },
    /// Purge whole sealed segments through `through_seq`, outside the policy.
    Purge {
        /// The last seq of a sealed segment.
        through_seq: u64,
        /// Why (recorded and signed into the tombstones).
        reason: String,
    },
    /// Replace the effective retention policy.
    RetentionPolicy {
        /// The new policy.
        policy: Policy,
    },
    /// Decrypt one encrypted field of one event, for the requester, once.
    Reveal {
        /// The event.
        event_id: String,
        /// The field: a JSON pointer as in the event's `redactions`.
        field: String,
        /// Why (recorded).
        reason: String,
    },
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a second principal.
    Pending,
    /// Approved; a reveal waits for its requester to collect it.
    Approved,
    /// Approved and carried out.
    Executed,
    /// Approved, but carrying it out failed (see `outcome`).
    Failed,
    /// Denied by an approver.
    Denied,
}

/// A request and its history.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// Its id.
    pub id: String,
    /// What it asks.
    #[serde(flatten)]
    pub action: Action,
    /// Who asked.
    pub requested_by: String,
    /// When (RFC 3339).
    pub created: String,
    /// Approvals after this are refused (RFC 3339).
    pub expires_at: String,
    /// Where it stands; a pending request past `expires_at` is reported `expired`.
    pub state: State,
    /// Whether it expired unanswered.
    pub expired: bool,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When it was approved (RFC 3339).
    pub approved_at: Option<String>,
    /// What execution did, or why it failed.
    pub outcome: Option<Value>,
    /// Refused decisions (self-approval, expiry), for the record.
    pub refusals: Vec<Value>,
}

/// Why a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such request.
    NotFound,
    /// The requester tried to decide.
    SelfApproval,
    /// Past its time limit.
    Expired,
    /// Already decided.
    AlreadyDecided(State),
}

impl Refusal {
    /// The reason recorded and returned.
    pub fn why(&self) -> String {
        match self {
            Refusal::NotFound => "no such request".into(),
            Refusal::SelfApproval => {
                "the requester cannot decide their own request: a second principal must".into()
            }
            Refusal::Expired => {
                "the request expired before it was decided; make a new request".into()
            }
            Refusal::AlreadyDecided(s) => format!("the request is already decided ({s:?})"),
        }
    }
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    mcptrail_event::parse_rfc3339(s).ok()
}

/// Every request, by id (ids are UUID v7: sorted by creation).
#[derive(Debug, Default)]
pub struct Requests {
    by_id: BTreeMap<String, Request>,
}

impl Requests {
    /// Replay the `governance.request/decision/execution` events of the ledger.
    pub fn load(data_dir: &Path) -> Result<Self, mcptrail_ledger::LedgerError> {
        let mut r = Requests::default();
        let removed = mcptrail_ledger::removed_through(data_dir)?.map_or(0, |t| t.last_seq);
        let mut reader = mcptrail_ledger::LedgerReader::open(data_dir, removed + 1)?;
        while let Some(rec) = reader.next_record()? {
            // Cheap filter before parsing: only governance steps matter here.
            if !memchr_find(&rec.line, b"\"governance.") {
                continue;
            }
            if let Ok(ev) = serde_json::from_slice::<Event>(&rec.line) {
                r.apply(&ev);
            }
        }
        Ok(r)
    }

    /// Apply one recorded event.
    pub fn apply(&mut self, ev: &Event) {
        let Some(d) = &ev.detail else { return };
        let id = d["request_id"].as_str().unwrap_or_default().to_string();
        match ev.kind {
            EventKind::GovernanceRequest => {
                let Ok(action) = serde_json::from_value::<Action>(d["request"].clone()) else {
                    return;
                };
                self.by_id.insert(
                    id.clone(),
                    Request {
                        id,
                        action,
                        requested_by: d["requested_by"].as_str().unwrap_or_default().into(),
                        created: ev.time.clone(),
                        expires_at: d["expires_at"].as_str().unwrap_or_default().into(),
                        state: State::Pending,
                        expired: false,
                        decided_by: None,
                        approved_at: None,
                        outcome: None,
                        refusals: Vec::new(),
                    },
                );
            }
            EventKind::GovernanceDecision => {
                let Some(r) = self.by_id.get_mut(&id) else {
                    return;
                };
                match d["decision"].as_str() {
                    Some("denied") => {
                        r.state = State::Denied;
                        r.decided_by = d["by"].as_str().map(String::from);
                    }
                    Some("approved") => {
                        r.state = State::Approved;
                        r.decided_by = d["by"].as_str().map(String::from);
                        r.approved_at = Some(ev.time.clone());
                    }
                    _ => r.refusals.push(d.clone()),
                }
            }
            EventKind::GovernanceExecution => {
                let Some(r) = self.by_id.get_mut(&id) else {
                    return;
                };
                r.state = if d["outcome"] == "executed" {
                    State::Executed
                } else {
                    State::Failed
                };
                r.outcome = Some(d.clone());
            }
            _ => {}
        }
    }

    /// All requests, newest first, with expiry evaluated at `now`.
    pub fn list(&self, now: OffsetDateTime) -> Vec<Request> {
        self.by_id
            .values()
            .rev()
            .map(|r| with_expiry(r.clone(), now))
            .collect()
    }

    /// One request.
    pub fn get(&self, id: &str, now: OffsetDateTime) -> Option<Request> {
        self.by_id.get(id).map(|r| with_expiry(r.clone(), now))
    }

    /// Whether `by` may decide request `id` at `now`.
    pub fn check_decision(
        &self,
        id: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Request, Refusal> {
        let r = self.get(id, now).ok_or(Refusal::NotFound)?;
        if r.requested_by.trim() == by.trim() {
            return Err(Refusal::SelfApproval);
        }
        if r.state != State::Pending {
            return Err(Refusal::AlreadyDecided(r.state));
        }
        if r.expired {
            return Err(Refusal::Expired);
        }
        Ok(r)
    }
}

/// Why a reveal cannot be collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCollectable {
    /// No such request, or not a reveal.
    NotFound,
    /// Someone other than the requester.
    NotRequester,
    /// Not approved (yet, or denied).
    NotApproved(State),
    /// Already collected (or failed).
    Collected,
    /// The collection window (the approval time limit, from the approval) has passed.
    Expired,
}

impl Requests {
    /// Whether `by` may collect reveal `id` at `now`, given the time limit `ttl`.
    pub fn check_collect(
        &self,
        id: &str,
        by: &str,
        now: OffsetDateTime,
        ttl: time::Duration,
    ) -> Result<Request, NotCollectable> {
        let r = self.get(id, now).ok_or(NotCollectable::NotFound)?;
        if !matches!(r.action, Action::Reveal { .. }) {
            return Err(NotCollectable::NotFound);
        }
        if r.requested_by.trim() != by.trim() {
            return Err(NotCollectable::NotRequester);
        }
        match r.state {
            State::Approved => {}
            State::Executed | State::Failed => return Err(NotCollectable::Collected),
            s => return Err(NotCollectable::NotApproved(s)),
        }
        let approved = r.approved_at.as_deref().and_then(parse_time);
        if approved.is_none_or(|t| now >= t + ttl) {
            return Err(NotCollectable::Expired);
        }
        Ok(r)
    }
}

fn with_expiry(mut r: Request, now: OffsetDateTime) -> Request {
    r.expired = r.state == State::Pending && parse_time(&r.expires_at).is_none_or(|t| now >= t);
    r
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `governance.request` event of a new request.
pub fn request_event(id: &str, action: &Action, by: &str, role: &str, expires_at: &str) -> Event {
    let mut e = Event::new(EventKind::GovernanceRequest);
    e.detail = Some(json!({
        "request_id": id, "request": action, "requested_by": by, "role": role,
        "expires_at": expires_at,
    }));
    e
}

/// A `governance.decision` event: `approved`, `denied` or `refused` (with `why`).
pub fn decision_event(id: &str, decision: &str, by: &str, why: Option<&str>) -> Event {
    let mut e = Event::new(EventKind::GovernanceDecision);
    e.detail = Some(json!({"request_id": id, "decision": decision, "by": by, "why": why}));
    e
}

/// What executing an approved request did.
#[derive(Debug, Clone)]
pub struct Executed {
    /// `executed` or `failed`.
    pub outcome: &'static str,
    /// Details (counts, tombstones, error).
    pub detail: Value,
    /// Extra events to record (e.g. `governance.forget`).
    pub events: Vec<Event>,
}

/// Carry out an approved request (blocking: runs the library code).
pub fn execute(
    data_dir: &Path,
    engine: Option<&mcptrail_retention::Engine>,
    r: &Request,
    approved_by: &str,
) -> Executed {
    let auth = Authorisation {
        request_id: r.id.clone(),
        requested_by: r.requested_by.clone(),
        approved_by: approved_by.to_string(),
    };
    let failed = |e: String| Executed {
        outcome: "failed",
        detail: json!({"error": e}),
        events: Vec::new(),
    };
    match &r.action {
        Action::Forget {
            subject_token,
            reason,
        } => match mcptrail_redact::forget_subject(data_dir, subject_token) {
            Ok(existed) => {
                let mut e = Event::new(EventKind::GovernanceForget);
                e.detail = Some(json!({
                    "subject": subject_token, "reason": reason, "by": r.requested_by,
                    "approved_by": approved_by, "request_id": r.id, "key_deleted": existed,
                }));
                Executed {
                    outcome: "executed",
                    detail: json!({"key_deleted": existed}),
                    events: vec![e],
                }
            }
            Err(e) => failed(e.to_string()),
        },
        Action::Purge {
            through_seq,
            reason,
        } => {
            let Some(engine) = engine else {
                return failed("retention is not configured ([retention] in mcptrail.toml)".into());
            };
            match engine.purge(*through_seq, &auth, reason) {
                Ok(rep) => Executed {
                    outcome: "executed",
                    detail: serde_json::to_value(&rep).unwrap_or(Value::Null),
                    events: Vec::new(),
                },
                Err(e) => failed(e.to_string()),
            }
        }
        Action::Reveal { .. } => Executed {
            outcome: "failed",
            detail: json!({"error": "a reveal is carried out when its requester collects it"}),
            events: Vec::new(),
        },
        Action::RetentionPolicy { policy } => {
            let Some(engine) = engine else {
                return failed("retention is not configured ([retention] in mcptrail.toml)".into());
            };
            match engine.set_policy(policy, &auth) {
                Ok(p) => Executed {
                    outcome: "executed",
                    detail: json!({"digest": p.digest, "set_at": p.set_at}),
                    events: Vec::new(),
                },
                Err(e) => failed(e.to_string()),
            }
        }
    }
}

/// Whether `field` of `event` holds at least one encrypted value.
pub fn has_sealed(event: &Value, field: &str) -> bool {
    mcptrail_redact::resolve_field(event, field)
        .is_some_and(|t| !mcptrail_redact::find_sealed(&t).is_empty())
}

/// Decrypt the sealed values of `field` of `event` with the vault, as `mcptrail reveal` does.
pub fn reveal(
    vault: &mcptrail_redact::Vault,
    event: &Value,
    event_id: &str,
    field: &str,
) -> mcptrail_redact::Revealed {
    vault
        .reveal_field(event, event_id, field)
        .unwrap_or_else(|| mcptrail_redact::Revealed {
            text: None,
            values: vec![json!({"result": "no_such_field"})],
            problems: Vec::new(),
        })
}

/// The `governance.execution` event.
pub fn execution_event(id: &str, x: &Executed, approved_by: &str) -> Event {
    let mut e = Event::new(EventKind::GovernanceExecution);
    e.detail = Some(
        json!({"request_id": id, "outcome": x.outcome, "approved_by": approved_by, "result": x.detail}),
    );
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        parse_time(s).unwrap()
    }

    fn stored(mut e: Event, time: &str) -> Event {
        e.time = time.into();
        e
    }

    #[test]
    fn replay_self_approval_and_expiry() {
        let mut rs = Requests::default();
        let a = Action::Forget {
            subject_token: "abc".into(),
            reason: "r".into(),
        };
        rs.apply(&stored(
            request_event("r1", &a, "alice", "investigator", "2026-01-02T00:00:00Z"),
            "2026-01-01T00:00:00Z",
        ));
        let now = at("2026-01-01T12:00:00Z");
        assert_eq!(
            rs.check_decision("r1", "alice", now).unwrap_err(),
            Refusal::SelfApproval
        );
        assert_eq!(
            rs.check_decision("r2", "bob", now).unwrap_err(),
            Refusal::NotFound
        );
        assert!(rs.check_decision("r1", "bob", now).is_ok());
        let later = at("2026-01-03T00:00:00Z");
        assert_eq!(
            rs.check_decision("r1", "bob", later).unwrap_err(),
            Refusal::Expired
        );
        assert!(rs.get("r1", later).unwrap().expired);
        rs.apply(&decision_event("r1", "denied", "bob", None));
        assert_eq!(rs.get("r1", now).unwrap().state, State::Denied);
        assert_eq!(
            rs.check_decision("r1", "carol", now).unwrap_err(),
            Refusal::AlreadyDecided(State::Denied)
        );
    }
}
