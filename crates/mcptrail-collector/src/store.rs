//! One PostgreSQL transaction per pulled batch: check every record against its source's chain
//! state, every checkpoint against the stored chain, and store what passed, what waits for
//! its predecessor (`pending`), what failed (`quarantine`) and the alerts, with the new chain
//! state, in the same transaction. The caller acknowledges every message only after the
//! commit: once acknowledged, a message is in PostgreSQL in one of those tables, so a crash, a
//! redelivery or a second collector never loses or doubles it.
//!
//! Per source (rows of `sources` are locked `FOR UPDATE` in (tenant, source) order, so two
//! collectors serialise per source and never deadlock), records sorted by seq:
//! - `seq ≤ last_seq`: the same record hash as stored → a redelivery, counted and dropped;
//!   another hash → a modified or forged record: quarantine + alert `chain_conflict`.
//! - Otherwise the record is a *candidate*. Candidates of this batch and those waiting in
//!   `pending` (from earlier batches, maybe another collector's) are chained in seq order from
//!   `last_seq + 1`: a candidate whose `prev_hash` is the stored last hash is stored; one that
//!   names another predecessor is quarantined (`chain_break`) — no later arrival can make it
//!   right, the predecessor's hash is fixed. The first missing seq stops the chain; candidates
//!   after it wait in `pending` (acknowledged, durable, not searchable). JetStream redelivers a
//!   killed collector's batch only after its ack wait, so records routinely arrive out of
//!   order with two collectors; nothing is held in NATS and nothing is redelivered in a loop.
//!   A source whose records in a batch *start* after a gap is first retried a few times within
//!   75 ms (its predecessors are usually in the other collector's batch, a moment ahead): a
//!   write and a delete in `pending` per record saved.
//! - A new source's first record must be seq 1 and link to the genesis hash (anchored). A
//!   source whose records start later (retention purged its first segments under a signed
//!   tombstone, or it was shipped from the middle) waits in `pending` until
//!   [`crate::sweep`] accepts it as **unanchored** after `hold_secs`: the chain is checked
//!   from there on, but its checkpoints cover leaves the collector never saw, so they are
//!   stored as `verified = false` and an alert `unanchored_source` (severity info) says so.
//! - A gap that does not fill within `gap_alert_secs` is an alert (`chain_gap`, by the sweep);
//!   the records after it stay pending and are stored if the missing ones ever arrive.
//!
//! Checkpoints (after the batch's records are inserted): the note's signature must verify
//! with a trusted key (else quarantine + `checkpoint_signature`), its origin must be the one
//! the source used before (`checkpoint_origin`), and its root must equal the Merkle root of
//! the stored records `1..=size` — from the nearest `tree_snapshots` row at or below the size
//! plus the leaves after it (else `checkpoint_mismatch`). A checkpoint beyond the stored chain
//! waits in `pending_checkpoints` and is checked when the chain reaches it.

use std::collections::{BTreeMap, HashMap, HashSet};

use mcptrail_event::activity::Tally;
use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::{Checkpoint, NoteVerifier};
use tokio_postgres::{Client, Transaction};

use crate::parse::{self, Record};
use crate::Error;

/// One pulled message.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Counts of one batch (or sweep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Records stored in `events`.
    pub stored: u64,
    /// Redeliveries of stored records or checkpoints.
    pub duplicates: u64,
    /// Messages quarantined.
    pub quarantined: u64,
    /// Records and checkpoints that went to `pending` (waiting for a predecessor).
    pub pending: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Alerts raised.
    pub alerts: u64,
}

impl std::ops::AddAssign for BatchCounts {
    fn add_assign(&mut self, o: Self) {
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.quarantined += o.quarantined;
        self.pending += o.pending;
        self.checkpoints += o.checkpoints;
        self.alerts += o.alerts;
    }
}

/// What the checks need.
pub struct Checks {
    /// The subject prefix.
    pub prefix: String,
    /// The PostgreSQL schema.
    pub schema: String,
    /// Trusted checkpoint keys.
    pub verifiers: Vec<NoteVerifier>,
}

/// An alert raised by the collector (stored in `alerts`, published on NATS after the commit).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alert {
    /// The source's tenant, when known.
    pub tenant: Option<String>,
    /// The source, when known.
    pub source: Option<String>,
    /// What broke (`chain_break`, `source_silent`, …).
    pub kind: &'static str,
    /// `info`, `medium`, `high`, `critical`.
    pub severity: &'static str,
    /// The record seq (or checkpoint size) it is about.
    pub seq: Option<i64>,
    /// What happened, for a person.
    pub message: String,
    /// Detection alerts: the rule that fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Detection alerts: the deterministic alert id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    /// Detection alerts: the event ids that triggered it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl Alert {
    /// An alert without rule or evidence.
    pub fn new(
        tenant: Option<String>,
        source: Option<String>,
        kind: &'static str,
        severity: &'static str,
        seq: Option<i64>,
        message: String,
    ) -> Self {
        Alert {
            tenant,
            source,
            kind,
            severity,
            seq,
            message,
            rule: None,
            alert_id: None,
            evidence: Vec::new(),
        }
    }
}

struct Quarantined {
    tenant: Option<String>,
    source: Option<String>,
    subject: String,
    seq: Option<i64>,
    reason: String,
    payload: Vec<u8>,
}

/// What one transaction produced besides its rows.
#[derive(Default)]
pub(crate) struct Outcome {
    quarantine: Vec<Quarantined>,
    pub(crate) alerts: Vec<Alert>,
    pub(crate) counts: BatchCounts,
}

impl Outcome {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reject(
        &mut self,
        tenant: &str,
        source: &str,
        subject: &str,
        payload: &[u8],
        seq: Option<i64>,
        kind: &'static str,
        severity: &'static str,
        reason: String,
    ) {
        self.quarantine.push(Quarantined {
            tenant: Some(tenant.into()),
            source: Some(source.into()),
            subject: subject.into(),
            seq,
            reason: reason.clone(),
            payload: payload.to_vec(),
        });
        self.alert(tenant, source, kind, severity, seq, reason);
        self.counts.quarantined += 1;
    }

    pub(crate) fn alert(
        &mut self,
        tenant: &str,
        source: &str,
        kind: &'static str,
        severity: &'static str,
        seq: Option<i64>,
        message: String,
    ) {
        self.alerts.push(Alert::new(
            Some(tenant.into()),
            Some(source.into()),
            kind,
            severity,
            seq,
            message,
        ));
        self.counts.alerts += 1;
    }

    /// Insert the quarantined messages and the alerts (inside the caller's transaction).
    pub(crate) async fn write(&self, tx: &Transaction<'_>) -> Result<(), Error> {
        if !self.quarantine.is_empty() {
            let q = &self.quarantine;
            let tenants: Vec<Option<String>> = q.iter().map(|x| x.tenant.clone()).collect();
            let sources: Vec<Option<String>> = q.iter().map(|x| x.source.clone()).collect();
            let subjects: Vec<&str> = q.iter().map(|x| x.subject.as_str()).collect();
            let seqs: Vec<Option<i64>> = q.iter().map(|x| x.seq).collect();
            let reasons: Vec<&str> = q.iter().map(|x| x.reason.as_str()).collect();
            let payloads: Vec<&[u8]> = q.iter().map(|x| x.payload.as_slice()).collect();
            tx.execute(
                "INSERT INTO quarantine (tenant, source, subject, seq, reason, payload)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[])",
                &[&tenants, &sources, &subjects, &seqs, &reasons, &payloads],
            )
            .await?;
        }
        if !self.alerts.is_empty() {
            let a = &self.alerts;
            let tenants: Vec<Option<String>> = a.iter().map(|x| x.tenant.clone()).collect();
            let sources: Vec<Option<String>> = a.iter().map(|x| x.source.clone()).collect();
            let kinds: Vec<&str> = a.iter().map(|x| x.kind).collect();
            let sev: Vec<&str> = a.iter().map(|x| x.severity).collect();
            let seqs: Vec<Option<i64>> = a.iter().map(|x| x.seq).collect();
            let msgs: Vec<&str> = a.iter().map(|x| x.message.as_str()).collect();
            tx.execute(
                "INSERT INTO alerts (tenant, source, kind, severity, seq, message)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])",
                &[&tenants, &sources, &kinds, &sev, &seqs, &msgs],
            )
            .await?;
        }
        Ok(())
    }
}

