//! OpenTelemetry export (`type = "otlp"`): each batch of ledger records becomes up to three
//! OTLP export requests — traces, metrics, logs — over OTLP/gRPC or OTLP/HTTP (protobuf).
//!
//! ```text
//! batch ─► parse (EventView, once) ─► traces.rs  ─► ExportTraceServiceRequest   ─┐
//!          resources, ids            metrics.rs ─► ExportMetricsServiceRequest ─┼─► transport.rs
//!          (encode.rs)               logs.rs    ─► ExportLogsServiceRequest    ─┘   (h2 | ureq)
//! ```
//!
//! # At-least-once, and why no span waits across batches
//!
//! A span needs its request and its response. The tap already pairs them: the `mcp.response`
//! event carries the request's method, tool, JSON-RPC id, `request_event_id`, trace context
//! and `duration_ms`, and every request gets a response event eventually (a real one, or a
//! synthetic `timeout`/`cancelled`/`no_response` one the tap writes at session end). So each
//! span is built from its response event alone, at the moment that event is shipped; nothing
//! is held open across batches, and the shipper's rule — move the cursor only after every
//! signal of the batch was acknowledged — is all the guarantee needs. A request whose
//! response lies in a later batch simply gets its span with that batch. (A tap killed with
//! -9 writes no synthetic response: its open requests have log records but no span.)
//!
//! Ids are deterministic: recorded trace context is used as recorded, and what is missing is
//! derived from the request's event id, so a batch sent again yields the same trace, span
//! and parent ids, and every span and log record carries `mcptrail.event_id`: receivers can
//! drop the duplicates. When one signal of a batch was accepted and a later one failed, the
//! retry of that same batch skips the accepted signals.
//!
//! The only cross-batch memory is an optimisation: with `include_payloads`, the (redacted)
//! tool arguments of a request, which only the request event holds, wait in bounded memory
//! for the response's span; after a restart an answered request's span lacks them.
//!
//! # Failure handling
//!
//! Transport errors map onto the framework's kinds ([`transport`] has the table); a partial
//! success that rejected items is `Rejected`, so the whole batch is retried with backoff and
//! the sink raises its failing alert if the receiver keeps refusing. `probe` sends an empty
//! export request per configured signal, which a collector accepts without storing anything.

mod config;
mod encode;
mod logs;
mod metrics;
mod proto;
mod traces;
mod transport;
mod view;

pub(crate) use config::OtlpSinkToml;
pub use config::{Compression, HeaderValue, OtlpProtocol, OtlpSinkConfig, Signal, OTEL_ENV_VARS};

use crate::error::{SendError, SendErrorKind};
use crate::sink::Sink;
use crate::tail::ShipRecord;
use encode::{CrossBatch, EncodeSettings};
use transport::Transport;

/// Identifies a batch across retries: first and last `seq`, and its length.
type BatchId = (u64, u64, usize);

/// The OTLP sink.
pub struct OtlpSink {
    cfg: OtlpSinkConfig,
    settings: EncodeSettings,
    signals: Vec<Signal>,
    transport: Transport,
    memory: CrossBatch,
    /// Signals of a batch the receiver already accepted, while that batch is being retried.
    accepted: Option<(BatchId, Vec<Signal>)>,
    /// The sink's name, for its own gauges.
    name: String,
    /// The ledger being shipped (for the lag gauge), once attached.
    ledger: Option<std::path::PathBuf>,
}

impl OtlpSink {
    /// A sink for `cfg`: loads header secrets, certificates and keys now; connects at the
    /// first export.
    pub fn new(cfg: OtlpSinkConfig) -> Result<Self, String> {
        cfg.check()?;
        let headers = transport::load_headers(&cfg)?;
        let transport = Transport::new(&cfg, headers)?;
        Ok(OtlpSink {
            settings: EncodeSettings {
                service_name: cfg.service_name.clone(),
                include_payloads: cfg.include_payloads,
            },
            signals: encode::ordered(&cfg.signals),
            cfg,
            transport,
            memory: CrossBatch::default(),
            accepted: None,
            name: String::new(),
            ledger: None,
        })
    }

    /// Name the sink (`mcptrail.sink.name` on its gauges).
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The gauges of `batch` now: records after it in the ledger, if the ledger is known.
    fn gauges(&self, batch: &[ShipRecord]) -> metrics::SinkGauges {
        let last = batch.last().map_or(0, |r| r.seq);
        let records_behind = self
            .ledger
            .as_deref()
            .and_then(|d| crate::tail::ledger_head(d).ok().flatten())
            .map(|(head, _)| head.saturating_sub(last));
        metrics::SinkGauges {
            sink: self.name.clone(),
            records_behind,
            now_ns: encode::unix_nanos_now(),
        }
    }

