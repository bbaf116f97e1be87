//! OTLP fixtures (crates/mcptrail-sinks/tests/it/otlp.rs, crates/mcptrail/tests/cli/otlp.rs):
//!
//! - [`Rotel`]: a private rotel collector (PyPI `rotel`, an OpenTelemetry collector written in
//!   Rust) listening for OTLP/gRPC and OTLP/HTTP on loopback ports — the real receiver the
//!   sink ships to. rotel cannot write what it received to a file, so its OTLP exporter
//!   forwards everything to:
//! - [`OtlpCapture`]: `peers/otlp_receiver.py`, an OTLP/HTTP receiver that decodes each
//!   request with the official `opentelemetry-proto` messages and appends it as JSON to a file
//!   the tests read. Pointed at directly, it also plays a collector's failure modes (429/503
//!   with `Retry-After`, partial success, a required auth header).
//!
//! Both come from `.ci/install-otlp-peers.sh`; a missing peer panics with how to install it.
//! Processes are killed on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::peers_dir;
use crate::sinks::free_loopback_port;

fn peer(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {}: install the OTLP test peers with `.ci/install-peers.sh` (or `.ci/install-otlp-peers.sh`)",
        path.display()
    );
    path
}

/// The rotel binary, `<peers>/bin/rotel-agent`.
pub fn rotel_bin() -> PathBuf {
    peer(peers_dir().join("bin/rotel-agent"), "rotel-agent")
}

/// The Python of the OTLP venv (with opentelemetry-proto).
pub fn otlp_python() -> PathBuf {
    peer(
        peers_dir().join("otlp-venv/bin/python"),
        "the OTLP peers' Python venv",
    )
}

fn wait_listening(port: u16, what: &str, child: &mut Child, timeout: Duration) {
    let start = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(
            start.elapsed() < timeout,
            "{what} does not listen on 127.0.0.1:{port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One decoding OTLP/HTTP receiver (see the module doc).
pub struct OtlpCapture {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
    /// The JSON Lines file of decoded requests.
    pub output: PathBuf,
}

impl OtlpCapture {
    /// Start one on a fresh port.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Start one that answers 401 unless every request carries `header` (`"Name: value"`).
    pub fn start_with(header: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("otlp capture dir");
        let output = dir.path().join("received.jsonl");
        let script =
            crate::workspace_root().join("crates/mcptrail-test-support/peers/otlp_receiver.py");
        let mut cmd = Command::new(otlp_python());
        cmd.arg(&script)
            .args(["--port", "0", "--out"])
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(h) = header {
            cmd.args(["--require-header", h]);
        }
        let mut child = cmd.spawn().expect("start otlp_receiver.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the receiver's PORT line");
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("otlp_receiver.py printed {line:?}, not PORT <n>"));
        OtlpCapture {
            child: Some(child),
            _dir: dir,
            port,
            output,
        }
    }

    /// `http://127.0.0.1:<port>`: an OTLP/HTTP base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn http(&self, method: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("reach the receiver");
        write!(
            s,
            "{method} /control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string())
    }

    /// Inject failures: e.g. `{"fail_next": [503, 429], "retry_after": 1}` or
    /// `{"reject_next": 2}` (see `otlp_receiver.py`).
    pub fn control(&self, command: &Value) {
        self.http("POST", &command.to_string());
    }

    /// Counters: requests, stored, injected, unauthorized, bad.
    pub fn counters(&self) -> Value {
        serde_json::from_str(&self.http("GET", "")).expect("counters JSON")
    }

    /// Every decoded request so far: `{"signal": ..., "request": {...}}`.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every span received, each with its resource's attributes under `"resource"` and its
    /// own attributes flattened under `"attrs"` (see [`attributes`]).
    pub fn spans(&self) -> Vec<Value> {
        self.items("traces", "resource_spans", "scope_spans", "spans")
    }

    /// Every log record received (as [`OtlpCapture::spans`]).
    pub fn log_records(&self) -> Vec<Value> {
        self.items("logs", "resource_logs", "scope_logs", "log_records")
    }

    /// Every metric received (as [`OtlpCapture::spans`]; data points keep their shape).
    pub fn metrics(&self) -> Vec<Value> {
        self.items("metrics", "resource_metrics", "scope_metrics", "metrics")
    }

    fn items(&self, signal: &str, resources: &str, scopes: &str, items: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for r in self
            .requests()
            .into_iter()
            .filter(|r| r["signal"] == signal)
        {
            for res in r["request"][resources].as_array().into_iter().flatten() {
                let resource = Value::Object(
                    attributes(&res["resource"]["attributes"])
                        .into_iter()
                        .collect(),
                );
                for scope in res[scopes].as_array().into_iter().flatten() {
                    for item in scope[items].as_array().into_iter().flatten() {
                        let mut item = item.clone();
                        item["attrs"] =
                            Value::Object(attributes(&item["attributes"]).into_iter().collect());
                        item["resource"] = resource.clone();
                        out.push(item);
                    }
                }
            }
        }
        out
    }

    /// Wait until `done` holds for this receiver, or panic after `timeout` with `what`.
    pub fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < timeout,
                "the OTLP receiver did not get {what} within {timeout:?} (counters {})",
                self.counters()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpCapture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// OTLP `KeyValue`s (as MessageToDict writes them) as a map of plain JSON values: strings,
/// numbers (`int_value` comes as a string), booleans, arrays.
pub fn attributes(list: &Value) -> BTreeMap<String, Value> {
    fn plain(v: &Value) -> Value {
        if let Some(s) = v.get("string_value") {
            return s.clone();
        }
        if let Some(i) = v.get("int_value") {
            return i
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .map_or(i.clone(), Value::from);
        }
        if let Some(b) = v.get("bool_value") {
            return b.clone();
        }
        if let Some(d) = v.get("double_value") {
            return d.clone();
        }
        if let Some(a) = v.get("array_value") {
            return Value::Array(
                a["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(plain)
                    .collect(),
            );
        }
        // An empty AnyValue, or a string_value of "" (MessageToDict drops defaults).
        Value::String(String::new())
    }
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), plain(&kv["value"]))))
        .collect()
}

