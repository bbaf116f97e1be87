//! `type = "otlp"`: the keys of an OpenTelemetry export sink and their checks.
//!
//! ```toml
//! [[sinks]]
//! name = "otel"
//! type = "otlp"
//! endpoint = "http://127.0.0.1:4317"        # base URL; https:// for TLS
//! protocol = "grpc"                          # or "http/protobuf" (then port 4318 usually)
//! signals = ["traces", "metrics", "logs"]    # any subset (default: all three)
//! headers = { authorization = { env = "OTLP_AUTH" }, "x-tenant" = "acme" }
//! service_name = "mcptrail"                  # resource attribute service.name
//! include_payloads = false                   # tool arguments/results (redacted) on spans and logs
//! compression = "none"                       # or "gzip"
//! tls_ca_file = "/etc/ssl/otel-ca.pem"       # default: the Mozilla roots
//! tls_client_cert_file = "client.pem"        # mutual TLS (with tls_client_key_file, 0600)
//! tls_client_key_file = "client.key"
//! timeout_secs = 10
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::SecretSource;
use crate::sink::http::{check_http_url, redact_url};

/// Which OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC: unary `Export` calls over HTTP/2.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// An OTLP signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// One span per MCP request/response pair, per side (SERVER and CLIENT).
    Traces,
    /// Operation and session duration histograms, and mcptrail's counters.
    Metrics,
    /// Every event as a log record.
    Logs,
}

impl Signal {
    /// All three, in the order they are sent.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// `traces`, `metrics` or `logs`: the OTLP/HTTP path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// Body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As is.
    #[default]
    None,
    /// gzip (`Content-Encoding: gzip`, or the gRPC compressed flag with `grpc-encoding: gzip`).
    Gzip,
}

/// A header value: a plain string (for things that are not secret) or a secret source.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    /// `"acme"`.
    Plain(String),
    /// `{ env = "VAR" }` or `{ file = "/path" }`.
    Secret(SecretSource),
}

impl std::fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A plain value may still be a credential someone put there: never shown.
            HeaderValue::Plain(v) => write!(f, "Plain({} bytes)", v.len()),
            HeaderValue::Secret(s) => write!(f, "{s:?}"),
        }
    }
}

/// `type = "otlp"`. `Debug` shows the endpoint without user info or query, and no header
/// value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// Base URL of the receiver: `http://host:4317` (gRPC) or `http://host:4318` (OTLP/HTTP,
    /// which appends `/v1/<signal>` to it); `https://` for TLS.
    pub endpoint: String,
    /// `grpc` (default) or `http/protobuf`.
    #[serde(default = "default_protocol")]
    pub protocol: OtlpProtocol,
    /// Which signals to export (default: traces, metrics and logs).
    #[serde(default = "default_signals")]
    pub signals: Vec<Signal>,
    /// Extra request headers (gRPC metadata), e.g. an authorization token.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Resource attribute `service.name` (default `mcptrail`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Put tool arguments and results (as the ledger holds them: redacted) on spans, and keep
    /// them in log bodies. Default false: they are sensitive.
    #[serde(default)]
    pub include_payloads: bool,
    /// `none` (default) or `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// PEM file of CAs to trust for https (default: the Mozilla roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) for mutual TLS.
    pub tls_client_cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; must be 0600.
    pub tls_client_key_file: Option<PathBuf>,
    /// Seconds to connect and to get each export answered (default 10).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_protocol() -> OtlpProtocol {
    OtlpProtocol::Grpc
}
fn default_signals() -> Vec<Signal> {
    Signal::ALL.to_vec()
}
fn default_service_name() -> String {
    "mcptrail".into()
}
fn default_timeout_secs() -> u64 {
    10
}

impl std::fmt::Debug for OtlpSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSinkConfig")
            .field("endpoint", &redact_url(&self.endpoint))
            .field("protocol", &self.protocol)
            .field("signals", &self.signals)
            .field("headers", &self.headers)
            .field("service_name", &self.service_name)
            .field("include_payloads", &self.include_payloads)
            .field("compression", &self.compression)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_client_cert_file", &self.tls_client_cert_file)
            .field("tls_client_key_file", &self.tls_client_key_file)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl OtlpSinkConfig {
    /// The checks serde cannot make; the message says what to change.
    pub fn check(&self) -> Result<(), String> {
        let rest = check_http_url("endpoint", &self.endpoint)
            .map_err(|e| format!("{e} (e.g. http://127.0.0.1:4317)"))?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(
                "endpoint needs a host (and no user info: put credentials in `headers`)".into(),
            );
        }
        if self.endpoint.contains(['?', '#']) {
            return Err("endpoint takes no query or fragment: put credentials in `headers`".into());
        }
        if self.signals.is_empty() {
            return Err("signals is empty: list at least one of traces, metrics, logs".into());
        }
        if self.tls_client_cert_file.is_some() != self.tls_client_key_file.is_some() {
            return Err("tls_client_cert_file and tls_client_key_file go together".into());
        }
        for name in self.headers.keys() {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return Err(format!(
                    "header name `{name}` is not a valid HTTP header name"
                ));
            }
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("grpc-")
                || [
                    "content-type",
                    "content-encoding",
                    "te",
                    "host",
                    "content-length",
                ]
                .contains(&lower.as_str())
            {
                return Err(format!(
                    "header `{name}` is set by the OTLP transport itself; leave it out of `headers`"
                ));
            }
        }
        if self.service_name.is_empty() {
            return Err("service_name must not be empty".into());
        }
        Ok(())
    }

    /// `host:port` of the endpoint (the port defaulting from the scheme), and whether TLS is on.
    pub(crate) fn authority(&self) -> (String, bool) {
        let tls = self.endpoint.starts_with("https://");
        let rest = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        let has_port = match authority.rsplit_once(':') {
            Some((_, p)) => !authority.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()),
            None => false,
        };
        if has_port {
            (authority.to_string(), tls)
        } else {
            (format!("{authority}:{}", if tls { 443 } else { 80 }), tls)
        }
    }
}
