//! The consume loop: one durable pull consumer (explicit acks) shared by every collector,
//! batches of `batch_size` messages, one PostgreSQL transaction per batch, every message
//! acknowledged after the commit (stored, duplicate, pending or quarantined: all durable in
//! PostgreSQL). A lost PostgreSQL or NATS connection is re-established with backoff; the batch
//! in flight is negatively acknowledged (or, if the process dies, redelivered after
//! [`ACK_WAIT`]), and the stored chain state makes the redelivery harmless. Between batches,
//! every `sweep_interval_ms`, the [`crate::sweep`] runs. Alerts are published after their
//! commit on `<prefix>.<tenant>.alerts` (core NATS, JSON; at most once — the `alerts` table
//! is the record).
//!
//! The collector creates the stream when it is missing (subjects `<prefix>.*.*.events` and
//! `<prefix>.*.*.checkpoints`, file storage, 2-minute duplicate window) and the consumer; the
//! taps' sinks never create streams.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::StreamExt;

use crate::config::{redact_pg, CollectorConfig};
use crate::store::{self, Alert, Checks, Incoming};
use crate::Error;

/// How long JetStream waits for an ack before redelivering (a collector killed mid-batch).
pub const ACK_WAIT: Duration = Duration::from_secs(10);

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Batches committed.
    pub batches: u64,
    /// Counts summed over the batches.
    pub counts: store::BatchCounts,
    /// PostgreSQL reconnections.
    pub pg_reconnects: u64,
    /// Sweeps run.
    pub sweeps: u64,
    /// Alerts raised by detection across sources (by this collector).
    pub detected: u64,
}

/// Create the fleet stream if missing, or check that the existing one captures the subjects.
pub async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &CollectorConfig,
) -> Result<stream::Stream, Error> {
    let subjects = cfg.subjects();
    let mut s = js
        .get_or_create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: subjects.clone(),
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Nats(format!("stream `{}`: {e}", cfg.stream)))?;
    let info = s
        .info()
        .await
        .map_err(|e| Error::Nats(format!("stream `{}`: {e}", cfg.stream)))?;
    for want in &subjects {
        if !info.config.subjects.contains(want) {
            return Err(Error::Config(format!(
                "stream `{}` exists but does not capture `{want}` (it captures {:?}): add the subject or name another stream",
                cfg.stream, info.config.subjects
            )));
        }
    }
    Ok(s)
}

pub(crate) async fn connect_pg(cfg: &CollectorConfig) -> Result<tokio_postgres::Client, Error> {
    let mut pg_cfg: tokio_postgres::Config = cfg.postgres_url.parse().map_err(|e| {
        Error::Config(format!(
            "[collector] postgres_url {}: {e}",
            redact_pg(&cfg.postgres_url)
        ))
    })?;
    if pg_cfg.get_application_name().is_none() {
        pg_cfg.application_name("mcptrail-collector");
    }
    let (mut client, conn) = pg_cfg.connect(tokio_postgres::NoTls).await.map_err(|e| {
        Error::Postgres(format!(
            "cannot connect to {}: {}",
            redact_pg(&cfg.postgres_url),
            crate::pg_detail(&e)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("mcptrail collector: PostgreSQL connection closed: {e}");
        }
    });
    crate::schema::migrate(&mut client, &cfg.schema).await?;
    Ok(client)
}

struct Nats {
    client: async_nats::Client,
    consumer: consumer::Consumer<consumer::pull::Config>,
}

impl Nats {
    /// Up to `max` messages: what the stream holds for this consumer now, taken with one
    /// no-wait pull request. So a backlog is dealt out in contiguous runs: collectors that
    /// each kept a pull request standing would be handed alternate messages, and half the
    /// records would wait in `pending` for a neighbour held by the other collector.
    async fn fetch_now(&self, max: usize) -> Vec<jetstream::Message> {
        let mut out = Vec::new();
        // No reply within this (NATS down, a reconnect): give back what came.
        let limit = tokio::time::Instant::now() + Duration::from_secs(5);
        match tokio::time::timeout_at(limit, self.consumer.fetch().max_messages(max).messages())
            .await
        {
            Ok(Ok(mut batch)) => loop {
                match tokio::time::timeout_at(limit, batch.next()).await {
                    Ok(Some(Ok(m))) => out.push(m),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        eprintln!("mcptrail collector: pull: {e}");
                        break;
                    }
                    Err(_) => {
                        eprintln!("mcptrail collector: pull: no reply from NATS in 5 s");
                        break;
                    }
                }
            },
            Ok(Err(e)) => {
                eprintln!("mcptrail collector: pull: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => eprintln!("mcptrail collector: pull: no reply from NATS in 5 s; retrying"),
        }
        out
    }

    /// [`Nats::fetch_now`]; when nothing is there, again every `poll` until `wait` is over
    /// (what arrives in between makes the batch: the poll is also the linger).
    async fn next_batch(
        &self,
        max: usize,
        wait: Duration,
        poll: Duration,
    ) -> Vec<jetstream::Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let out = self.fetch_now(max).await;
            if !out.is_empty() || tokio::time::Instant::now() + poll > deadline {
                return out;
            }
            tokio::time::sleep(poll).await;
        }
    }
}

