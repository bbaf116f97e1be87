//! `mcptrail collector` (issue 9): the fleet's taps publish their ledger records verbatim and
//! their signed checkpoints to NATS JetStream (the NATS sink's `fleet` mode); collectors
//! consume them with one durable pull consumer (scale out: run more collectors on the same
//! consumer), check each source's hash chain and checkpoints as records arrive, and store the
//! events in PostgreSQL.
//!
//! - [`config`]: the `[collector]` table.
//! - [`schema`]: numbered migrations, applied under an advisory lock.
//! - [`parse`]: what the collector reads from a record (hash via `mcptrail_ledger::record_hash`).
//! - [`store`]: one transaction per pulled batch: chain checks, inserts, chain state, quarantine,
//!   alerts.
//! - [`sweep`]: what time decides — unanchored sources, gaps, checkpoints ahead of the chain,
//!   silent sources.
//! - [`query`]: the read side for `mcptrail serve` on the fleet store.
//! - [`detect`]: the detection engine across every source (one collector at a time).
//! - [`run`]: the consume loop (ack after commit, reconnects, the sweep, alerts on NATS).

pub mod config;
pub mod detect;
pub mod parse;
pub mod query;
pub mod run;
pub mod schema;
pub mod store;
pub mod sweep;

pub use config::CollectorConfig;
pub use run::{ensure_stream, run, RunStats};

/// What can go wrong in the collector (messages say what to fix; never a password).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// NATS or JetStream failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// PostgreSQL failed (connection, statement).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// A record reuses the event id of another stored record (the store redoes the source's
    /// transaction with an explicit check, which quarantines it).
    #[error("a record reuses a stored event id")]
    UniqueEventId,
}

impl Error {
    /// A failed insert into `records`: [`Error::UniqueEventId`] when the unique index on
    /// `event_id` refused it.
    pub(crate) fn from_insert(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(d)
                if d.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    && d.constraint() == Some("records_event_id_key") =>
            {
                Error::UniqueEventId
            }
            _ => e.into(),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Postgres(pg_detail(&e))
    }
}

/// What PostgreSQL said (the Display of a db error is terse; the source carries the server's
/// message), without a prefix.
pub(crate) fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        }
    }
}
