//! `[[sinks]]` tables of `mcptrail.toml`.
//!
//! Every sink has the common keys (name, type, filters, batching, backoff, alert thresholds)
//! and the keys of its type. Unknown keys are errors that name the sink and the key, and list
//! the valid keys of that type. A table is split into its common and its type's keys before
//! either is deserialised, so both halves can reject what they do not know.

use std::path::PathBuf;
use std::time::Duration;

use mcptrail_event::EventKind;
use serde::{Deserialize, Deserializer};

use crate::secret::SecretSource;
use crate::sink::http::{check_http_url, redact_url};
use crate::Error;

/// One configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Unique name; also the cursor's file name (`sinks/<name>.cursor`).
    pub name: String,
    /// Which events go to this sink.
    pub filter: Filter,
    /// Batching.
    pub batch: BatchPolicy,
    /// Retry schedule.
    pub backoff: BackoffPolicy,
    /// When to append an `alert` event about this sink.
    pub alerts: AlertPolicy,
    /// The receiver and its settings.
    pub target: SinkTarget,
}

/// The receiver of a sink.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SinkTarget {
    /// `type = "file"`: rolling JSON Lines files.
    File(FileSinkConfig),
    /// `type = "syslog"`: RFC 5424 over UDP, TCP or TLS.
    Syslog(SyslogSinkConfig),
    /// `type = "webhook"`: HTTP POST of a signed JSON batch.
    Webhook(WebhookSinkConfig),
    /// `type = "nats"`: NATS JetStream publish with acknowledgement.
    Nats(NatsSinkConfig),
    /// `type = "splunk_hec"`: Splunk HTTP Event Collector with indexer acknowledgement.
    SplunkHec(crate::sink::splunk::SplunkHecSinkConfig),
    /// `type = "elasticsearch"`: Elasticsearch/OpenSearch `_bulk` in ECS.
    Elasticsearch(crate::sink::elastic::ElasticsearchSinkConfig),
    /// `type = "s3"`: S3-compatible object storage with Object Lock.
    S3(crate::sink::s3::S3SinkConfig),
    /// `type = "otlp"`: OpenTelemetry export (traces, metrics, logs) over gRPC or HTTP.
    Otlp(crate::sink::otlp::OtlpSinkConfig),
}

impl SinkTarget {
    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkTarget::File(_) => "file",
            SinkTarget::Syslog(_) => "syslog",
            SinkTarget::Webhook(_) => "webhook",
            SinkTarget::Nats(_) => "nats",
            SinkTarget::SplunkHec(_) => "splunk_hec",
            SinkTarget::Elasticsearch(_) => "elasticsearch",
            SinkTarget::S3(_) => "s3",
            SinkTarget::Otlp(_) => "otlp",
        }
    }
}

/// Which events a sink receives. Empty lists mean "no restriction".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these kinds.
    pub kinds: Vec<EventKind>,
    /// Only events carrying at least one of these labels.
    pub labels: Vec<String>,
    /// Never events carrying any of these labels.
    pub exclude_labels: Vec<String>,
}

impl Filter {
    /// Whether an event of `kind` with `labels` passes.
    pub fn accepts<S: AsRef<str>>(&self, kind: &str, labels: &[S]) -> bool {
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k.as_str() == kind) {
            return false;
        }
        let has = |l: &String| labels.iter().any(|x| x.as_ref() == l);
        if !self.labels.is_empty() && !self.labels.iter().any(has) {
            return false;
        }
        !self.exclude_labels.iter().any(has)
    }
}

/// A batch is sent when it holds `max_events` events or `max_bytes` bytes, or when its first
/// event has waited `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most events per batch.
    pub max_events: usize,
    /// Most payload bytes per batch (an event larger than this goes alone).
    pub max_bytes: usize,
    /// Longest an event waits for its batch to fill.
    pub max_wait: Duration,
}

/// Exponential backoff with jitter between failed deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

/// Alert thresholds (`None`: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertPolicy {
    /// Records behind the ledger head.
    pub lag_records: Option<u64>,
    /// Age of the oldest record not yet shipped.
    pub lag_age: Option<Duration>,
    /// Time a sink has been failing without a success.
    pub failing_for: Option<Duration>,
}

/// What each event becomes on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The ledger line itself, byte for byte (a receiver can check its hash chain).
    #[default]
    Json,
    /// ArcSight Common Event Format.
    Cef,
    /// OCSF 1.x API Activity (class 6003) JSON.
    Ocsf,
}

