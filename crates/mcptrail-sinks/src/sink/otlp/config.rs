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

/// `type = "otlp"`, resolved: the sink's keys, then the standard `OTEL_*` environment
/// variables for what the keys leave out, then the defaults (see [`OtlpSinkConfig::resolve`]).
/// `Debug` shows the endpoint without user info or query, and no header value.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpSinkConfig {
    /// Base URL of the receiver: `http://host:4317` (gRPC) or `http://host:4318` (OTLP/HTTP,
    /// which appends `/v1/<signal>` to it); `https://` for TLS.
    pub endpoint: String,
    /// `grpc` (default) or `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// Which signals to export (default: traces, metrics and logs).
    pub signals: Vec<Signal>,
    /// Extra request headers (gRPC metadata), e.g. an authorization token.
    pub headers: BTreeMap<String, HeaderValue>,
    /// Resource attribute `service.name` (default `mcptrail`).
    pub service_name: String,
    /// Put tool arguments and results (as the ledger holds them: redacted) on spans, and keep
    /// them in log bodies. Default false: they are sensitive.
    pub include_payloads: bool,
    /// `none` (default) or `gzip`.
    pub compression: Compression,
    /// PEM file of CAs to trust for https (default: the Mozilla roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) for mutual TLS.
    pub tls_client_cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; must be 0600.
    pub tls_client_key_file: Option<PathBuf>,
    /// Seconds to connect and to get each export answered (default 10).
    pub timeout_secs: u64,
    /// The `OTEL_*` variables that supplied a setting (names only), for messages.
    pub from_env: Vec<&'static str>,
}

/// The keys of a `type = "otlp"` table as written (absent keys are `None`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtlpSinkToml {
    endpoint: Option<String>,
    protocol: Option<OtlpProtocol>,
    signals: Option<Vec<Signal>>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderValue>,
    service_name: Option<String>,
    #[serde(default)]
    include_payloads: bool,
    compression: Option<Compression>,
    tls_ca_file: Option<PathBuf>,
    tls_client_cert_file: Option<PathBuf>,
    tls_client_key_file: Option<PathBuf>,
    timeout_secs: Option<u64>,
}

/// The OpenTelemetry exporter variables read, each with the key it stands in for.
pub const OTEL_ENV_VARS: [(&str, &str); 9] = [
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "protocol"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "headers"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "compression"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "timeout_secs"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "tls_ca_file"),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "tls_client_cert_file",
    ),
    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "tls_client_key_file"),
    ("OTEL_SERVICE_NAME", "service_name"),
];

