//! Detection across the whole fleet: the detection engine ([`mcptrail_detect`], the rules of
//! `[detect]` — built-in pack, rule files, inline rules) over the events every source stored,
//! so a threshold or a sequence can span agents, users and machines that no single tap sees.
//!
//! - **One detector at a time.** Every collector runs this task, but only the one holding the
//!   PostgreSQL advisory lock `detect/<schema>` (session level, on a connection of its own)
//!   detects; the others retry every few seconds and take over when that connection dies.
//! - **What it reads.** Chained records only (never `pending` or `quarantine`), per source in
//!   seq order after its cursor (`detect_cursors`), through the `records` primary key. Records
//!   of a source commit in chain order, so a cursor never skips one. Each poll's records are
//!   fed in event-time order across sources (a source that lags is fed late: windows are in
//!   event time, so its events still count where they belong while the group's state lasts).
//! - **Exactly once.** Alert ids are deterministic (rule, evidence, event time); alerts and
//!   the moved cursors are written in one transaction, `alerts.alert_id` is unique, and an
//!   alert already there is not raised again. On start the detector replays the events of
//!   the engine's lookback (its longest window) before the cursors, so windows and sequences
//!   that span a restart or a takeover are whole again; what they raise again is dropped.
//! - New alerts are published on `<prefix>.<tenant>.alerts` like the collector's own.
//!
//! Not here: baseline (anomaly) rules need baselines learnt from a ledger
//! (`mcptrail baseline learn` on a tap); the engine's heartbeat monitors are left to the
//! collector's own silence sweep ([`crate::sweep`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mcptrail_detect::{Detector, Engine, RuleSet};

use crate::config::CollectorConfig;
use crate::store::Alert;
use crate::Error;

/// Records read per source per poll, at most.
const PER_SOURCE: i64 = 2000;
/// Records read per poll in all, about (with many sources, fewer per source).
const PER_POLL: i64 = 50_000;

/// What one detection pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct DetectStats {
    /// Events fed to the engine (replayed ones included).
    pub events: u64,
    /// Alerts stored (new).
    pub alerts: u64,
    /// Alerts raised again and already stored.
    pub duplicates: u64,
}

fn lock_key(schema: &str) -> i64 {
    crate::schema::lock_key(&format!("detect/{schema}"))
}

/// Run detection until `stop` (taking the lead when free). `publish` gets the new alerts.
pub async fn run<F, Fut>(
    cfg: &CollectorConfig,
    rules: RuleSet,
    stop: &AtomicBool,
    mut publish: F,
) -> DetectStats
where
    F: FnMut(Vec<Alert>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut stats = DetectStats::default();
    let poll = Duration::from_millis(cfg.sweep_interval_ms.clamp(100, 5000));
    while !stop.load(Ordering::Relaxed) {
        match lead(cfg, &rules, stop, poll, &mut publish, &mut stats).await {
            Ok(()) => {}
            Err(e) => eprintln!("mcptrail collector: detection: {e}; retrying"),
        }
        for _ in 0..30 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stats
}

/// Take the lock if free and detect until stopped or an error.
async fn lead<F, Fut>(
    cfg: &CollectorConfig,
    rules: &RuleSet,
    stop: &AtomicBool,
    poll: Duration,
    publish: &mut F,
    stats: &mut DetectStats,
) -> Result<(), Error>
where
    F: FnMut(Vec<Alert>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut client = crate::run::connect_pg(cfg).await?;
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_key(&cfg.schema)])
        .await?
        .get(0);
    if !got {
        return Ok(()); // another collector detects
    }
    eprintln!("mcptrail collector: detection across sources runs here");
    let mut det = Detector::new(Engine::new(rules.clone()));
    let mut tenants: HashMap<i64, (String, String)> = HashMap::new();
    let cursors = load_cursors(&client).await?;
    // Replay the lookback before the cursors (state only; alerts already stored drop), at
    // most `detect_replay_secs` of it.
    let lookback_ms = det
        .engine()
        .lookback_ms()
        .clamp(0, cfg.detect_replay_secs.saturating_mul(1000) as i64);
    if lookback_ms > 0 && !cursors.is_empty() {
        let newest: Option<time::OffsetDateTime> = client
            .query_one(
                "SELECT max(r.time) FROM detect_cursors c JOIN records r ON r.source_id = c.source_id AND r.seq = c.seq",
                &[],
            )
            .await?
            .get(0);
        if let Some(newest) = newest {
            let since = newest - time::Duration::milliseconds(lookback_ms);
            let rows = client
                .query(
                    "SELECT e.source_id, e.seq, e.line FROM events e
                     JOIN detect_cursors c ON c.source_id = e.source_id AND e.seq <= c.seq
                     WHERE e.time >= $1 ORDER BY e.time, e.source_id, e.seq",
                    &[&since],
                )
                .await?;
            let batch: Vec<(i64, i64, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let raised = feed(&mut det, &batch, stats);
            store(&mut client, &mut tenants, raised, &[], stats, publish).await?;
        }
    }
    while !stop.load(Ordering::Relaxed) {
        client
            .execute(
                "INSERT INTO detect_cursors (source_id, seq) SELECT source_id, 0 FROM sources
                 ON CONFLICT DO NOTHING",
                &[],
            )
            .await?;
        let sources: i64 = client
            .query_one("SELECT count(*) FROM detect_cursors", &[])
            .await?
            .get(0);
        let per_source = (PER_POLL / sources.max(1)).clamp(50, PER_SOURCE);
        let rows = client
            .query(
                "SELECT r.source_id, r.seq, e.line, e.time FROM detect_cursors c
                 CROSS JOIN LATERAL (SELECT * FROM records r WHERE r.source_id = c.source_id AND r.seq > c.seq
                                     ORDER BY r.seq LIMIT $1) r
                 JOIN events e ON e.time = r.time AND e.event_id = r.event_id",
                &[&per_source],
            )
            .await?;
        if rows.is_empty() {
            tokio::time::sleep(poll).await;
            continue;
        }
        let mut batch: Vec<(time::OffsetDateTime, i64, i64, String)> = rows
            .iter()
            .map(|r| (r.get(3), r.get(0), r.get(1), r.get(2)))
            .collect();
        batch.sort_by_key(|a| (a.0, a.1, a.2));
        let batch: Vec<(i64, i64, String)> =
            batch.into_iter().map(|(_, s, q, l)| (s, q, l)).collect();
        let mut moved: HashMap<i64, i64> = HashMap::new();
        for (source, seq, _) in &batch {
            let c = moved.entry(*source).or_insert(0);
            *c = (*c).max(*seq);
        }
        let moved: Vec<(i64, i64)> = moved.into_iter().collect();
        let raised = feed(&mut det, &batch, stats);
        store(&mut client, &mut tenants, raised, &moved, stats, publish).await?;
    }
    Ok(())
}

