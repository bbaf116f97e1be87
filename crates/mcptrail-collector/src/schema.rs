//! The PostgreSQL schema, managed by numbered migrations.
//!
//! `schema_migrations(version, applied_at)` lists what was applied. [`migrate`] runs in one
//! transaction under `pg_advisory_xact_lock` (a key derived from the schema name), so
//! collectors starting together apply each migration once and the others wait, then see it.
//!
//! Tables (migration 1):
//! - `sources`: per tenant/source chain state — last seq, last record hash, the Merkle
//!   frontier (tree size and subtree roots), whether the chain is anchored (starts at seq 1,
//!   or mid-chain: "unanchored", see [`crate::store`]), the origin of its checkpoints.
//! - `records`: `(source_id, seq)` primary key, `event_id` unique, the record hash. Not
//!   partitioned: it is what makes inserts idempotent. A unique constraint on the partitioned
//!   `events` table must include the partition key (`time`), so it could not stop the same
//!   `event_id` stored twice under two times; this narrow table (≈ 100 B/row) can, and it is
//!   also the leaf list a checkpoint is recomputed from.
//! - `events`: the searchable copy, `PARTITION BY RANGE (time)` with one partition per UTC
//!   day (`events_pYYYYMMDD`, created on demand by [`ensure_partition`]); primary key
//!   `(time, event_id)`; indexes for the investigator queries (session, user + time,
//!   tool + time, kind + time; source + seq until migration 3 dropped it: `records` has it). `line` is the record verbatim (text: the
//!   collector does not pay for `jsonb`; cast `line::jsonb` to query other members).
//! - `tree_snapshots`: the frontier after each committed batch, so a checkpoint of any size
//!   is checked from the nearest snapshot below it plus the leaves in between.
//! - `checkpoints`: the verified (or, for unanchored sources, unverifiable) signed notes.
//! - `quarantine`: what failed a check, verbatim, with the reason.
//! - `alerts`: one row per break or silence (also published on NATS, see [`crate::run`]).
//!
//! Migration 2:
//! - `pending`: records that arrived before their predecessor (acknowledged, durable, not
//!   searchable until they chain; see [`crate::store`]).
//! - `pending_checkpoints`: signed checkpoints ahead of the stored chain.
//! - `open_sessions`: sessions of a source with a `session.start` and no `session.end` yet,
//!   so a source that goes silent while they are open is an alert ([`crate::sweep`]).
//! - `sources` gains `gap_alerted_seq`, `silent_alerted`, `last_record_at`.
//!
//! Migration 3 drops `events_source_seq` (`records` has the key). Migration 4: the fleet
//! detector's per-source cursors (`detect_cursors`), and `alerts.alert_id` (unique: the
//! detection engine's deterministic id, so an alert is stored once) and `alerts.detail`
//! (rule, evidence, group, values as JSON); see [`crate::detect`]. Migration 5: the sources'
//! retention `tombstones` (signed notes of records removed on the tap; see
//! [`crate::store`]). Migration 6: `events.agent_id`, and the summaries the governance
//! server pages through (`sessions` per source and session, `kind_counts`), kept by the
//! collector with every stored batch ([`crate::query`] reads them).

use tokio_postgres::Client;

use crate::Error;

/// The migrations, in order. Never edit one that shipped: add the next.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE sources (
    source_id bigserial PRIMARY KEY,
    tenant text NOT NULL,
    source text NOT NULL,
    first_seq bigint,
    last_seq bigint NOT NULL DEFAULT 0,
    last_hash bytea,
    tree_size bigint NOT NULL DEFAULT 0,
    tree_roots bytea NOT NULL DEFAULT ''::bytea,
    anchored boolean NOT NULL DEFAULT true,
    origin text,
    checkpoint_size bigint NOT NULL DEFAULT 0,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, source)
);
CREATE TABLE records (
    source_id bigint NOT NULL REFERENCES sources,
    seq bigint NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    record_hash bytea NOT NULL,
    time timestamptz NOT NULL,
    PRIMARY KEY (source_id, seq)
);
CREATE TABLE events (
    time timestamptz NOT NULL,
    event_id uuid NOT NULL,
    source_id bigint NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    session_id text,
    user_principal text,
    tool text,
    line text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (time, event_id)
) PARTITION BY RANGE (time);
CREATE INDEX events_session ON events (session_id, time);
CREATE INDEX events_user_time ON events (user_principal, time);
CREATE INDEX events_tool_time ON events (tool, time);
CREATE INDEX events_kind_time ON events (kind, time);
CREATE INDEX events_source_seq ON events (source_id, seq);
CREATE TABLE tree_snapshots (
    source_id bigint NOT NULL REFERENCES sources,
    size bigint NOT NULL,
    roots bytea NOT NULL,
    PRIMARY KEY (source_id, size)
);
CREATE TABLE checkpoints (
    source_id bigint NOT NULL REFERENCES sources,
    size bigint NOT NULL,
    root bytea NOT NULL,
    verified boolean NOT NULL,
    note text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, size)
);
CREATE TABLE quarantine (
    id bigserial PRIMARY KEY,
    tenant text,
    source text,
    subject text NOT NULL,
    seq bigint,
    reason text NOT NULL,
    payload bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE alerts (
    id bigserial PRIMARY KEY,
    time timestamptz NOT NULL DEFAULT now(),
    tenant text,
    source text,
    kind text NOT NULL,
    severity text NOT NULL,
    seq bigint,
    message text NOT NULL
);
CREATE INDEX alerts_source_time ON alerts (tenant, source, time);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE pending (
    source_id bigint NOT NULL REFERENCES sources,
    seq bigint NOT NULL,
    record_hash bytea NOT NULL,
    subject text NOT NULL,
    line text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, seq, record_hash)
);
CREATE INDEX pending_source_received ON pending (source_id, received_at);
CREATE TABLE pending_checkpoints (
    source_id bigint NOT NULL REFERENCES sources,
    size bigint NOT NULL,
    root bytea NOT NULL,
    subject text NOT NULL,
    note text NOT NULL,
    alerted boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, size, root)
);
CREATE TABLE open_sessions (
    source_id bigint NOT NULL REFERENCES sources,
    session_id text NOT NULL,
    started_at timestamptz NOT NULL,
    PRIMARY KEY (source_id, session_id)
);
ALTER TABLE sources
    ADD COLUMN gap_alerted_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN silent_alerted boolean NOT NULL DEFAULT false,
    ADD COLUMN last_record_at timestamptz;
