//! One PostgreSQL transaction per pulled batch: check every record against its source's chain
//! state, every checkpoint against the stored chain, and store what passed, what failed
//! (quarantine) and the alerts, with the new chain state, in the same transaction. The caller
//! acknowledges the messages only after the commit.
//!
//! Per source (rows of `sources` are locked `FOR UPDATE` in (tenant, source) order, so two
//! collectors serialise per source and never deadlock), records sorted by seq:
//! - `seq ≤ last_seq`: the same record hash as stored → a redelivery, acknowledged; another
//!   hash → a modified or forged record: quarantine + alert `chain_conflict`.
//! - `seq = last_seq + 1` and `prev_hash` = the stored last hash → stored. Another
//!   `prev_hash` → quarantine + alert `chain_break`.
//! - `seq > last_seq + 1`: its predecessor has not arrived (another collector holds it, or it
//!   is still in the stream): *held* — negatively acknowledged with a delay, redelivered —
//!   and so is every later record of the source in the batch. After
//!   `hold_max_deliveries` the gap is a break: quarantine + alert `chain_gap`.
//! - A new source whose first record is seq 1 must link to the genesis hash (anchored). One
//!   whose first record is later (retention purged its first segments under a signed
//!   tombstone, or the collector joined late) is held the same way, then accepted as
//!   **unanchored**: the chain is checked from there on, but its checkpoints cover leaves the
//!   collector never saw, so they are stored as `verified = false` and an alert
//!   `unanchored_source` (severity info) says so.
//!
//! Checkpoints (after the batch's records are inserted): the note's signature must verify
//! with a trusted key (else quarantine + `checkpoint_signature`), its origin must be the one
//! the source used before (`checkpoint_origin`), and its root must equal the Merkle root of
//! the stored records `1..=size` — from the nearest `tree_snapshots` row at or below the size
//! plus the leaves after it (else `checkpoint_mismatch`). A checkpoint beyond the stored chain
//! is held like a record.

use std::collections::{BTreeMap, HashMap, HashSet};

use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::{Checkpoint, NoteVerifier};
use tokio_postgres::Client;

use crate::parse::{self, Record};
use crate::Error;

/// One pulled message.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// How many times JetStream delivered it (1 the first time).
    pub delivered: i64,
}

/// What to answer JetStream for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored, a duplicate, or quarantined: acknowledge.
    Ack,
    /// Waiting for its predecessor: negative acknowledgement with a delay.
    Hold,
}

/// Counts of one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Records stored in `events`.
    pub stored: u64,
    /// Redeliveries of stored records or checkpoints.
    pub duplicates: u64,
    /// Messages quarantined.
    pub quarantined: u64,
    /// Messages held.
    pub held: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
}

/// What the checks need.
pub struct Checks {
    /// The subject prefix.
    pub prefix: String,
    /// The PostgreSQL schema.
    pub schema: String,
    /// Trusted checkpoint keys.
    pub verifiers: Vec<NoteVerifier>,
    /// Deliveries before a gap is a break.
    pub hold_max_deliveries: i64,
}

struct Quarantined {
    tenant: Option<String>,
    source: Option<String>,
    subject: String,
    seq: Option<i64>,
    reason: String,
    payload: Vec<u8>,
}

struct Alert {
    tenant: Option<String>,
    source: Option<String>,
    kind: &'static str,
    severity: &'static str,
    seq: Option<i64>,
    message: String,
}

#[derive(Default)]
struct Group {
    records: Vec<(usize, Record)>,
    checkpoints: Vec<(usize, String)>,
}

struct SourceState {
    id: i64,
    first_seq: Option<i64>,
    last_seq: i64,
    last_hash: Option<Vec<u8>>,
    tree: Frontier,
    anchored: bool,
    origin: Option<String>,
    checkpoint_size: i64,
    changed: bool,
}

