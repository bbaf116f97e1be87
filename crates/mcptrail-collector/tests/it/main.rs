//! Collector integration tests against the real NATS JetStream (127.0.0.1:4222) and
//! PostgreSQL (127.0.0.1:5432, database `test`): the collector runs in-process
//! ([`mcptrail_collector::run`]) while the test publishes ledger lines and checkpoint notes as
//! the fleet sink does, out of order, with gaps, tampered or malformed, and checks what
//! PostgreSQL holds and which alerts came on NATS. Neither service is optional.

mod chain;
mod detect;
mod faults;
mod harness;
mod query;
mod tombstones;
