//! S3-compatible object storage with Object Lock (WORM): batches, sealed ledger segments and
//! signed checkpoints, each object locked in compliance mode until its retention ends.
//!
//! ```text
//! PUT /<bucket>/<prefix>events/<first seq>-<last seq>.jsonl     one object per batch
//! PUT /<bucket>/<prefix>segments/seg-<first seq>.jsonl           each sealed segment, verbatim
//! PUT /<bucket>/<prefix>checkpoints/cp-<size>.note               each signed checkpoint
//! PUT /<bucket>/<prefix>tombstones/ts-<first seq>-<state>.note   each retention tombstone
//!     x-amz-object-lock-mode: COMPLIANCE
//!     x-amz-object-lock-retain-until-date: <now + retention>     (label retention, see below)
//!     Content-MD5 + x-amz-checksum-sha256                        (S3 requires a digest for
//!                                                                 Object Lock uploads)
//!     Authorization: AWS4-HMAC-SHA256 …                          (SigV4, [`super::sigv4`])
//! ```
//!
//! Path-style addressing (`<endpoint>/<bucket>/<key>`), so any S3-compatible endpoint works
//! (MinIO, Ceph, moto, AWS with a regional endpoint). Names are derived from seq ranges and
//! tree sizes, so a repeated PUT writes the same key with the same bytes (a new version under
//! Object Lock; never a different object). Retention: an event's is the largest
//! `label_retention_days` of its labels, else `retention_days`; a batch object keeps the
//! largest of its events'; segments and checkpoints hold every label, so they keep the
//! largest configured value.
//!
//! The bucket is also a checkpoint anchor ([`S3Anchor`]): `mcptrail verify` lists and reads
//! `<prefix>checkpoints/` and checks the local log against every note there, which reveals a
//! truncated, rolled-back or forked local ledger.
//!
//! Progress is kept in `sinks/<name>.checkpoints` (the largest checkpoint uploaded) and
//! `sinks/<name>.segments` (the first seq of the newest sealed segment uploaded).
//!
//! Sealed segments go up only when the sink has no filter (a segment holds every event, and a
//! filter must not be bypassed); the config parser refuses `segments = true` with a filter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::checkpoints::{CheckpointProgress, NOTES_PER_BATCH};
use crate::config::PayloadFormat;
use crate::error::{SendError, SendErrorKind};
use crate::format::encode_into;
use crate::secret::SecretSource;
use crate::sink::http;
use crate::sink::http::{check_http_url, redact_url};
use crate::sink::sigv4::{self, Credentials};
use crate::sink::Sink;
use crate::tail::ShipRecord;

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody, not even the account root, can delete or shorten it before retain-until.
    #[default]
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
    /// No Object Lock headers (a bucket without Object Lock; not WORM).
    Off,
}

/// `type = "s3"`. `Debug` shows no credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// Endpoint URL (`https://s3.eu-central-1.amazonaws.com`, `http://127.0.0.1:9000`).
    pub endpoint: String,
    /// Bucket (created with Object Lock enabled; mcptrail never creates buckets).
    pub bucket: String,
    /// Region for signing (default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Key prefix (default `mcptrail/<host name>/`): one per ledger.
    pub prefix: Option<String>,
    /// Access key id (default `{ env = "AWS_ACCESS_KEY_ID" }`).
    #[serde(default = "default_access_key")]
    pub access_key_id: SecretSource,
    /// Secret access key (default `{ env = "AWS_SECRET_ACCESS_KEY" }`).
    #[serde(default = "default_secret_key")]
    pub secret_access_key: SecretSource,
    /// Session token of temporary credentials.
    pub session_token: Option<SecretSource>,
    /// `compliance` (default), `governance` or `off`.
    #[serde(default)]
    pub lock_mode: LockMode,
    /// Retention of events without a label listed in `label_retention_days` (default 365).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Retention per label, e.g. `{ pci = 365, pii = 90 }`.
    #[serde(default)]
    pub label_retention_days: BTreeMap<String, u32>,
    /// Upload sealed ledger segments (default true; needs a sink without filters).
    #[serde(default = "yes")]
    pub segments: bool,
    /// Upload signed checkpoints and check against them in `verify` (default true).
    #[serde(default = "yes")]
    pub checkpoints: bool,
    /// `json` (default: the ledger lines) or `ocsf`, one event per line.
    #[serde(default)]
    pub format: PayloadFormat,
    /// PEM file of CAs to trust for https (default: the Mozilla roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Request timeout in seconds (default 60).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_access_key() -> SecretSource {
    SecretSource::Env {
        env: "AWS_ACCESS_KEY_ID".into(),
    }
}
fn default_secret_key() -> SecretSource {
    SecretSource::Env {
        env: "AWS_SECRET_ACCESS_KEY".into(),
    }
}
fn default_retention_days() -> u32 {
    365
}
fn default_timeout_secs() -> u64 {
    60
}