"#,
    ),
    (
        3,
        // `records (source_id, seq)` (the primary key) answers "a source's records by seq",
        // and leads to `events` by its primary key (time, event_id): one index fewer to
        // maintain per stored event.
        "DROP INDEX IF EXISTS events_source_seq;",
    ),
    (
        4,
        r#"
CREATE TABLE detect_cursors (
    source_id bigint PRIMARY KEY REFERENCES sources,
    seq bigint NOT NULL
);
ALTER TABLE alerts ADD COLUMN alert_id text UNIQUE, ADD COLUMN detail jsonb;
"#,
    ),
    (
        5,
        r#"
CREATE TABLE tombstones (
    source_id bigint NOT NULL REFERENCES sources,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    state text NOT NULL,
    note text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, first_seq, state)
);
"#,
    ),
    (
        6,
        r#"
ALTER TABLE events ADD COLUMN agent_id text;
CREATE TABLE sessions (
    source_id bigint NOT NULL REFERENCES sources,
    session_id text NOT NULL,
    first_time timestamptz NOT NULL,
    last_time timestamptz NOT NULL,
    events bigint NOT NULL,
    agent_id text,
    user_principal text,
    PRIMARY KEY (source_id, session_id)
);
CREATE INDEX sessions_last_time ON sessions (last_time);
INSERT INTO sessions
    SELECT source_id, session_id, min(time), max(time), count(*), NULL, max(user_principal)
    FROM events WHERE session_id IS NOT NULL GROUP BY source_id, session_id;
CREATE TABLE kind_counts (
    source_id bigint NOT NULL REFERENCES sources,
    kind text NOT NULL,
    events bigint NOT NULL,
    PRIMARY KEY (source_id, kind)
);
INSERT INTO kind_counts SELECT source_id, kind, count(*) FROM events GROUP BY source_id, kind;
"#,
    ),
    (
        7,
        r#"
CREATE TABLE agent_hours (
    agent_id text NOT NULL,
    hour timestamptz NOT NULL,
    source_id bigint NOT NULL REFERENCES sources,
    events bigint NOT NULL,
    calls bigint NOT NULL,
    results bigint NOT NULL,
    errors bigint NOT NULL,
    bytes bigint NOT NULL,
    PRIMARY KEY (agent_id, hour, source_id)
);
"#,
    ),
];

/// The advisory lock key of a schema (stable across processes).
pub fn lock_key(schema: &str) -> i64 {
    // FNV-1a: a stable hash (std's is randomised per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("mcptrail-collector/{schema}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Create the schema if needed, point `search_path` at it, and apply every migration not yet
/// applied. Returns how many were applied now.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<usize, Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            Error::Postgres(format!("migration {version}: {}", crate::pg_detail(&e)))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        applied += 1;
    }
    tx.commit().await?;
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await?;
    Ok(applied)
}

/// The partition of `events` for the UTC day of `day` (`events_pYYYYMMDD`), created if
/// missing, in its own transaction under the schema's advisory lock (two collectors creating
/// the same partition would otherwise race).
pub async fn ensure_partition(
    client: &mut Client,
    schema: &str,
    day: time::Date,
) -> Result<String, Error> {
    let name = format!(
        "events_p{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    );
    let next = day
        .next_day()
        .ok_or_else(|| Error::Config(format!("no day after {day}")))?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{name} PARTITION OF {schema}.events FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')"
    ))
    .await?;
    tx.commit().await?;
    Ok(name)
}
