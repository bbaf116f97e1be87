//! One outbound connection as the proxy saw it, and how it becomes a `net.egress` event.
//!
//! The event's `detail` shape (documented in the README, relied on by detection rules):
//! `{"host", "port", "scheme": "https"|"http", "sni", "method", "path", "address",
//! "decision": "allow"|"deny", "matched", "status", "error"}`. `bytes_out` is what the tool
//! server sent to the destination, `bytes_in` what came back, `duration_ms` how long the
//! connection was open. A plain-HTTP request's query string is never recorded (it is where
//! URLs carry keys); only the path is.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use mcptrail_event::{Event, EventKind};
use serde_json::{json, Value};

use crate::policy::Verdict;

/// `https` for a `CONNECT` tunnel, `http` for a plain request relayed by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// A `CONNECT` tunnel (TLS, not intercepted).
    Https,
    /// An absolute-form plain HTTP request.
    Http,
}

impl Scheme {
    /// `https` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// One connection, recorded when it closed (or was refused).
#[derive(Debug, Clone)]
pub struct EgressRecord {
    /// When the client asked for it (monotonic: matched against the tool call in flight).
    pub opened_at: Instant,
    /// The same moment on the wall clock (the event's time).
    pub opened_wall: SystemTime,
    /// How long it was open.
    pub duration: Duration,
    /// The tool server's end of the connection to the proxy.
    pub client: Option<SocketAddr>,
    /// Tunnel or plain request.
    pub scheme: Scheme,
    /// `CONNECT`, `GET`, `POST`…
    pub method: String,
    /// Destination host as the client named it (lowercase).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Plain HTTP only: the path, without the query string.
    pub path: Option<String>,
    /// TLS server name the client sent inside the tunnel.
    pub sni: Option<String>,
    /// The address connected to.
    pub address: Option<IpAddr>,
    /// The policy's decision.
    pub verdict: Verdict,
    /// HTTP status: the proxy's answer for refusals and failures, the destination's for a
    /// plain request, 200 for an established tunnel.
    pub status: Option<u16>,
    /// Bytes from the tool server to the destination.
    pub bytes_up: u64,
    /// Bytes from the destination to the tool server.
    pub bytes_down: u64,
    /// What went wrong, if anything (resolution, connect, timeout, proxy stopped).
    pub error: Option<String>,
}

impl EgressRecord {
    /// The event `detail`.
    pub fn detail(&self) -> Value {
        json!({
            "host": self.host,
            "port": self.port,
            "scheme": self.scheme.as_str(),
            "sni": self.sni,
            "method": self.method,
            "path": self.path,
            "address": self.address.map(|a| a.to_string()),
            "decision": self.verdict.decision.as_str(),
            "matched": self.verdict.matched,
            "status": self.status,
            "error": self.error,
        })
    }

    /// Fill the egress-specific fields of `e` (kind, sizes, duration, detail); the caller
    /// sets the time, session and identity.
    pub fn fill(&self, e: &mut Event) {
        e.kind = EventKind::NetEgress;
        e.duration_ms = Some(self.duration.as_secs_f64() * 1000.0);
        e.bytes_out = Some(self.bytes_up);
        e.bytes_in = Some(self.bytes_down);
        e.detail = Some(self.detail());
        if self.verdict.decision == crate::Decision::Deny {
            e.labels.push("egress.denied".into());
        }
    }
}