async fn connect_nats(cfg: &CollectorConfig) -> Result<Nats, Error> {
    let client = async_nats::ConnectOptions::new()
        .name("mcptrail-collector")
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(cfg.nats_url.as_str())
        .await
        .map_err(|e| Error::Nats(format!("{}: {e}", cfg.nats_url)))?;
    let js = jetstream::new(client.clone());
    let stream = ensure_stream(&js, cfg).await?;
    let consumer = stream
        .get_or_create_consumer(
            &cfg.consumer,
            consumer::pull::Config {
                durable_name: Some(cfg.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::Nats(format!("consumer `{}`: {e}", cfg.consumer)))?;
    Ok(Nats { client, consumer })
}

/// Run until `stop` is set. Errors only for what retrying cannot fix (configuration).
/// `rules`: the detection rules to run across every source (with `[collector] detect`), or
/// `None` for no detection.
pub fn run(
    cfg: &CollectorConfig,
    rules: Option<mcptrail_detect::RuleSet>,
    stop: Arc<AtomicBool>,
) -> Result<RunStats, Error> {
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mcptrail-collector")
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the runtime: {e}")))?;
    let detection = match rules.filter(|_| cfg.detect) {
        Some(rules) => {
            let (cfg, stop) = (cfg.clone(), stop.clone());
            Some(rt.spawn(async move {
                let client = match async_nats::ConnectOptions::new()
                    .name("mcptrail-collector-detect")
                    .retry_on_initial_connect()
                    .max_reconnects(None)
                    .connect(cfg.nats_url.as_str())
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("mcptrail collector: detection: {e}");
                        return crate::detect::DetectStats::default();
                    }
                };
                let cfg2 = cfg.clone();
                crate::detect::run(&cfg, rules, &stop, move |alerts| {
                    let (client, cfg) = (client.clone(), cfg2.clone());
                    async move { publish(&client, &cfg, &alerts).await }
                })
                .await
            }))
        }
        None => None,
    };
    let mut stats = rt.block_on(run_async(cfg, stop))?;
    if let Some(d) = detection {
        if let Ok(d) = rt.block_on(d) {
            stats.detected = d.alerts;
        }
    }
    Ok(stats)
}

async fn backoff(stop: &AtomicBool, attempt: &mut u32) {
    let ms = (100u64 << (*attempt).min(5)).min(3000);
    *attempt += 1;
    let mut waited = 0;
    while waited < ms && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 50;
    }
}

/// Publish alerts on `<prefix>.<tenant>.alerts` (best effort: they are stored already).
async fn publish(client: &async_nats::Client, cfg: &CollectorConfig, alerts: &[Alert]) {
    if !cfg.publish_alerts || alerts.is_empty() {
        return;
    }
    for a in alerts {
        let tenant = a.tenant.as_deref().unwrap_or("_");
        let subject = format!("{}.{tenant}.alerts", cfg.prefix);
        let body = serde_json::to_vec(a).expect("an alert serialises");
        if let Err(e) = client.publish(subject, body.into()).await {
            eprintln!("mcptrail collector: publish alert: {e} (it is in the alerts table)");
        }
    }
}