#[derive(Default)]
struct Rows {
    source_id: Vec<i64>,
    seq: Vec<i64>,
    event_id: Vec<uuid::Uuid>,
    hash: Vec<Vec<u8>>,
    time: Vec<time::OffsetDateTime>,
    kind: Vec<String>,
    session: Vec<Option<String>>,
    user: Vec<Option<String>>,
    tool: Vec<Option<String>>,
    line: Vec<String>,
}

struct Batch<'a> {
    msgs: &'a [Incoming],
    verdicts: Vec<Verdict>,
    quarantine: Vec<Quarantined>,
    alerts: Vec<Alert>,
    counts: BatchCounts,
}

impl Batch<'_> {
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        idx: usize,
        tenant: &str,
        source: &str,
        seq: Option<i64>,
        kind: &'static str,
        severity: &'static str,
        reason: String,
    ) {
        self.quarantine.push(Quarantined {
            tenant: Some(tenant.into()),
            source: Some(source.into()),
            subject: self.msgs[idx].subject.clone(),
            seq,
            reason: reason.clone(),
            payload: self.msgs[idx].payload.clone(),
        });
        self.alerts.push(Alert {
            tenant: Some(tenant.into()),
            source: Some(source.into()),
            kind,
            severity,
            seq,
            message: reason,
        });
        self.counts.quarantined += 1;
    }

    fn hold(&mut self, idx: usize) {
        self.verdicts[idx] = Verdict::Hold;
        self.counts.held += 1;
    }
}