impl S3SinkConfig {
    /// Checks beyond the types (called by the config parser); `filtered`: the sink has
    /// `kinds`, `labels` or `exclude_labels`.
    pub(crate) fn validate(&self, filtered: bool) -> Result<(), String> {
        check_http_url("endpoint", &self.endpoint)?;
        if self.bucket.len() < 3
            || self.bucket.len() > 63
            || !self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "bucket `{}` is not a valid bucket name (3 to 63 of a-z, 0-9, `-`, `.`)",
                self.bucket
            ));
        }
        if self.format == PayloadFormat::Cef {
            return Err("format `cef` is for syslog; S3 objects carry `json` or `ocsf`".into());
        }
        if self.lock_mode != LockMode::Off
            && (self.retention_days == 0 || self.label_retention_days.values().any(|d| *d == 0))
        {
            return Err("retention days must be at least 1 under Object Lock".into());
        }
        if self.segments && filtered {
            return Err("segments = true uploads whole ledger segments, which would bypass kinds/labels/exclude_labels: set segments = false or drop the filter".into());
        }
        Ok(())
    }

    /// The key prefix in effect (ends with `/` unless empty).
    pub fn effective_prefix(&self) -> String {
        let p = self
            .prefix
            .clone()
            .unwrap_or_else(|| format!("mcptrail/{}/", http::hostname()));
        if p.is_empty() || p.ends_with('/') {
            p
        } else {
            format!("{p}/")
        }
    }

    /// Days to keep an event with `labels`.
    pub fn retention_for(&self, labels: &[String]) -> u32 {
        labels
            .iter()
            .filter_map(|l| self.label_retention_days.get(l))
            .copied()
            .max()
            .unwrap_or(self.retention_days)
    }

    /// Days to keep what holds every label (segments, checkpoints).
    pub fn longest_retention(&self) -> u32 {
        self.label_retention_days
            .values()
            .copied()
            .chain([self.retention_days])
            .max()
            .unwrap_or(self.retention_days)
    }
}

/// What an S3 request answered.
#[derive(Debug)]
pub struct S3Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl S3Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal S3 client: SigV4-signed path-style requests.
#[derive(Clone)]
pub struct S3Client {
    endpoint: String,
    host: String,
    bucket: String,
    region: String,
    creds: Credentials,
    agent: ureq::Agent,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3Client({}/{})",
            redact_url(&self.endpoint),
            self.bucket
        )
    }
}