async fn load_cursors(client: &tokio_postgres::Client) -> Result<HashMap<i64, i64>, Error> {
    Ok(client
        .query("SELECT source_id, seq FROM detect_cursors", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Feed `(source_id, seq, line)` in order; the alerts raised, each with the source and seq of
/// the event that raised it.
fn feed(
    det: &mut Detector,
    batch: &[(i64, i64, String)],
    stats: &mut DetectStats,
) -> Vec<(mcptrail_detect::Alert, i64, i64)> {
    let mut raised = Vec::new();
    for (source, seq, line) in batch {
        let Ok(e) = det.parse_line(line.as_bytes()) else {
            continue; // checked when stored; a line the engine cannot read is skipped
        };
        det.observe_line(&e, line.as_bytes());
        stats.events += 1;
        for (a, _) in det.take_all() {
            raised.push((a, *source, *seq));
        }
    }
    raised
}

/// Store the alerts (new ids only) and the cursors in one transaction, then publish.
#[allow(clippy::too_many_arguments)]
async fn store<F, Fut>(
    client: &mut tokio_postgres::Client,
    tenants: &mut HashMap<i64, (String, String)>,
    raised: Vec<(mcptrail_detect::Alert, i64, i64)>,
    moved: &[(i64, i64)],
    stats: &mut DetectStats,
    publish: &mut F,
) -> Result<(), Error>
where
    F: FnMut(Vec<Alert>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for (_, source, _) in &raised {
        if !tenants.contains_key(source) {
            let row = client
                .query_one(
                    "SELECT tenant, source FROM sources WHERE source_id = $1",
                    &[source],
                )
                .await?;
            tenants.insert(*source, (row.get(0), row.get(1)));
        }
    }
    let tx = client.transaction().await?;
    let mut new = Vec::new();
    for (a, source, seq) in raised {
        let (tenant, src) = tenants.get(&source).cloned().unwrap_or_default();
        let detail = a.detail();
        let n = tx
            .execute(
                "INSERT INTO alerts (tenant, source, kind, severity, seq, message, alert_id, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb) ON CONFLICT (alert_id) DO NOTHING",
                &[&tenant, &src, &a.rule, &a.severity.as_str(), &seq, &a.summary, &a.id, &detail.to_string()],
            )
            .await?;
        if n == 1 {
            stats.alerts += 1;
            let mut alert = Alert::new(
                Some(tenant),
                Some(src),
                "detection",
                a.severity.as_str(),
                Some(seq),
                a.summary.clone(),
            );
            alert.rule = Some(a.rule.clone());
            alert.alert_id = Some(a.id.clone());
            alert.evidence = a.evidence.clone();
            new.push(alert);
        } else {
            stats.duplicates += 1;
        }
    }
    if !moved.is_empty() {
        let ids: Vec<i64> = moved.iter().map(|m| m.0).collect();
        let seqs: Vec<i64> = moved.iter().map(|m| m.1).collect();
        tx.execute(
            "UPDATE detect_cursors c SET seq = m.seq FROM UNNEST($1::int8[], $2::int8[]) AS m(source_id, seq)
             WHERE c.source_id = m.source_id AND m.seq > c.seq",
            &[&ids, &seqs],
        )
        .await?;
    }
    tx.commit().await?;
    if !new.is_empty() {
        publish(new).await;
    }
    Ok(())
}