    /// The export requests `batch` becomes — one per configured signal that has anything to
    /// send, in sending order — without sending them: what [`Sink::send`] hands to the
    /// transport (for benchmarks and tests; the cross-batch memory is updated as by `send`).
    pub fn encode(&mut self, batch: &[ShipRecord]) -> Vec<(Signal, Vec<u8>)> {
        let gauges = self.gauges(batch);
        let parsed = encode::parse_batch(batch, &self.settings, &mut self.memory);
        let out = self
            .signals
            .iter()
            .filter_map(|&signal| {
                let body = match signal {
                    Signal::Traces => traces::encode(&parsed, &self.settings, &self.memory),
                    Signal::Metrics => metrics::encode(&parsed, &self.settings, Some(&gauges)),
                    Signal::Logs => logs::encode(&parsed, &self.settings),
                };
                body.map(|b| (signal, b))
            })
            .collect();
        encode::forget_answered(&parsed, &mut self.memory);
        out
    }

    fn protocol_name(&self) -> &'static str {
        match self.cfg.protocol {
            OtlpProtocol::Grpc => "OTLP/gRPC",
            OtlpProtocol::HttpProtobuf => "OTLP/HTTP",
        }
    }
}

impl Sink for OtlpSink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        let id: BatchId = (
            batch.first().map_or(0, |r| r.seq),
            batch.last().map_or(0, |r| r.seq),
            batch.len(),
        );
        let mut accepted = match self.accepted.take() {
            Some((prev, signals)) if prev == id => signals,
            _ => Vec::new(),
        };
        let gauges = self.gauges(batch);
        let parsed = encode::parse_batch(batch, &self.settings, &mut self.memory);
        // Encode every signal the receiver has not taken yet, then send them together (see
        // `Transport::export_all`): the receiver works on all three at once.
        let mut requests = Vec::new();
        for &signal in &self.signals {
            if accepted.contains(&signal) {
                continue;
            }
            let body = match signal {
                Signal::Traces => traces::encode(&parsed, &self.settings, &self.memory),
                Signal::Metrics => metrics::encode(&parsed, &self.settings, Some(&gauges)),
                Signal::Logs => logs::encode(&parsed, &self.settings),
            };
            match body {
                Some(body) => requests.push((signal, body)),
                None => accepted.push(signal),
            }
        }
        let sent: Vec<Signal> = requests.iter().map(|r| r.0).collect();
        let answers = self.transport.export_all(requests);
        let mut first_error = None;
        for (signal, answer) in sent.into_iter().zip(answers) {
            let failed = match answer {
                Ok(ps) if ps.rejected > 0 => Some(SendError::new(
                    SendErrorKind::Rejected,
                    format!(
                        "the receiver refused {} of the {} it was sent (partial success): {}",
                        ps.rejected,
                        signal.as_str(),
                        ps.message.chars().take(200).collect::<String>()
                    ),
                )),
                Ok(_) => None,
                Err(e) => Some(e),
            };
            match failed {
                // Accepted signals are not sent again with the retry of this batch.
                None => accepted.push(signal),
                Some(mut e) => {
                    if first_error.is_none() {
                        e.message = format!(
                            "{} {}: {}",
                            self.protocol_name(),
                            signal.as_str(),
                            e.message
                        );
                        first_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            self.accepted = Some((id, accepted));
            return Err(e);
        }
        encode::forget_answered(&parsed, &mut self.memory);
        Ok(())
    }

    fn attach_ledger(&mut self, data_dir: &std::path::Path) {
        self.ledger = Some(data_dir.to_path_buf());
    }

    fn probe(&mut self) -> Result<String, SendError> {
        for &signal in &self.signals {
            // An empty Export*ServiceRequest is zero bytes of protobuf.
            self.transport.export(signal, Vec::new()).map_err(|mut e| {
                e.message = format!(
                    "{} {}: {}",
                    self.protocol_name(),
                    signal.as_str(),
                    e.message
                );
                e
            })?;
        }
        Ok(format!(
            "{} {} accepted empty export requests for {}",
            self.protocol_name(),
            crate::sink::http::redact_url(&self.cfg.endpoint),
            self.signals
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}