impl S3Client {
    /// A client for `bucket` at `endpoint`.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        creds: Credentials,
        ca_file: Option<&Path>,
        timeout_secs: u64,
    ) -> Result<Self, String> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, r)| r)
            .split('/')
            .next()
            .unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h).to_string();
        if endpoint
            .split_once("://")
            .is_some_and(|(_, r)| r.contains('/'))
        {
            return Err(format!(
                "endpoint `{}` must be the service root (no path): buckets are addressed path-style",
                redact_url(&endpoint)
            ));
        }
        Ok(S3Client {
            agent: http::agent(ca_file, timeout_secs)?,
            endpoint,
            host,
            bucket: bucket.to_string(),
            region: region.to_string(),
            creds,
        })
    }

    /// The client of an S3 sink's configuration (loading its credentials now).
    pub fn from_config(cfg: &S3SinkConfig) -> Result<Self, String> {
        client(cfg)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket` plus the endpoint, for messages.
    pub fn label(&self) -> String {
        format!("s3://{} at {}", self.bucket, redact_url(&self.endpoint))
    }

    /// A signed request for `key` (empty: the bucket itself), with `query` and `headers`.
    pub fn request(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<S3Response, SendError> {
        let path = if key.is_empty() {
            format!("/{}", sigv4::uri_encode(&self.bucket, false))
        } else {
            format!(
                "/{}/{}",
                sigv4::uri_encode(&self.bucket, false),
                sigv4::uri_encode(key, true)
            )
        };
        let payload = sigv4::sha256_hex(body);
        let now = time::OffsetDateTime::now_utc();
        let amz_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let signed = sigv4::sign(
            &sigv4::Request {
                method,
                host: &self.host,
                path: &path,
                query,
                headers,
                payload_sha256: &payload,
            },
            &self.creds,
            &self.region,
            &amz_date,
        );
        let q = sigv4::canonical_query(query);
        let url = if q.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{q}", self.endpoint)
        };
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        for (k, v) in &signed {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(body.to_vec()).map_err(|e| {
            SendError::new(SendErrorKind::Encode, format!("{}: {e}", redact_url(&url)))
        })?;
        let resp = self
            .agent
            .run(req)
            .map_err(|e| http::transport_error(&url, &e))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = http::read_body(&url, resp, 256 << 20)?;
        Ok(S3Response {
            status,
            headers,
            body,
        })
    }

    /// The error of a non-2xx answer: S3's `<Code>` and `<Message>`, mapped to a kind.
    pub fn error(&self, what: &str, r: &S3Response) -> SendError {
        let code = xml_values(&r.body, "Code").into_iter().next();
        let message = xml_values(&r.body, "Message").into_iter().next();
        let hint = match code.as_deref() {
            Some("SignatureDoesNotMatch") => "; check secret_access_key and region",
            Some("InvalidAccessKeyId") => "; check access_key_id",
            Some("AccessDenied") => "; the credentials may not do this (or an Object Lock retention forbids it)",
            Some("NoSuchBucket") => "; create the bucket with Object Lock enabled",
            Some("InvalidRequest") if message.as_deref().is_some_and(|m| m.contains("Object Lock")) => {
                "; the bucket has no Object Lock: create it with Object Lock enabled, or set lock_mode = \"off\""
            }
            _ => "",
        };
        let kind = match (r.status, code.as_deref()) {
            (_, Some("SlowDown")) | (429 | 503, _) => SendErrorKind::Throttled,
            (500..=599, _) => SendErrorKind::Transport,
            _ => SendErrorKind::Rejected,
        };
        SendError::new(
            kind,
            format!(
                "{} {what}: HTTP {} {} {}{hint}",
                self.label(),
                r.status,
                code.unwrap_or_default(),
                http::excerpt(message.unwrap_or_default().as_bytes())
            ),
        )
    }

    /// PUT `body` at `key` under Object Lock for `days` (`mode` Off: no lock headers).
    pub fn put_locked(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
        mode: LockMode,
        days: u32,
    ) -> Result<(), SendError> {
        use base64::Engine;
        use md5::Digest as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut headers = vec![
            ("Content-Type", content_type.to_string()),
            ("Content-MD5", b64.encode(md5::Md5::digest(body))),
            (
                "x-amz-checksum-sha256",
                b64.encode(sha2::Sha256::digest(body)),
            ),
        ];
        let mode_name = match mode {
            LockMode::Compliance => Some("COMPLIANCE"),
            LockMode::Governance => Some("GOVERNANCE"),
            LockMode::Off => None,
        };
        if let Some(m) = mode_name {
            let until =
                time::OffsetDateTime::now_utc() + Duration::from_secs(u64::from(days) * 86_400);
            headers.push(("x-amz-object-lock-mode", m.to_string()));
            headers.push((
                "x-amz-object-lock-retain-until-date",
                format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                    until.year(),
                    u8::from(until.month()),
                    until.day(),
                    until.hour(),
                    until.minute(),
                    until.second()
                ),
            ));
        }
        let r = self.request("PUT", key, &[], &headers, body)?;
        if (200..300).contains(&r.status) {
            Ok(())
        } else {
            Err(self.error(&format!("PUT {key}"), &r))
        }
    }

    /// GET the object at `key`.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, SendError> {
        let r = self.request("GET", key, &[], &[], b"")?;
        if r.status == 200 {
            Ok(r.body)
        } else {
            Err(self.error(&format!("GET {key}"), &r))
        }
    }

    /// Every key under `prefix` (ListObjectsV2, all pages).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, SendError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let r = self.request("GET", "", &query, &[], b"")?;
            if r.status != 200 {
                return Err(self.error(&format!("LIST {prefix}"), &r));
            }
            keys.extend(xml_values(&r.body, "Key"));
            let truncated = xml_values(&r.body, "IsTruncated")
                .first()
                .is_some_and(|v| v == "true");
            token = xml_values(&r.body, "NextContinuationToken")
                .into_iter()
                .next();
            if !truncated || token.is_none() {
                return Ok(keys);
            }
        }
    }
}

/// The text of every `<tag>…</tag>` element in an S3 XML answer, entities decoded.
pub fn xml_values(xml: &[u8], tag: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(xml);
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

fn credentials(cfg: &S3SinkConfig) -> Result<Credentials, String> {
    let id = cfg
        .access_key_id
        .load()
        .map_err(|e| format!("access_key_id: {e}"))?;
    Ok(Credentials {
        access_key_id: String::from_utf8(id.expose().to_vec())
            .map_err(|_| "access_key_id is not UTF-8".to_string())?,
        secret_access_key: cfg
            .secret_access_key
            .load()
            .map_err(|e| format!("secret_access_key: {e}"))?,
        session_token: cfg
            .session_token
            .as_ref()
            .map(|s| s.load().map_err(|e| format!("session_token: {e}")))
            .transpose()?,
    })
}

fn client(cfg: &S3SinkConfig) -> Result<S3Client, String> {
    S3Client::new(
        &cfg.endpoint,
        &cfg.bucket,
        &cfg.region,
        credentials(cfg)?,
        cfg.tls_ca_file.as_deref(),
        cfg.timeout_secs,
    )
}

/// The S3 sink.
pub struct S3Sink {
    name: String,
    cfg: S3SinkConfig,
    prefix: String,
    client: S3Client,
    data_dir: Option<PathBuf>,
    body: Vec<u8>,
}

impl S3Sink {
    /// A sink for `cfg`, loading its credentials now.
    pub fn new(name: &str, cfg: S3SinkConfig) -> Result<Self, String> {
        Ok(S3Sink {
            name: name.to_string(),
            prefix: cfg.effective_prefix(),
            client: client(&cfg)?,
            cfg,
            data_dir: None,
            body: Vec::with_capacity(1 << 20),
        })
    }

    /// The key of the batch object for `first..=last`.
    pub fn batch_key(prefix: &str, first: u64, last: u64) -> String {
        format!("{prefix}events/{first:020}-{last:020}.jsonl")
    }

    fn ship_checkpoints(&self, dir: &Path) -> Result<(), SendError> {
        let progress = CheckpointProgress::new(dir, &self.name);
        loop {
            let notes = crate::checkpoints::pending(dir, progress.load(), NOTES_PER_BATCH)
                .map_err(|e| SendError::new(SendErrorKind::Encode, e))?;
            let Some(last) = notes.last().map(|n| n.size) else {
                return Ok(());
            };
            for n in &notes {
                self.client.put_locked(
                    &format!("{}checkpoints/{}", self.prefix, n.file_name),
                    n.note.as_bytes(),
                    "text/plain; charset=utf-8",
                    self.cfg.lock_mode,
                    self.cfg.longest_retention(),
                )?;
            }
            progress
                .store(last)
                .map_err(|e| SendError::new(SendErrorKind::Transport, e))?;
        }
    }

    /// Upload every tombstone (retention) not uploaded yet to `<prefix>tombstones/`, under
    /// Object Lock: the evidence that a removal was lawful leaves the machine too. Progress:
    /// the names uploaded, one a line, in `sinks/<name>.tombstones`.
    fn ship_tombstones(&self, dir: &Path) -> Result<(), SendError> {
        let err = |e: String| SendError::new(SendErrorKind::Transport, e);
        let progress = crate::checkpoints::TombstoneProgress::new(dir, &self.name);
        for (name, note) in progress.pending(dir).map_err(err)? {
            self.client.put_locked(
                &format!("{}tombstones/{name}", self.prefix),
                note.as_bytes(),
                "text/plain; charset=utf-8",
                self.cfg.lock_mode,
                self.cfg.longest_retention(),
            )?;
            progress.store([name.as_str()]).map_err(err)?;
        }
        Ok(())
    }

    fn ship_segments(&self, dir: &Path) -> Result<(), SendError> {
        // Progress: the first seq of the newest sealed segment uploaded.
        let progress = CheckpointProgress::named(dir, &format!("{}.segments", self.name));
        let done = progress.load();
        let ledger_dir = dir.join(mcptrail_ledger::LEDGER_DIR);
        let segments = mcptrail_ledger::list_segments(&ledger_dir)
            .map_err(|e| SendError::new(SendErrorKind::Transport, e.to_string()))?;
        for seg in segments.iter().filter(|s| s.sealed && s.first_seq > done) {
            let bytes = std::fs::read(&seg.path).map_err(|e| {
                SendError::new(
                    SendErrorKind::Transport,
                    format!("{}: {e}", seg.path.display()),
                )
            })?;
            let file = seg
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.client.put_locked(
                &format!("{}segments/{file}", self.prefix),
                &bytes,
                "application/x-ndjson",
                self.cfg.lock_mode,
                self.cfg.longest_retention(),
            )?;
            progress
                .store(seg.first_seq)
                .map_err(|e| SendError::new(SendErrorKind::Transport, e))?;
        }
        Ok(())
    }
}

impl Sink for S3Sink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
            let mut body = std::mem::take(&mut self.body);
            body.clear();
            let mut encoded = Ok(());
            for rec in batch {
                if let Err(e) = encode_into(self.cfg.format, rec, &mut body) {
                    encoded = Err(e);
                    break;
                }
                body.push(b'\n');
            }
            let days = batch
                .iter()
                .map(|r| self.cfg.retention_for(&r.labels))
                .max()
                .unwrap_or(self.cfg.retention_days);
            let key = Self::batch_key(&self.prefix, first.seq, last.seq);
            let put = encoded.and_then(|()| {
                self.client.put_locked(
                    &key,
                    &body,
                    "application/x-ndjson",
                    self.cfg.lock_mode,
                    days,
                )
            });
            self.body = body;
            put?;
        }
        if let Some(dir) = self.data_dir.clone() {
            if self.cfg.checkpoints {
                self.ship_checkpoints(&dir)?;
                self.ship_tombstones(&dir)?;
            }
            if self.cfg.segments {
                self.ship_segments(&dir)?;
            }
        }
        Ok(())
    }

    fn probe(&mut self) -> Result<String, SendError> {
        let r = self
            .client
            .request("GET", "", &[("object-lock", "")], &[], b"")?;
        if r.status != 200 {
            return Err(self.client.error("GET ?object-lock", &r));
        }
        let enabled = xml_values(&r.body, "ObjectLockEnabled")
            .first()
            .is_some_and(|v| v == "Enabled");
        if self.cfg.lock_mode != LockMode::Off && !enabled {
            return Err(SendError::new(
                SendErrorKind::Rejected,
                format!(
                    "{} does not have Object Lock enabled: uploads would not be WORM (recreate the bucket with Object Lock, or set lock_mode = \"off\")",
                    self.client.label()
                ),
            ));
        }
        Ok(format!(
            "{} answered with the credentials; Object Lock {}",
            self.client.label(),
            if enabled { "enabled" } else { "off" }
        ))
    }

    fn attach_ledger(&mut self, data_dir: &Path) {
        self.data_dir = Some(data_dir.to_path_buf());
    }
}

/// The checkpoints an S3 sink uploaded, as a [`mcptrail_ledger::CheckpointAnchor`]: `publish`
/// PUTs a note under Object Lock, `fetch_all` lists and reads `<prefix>checkpoints/`.
#[derive(Debug, Clone)]
pub struct S3Anchor {
    client: S3Client,
    prefix: String,
    /// The sink's prefix (tombstones are under `<base>tombstones/`).
    base: String,
    mode: LockMode,
    days: u32,
}

impl S3Anchor {
    /// The anchor of an S3 sink's configuration (loading its credentials).
    pub fn new(cfg: &S3SinkConfig) -> Result<Self, String> {
        Ok(S3Anchor {
            client: client(cfg)?,
            prefix: format!("{}checkpoints/", cfg.effective_prefix()),
            base: cfg.effective_prefix(),
            mode: cfg.lock_mode,
            days: cfg.longest_retention(),
        })
    }
}

impl mcptrail_ledger::CheckpointAnchor for S3Anchor {
    fn label(&self) -> String {
        format!("{}/{}", self.client.label(), self.prefix)
    }

    fn publish(&self, size: u64, note: &str) -> Result<(), mcptrail_ledger::LedgerError> {
        self.client
            .put_locked(
                &format!(
                    "{}{}",
                    self.prefix,
                    mcptrail_ledger::checkpoint_file_name(size)
                ),
                note.as_bytes(),
                "text/plain; charset=utf-8",
                self.mode,
                self.days,
            )
            .map_err(|e| mcptrail_ledger::LedgerError::Anchor {
                anchor: self.label(),
                reason: e.to_string(),
            })
    }

    fn fetch_all(&self) -> Result<Vec<(String, String)>, mcptrail_ledger::LedgerError> {
        let err = |e: SendError| mcptrail_ledger::LedgerError::Anchor {
            anchor: self.label(),
            reason: e.to_string(),
        };
        let mut out = Vec::new();
        for key in self.client.list(&self.prefix).map_err(err)? {
            if !key.ends_with(".note") {
                continue;
            }
            let body = self.client.get(&key).map_err(err)?;
            out.push((
                format!("s3://{}/{key}", self.client.bucket),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        Ok(out)
    }

    fn fetch_tombstones(&self) -> Result<Vec<(String, String)>, mcptrail_ledger::LedgerError> {
        let err = |e: SendError| mcptrail_ledger::LedgerError::Anchor {
            anchor: self.label(),
            reason: e.to_string(),
        };
        let mut out = Vec::new();
        for key in self
            .client
            .list(&format!("{}tombstones/", self.base))
            .map_err(err)?
        {
            if !key.ends_with(".note") {
                continue;
            }
            let body = self.client.get(&key).map_err(err)?;
            out.push((
                format!("s3://{}/{key}", self.client.bucket),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> S3SinkConfig {
        toml::from_str(
            "endpoint = \"http://127.0.0.1:9000\"\nbucket = \"audit\"\nprefix = \"p\"\nlabel_retention_days = { pci = 400, pii = 30 }\nretention_days = 90\n",
        )
        .unwrap()
    }

    #[test]
    fn retention_follows_labels() {
        let c = cfg();
        assert_eq!(c.retention_for(&[]), 90);
        assert_eq!(c.retention_for(&["pii".into()]), 30);
        assert_eq!(c.retention_for(&["pii".into(), "pci".into()]), 400);
        assert_eq!(c.retention_for(&["other".into()]), 90);
        assert_eq!(c.longest_retention(), 400);
        assert_eq!(c.effective_prefix(), "p/");
        assert!(c.validate(false).is_ok());
        assert!(c.validate(true).unwrap_err().contains("segments = false"));
    }

    #[test]
    fn batch_keys_sort_by_seq_and_xml_values_decode() {
        assert_eq!(
            S3Sink::batch_key("p/", 1, 500),
            "p/events/00000000000000000001-00000000000000000500.jsonl"
        );
        let xml = b"<ListBucketResult><Contents><Key>a&amp;b</Key></Contents><Contents><Key>c</Key></Contents><IsTruncated>false</IsTruncated></ListBucketResult>";
        assert_eq!(xml_values(xml, "Key"), vec!["a&b", "c"]);
        assert_eq!(xml_values(xml, "IsTruncated"), vec!["false"]);
    }
}