/// The UTC days the records of `msgs` fall on (their partitions must exist before
/// [`process`]).
pub fn days(msgs: &[Incoming]) -> HashSet<time::Date> {
    msgs.iter()
        .filter_map(|m| parse::record(&m.payload).ok())
        .map(|r| r.time.to_offset(time::UtcOffset::UTC).date())
        .collect()
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

/// Check and store one batch in one transaction; the verdict of each message, in order.
pub async fn process(
    client: &mut Client,
    checks: &Checks,
    msgs: &[Incoming],
) -> Result<(Vec<Verdict>, BatchCounts), Error> {
    let mut b = Batch {
        msgs,
        verdicts: vec![Verdict::Ack; msgs.len()],
        quarantine: Vec::new(),
        alerts: Vec::new(),
        counts: BatchCounts::default(),
    };
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for (idx, m) in msgs.iter().enumerate() {
        let Some(parts) = parse::subject(&checks.prefix, &m.subject) else {
            let reason = format!(
                "subject `{}` is not {}.<tenant>.<source>.events|checkpoints",
                m.subject, checks.prefix
            );
            b.quarantine.push(Quarantined {
                tenant: None,
                source: None,
                subject: m.subject.clone(),
                seq: None,
                reason: reason.clone(),
                payload: m.payload.clone(),
            });
            b.alerts.push(Alert {
                tenant: None,
                source: None,
                kind: "bad_subject",
                severity: "medium",
                seq: None,
                message: reason,
            });
            b.counts.quarantined += 1;
            continue;
        };
        let g = groups
            .entry((parts.tenant.clone(), parts.source.clone()))
            .or_default();
        if parts.checkpoint {
            match String::from_utf8(m.payload.clone()) {
                Ok(note) => g.checkpoints.push((idx, note)),
                Err(_) => b.reject(
                    idx,
                    &parts.tenant,
                    &parts.source,
                    None,
                    "checkpoint_malformed",
                    "high",
                    "the checkpoint is not UTF-8 text".into(),
                ),
            }
        } else {
            match parse::record(&m.payload) {
                Ok(r) => g.records.push((idx, r)),
                Err(reason) => b.reject(
                    idx,
                    &parts.tenant,
                    &parts.source,
                    None,
                    "record_malformed",
                    "high",
                    reason,
                ),
            }
        }
    }

    let tx = client.transaction().await?;
    let mut states: Vec<((String, String), SourceState)> = Vec::new();
    let mut rows = Rows::default();
    let mut batch_ids: HashSet<uuid::Uuid> = HashSet::new();
    for ((tenant, source), g) in groups.iter_mut() {
        tx.execute(
            "INSERT INTO sources (tenant, source) VALUES ($1, $2) ON CONFLICT (tenant, source) DO NOTHING",
            &[tenant, source],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT source_id, first_seq, last_seq, last_hash, tree_size, tree_roots, anchored, origin, checkpoint_size
                 FROM sources WHERE tenant = $1 AND source = $2 FOR UPDATE",
                &[tenant, source],
            )
            .await?;
        let tree_size: i64 = row.get(4);
        let tree_roots: Vec<u8> = row.get(5);
        let mut st = SourceState {
            id: row.get(0),
            first_seq: row.get(1),
            last_seq: row.get(2),
            last_hash: row.get(3),
            tree: frontier_of(tree_size, &tree_roots).ok_or_else(|| {
                Error::Postgres(format!(
                    "sources row of {tenant}/{source}: tree_roots does not fit tree_size {tree_size}"
                ))
            })?,
            anchored: row.get(6),
            origin: row.get(7),
            checkpoint_size: row.get(8),
            changed: false,
        };
        g.records.sort_by_key(|(_, r)| r.seq);
        // What is already stored for the seqs this batch repeats, and whether any event id is
        // already stored elsewhere.
        let repeated: Vec<i64> = g
            .records
            .iter()
            .map(|(_, r)| r.seq as i64)
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
        let ids: Vec<uuid::Uuid> = g
            .records
            .iter()
            .filter(|(_, r)| r.seq as i64 > st.last_seq)
            .map(|(_, r)| r.event_id)
            .collect();
        let mut known_ids: HashSet<uuid::Uuid> = HashSet::new();
        if !ids.is_empty() {
            for r in tx
                .query(
                    "SELECT event_id FROM records WHERE event_id = ANY($1)",
                    &[&ids],
                )
                .await?
            {
                known_ids.insert(r.get(0));
            }
        }
        let mut blocked = false;
        let mut prev_in_batch: Option<(u64, [u8; 32])> = None;
        for (idx, rec) in &g.records {
            let (idx, seq) = (*idx, rec.seq as i64);
            // The same record twice in one batch: the second is a redelivery.
            if prev_in_batch == Some((rec.seq, rec.hash)) {
                b.counts.duplicates += 1;
                continue;
            }
            prev_in_batch = Some((rec.seq, rec.hash));
            if blocked {
                b.hold(idx);
                continue;
            }
            if seq <= st.last_seq {
                match stored.get(&seq) {
                    Some(h) if h[..] == rec.hash[..] => b.counts.duplicates += 1,
                    Some(_) => b.reject(
                        idx, tenant, source, Some(seq), "chain_conflict", "critical",
                        format!("record seq {seq} differs from the stored record of that seq (modified or forged in transit)"),
                    ),
                    None => b.reject(
                        idx, tenant, source, Some(seq), "chain_conflict", "high",
                        format!("record seq {seq} is before the first record stored for this source (seq {})", st.first_seq.unwrap_or(0)),
                    ),
                }
                continue;
            }
            if known_ids.contains(&rec.event_id) || batch_ids.contains(&rec.event_id) {
                b.reject(
                    idx,
                    tenant,
                    source,
                    Some(seq),
                    "event_id_reused",
                    "critical",
                    format!(
                        "record seq {seq} reuses event_id {} of a stored record",
                        rec.event_id
                    ),
                );
                continue;
            }
            let delivered = msgs[idx].delivered;
            if st.first_seq.is_none() {
                if seq == 1 {
                    if rec.prev_hash != [0u8; 32] {
                        b.reject(
                            idx,
                            tenant,
                            source,
                            Some(seq),
                            "chain_break",
                            "critical",
                            "record seq 1 does not link to the genesis hash".into(),
                        );
                        continue;
                    }
                    st.anchored = true;
                } else if delivered >= checks.hold_max_deliveries {
                    st.anchored = false;
                    b.alerts.push(Alert {
                        tenant: Some(tenant.clone()),
                        source: Some(source.clone()),
                        kind: "unanchored_source",
                        severity: "info",
                        seq: Some(seq),
                        message: format!("the first record of this source is seq {seq}, not 1 (earlier records purged or never shipped): its chain is checked from there, its checkpoints cannot be"),
                    });
                } else {
                    blocked = true;
                    b.hold(idx);
                    continue;
                }
                st.first_seq = Some(seq);
            } else if seq == st.last_seq + 1 {
                if st.last_hash.as_deref() != Some(&rec.prev_hash[..]) {
                    b.reject(
                        idx, tenant, source, Some(seq), "chain_break", "critical",
                        format!("record seq {seq}: prev_hash does not match the stored record seq {} (modified, forged or reordered)", st.last_seq),
                    );
                    continue;
                }
            } else if delivered >= checks.hold_max_deliveries {
                b.reject(
                    idx,
                    tenant,
                    source,
                    Some(seq),
                    "chain_gap",
                    "high",
                    format!(
                        "record seq {seq}: seqs {}..{} never arrived",
                        st.last_seq + 1,
                        seq - 1
                    ),
                );
                continue;
            } else {
                blocked = true;
                b.hold(idx);
                continue;
            }
            // Accept.
            st.last_seq = seq;
            st.last_hash = Some(rec.hash.to_vec());
            if st.anchored {
                st.tree.push(rec.hash);
            }
            st.changed = true;
            batch_ids.insert(rec.event_id);
            rows.source_id.push(st.id);
            rows.seq.push(seq);
            rows.event_id.push(rec.event_id);
            rows.hash.push(rec.hash.to_vec());
            rows.time.push(rec.time);
            rows.kind.push(rec.kind.clone());
            rows.session.push(rec.session_id.clone());
            rows.user.push(rec.user.clone());
            rows.tool.push(rec.tool.clone());
            rows.line.push(rec.line.clone());
            b.counts.stored += 1;
        }
        states.push(((tenant.clone(), source.clone()), st));
    }

    if !rows.seq.is_empty() {
        tx.execute(
            "INSERT INTO records (source_id, seq, event_id, record_hash, time)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::uuid[], $4::bytea[], $5::timestamptz[])",
            &[&rows.source_id, &rows.seq, &rows.event_id, &rows.hash, &rows.time],
        )
        .await?;
        tx.execute(
            "INSERT INTO events (time, event_id, source_id, seq, kind, session_id, user_principal, tool, line)
             SELECT * FROM UNNEST($1::timestamptz[], $2::uuid[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
            &[&rows.time, &rows.event_id, &rows.source_id, &rows.seq, &rows.kind, &rows.session, &rows.user, &rows.tool, &rows.line],
        )
        .await?;
    }

    // Checkpoints, against the chain including this batch's records.
    for ((tenant, source), st) in states.iter_mut() {
        let g = groups
            .get_mut(&(tenant.clone(), source.clone()))
            .expect("a state per group");
        let mut cps: Vec<(usize, Checkpoint, String)> = Vec::new();
        for (idx, note) in &g.checkpoints {
            let text = match mcptrail_integrity::note::open(note, &checks.verifiers) {
                Ok(t) => t,
                Err(e) => {
                    b.reject(
                        *idx,
                        tenant,
                        source,
                        None,
                        "checkpoint_signature",
                        "critical",
                        format!("checkpoint not signed by a trusted key: {e}"),
                    );
                    continue;
                }
            };
            match Checkpoint::parse(text) {
                Ok(cp) => cps.push((*idx, cp, note.clone())),
                Err(e) => b.reject(
                    *idx,
                    tenant,
                    source,
                    None,
                    "checkpoint_malformed",
                    "high",
                    format!("signed checkpoint does not parse: {e}"),
                ),
            }
        }
        cps.sort_by_key(|(_, cp, _)| cp.size);
        for (idx, cp, note) in cps {
            let size = cp.size as i64;
            match &st.origin {
                Some(o) if *o != cp.origin => {
                    b.reject(
                        idx,
                        tenant,
                        source,
                        Some(size),
                        "checkpoint_origin",
                        "critical",
                        format!(
                            "checkpoint origin `{}` is not this source's `{o}`",
                            cp.origin
                        ),
                    );
                    continue;
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
                    b.counts.duplicates += 1;
                } else {
                    b.reject(
                        idx,
                        tenant,
                        source,
                        Some(size),
                        "checkpoint_conflict",
                        "critical",
                        format!("a second signed checkpoint of size {size} with another root"),
                    );
                }
                continue;
            }
            if size > st.last_seq {
                if b.msgs[idx].delivered >= checks.hold_max_deliveries {
                    b.reject(
                        idx, tenant, source, Some(size), "checkpoint_ahead", "high",
                        format!("checkpoint of size {size}, but the chain stored for this source ends at seq {}", st.last_seq),
                    );
                } else {
                    b.hold(idx);
                }
                continue;
            }
            let verified = if st.anchored {
                let root = root_at(&tx, st, size).await?;
                if root != Some(cp.root) {
                    b.reject(
                        idx, tenant, source, Some(size), "checkpoint_mismatch", "critical",
                        format!("signed checkpoint of size {size} does not match the stored chain (its Merkle root differs)"),
                    );
                    continue;
                }
                b.counts.checkpoints += 1;
                true
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
        }
        if st.changed {
            let size = st.tree.size() as i64;
            let roots = roots_bytes(&st.tree);
            tx.execute(
                "UPDATE sources SET first_seq = $2, last_seq = $3, last_hash = $4, tree_size = $5, tree_roots = $6,
                 anchored = $7, origin = $8, checkpoint_size = $9, last_seen = now() WHERE source_id = $1",
                &[&st.id, &st.first_seq, &st.last_seq, &st.last_hash, &size, &roots, &st.anchored, &st.origin, &st.checkpoint_size],
            )
            .await?;
            if st.anchored && size > 0 {
                tx.execute(
                    "INSERT INTO tree_snapshots (source_id, size, roots) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&st.id, &size, &roots],
                )
                .await?;
            }
        }
    }

    if !b.quarantine.is_empty() {
        let q = &b.quarantine;
        let tenants: Vec<Option<String>> = q.iter().map(|x| x.tenant.clone()).collect();
        let sources: Vec<Option<String>> = q.iter().map(|x| x.source.clone()).collect();
        let subjects: Vec<String> = q.iter().map(|x| x.subject.clone()).collect();
        let seqs: Vec<Option<i64>> = q.iter().map(|x| x.seq).collect();
        let reasons: Vec<String> = q.iter().map(|x| x.reason.clone()).collect();
        let payloads: Vec<Vec<u8>> = q.iter().map(|x| x.payload.clone()).collect();
        tx.execute(
            "INSERT INTO quarantine (tenant, source, subject, seq, reason, payload)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[])",
            &[&tenants, &sources, &subjects, &seqs, &reasons, &payloads],
        )
        .await?;
    }
    if !b.alerts.is_empty() {
        let a = &b.alerts;
        let tenants: Vec<Option<String>> = a.iter().map(|x| x.tenant.clone()).collect();
        let sources: Vec<Option<String>> = a.iter().map(|x| x.source.clone()).collect();
        let kinds: Vec<&str> = a.iter().map(|x| x.kind).collect();
        let sev: Vec<&str> = a.iter().map(|x| x.severity).collect();
        let seqs: Vec<Option<i64>> = a.iter().map(|x| x.seq).collect();
        let msgs_: Vec<String> = a.iter().map(|x| x.message.clone()).collect();
        tx.execute(
            "INSERT INTO alerts (tenant, source, kind, severity, seq, message)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])",
            &[&tenants, &sources, &kinds, &sev, &seqs, &msgs_],
        )
        .await?;
    }
    tx.commit().await?;
    Ok((b.verdicts, b.counts))
}

/// The Merkle root of the stored records `1..=size` of an anchored source: from the nearest
/// snapshot at or below `size` plus the leaves after it. `None` when leaves are missing.
async fn root_at(
    tx: &tokio_postgres::Transaction<'_>,
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