/// Percent-decoding of a header name or value in `OTEL_EXPORTER_OTLP_HEADERS` (the W3C
/// Baggage encoding the specification uses).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl OtlpSinkConfig {
    /// Resolve a sink's table against the environment (`env` looks a variable up; empty
    /// values count as unset, as the OpenTelemetry specification says). For each setting the
    /// table wins, then the `OTEL_EXPORTER_OTLP_*` variable, then the default; headers are
    /// merged, a header named in the table replacing the variable's of the same name. The
    /// per-signal variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, …) are refused with a
    /// message when they would apply: one sink has one endpoint and one set of settings.
    pub(crate) fn resolve(
        t: OtlpSinkToml,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut from_env = Vec::new();
        let mut pick = |key_set: bool, var: &'static str| -> Result<Option<String>, String> {
            if key_set {
                return Ok(None);
            }
            for signal in Signal::ALL {
                let suffix = var.strip_prefix("OTEL_EXPORTER_OTLP_").unwrap_or("");
                let specific = format!(
                    "OTEL_EXPORTER_OTLP_{}_{suffix}",
                    signal.as_str().to_ascii_uppercase()
                );
                if !suffix.is_empty() && get(&specific).is_some() {
                    return Err(format!(
                        "{specific} is set, but per-signal OTLP settings are not supported: one sink sends every signal with one setting; set {var} or the sink's key instead"
                    ));
                }
            }
            let v = get(var);
            if v.is_some() {
                from_env.push(var);
            }
            Ok(v.map(|v| v.trim().to_string()))
        };
        let endpoint_set = t.endpoint.is_some();
        let endpoint = match t.endpoint {
            Some(e) => Some(e),
            None => pick(endpoint_set, "OTEL_EXPORTER_OTLP_ENDPOINT")?,
        };
        let protocol = match (t.protocol, pick(t.protocol.is_some(), "OTEL_EXPORTER_OTLP_PROTOCOL")?) {
            (Some(p), _) => p,
            (None, Some(v)) => match v.as_str() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL is `{other}`: mcptrail speaks grpc and http/protobuf (not http/json)"
                    ))
                }
            },
            (None, None) => OtlpProtocol::Grpc,
        };
        // The specification's defaults when neither the sink nor the environment names one.
        let endpoint = endpoint.unwrap_or_else(|| {
            match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317",
                OtlpProtocol::HttpProtobuf => "http://localhost:4318",
            }
            .to_string()
        });
        let compression = match (
            t.compression,
            pick(t.compression.is_some(), "OTEL_EXPORTER_OTLP_COMPRESSION")?,
        ) {
            (Some(c), _) => c,
            (None, Some(v)) => match v.as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                other => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_COMPRESSION is `{other}`: use gzip or none"
                    ))
                }
            },
            (None, None) => Compression::None,
        };
        let timeout_secs = match (
            t.timeout_secs,
            pick(t.timeout_secs.is_some(), "OTEL_EXPORTER_OTLP_TIMEOUT")?,
        ) {
            (Some(s), _) => s,
            (None, Some(v)) => {
                // Milliseconds in the specification; the sink counts whole seconds (rounded
                // up, at least one).
                let ms: u64 = v.parse().map_err(|_| {
                    format!("OTEL_EXPORTER_OTLP_TIMEOUT is `{v}`: milliseconds, e.g. 10000")
                })?;
                ms.div_ceil(1000).max(1)
            }
            (None, None) => 10,
        };
        let mut file =
            |key: Option<PathBuf>, var: &'static str| -> Result<Option<PathBuf>, String> {
                Ok(match key {
                    Some(p) => Some(p),
                    None => pick(false, var)?.map(PathBuf::from),
                })
            };
        let tls_ca_file = file(t.tls_ca_file, "OTEL_EXPORTER_OTLP_CERTIFICATE")?;
        let tls_client_cert_file = file(
            t.tls_client_cert_file,
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        )?;
        let tls_client_key_file = file(t.tls_client_key_file, "OTEL_EXPORTER_OTLP_CLIENT_KEY")?;
        let service_name = match t.service_name {
            Some(n) => n,
            None => pick(false, "OTEL_SERVICE_NAME")?.unwrap_or_else(|| "mcptrail".into()),
        };
        let mut headers = BTreeMap::new();
        if let Some(list) = pick(false, "OTEL_EXPORTER_OTLP_HEADERS")? {
            for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .and_then(|(k, v)| Some((percent_decode(k.trim())?, percent_decode(v.trim())?)))
                    .ok_or_else(|| {
                        // The value may be a credential: only the position is named.
                        "OTEL_EXPORTER_OTLP_HEADERS must be `name=value` pairs separated by commas (percent-encoded)".to_string()
                    })?;
                headers.insert(k.to_ascii_lowercase(), HeaderValue::Plain(v));
            }
        }
        for (k, v) in t.headers {
            headers.retain(|name: &String, _| !name.eq_ignore_ascii_case(&k));
            headers.insert(k, v);
        }
        Ok(OtlpSinkConfig {
            endpoint,
            protocol,
            signals: t.signals.unwrap_or_else(|| Signal::ALL.to_vec()),
            headers,
            service_name,
            include_payloads: t.include_payloads,
            compression,
            tls_ca_file,
            tls_client_cert_file,
            tls_client_key_file,
            timeout_secs,
            from_env,
        })
    }
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
            .field("from_env", &self.from_env)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(table: &str, vars: &[(&str, &str)]) -> Result<OtlpSinkConfig, String> {
        let t: OtlpSinkToml = toml::from_str(table).unwrap();
        let env = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        OtlpSinkConfig::resolve(t, &env)
    }

    #[test]
    fn the_table_wins_then_the_environment_then_the_defaults() {
        let env = [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example:4318",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s3cr%3Dt , X-Tenant=acme",
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ("OTEL_SERVICE_NAME", "agents"),
        ];
        let c = resolve("", &env).unwrap();
        assert_eq!(c.endpoint, "https://collector.example:4318");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.timeout_secs, 2, "milliseconds, rounded up to seconds");
        assert_eq!(
            c.headers.get("api-key"),
            Some(&HeaderValue::Plain("s3cr=t".into())),
            "percent-decoded"
        );
        assert_eq!(
            c.headers.get("x-tenant"),
            Some(&HeaderValue::Plain("acme".into()))
        );
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(c.service_name, "agents");
        assert_eq!(c.from_env.len(), 7, "{:?}", c.from_env);
        assert!(
            !format!("{c:?}").contains("s3cr"),
            "no header value in Debug"
        );

        let c = resolve(
            "endpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\ncompression = \"none\"\ntimeout_secs = 3\nservice_name = \"me\"\nheaders = { \"API-Key\" = \"mine\" }\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:4317");
        assert_eq!(c.protocol, OtlpProtocol::Grpc);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.timeout_secs, 3);
        assert_eq!(c.service_name, "me");
        assert_eq!(c.headers.len(), 2, "{:?}", c.headers.keys());
        assert_eq!(
            c.headers.get("API-Key"),
            Some(&HeaderValue::Plain("mine".into())),
            "the table's header replaces the variable's of the same name"
        );
        assert_eq!(
            c.from_env,
            vec![
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_HEADERS"
            ]
        );

        let c = resolve("", &[]).unwrap();
        assert_eq!(c.endpoint, "http://localhost:4317");
        assert_eq!((c.timeout_secs, c.from_env.len()), (10, 0));
        let c = resolve(
            "protocol = \"http/protobuf\"",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")],
        )
        .unwrap();
        assert_eq!(
            c.endpoint, "http://localhost:4318",
            "an empty variable is unset"
        );
    }

    #[test]
    fn bad_variables_are_refused_naming_the_variable_never_a_value() {
        for (vars, want) in [
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")][..],
                "OTEL_EXPORTER_OTLP_PROTOCOL is `http/json`",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_TIMEOUT is `10s`: milliseconds",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "authorization:Bearer tok9")],
                "name=value",
            ),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://t:4318/v1/traces",
                )],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, but per-signal",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "a=b")],
                "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            ),
        ] {
            let e = resolve("", vars).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("tok9"), "{e}");
        }
        // Per-signal variables only matter where the generic one would apply.
        let c = resolve(
            "endpoint = \"http://127.0.0.1:4317\"",
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://t:4318/v1/traces",
            )],
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:4317");
    }
}