/// `type = "file"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The active file; rotated files get a UTC time stamp appended to this name.
    pub path: PathBuf,
    /// Rotate when the active file would exceed this size (default 64 MiB).
    #[serde(default = "default_file_max_bytes")]
    pub max_bytes: u64,
    /// Rotate when the active file is older than this (default 86400 s; 0: never).
    #[serde(default = "default_file_max_age_secs")]
    pub max_age_secs: u64,
    /// fdatasync each batch before it counts as delivered (default true).
    #[serde(default = "yes")]
    pub fsync: bool,
    /// What each line holds.
    #[serde(default)]
    pub format: PayloadFormat,
}

/// Syslog transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// RFC 5426: one message per datagram, no acknowledgement of any kind.
    Udp,
    /// RFC 6587 octet counting over TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS (rustls).
    Tls,
}

/// `type = "syslog"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    /// `host:port` of the receiver.
    pub address: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: SyslogTransport,
    /// `json` (default), `cef` or `ocsf`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Facility number 0..=23 (default 13, log audit).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// APP-NAME (default `mcptrail`).
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// PEM file of CAs to trust for TLS (default: the Mozilla roots from webpki-roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Name to verify in the server certificate (default: the host part of `address`).
    pub tls_server_name: Option<String>,
    /// Client certificate (PEM chain) for mutual TLS.
    pub tls_client_cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; must be 0600.
    pub tls_client_key_file: Option<PathBuf>,
    /// Connect/write timeout in seconds (default 10).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// `type = "webhook"`. `Debug` shows the URL without user info or query.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// `http://` or `https://` URL the batches are POSTed to.
    pub url: String,
    /// HMAC-SHA256 key: `{ env = "VAR" }` or `{ file = "/path" }`.
    pub secret: SecretSource,
    /// Header carrying `sha256=<hex HMAC of the body>` (default `X-Mcptrail-Signature`).
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// `json` (default: the ledger lines) or `ocsf`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// PEM file of CAs to trust for https (default: the Mozilla roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Request timeout in seconds (default 10).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// `type = "nats"`. `Debug` shows the URL without user info.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL (default `nats://127.0.0.1:4222`).
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Subject to publish to; a JetStream stream must capture it. Empty (the default) when
    /// `fleet` is set: the subjects are then derived from it.
    #[serde(default)]
    pub subject: String,
    /// Fleet publishing (issue 9): records verbatim to `<prefix>.<tenant>.<source>.events`
    /// and signed checkpoints to `<prefix>.<tenant>.<source>.checkpoints`, for
    /// `mcptrail collector`.
    pub fleet: Option<FleetConfig>,
    /// The stream expected to capture `subject`: `doctor` checks that it is the one that does
    /// (without it, `doctor` only checks that some stream does).
    pub stream: Option<String>,
    /// Token authentication.
    pub token: Option<SecretSource>,
    /// User for user/password authentication.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<SecretSource>,
    /// `json` (default) or `ocsf`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Seconds to wait for a connection and for the acknowledgements of a batch (default 10).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// `fleet = { tenant = "acme", source = "laptop-17" }` in a NATS sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The organisation (one subject token: letters, digits, `-`, `_`).
    pub tenant: String,
    /// This tap (one subject token), unique within the tenant.
    pub source: String,
    /// First subject token (default `mcptrail`).
    #[serde(default = "default_fleet_prefix")]
    pub prefix: String,
}

impl FleetConfig {
    /// `<prefix>.<tenant>.<source>.events`.
    pub fn events_subject(&self) -> String {
        format!("{}.{}.{}.events", self.prefix, self.tenant, self.source)
    }

    /// `<prefix>.<tenant>.<source>.checkpoints`.
    pub fn checkpoints_subject(&self) -> String {
        format!(
            "{}.{}.{}.checkpoints",
            self.prefix, self.tenant, self.source
        )
    }

    /// Every name must be one plain subject token.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("tenant", &self.tenant),
            ("source", &self.source),
            ("prefix", &self.prefix),
        ] {
            if !is_subject_token(v) {
                return Err(format!(
                    "fleet.{key} = {v:?} must be one NATS subject token (letters, digits, `-`, `_`)"
                ));
            }
        }
        Ok(())
    }
}

