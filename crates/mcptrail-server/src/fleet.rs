//! `[serve.fleet]`: the governance server over the fleet's PostgreSQL store (what
//! `mcptrail collector` writes) instead of this machine's SQLite index, so investigators
//! search every tap at once. The same API, roles, meta-audit and dashboard: the searches,
//! sessions, timelines, counts, agents, alerts and the live tail read the fleet store
//! ([`mcptrail_collector::query`]); governance (requests, approvals, the meta-audit of every
//! read) stays in this server's own ledger; the integrity view adds each source's chain
//! state. Differences a user sees are in the README ("Serving the fleet").

use std::sync::Arc;

use mcptrail_collector::query::FleetStore;
use serde::{Deserialize, Serialize, Serializer};

/// `[serve.fleet]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// The collectors' PostgreSQL (`postgres://user@host:port/db`; a password in it is never
    /// shown: `/api/v1/config` and errors print the URL without it).
    #[serde(serialize_with = "redacted")]
    pub postgres_url: String,
    /// Their schema (`[collector] schema`, default `mcptrail`).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// How often the live tail looks for new events, ms (default 1000).
    #[serde(default = "default_tail_poll_ms")]
    pub tail_poll_ms: u64,
    /// How far back in event time the live tail looks again for events that arrived late
    /// (a source catching up), seconds (default 30).
    #[serde(default = "default_tail_lookback_secs")]
    pub tail_lookback_secs: u64,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field(
                "postgres_url",
                &mcptrail_collector::config::redact_pg(&self.postgres_url),
            )
            .field("schema", &self.schema)
            .finish()
    }
}

fn redacted<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mcptrail_collector::config::redact_pg(url))
}

fn default_schema() -> String {
    "mcptrail".into()
}
fn default_tail_poll_ms() -> u64 {
    1000
}
fn default_tail_lookback_secs() -> u64 {
    30
}

/// The fleet store, connected lazily and again after the connection dropped.
pub(crate) struct Fleet {
    pub(crate) settings: FleetSettings,
    store: tokio::sync::RwLock<Option<Arc<FleetStore>>>,
}

impl Fleet {
    /// Connect now (a wrong URL or schema stops `serve` with the reason).
    pub(crate) async fn connect(settings: FleetSettings) -> Result<Self, String> {
        let store = FleetStore::connect(&settings.postgres_url, &settings.schema)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Fleet {
            settings,
            store: tokio::sync::RwLock::new(Some(Arc::new(store))),
        })
    }

    /// The store, reconnecting when the connection is gone.
    pub(crate) async fn store(&self) -> Result<Arc<FleetStore>, String> {
        if let Some(s) = self.store.read().await.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let mut w = self.store.write().await;
        if let Some(s) = w.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let s = Arc::new(
            FleetStore::connect(&self.settings.postgres_url, &self.settings.schema)
                .await
                .map_err(|e| e.to_string())?,
        );
        *w = Some(s.clone());
        Ok(s)
    }
}