/// A private rotel collector forwarding to an [`OtlpCapture`].
pub struct Rotel {
    child: Option<Child>,
    dir: tempfile::TempDir,
    downstream: String,
    /// OTLP/gRPC port.
    pub grpc_port: u16,
    /// OTLP/HTTP port.
    pub http_port: u16,
}

impl Rotel {
    /// Start one on fresh ports, exporting to `downstream`.
    pub fn start(downstream: &OtlpCapture) -> Self {
        Self::start_on(
            &downstream.url(),
            free_loopback_port(),
            free_loopback_port(),
        )
    }

    /// Start one on the given ports (e.g. again after [`Rotel::kill`]).
    pub fn start_on(downstream: &str, grpc_port: u16, http_port: u16) -> Self {
        let mut r = Rotel {
            child: None,
            dir: tempfile::tempdir().expect("rotel dir"),
            downstream: downstream.to_string(),
            grpc_port,
            http_port,
        };
        r.restart();
        r
    }

    /// Start one that discards what it receives (rotel's blackhole exporter), for benchmarks.
    pub fn start_blackhole() -> Self {
        Self::start_on("blackhole", free_loopback_port(), free_loopback_port())
    }

    /// The collector's process id (to measure its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start (again) on the same ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "rotel is running");
        let log = self.dir.path().join("rotel.log");
        let stdout = std::fs::File::create(self.dir.path().join("rotel.out")).unwrap();
        let mut cmd = Command::new(rotel_bin());
        cmd.arg("start")
            .args([
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{}", self.grpc_port),
            ])
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", self.http_port),
            ])
            .args(["--otlp-grpc-max-recv-msg-size-mib", "64"]);
        if self.downstream == "blackhole" {
            cmd.args(["--exporter", "blackhole"]);
        } else {
            cmd.args(["--exporter", "otlp"])
                .args(["--otlp-exporter-endpoint", &self.downstream])
                .args(["--otlp-exporter-protocol", "http"])
                .args(["--otlp-exporter-compression", "none"]);
        }
        let mut child = cmd
            .args(["--batch-timeout", "20ms"])
            .arg("--pid-file")
            .arg(self.dir.path().join("rotel.pid"))
            .arg("--log-file")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stdout)
            .spawn()
            .expect("start rotel-agent");
        wait_listening(
            self.grpc_port,
            "rotel (gRPC)",
            &mut child,
            Duration::from_secs(20),
        );
        wait_listening(
            self.http_port,
            "rotel (HTTP)",
            &mut child,
            Duration::from_secs(20),
        );
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// What rotel printed (for assertion messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rotel.out")).unwrap_or_default()
    }

    /// SIGKILL it (clients then get connection refused).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What [`write_mcp_session`] wrote.