/// A non-empty NATS subject token without wildcards or separators.
pub fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl NatsSinkConfig {
    /// Where events go: `subject`, or the fleet events subject.
    pub fn events_subject(&self) -> String {
        match &self.fleet {
            Some(f) => f.events_subject(),
            None => self.subject.clone(),
        }
    }
}

fn default_fleet_prefix() -> String {
    "mcptrail".into()
}

impl std::fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("secret", &self.secret)
            .field("signature_header", &self.signature_header)
            .field("format", &self.format)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl std::fmt::Debug for NatsSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("subject", &self.subject)
            .field("fleet", &self.fleet)
            .field("stream", &self.stream)
            .field("token", &self.token)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("format", &self.format)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

fn yes() -> bool {
    true
}
fn default_file_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_file_max_age_secs() -> u64 {
    86_400
}
fn default_facility() -> u8 {
    13
}
fn default_app_name() -> String {
    "mcptrail".into()
}
fn default_timeout_secs() -> u64 {
    10
}
fn default_signature_header() -> String {
    "X-Mcptrail-Signature".into()
}
fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}

/// The keys every sink has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    exclude_labels: Vec<String>,
    #[serde(default = "default_batch_max_events")]
    batch_max_events: usize,
    #[serde(default = "default_batch_max_bytes")]
    batch_max_bytes: usize,
    #[serde(default = "default_batch_max_wait_ms")]
    batch_max_wait_ms: u64,
    #[serde(default = "default_backoff_initial_ms")]
    backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    backoff_max_ms: u64,
    #[serde(default = "default_alert_lag_records")]
    alert_lag_records: u64,
    #[serde(default = "default_alert_lag_secs")]
    alert_lag_secs: u64,
    #[serde(default = "default_alert_failing_secs")]
    alert_failing_secs: u64,
}

/// The common keys, in documentation order.
pub const COMMON_KEYS: &[&str] = &[
    "name",
    "type",
    "kinds",
    "labels",
    "exclude_labels",
    "batch_max_events",
    "batch_max_bytes",
    "batch_max_wait_ms",
    "backoff_initial_ms",
    "backoff_max_ms",
    "alert_lag_records",
    "alert_lag_secs",
    "alert_failing_secs",
];

fn default_batch_max_events() -> usize {
    500
}
fn default_batch_max_bytes() -> usize {
    1 << 20
}
fn default_batch_max_wait_ms() -> u64 {
    1000
}
fn default_backoff_initial_ms() -> u64 {
    250
}
fn default_backoff_max_ms() -> u64 {
    60_000
}
fn default_alert_lag_records() -> u64 {
    100_000
}
fn default_alert_lag_secs() -> u64 {
    900
}
fn default_alert_failing_secs() -> u64 {
    300
}

fn nonzero<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

