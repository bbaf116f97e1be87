//! The sinks against real receivers: a private rsyslogd (TCP, UDP, TLS), the NATS JetStream
//! server at 127.0.0.1:4222 (required: these tests fail when it is unreachable), an HTTP
//! receiver that verifies HMACs, and the file system; plus the shipper's guarantees (cursor,
//! torn tails, alerts) on real ledgers.

mod common;
mod elastic;
mod file;
mod nats;
mod otlp;
mod s3;
mod shipper;
mod splunk;
mod syslog;
mod webhook;