/// A record that may extend a source's chain: from this batch, or waiting in `pending`.
struct Candidate {
    rec: Record,
    subject: String,
    /// Read from `pending` (to be deleted there once decided).
    pending: bool,
}

/// A source's chain state, as in its `sources` row.
pub(crate) struct SourceState {
    pub(crate) id: i64,
    pub(crate) tenant: String,
    pub(crate) source: String,
    pub(crate) first_seq: Option<i64>,
    pub(crate) last_seq: i64,
    pub(crate) last_hash: Option<Vec<u8>>,
    tree: Frontier,
    pub(crate) anchored: bool,
    origin: Option<String>,
    checkpoint_size: i64,
    pub(crate) gap_alerted_seq: i64,
    pub(crate) silent_alerted: bool,
    /// Records stored in this transaction.
    stored: u64,
    changed: bool,
    /// Whether `pending` may hold records of this source (false when none were there once
    /// the row was locked: the lock keeps it so until the commit).
    pending_rows: bool,
    /// Whether `pending_checkpoints` may hold checkpoints of this source (likewise).
    pending_checkpoints: bool,
}

impl SourceState {
    /// Lock and read the row of `(tenant, source)`, creating it first when missing.
    pub(crate) async fn lock(
        tx: &Transaction<'_>,
        tenant: &str,
        source: &str,
    ) -> Result<Self, Error> {
        let mut one = Self::lock_all(tx, &[(tenant.to_string(), source.to_string())]).await?;
        Ok(one.pop().expect("lock_all returns one state per key"))
    }

    /// Lock and read the rows of several sources at once (creating the missing ones), in
    /// byte order of (tenant, source) so that collectors locking several never deadlock,
    /// with whether each has rows in `pending` and `pending_checkpoints`. Three statements,
    /// sent together. Returned in the order of `keys`.
    pub(crate) async fn lock_all(
        tx: &Transaction<'_>,
        keys: &[(String, String)],
    ) -> Result<Vec<Self>, Error> {
        let tenants: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let sources: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenants, &sources];
        let create = tx.execute(
            "INSERT INTO sources (tenant, source) SELECT * FROM UNNEST($1::text[], $2::text[])
             ON CONFLICT (tenant, source) DO NOTHING",
            &params,
        );
        let read = tx.query(
            "SELECT s.source_id, s.first_seq, s.last_seq, s.last_hash, s.tree_size, s.tree_roots, s.anchored,
                    s.origin, s.checkpoint_size, s.gap_alerted_seq, s.silent_alerted, s.tenant, s.source
             FROM sources s JOIN UNNEST($1::text[], $2::text[]) AS k(t, s) ON s.tenant = k.t AND s.source = k.s
             ORDER BY s.tenant COLLATE \"C\", s.source COLLATE \"C\"
             FOR UPDATE OF s",
            &params,
        );
        // A statement of its own, after the lock: a statement sees what was committed when it
        // began, and the lock may have waited for another collector's commit (which may have
        // parked records in `pending`).
        let waiting = tx.query(
            "SELECT s.source_id,
                    EXISTS (SELECT 1 FROM pending p WHERE p.source_id = s.source_id),
                    EXISTS (SELECT 1 FROM pending_checkpoints c WHERE c.source_id = s.source_id)
             FROM sources s JOIN UNNEST($1::text[], $2::text[]) AS k(t, s) ON s.tenant = k.t AND s.source = k.s",
            &params,
        );
        let (_, rows, waiting) = futures_util::future::try_join3(create, read, waiting).await?;
        let waiting: HashMap<i64, (bool, bool)> = waiting
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let mut by_key: HashMap<(String, String), SourceState> = HashMap::new();
        for row in rows {
            let (tenant, source): (String, String) = (row.get(11), row.get(12));
            let tree_size: i64 = row.get(4);
            let tree_roots: Vec<u8> = row.get(5);
            let tree = frontier_of(tree_size, &tree_roots).ok_or_else(|| {
                Error::Postgres(format!(
                    "sources row of {tenant}/{source}: tree_roots does not fit tree_size {tree_size}"
                ))
            })?;
            by_key.insert(
                (tenant.clone(), source.clone()),
                SourceState {
                    id: row.get(0),
                    tenant,
                    source,
                    first_seq: row.get(1),
                    last_seq: row.get(2),
                    last_hash: row.get(3),
                    tree,
                    anchored: row.get(6),
                    origin: row.get(7),
                    checkpoint_size: row.get(8),
                    gap_alerted_seq: row.get(9),
                    silent_alerted: row.get(10),
                    stored: 0,
                    changed: false,
                    pending_rows: waiting.get(&row.get(0)).is_none_or(|w| w.0),
                    pending_checkpoints: waiting.get(&row.get(0)).is_none_or(|w| w.1),
                },
            );
        }
        keys.iter()
            .map(|k| {
                by_key.remove(k).ok_or_else(|| {
                    Error::Postgres(format!(
                        "sources row of {}/{} not found after insert",
                        k.0, k.1
                    ))
                })
            })
            .collect()
    }

    /// Begin an unanchored chain just before `seq`, whose record names `prev_hash`.
    pub(crate) fn start_unanchored(&mut self, seq: i64, prev_hash: [u8; 32]) {
        self.first_seq = Some(seq);
        self.last_seq = seq - 1;
        self.last_hash = Some(prev_hash.to_vec());
        self.anchored = false;
        self.changed = true;
    }

    pub(crate) fn mark_changed(&mut self) {
        self.changed = true;
    }
}

/// One session's share of a batch (the `sessions` summary row it adds to).
struct SessionShare {
    first: time::OffsetDateTime,
    last: time::OffsetDateTime,
    events: i64,
    agent: Option<String>,
    user: Option<String>,
}

/// Rows to insert into `records` and `events`, and what they add to the summaries (sessions,
/// counts per kind, agent hours), summed here so each summary gets one row per key.
#[derive(Default)]
struct Rows {
    source_id: Vec<i64>,
    seq: Vec<i64>,
    event_id: Vec<uuid::Uuid>,
    hash: Vec<Vec<u8>>,
    time: Vec<time::OffsetDateTime>,
    kind: Vec<String>,
    session: Vec<Option<String>>,
    agent: Vec<Option<String>>,
    user: Vec<Option<String>>,
    tool: Vec<Option<String>>,
    line: Vec<String>,
    /// Sessions started, and ended: (source, session id[, start time]).
    starts: Vec<(i64, String, time::OffsetDateTime)>,
    ends: Vec<(i64, String)>,
    sessions: HashMap<(i64, String), SessionShare>,
    kinds: HashMap<(i64, String), i64>,
    /// Activity per (agent, clock hour, source).
    hours: HashMap<(String, time::OffsetDateTime, i64), Tally>,
}