async fn run_async(cfg: &CollectorConfig, stop: Arc<AtomicBool>) -> Result<RunStats, Error> {
    let checks = Checks {
        prefix: cfg.prefix.clone(),
        schema: cfg.schema.clone(),
        verifiers: cfg.verifiers()?,
    };
    let sweep_every = Duration::from_millis(cfg.sweep_interval_ms);
    let mut stats = RunStats::default();
    let mut attempt = 0;
    let mut nats = loop {
        match connect_nats(cfg).await {
            Ok(n) => break n,
            Err(e @ Error::Config(_)) => return Err(e),
            Err(e) => {
                eprintln!("mcptrail collector: {e}; retrying");
                if stop.load(Ordering::Relaxed) {
                    return Ok(stats);
                }
                backoff(&stop, &mut attempt).await;
            }
        }
    };
    let mut pg: Option<tokio_postgres::Client> = None;
    let mut partitions: HashSet<time::Date> = HashSet::new();
    let mut attempt = 0;
    let mut last_sweep = tokio::time::Instant::now();
    // A batch fetched ahead, while the previous one was being stored.
    let mut ahead: Vec<jetstream::Message> = Vec::new();
    eprintln!(
        "mcptrail collector: consuming `{}` with `{}` into PostgreSQL {} schema {}",
        cfg.stream,
        cfg.consumer,
        redact_pg(&cfg.postgres_url),
        cfg.schema
    );
    while !stop.load(Ordering::Relaxed) {
        let client = match &mut pg {
            Some(c) if !c.is_closed() => c,
            _ => match connect_pg(cfg).await {
                Ok(c) => {
                    if stats.batches > 0 || attempt > 0 {
                        stats.pg_reconnects += 1;
                    }
                    attempt = 0;
                    partitions.clear();
                    pg.insert(c)
                }
                Err(e) => {
                    eprintln!("mcptrail collector: {e}; retrying");
                    pg = None;
                    backoff(&stop, &mut attempt).await;
                    continue;
                }
            },
        };
        let msgs = if ahead.is_empty() {
            nats.next_batch(
                cfg.batch_size,
                Duration::from_millis(500),
                Duration::from_millis(20),
            )
            .await
        } else {
            std::mem::take(&mut ahead)
        };
        if !msgs.is_empty() {
            let incoming: Vec<Incoming> = msgs
                .iter()
                .map(|m| Incoming {
                    subject: m.subject.to_string(),
                    payload: m.payload.to_vec(),
                })
                .collect();
            // The next batch is fetched while this one is in PostgreSQL (a no-wait request:
            // it takes what is there now, and leaves the rest to the other collectors).
            let (done, next) = tokio::join!(
                store::process(client, &checks, &incoming, &mut partitions),
                nats.fetch_now(cfg.batch_size)
            );
            ahead = next;
            stats.batches += 1;
            stats.counts += done.counts;
            let mut acked = vec![false; msgs.len()];
            for &i in &done.committed {
                acked[i] = true;
                if let Err(e) = msgs[i].ack().await {
                    eprintln!("mcptrail collector: ack: {e} (the message is redelivered; it is stored once)");
                }
            }
            publish(&nats.client, cfg, &done.alerts).await;
            if let Some(e) = done.error {
                let left = acked.iter().filter(|a| !**a).count();
                eprintln!(
                    "mcptrail collector: {left} of a batch of {} not stored: {e}; redelivering",
                    msgs.len()
                );
                for (m, _) in msgs.iter().zip(&acked).filter(|(_, a)| !**a) {
                    let _ = m
                        .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                        .await;
                }
                if client.is_closed() {
                    pg = None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = tokio::time::Instant::now();
            // Caught up: what the stream still holds for this consumer fits in one batch.
            let caught_up = match nats.consumer.info().await {
                Ok(i) => i.num_pending < cfg.batch_size as u64,
                Err(_) => false,
            };
            match crate::sweep::sweep(client, &checks, cfg.limits(), caught_up).await {
                Ok((counts, alerts)) => {
                    stats.sweeps += 1;
                    stats.counts += counts;
                    publish(&nats.client, cfg, &alerts).await;
                }
                Err(e) => {
                    eprintln!("mcptrail collector: sweep: {e}");
                    if client.is_closed() {
                        pg = None;
                    }
                }
            }
        }
    }
    // Stopping: a batch fetched ahead goes back to the stream at once (not after the ack wait).
    for m in ahead {
        let _ = m.ack_with(AckKind::Nak(None)).await;
    }
    Ok(stats)
}
