//! Integration tests of `mcptrail serve`: the real server on 127.0.0.1:0 over a temporary
//! data directory whose ledger is written through the real ledger API; a real HTTP client.

mod harness;

mod api;
mod fleet;
mod governance;
mod openapi;
mod tls;
