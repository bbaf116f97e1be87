//! Reading the fleet store for investigators (`mcptrail serve` on PostgreSQL): the same
//! searches the governance server runs on one machine's SQLite index, over every source's
//! chained events. Only chained records are searchable (never `pending` or `quarantine`).
//!
//! Paging is newest first by event time. The cursor is a time in microseconds since the
//! Unix epoch: a page holds every event at or after the cursor it hands out (a page that
//! would end in the middle of a microsecond takes the rest of that microsecond too), so the
//! next page, `time < cursor`, misses nothing and repeats nothing. Every value reaches
//! PostgreSQL as a bound parameter; the SQL text is built from fixed fragments only.

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::Error;

/// A search over the fleet's events; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct FleetSearch {
    /// Session id (prefix match).
    pub session: Option<String>,
    /// Agent id (`line`'s `agent_id`).
    pub agent: Option<String>,
    /// User principal as stored (pseudonymised on the taps by default): any of these.
    pub users: Vec<String>,
    /// Tool name.
    pub tool: Option<String>,
    /// Event kind (exact, or a prefix ending in `.`/`*`).
    pub kind: Option<String>,
    /// Inclusive lower bound on `time` (RFC 3339).
    pub since: Option<String>,
    /// Exclusive upper bound on `time` (RFC 3339).
    pub until: Option<String>,
    /// A substring of the stored (redacted) event, case-insensitive.
    pub text: Option<String>,
    /// Leave out the kinds starting with this (e.g. `governance.`).
    pub exclude_kind_prefix: Option<String>,
    /// Only events before this time (µs since the epoch): the cursor of the next page.
    pub before_us: Option<i64>,
    /// At most this many events (a page may hold a few more, see the module docs).
    pub limit: i64,
}

/// One page of a fleet search.
#[derive(Debug, Clone, Default)]
pub struct FleetPage {
    /// The stored events (each its ledger line as JSON, plus `_source`: tenant/source),
    /// newest first.
    pub events: Vec<Value>,
    /// The cursor of the next page (`None`: this is the last).
    pub next_before_us: Option<i64>,
}

/// A session across the fleet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetSession {
    /// Session id.
    pub session_id: String,
    /// Where it was recorded: `tenant/source`.
    pub source: String,
    /// Time of its first stored event.
    pub first_time: String,
    /// Time of its last stored event.
    pub last_time: String,
    /// Stored events.
    pub events: i64,
    /// An agent id seen in it.
    pub agent_id: Option<String>,
    /// A user principal seen in it.
    pub user: Option<String>,
    /// `last_time` in µs: the cursor of the next page.
    pub last_us: i64,
}

/// A source's state, for the integrity view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetSource {
    /// Tenant.
    pub tenant: String,
    /// Source.
    pub source: String,
    /// First stored seq.
    pub first_seq: Option<i64>,
    /// Last chained seq.
    pub last_seq: i64,
    /// Whether the chain is anchored (from seq 1 or a verified tombstone).
    pub anchored: bool,
    /// Largest verified checkpoint.
    pub checkpoint_size: i64,
    /// Records waiting for a predecessor.
    pub pending: i64,
    /// Messages of this source in quarantine.
    pub quarantined: i64,
    /// When the last record was stored (RFC 3339).
    pub last_record_at: Option<String>,
    /// Open sessions.
    pub open_sessions: i64,
}