#[derive(Debug, Clone, Default)]
pub struct SessionFixture {
    /// Every event id, in `seq` order.
    pub event_ids: Vec<String>,
    /// The tap session id.
    pub session_id: String,
    /// The `(trace id, parent span id)` of the caller's `traceparent` on the first tool call.
    pub caller: (String, String),
    /// Event ids of the answered requests (the requests' own ids), in order.
    pub request_ids: Vec<String>,
    /// The tools catalog hash of the session.
    pub catalog_hash: String,
}

/// The caller's `traceparent` on the first tool call of [`write_mcp_session`].
pub const CALLER_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Append one MCP session as the stdio tap records it, with `calls` tool calls: session.start;
/// initialize; tools/list with its tool.catalog; `calls` × tools/call `get-weather` (the first
/// with a caller `traceparent` in `params._meta`, every 5th a tool error, every 7th a JSON-RPC
/// -32602, arguments carrying a redacted value); prompts/get; resources/read; one request
/// that timed out (the tap's synthetic response); an alert with redactions; session.end.
pub fn write_mcp_session(data_dir: &std::path::Path, calls: usize) -> SessionFixture {
    use mcptrail_event::{
        Catalog, CatalogItem, Direction, Event, EventKind, ProcessInfo, Redaction, ResponseSummary,
        ServerInfo, SessionDetail, Status, UserIdentity,
    };
    use mcptrail_ledger::{Ledger, LedgerConfig};
    use serde_json::json;

    let session_id = mcptrail_event::new_event_id();
    let base = {
        let mut e = Event::new(EventKind::SessionStart);
        e.session_id = Some(session_id.clone());
        e.host = Some("fixture-host".into());
        e.agent_id = Some("fixture-agent".into());
        e.user_identity = Some(UserIdentity {
            principal: "u-7f3a".into(),
            source: "os".into(),
            ..Default::default()
        });
        e.process = Some(ProcessInfo {
            tap_pid: 4242,
            server_pid: Some(4243),
            tap_version: "0.1.0".into(),
        });
        e.server = Some(ServerInfo {
            name: Some("weather-server".into()),
            version: Some("1.2.3".into()),
            transport: "stdio".into(),
            command: vec!["node".into(), "weather.js".into()],
            url: None,
        });
        e.protocol_version = Some("2025-06-18".into());
        e
    };
    let event = |kind: EventKind| {
        let mut e = base.clone();
        let fresh = Event::new(kind);
        e.event_id = fresh.event_id;
        e.time = fresh.time;
        e.kind = kind;
        e
    };
    let mut fx = SessionFixture {
        session_id: session_id.clone(),
        ..Default::default()
    };
    let mut events = vec![event(EventKind::SessionStart)];
    let mut next_id = 0i64;
    // A request and its response (or `None` for a request the tap closed as timed out).
    let mut pair = |events: &mut Vec<Event>,
                    method: &str,
                    setup: &dyn Fn(&mut Event),
                    outcome: Option<(bool, Option<i64>)>,
                    traceparent: Option<(&str, &str)>| {
        next_id += 1;
        let mut req = event(EventKind::McpRequest);
        req.direction = Some(Direction::ClientToServer);
        req.method = Some(method.into());
        req.request_id = Some(json!(next_id));
        if let Some((t, p)) = traceparent {
            req.trace_id = Some(t.into());
            req.parent_span_id = Some(p.into());
        }
        setup(&mut req);
        let mut resp = event(EventKind::McpResponse);
        resp.direction = Some(Direction::ServerToClient);
        resp.method = req.method.clone();
        resp.request_id = req.request_id.clone();
        resp.request_event_id = Some(req.event_id.clone());
        resp.tool_invoked = req.tool_invoked.clone();
        resp.prompt_name = req.prompt_name.clone();
        resp.resource_uri = req.resource_uri.clone();
        resp.trace_id = req.trace_id.clone();
        resp.parent_span_id = req.parent_span_id.clone();
        resp.duration_ms = Some(12.5 + next_id as f64);
        resp.response_summary = Some(match outcome {
            Some((is_error, code)) => ResponseSummary {
                status: if is_error || code.is_some() {
                    Status::Error
                } else {
                    Status::Ok
                },
                is_error: is_error || code.is_some(),
                error_code: code,
                error_message: code.map(|_| "Unknown tool: nope".to_string()),
                size: 120,
                sha256: Some("ab".repeat(32)),
                preview: Some("Sunny, 21 °C".into()),
                content_types: vec!["text".into()],
            },
            None => ResponseSummary {
                status: Status::Timeout,
                is_error: false,
                error_code: None,
                error_message: None,
                size: 0,
                sha256: None,
                preview: None,
                content_types: vec![],
            },
        });
        if outcome.is_none() {
            resp.duration_ms = Some(60_000.0);
        }
        fx.request_ids.push(req.event_id.clone());
        events.push(req);
        events.push(resp);
    };
    pair(
        &mut events,
        "initialize",
        &|e| {
            e.parameters_used = Some(json!({"protocolVersion": "2025-06-18"}));
        },
        Some((false, None)),
        None,
    );
    pair(
        &mut events,
        "tools/list",
        &|_| {},
        Some((false, None)),
        None,
    );
    let mut catalog = event(EventKind::ToolCatalog);
    catalog.catalog = Some(Catalog {
        list: "tools".into(),
        hash: "c0ffee".repeat(10) + "c0ff",
        items: vec![CatalogItem {
            name: "get-weather".into(),
            hash: "aa".repeat(32),
        }],
        next_cursor: None,
        changed: vec![],
        added: vec![],
        removed: vec![],
    });
    fx.catalog_hash = catalog.catalog.as_ref().unwrap().hash.clone();
    events.push(catalog);
    let (trace, parent) = (
        CALLER_TRACEPARENT[3..35].to_string(),
        CALLER_TRACEPARENT[36..52].to_string(),
    );
    fx.caller = (trace.clone(), parent.clone());
    for i in 0..calls {
        let code = (i % 7 == 6).then_some(-32602);
        let tool_error = i % 5 == 4 && code.is_none();
        pair(
            &mut events,
            "tools/call",
            &|e| {
                e.tool_invoked = Some("get-weather".into());
                e.tool_schema_hash = Some("aa".repeat(32));
                e.parameters_used =
                    Some(json!({"city": "Zürich", "api_key": "[REDACTED:api_key]"}));
                e.redactions = vec![Redaction {
                    rule: "api_key".into(),
                    path: "/parameters_used/api_key".into(),
                    action: "mask".into(),
                }];
                e.labels = vec!["secret".into()];
            },
            Some((tool_error, code)),
            (i == 0).then_some((trace.as_str(), parent.as_str())),
        );
    }
    pair(
        &mut events,
        "prompts/get",
        &|e| {
            e.prompt_name = Some("summarise".into());
            e.parameters_used = Some(json!({"style": "short"}));
        },
        Some((false, None)),
        None,
    );
    pair(
        &mut events,
        "resources/read",
        &|e| {
            e.resource_uri = Some("file:///etc/motd".into());
        },
        Some((false, None)),
        None,
    );
    pair(
        &mut events,
        "tools/call",
        &|e| {
            e.tool_invoked = Some("slow-tool".into());
        },
        None,
        None,
    );
    let mut alert = event(EventKind::Alert);
    alert.detail = Some(
        json!({"rule": "secret_then_egress", "severity": "high", "summary": "a secret was read, then an unknown host called"}),
    );
    events.push(alert);
    let mut end = event(EventKind::SessionEnd);
    end.session = Some(SessionDetail {
        end_reason: Some("client_eof".into()),
        ..Default::default()
    });
    end.duration_ms = Some(90_500.0);
    events.push(end);

    let mut ledger = Ledger::open(
        data_dir,
        LedgerConfig {
            fsync: false,
            ..LedgerConfig::default()
        },
    )
    .expect("open the fixture ledger");
    ledger.append(&mut events).expect("append the session");
    fx.event_ids = events.into_iter().map(|e| e.event_id).collect();
    fx
}
