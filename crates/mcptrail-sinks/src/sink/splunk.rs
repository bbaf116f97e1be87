//! Splunk HTTP Event Collector with indexer acknowledgement.
//!
//! ```text
//! POST <url>/services/collector/event
//! Authorization: Splunk <token>
//! X-Splunk-Request-Channel: <GUID, one per sink run>
//!
//! {"time":1764108000.123456,"host":"h","source":"mcptrail","sourcetype":"mcptrail:event","index":"audit","event":{…}}{"time":…}…
//! → 200 {"text":"Success","code":0,"ackId":7}
//!
//! POST <url>/services/collector/ack?channel=<GUID>      (until true, or ack_timeout_secs)
//! {"acks":[7]}  → 200 {"acks":{"7":true}}
//! ```
//!
//! A batch is one request of concatenated event objects; `event` is the ledger line itself
//! (format `json`, no re-serialisation) or its OCSF object. With `ack = true` (the default)
//! `send` returns `Ok` only once Splunk says the batch is indexed; an ack that does not come
//! within `ack_timeout_secs` fails the batch (`transport`) and it is sent again — HEC has no
//! dedupe, so a search dedupes by `event.event_id` (`| dedup event.event_id`).
//!
//! Answers map to the framework's kinds from HEC's `code`: 1/4 token disabled or invalid and
//! 2/3 missing or malformed authorization are `rejected` (fix the token); 5, 6, 12, 13 and 15
//! (no data, invalid data format, event field missing or blank, bad indexed fields) are
//! `rejected` naming the event by `invalid-event-number`; 7 incorrect index and 10/11/14
//! channel and ack settings are `rejected` with what to change; 9 server busy and HTTP 429/503
//! are `throttled` (`Retry-After` honoured); 8 and other 5xx are `transport`. A rejected batch
//! is retried with backoff like any other (nothing is skipped), and after
//! `alert_failing_secs` the shipper appends a `sink_failing` alert naming the reason.
//!
//! New signed checkpoints ride along in the same request as `sourcetype = mcptrail:checkpoint`
//! events (see [`crate::checkpoints`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::checkpoints::{CheckpointProgress, NOTES_PER_BATCH};
use crate::config::PayloadFormat;
use crate::error::{SendError, SendErrorKind};
use crate::format::encode_into;
use crate::secret::{Secret, SecretSource};
use crate::sink::http;
use crate::sink::http::{check_http_url, redact_url};
use crate::sink::Sink;
use crate::tail::ShipRecord;

/// `type = "splunk_hec"`. `Debug` shows the URL without user info or query.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecSinkConfig {
    /// Base URL of the collector (`https://splunk.example.com:8088`); the event and ack paths
    /// are appended.
    pub url: String,
    /// The HEC token: `{ env = "VAR" }` or `{ file = "/path" }`.
    pub token: SecretSource,
    /// Index to write to (default: the token's default index).
    pub index: Option<String>,
    /// `source` of every event (default `mcptrail`).
    #[serde(default = "default_source")]
    pub source: String,
    /// `sourcetype` of the events (default `mcptrail:event`; checkpoints are
    /// `mcptrail:checkpoint`).
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    /// `host` of every event (default: this machine's host name).
    pub host: Option<String>,
    /// Wait for indexer acknowledgement (default true; the token must have it enabled).
    #[serde(default = "yes")]
    pub ack: bool,
    /// Longest wait for the acknowledgement of a batch, in seconds (default 60).
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// Pause between acknowledgement polls, in milliseconds (default 200).
    #[serde(default = "default_ack_poll_ms")]
    pub ack_poll_ms: u64,
    /// `json` (default: the ledger line as the event) or `ocsf`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Ship signed checkpoints as `mcptrail:checkpoint` events (default true).
    #[serde(default = "yes")]
    pub checkpoints: bool,
    /// `none` (default) or `gzip`: event requests go gzip-compressed with
    /// `Content-Encoding: gzip` (HEC decompresses them; acknowledgement queries stay plain).
    #[serde(default)]
    pub compression: crate::sink::otlp::Compression,
    /// PEM file of CAs to trust for https (default: the Mozilla roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Request timeout in seconds (default 10).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_source() -> String {
    "mcptrail".into()
}
fn default_sourcetype() -> String {
    "mcptrail:event".into()
}
fn default_ack_timeout_secs() -> u64 {
    60
}
fn default_ack_poll_ms() -> u64 {
    200
}
fn default_timeout_secs() -> u64 {
    10
}