/// The fleet store, read side.
pub struct FleetStore {
    client: Client,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_time(s: &str, what: &str) -> Result<time::OffsetDateTime, Error> {
    mcptrail_event::parse_rfc3339(s)
        .map_err(|_| Error::Config(format!("{what} = {s:?} is not an RFC 3339 time")))
}

fn from_us(us: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn to_us(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// `LIKE` pattern text matching `s` literally.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl FleetStore {
    /// Connect to the store in `schema` (read only: nothing is created).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, Error> {
        if !schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || schema.is_empty()
        {
            return Err(Error::Config(format!(
                "schema = {schema:?}: use lower-case letters, digits and `_`"
            )));
        }
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::Config(format!(
                "postgres_url {}: {e}",
                crate::config::redact_pg(url)
            ))
        })?;
        if cfg.get_application_name().is_none() {
            cfg.application_name("mcptrail-serve");
        }
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| {
            Error::Postgres(format!(
                "cannot connect to {}: {}",
                crate::config::redact_pg(url),
                crate::pg_detail(&e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("mcptrail serve: PostgreSQL connection closed: {e}");
            }
        });
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('events') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Err(Error::Config(format!(
                "schema {schema} has no fleet store (run `mcptrail collector` against it first)"
            )));
        }
        Ok(FleetStore { client })
    }

    /// Whether the connection is gone (reconnect).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Search, newest first.
    pub async fn search(&self, s: &FleetSearch) -> Result<FleetPage, Error> {
        let mut q = Sql {
            text: String::from(
                "SELECT e.line, e.time, e.event_id, s.tenant || '/' || s.source FROM events e \
                 JOIN sources s ON s.source_id = e.source_id WHERE TRUE",
            ),
            args: Vec::new(),
        };
        if let Some(v) = &s.session {
            q.push(
                " AND e.session_id LIKE ? ESCAPE '\\'",
                Box::new(format!("{}%", like_escape(v))),
            );
        }
        if !s.users.is_empty() {
            q.push(" AND e.user_principal = ANY(?)", Box::new(s.users.clone()));
        }
        if let Some(v) = &s.agent {
            q.push(" AND e.agent_id = ?", Box::new(v.clone()));
        }
        if let Some(v) = &s.tool {
            q.push(" AND e.tool = ?", Box::new(v.clone()));
        }
        if let Some(v) = &s.since {
            q.push(" AND e.time >= ?", Box::new(parse_time(v, "since")?));
        }
        if let Some(v) = &s.until {
            q.push(" AND e.time < ?", Box::new(parse_time(v, "until")?));
        }
        match s.kind.as_deref() {
            Some(k) if k.ends_with('*') || k.ends_with('.') => q.push(
                " AND e.kind LIKE ? ESCAPE '\\'",
                Box::new(format!("{}%", like_escape(k.trim_end_matches('*')))),
            ),
            Some(k) => q.push(" AND e.kind = ?", Box::new(k.to_string())),
            None => {}
        }
        if let Some(v) = &s.exclude_kind_prefix {
            q.push(
                " AND e.kind NOT LIKE ? ESCAPE '\\'",
                Box::new(format!("{}%", like_escape(v))),
            );
        }
        if let Some(v) = &s.text {
            q.push(
                " AND e.line ILIKE ? ESCAPE '\\'",
                Box::new(format!("%{}%", like_escape(v))),
            );
        }
        let filters = q.text.clone();
        let base_args = q.args.len();
        if let Some(b) = s.before_us {
            q.push(" AND e.time < ?", Box::new(from_us(b)));
        }
        let limit = s.limit.clamp(1, 100_000);
        q.push(
            " ORDER BY e.time DESC, e.event_id DESC LIMIT ?",
            Box::new(limit + 1),
        );
        let rows = self.client.query(&q.text, &q.params()).await?;
        let more = rows.len() as i64 > limit;
        let mut page = FleetPage::default();
        let mut seen = Vec::new();
        let mut boundary = None;
        for row in rows.iter().take(limit as usize) {
            let t: time::OffsetDateTime = row.get(1);
            let id: uuid::Uuid = row.get(2);
            seen.push(id);
            page.events.push(event_json(row.get(0), row.get(3)));
            boundary = Some(t);
        }
        if let (true, Some(last)) = (more, boundary) {
            // The rest of the last microsecond, so the next page can start strictly before it.
            let floor = to_us(last);
            q.text = filters;
            q.args.truncate(base_args);
            q.push(" AND e.time >= ?", Box::new(from_us(floor)));
            q.push(" AND e.time <= ?", Box::new(last));
            q.push(
                " AND NOT e.event_id = ANY(?) ORDER BY e.time DESC, e.event_id DESC",
                Box::new(seen),
            );
            for row in self.client.query(&q.text, &q.params()).await? {
                page.events.push(event_json(row.get(0), row.get(3)));
            }
            page.next_before_us = Some(floor);
        }
        Ok(page)
    }

    /// The stored event with this id.
    pub async fn event_by_id(&self, event_id: &str) -> Result<Option<Value>, Error> {
        let Ok(id) = uuid::Uuid::parse_str(event_id) else {
            return Ok(None);
        };
        Ok(self
            .client
            .query_opt(
                "SELECT e.line, s.tenant || '/' || s.source FROM records r
                 JOIN events e ON e.time = r.time AND e.event_id = r.event_id
                 JOIN sources s ON s.source_id = r.source_id WHERE r.event_id = $1",
                &[&id],
            )
            .await?
            .map(|r| event_json(r.get(0), r.get(1))))
    }

    /// Sessions, the most recently active first (`before_us`: the cursor of the next page).
    pub async fn sessions(
        &self,
        before_us: Option<i64>,
        limit: i64,
    ) -> Result<Vec<FleetSession>, Error> {
        let before = before_us.map_or(
            time::OffsetDateTime::now_utc() + time::Duration::days(3650),
            from_us,
        );
        let rows = self
            .client
            .query(
                "SELECT x.session_id, s.tenant || '/' || s.source, x.first_time, x.last_time, x.events,
                        x.agent_id, x.user_principal
                 FROM sessions x JOIN sources s ON s.source_id = x.source_id
                 WHERE x.last_time < $1 ORDER BY x.last_time DESC LIMIT $2",
                &[&before, &limit.clamp(1, 10_000)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let last: time::OffsetDateTime = r.get(3);
                FleetSession {
                    session_id: r.get(0),
                    source: r.get(1),
                    first_time: rfc3339(r.get(2)),
                    last_time: rfc3339(last),
                    events: r.get(4),
                    agent_id: r.get(5),
                    user: r.get(6),
                    last_us: to_us(last),
                }
            })
            .collect())
    }

    /// Events at or after `start_us`, oldest first, at most `limit` (the live tail polls this
    /// with a look-back, since events of a lagging source arrive after newer ones): (time in
    /// µs, event id, the event).
    pub async fn since(
        &self,
        start_us: i64,
        exclude_kind_prefix: &str,
        limit: i64,
    ) -> Result<Vec<(i64, String, Value)>, Error> {
        let rows = self
            .client
            .query(
                "SELECT e.time, e.event_id, e.line, s.tenant || '/' || s.source FROM events e
                 JOIN sources s ON s.source_id = e.source_id
                 WHERE e.time >= $1 AND e.kind NOT LIKE $2 ESCAPE '\\'
                 ORDER BY e.time, e.event_id LIMIT $3",
                &[
                    &from_us(start_us),
                    &format!("{}%", like_escape(exclude_kind_prefix)),
                    &limit.clamp(1, 10_000),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let t: time::OffsetDateTime = r.get(0);
                let id: uuid::Uuid = r.get(1);
                (to_us(t), id.to_string(), event_json(r.get(2), r.get(3)))
            })
            .collect())
    }

    /// Activity per agent (sessions, events, first and last time), the busiest first.
    pub async fn agents(&self, limit: i64) -> Result<Vec<Value>, Error> {
        let rows = self
            .client
            .query(
                "SELECT agent_id, count(*)::int8, sum(events)::int8, min(first_time), max(last_time)
                 FROM sessions WHERE agent_id IS NOT NULL
                 GROUP BY agent_id ORDER BY sum(events) DESC, agent_id LIMIT $1",
                &[&limit.clamp(1, 10_000)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "agent_id": r.get::<_, String>(0),
                    "sessions": r.get::<_, i64>(1),
                    "events": r.get::<_, i64>(2),
                    "first_time": rfc3339(r.get(3)),
                    "last_time": rfc3339(r.get(4)),
                })
            })
            .collect())
    }

    /// One agent's activity per clock hour in `[since, until)` (RFC 3339; `since` counts
    /// from the start of its hour), summed over the sources, oldest first; shaped as the local
    /// index's `AgentHour`.
    pub async fn agent_hours(
        &self,
        agent: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<Value>, Error> {
        let since = parse_time(since, "since")?;
        let since =
            since.replace_time(time::Time::from_hms(since.hour(), 0, 0).expect("a valid hour"));
        let until = parse_time(until, "until")?;
        let rows = self
            .client
            .query(
                "SELECT hour, sum(events)::int8, sum(calls)::int8, sum(results)::int8,
                        sum(errors)::int8, sum(bytes)::int8
                 FROM agent_hours WHERE agent_id = $1 AND hour >= $2 AND hour < $3
                 GROUP BY hour ORDER BY hour",
                &[&agent, &since, &until],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "hour": rfc3339(r.get(0)),
                    "events": r.get::<_, i64>(1),
                    "calls": r.get::<_, i64>(2),
                    "results": r.get::<_, i64>(3),
                    "errors": r.get::<_, i64>(4),
                    "bytes": r.get::<_, i64>(5),
                })
            })
            .collect())
    }

    /// Stored events per kind.
    pub async fn counts_by_kind(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(self
            .client
            .query(
                "SELECT kind, sum(events)::int8 FROM kind_counts GROUP BY kind ORDER BY kind",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// Stored events, and the oldest and newest event times (µs).
    pub async fn totals(&self) -> Result<(u64, Option<i64>, Option<i64>), Error> {
        let r = self
            .client
            .query_one(
                "SELECT (SELECT coalesce(sum(events), 0)::int8 FROM kind_counts),
                        (SELECT min(time) FROM events), (SELECT max(time) FROM events)",
                &[],
            )
            .await?;
        let (n, lo, hi): (
            i64,
            Option<time::OffsetDateTime>,
            Option<time::OffsetDateTime>,
        ) = (r.get(0), r.get(1), r.get(2));
        Ok((n as u64, lo.map(to_us), hi.map(to_us)))
    }

    /// Every source's chain state, for the integrity view.
    pub async fn sources(&self) -> Result<Vec<FleetSource>, Error> {
        let rows = self
            .client
            .query(
                "SELECT s.tenant, s.source, s.first_seq, s.last_seq, s.anchored, s.checkpoint_size,
                        (SELECT count(*) FROM pending p WHERE p.source_id = s.source_id),
                        (SELECT count(*) FROM quarantine q WHERE q.tenant = s.tenant AND q.source = s.source),
                        s.last_record_at,
                        (SELECT count(*) FROM open_sessions o WHERE o.source_id = s.source_id)
                 FROM sources s ORDER BY s.tenant, s.source",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| FleetSource {
                tenant: r.get(0),
                source: r.get(1),
                first_seq: r.get(2),
                last_seq: r.get(3),
                anchored: r.get(4),
                checkpoint_size: r.get(5),
                pending: r.get(6),
                quarantined: r.get(7),
                last_record_at: r.get::<_, Option<time::OffsetDateTime>>(8).map(rfc3339),
                open_sessions: r.get(9),
            })
            .collect())
    }

    /// The collector's alerts (integrity, silence, detection), newest first.
    pub async fn alerts(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<Value>, Error> {
        let rows = self
            .client
            .query(
                "SELECT id, time, tenant, source, kind, severity, seq, message, alert_id, detail
                 FROM alerts WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before_id.unwrap_or(i64::MAX), &limit.clamp(1, 10_000)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.get::<_, i64>(0),
                    "time": rfc3339(r.get(1)),
                    "tenant": r.get::<_, Option<String>>(2),
                    "source": r.get::<_, Option<String>>(3),
                    "kind": r.get::<_, String>(4),
                    "severity": r.get::<_, String>(5),
                    "seq": r.get::<_, Option<i64>>(6),
                    "message": r.get::<_, String>(7),
                    "alert_id": r.get::<_, Option<String>>(8),
                    "detail": r.get::<_, Option<Value>>(9),
                })
            })
            .collect())
    }
}

/// SQL text with its bound values: `?` in a fragment becomes the next `$n`.
struct Sql {
    text: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    fn push(&mut self, fragment: &str, value: Box<dyn ToSql + Sync + Send>) {
        self.args.push(value);
        self.text
            .push_str(&fragment.replace('?', &format!("${}", self.args.len())));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A stored line as JSON, with `_source` (tenant/source) added.
fn event_json(line: String, source: String) -> Value {
    let mut v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
    if let Value::Object(m) = &mut v {
        m.insert("_source".into(), Value::String(source));
    }
    v
}
