//! `[collector]` in `mcptrail.toml`: where to consume (NATS JetStream stream and durable
//! consumer), where to store (PostgreSQL URL and schema), which checkpoint keys to trust, and
//! how long a record waits for its predecessor.

use serde::Deserialize;

use crate::Error;

/// `[collector]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// NATS server (default `nats://127.0.0.1:4222`).
    #[serde(default = "default_nats_url")]
    pub nats_url: String,
    /// First subject token the taps publish under (their `fleet.prefix`, default `mcptrail`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// JetStream stream capturing `<prefix>.*.*.events` and `<prefix>.*.*.checkpoints`
    /// (default `MCPTRAIL_FLEET`); created by the collector when missing.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Durable pull consumer shared by every collector (default `mcptrail-collector`): run more
    /// collectors with the same name to scale out.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// PostgreSQL connection (`postgres://user@host:port/db` or `host=… user=… dbname=…`).
    pub postgres_url: String,
    /// PostgreSQL schema holding the tables (default `mcptrail`; created when missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Public checkpoint keys (`mcptrail checkpoint --key`, `<data_dir>/keys/checkpoint.vkey`
    /// of each tap) whose signatures are trusted.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Messages per pull (default 1000).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A new source whose first record is not seq 1 waits this long for seq 1 (default 60 s;
    /// more than JetStream's ack wait of a killed collector's batch), then it is accepted as
    /// "unanchored" from its lowest seq.
    #[serde(default = "default_hold_secs")]
    pub hold_secs: u64,
    /// A gap in a source's chain (records waiting for a predecessor), or a signed checkpoint
    /// ahead of the chain, older than this is an alert (default 60 s).
    #[serde(default = "default_gap_alert_secs")]
    pub gap_alert_secs: u64,
    /// A source with open sessions that sent no record for this long is an alert (default
    /// 120 s: taps write a heartbeat every 30 s while they run).
    #[serde(default = "default_silence_secs")]
    pub silence_secs: u64,
    /// How often the sweep for the above runs (default 1000 ms).
    #[serde(default = "default_sweep_interval_ms")]
    pub sweep_interval_ms: u64,
    /// Publish each alert on NATS at `<prefix>.<tenant>.alerts` (default true; they are in
    /// PostgreSQL's `alerts` table either way).
    #[serde(default = "default_true")]
    pub publish_alerts: bool,
    /// Run the detection engine (the `[detect]` rules) across every source's stored events
    /// (default true; one collector at a time, see `crate::detect`).
    #[serde(default = "default_true")]
    pub detect: bool,
    /// After a restart or a takeover, the detector replays at most this much of the rules'
    /// lookback to rebuild windows and sequences (default 3600 s).
    #[serde(default = "default_detect_replay_secs")]
    pub detect_replay_secs: u64,
}

impl std::fmt::Debug for CollectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorConfig")
            .field("nats_url", &self.nats_url)
            .field("prefix", &self.prefix)
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("postgres", &redact_pg(&self.postgres_url))
            .field("schema", &self.schema)
            .field("trusted_keys", &self.trusted_keys.len())
            .field("batch_size", &self.batch_size)
            .field("hold_secs", &self.hold_secs)
            .field("gap_alert_secs", &self.gap_alert_secs)
            .field("silence_secs", &self.silence_secs)
            .finish()
    }
}

impl CollectorConfig {
    /// Check what can be checked without connecting.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        if !is_token(&self.prefix) {
            return bad(format!(
                "[collector] prefix = {:?} must be one NATS subject token",
                self.prefix
            ));
        }
        if !is_token(&self.stream) || !is_token(&self.consumer) {
            return bad(
                "[collector] stream and consumer must be plain names (letters, digits, `-`, `_`)"
                    .into(),
            );
        }
        if !self
            .schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || self.schema.is_empty()
            || self.schema.len() > 60
        {
            return bad(format!(
                "[collector] schema = {:?}: use lower-case letters, digits and `_`",
                self.schema
            ));
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return bad("[collector] batch_size must be 1..=10000".into());
        }
        for (key, v) in [
            ("hold_secs", self.hold_secs),
            ("gap_alert_secs", self.gap_alert_secs),
            ("silence_secs", self.silence_secs),
        ] {
            if v == 0 || v > 30 * 86_400 {
                return bad(format!("[collector] {key} = {v}: use 1..=2592000 seconds"));
            }
        }
        if !(10..=600_000).contains(&self.sweep_interval_ms) {
            return bad("[collector] sweep_interval_ms must be 10..=600000".into());
        }
        if self.trusted_keys.is_empty() {
            return bad("[collector] trusted_keys is empty: list the taps' checkpoint keys (`<data_dir>/keys/checkpoint.vkey`), or no checkpoint can be verified".into());
        }
        self.verifiers()?;
        Ok(())
    }

    /// The trusted checkpoint keys.
    pub fn verifiers(&self) -> Result<Vec<mcptrail_integrity::NoteVerifier>, Error> {
        self.trusted_keys
            .iter()
            .map(|k| {
                mcptrail_integrity::NoteVerifier::from_vkey(k.trim())
                    .map_err(|e| Error::Config(format!("[collector] trusted_keys: {e}")))
            })
            .collect()
    }

    /// The sweep's time limits.
    pub fn limits(&self) -> crate::sweep::Limits {
        crate::sweep::Limits {
            hold_secs: self.hold_secs,
            gap_alert_secs: self.gap_alert_secs,
            silence_secs: self.silence_secs,
        }
    }

    /// `<prefix>.*.*.events` and `<prefix>.*.*.checkpoints`.
    pub fn subjects(&self) -> Vec<String> {
        vec![
            format!("{}.*.*.events", self.prefix),
            format!("{}.*.*.checkpoints", self.prefix),
        ]
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A PostgreSQL URL without its password (for messages).
pub fn redact_pg(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.rsplit_once('@') {
            let user = auth.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}@{host}");
        }
        return url.to_string();
    }
    url.split_whitespace()
        .filter(|kv| !kv.starts_with("password="))
        .collect::<Vec<_>>()
        .join(" ")
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_prefix() -> String {
    "mcptrail".into()
}
fn default_stream() -> String {
    "MCPTRAIL_FLEET".into()
}
fn default_consumer() -> String {
    "mcptrail-collector".into()
}
fn default_schema() -> String {
    "mcptrail".into()
}
fn default_batch_size() -> usize {
    1000
}
fn default_hold_secs() -> u64 {
    60
}
fn default_gap_alert_secs() -> u64 {
    60
}
fn default_silence_secs() -> u64 {
    120
}
fn default_sweep_interval_ms() -> u64 {
    1000
}
fn default_true() -> bool {
    true
}
fn default_detect_replay_secs() -> u64 {
    3600
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_do_not_show() {
        assert_eq!(
            redact_pg("postgres://u:secret@127.0.0.1:5432/test"),
            "postgres://u@127.0.0.1:5432/test"
        );
        assert_eq!(
            redact_pg("host=127.0.0.1 password=secret user=u"),
            "host=127.0.0.1 user=u"
        );
    }
}