impl Rows {
    fn push(&mut self, source_id: i64, rec: Record) {
        if let Some(s) = &rec.session_id {
            match rec.kind.as_str() {
                "session.start" => self.starts.push((source_id, s.clone(), rec.time)),
                "session.end" => self.ends.push((source_id, s.clone())),
                _ => {}
            }
            let share = self
                .sessions
                .entry((source_id, s.clone()))
                .or_insert_with(|| SessionShare {
                    first: rec.time,
                    last: rec.time,
                    events: 0,
                    agent: None,
                    user: None,
                });
            share.first = share.first.min(rec.time);
            share.last = share.last.max(rec.time);
            share.events += 1;
            if rec.agent > share.agent {
                share.agent.clone_from(&rec.agent);
            }
            if rec.user > share.user {
                share.user.clone_from(&rec.user);
            }
        }
        *self.kinds.entry((source_id, rec.kind.clone())).or_default() += 1;
        if let Some(agent) = &rec.agent {
            let hour = rec
                .time
                .replace_time(time::Time::from_hms(rec.time.hour(), 0, 0).expect("a valid hour"));
            self.hours
                .entry((agent.clone(), hour, source_id))
                .or_default()
                .merge(&rec.activity);
        }
        self.source_id.push(source_id);
        self.seq.push(rec.seq as i64);
        self.event_id.push(rec.event_id);
        self.hash.push(rec.hash.to_vec());
        self.time.push(rec.time);
        self.kind.push(rec.kind);
        self.session.push(rec.session_id);
        self.agent.push(rec.agent);
        self.user.push(rec.user);
        self.tool.push(rec.tool);
        self.line.push(rec.line);
    }

    /// Insert the rows (of any number of sources) and add to the summaries.
    async fn insert(&self, tx: &Transaction<'_>) -> Result<(), Error> {
        if self.seq.is_empty() {
            return Ok(());
        }
        // First on its own: a reused event id fails here (`Error::UniqueEventId`).
        tx.execute(
            "INSERT INTO records (source_id, seq, event_id, record_hash, time)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::uuid[], $4::bytea[], $5::timestamptz[])",
            &[&self.source_id, &self.seq, &self.event_id, &self.hash, &self.time],
        )
        .await
        .map_err(Error::from_insert)?;
        // The rest are sent together (pipelined on the connection: one round trip, not five).
        let events = async {
            tx.execute(
            "INSERT INTO events (time, event_id, source_id, seq, kind, session_id, user_principal, tool, line, agent_id)
             SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
            &[&self.time, &self.event_id, &self.source_id, &self.seq, &self.kind, &self.session, &self.user, &self.tool, &self.line, &self.agent],
        )
            .await
        };
        // The summaries investigators page through (sessions, counts per kind, agent hours).
        let mut s_source = Vec::with_capacity(self.sessions.len());
        let mut s_id = Vec::with_capacity(self.sessions.len());
        let mut s_first = Vec::with_capacity(self.sessions.len());
        let mut s_last = Vec::with_capacity(self.sessions.len());
        let mut s_events = Vec::with_capacity(self.sessions.len());
        let mut s_agent = Vec::with_capacity(self.sessions.len());
        let mut s_user = Vec::with_capacity(self.sessions.len());
        for ((source, id), sh) in &self.sessions {
            s_source.push(*source);
            s_id.push(id.as_str());
            s_first.push(sh.first);
            s_last.push(sh.last);
            s_events.push(sh.events);
            s_agent.push(sh.agent.as_deref());
            s_user.push(sh.user.as_deref());
        }
        let sessions = async {
            if s_id.is_empty() {
                return Ok(0);
            }
            tx.execute(
                "INSERT INTO sessions (source_id, session_id, first_time, last_time, events, agent_id, user_principal)
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::int8[], $6::text[], $7::text[])
                 ON CONFLICT (source_id, session_id) DO UPDATE SET
                   first_time = least(sessions.first_time, excluded.first_time),
                   last_time = greatest(sessions.last_time, excluded.last_time),
                   events = sessions.events + excluded.events,
                   agent_id = coalesce(sessions.agent_id, excluded.agent_id),
                   user_principal = coalesce(sessions.user_principal, excluded.user_principal)",
                &[&s_source, &s_id, &s_first, &s_last, &s_events, &s_agent, &s_user],
            )
            .await
        };
        let mut k_source = Vec::with_capacity(self.kinds.len());
        let mut k_kind = Vec::with_capacity(self.kinds.len());
        let mut k_n = Vec::with_capacity(self.kinds.len());
        for ((source, kind), n) in &self.kinds {
            k_source.push(*source);
            k_kind.push(kind.as_str());
            k_n.push(*n);
        }
        let kinds = async {
            tx.execute(
                "INSERT INTO kind_counts (source_id, kind, events)
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::int8[])
                 ON CONFLICT (source_id, kind) DO UPDATE SET events = kind_counts.events + excluded.events",
                &[&k_source, &k_kind, &k_n],
            )
            .await
        };
        let mut cols: [Vec<i64>; 5] = Default::default();
        let mut h_agent = Vec::with_capacity(self.hours.len());
        let mut h_hour = Vec::with_capacity(self.hours.len());
        let mut h_source = Vec::with_capacity(self.hours.len());
        for ((agent, hour, source), t) in &self.hours {
            h_agent.push(agent.as_str());
            h_hour.push(*hour);
            h_source.push(*source);
            for (c, v) in cols
                .iter_mut()
                .zip([t.events, t.calls, t.results, t.errors, t.bytes])
            {
                c.push(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
        let hours = async {
            if h_agent.is_empty() {
                return Ok(0);
            }
            tx.execute(
                "INSERT INTO agent_hours (agent_id, hour, source_id, events, calls, results, errors, bytes)
                 SELECT a, h, s, e, c, r, f, b
                 FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[])
                   AS x(s, a, h, e, c, r, f, b)
                 ON CONFLICT (agent_id, hour, source_id) DO UPDATE SET
                   events = agent_hours.events + excluded.events,
                   calls = agent_hours.calls + excluded.calls,
                   results = agent_hours.results + excluded.results,
                   errors = agent_hours.errors + excluded.errors,
                   bytes = agent_hours.bytes + excluded.bytes",
                &[&h_source, &h_agent, &h_hour, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4]],
            )
            .await
        };
        let o_sources: Vec<i64> = self.starts.iter().map(|(s, _, _)| *s).collect();
        let o_ids: Vec<&str> = self.starts.iter().map(|(_, s, _)| s.as_str()).collect();
        let o_times: Vec<time::OffsetDateTime> = self.starts.iter().map(|(_, _, t)| *t).collect();
        let e_sources: Vec<i64> = self.ends.iter().map(|(s, _)| *s).collect();
        let e_ids: Vec<&str> = self.ends.iter().map(|(_, s)| s.as_str()).collect();
        let open = async {
            if !o_ids.is_empty() {
                tx.execute(
                    "INSERT INTO open_sessions (source_id, session_id, started_at)
                     SELECT * FROM UNNEST($1::int8[], $2::text[], $3::timestamptz[]) ON CONFLICT DO NOTHING",
                    &[&o_sources, &o_ids, &o_times],
                )
                .await?;
            }
            if !e_ids.is_empty() {
                tx.execute(
                    "DELETE FROM open_sessions o USING UNNEST($1::int8[], $2::text[]) AS e(s, id)
                     WHERE o.source_id = e.s AND o.session_id = e.id",
                    &[&e_sources, &e_ids],
                )
                .await?;
            }
            Ok::<_, tokio_postgres::Error>(0)
        };
        futures_util::future::try_join5(events, sessions, kinds, hours, open).await?;
        Ok(())
    }
}