impl SinkConfig {
    /// Read one `[[sinks]]` table.
    pub fn from_table(table: toml::Table) -> Result<Self, Error> {
        let sink = table
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or("(unnamed)")
            .to_string();
        let err = |message: String| Error::Config {
            sink: sink.clone(),
            message,
        };
        let (common, specific): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        let common: Common = toml::Value::Table(common).try_into().map_err(|e| {
            err(tidy(&e.to_string())
                + if sink == "(unnamed)" {
                    " (every [[sinks]] table needs `name` and `type`)"
                } else {
                    ""
                })
        })?;
        if common.name.is_empty()
            || common.name.len() > 64
            || !common
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                "`name` must be 1 to 64 characters of A-Z, a-z, 0-9, `-` and `_` (it names the cursor file)".into(),
            ));
        }
        let specific_value = toml::Value::Table(specific);
        let with_common_keys = |e: toml::de::Error| {
            let m = tidy(&e.to_string());
            if m.contains("unknown field") {
                err(format!(
                    "{m}, or one of the keys every sink has: {}",
                    COMMON_KEYS.join(", ")
                ))
            } else {
                err(m)
            }
        };
        let target = match common.type_name.as_str() {
            "file" => SinkTarget::File(specific_value.try_into().map_err(with_common_keys)?),
            "syslog" => {
                let c: SyslogSinkConfig = specific_value.try_into().map_err(with_common_keys)?;
                if c.facility > 23 {
                    return Err(err(format!("facility {} is not 0..=23", c.facility)));
                }
                if c.tls_client_cert_file.is_some() != c.tls_client_key_file.is_some() {
                    return Err(err(
                        "tls_client_cert_file and tls_client_key_file go together".into(),
                    ));
                }
                SinkTarget::Syslog(c)
            }
            "webhook" => {
                let c: WebhookSinkConfig = specific_value.try_into().map_err(with_common_keys)?;
                check_http_url("url", &c.url).map_err(err)?;
                if c.format == PayloadFormat::Cef {
                    return Err(err("format `cef` is for syslog; a webhook carries `json` or `ocsf`".into()));
                }
                SinkTarget::Webhook(c)
            }
            "nats" => {
                let c: NatsSinkConfig = specific_value.try_into().map_err(with_common_keys)?;
                if c.format == PayloadFormat::Cef {
                    return Err(err("format `cef` is for syslog; NATS carries `json` or `ocsf`".into()));
                }
                if c.password.is_some() && c.user.is_none() {
                    return Err(err("`password` needs `user`".into()));
                }
                match &c.fleet {
                    Some(f) => {
                        f.validate().map_err(err)?;
                        if !c.subject.is_empty() {
                            return Err(err("set `subject` or `fleet`, not both: `fleet` derives the subjects".into()));
                        }
                        if c.format != PayloadFormat::Json {
                            return Err(err("`fleet` publishes the ledger lines verbatim: `format` must be `json`".into()));
                        }
                    }
                    None if c.subject.is_empty() => {
                        return Err(err("`subject` (or `fleet`) is required".into()));
                    }
                    None => {}
                }
                SinkTarget::Nats(c)
            }
            "splunk_hec" => {
                let c: crate::sink::splunk::SplunkHecSinkConfig =
                    specific_value.try_into().map_err(with_common_keys)?;
                c.validate().map_err(err)?;
                SinkTarget::SplunkHec(c)
            }
            "elasticsearch" => {
                let c: crate::sink::elastic::ElasticsearchSinkConfig =
                    specific_value.try_into().map_err(with_common_keys)?;
                c.validate().map_err(err)?;
                SinkTarget::Elasticsearch(c)
            }
            "s3" => {
                let c: crate::sink::s3::S3SinkConfig =
                    specific_value.try_into().map_err(with_common_keys)?;
                let filtered = !(common.kinds.is_empty()
                    && common.labels.is_empty()
                    && common.exclude_labels.is_empty());
                c.validate(filtered).map_err(err)?;
                SinkTarget::S3(c)
            }
            "otlp" => {
                let t: crate::sink::otlp::OtlpSinkToml =
                    specific_value.try_into().map_err(with_common_keys)?;
                let c = crate::sink::otlp::OtlpSinkConfig::resolve(t, &|k| std::env::var(k).ok())
                    .map_err(err)?;
                c.check().map_err(|e| {
                    err(if c.from_env.is_empty() {
                        e
                    } else {
                        format!("{e} (settings taken from {})", c.from_env.join(", "))
                    })
                })?;
                SinkTarget::Otlp(c)
            }
            other => {
                return Err(err(format!(
                    "unknown type `{other}`: expected file, syslog, webhook, nats, otlp, splunk_hec, elasticsearch or s3"
                )))
            }
        };
        let mut kinds = Vec::new();
        for k in &common.kinds {
            kinds.push(EventKind::parse(k).ok_or_else(|| {
                err(format!(
                    "unknown event kind `{k}` in `kinds`; kinds are: {}",
                    EventKind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?);
        }
        if common.batch_max_events == 0 || common.batch_max_bytes == 0 {
            return Err(err(
                "batch_max_events and batch_max_bytes must be at least 1".into(),
            ));
        }
        if common.backoff_initial_ms == 0 || common.backoff_max_ms < common.backoff_initial_ms {
            return Err(err(
                "backoff_initial_ms must be at least 1 and at most backoff_max_ms".into(),
            ));
        }
        Ok(SinkConfig {
            name: common.name,
            filter: Filter {
                kinds,
                labels: common.labels,
                exclude_labels: common.exclude_labels,
            },
            batch: BatchPolicy {
                max_events: common.batch_max_events,
                max_bytes: common.batch_max_bytes,
                max_wait: Duration::from_millis(common.batch_max_wait_ms),
            },
            backoff: BackoffPolicy {
                initial: Duration::from_millis(common.backoff_initial_ms),
                max: Duration::from_millis(common.backoff_max_ms),
            },
            alerts: AlertPolicy {
                lag_records: nonzero(common.alert_lag_records),
                lag_age: nonzero(common.alert_lag_secs).map(Duration::from_secs),
                failing_for: nonzero(common.alert_failing_secs).map(Duration::from_secs),
            },
            target,
        })
    }
}

/// toml's messages for a table deserialised on its own carry no useful position; keep the
/// first line.
fn tidy(message: &str) -> String {
    let mut lines = message
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains('|') && !l.starts_with("TOML parse error"));
    let Some(last) = lines.next_back() else {
        return message.trim().to_string();
    };
    // A wrong value inside a key ends with "in `key`": keep the line saying what is wrong.
    match lines
        .next_back()
        .filter(|_| last.trim_start().starts_with("in `"))
    {
        Some(what) => format!("{} {}", what.trim(), last.trim()),
        None => last.trim().to_string(),
    }
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        SinkConfig::from_table(table).map_err(serde::de::Error::custom)
    }
}

