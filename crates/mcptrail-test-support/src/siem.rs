//! Receivers for the SIEM and WORM sink tests: a protocol-faithful Splunk HEC, a
//! protocol-faithful Elasticsearch `_bulk` endpoint (neither can be installed here), and a
//! private moto S3 server with signature checking and an Object Lock bucket (the real
//! `moto[server]` from PyPI, in `<peers>/moto-venv`).
//!
//! The HTTP receivers check what the real ones check (authentication, channel, body shape,
//! acknowledgements, `_id`s) and answer with the real error shapes — HEC's
//! `{"text":…,"code":…}` (codes from Splunk's documentation: 2/3 token missing/malformed,
//! 4 invalid token, 6 invalid data format with `invalid-event-number`, 7 incorrect index,
//! 9 server busy, 10/11 channel, 12/13 event field) and Elasticsearch's bulk items with
//! per-item `status` and `error.type`/`error.reason`. Failures can be injected, and both can
//! be stopped and started again on the same port.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};

use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sinks::free_loopback_port;

type Handler =
    Arc<dyn Fn(&mut tiny_http::Request) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

/// A tiny_http server on a fixed loopback port that can be stopped and resumed.
struct Listener {
    port: u16,
    handler: Handler,
    server: Option<(Arc<tiny_http::Server>, std::thread::JoinHandle<()>)>,
}

impl Listener {
    fn new(handler: Handler) -> Self {
        let mut l = Listener {
            port: free_loopback_port(),
            handler,
            server: None,
        };
        l.resume();
        l
    }

    fn stop(&mut self) {
        if let Some((server, thread)) = self.server.take() {
            server.unblock();
            let _ = thread.join();
        }
    }

    fn resume(&mut self) {
        assert!(self.server.is_none(), "already running");
        let start = Instant::now();
        let server = loop {
            match tiny_http::Server::http(("127.0.0.1", self.port)) {
                Ok(s) => break Arc::new(s),
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("receiver cannot listen on {}: {e}", self.port),
            }
        };
        let (s, handler) = (server.clone(), self.handler.clone());
        let thread = std::thread::spawn(move || {
            while let Ok(mut req) = s.recv() {
                let (status, headers, body) = handler(&mut req);
                let mut resp = tiny_http::Response::from_data(body).with_status_code(status);
                for (k, v) in headers {
                    resp.add_header(
                        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap(),
                    );
                }
                let _ = req.respond(resp);
            }
        });
        self.server = Some((server, thread));
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header<'a>(req: &'a tiny_http::Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn json_headers() -> Vec<(String, String)> {
    vec![(
        "Content-Type".into(),
        "application/json; charset=UTF-8".into(),
    )]
}

// ---------------------------------------------------------------------------------------
// Splunk HEC

/// A failure a [`HecReceiver`] answers the next event POST with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HecFailure {
    /// 503 `{"text":"Server is busy","code":9}`.
    Busy,
    /// 429 with `Retry-After: 1` and no HEC body (what a load balancer in front answers).
    TooManyRequests,
    /// 400 `{"text":"Invalid data format","code":6,"invalid-event-number":N}` for event N.
    InvalidDataFormat(usize),
    /// 500 `{"text":"Internal server error","code":8}`.
    Internal,
}

/// What a [`HecReceiver`] has seen.
#[derive(Debug, Default)]
pub struct HecLog {
    /// `event.event_id` of every event of every accepted request, in arrival order
    /// (duplicates included).
    pub event_ids: Vec<String>,
    /// Tree sizes of the `mcptrail:checkpoint` events received.
    pub checkpoint_sizes: Vec<u64>,
    /// Accepted event requests.
    pub accepted: u64,
    /// Requests refused for authentication (401/403).
    pub auth_failures: u64,
    /// Requests refused for their body or channel (400).
    pub bad_requests: u64,
    /// Ack queries answered.
    pub ack_queries: u64,
    /// Requests that came gzip-compressed (`Content-Encoding: gzip`).
    pub gzip_requests: u64,
    /// Failures to inject into the next event POSTs, front first.
    pub fail_next: Vec<HecFailure>,
    /// Answer each new ack id `false` this many times before `true` (indexing takes time).
    pub ack_after_polls: u32,
    /// Never acknowledge (an indexer that lost the batch after HEC took it).
    pub never_ack: bool,
    /// Every `(host, source, sourcetype, index)` seen.
    pub envelopes: HashSet<(String, String, String, String)>,
    channels: HashMap<String, (u64, BTreeMap<u64, u32>)>,
}

/// A Splunk HTTP Event Collector on 127.0.0.1 with indexer acknowledgement enabled for its
/// token, accepting only `indexes` (when not empty).
pub struct HecReceiver {
    listener: Listener,
    /// What it has seen (kept across restarts).
    pub log: Arc<Mutex<HecLog>>,
}

impl HecReceiver {
    /// Start one accepting `token` and the `indexes` listed (any index when empty).
    pub fn start(token: &str, indexes: &[&str]) -> Self {
        let log: Arc<Mutex<HecLog>> = Arc::default();
        let (token, indexes, l) = (
            token.to_string(),
            indexes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            log.clone(),
        );
        let handler: Handler = Arc::new(move |req| hec_handle(req, &token, &indexes, &l));
        HecReceiver {
            listener: Listener::new(handler),
            log,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listener.port)
    }