fn frontier_of(size: i64, roots: &[u8]) -> Option<Frontier> {
    let roots: Vec<[u8; 32]> = roots
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    Frontier::from_parts(u64::try_from(size).ok()?, roots)
}

fn roots_bytes(f: &Frontier) -> Vec<u8> {
    f.subtree_roots().flat_map(|r| r.iter().copied()).collect()
}

#[derive(Default)]
struct Group {
    records: Vec<(Record, String)>,
    checkpoints: Vec<(String, Vec<u8>, String)>,
    /// Payloads that are not what their subject says: (subject, payload, alert kind, reason).
    rejected: Vec<(String, Vec<u8>, &'static str, String)>,
    /// Retention tombstones (on the checkpoints subject): (note, subject).
    tombstones: Vec<(String, String)>,
}

/// The extension line that makes a signed checkpoint note a retention tombstone.
const TOMBSTONE_MAGIC: &str = "\nmcptrail-tombstone v1\n";

/// What [`process`] did with a batch.
#[derive(Debug, Default)]
pub struct Processed {
    /// Counts over the committed transactions.
    pub counts: BatchCounts,
    /// Alerts raised by the committed transactions (to publish).
    pub alerts: Vec<Alert>,
    /// Indices (into the batch) of the messages whose transaction committed: acknowledge
    /// them. The others are to be redelivered.
    pub committed: Vec<usize>,
    /// The error that stopped the batch, if one did (the rest of it was not stored).
    pub error: Option<Error>,
}

impl Processed {
    /// Take one transaction's result: its counts, alerts and messages when it committed
    /// (`true`), the error when it did not (`false`: stop there).
    fn absorb(&mut self, r: Result<Outcome, Error>, idxs: Vec<usize>) -> bool {
        match r {
            Ok(out) => {
                self.counts += out.counts;
                self.alerts.extend(out.alerts);
                self.committed.extend(idxs);
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

/// Check and store one batch: one transaction for all its sources (their rows locked at once,
/// in byte order of (tenant, source)), so a batch costs a handful of round trips and one
/// commit whatever the number of sources. Every message of a committed transaction is decided
/// (stored, a duplicate, pending or quarantined): acknowledge those in
/// [`Processed::committed`].
pub async fn process(
    client: &mut Client,
    checks: &Checks,
    msgs: &[Incoming],
    partitions: &mut HashSet<time::Date>,
) -> Processed {
    let mut done = Processed::default();
    let mut bad = Outcome::default();
    let mut bad_idx = Vec::new();
    let mut by_source: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (idx, m) in msgs.iter().enumerate() {
        let Some(parts) = parse::subject(&checks.prefix, &m.subject) else {
            let reason = format!(
                "subject `{}` is not {}.<tenant>.<source>.events|checkpoints",
                m.subject, checks.prefix
            );
            bad.quarantine.push(Quarantined {
                tenant: None,
                source: None,
                subject: m.subject.clone(),
                seq: None,
                reason: reason.clone(),
                payload: m.payload.clone(),
            });
            bad.alerts.push(Alert::new(
                None,
                None,
                "bad_subject",
                "medium",
                None,
                reason,
            ));
            bad.counts.quarantined += 1;
            bad.counts.alerts += 1;
            bad_idx.push(idx);
            continue;
        };
        by_source
            .entry((parts.tenant, parts.source))
            .or_default()
            .push(idx);
    }
    let groups: Vec<((String, String), Group, Vec<usize>)> = by_source
        .into_iter()
        .map(|(key, idxs)| {
            let g = group_of(checks, msgs, &idxs);
            (key, g, idxs)
        })
        .collect();
    // The day partitions of `events` the records need (each in its own short transaction).
    let days: HashSet<time::Date> = groups
        .iter()
        .flat_map(|(_, g, _)| g.records.iter())
        .map(|(r, _)| r.time.to_offset(time::UtcOffset::UTC).date())
        .filter(|d| !partitions.contains(d))
        .collect();
    for day in days {
        if let Err(e) = crate::schema::ensure_partition(client, &checks.schema, day).await {
            done.error = Some(e);
            return done;
        }
        partitions.insert(day);
    }
    // Messages on subjects that name no source, then the sources: one transaction for all.
    if !bad_idx.is_empty() {
        let r: Result<Outcome, Error> = async {
            let tx = client.transaction().await?;
            bad.write(&tx).await?;
            tx.commit().await?;
            Ok(bad)
        }
        .await;
        if !done.absorb(r, bad_idx) {
            return done;
        }
    }
    // A source whose records in this batch start after a gap is put back and retried in a
    // later transaction, a few times with short waits: its predecessors are usually in
    // another collector's batch a few milliseconds ahead. The last try stores what chains
    // and parks the rest in `pending`, as it would have at once (a real gap waits there).
    let mut todo = groups;
    for attempt in 0..=GAP_RETRIES.len() {
        if todo.is_empty() {
            break;
        }
        let last = attempt == GAP_RETRIES.len();
        if attempt > 0 {
            tokio::time::sleep(GAP_RETRIES[attempt - 1]).await;
        }
        let keys: Vec<(String, String)> = todo.iter().map(|(k, _, _)| k.clone()).collect();
        let idxs: Vec<Vec<usize>> = todo.iter().map(|(_, _, i)| i.clone()).collect();
        let parsed: Vec<Group> = todo.into_iter().map(|(_, g, _)| g).collect();
        // The fast path lets the unique index on records.event_id catch a reused event id;
        // if it does, the transaction is redone with an explicit check (from the messages
        // again: the fast path consumed the parsed groups).
        let mut result = sources_tx(client, checks, &keys, parsed, false, !last).await;
        if let Err(Error::UniqueEventId) = result {
            let again = idxs.iter().map(|i| group_of(checks, msgs, i)).collect();
            result = sources_tx(client, checks, &keys, again, true, false).await;
        }
        let (out, deferred) = match result {
            Ok(r) => r,
            Err(e) => {
                done.error = Some(e);
                return done;
            }
        };
        let mut later = Vec::new();
        let mut committed = Vec::new();
        let mut deferred = deferred.into_iter().peekable();
        for (n, (key, idx)) in keys.into_iter().zip(idxs).enumerate() {
            match deferred.next_if(|(d, _)| *d == n) {
                Some((_, g)) => later.push((key, g, idx)),
                None => committed.extend(idx),
            }
        }
        done.absorb(Ok(out), committed);
        todo = later;
    }
    done
}

/// The waits before each retry of a source whose batch starts after a gap in its chain (75 ms
/// in all, then the records wait in `pending`).
const GAP_RETRIES: [std::time::Duration; 4] = [
    std::time::Duration::from_millis(5),
    std::time::Duration::from_millis(10),
    std::time::Duration::from_millis(20),
    std::time::Duration::from_millis(40),
];

/// The messages `idxs` of one source, parsed.
fn group_of(checks: &Checks, msgs: &[Incoming], idxs: &[usize]) -> Group {
    let mut g = Group::default();
    for &i in idxs {
        let m = &msgs[i];
        let checkpoint = parse::subject(&checks.prefix, &m.subject).is_some_and(|p| p.checkpoint);
        if checkpoint {
            match std::str::from_utf8(&m.payload) {
                Ok(note) if note.contains(TOMBSTONE_MAGIC) => {
                    g.tombstones.push((note.to_string(), m.subject.clone()))
                }
                Ok(note) => {
                    g.checkpoints
                        .push((note.to_string(), m.payload.clone(), m.subject.clone()))
                }
                Err(_) => g.rejected.push((
                    m.subject.clone(),
                    m.payload.clone(),
                    "checkpoint_malformed",
                    "the checkpoint is not UTF-8 text".into(),
                )),
            }
        } else {
            match parse::record(&m.payload) {
                Ok(r) => g.records.push((r, m.subject.clone())),
                Err(reason) => g.rejected.push((
                    m.subject.clone(),
                    m.payload.clone(),
                    "record_malformed",
                    reason,
                )),
            }
        }
    }
    g
}

/// The sources of a batch (`keys`, in byte order, with their parsed `groups`) in one
/// transaction: every source row locked at once, each source's tombstones and records
/// chained, all rows inserted together, then each source's checkpoints and the new chain
/// states. With `defer_gap`, a source whose records start after a gap in its chain is left
/// out (nothing of it written): returned with its position in `keys`.
async fn sources_tx(
    client: &mut Client,
    checks: &Checks,
    keys: &[(String, String)],
    groups: Vec<Group>,
    check_ids: bool,
    defer_gap: bool,
) -> Result<(Outcome, Vec<(usize, Group)>), Error> {
    let mut out = Outcome::default();
    let tx = client.transaction().await?;
    let mut states = SourceState::lock_all(&tx, keys).await?;
    let mut rows = Rows::default();
    let mut deferred = Vec::new();
    let mut kept = Vec::new();
    for (n, (st, g)) in states.iter_mut().zip(groups).enumerate() {
        if defer_gap && g.tombstones.is_empty() {
            let first = g.records.iter().map(|(r, _)| r.seq as i64).min();
            if first.is_some_and(|f| f > st.last_seq + 1) {
                deferred.push((n, g));
                continue;
            }
        }
        let checkpoints = one_source(&tx, checks, st, g, check_ids, &mut out, &mut rows).await?;
        kept.push((n, checkpoints));
    }
    // First on its own: a reused event id fails here (`Error::UniqueEventId`).
    rows.insert(&tx).await?;
    for (n, checkpoints) in kept {
        finish(&tx, checks, &mut states[n], checkpoints, &mut out).await?;
    }
    save_all(&tx, &mut states).await?;
    out.write(&tx).await?;
    tx.commit().await.map_err(Error::from_insert)?;
    Ok((out, deferred))
}

/// One locked source's part of a batch: its rejected messages, tombstones and records (the
/// rows that chain go to `rows`). Returns its checkpoints, to check once the rows are in.
async fn one_source(
    tx: &Transaction<'_>,
    checks: &Checks,
    st: &mut SourceState,
    g: Group,
    check_ids: bool,
    out: &mut Outcome,
    rows: &mut Rows,
) -> Result<Vec<(String, Vec<u8>, String)>, Error> {
    let (tenant, source) = (st.tenant.clone(), st.source.clone());
    for (subject, payload, kind, reason) in g.rejected {
        out.reject(
            &tenant, &source, &subject, &payload, None, kind, "high", reason,
        );
    }
    // Tombstones in order; records removed before the fleet saw them make one alert per
    // removal (a removal of several segments comes as several contiguous tombstones, possibly
    // over several batches).
    let mut tombstones: Vec<(u64, String, String)> = g
        .tombstones
        .into_iter()
        .map(|(note, subject)| {
            let size = mcptrail_ledger::Tombstone::read_unverified(&note)
                .map(|t| t.last_seq)
                .unwrap_or(0);
            (size, note, subject)
        })
        .collect();
    tombstones.sort_by_key(|t| t.0);
    let mut skipped: Option<(i64, i64, &'static str)> = None;
    for (_, note, subject) in tombstones {
        if let Some((from, to, state)) =
            apply_tombstone(tx, checks, st, &note, &subject, out).await?
        {
            skipped = Some(match skipped {
                Some((f, _, _)) => (f, to, state),
                None => (from, to, state),
            });
        }
    }
    if let Some((from, to, state)) = skipped {
        // One removal's tombstones can arrive over more than one batch. When the seq before
        // this range was not stored either, the range continues the one named by the source's
        // last such alert: that alert is extended rather than a second one raised.
        let continued = if from > 1 {
            tx.query_opt(
                "SELECT id, seq FROM alerts WHERE tenant = $1 AND source = $2
                   AND kind = 'purged_before_shipped'
                   AND NOT EXISTS (SELECT 1 FROM records WHERE source_id = $3 AND seq = $4::int8)
                 ORDER BY id DESC LIMIT 1",
                &[&tenant, &source, &st.id, &(from - 1)],
            )
            .await?
        } else {
            None
        };
        match continued {
            Some(alert) => {
                let (id, first): (i64, Option<i64>) = (alert.get(0), alert.get(1));
                tx.execute(
                    "UPDATE alerts SET message = $1 WHERE id = $2",
                    &[&purged_message(first.unwrap_or(from), to, state), &id],
                )
                .await?;
            }
            None => out.alert(
                &tenant,
                &source,
                "purged_before_shipped",
                "medium",
                Some(from),
                purged_message(from, to, state),
            ),
        }
    }
    chain(tx, st, g.records, check_ids, out, rows).await?;
    Ok(g.checkpoints)
}

/// The `purged_before_shipped` alert's message for records `from..=to`.
fn purged_message(from: i64, to: i64, state: &str) -> String {
    format!(
        "records seq {from}..={to} were removed on the tap by retention (signed tombstones, {state}) before the fleet received them; the chain continues at seq {}",
        to + 1
    )
}

/// Everything for one locked source: repeated records, chaining (fresh and pending
/// candidates), pending inserts, row inserts, checkpoints, and the new chain state.
pub(crate) async fn settle(
    tx: &Transaction<'_>,
    checks: &Checks,
    st: &mut SourceState,
    fresh: Vec<(Record, String)>,
    checkpoints: Vec<(String, Vec<u8>, String)>,
    check_ids: bool,
    out: &mut Outcome,
) -> Result<(), Error> {
    let mut rows = Rows::default();
    chain(tx, st, fresh, check_ids, out, &mut rows).await?;
    rows.insert(tx).await?;
    finish(tx, checks, st, checkpoints, out).await?;
    save(tx, st).await
}

/// The records of one locked source: repeated records, chaining (fresh and pending
/// candidates) and the `pending` table. What chains is added to `rows` (inserted by the
/// caller, with other sources' rows, before [`finish`]).
async fn chain(
    tx: &Transaction<'_>,
    st: &mut SourceState,
    mut fresh: Vec<(Record, String)>,
    check_ids: bool,
    out: &mut Outcome,
    rows: &mut Rows,
) -> Result<(), Error> {
    let (tenant, source) = (st.tenant.clone(), st.source.clone());
    fresh.sort_by_key(|(r, _)| r.seq);
    // Repeats of stored seqs: redeliveries or tampering.
    let repeated: Vec<i64> = fresh
        .iter()
        .map(|(r, _)| r.seq as i64)
        .filter(|s| *s <= st.last_seq)
        .collect();
    let mut stored: HashMap<i64, Vec<u8>> = HashMap::new();
    if !repeated.is_empty() {
        for r in tx
            .query(
                "SELECT seq, record_hash FROM records WHERE source_id = $1 AND seq = ANY($2)",
                &[&st.id, &repeated],
            )
            .await?
        {
            stored.insert(r.get(0), r.get(1));
        }
    }
    let mut map: BTreeMap<i64, Vec<Candidate>> = BTreeMap::new();
    for (rec, subject) in fresh {
        let seq = rec.seq as i64;
        if seq <= st.last_seq {
            match stored.get(&seq) {
                Some(h) if h[..] == rec.hash[..] => out.counts.duplicates += 1,
                Some(_) => out.reject(
                    &tenant, &source, &subject, rec.line.as_bytes(), Some(seq), "chain_conflict", "critical",
                    format!("record seq {seq} differs from the stored record of that seq (modified or forged in transit)"),
                ),
                None => out.reject(
                    &tenant, &source, &subject, rec.line.as_bytes(), Some(seq), "chain_conflict", "high",
                    format!("record seq {seq} is before the first record stored for this source (seq {})", st.first_seq.unwrap_or(0)),
                ),
            }
            continue;
        }
        map.entry(seq).or_default().push(Candidate {
            rec,
            subject,
            pending: false,
        });
    }

    // Chain from last_seq + 1, loading pending candidates chunk by chunk.
    const CHUNK: i64 = 2000;
    let mut known_ids: HashSet<uuid::Uuid> = HashSet::new();
    let mut new_ids: HashSet<uuid::Uuid> = HashSet::new();
    if check_ids {
        let fresh_ids: Vec<uuid::Uuid> = map.values().flatten().map(|c| c.rec.event_id).collect();
        known_ids.extend(known_event_ids(tx, &fresh_ids).await?);
    }
    let mut pending_loaded_to = st.last_seq; // pending rows with seq ≤ this are in `map`
    let mut pending_more = st.pending_rows;
    let mut drop_pending: (Vec<i64>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    loop {
        let next = st.last_seq + 1;
        if pending_more && next > pending_loaded_to {
            let loaded = tx
                .query(
                    "SELECT seq, subject, line FROM pending WHERE source_id = $1 AND seq > $2
                     ORDER BY seq, received_at LIMIT $3",
                    &[&st.id, &pending_loaded_to, &CHUNK],
                )
                .await?;
            pending_more = loaded.len() as i64 == CHUNK;
            let mut ids = Vec::new();
            for row in &loaded {
                let seq: i64 = row.get(0);
                pending_loaded_to = pending_loaded_to.max(seq);
                let line: String = row.get(2);
                let Ok(rec) = parse::record(line.as_bytes()) else {
                    continue; // checked before it was stored; cannot happen
                };
                ids.push(rec.event_id);
                // Pending rows are older than this batch's: they go first.
                let at = map.entry(seq).or_default();
                let pos = at.iter().position(|c| !c.pending).unwrap_or(at.len());
                at.insert(
                    pos,
                    Candidate {
                        rec,
                        subject: row.get(1),
                        pending: true,
                    },
                );
            }
            // The last seq of a full chunk may have more candidates in the next one: load
            // them all then (unless the whole chunk is that one seq).
            let first_loaded = loaded.first().map(|r| r.get::<_, i64>(0));
            if pending_more && first_loaded != Some(pending_loaded_to) {
                pending_loaded_to -= 1;
                if let Some(last) = map.range(pending_loaded_to + 1..).next().map(|(k, _)| *k) {
                    map.get_mut(&last).expect("present").retain(|c| !c.pending);
                }
            }
            if check_ids {
                known_ids.extend(known_event_ids(tx, &ids).await?);
            }
        }
        let Some(cands) = map.remove(&next) else {
            break;
        };
        let want: Vec<u8> = match &st.last_hash {
            Some(h) => h.clone(),
            None => vec![0u8; 32], // the genesis hash
        };
        let mut accepted: Option<[u8; 32]> = None;
        for c in cands {
            let Candidate {
                rec,
                subject,
                pending,
            } = c;
            if pending {
                drop_pending.0.push(next);
                drop_pending.1.push(rec.hash.to_vec());
            }
            if accepted == Some(rec.hash) {
                out.counts.duplicates += 1;
                continue;
            }
            let line = rec.line.as_bytes();
            if accepted.is_some() {
                out.reject(
                    &tenant, &source, &subject, line, Some(next), "chain_conflict", "critical",
                    format!("record seq {next} differs from the stored record of that seq (modified or forged in transit)"),
                );
                continue;
            }
            if rec.prev_hash[..] != want[..] {
                let reason = if next == 1 && st.first_seq.is_none() {
                    "record seq 1 does not link to the genesis hash".to_string()
                } else {
                    format!("record seq {next}: prev_hash does not match the stored record seq {} (modified, forged or reordered)", st.last_seq)
                };
                out.reject(
                    &tenant,
                    &source,
                    &subject,
                    line,
                    Some(next),
                    "chain_break",
                    "critical",
                    reason,
                );
                continue;
            }
            if known_ids.contains(&rec.event_id) || new_ids.contains(&rec.event_id) {
                out.reject(
                    &tenant,
                    &source,
                    &subject,
                    line,
                    Some(next),
                    "event_id_reused",
                    "critical",
                    format!(
                        "record seq {next} reuses event_id {} of a stored record",
                        rec.event_id
                    ),
                );
                continue;
            }
            // Stored.
            if st.first_seq.is_none() {
                st.first_seq = Some(next);
                st.anchored = true;
            }
            accepted = Some(rec.hash);
            st.last_seq = next;
            st.last_hash = Some(rec.hash.to_vec());
            if st.anchored {
                st.tree.push(rec.hash);
            }
            st.changed = true;
            st.stored += 1;
            new_ids.insert(rec.event_id);
            rows.push(st.id, rec);
            out.counts.stored += 1;
        }
        if accepted.is_none() {
            break; // every candidate was wrong: the chain waits for the right one
        }
    }
    // Whatever of this batch did not chain waits for its predecessor.
    let mut p_seq = Vec::new();
    let mut p_hash = Vec::new();
    let mut p_subject = Vec::new();
    let mut p_line = Vec::new();
    for (seq, cands) in map {
        for c in cands.into_iter().filter(|c| !c.pending) {
            p_seq.push(seq);
            p_hash.push(c.rec.hash.to_vec());
            p_subject.push(c.subject);
            p_line.push(c.rec.line);
        }
    }
    if !p_seq.is_empty() {
        let n = tx
            .execute(
                "INSERT INTO pending (source_id, seq, record_hash, subject, line)
                 SELECT $1, * FROM UNNEST($2::int8[], $3::bytea[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING",
                &[&st.id, &p_seq, &p_hash, &p_subject, &p_line],
            )
            .await?;
        out.counts.pending += n;
        out.counts.duplicates += p_seq.len() as u64 - n;
    }
    if !drop_pending.0.is_empty() {
        tx.execute(
            "DELETE FROM pending p USING UNNEST($2::int8[], $3::bytea[]) AS d(seq, h)
             WHERE p.source_id = $1 AND p.seq = d.seq AND p.record_hash = d.h",
            &[&st.id, &drop_pending.0, &drop_pending.1],
        )
        .await?;
    }
    Ok(())
}

/// After the records are inserted: one locked source's checkpoints of this batch, then those
/// that waited in `pending_checkpoints` for the chain to reach them.
async fn finish(
    tx: &Transaction<'_>,
    checks: &Checks,
    st: &mut SourceState,
    checkpoints: Vec<(String, Vec<u8>, String)>,
    out: &mut Outcome,
) -> Result<(), Error> {
    for (note, payload, subject) in checkpoints {
        check_checkpoint(tx, checks, st, &note, &payload, &subject, out).await?;
    }
    if !st.pending_checkpoints {
        return Ok(());
    }
    let due = tx
        .query(
            "DELETE FROM pending_checkpoints WHERE source_id = $1 AND size <= $2 RETURNING note, subject",
            &[&st.id, &st.last_seq],
        )
        .await?;
    for row in due {
        let (note, subject): (String, String) = (row.get(0), row.get(1));
        check_checkpoint(tx, checks, st, &note, note.as_bytes(), &subject, out).await?;
    }
    Ok(())
}

/// A retention tombstone of the source (records `first..=P` removed on the tap under a
/// signed note carrying the hash of record P and the Merkle frontier at P):
/// - nothing stored yet: the chain continues at `P + 1`, anchored (the frontier gives every
///   later root, so the source's checkpoints are verified as if 1..=P had been seen);
/// - P within the stored chain: it must agree with it (record hash at P, and the root for an
///   anchored chain), else quarantine + `tombstone_mismatch`;
/// - an unanchored chain that starts at `P + 1` and links to the tombstone's last hash
///   becomes anchored;
/// - P beyond the stored chain: when only tombstones came before (nothing stored), the next
///   removed range; otherwise the records after the chain's end up to P were removed on the
///   tap before they reached the fleet — returned as `(from, to, state)` for the caller's
///   alert (`purged_before_shipped`). Either way the chain continues at `P + 1`.
///
/// Every tombstone accepted is kept in `tombstones`.
async fn apply_tombstone(
    tx: &Transaction<'_>,
    checks: &Checks,
    st: &mut SourceState,
    note: &str,
    subject: &str,
    out: &mut Outcome,
) -> Result<Option<(i64, i64, &'static str)>, Error> {
    let (tenant, source) = (st.tenant.clone(), st.source.clone());
    let t = checks
        .verifiers
        .iter()
        .find_map(|v| mcptrail_ledger::Tombstone::open(note, v).ok());
    let Some(t) = t else {
        out.reject(
            &tenant,
            &source,
            subject,
            note.as_bytes(),
            None,
            "tombstone_signature",
            "critical",
            "retention tombstone not signed by a trusted key".into(),
        );
        return Ok(None);
    };
    let p = t.last_seq as i64;
    let mut skipped = None;
    let last_hash = t.last_hash_bytes();
    let mismatch = |out: &mut Outcome, why: String| {
        out.reject(
            &tenant,
            &source,
            subject,
            note.as_bytes(),
            Some(p),
            "tombstone_mismatch",
            "critical",
            why,
        );
    };
    if st.origin.as_deref().is_some_and(|o| o != t.origin) {
        mismatch(
            out,
            format!(
                "tombstone origin `{}` is not this source's `{}`",
                t.origin,
                st.origin.as_deref().unwrap_or("")
            ),
        );
        return Ok(None);
    }
    if st.first_seq.is_none() {
        // Nothing stored: continue after the removed records.
        st.first_seq = Some(p + 1);
        st.last_seq = p;
        st.last_hash = Some(last_hash.to_vec());
        st.tree = t.tree();
        st.anchored = true;
        st.origin = Some(t.origin.clone());
        st.mark_changed();
        snapshot(tx, st).await?;
    } else if p <= st.last_seq {
        if p >= st.first_seq.unwrap_or(1) {
            let stored: Option<Vec<u8>> = tx
                .query_opt(
                    "SELECT record_hash FROM records WHERE source_id = $1 AND seq = $2",
                    &[&st.id, &p],
                )
                .await?
                .map(|r| r.get(0));
            if stored.as_deref() != Some(&last_hash[..]) {
                mismatch(
                    out,
                    format!("the tombstone's record hash at seq {p} is not the stored record's"),
                );
                return Ok(None);
            }
            if st.anchored && root_at(tx, st, p).await? != Some(t.tree().root()) {
                mismatch(
                    out,
                    format!("the tombstone's Merkle root at seq {p} is not the stored chain's"),
                );
                return Ok(None);
            }
        } else if !st.anchored && p + 1 == st.first_seq.unwrap_or(0) {
            // The removed prefix of an unanchored chain: anchor it if it links.
            let prev: Option<String> = tx
                .query_opt(
                    "SELECT e.line FROM records r JOIN events e ON e.time = r.time AND e.event_id = r.event_id
                     WHERE r.source_id = $1 AND r.seq = $2",
                    &[&st.id, &(p + 1)],
                )
                .await?
                .map(|r| r.get(0));
            let links = prev
                .and_then(|l| parse::record(l.as_bytes()).ok())
                .is_some_and(|r| r.prev_hash == last_hash);
            if !links {
                mismatch(
                    out,
                    format!(
                        "the tombstone ends at seq {p}, but the stored seq {} does not link to it",
                        p + 1
                    ),
                );
                return Ok(None);
            }
            let mut tree = t.tree();
            for r in tx
                .query(
                    "SELECT record_hash FROM records WHERE source_id = $1 ORDER BY seq",
                    &[&st.id],
                )
                .await?
            {
                let h: Vec<u8> = r.get(0);
                tree.push(h.as_slice().try_into().expect("32-byte record hashes"));
            }
            let mut at_p = t.tree();
            std::mem::swap(&mut st.tree, &mut at_p);
            snapshot(tx, st).await?; // the frontier at P, where the stored leaves begin
            st.tree = tree;
            st.anchored = true;
            st.first_seq = Some(p + 1);
            st.mark_changed();
            snapshot(tx, st).await?;
        }
    } else {
        // Nothing stored but tombstones: the next removed range. Else removed on the tap
        // before they reached the fleet.
        if st.first_seq == Some(st.last_seq + 1) {
            st.first_seq = Some(p + 1);
        } else {
            skipped = Some((st.last_seq + 1, p, t.state.as_str()));
        }
        st.last_seq = p;
        st.last_hash = Some(last_hash.to_vec());
        if st.anchored {
            st.tree = t.tree();
            snapshot(tx, st).await?;
        }
        st.mark_changed();
    }
    tx.execute(
        "INSERT INTO tombstones (source_id, first_seq, last_seq, state, note) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
        &[&st.id, &(t.first_seq as i64), &p, &t.state.as_str(), &note],
    )
    .await?;
    Ok(skipped)
}

/// Keep the source's current tree frontier as a snapshot (checkpoints of later sizes are
/// recomputed from the nearest one below them).
async fn snapshot(tx: &Transaction<'_>, st: &SourceState) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO tree_snapshots (source_id, size, roots) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&st.id, &(st.tree.size() as i64), &roots_bytes(&st.tree)],
    )
    .await?;
    Ok(())
}

async fn known_event_ids(
    tx: &Transaction<'_>,
    ids: &[uuid::Uuid],
) -> Result<Vec<uuid::Uuid>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(tx
        .query(
            "SELECT event_id FROM records WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Write the chain state back (and a tree snapshot for anchored sources).
pub(crate) async fn save(tx: &Transaction<'_>, st: &mut SourceState) -> Result<(), Error> {
    save_all(tx, std::slice::from_mut(st)).await
}

/// Write the chain states of several sources back (those that changed), with a tree
/// snapshot for the anchored ones that stored records: two statements, sent together.
async fn save_all(tx: &Transaction<'_>, states: &mut [SourceState]) -> Result<(), Error> {
    /// The `sources` columns written, one array each.
    #[derive(Default)]
    struct Columns {
        id: Vec<i64>,
        first_seq: Vec<Option<i64>>,
        last_seq: Vec<i64>,
        last_hash: Vec<Option<Vec<u8>>>,
        tree_size: Vec<i64>,
        tree_roots: Vec<Vec<u8>>,
        anchored: Vec<bool>,
        origin: Vec<Option<String>>,
        checkpoint_size: Vec<i64>,
        gap_alerted_seq: Vec<i64>,
        silent_alerted: Vec<bool>,
        arrived: Vec<bool>,
    }
    let mut c = Columns::default();
    let mut snaps: (Vec<i64>, Vec<i64>, Vec<Vec<u8>>) = Default::default();
    for st in states.iter_mut().filter(|s| s.changed) {
        let size = st.tree.size() as i64;
        let roots = roots_bytes(&st.tree);
        let records_arrived = st.stored > 0;
        if records_arrived {
            st.silent_alerted = false; // the source is not silent (any more)
        }
        if st.anchored && size > 0 && records_arrived {
            snaps.0.push(st.id);
            snaps.1.push(size);
            snaps.2.push(roots.clone());
        }
        c.id.push(st.id);
        c.first_seq.push(st.first_seq);
        c.last_seq.push(st.last_seq);
        c.last_hash.push(st.last_hash.clone());
        c.tree_size.push(size);
        c.tree_roots.push(roots);
        c.anchored.push(st.anchored);
        c.origin.push(st.origin.clone());
        c.checkpoint_size.push(st.checkpoint_size);
        c.gap_alerted_seq.push(st.gap_alerted_seq);
        c.silent_alerted.push(st.silent_alerted);
        c.arrived.push(records_arrived);
        st.changed = false;
        st.stored = 0;
    }
    if c.id.is_empty() {
        return Ok(());
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
        &c.id,
        &c.first_seq,
        &c.last_seq,
        &c.last_hash,
        &c.tree_size,
        &c.tree_roots,
        &c.anchored,
        &c.origin,
        &c.checkpoint_size,
        &c.gap_alerted_seq,
        &c.silent_alerted,
        &c.arrived,
    ];
    let update = tx.execute(
        "UPDATE sources SET first_seq = u.first_seq, last_seq = u.last_seq, last_hash = u.last_hash,
           tree_size = u.tree_size, tree_roots = u.tree_roots, anchored = u.anchored, origin = u.origin,
           checkpoint_size = u.checkpoint_size, gap_alerted_seq = u.gap_alerted_seq,
           silent_alerted = u.silent_alerted, last_seen = now(),
           last_record_at = CASE WHEN u.arrived THEN now() ELSE sources.last_record_at END
         FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::bytea[], $5::int8[], $6::bytea[], $7::bool[],
                     $8::text[], $9::int8[], $10::int8[], $11::bool[], $12::bool[])
           AS u(id, first_seq, last_seq, last_hash, tree_size, tree_roots, anchored, origin,
                checkpoint_size, gap_alerted_seq, silent_alerted, arrived)
         WHERE sources.source_id = u.id",
        &params,
    );
    let snapshot = async {
        if snaps.0.is_empty() {
            return Ok(0);
        }
        tx.execute(
            "INSERT INTO tree_snapshots (source_id, size, roots)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::bytea[]) ON CONFLICT DO NOTHING",
            &[&snaps.0, &snaps.1, &snaps.2],
        )
        .await
    };
    futures_util::future::try_join(update, snapshot).await?;
    Ok(())
}

/// One signed checkpoint note against the source's stored chain.
#[allow(clippy::too_many_arguments)]
async fn check_checkpoint(
    tx: &Transaction<'_>,
    checks: &Checks,
    st: &mut SourceState,
    note: &str,
    payload: &[u8],
    subject: &str,
    out: &mut Outcome,
) -> Result<(), Error> {
    let (tenant, source) = (st.tenant.clone(), st.source.clone());
    let text = match mcptrail_integrity::note::open(note, &checks.verifiers) {
        Ok(t) => t,
        Err(e) => {
            out.reject(
                &tenant,
                &source,
                subject,
                payload,
                None,
                "checkpoint_signature",
                "critical",
                format!("checkpoint not signed by a trusted key: {e}"),
            );
            return Ok(());
        }
    };
    let cp = match Checkpoint::parse(text) {
        Ok(cp) => cp,
        Err(e) => {
            out.reject(
                &tenant,
                &source,
                subject,
                payload,
                None,
                "checkpoint_malformed",
                "high",
                format!("signed checkpoint does not parse: {e}"),
            );
            return Ok(());
        }
    };
    let size = cp.size as i64;
    match &st.origin {
        Some(o) if *o != cp.origin => {
            out.reject(
                &tenant,
                &source,
                subject,
                payload,
                Some(size),
                "checkpoint_origin",
                "critical",
                format!(
                    "checkpoint origin `{}` is not this source's `{o}`",
                    cp.origin
                ),
            );
            return Ok(());
        }
        Some(_) => {}
        None => {
            st.origin = Some(cp.origin.clone());
            st.changed = true;
        }
    }
    let existing = tx
        .query_opt(
            "SELECT root FROM checkpoints WHERE source_id = $1 AND size = $2",
            &[&st.id, &size],
        )
        .await?;
    if let Some(row) = existing {
        let root: Vec<u8> = row.get(0);
        if root[..] == cp.root[..] {
            out.counts.duplicates += 1;
        } else {
            out.reject(
                &tenant,
                &source,
                subject,
                payload,
                Some(size),
                "checkpoint_conflict",
                "critical",
                format!("a second signed checkpoint of size {size} with another root"),
            );
        }
        return Ok(());
    }
    if size > st.last_seq || st.first_seq.is_none() {
        let n = tx
            .execute(
                "INSERT INTO pending_checkpoints (source_id, size, root, subject, note) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                &[&st.id, &size, &cp.root.to_vec(), &subject, &note],
            )
            .await?;
        if n == 1 {
            out.counts.pending += 1;
        } else {
            out.counts.duplicates += 1;
        }
        return Ok(());
    }
    let verified = if st.anchored {
        let root = root_at(tx, st, size).await?;
        if root.is_none() {
            // Leaves of 1..=size are missing: records removed on the tap under tombstones
            // before the fleet saw them. Kept, unverifiable.
            false
        } else if root != Some(cp.root) {
            out.reject(
                &tenant,
                &source,
                subject,
                payload,
                Some(size),
                "checkpoint_mismatch",
                "critical",
                format!("signed checkpoint of size {size} does not match the stored chain (its Merkle root differs)"),
            );
            return Ok(());
        } else {
            out.counts.checkpoints += 1;
            true
        }
    } else {
        false
    };
    tx.execute(
        "INSERT INTO checkpoints (source_id, size, root, verified, note) VALUES ($1, $2, $3, $4, $5)",
        &[&st.id, &size, &cp.root.to_vec(), &verified, &note],
    )
    .await?;
    if verified && size > st.checkpoint_size {
        st.checkpoint_size = size;
        st.changed = true;
    }
    Ok(())
}

/// The Merkle root of the stored records `1..=size` of an anchored source: from the nearest
/// snapshot at or below `size` plus the leaves after it. `None` when leaves are missing.
async fn root_at(
    tx: &Transaction<'_>,
    st: &SourceState,
    size: i64,
) -> Result<Option<[u8; 32]>, Error> {
    if st.tree.size() as i64 == size {
        return Ok(Some(st.tree.root()));
    }
    let snap = tx
        .query_opt(
            "SELECT size, roots FROM tree_snapshots WHERE source_id = $1 AND size <= $2 ORDER BY size DESC LIMIT 1",
            &[&st.id, &size],
        )
        .await?;
    let mut tree = match snap {
        Some(r) => {
            let roots: Vec<u8> = r.get(1);
            match frontier_of(r.get(0), &roots) {
                Some(t) => t,
                None => return Ok(None),
            }
        }
        None => Frontier::new(),
    };
    let from = tree.size() as i64;
    let leaves = tx
        .query(
            "SELECT record_hash FROM records WHERE source_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
            &[&st.id, &from, &size],
        )
        .await?;
    for r in &leaves {
        let h: Vec<u8> = r.get(0);
        let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) else {
            return Ok(None);
        };
        tree.push(h);
    }
    Ok((tree.size() as i64 == size).then(|| tree.root()))
}
