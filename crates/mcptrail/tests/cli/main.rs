//! One integration-test binary that drives the real `mcptrail` CLI against real MCP peers.

mod bad_input;
mod clients;
mod concurrency;
mod detect;
mod doctor;
mod egress;
mod export;
mod fleet;
mod gateway;
mod integrity;
mod lifecycle;
mod otlp;
mod peers;
mod query;
mod redaction;
mod retention;
mod scenarios;
mod serve_browser;
mod ship;
mod siem;
mod support;
