//! Elasticsearch / OpenSearch `_bulk` in Elastic Common Schema.
//!
//! ```text
//! POST <url>/_bulk?filter_path=errors,items.*.status,items.*.error
//! Content-Type: application/x-ndjson
//! Authorization: ApiKey <key> | Basic <user:password>
//!
//! {"create":{"_index":"mcptrail","_id":"<event_id>"}}
//! {"@timestamp":…,"event":{"id":"<event_id>",…},…,"mcptrail":{<the event>}}
//! …
//! → 200 {"errors":false,"items":[{"create":{"status":201}},…]}
//! ```
//!
//! `_id` = `event_id` makes a repeated batch harmless: with `action = "create"` (the default)
//! a document that is already there answers 409 `version_conflict_engine_exception`, which
//! counts as delivered; with `action = "index"` it is overwritten by the same document.
//! Per-item answers decide the batch: any 429 (`es_rejected_execution_exception`) fails it as
//! `throttled` (the whole batch is sent again; the items that went in become 409s); any other
//! item error fails it as `rejected`, naming the first failing event and Elasticsearch's error
//! type and reason. HTTP 429/503 are `throttled`, 401/403 `rejected` (credentials), other 5xx
//! `transport`. New signed checkpoints go into the same request as documents with
//! `_id` = `checkpoint-<origin hash>-<size>` and `event.dataset = mcptrail.checkpoint`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::checkpoints::{CheckpointProgress, NOTES_PER_BATCH};
use crate::error::{SendError, SendErrorKind};
use crate::format::ecs::{write_ecs_document, ECS_VERSION};
use crate::secret::{Secret, SecretSource};
use crate::sink::http;
use crate::sink::http::{check_http_url, redact_url};
use crate::sink::Sink;
use crate::tail::ShipRecord;

/// Bulk action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// `create`: a document with this `_id` that exists already is left alone (409, counted
    /// as delivered). Required for data streams.
    #[default]
    Create,
    /// `index`: create or replace.
    Index,
}

/// `type = "elasticsearch"` (also OpenSearch). `Debug` shows the URL without user info.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// Base URL of the cluster (`https://es.example.com:9200`).
    pub url: String,
    /// Index, alias or data stream (default `mcptrail`).
    #[serde(default = "default_index")]
    pub index: String,
    /// `create` (default) or `index`.
    #[serde(default)]
    pub action: BulkAction,
    /// API key (the base64 `id:key` credential Elasticsearch returns as `encoded`), sent as
    /// `Authorization: ApiKey …`.
    pub api_key: Option<SecretSource>,
    /// User for basic authentication.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<SecretSource>,
    /// Ship signed checkpoints as documents (default true).
    #[serde(default = "yes")]
    pub checkpoints: bool,
    /// PEM file of CAs to trust for https (default: the Mozilla roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Request timeout in seconds (default 30).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_index() -> String {
    "mcptrail".into()
}
fn default_timeout_secs() -> u64 {
    30
}

impl std::fmt::Debug for ElasticsearchSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("index", &self.index)
            .field("action", &self.action)
            .field("api_key", &self.api_key)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("checkpoints", &self.checkpoints)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl ElasticsearchSinkConfig {
    /// Checks beyond the types (called by the config parser).
    pub(crate) fn validate(&self) -> Result<(), String> {
        check_http_url("url", &self.url)?;
        if self.password.is_some() != self.user.is_some() {
            return Err("`user` and `password` go together".into());
        }
        if self.api_key.is_some() && self.user.is_some() {
            return Err("use either `api_key` or `user` + `password`, not both".into());
        }
        if self.index.is_empty()
            || self.index.starts_with(['_', '-', '+'])
            || self
                .index
                .chars()
                .any(|c| c.is_ascii_uppercase() || "\\/*?\"<>| ,#:".contains(c))
        {
            return Err(format!(
                "index `{}` is not a valid Elasticsearch index name (lowercase, no \\ / * ? \" < > | space , # :, not starting with _ - +)",
                self.index
            ));
        }
        Ok(())
    }
}

/// The Elasticsearch sink.
pub struct ElasticsearchSink {
    name: String,
    cfg: ElasticsearchSinkConfig,
    auth: Option<Secret>,
    agent: ureq::Agent,
    bulk_url: String,
    data_dir: Option<PathBuf>,
    body: Vec<u8>,
    /// The `_id` of every document of the request being built, in order.
    ids: Vec<String>,
}