    /// Stop listening (connection refused).
    pub fn stop(&mut self) {
        self.listener.stop();
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        self.listener.resume();
    }
}

fn hec_answer(status: u16, body: Value) -> (u16, Vec<(String, String)>, Vec<u8>) {
    (status, json_headers(), body.to_string().into_bytes())
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hec_handle(
    req: &mut tiny_http::Request,
    token: &str,
    indexes: &[String],
    log: &Mutex<HecLog>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut body = Vec::new();
    if req.as_reader().read_to_end(&mut body).is_err() {
        return hec_answer(400, json!({"text": "No data", "code": 5}));
    }
    // HEC takes gzip request bodies; a body that does not decompress is bad data.
    let gzipped = match header(req, "Content-Encoding").map(str::to_ascii_lowercase) {
        None => false,
        Some(e) if e == "gzip" => {
            let mut plain = Vec::new();
            let mut gz = flate2::read::GzDecoder::new(&body[..]);
            if std::io::Read::read_to_end(&mut gz, &mut plain).is_err() {
                return hec_answer(400, json!({"text": "Invalid data format", "code": 6}));
            }
            body = plain;
            true
        }
        Some(_) => return hec_answer(400, json!({"text": "Invalid data format", "code": 6})),
    };
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    if path == "/services/collector/health" {
        return hec_answer(200, json!({"text": "HEC is healthy", "code": 17}));
    }
    let mut log = log.lock().unwrap();
    if gzipped {
        log.gzip_requests += 1;
    }
    // Authentication first, as splunkd does.
    match header(req, "Authorization") {
        None => {
            log.auth_failures += 1;
            return hec_answer(401, json!({"text": "Token is required", "code": 2}));
        }
        Some(a) => match a.strip_prefix("Splunk ") {
            None => {
                log.auth_failures += 1;
                return hec_answer(401, json!({"text": "Invalid authorization", "code": 3}));
            }
            Some(t) if t != token => {
                log.auth_failures += 1;
                return hec_answer(403, json!({"text": "Invalid token", "code": 4}));
            }
            Some(_) => {}
        },
    }
    let channel = header(req, "X-Splunk-Request-Channel")
        .map(str::to_string)
        .or_else(|| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("channel=").map(str::to_string))
        });
    let Some(channel) = channel else {
        log.bad_requests += 1;
        return hec_answer(400, json!({"text": "Data channel is missing", "code": 10}));
    };
    if !is_guid(&channel) {
        log.bad_requests += 1;
        return hec_answer(400, json!({"text": "Invalid data channel", "code": 11}));
    }
    match path {
        "/services/collector/ack" => {
            log.ack_queries += 1;
            let Some(ids) = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["acks"].as_array().cloned())
            else {
                return hec_answer(400, json!({"text": "Invalid data format", "code": 6}));
            };
            let never = log.never_ack;
            let (_, pending) = log.channels.entry(channel).or_default();
            let mut acks = serde_json::Map::new();
            for id in ids.iter().filter_map(Value::as_u64) {
                let done = match pending.get_mut(&id) {
                    Some(left) if *left == 0 && !never => {
                        pending.remove(&id);
                        true
                    }
                    Some(left) => {
                        *left = left.saturating_sub(1);
                        false
                    }
                    None => false,
                };
                acks.insert(id.to_string(), json!(done));
            }
            hec_answer(200, json!({ "acks": acks }))
        }
        "/services/collector/event" | "/services/collector" => {
            if !log.fail_next.is_empty() {
                return match log.fail_next.remove(0) {
                    HecFailure::Busy => {
                        hec_answer(503, json!({"text": "Server is busy", "code": 9}))
                    }
                    HecFailure::TooManyRequests => (
                        429,
                        vec![("Retry-After".into(), "1".into())],
                        b"Too Many Requests".to_vec(),
                    ),
                    HecFailure::InvalidDataFormat(n) => hec_answer(
                        400,
                        json!({"text": "Invalid data format", "code": 6, "invalid-event-number": n}),
                    ),
                    HecFailure::Internal => {
                        hec_answer(500, json!({"text": "Internal server error", "code": 8}))
                    }
                };
            }
            // Concatenated JSON objects, nothing else.
            let mut events = Vec::new();
            for (i, item) in serde_json::Deserializer::from_slice(&body)
                .into_iter::<Value>()
                .enumerate()
            {
                let Ok(v) = item else {
                    log.bad_requests += 1;
                    return hec_answer(
                        400,
                        json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i}),
                    );
                };
                let obj = v.as_object();
                let Some(event) = obj.and_then(|o| o.get("event")) else {
                    log.bad_requests += 1;
                    return hec_answer(
                        400,
                        json!({"text": "Event field is required", "code": 12, "invalid-event-number": i}),
                    );
                };
                if event.is_null() || event.as_str() == Some("") {
                    log.bad_requests += 1;
                    return hec_answer(
                        400,
                        json!({"text": "Event field cannot be blank", "code": 13, "invalid-event-number": i}),
                    );
                }
                let bad_time = v.get("time").is_some_and(|t| {
                    !(t.is_number() || t.as_str().is_some_and(|s| s.parse::<f64>().is_ok()))
                });
                let unknown_key = obj.unwrap().keys().any(|k| {
                    ![
                        "time",
                        "host",
                        "source",
                        "sourcetype",
                        "index",
                        "event",
                        "fields",
                    ]
                    .contains(&k.as_str())
                });
                if bad_time || unknown_key {
                    log.bad_requests += 1;
                    return hec_answer(
                        400,
                        json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i}),
                    );
                }
                let index = v["index"].as_str().unwrap_or("main").to_string();
                if !indexes.is_empty() && !indexes.contains(&index) {
                    log.bad_requests += 1;
                    // splunkd reports this one 1-based (a known quirk).
                    return hec_answer(
                        400,
                        json!({"text": "Incorrect index", "code": 7, "invalid-event-number": i + 1}),
                    );
                }
                events.push(v);
            }
            if events.is_empty() {
                log.bad_requests += 1;
                return hec_answer(400, json!({"text": "No data", "code": 5}));
            }
            for v in &events {
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                log.envelopes
                    .insert((s("host"), s("source"), s("sourcetype"), s("index")));
                if v["sourcetype"] == "mcptrail:checkpoint" {
                    if let Some(size) = v["event"]["size"].as_u64() {
                        log.checkpoint_sizes.push(size);
                    }
                } else if let Some(id) = v["event"]["event_id"]
                    .as_str()
                    .or_else(|| v.pointer("/event/metadata/uid").and_then(Value::as_str))
                {
                    log.event_ids.push(id.to_string());
                }
            }
            log.accepted += 1;
            let polls = log.ack_after_polls;
            let (next, pending) = log.channels.entry(channel).or_default();
            let id = *next;
            *next += 1;
            pending.insert(id, polls);
            hec_answer(200, json!({"text": "Success", "code": 0, "ackId": id}))
        }
        _ => hec_answer(
            404,
            json!({"text": "The requested URL was not found on this server.", "code": 404}),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Elasticsearch

/// What an [`ElasticReceiver`] has stored and seen.
#[derive(Debug, Default)]
pub struct ElasticLog {
    /// Documents by `(index, _id)`.
    pub docs: BTreeMap<(String, String), Value>,
    /// Every `_id` of every document created, in order (each once: a repeat is a 409).
    pub created: Vec<String>,
    /// Items answered 409 (already there).
    pub conflicts: u64,
    /// Bulk requests answered.
    pub requests: u64,
    /// Requests refused for authentication.
    pub auth_failures: u64,
    /// Whole-request HTTP failures to inject next (429 or 503), front first.
    pub fail_next: Vec<u16>,
    /// In the next request, answer this many of the new documents with item status 429.
    pub reject_items_429: usize,
    /// Documents with this `_id` are refused with a 400 `mapper_parsing_exception`.
    pub poison_id: Option<String>,
}

/// An Elasticsearch node on 127.0.0.1 serving `/` and `/_bulk`, requiring
/// `Authorization: ApiKey <api_key>`.
pub struct ElasticReceiver {
    listener: Listener,
    /// What it has stored and seen (kept across restarts).
    pub log: Arc<Mutex<ElasticLog>>,
}

impl ElasticReceiver {
    /// Start one accepting the API key `api_key` (the encoded credential).
    pub fn start(api_key: &str) -> Self {
        let log: Arc<Mutex<ElasticLog>> = Arc::default();
        let (key, l) = (api_key.to_string(), log.clone());
        let handler: Handler = Arc::new(move |req| es_handle(req, &key, &l));
        ElasticReceiver {
            listener: Listener::new(handler),
            log,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listener.port)
    }

    /// Stop listening.
    pub fn stop(&mut self) {
        self.listener.stop();
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        self.listener.resume();
    }
}

fn es_error(status: u16, kind: &str, reason: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let e = json!({"type": kind, "reason": reason});
    (
        status,
        json_headers(),
        json!({"error": {"root_cause": [e.clone()], "type": kind, "reason": reason}, "status": status})
            .to_string()
            .into_bytes(),
    )
}

fn es_handle(
    req: &mut tiny_http::Request,
    api_key: &str,
    log: &Mutex<ElasticLog>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut body = Vec::new();
    let _ = req.as_reader().read_to_end(&mut body);
    let url = req.url().to_string();
    let path = url.split('?').next().unwrap_or("").to_string();
    let mut log = log.lock().unwrap();
    if header(req, "Authorization") != Some(&format!("ApiKey {api_key}")) {
        log.auth_failures += 1;
        let reason = if header(req, "Authorization").is_some() {
            "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
        } else {
            "missing authentication credentials for REST request [/_bulk]"
        };
        return es_error(401, "security_exception", reason);
    }
    if path == "/" && req.method() == &tiny_http::Method::Get {
        return (
            200,
            json_headers(),
            json!({"name": "node-1", "cluster_name": "mcptrail-test", "version": {"number": "8.15.0", "build_flavor": "default"}, "tagline": "You Know, for Search"})
                .to_string()
                .into_bytes(),
        );
    }
    if !(path == "/_bulk" || path.ends_with("/_bulk")) || req.method() != &tiny_http::Method::Post {
        return es_error(
            405,
            "illegal_argument_exception",
            &format!("Incorrect HTTP method for uri [{path}]"),
        );
    }
    let ct = header(req, "Content-Type").unwrap_or("");
    if !(ct.starts_with("application/x-ndjson") || ct.starts_with("application/json")) {
        return (
            406,
            json_headers(),
            json!({"error": format!("Content-Type header [{ct}] is not supported"), "status": 406})
                .to_string()
                .into_bytes(),
        );
    }
    if !log.fail_next.is_empty() {
        let status = log.fail_next.remove(0);
        return if status == 429 {
            es_error(429, "es_rejected_execution_exception", "rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1, max_coordinating_and_primary_bytes=0]")
        } else {
            es_error(
                status,
                "unavailable_shards_exception",
                "[mcptrail][0] primary shard is not active",
            )
        };
    }
    if body.last() != Some(&b'\n') {
        return es_error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    log.requests += 1;
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if !lines.len().is_multiple_of(2) {
        return es_error(
            400,
            "illegal_argument_exception",
            "Malformed action/metadata line: the last action has no document",
        );
    }
    let mut items = Vec::new();
    let mut errors = false;
    let mut throttle_left = std::mem::take(&mut log.reject_items_429);
    for pair in lines.chunks(2) {
        let Ok(action) = serde_json::from_slice::<Value>(pair[0]) else {
            return es_error(
                400,
                "x_content_parse_exception",
                "[1:2] Unexpected character",
            );
        };
        let Some((op, meta)) = action.as_object().and_then(|o| o.iter().next()) else {
            return es_error(
                400,
                "illegal_argument_exception",
                "Malformed action/metadata line",
            );
        };
        if op != "create" && op != "index" {
            return es_error(
                400,
                "illegal_argument_exception",
                &format!("Malformed action/metadata line [1], expected one of [create, delete, index, update] but found [{op}]"),
            );
        }
        let index = meta["_index"].as_str().unwrap_or("").to_string();
        let id = meta["_id"].as_str().unwrap_or("").to_string();
        let doc: Option<Value> = serde_json::from_slice(pair[1]).ok();
        let item_error = |status: u16, kind: &str, reason: String| {
            json!({ op.as_str(): {"_index": index, "_id": id, "status": status,
                "error": {"type": kind, "reason": reason, "index": index}}})
        };
        let Some(doc) = doc else {
            errors = true;
            items.push(item_error(
                400,
                "document_parsing_exception",
                "[1:1] failed to parse".into(),
            ));
            continue;
        };
        if index.is_empty() || id.is_empty() || doc.get("@timestamp").is_none() {
            errors = true;
            items.push(item_error(
                400,
                "document_parsing_exception",
                "a document needs _index, _id and @timestamp".into(),
            ));
            continue;
        }
        if doc.pointer("/event/id").and_then(Value::as_str) != Some(id.as_str()) {
            errors = true;
            items.push(item_error(
                400,
                "illegal_argument_exception",
                format!("_id [{id}] is not event.id"),
            ));
            continue;
        }
        if log.poison_id.as_deref() == Some(id.as_str()) {
            errors = true;
            items.push(item_error(
                400,
                "document_parsing_exception",
                "[1:87] failed to parse field [mcptrail.detail] of type [long] in document".into(),
            ));
            continue;
        }
        let key = (index.clone(), id.clone());
        if op == "create" && log.docs.contains_key(&key) {
            errors = true;
            log.conflicts += 1;
            items.push(item_error(
                409,
                "version_conflict_engine_exception",
                format!("[{id}]: version conflict, document already exists (current version [1])"),
            ));
            continue;
        }
        if throttle_left > 0 {
            throttle_left -= 1;
            errors = true;
            items.push(item_error(
                429,
                "es_rejected_execution_exception",
                "rejected execution of primary operation [shard_detail=[mcptrail][0]]".into(),
            ));
            continue;
        }
        log.docs.insert(key, doc);
        log.created.push(id.clone());
        items.push(
            json!({ op.as_str(): {"_index": index, "_id": id, "_version": 1, "result": "created",
            "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": log.created.len() - 1,
            "_primary_term": 1, "status": 201}}),
        );
    }
    (
        200,
        json_headers(),
        json!({"took": 3, "errors": errors, "items": items})
            .to_string()
            .into_bytes(),
    )
}

// ---------------------------------------------------------------------------------------
// moto S3

/// A private moto S3 server (`<peers>/moto-venv`, see `.ci/peers/moto/requirements.txt`)
/// on a loopback port, checking SigV4 signatures, with a bucket created with Object Lock
/// enabled and an IAM user allowed `s3:*`. Stopped on drop.
pub struct MotoS3 {
    child: Child,
    stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The IAM user's access key id.
    pub access_key_id: String,
    /// Its secret access key.
    pub secret_access_key: String,
}

/// The Python of the moto virtualenv, or a panic saying how to install it.
pub fn moto_python() -> std::path::PathBuf {
    let p = crate::peers_dir().join("moto-venv/bin/python");
    assert!(
        p.exists(),
        "moto not found at {}: install the test peers with .ci/install-peers.sh (tests never skip)",
        p.display()
    );
    p
}

impl MotoS3 {
    /// Start one with bucket `bucket` (waits until it is set up, at most 60 s).
    pub fn start(bucket: &str) -> Self {
        let dir = tempfile::tempdir().expect("moto temp dir");
        let port = free_loopback_port();
        let script = crate::workspace_root().join("crates/mcptrail-test-support/peers/moto_s3.py");
        let mut child = Command::new(moto_python())
            .arg(&script)
            .arg(port.to_string())
            .arg(bucket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("moto.stderr")).expect("stderr file"))
            .spawn()
            .expect("start moto");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let stderr = || std::fs::read_to_string(dir.path().join("moto.stderr")).unwrap_or_default();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "moto did not start on 127.0.0.1:{port}: {line} {}",
                stderr()
            )
        });
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        MotoS3 {
            stdin: child.stdin.take(),
            child,
            _dir: dir,
            endpoint: s("endpoint"),
            bucket: s("bucket"),
            access_key_id: s("access_key_id"),
            secret_access_key: s("secret_access_key"),
        }
    }
}

impl MotoS3 {
    /// The moto server's process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MotoS3 {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
