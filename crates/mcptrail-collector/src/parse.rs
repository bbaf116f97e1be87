//! What the collector reads from one message: the subject's tenant and source, and for a
//! record the members it indexes and checks. The record hash is the ledger's own
//! [`mcptrail_ledger::record_hash`] (never re-implemented here).

use mcptrail_event::activity::{ActivityFacts, Tally};
use mcptrail_event::{Direction, Status};
use serde::Deserialize;

/// What a subject names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectParts {
    /// The tenant token.
    pub tenant: String,
    /// The source token.
    pub source: String,
    /// `true` for `.checkpoints`, `false` for `.events`.
    pub checkpoint: bool,
}

/// `<prefix>.<tenant>.<source>.events|checkpoints`.
pub fn subject(prefix: &str, subject: &str) -> Option<SubjectParts> {
    let mut it = subject.split('.');
    if it.next()? != prefix {
        return None;
    }
    let tenant = it.next()?.to_string();
    let source = it.next()?.to_string();
    let checkpoint = match it.next()? {
        "events" => false,
        "checkpoints" => true,
        _ => return None,
    };
    it.next().is_none().then_some(SubjectParts {
        tenant,
        source,
        checkpoint,
    })
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event_id: &'a str,
    seq: u64,
    #[serde(borrow)]
    time: &'a str,
    kind: String,
    session_id: Option<String>,
    agent_id: Option<String>,
    user_identity: Option<User>,
    tool_invoked: Option<String>,
    #[serde(borrow)]
    prev_hash: &'a str,
    // What the hourly activity counts (read leniently: a value this version does not know
    // counts as "not a call / failed", it never rejects the record).
    method: Option<String>,
    direction: Option<String>,
    response_summary: Option<Summary>,
    bytes_out: Option<u64>,
}

#[derive(Deserialize)]
struct Summary {
    status: Option<String>,
    #[serde(default)]
    is_error: bool,
    size: Option<u64>,
}

#[derive(Deserialize)]
struct User {
    principal: String,
}

/// One record as the collector checks and stores it.
#[derive(Debug, Clone)]
pub struct Record {
    /// `event_id`.
    pub event_id: uuid::Uuid,
    /// `seq`.
    pub seq: u64,
    /// `time`.
    pub time: time::OffsetDateTime,
    /// `kind`.
    pub kind: String,
    /// `session_id`.
    pub session_id: Option<String>,
    /// `agent_id`.
    pub agent: Option<String>,
    /// `user_identity.principal`.
    pub user: Option<String>,
    /// `tool_invoked`.
    pub tool: Option<String>,
    /// `prev_hash`.
    pub prev_hash: [u8; 32],
    /// What it adds to its agent's hour.
    pub activity: Tally,
    /// The record hash (chain link and Merkle leaf).
    pub hash: [u8; 32],
    /// The line, verbatim.
    pub line: String,
}

/// Parse a record line; `Err` says why it is not one.
pub fn record(payload: &[u8]) -> Result<Record, String> {
    let line = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_string())?;
    let w: Wire<'_> =
        serde_json::from_str(line).map_err(|e| format!("not a ledger record: {e}"))?;
    let event_id = uuid::Uuid::parse_str(w.event_id)
        .map_err(|_| format!("event_id {:?} is not a UUID", w.event_id))?;
    let time = mcptrail_event::parse_rfc3339(w.time)
        .map_err(|_| format!("time {:?} is not RFC 3339", w.time))?;
    let prev_hash: [u8; 32] = hex::decode(w.prev_hash)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| "prev_hash is not 64 hex digits".to_string())?;
    if w.seq == 0 {
        return Err("seq 0 is not a ledger seq".into());
    }
    let mut activity = Tally::default();
    activity.add(&ActivityFacts {
        kind: &w.kind,
        method: w.method.as_deref(),
        direction: match w.direction.as_deref() {
            Some("client_to_server") => Some(Direction::ClientToServer),
            Some("server_to_client") => Some(Direction::ServerToClient),
            _ => None,
        },
        status: w
            .response_summary
            .as_ref()
            .map(|r| match r.status.as_deref() {
                Some("ok") => Status::Ok,
                _ => Status::Error,
            }),
        is_error: w.response_summary.as_ref().is_some_and(|r| r.is_error),
        size: w.response_summary.as_ref().and_then(|r| r.size),
        bytes_out: w.bytes_out,
    });
    Ok(Record {
        event_id,
        seq: w.seq,
        time,
        kind: w.kind,
        session_id: w.session_id,
        agent: w.agent_id,
        user: w.user_identity.map(|u| u.principal),
        tool: w.tool_invoked,
        prev_hash,
        activity,
        hash: mcptrail_ledger::record_hash(payload),
        line: line.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_tenant_source_and_kind() {
        let s = subject("mcptrail", "mcptrail.acme.laptop-17.events").unwrap();
        assert_eq!(
            (s.tenant.as_str(), s.source.as_str(), s.checkpoint),
            ("acme", "laptop-17", false)
        );
        assert!(
            subject("mcptrail", "mcptrail.acme.l.checkpoints")
                .unwrap()
                .checkpoint
        );
        assert_eq!(subject("mcptrail", "other.acme.l.events"), None);
        assert_eq!(subject("mcptrail", "mcptrail.acme.l.events.x"), None);
        assert_eq!(subject("mcptrail", "mcptrail.acme.l.alerts"), None);
    }

    #[test]
    fn a_real_ledger_line_parses_and_hashes_like_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        mcptrail_test_support::sinks::write_ledger(dir.path(), 3);
        let lines: Vec<_> = mcptrail_ledger::LedgerReader::open(dir.path(), 1)
            .unwrap()
            .map(|r| r.unwrap().line)
            .collect();
        let a = record(&lines[0]).unwrap();
        let b = record(&lines[1]).unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(
            a.prev_hash, [0u8; 32],
            "the first record links to the genesis hash"
        );
        assert_eq!(
            b.prev_hash, a.hash,
            "the chain link is the ledger's record hash"
        );
        assert!(record(b"{\"seq\":1}").is_err());
        assert!(record(b"\xff").is_err());
    }
}