impl ElasticsearchSink {
    /// A sink for `cfg`, loading its credentials now.
    pub fn new(name: &str, cfg: ElasticsearchSinkConfig) -> Result<Self, String> {
        let auth = match (&cfg.api_key, &cfg.user, &cfg.password) {
            (Some(key), _, _) => {
                let k = key.load().map_err(|e| format!("api_key: {e}"))?;
                let mut v = b"ApiKey ".to_vec();
                v.extend_from_slice(k.expose());
                Some(Secret::new(v))
            }
            (None, Some(user), Some(pw)) => {
                use base64::Engine;
                let p = pw.load().map_err(|e| format!("password: {e}"))?;
                let mut plain = format!("{user}:").into_bytes();
                plain.extend_from_slice(p.expose());
                let v = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(&plain)
                );
                plain.iter_mut().for_each(|b| *b = 0);
                Some(Secret::new(v.into_bytes()))
            }
            _ => None,
        };
        let agent = http::agent(cfg.tls_ca_file.as_deref(), cfg.timeout_secs)?;
        Ok(ElasticsearchSink {
            name: name.to_string(),
            bulk_url: format!(
                "{}/_bulk?filter_path=errors,items.*.status,items.*.error",
                cfg.url.trim_end_matches('/')
            ),
            auth,
            agent,
            cfg,
            data_dir: None,
            body: Vec::with_capacity(1 << 20),
            ids: Vec::new(),
        })
    }

    fn action_line(&mut self, body: &mut Vec<u8>, id: &str) {
        let action = match self.cfg.action {
            BulkAction::Create => "create",
            BulkAction::Index => "index",
        };
        serde_json::to_writer(
            &mut *body,
            &serde_json::json!({ action: { "_index": self.cfg.index, "_id": id } }),
        )
        .expect("JSON serialises");
        body.push(b'\n');
        self.ids.push(id.to_string());
    }

    fn build_body(&mut self, batch: &[ShipRecord]) -> Result<Option<u64>, SendError> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        self.ids.clear();
        for rec in batch {
            let v = crate::format::parse(rec)?;
            self.action_line(&mut body, &rec.event_id);
            write_ecs_document(&v, &rec.line, &mut body)
                .map_err(|e| SendError::new(SendErrorKind::Encode, e.to_string()))?;
            body.push(b'\n');
        }
        let mut newest = None;
        if let (Some(dir), true) = (self.data_dir.clone(), self.cfg.checkpoints) {
            let after = CheckpointProgress::new(&dir, &self.name).load();
            let notes = crate::checkpoints::pending(&dir, after, NOTES_PER_BATCH)
                .map_err(|e| SendError::new(SendErrorKind::Encode, e))?;
            for n in notes {
                let id = n.record_id();
                self.action_line(&mut body, &id);
                let doc = serde_json::json!({
                    "@timestamp": n.written,
                    "ecs": { "version": ECS_VERSION },
                    "message": format!("signed checkpoint of {} records", n.size),
                    "event": {
                        "id": id, "kind": "state", "category": ["host"], "type": ["info"],
                        "action": "checkpoint", "dataset": "mcptrail.checkpoint",
                        "module": "mcptrail", "provider": "mcptrail",
                    },
                    "mcptrail": n.to_json(),
                });
                serde_json::to_writer(&mut body, &doc).expect("JSON serialises");
                body.push(b'\n');
                newest = Some(n.size);
            }
        }
        self.body = body;
        Ok(newest)
    }

    fn post(
        &self,
        url: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>, Option<std::time::Duration>), SendError> {
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/x-ndjson");
        let auth = self
            .auth
            .as_ref()
            .map(|a| String::from_utf8_lossy(a.expose()).into_owned());
        if let Some(a) = &auth {
            req = req.header("Authorization", a.as_str());
        }
        let resp = req.send(body).map_err(|e| http::transport_error(url, &e))?;
        let status = resp.status().as_u16();
        let retry = http::retry_after(&resp);
        let answer = http::read_body(url, resp, 64 << 20)?;
        Ok((status, answer, retry))
    }

    fn http_error(&self, status: u16, body: &[u8]) -> SendError {
        let url = redact_url(&self.cfg.url);
        let reason = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let e = v.get("error")?;
                Some(match (e.pointer("/type"), e.pointer("/reason")) {
                    (Some(t), Some(r)) => format!("{} {}", t.as_str()?, r.as_str()?),
                    _ => e.to_string(),
                })
            })
            .unwrap_or_else(|| http::excerpt(body));
        let hint = match status {
            401 => "; check api_key or user/password",
            403 => "; the credentials may not write to this index (needs create_doc or index privileges)",
            404 => "; check url (the cluster root, without /_bulk)",
            413 => "; the request is too large: lower batch_max_bytes",
            _ => "",
        };
        SendError::new(
            http::status_kind(status),
            format!(
                "{url} answered HTTP {status}: {}{hint}",
                http::excerpt(reason.as_bytes())
            ),
        )
    }

    /// Judge the items of a bulk answer.
    fn check_items(&self, answer: &[u8], batch: &[ShipRecord]) -> Result<(), SendError> {
        #[derive(Deserialize)]
        struct Bulk {
            errors: bool,
            #[serde(default)]
            items: Vec<std::collections::HashMap<String, Item>>,
        }
        #[derive(Deserialize)]
        struct Item {
            status: u16,
            error: Option<serde_json::Value>,
        }
        let url = redact_url(&self.cfg.url);
        let bulk: Bulk = serde_json::from_slice(answer).map_err(|e| {
            SendError::new(
                SendErrorKind::Transport,
                format!(
                    "{url}: the answer is not a bulk response ({e}): {}",
                    http::excerpt(answer)
                ),
            )
        })?;
        if !bulk.errors {
            if bulk.items.len() != self.ids.len() {
                return Err(SendError::new(
                    SendErrorKind::Transport,
                    format!(
                        "{url}: {} items answered for {} documents sent",
                        bulk.items.len(),
                        self.ids.len()
                    ),
                ));
            }
            return Ok(());
        }
        let mut throttled = 0usize;
        let mut first_error: Option<String> = None;
        for (i, item) in bulk.items.iter().enumerate() {
            let Some((action, it)) = item.iter().next() else {
                continue;
            };
            match it.status {
                200..=299 => {}
                409 if action == "create" => {} // already there: a repeated batch
                429 => throttled += 1,
                status => {
                    if first_error.is_none() {
                        let what = match batch.get(i) {
                            Some(r) => format!("event seq {} ({})", r.seq, r.event_id),
                            None => {
                                format!("document {}", self.ids.get(i).map_or("?", String::as_str))
                            }
                        };
                        let err = it.error.as_ref().map_or_else(String::new, |e| {
                            match (e.pointer("/type"), e.pointer("/reason")) {
                                (Some(t), Some(r)) => format!(
                                    ": {} {}",
                                    t.as_str().unwrap_or(""),
                                    r.as_str().unwrap_or("")
                                ),
                                _ => format!(": {e}"),
                            }
                        });
                        first_error = Some(format!(
                            "{what} was refused with status {status}{}",
                            http::excerpt(err.as_bytes())
                        ));
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(SendError::new(
                SendErrorKind::Rejected,
                format!("{url}: {e}; the batch is retried with backoff and raises a sink_failing alert until the index accepts it"),
            ));
        }
        if throttled > 0 {
            return Err(SendError::new(
                SendErrorKind::Throttled,
                format!(
                    "{url}: {throttled} of {} documents were rejected with 429 (the cluster is overloaded); the batch is sent again",
                    bulk.items.len()
                ),
            ));
        }
        Ok(())
    }
}

impl Sink for ElasticsearchSink {
    fn send(&mut self, batch: &[ShipRecord]) -> Result<(), SendError> {
        let newest_checkpoint = self.build_body(batch)?;
        if self.body.is_empty() {
            return Ok(());
        }
        let (status, answer, retry) = self.post(&self.bulk_url, &self.body)?;
        if status != 200 {
            let mut e = self.http_error(status, &answer);
            e.retry_after = retry;
            return Err(e);
        }
        self.check_items(&answer, batch)?;
        if let (Some(size), Some(dir)) = (newest_checkpoint, &self.data_dir) {
            CheckpointProgress::new(dir, &self.name)
                .store(size)
                .map_err(|e| SendError::new(SendErrorKind::Transport, e))?;
        }
        Ok(())
    }

    fn probe(&mut self) -> Result<String, SendError> {
        // The cluster root answers name and version, with the same credentials.
        let url = format!("{}/", self.cfg.url.trim_end_matches('/'));
        let mut req = self.agent.get(&url);
        let auth = self
            .auth
            .as_ref()
            .map(|a| String::from_utf8_lossy(a.expose()).into_owned());
        if let Some(a) = &auth {
            req = req.header("Authorization", a.as_str());
        }
        let resp = req.call().map_err(|e| http::transport_error(&url, &e))?;
        let status = resp.status().as_u16();
        let body = http::read_body(&url, resp, 1 << 20)?;
        if status != 200 {
            return Err(self.http_error(status, &body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(format!(
            "{} answered: {} {}",
            redact_url(&self.cfg.url),
            v.pointer("/version/distribution")
                .and_then(|d| d.as_str())
                .unwrap_or("elasticsearch"),
            v.pointer("/version/number")
                .and_then(|d| d.as_str())
                .unwrap_or("(version unknown)")
        ))
    }

    fn attach_ledger(&mut self, data_dir: &Path) {
        self.data_dir = Some(data_dir.to_path_buf());
    }
}