impl std::fmt::Debug for SplunkHecSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplunkHecSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token)
            .field("index", &self.index)
            .field("source", &self.source)
            .field("sourcetype", &self.sourcetype)
            .field("host", &self.host)
            .field("ack", &self.ack)
            .field("ack_timeout_secs", &self.ack_timeout_secs)
            .field("format", &self.format)
            .field("checkpoints", &self.checkpoints)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl SplunkHecSinkConfig {
    /// Checks beyond the types (called by the config parser).
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_http_url("url", &self.url)?;
        if self.format == PayloadFormat::Cef {
            return Err("format `cef` is for syslog; HEC carries `json` or `ocsf`".into());
        }
        if self.ack_timeout_secs == 0 || self.ack_poll_ms == 0 {
            return Err("ack_timeout_secs and ack_poll_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// HEC's answer to an event POST (and most errors).
#[derive(Debug, Deserialize)]
struct HecAnswer {
    #[serde(default)]
    text: String,
    code: Option<i64>,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event_number: Option<usize>,
}

/// The Splunk HEC sink.
pub struct SplunkHecSink {
    name: String,
    cfg: SplunkHecSinkConfig,
    token: Secret,
    agent: ureq::Agent,
    channel: String,
    host: String,
    event_url: String,
    ack_url: String,
    data_dir: Option<PathBuf>,
    body: Vec<u8>,
}

impl SplunkHecSink {
    /// A sink for `cfg`, loading its token now.
    pub fn new(name: &str, cfg: SplunkHecSinkConfig) -> Result<Self, String> {
        let token = cfg.token.load().map_err(|e| format!("HEC token: {e}"))?;
        let agent = http::agent(cfg.tls_ca_file.as_deref(), cfg.timeout_secs)?;
        let base = cfg.url.trim_end_matches('/');
        let channel = http::random_uuid();
        Ok(SplunkHecSink {
            name: name.to_string(),
            host: cfg.host.clone().unwrap_or_else(http::hostname),
            event_url: format!("{base}/services/collector/event"),
            ack_url: format!("{base}/services/collector/ack?channel={channel}"),
            channel,
            token,
            agent,
            cfg,
            data_dir: None,
            body: Vec::with_capacity(1 << 20),
        })
    }

    fn auth(&self) -> String {
        format!("Splunk {}", String::from_utf8_lossy(self.token.expose()))
    }

    /// One envelope: `{"time":…,"host":…,"source":…,"sourcetype":…,"index":…,"event":`
    /// (the caller appends the event and `}`).
    fn envelope_head(&self, out: &mut Vec<u8>, time: Option<&str>, sourcetype: &str) {
        out.push(b'{');
        if let Some(t) = time {
            out.extend_from_slice(b"\"time\":");
            out.extend_from_slice(t.as_bytes());
            out.push(b',');
        }
        for (key, value) in [
            ("host", Some(self.host.as_str())),
            ("source", Some(self.cfg.source.as_str())),
            ("sourcetype", Some(sourcetype)),
            ("index", self.cfg.index.as_deref()),
        ] {
            if let Some(v) = value {
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
                serde_json::to_writer(&mut *out, v).expect("strings serialise");
                out.push(b',');
            }
        }
        out.extend_from_slice(b"\"event\":");
    }

    /// The request body for `batch` plus pending checkpoints; returns the largest checkpoint
    /// size included.
    fn build_body(&mut self, batch: &[ShipRecord]) -> Result<Option<u64>, SendError> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let mut result = Ok(None);
        for rec in batch {
            let time = http::epoch_seconds(&rec.time);
            self.envelope_head(&mut body, time.as_deref(), &self.cfg.sourcetype);
            if let Err(e) = encode_into(self.cfg.format, rec, &mut body) {
                result = Err(e);
                break;
            }
            body.push(b'}');
        }
        if result.is_ok() {
            result = self.append_checkpoints(&mut body);
        }
        self.body = body;
        result
    }

    fn append_checkpoints(&self, body: &mut Vec<u8>) -> Result<Option<u64>, SendError> {
        let (Some(dir), true) = (&self.data_dir, self.cfg.checkpoints) else {
            return Ok(None);
        };
        let after = CheckpointProgress::new(dir, &self.name).load();
        let notes = crate::checkpoints::pending(dir, after, NOTES_PER_BATCH)
            .map_err(|e| SendError::new(SendErrorKind::Encode, e))?;
        let mut newest = None;
        for n in notes {
            let time = http::epoch_seconds(&n.written);
            self.envelope_head(body, time.as_deref(), "mcptrail:checkpoint");
            serde_json::to_writer(&mut *body, &n.to_json()).expect("JSON serialises");
            body.push(b'}');
            newest = Some(n.size);
        }
        Ok(newest)
    }

    /// POST `body` to `url`; the parsed HEC answer of a 200, or the mapped error.
    fn post(&self, url: &str, body: &[u8], batch: &[ShipRecord]) -> Result<Vec<u8>, SendError> {
        self.post_encoded(url, body, batch, false)
    }

    /// [`Self::post`], the body gzip-compressed when `gzip`.
    fn post_encoded(
        &self,
        url: &str,
        body: &[u8],
        batch: &[ShipRecord],
        gzip: bool,
    ) -> Result<Vec<u8>, SendError> {
        let compressed;
        let mut req = self
            .agent
            .post(url)
            .header("Authorization", self.auth().as_str())
            .header("X-Splunk-Request-Channel", self.channel.as_str())
            .header("Content-Type", "application/json");
        let payload = if gzip {
            compressed = http::gzip(body)?;
            req = req.header("Content-Encoding", "gzip");
            &compressed[..]
        } else {
            body
        };
        let resp = req
            .send(payload)
            .map_err(|e| http::transport_error(url, &e))?;
        let status = resp.status().as_u16();
        let retry_after = http::retry_after(&resp);
        let answer = http::read_body(url, resp, 1 << 20)?;
        if status == 200 {
            return Ok(answer);
        }
        let mut e = self.hec_error(status, &answer, batch);
        e.retry_after = retry_after;
        Err(e)
    }

    fn hec_error(&self, status: u16, body: &[u8], batch: &[ShipRecord]) -> SendError {
        let url = redact_url(&self.cfg.url);
        let Ok(a) = serde_json::from_slice::<HecAnswer>(body) else {
            return SendError::new(
                http::status_kind(status),
                format!("{url} answered HTTP {status}: {}", http::excerpt(body)),
            );
        };
        let code = a.code.unwrap_or(-1);
        let which = a.invalid_event_number.map(|n| match batch.get(n) {
            Some(r) => format!(" (event {n} of the batch: seq {}, {})", r.seq, r.event_id),
            None => format!(" (event {n} of the request: a checkpoint record)"),
        });
        let hint = match code {
            1 | 4 => "; the token is disabled or unknown to HEC: check the token and its source",
            2 | 3 => "; HEC did not accept the Authorization header: check the token",
            5 | 6 | 12 | 13 | 15 => "; HEC refused the batch's data: this is retried with backoff and raises a sink_failing alert, fix the receiver or exclude the event",
            7 => "; the index does not exist or the token may not write to it: fix `index`",
            10 | 11 => "; HEC wants a valid channel (X-Splunk-Request-Channel)",
            14 => "; indexer acknowledgement is disabled for this token: enable it, or set ack = false",
            _ => "",
        };
        let kind = match (status, code) {
            (_, 9) | (429 | 503, _) => SendErrorKind::Throttled,
            (_, 8) | (500..=599, _) => SendErrorKind::Transport,
            _ => SendErrorKind::Rejected,
        };
        SendError::new(
            kind,
            format!(
                "{url} answered HTTP {status}, HEC code {code} \"{}\"{}{hint}",
                http::excerpt(a.text.as_bytes()),
                which.unwrap_or_default()
            ),
        )
    }

    /// Poll the ack endpoint until `ack_id` is indexed, or time out.
    fn wait_for_ack(&self, ack_id: u64) -> Result<(), SendError> {
        let start = Instant::now();
        let timeout = Duration::from_secs(self.cfg.ack_timeout_secs);
        let query = format!("{{\"acks\":[{ack_id}]}}");
        loop {
            let answer = self.post(&self.ack_url, query.as_bytes(), &[])?;
            #[derive(Deserialize)]
            struct Acks {
                acks: std::collections::HashMap<String, bool>,
            }
            let acks: Acks = serde_json::from_slice(&answer).map_err(|e| {
                SendError::new(
                    SendErrorKind::Transport,
                    format!(
                        "{}: the ack answer is not {{\"acks\":{{…}}}} ({e}): {}",
                        redact_url(&self.cfg.url),
                        http::excerpt(&answer)
                    ),
                )
            })?;
            if acks.acks.get(&ack_id.to_string()) == Some(&true) {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(SendError::new(
                    SendErrorKind::Transport,
                    format!(
                        "{}: ack {ack_id} was not indexed within {}s; the batch is sent again (dedupe by event.event_id)",
                        redact_url(&self.cfg.url),
                        timeout.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(self.cfg.ack_poll_ms));
        }
    }
}

impl Sink for SplunkHecSink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        let newest_checkpoint = self.build_body(batch)?;
        if self.body.is_empty() {
            return Ok(());
        }
        let gzip = self.cfg.compression == crate::sink::otlp::Compression::Gzip;
        let answer = self.post_encoded(&self.event_url, &self.body, batch, gzip)?;
        if self.cfg.ack {
            let a: HecAnswer = serde_json::from_slice(&answer).map_err(|e| {
                SendError::new(
                    SendErrorKind::Transport,
                    format!(
                        "{}: the answer is not HEC's ({e}): {}",
                        redact_url(&self.cfg.url),
                        http::excerpt(&answer)
                    ),
                )
            })?;
            let Some(ack_id) = a.ack_id else {
                return Err(SendError::new(
                    SendErrorKind::Rejected,
                    format!(
                        "{} accepted the batch without an ackId: indexer acknowledgement is off for this token; enable it or set ack = false",
                        redact_url(&self.cfg.url)
                    ),
                ));
            };
            self.wait_for_ack(ack_id)?;
        }
        if let (Some(size), Some(dir)) = (newest_checkpoint, &self.data_dir) {
            CheckpointProgress::new(dir, &self.name)
                .store(size)
                .map_err(|e| SendError::new(SendErrorKind::Transport, e))?;
        }
        Ok(())
    }

    fn probe(&mut self) -> Result<String, SendError> {
        // An ack query for an id that was never issued: checks URL, token and channel (and
        // that acknowledgement is on, when configured) without indexing anything.
        if self.cfg.ack {
            self.post(&self.ack_url, b"{\"acks\":[0]}", &[])?;
            return Ok(format!(
                "{} accepted the token and answered an acknowledgement query",
                redact_url(&self.cfg.url)
            ));
        }
        let health = format!(
            "{}/services/collector/health",
            self.cfg.url.trim_end_matches('/')
        );
        let resp = self
            .agent
            .get(&health)
            .header("Authorization", self.auth().as_str())
            .call()
            .map_err(|e| http::transport_error(&health, &e))?;
        let status = resp.status().as_u16();
        let answer = http::read_body(&health, resp, 1 << 16)?;
        if status != 200 {
            return Err(self.hec_error(status, &answer, &[]));
        }
        Ok(format!(
            "{} is healthy: {}",
            redact_url(&self.cfg.url),
            http::excerpt(&answer)
        ))
    }

    fn attach_ledger(&mut self, data_dir: &Path) {
        self.data_dir = Some(data_dir.to_path_buf());
    }
}
