//! The receivers. A sink turns a batch of records into one delivery and says whether the
//! receiver acknowledged it; everything else (reading, filtering, batching, retrying, the
//! cursor, alerts) is the shipper's.
//!
//! Every sink has the same shape — encode the batch, deliver it, map the answer to `Ok` or a
//! [`SendError`] — because `send` may take as long as the receiver needs to acknowledge, and
//! a repeated batch must only be harmless. How the acknowledged receivers do it:
//! - OTLP (gRPC or HTTP): one `Export*ServiceRequest` per batch; `Ok` on success, a partial
//!   success with rejected items is `Rejected` (the batch is sent again, receivers dedupe by
//!   the `event_id` attribute).
//! - Splunk HEC with indexer acknowledgement: POST the batch, then poll `/services/collector/ack`
//!   inside `send` until the ack id is indexed (or time out: `Transport`, sent again, dedupe
//!   by the event id field).
//! - Elasticsearch/OpenSearch `_bulk`: `_id` = `event_id` makes a repeated index operation a
//!   no-op; any item error fails the batch (429 items: `Throttled`).
//! - S3 Object Lock: one object per batch named by its seq range, so a repeated PUT writes
//!   the same key with the same bytes; retention headers from the labels.

pub mod elastic;
pub mod file;
pub(crate) mod http;
pub mod nats;
pub mod otlp;
pub mod s3;
pub mod sigv4;
pub mod splunk;
pub mod syslog;
pub mod webhook;

use crate::config::{SinkConfig, SinkTarget};
use crate::error::SendError;
use crate::tail::ShipRecord;
use crate::Error;

/// A receiver of batches.
pub trait Sink: Send {
    /// Deliver every record of `batch`. `Ok` only once the receiver (or, for transports
    /// without acknowledgements, the operating system) has taken all of it: the shipper then
    /// commits the cursor past the batch. Sending the same batch again must be harmless
    /// (receivers dedupe by `event_id`).
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError>;

    /// Check the receiver can be reached, without delivering an event; on success a short
    /// description of what answered.
    fn probe(&mut self) -> Result<String, SendError>;

    /// The data directory of the ledger being shipped, given once before the first `send`.
    /// Sinks that also ship the ledger's own files keep it (S3: sealed segments and signed
    /// checkpoints; Splunk HEC, Elasticsearch: checkpoints as records); the others ignore it.
    fn attach_ledger(&mut self, _data_dir: &std::path::Path) {}
}

/// Build the sink of `cfg` (loading its secrets and certificates).
pub fn build(cfg: &SinkConfig) -> Result<Box<dyn Sink>, Error> {
    let setup = |message: String| Error::Setup {
        sink: cfg.name.clone(),
        message,
    };
    Ok(match &cfg.target {
        SinkTarget::File(c) => Box::new(file::FileSink::new(c.clone())),
        SinkTarget::Syslog(c) => Box::new(syslog::SyslogSink::new(c.clone()).map_err(setup)?),
        SinkTarget::Webhook(c) => {
            Box::new(webhook::WebhookSink::new(&cfg.name, c.clone()).map_err(setup)?)
        }
        SinkTarget::Nats(c) => Box::new(
            nats::NatsSink::new(c.clone())
                .map_err(setup)?
                .with_name(&cfg.name),
        ),
        SinkTarget::SplunkHec(c) => {
            Box::new(splunk::SplunkHecSink::new(&cfg.name, c.clone()).map_err(setup)?)
        }
        SinkTarget::Elasticsearch(c) => {
            Box::new(elastic::ElasticsearchSink::new(&cfg.name, c.clone()).map_err(setup)?)
        }
        SinkTarget::S3(c) => Box::new(s3::S3Sink::new(&cfg.name, c.clone()).map_err(setup)?),
        SinkTarget::Otlp(c) => Box::new(
            otlp::OtlpSink::new(c.clone())
                .map_err(setup)?
                .with_name(&cfg.name),
        ),
    })
}
