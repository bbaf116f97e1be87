//! mcptrail sinks: every sink is a consumer of the ledger with its own durable cursor.
//!
//! ```text
//! ledger ──► LedgerTail ──► filter ──► batch ──► Sink::send ──► ack ──► cursor.store
//!  (seq)     (complete      (kinds,    (size,    (file, syslog,        (sinks/<name>.cursor,
//!            lines only)    labels)    time)      webhook, NATS)        atomic, 0600)
//! ```
//!
//! Delivery is at-least-once with `event_id` as the dedupe key: the ledger is the buffer, so
//! a dead receiver, a restart or a crash loses nothing; a batch may arrive twice. See
//! [`shipper`] for the guarantees and the alerts, [`cursor`] for the cursor file, [`tail`]
//! for reading a ledger that is being written, and [`sink`] for the receivers.
//!
//! Only this crate (and the binary) depends on tokio, async-nats, rustls and ureq.

pub mod backoff;
pub mod checkpoints;
pub mod config;
pub mod cursor;
mod error;
pub mod format;
pub mod secret;
pub mod shipper;
pub mod sink;
pub mod tail;
mod tls;

pub use config::{validate_all, FleetConfig, PayloadFormat, SinkConfig, SinkTarget};
pub use cursor::{Cursor, SINKS_DIR};
pub use error::{Error, SendError, SendErrorKind};
pub use shipper::{
    lag, spawn, try_lock_sink, LedgerAlerts, ShipOptions, Shipper, ShippingHandle, SinkStatus,
};
pub use sink::{build, Sink};
pub use tail::{ledger_head, LedgerTail, ShipRecord};