/// Check a list of sinks as a whole: names are unique.
pub fn validate_all(sinks: &[SinkConfig]) -> Result<(), Error> {
    for (i, s) in sinks.iter().enumerate() {
        if sinks[..i].iter().any(|o| o.name == s.name) {
            return Err(Error::Config {
                sink: s.name.clone(),
                message:
                    "two [[sinks]] tables have this name; each needs its own (it names the cursor)"
                        .into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SinkConfig>, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            sinks: Vec<SinkConfig>,
        }
        toml::from_str::<Doc>(text)
            .map(|d| d.sinks)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_type_parses_with_defaults() {
        let s = parse(
            r#"
[[sinks]]
name = "files"
type = "file"
path = "/tmp/x.jsonl"
kinds = ["mcp.request", "alert"]

[[sinks]]
name = "siem"
type = "syslog"
address = "127.0.0.1:6514"
transport = "tls"
format = "cef"

[[sinks]]
name = "hook"
type = "webhook"
url = "https://example.invalid/hook"
secret = { env = "HOOK_KEY" }

[[sinks]]
name = "bus"
type = "nats"
subject = "mcptrail.events"
alert_lag_records = 0
"#,
        )
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0].filter.kinds,
            vec![EventKind::McpRequest, EventKind::Alert]
        );
        assert_eq!(s[0].batch.max_events, 500);
        assert!(
            matches!(&s[1].target, SinkTarget::Syslog(c) if c.format == PayloadFormat::Cef && c.facility == 13)
        );
        assert!(
            matches!(&s[2].target, SinkTarget::Webhook(c) if c.secret == SecretSource::Env { env: "HOOK_KEY".into() })
        );
        assert!(matches!(&s[3].target, SinkTarget::Nats(c) if c.url == "nats://127.0.0.1:4222"));
        assert_eq!(s[3].alerts.lag_records, None);
    }

    #[test]
    fn unknown_keys_name_the_sink_and_the_key() {
        let e = parse("[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"a:1\"\ntransport = \"tcp\"\nadress = \"b\"\n").unwrap_err();
        assert!(e.contains("sink \"siem\""), "{e}");
        assert!(e.contains("adress"), "{e}");
        assert!(e.contains("address"), "lists the valid keys: {e}");
        let e =
            parse("[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nbatch_max_event = 5\n")
                .unwrap_err();
        assert!(
            e.contains("sink \"f\"") && e.contains("batch_max_event"),
            "{e}"
        );
        let e = parse("[[sinks]]\nname = \"f\"\ntype = \"kafka\"\n").unwrap_err();
        assert!(e.contains("unknown type `kafka`"), "{e}");
        let e = parse(
            "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nkinds = [\"mcp.requets\"]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("mcp.requets") && e.contains("mcp.request"),
            "{e}"
        );
        let e = parse("[[sinks]]\ntype = \"file\"\npath = \"/x\"\n").unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e =
            parse("[[sinks]]\nname = \"../etc\"\ntype = \"file\"\npath = \"/x\"\n").unwrap_err();
        assert!(e.contains("cursor file"), "{e}");
    }

    #[test]
    fn debug_output_hides_credentials_in_urls() {
        let s = parse(
            "[[sinks]]\nname = \"h\"\ntype = \"webhook\"\nurl = \"https://u:pw1@h.example/x?token=tok2\"\nsecret = { env = \"K\" }\n\n[[sinks]]\nname = \"n\"\ntype = \"nats\"\nurl = \"nats://u:pw3@127.0.0.1:4222\"\nsubject = \"s\"\n",
        )
        .unwrap();
        let shown = format!("{s:?}");
        for secret in ["pw1", "tok2", "pw3"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("https://h.example/x") && shown.contains("nats://127.0.0.1:4222"),
            "{shown}"
        );
    }

    #[test]
    fn siem_and_worm_types_parse_and_refuse_what_they_do_not_know() {
        let s = parse(
            r#"
[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "https://splunk.example.com:8088"
token = { env = "HEC_TOKEN" }
index = "mcp"

[[sinks]]
name = "es"
type = "elasticsearch"
url = "https://es.example.com:9200"
user = "shipper"
password = { file = "/etc/mcptrail/es.pw" }

[[sinks]]
name = "worm"
type = "s3"
endpoint = "https://s3.eu-central-1.amazonaws.com"
bucket = "audit-archive"
region = "eu-central-1"
label_retention_days = { pci = 365 }
"#,
        )
        .unwrap();
        assert!(
            matches!(&s[0].target, SinkTarget::SplunkHec(c) if c.ack && c.sourcetype == "mcptrail:event")
        );
        assert!(matches!(&s[1].target, SinkTarget::Elasticsearch(c) if c.index == "mcptrail"));
        assert!(matches!(&s[2].target, SinkTarget::S3(c) if c.retention_days == 365 && c.segments));
        assert_eq!(s[2].target.type_name(), "s3");
        for (text, want) in [
            (
                "type = \"splunk_hec\"\nurl = \"http://h\"\ntoken = { env = \"T\" }\nacks = true\n",
                "acks",
            ),
            (
                "type = \"elasticsearch\"\nurl = \"http://h\"\nindex = \"Upper\"\n",
                "not a valid Elasticsearch index",
            ),
            (
                "type = \"elasticsearch\"\nurl = \"http://h\"\nuser = \"u\"\n",
                "`user` and `password` go together",
            ),
            (
                "type = \"s3\"\nendpoint = \"http://h\"\nbucket = \"b_b\"\n",
                "not a valid bucket name",
            ),
            (
                "type = \"s3\"\nendpoint = \"http://h\"\nbucket = \"bucket\"\nretention = 5\n",
                "retention",
            ),
            (
                "type = \"s3\"\nendpoint = \"http://h\"\nbucket = \"bucket\"\nlabels = [\"pii\"]\n",
                "segments = false",
            ),
        ] {
            let e = parse(&format!("[[sinks]]\nname = \"x\"\n{text}")).unwrap_err();
            assert!(e.contains("sink \"x\"") && e.contains(want), "{want}: {e}");
        }
        // Every http(s) URL key is checked the same way, and quoted without credentials.
        for (text, key) in [
            (
                "type = \"webhook\"\nsecret = { env = \"K\" }\nurl = ",
                "url",
            ),
            (
                "type = \"splunk_hec\"\ntoken = { env = \"T\" }\nurl = ",
                "url",
            ),
            ("type = \"elasticsearch\"\nurl = ", "url"),
            (
                "type = \"s3\"\nbucket = \"bucket\"\nendpoint = ",
                "endpoint",
            ),
            ("type = \"otlp\"\nendpoint = ", "endpoint"),
        ] {
            let e = parse(&format!(
                "[[sinks]]\nname = \"x\"\n{text}\"ftp://u:pw1@h/x?token=tok2\"\n"
            ))
            .unwrap_err();
            assert!(
                e.contains(&format!(
                    "{key} `ftp://h/x` must start with http:// or https://"
                )),
                "{text}: {e}"
            );
            assert!(!e.contains("pw1") && !e.contains("tok2"), "{e}");
        }
    }

    #[test]
    fn filters() {
        let f = Filter {
            kinds: vec![EventKind::McpRequest],
            labels: vec!["pii".into()],
            exclude_labels: vec!["secret".into()],
        };
        assert!(f.accepts("mcp.request", &["pii"]));
        assert!(!f.accepts("mcp.response", &["pii"]));
        assert!(!f.accepts("mcp.request", &[] as &[&str]));
        assert!(!f.accepts("mcp.request", &["pii", "secret"]));
        assert!(Filter::default().accepts("alert", &[] as &[&str]));
    }
}
