//! `mcptrail gateway` against real peers: the official Python SDK as client over Streamable
//! HTTP and the legacy HTTP+SSE transport, server-everything behind it, bearer JWTs (HS256
//! secret and an EdDSA JWKS), and a misbehaving upstream (`http_upstream.py`) for the bad
//! paths: down, slow, broken streams, malformed SSE, oversized and slow clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcptrail_event::{Direction, Event, EventKind};
use mcptrail_test_support::fetch::{fetch_through, McpAt};
use mcptrail_test_support::{python_peer, workspace_root, HttpPeer};
use serde_json::{json, Value};

use crate::support::*;

/// A running `mcptrail gateway` on free ports; SIGTERM on `stop`/drop.
struct Gateway {
    child: Option<Child>,
    addr: String,
    admin: String,
    stderr: mpsc::Receiver<String>,
}

impl Gateway {
    fn start(dir: &Path, config: &str) -> Self {
        let cfg = dir.join("mcptrail.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = mcptrail()
            .args(["--data-dir"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&cfg)
            .args([
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcptrail gateway");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the gateway did not start (config:\n{config})");
            };
            if let Some(rest) = line
                .strip_prefix("mcptrail gateway: listening on http://")
                .or_else(|| line.strip_prefix("mcptrail gateway: listening on https://"))
            {
                let (addr, admin) = rest.split_once(" (admin http://").unwrap();
                return Gateway {
                    child: Some(child),
                    addr: addr.to_string(),
                    admin: admin.trim_end_matches(')').to_string(),
                    stderr: rx,
                };
            }
        }
    }

    /// A gateway with one unauthenticated route.
    fn one_route(dir: &Path, name: &str, path: &str, upstream: &str) -> Self {
        Gateway::start(dir, &format!("[gateway]\n{}", route(name, path, upstream)))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, wait for a clean exit, return what it printed.
    fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st =
            wait_timeout(&mut child, Duration::from_secs(20)).expect("gateway exits on SIGTERM");
        let out: Vec<String> = self.stderr.try_iter().collect();
        assert!(st.success(), "gateway exited with {st:?}: {out:?}");
        out.join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn route(name: &str, path: &str, upstream: &str) -> String {
    format!("[[gateway.routes]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = \"{upstream}\"\n")
}

fn py_client(args: &[&str]) -> Value {
    let script = workspace_root().join("crates/mcptrail-test-support/peers/py_client.py");
    let out = Command::new(python_peer())
        .arg(script)
        .args(args)
        .output()
        .expect("spawn the Python client");
    assert!(
        out.status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("client summary is JSON")
}

/// One HTTP/1.1 exchange over a fresh connection (`Connection: close`).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if hdrs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    (status, hdrs, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < nl + 2 + n {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[(nl + 4 + n).min(b.len())..];
    }
    out
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn init_body(id: u32) -> Vec<u8> {
    json!({"jsonrpc":"2.0","id":id,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"gw-test","version":"1"}}}).to_string().into_bytes()
}

fn mcp_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ]
}

fn session_events<'a>(events: &'a [Event], transport: &str) -> Vec<&'a Event> {
    let sid = events
        .iter()
        .find(|e| {
            e.kind == EventKind::SessionStart
                && e.server.as_ref().is_some_and(|s| s.transport == transport)
        })
        .and_then(|e| e.session_id.clone())
        .unwrap_or_else(|| panic!("no {transport} session recorded"));
    events
        .iter()
        .filter(|e| e.session_id.as_deref() == Some(&sid))
        .collect()
}

fn verify_ok(data: &Path) {
    let (code, out, err) = run(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "verify failed:\n{out}\n{err}");
}

#[test]
fn python_sdk_over_streamable_http_streams_progress_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ev = HttpPeer::everything("streamableHttp");
    let gw = Gateway::one_route(dir.path(), "everything", "/everything", &ev.base_url());
    let summary = py_client(&[
        "--url",
        &gw.url("/everything/mcp"),
        "--progress",
        "--call",
        r#"trigger-long-running-operation={"duration":3,"steps":6}"#,
        "--call",
        r#"echo={"message":"through the gateway"}"#,
    ]);
    assert_eq!(summary["server_info"]["name"], "mcp-servers/everything");
    let long = &summary["calls"][0];
    assert_eq!(long["is_error"], false);
    let seen = long["progress_seen"].as_array().unwrap();
    assert!(seen.len() >= 5, "progress notifications: {seen:?}");
    // Streamed as sent: the first arrives long before the 3 s call ends.
    let first = seen[0]["at"].as_f64().unwrap();
    let total = long["seconds"].as_f64().unwrap();
    assert!(
        first < total / 2.0,
        "first progress at {first:.2}s of {total:.2}s: buffered?"
    );
    assert_eq!(
        summary["calls"][1]["content"][0]["text"],
        "Echo: through the gateway"
    );
    let admin = gw.admin.clone();
    let (st, _, metrics) = http(&admin, "GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(
            r#"mcptrail_gateway_requests_total{route="everything",method="POST",status="200"}"#
        ),
        "{metrics}"
    );
    assert_eq!(http(&admin, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(http(&admin, "GET", "/readyz", &[], b"").0, 200);
    gw.stop();

    let data = dir.path().join("data");
    let events = events(&data);
    let s = session_events(&events, "streamable_http");
    let start = s[0];
    assert_eq!(start.kind, EventKind::SessionStart);
    let mcp_sid = start
        .http
        .as_ref()
        .unwrap()
        .mcp_session_id
        .clone()
        .expect("Mcp-Session-Id recorded");
    let call = s
        .iter()
        .find(|e| {
            e.kind == EventKind::McpRequest
                && e.tool_invoked.as_deref() == Some("trigger-long-running-operation")
        })
        .expect("the tool call");
    assert_eq!(
        call.parameters_used,
        Some(json!({"duration": 3, "steps": 6}))
    );
    assert!(call.trace_id.as_ref().is_some_and(|t| t.len() == 32));
    assert!(call.span_id.as_ref().is_some_and(|t| t.len() == 16));
    let http_detail = call.http.as_ref().unwrap();
    assert_eq!(http_detail.route, "everything");
    assert_eq!(http_detail.method, "POST");
    assert_eq!(
        http_detail.mcp_session_id.as_deref(),
        Some(mcp_sid.as_str())
    );
    assert!(http_detail
        .client_address
        .as_ref()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let resp = s
        .iter()
        .find(|e| {
            e.kind == EventKind::McpResponse
                && e.request_event_id.as_deref() == Some(&call.event_id)
        })
        .expect("its response, paired");
    assert_eq!(resp.span_id, call.span_id);
    assert!(resp.duration_ms.unwrap() >= 2900.0);
    let progress = s
        .iter()
        .filter(|e| {
            e.method.as_deref() == Some("notifications/progress")
                && e.direction == Some(Direction::ServerToClient)
        })
        .count();
    assert!(progress >= 5, "{progress} progress notifications recorded");
    assert!(
        s.iter().all(|e| e.kind != EventKind::Malformed),
        "priming events are not messages"
    );
    let end = s.last().unwrap();
    assert_eq!(end.kind, EventKind::SessionEnd);
    assert_eq!(
        end.session.as_ref().unwrap().end_reason.as_deref(),
        Some("client_deleted")
    );
    // The gateway's own session brackets everything.
    assert!(events.iter().any(|e| e.kind == EventKind::SessionEnd
        && e.server.as_ref().is_some_and(|s| s.transport == "gateway")));
    verify_ok(&data);
}

#[test]
fn python_sdk_over_legacy_sse_is_recorded_through_the_rewritten_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ev = HttpPeer::everything("sse");
    let gw = Gateway::one_route(dir.path(), "legacy", "/legacy", &ev.base_url());
    let summary = py_client(&[
        "--sse-url",
        &gw.url("/legacy/sse"),
        "--call",
        r#"get-sum={"a":2,"b":40}"#,
        "--no-extras",
    ]);
    assert_eq!(
        summary["calls"][0]["content"][0]["text"],
        "The sum of 2 and 40 is 42."
    );
    gw.stop();
    let events = events(&dir.path().join("data"));
    let s = session_events(&events, "sse");
    let call = s
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("get-sum"))
        .unwrap();
    assert_eq!(call.parameters_used, Some(json!({"a": 2, "b": 40})));
    assert!(call.http.as_ref().unwrap().mcp_session_id.is_some());
    assert!(s.iter().any(|e| e.kind == EventKind::McpResponse
        && e.request_event_id.as_deref() == Some(&call.event_id)));
    assert!(s.iter().all(|e| e.kind != EventKind::Malformed));
    verify_ok(&dir.path().join("data"));
}

fn hs256_token(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn bearer_jwts_are_verified_and_refusals_recorded_without_the_token() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let up = HttpPeer::test_upstream(&[]);
    let secret = b"0123456789abcdef0123456789abcdef-test-secret";
    let secret_file = dir.path().join("hs256.secret");
    std::fs::write(&secret_file, secret).unwrap();
    // An Ed25519 key published in a JWKS file.
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":x,"kid":"k1","alg":"EdDSA","use":"sig"}]})
            .to_string(),
    )
    .unwrap();
    let config = format!(
        r#"[gateway]
[[gateway.routes]]
name = "hs"
path = "/hs"
upstream = "{base}/echo"
[gateway.routes.auth]
mode = "jwt"
hs256_secret_file = "{secret}"
issuer = "https://issuer.test"
audience = ["mcptrail-test"]
keep_claims = ["email"]
resource_metadata = "https://gw.test/.well-known/oauth-protected-resource"

[[gateway.routes]]
name = "ed"
path = "/ed"
upstream = "{base}/echo"
[gateway.routes.auth]
mode = "jwt"
jwks_file = "{jwks}"
issuer = "https://issuer.test"
audience = ["mcptrail-test"]
"#,
        base = up.base_url(),
        secret = secret_file.display(),
        jwks = jwks.display()
    );
    let gw = Gateway::start(dir.path(), &config);
    let claims = |sub: &str, aud: &str, exp: u64| json!({"sub": sub, "iss": "https://issuer.test", "aud": aud, "exp": exp, "email": format!("{sub}@example.com")});
    let good = hs256_token(secret, &claims("alice", "mcptrail-test", now() + 600));
    let expired = hs256_token(secret, &claims("alice", "mcptrail-test", now() - 600));
    let wrong_aud = hs256_token(secret, &claims("alice", "other-service", now() + 600));
    let wrong_sig = hs256_token(
        b"another-secret-another-secret-another-secret",
        &claims("mallory", "mcptrail-test", now() + 600),
    );
    let mut ed_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    ed_header.kid = Some("k1".into());
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&sk).unwrap();
    let ed_good = jsonwebtoken::encode(
        &ed_header,
        &claims("bob", "mcptrail-test", now() + 600),
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();

    let post = |path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h = mcp_headers();
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        http(&gw.addr, "POST", path, &h, &init_body(1))
    };
    let (st, _, body) = post("/hs/mcp", Some(&good));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    // The upstream got the Authorization header unchanged (it may check the token itself).
    assert_eq!(
        echoed["result"]["headers"]["authorization"],
        format!("Bearer {good}")
    );
    let (st, _, body) = post("/ed/mcp", Some(&ed_good));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    for (path, token, reason) in [
        ("/hs/mcp", None, "missing_token"),
        ("/hs/mcp", Some(expired.as_str()), "expired"),
        ("/hs/mcp", Some(wrong_aud.as_str()), "wrong_audience"),
        ("/hs/mcp", Some(wrong_sig.as_str()), "bad_signature"),
        ("/hs/mcp", Some("not-a-jwt"), "malformed_token"),
        ("/ed/mcp", Some(good.as_str()), "algorithm_not_allowed"),
    ] {
        let (st, h, body) = post(path, token);
        assert_eq!(st, 401, "{reason}: {}", String::from_utf8_lossy(&body));
        let challenge = header(&h, "www-authenticate")
            .unwrap_or_else(|| panic!("{reason}: no WWW-Authenticate"));
        assert!(
            challenge.starts_with("Bearer realm=\"mcptrail\""),
            "{challenge}"
        );
        if path == "/hs/mcp" {
            assert!(
                challenge.contains(
                    "resource_metadata=\"https://gw.test/.well-known/oauth-protected-resource\""
                ),
                "{challenge}"
            );
        }
        assert_eq!(
            reason == "missing_token",
            !challenge.contains("error=\"invalid_token\""),
            "{challenge}"
        );
        let err: Value = serde_json::from_slice(&body).unwrap();
        assert!(err["error"]["message"].is_string());
    }
    gw.stop();

    let data = dir.path().join("data");
    let all = events(&data);
    let denied: Vec<&Event> = all
        .iter()
        .filter(|e| e.kind == EventKind::AuthDenied)
        .collect();
    let reasons: Vec<&str> = denied
        .iter()
        .map(|e| e.detail.as_ref().unwrap()["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "missing_token",
            "expired",
            "wrong_audience",
            "bad_signature",
            "malformed_token",
            "algorithm_not_allowed"
        ]
    );
    assert!(denied
        .iter()
        .all(|e| e.http.as_ref().unwrap().status == Some(401)));
    // Who was allowed: alice by HS256 with her email kept (and redacted by default), bob by EdDSA.
    let alice = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.http.as_ref().unwrap().route == "hs")
        .unwrap();
    let u = alice.user_identity.as_ref().unwrap();
    assert_eq!(u.source, "jwt");
    assert!(
        u.principal.starts_with("[tok:user:"),
        "pseudonymised by default: {u:?}"
    );
    let email = u.claims.as_ref().unwrap()["email"].as_str().unwrap();
    assert!(
        !email.contains("alice@example.com"),
        "the kept email claim is redacted: {email}"
    );
    let (code, out, _) = run(&[
        "log",
        "--data-dir",
        data.to_str().unwrap(),
        "--user",
        "bob",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.contains("\"mcp.request\"")),
        "bob's request is found by his name: {out}"
    );
    // No token, whole or in part, is in the ledger.
    let ledger = read_ledger_bytes(&data);
    for t in [&good, &expired, &wrong_aud, &wrong_sig, &ed_good] {
        let sig = t.rsplit('.').next().unwrap();
        assert!(
            !contains(&ledger, sig.as_bytes()),
            "a token signature is in the ledger"
        );
    }
    verify_ok(&data);
}

fn read_ledger_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in walk(&data.join(mcptrail_ledger::LEDGER_DIR)) {
        all.extend(std::fs::read(entry).unwrap());
    }
    all
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn trace_context_continues_to_the_upstream_in_header_and_meta() {
    let dir = tempfile::tempdir().unwrap();
    let up = HttpPeer::test_upstream(&[]);
    let gw = Gateway::one_route(
        dir.path(),
        "echo",
        "/echo",
        &format!("{}/echo", up.base_url()),
    );
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"q":1},"_meta":{"traceparent":caller}}}).to_string();
    let mut h = mcp_headers();
    h.push(("Origin", "http://agent.local"));
    h.push(("X-Custom", "kept"));
    let (st, _, resp) = http(&gw.addr, "POST", "/echo/mcp", &h, body.as_bytes());
    assert_eq!(st, 200);
    let echoed: Value = serde_json::from_slice(&resp).unwrap();
    let seen = &echoed["result"];
    let hdr_tp = seen["headers"]["traceparent"].as_str().unwrap();
    let meta_tp = serde_json::from_str::<Value>(seen["body"].as_str().unwrap()).unwrap()["params"]
        ["_meta"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hdr_tp, meta_tp, "header and _meta name the same parent");
    assert!(
        hdr_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "same trace: {hdr_tp}"
    );
    assert!(
        !hdr_tp.contains("00f067aa0ba902b7"),
        "the gateway's span is the parent now"
    );
    // End-to-end headers pass unchanged, Host and Origin included.
    assert_eq!(seen["headers"]["origin"], "http://agent.local");
    assert_eq!(seen["headers"]["x-custom"], "kept");
    assert_eq!(seen["headers"]["host"], gw.addr.as_str());
    // Apart from the rewritten traceparent, the body arrived byte for byte.
    let sent_len = body.len();
    assert_eq!(seen["body"].as_str().unwrap().len(), sent_len);
    assert_eq!(
        seen["body"].as_str().unwrap().replace(&meta_tp, caller),
        body
    );
    gw.stop();
    let all = events(&dir.path().join("data"));
    let req = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest)
        .unwrap();
    let span = &hdr_tp[36..52];
    assert_eq!(
        req.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(req.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(req.span_id.as_deref(), Some(span));
    // The recorded parameters are what the client sent.
    assert_eq!(req.parameters_used, Some(json!({"q": 1})));
}

/// One request on an open keep-alive connection; the status and the (de-chunked) body.
fn keep_alive_exchange(s: &mut TcpStream, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in mcp_headers() {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.trim() == "chunked",
            _ => {}
        }
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
    } else {
        out.resize(length.expect("a length or chunks"), 0);
        r.read_exact(&mut out).unwrap();
    }
    (status, out)
}

#[test]
fn a_client_connection_keeps_its_upstream_connection_and_reopens_it_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let up = HttpPeer::test_upstream(&[]);
    let gw = Gateway::one_route(dir.path(), "up", "/up", &up.base_url());
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut call = |path: &str, id: u32| {
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"t","arguments":{}}}).to_string();
        let (st, resp) = keep_alive_exchange(&mut s, path, body.as_bytes());
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&resp));
        let v: Value = serde_json::from_slice(&resp).unwrap();
        assert_eq!(v["id"], id);
        v["result"]["peer_port"].as_u64().unwrap()
    };
    // Requests on one client connection share one upstream connection.
    let first = call("/up/echo/mcp", 1);
    assert_eq!(call("/up/echo/mcp", 2), first);
    // The upstream closes it after this answer, without saying so in the answer...
    assert_eq!(call("/up/close-after/mcp", 3), first);
    std::thread::sleep(Duration::from_millis(200));
    // ...and the next request goes over a new one, with no error for the client.
    let second = call("/up/echo/mcp", 4);
    assert_ne!(second, first);
    assert_eq!(call("/up/echo/mcp", 5), second);
    drop(s);
    // A second client connection has an upstream connection of its own.
    let mut other = TcpStream::connect(&gw.addr).unwrap();
    let body = json!({"jsonrpc":"2.0","id":6,"method":"ping"}).to_string();
    let (st, resp) = keep_alive_exchange(&mut other, "/up/echo/mcp", body.as_bytes());
    assert_eq!(st, 200);
    let v: Value = serde_json::from_slice(&resp).unwrap();
    assert_ne!(v["result"]["peer_port"].as_u64().unwrap(), second);
    drop(other);
    gw.stop();
    let all = events(&dir.path().join("data"));
    let requests = all
        .iter()
        .filter(|e| e.kind == EventKind::McpRequest)
        .count();
    assert_eq!(requests, 6, "every request is recorded");
    verify_ok(&dir.path().join("data"));
}

#[test]
fn a_request_without_meta_traceparent_gets_one_and_nothing_else_changes() {
    let dir = tempfile::tempdir().unwrap();
    let up = HttpPeer::test_upstream(&[]);
    let echo = format!("{}/echo", up.base_url());
    let config = format!(
        "{}{}",
        route("on", "/on", &echo),
        route("off", "/off", &echo)
    );
    // Two gateways over one upstream: injection on (the default) and off.
    let gw = Gateway::start(dir.path(), &config);
    let off_dir = tempfile::tempdir().unwrap();
    let gw_off = Gateway::start(
        off_dir.path(),
        &format!("[gateway.trace]\ninject_meta = false\n{config}"),
    );
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"t","arguments":{"q":"ü"}}}).to_string();
    let mut h = mcp_headers();
    h.push(("traceparent", caller));
    let seen_by_upstream = |gw: &Gateway, path: &str| {
        let (st, _, resp) = http(&gw.addr, "POST", path, &h, body.as_bytes());
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&resp));
        let echoed: Value = serde_json::from_slice(&resp).unwrap();
        echoed["result"].clone()
    };
    let seen = seen_by_upstream(&gw, "/on/mcp");
    let hdr_tp = seen["headers"]["traceparent"].as_str().unwrap().to_string();
    let got = seen["body"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(got).unwrap();
    assert_eq!(parsed["params"]["_meta"]["traceparent"], hdr_tp.as_str());
    assert!(hdr_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    // The upstream read exactly the new body: Content-Length follows it.
    assert_eq!(
        seen["headers"]["content-length"],
        got.len().to_string().as_str()
    );
    // The only bytes added are the _meta member; everything else is as sent.
    let added = format!("\"_meta\":{{\"traceparent\":\"{hdr_tp}\"}},");
    assert_eq!(got.replacen(&added, "", 1), body);
    // Off: the body reaches the upstream byte for byte; only the header carries the span.
    let seen_off = seen_by_upstream(&gw_off, "/off/mcp");
    assert_eq!(seen_off["body"].as_str().unwrap(), body);
    assert!(seen_off["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    gw.stop();
    gw_off.stop();
    // The record keeps what the client sent, with the gateway's span ids.
    let all = events(&dir.path().join("data"));
    let req = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest)
        .unwrap();
    assert_eq!(req.span_id.as_deref(), Some(&hdr_tp[36..52]));
    assert_eq!(req.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(req.parameters_used, Some(json!({"q": "ü"})));
}

#[test]
fn requests_still_waiting_on_the_upstream_are_recorded_when_the_client_leaves_or_the_gateway_stops()
{
    // The upstream takes 60 s to answer: neither request gets an answer while the test runs.
    let dir = tempfile::tempdir().unwrap();
    let up = HttpPeer::test_upstream(&["--slow-secs", "60"]);
    let config = format!(
        "[gateway]\n{}",
        route("slow", "/slow", &format!("{}/slow", up.base_url()))
    );
    let gw = Gateway::start(dir.path(), &config);
    let send = |id: u32| {
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"x","arguments":{}}}).to_string();
        let mut s = TcpStream::connect(&gw.addr).unwrap();
        let mut req = format!(
            "POST /slow/mcp HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            gw.addr,
            body.len()
        );
        for (k, v) in mcp_headers() {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        s
    };
    // 31: the client leaves while the upstream works on it. 32: the client waits, and the
    // gateway is stopped meanwhile (its grace period for open requests then ends).
    let leaving = send(31);
    let waiting = send(32);
    std::thread::sleep(Duration::from_millis(500));
    drop(leaving);
    std::thread::sleep(Duration::from_millis(200));
    let stopping = Instant::now();
    gw.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "the gateway waited for the upstream instead of cutting the request: {:?}",
        stopping.elapsed()
    );
    drop(waiting);

    let all = events(&dir.path().join("data"));
    for id in [31, 32] {
        let req = all
            .iter()
            .find(|e| e.kind == EventKind::McpRequest && e.request_id == Some(json!(id)))
            .unwrap_or_else(|| panic!("request {id} is not in the record"));
        assert_eq!(req.method.as_deref(), Some("tools/call"));
        // No answer came: no status is claimed for it.
        assert_eq!(req.http.as_ref().unwrap().status, None, "{req:?}");
    }
}

#[test]
fn upstream_failures_get_a_json_rpc_error_and_an_upstream_error_event() {
    let dir = tempfile::tempdir().unwrap();
    let up = HttpPeer::test_upstream(&["--slow-secs", "5"]);
    let dead = mcptrail_test_support::free_port();
    let config = format!(
        "[gateway]\nupstream_response_timeout_secs = 1\n{}{}{}{}",
        route("dead", "/dead", &format!("http://127.0.0.1:{dead}")),
        route("slow", "/slow", &format!("{}/slow", up.base_url())),
        route("broken", "/broken", &format!("{}/broken", up.base_url())),
        route("bad-sse", "/bad-sse", &format!("{}/bad-sse", up.base_url())),
    ) + "[[gateway.routes]]\nname = \"nocmd\"\npath = \"/nocmd\"\ncommand = [\"/nonexistent/mcp-server\"]\n";
    let gw = Gateway::start(dir.path(), &config);
    let call = |id: u32| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"x","arguments":{}}})
            .to_string()
            .into_bytes()
    };
    let (st, _, body) = http(&gw.addr, "POST", "/dead/mcp", &mcp_headers(), &call(11));
    assert_eq!(st, 502);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["id"], 11);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{err}"
    );
    // A stdio server that cannot start: the same answer, naming the command.
    let (st, _, body) = http(
        &gw.addr,
        "POST",
        "/nocmd/mcp",
        &mcp_headers(),
        &init_body(15),
    );
    assert_eq!(st, 502);
    assert!(String::from_utf8_lossy(&body).contains("/nonexistent/mcp-server"));
    let (st, _, body) = http(&gw.addr, "POST", "/slow/mcp", &mcp_headers(), &call(12));
    assert_eq!(st, 504);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["id"], 12);
    // A stream that breaks off: the client gets what came before the break.
    let (st, _, body) = http(&gw.addr, "POST", "/broken/mcp", &mcp_headers(), &call(13));
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("before the break"));
    // Malformed SSE is relayed byte for byte.
    let (st, _, body) = http(&gw.addr, "POST", "/bad-sse/mcp", &mcp_headers(), &call(14));
    assert_eq!(st, 200);
    assert!(contains(&body, b"data: \xff\xfe not utf-8\n\n"));
    assert!(body.ends_with(b"data: {\"cut\": off"));
    // The gateway is still serving.
    assert_eq!(http(&gw.admin, "GET", "/healthz", &[], b"").0, 200);
    gw.stop();

    let all = events(&dir.path().join("data"));
    let upstream_errors: Vec<&str> = all
        .iter()
        .filter(|e| e.kind == EventKind::UpstreamError)
        .map(|e| e.detail.as_ref().unwrap()["error"].as_str().unwrap())
        .collect();
    assert!(
        upstream_errors.contains(&"unreachable"),
        "{upstream_errors:?}"
    );
    assert!(upstream_errors.contains(&"timeout"), "{upstream_errors:?}");
    assert!(
        upstream_errors.contains(&"stream_broken"),
        "{upstream_errors:?}"
    );
    // The refused call is on record, answered by a synthesized error.
    let req11 = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.request_id == Some(json!(11)))
        .unwrap();
    let resp11 = all
        .iter()
        .find(|e| {
            e.kind == EventKind::McpResponse
                && e.request_event_id.as_deref() == Some(&req11.event_id)
        })
        .unwrap();
    assert!(resp11.flags.contains(&mcptrail_event::Flag::Synthesized));
    assert_eq!(resp11.http.as_ref().unwrap().status, Some(502));
    // Malformed SSE: the valid messages are recorded, the rest as malformed with reasons.
    let bad: Vec<&Event> = all
        .iter()
        .filter(|e| e.http.as_ref().is_some_and(|h| h.route == "bad-sse"))
        .collect();
    assert!(bad
        .iter()
        .any(|e| e.kind == EventKind::McpResponse && e.request_id == Some(json!(14))));
    assert!(bad
        .iter()
        .any(|e| e.method.as_deref() == Some("notifications/progress")));
    let malformed: Vec<String> = bad
        .iter()
        .filter_map(|e| e.malformed.as_ref().map(|m| m.reason.clone()))
        .collect();
    assert_eq!(malformed.len(), 3, "{malformed:?}");
    assert!(
        malformed.contains(&"unterminated".to_string()),
        "{malformed:?}"
    );
    // The message before the break is recorded.
    assert!(all
        .iter()
        .any(|e| e.method.as_deref() == Some("notifications/message")
            && e.http.as_ref().is_some_and(|h| h.route == "broken")));
    verify_ok(&dir.path().join("data"));
}

#[test]
fn oversized_bodies_slow_clients_and_aborted_streams_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let ev = HttpPeer::everything("streamableHttp");
    let config = format!(
        "[gateway]\nmax_body_bytes = 65536\nheader_read_timeout_secs = 1\n{}",
        route("everything", "/everything", &ev.base_url())
    );
    let gw = Gateway::start(dir.path(), &config);
    // 1. Too large: refused before the upstream sees it.
    let big = vec![b'x'; 70_000];
    let (st, _, body) = http(&gw.addr, "POST", "/everything/mcp", &mcp_headers(), &big);
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&body));
    // 2. Slowloris: headers never finish; the gateway hangs up after the header timeout.
    let mut slow = TcpStream::connect(&gw.addr).unwrap();
    slow.write_all(b"POST /everything/mcp HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a slow client held the connection {:?}",
        t.elapsed()
    );
    let _ = n; // closed (0) or a 408; either way the connection is not held
               // 3. A client that disconnects mid-stream: start a long call, read the first progress
               //    event, hang up. The gateway keeps serving; what was relayed is on record.
    let (st, h, _) = http(
        &gw.addr,
        "POST",
        "/everything/mcp",
        &mcp_headers(),
        &init_body(1),
    );
    assert_eq!(st, 200);
    let sid = header(&h, "mcp-session-id").unwrap().to_string();
    let notif = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let mut with_sid = mcp_headers();
    with_sid.push(("Mcp-Session-Id", &sid));
    with_sid.push(("MCP-Protocol-Version", "2025-11-25"));
    assert_eq!(
        http(&gw.addr, "POST", "/everything/mcp", &with_sid, notif).0,
        202
    );
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":3,"steps":3},"_meta":{"progressToken":"p1"}}}).to_string();
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    let mut req = format!("POST /everything/mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\n\r\n", gw.addr, call.len());
    req.push_str(&call);
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    while !contains(&got, b"notifications/progress") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended before any progress");
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let (st, _, _) = http(
        &gw.addr,
        "POST",
        "/everything/mcp",
        &with_sid,
        json!({"jsonrpc":"2.0","id":3,"method":"ping"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        st, 200,
        "the gateway serves on after a client hung up mid-stream"
    );
    gw.stop();

    let all = events(&dir.path().join("data"));
    let too_large = all
        .iter()
        .find(|e| {
            e.kind == EventKind::Malformed
                && e.detail
                    .as_ref()
                    .is_some_and(|d| d["error"] == "body_too_large")
        })
        .expect("the 413 is recorded");
    assert_eq!(too_large.http.as_ref().unwrap().status, Some(413));
    let long = all
        .iter()
        .find(|e| {
            e.tool_invoked.as_deref() == Some("trigger-long-running-operation")
                && e.kind == EventKind::McpRequest
        })
        .expect("the aborted call's request");
    assert!(
        all.iter()
            .any(|e| e.method.as_deref() == Some("notifications/progress")
                && e.session_id == long.session_id),
        "the progress relayed before the hang-up is recorded"
    );
    assert!(all.iter().any(|e| e.method.as_deref() == Some("ping")));
    verify_ok(&dir.path().join("data"));
}

#[test]
fn a_wrong_gateway_config_is_refused_with_the_route_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mcptrail.toml");
    for (config, expect) in [
        ("[gateway]\n[[gateway.routes]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\nupstrem = \"x\"\n", "upstrem"),
        ("[gateway]\n[[gateway.routes]]\npath = \"/a\"\nupstream = \"ftp://x\"\n", "upstream"),
        ("[gateway]\n[[gateway.routes]]\nname = \"r\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n[gateway.routes.auth]\nmode = \"jwt\"\nhs256_secret_env = \"NOPE_NOT_SET\"\nissuer = \"i\"\naudience = [\"a\"]\n", "NOPE_NOT_SET"),
        ("[gateway]\n[[gateway.routes]]\nname = \"r\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n[gateway.routes.auth]\nmode = \"header\"\nheader = \"x-user\"\n", "trusted_peers"),
        ("[gateway]\n", "no routes"),
        ("[gateway]\n[[gateway.routes]]\nname = \"r\"\npath = \"/a\"\nupstream = \"http://127.0.0.1:1\"\negress = true\n", "stdio routes (`command`) only"),
        ("[egress]\nallow = [\"bad name!\"]\n[gateway]\n[[gateway.routes]]\nname = \"r\"\npath = \"/a\"\ncommand = [\"true\"]\negress = true\n", "`bad name!`"),
    ] {
        std::fs::write(&cfg, config).unwrap();
        let (code, _, err) = run(&["--config", cfg.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap(), "gateway", "--check"]);
        assert_eq!(code, 2, "{config}");
        assert!(err.contains(expect), "{expect}: {err}");
    }
}

/// The scenario lines of the MCP conformance suite's summary (`✓ name: n passed, m failed`).
fn conformance(url: &str, cwd: &Path) -> Vec<String> {
    let peers = mcptrail_test_support::peers_dir();
    let node = peers.join("node_modules/.bin/node");
    let suite = peers.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        node.exists() && suite.exists(),
        "the conformance suite or Node 22 is missing: run .ci/install-peers.sh"
    );
    let out = Command::new(node)
        .arg(suite)
        .args(["server", "--url", url])
        .current_dir(cwd)
        .output()
        .expect("run the conformance suite");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let summary: Vec<String> = text
        .split("=== SUMMARY ===")
        .nth(1)
        .unwrap_or_else(|| {
            panic!(
                "no summary from the conformance suite:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗'))
        .map(str::to_string)
        .collect();
    assert!(summary.len() >= 20, "too few scenarios: {summary:?}");
    summary
}

#[test]
fn the_conformance_suite_gives_identical_results_direct_and_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let ev = HttpPeer::everything("streamableHttp");
    let direct = conformance(&format!("{}/mcp", ev.base_url()), dir.path());
    let stdio: Vec<String> = mcptrail_test_support::server_everything_cmd()
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    let config = format!(
        "[gateway]\n{}[[gateway.routes]]\nname = \"stdio\"\npath = \"/stdio\"\ncommand = [{}]\n",
        route("everything", "/everything", &ev.base_url()),
        stdio.join(", ")
    );
    let gw = Gateway::start(dir.path(), &config);
    let through = conformance(&gw.url("/everything/mcp"), dir.path());
    // The same server run over stdio, exposed over Streamable HTTP by the gateway.
    let bridged = conformance(&gw.url("/stdio/mcp"), dir.path());
    gw.stop();
    assert_eq!(
        direct, through,
        "scenario results differ through the gateway"
    );
    assert_eq!(
        direct, bridged,
        "scenario results differ for the stdio server behind the gateway"
    );
    let passed = direct.iter().filter(|l| l.starts_with('✓')).count();
    assert!(
        passed >= 10,
        "only {passed} scenarios pass directly: {direct:?}"
    );
    // Every scenario's traffic is on record, for both routes.
    let all = events(&dir.path().join("data"));
    for transport in ["streamable_http", "stdio"] {
        let sessions = all
            .iter()
            .filter(|e| {
                e.kind == EventKind::SessionStart
                    && e.server.as_ref().is_some_and(|s| s.transport == transport)
            })
            .count();
        assert!(
            sessions >= 20,
            "{sessions} {transport} sessions recorded for {} scenarios",
            direct.len()
        );
    }
    verify_ok(&dir.path().join("data"));
}

#[test]
fn a_trusted_proxy_header_is_accepted_only_from_its_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let up = HttpPeer::test_upstream(&[]);
    let config = format!(
        "[gateway]\n{}{}",
        route("trusted", "/trusted", &format!("{}/echo", up.base_url()))
            + "[gateway.routes.auth]\nmode = \"header\"\nheader = \"X-Forwarded-User\"\ntrusted_peers = [\"127.0.0.0/8\"]\n",
        route("elsewhere", "/elsewhere", &format!("{}/echo", up.base_url()))
            + "[gateway.routes.auth]\nmode = \"header\"\nheader = \"X-Forwarded-User\"\ntrusted_peers = [\"10.9.8.7\"]\n",
    );
    let gw = Gateway::start(dir.path(), &config);
    let mut h = mcp_headers();
    h.push(("X-Forwarded-User", "carol@corp"));
    assert_eq!(
        http(&gw.addr, "POST", "/trusted/mcp", &h, &init_body(1)).0,
        200
    );
    assert_eq!(
        http(
            &gw.addr,
            "POST",
            "/trusted/mcp",
            &mcp_headers(),
            &init_body(2)
        )
        .0,
        401
    );
    assert_eq!(
        http(&gw.addr, "POST", "/elsewhere/mcp", &h, &init_body(3)).0,
        401
    );
    gw.stop();
    let data = dir.path().join("data");
    let all = events(&data);
    let reasons: Vec<&str> = all
        .iter()
        .filter(|e| e.kind == EventKind::AuthDenied)
        .map(|e| e.detail.as_ref().unwrap()["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["missing_header", "untrusted_peer"]);
    let req = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest)
        .unwrap();
    assert_eq!(req.user_identity.as_ref().unwrap().source, "header");
    let (_, out, _) = run(&[
        "log",
        "--data-dir",
        data.to_str().unwrap(),
        "--user",
        "carol@corp",
        "--json",
    ]);
    assert!(out.contains("\"mcp.request\""), "{out}");
}

#[test]
fn a_jwks_url_is_fetched_and_tls_is_terminated_with_rustls() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    // The JWKS is served over HTTP by a plain static file server.
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
    std::fs::write(
        www.join("jwks.json"),
        json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":x,"kid":"url-key"}]}).to_string(),
    )
    .unwrap();
    let port = mcptrail_test_support::free_port();
    let mut files = Command::new(python_peer())
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A self-signed certificate for 127.0.0.1.
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "static file server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let up = HttpPeer::test_upstream(&[]);
    let config = format!(
        "[gateway]\n[gateway.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{}[gateway.routes.auth]\nmode = \"jwt\"\njwks_url = \"http://127.0.0.1:{port}/jwks.json\"\nissuer = \"https://issuer.test\"\naudience = [\"gw\"]\n",
        cert.display(),
        key.display(),
        route("echo", "/echo", &format!("{}/echo", up.base_url()))
    );
    let gw = Gateway::start(dir.path(), &config);
    let addr = gw.addr.clone();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("url-key".into());
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&sk).unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &json!({"sub":"dave","iss":"https://issuer.test","aud":"gw","exp":now()+600}),
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    let curl = |auth: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&cert)
            .args([
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json, text/event-stream",
                "--data-binary",
            ])
            .arg(String::from_utf8(init_body(1)).unwrap());
        if let Some(t) = auth {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        c.arg(format!("https://{addr}/echo/mcp"));
        let out = c.output().expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ok = curl(Some(&token));
    let refused = curl(None);
    gw.stop();
    let _ = files.kill();
    let _ = files.wait();
    assert!(
        ok.ends_with("\n200"),
        "with a token from the JWKS URL over TLS: {ok}"
    );
    assert!(refused.ends_with("\n401"), "without: {refused}");
    let all = events(&dir.path().join("data"));
    let req = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest)
        .unwrap();
    assert_eq!(req.user_identity.as_ref().unwrap().source, "jwt");
    assert!(all.iter().any(|e| e
        .server
        .as_ref()
        .is_some_and(|s| s.url.as_deref().is_some_and(|u| u.starts_with("https://")))));
}

#[test]
fn rmcp_over_streamable_http_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let ev = HttpPeer::everything("streamableHttp");
    let gw = Gateway::one_route(dir.path(), "everything", "/everything", &ev.base_url());
    let out = Command::new(mcptrail_test_support::target_bin("rmcp-client"))
        .args([
            "--url",
            &gw.url("/everything/mcp"),
            "--call",
            r#"get-sum={"a":20,"b":22}"#,
            "--call",
            r#"echo={"message":"from rmcp"}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rmcp-client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["calls"][0]["result"]["content"][0]["text"],
        "The sum of 20 and 22 is 42."
    );
    assert_eq!(
        doc["calls"][1]["result"]["content"][0]["text"],
        "Echo: from rmcp"
    );
    gw.stop();
    let all = events(&dir.path().join("data"));
    let s = session_events(&all, "streamable_http");
    assert!(s
        .iter()
        .any(|e| e.client.as_ref().is_some_and(|c| c.name == "rmcp-client")));
    for tool in ["get-sum", "echo"] {
        let req = s
            .iter()
            .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some(tool))
            .unwrap();
        assert!(
            s.iter().any(|e| e.kind == EventKind::McpResponse
                && e.request_event_id.as_deref() == Some(&req.event_id)),
            "{tool} answered"
        );
    }
    verify_ok(&dir.path().join("data"));
}

/// Read an SSE response until `until` appears or the connection ends; return the raw bytes.
fn sse_exchange(addr: &str, head: &str, body: &str, until: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !contains(&got, until) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[test]
fn a_resumed_stream_replays_into_the_record_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let ev = HttpPeer::everything("streamableHttp");
    let gw = Gateway::one_route(dir.path(), "everything", "/everything", &ev.base_url());
    let (_, h, _) = http(
        &gw.addr,
        "POST",
        "/everything/mcp",
        &mcp_headers(),
        &init_body(1),
    );
    let sid = header(&h, "mcp-session-id").unwrap().to_string();
    let mut with_sid = mcp_headers();
    with_sid.push(("Mcp-Session-Id", &sid));
    with_sid.push(("MCP-Protocol-Version", "2025-11-25"));
    http(
        &gw.addr,
        "POST",
        "/everything/mcp",
        &with_sid,
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    let head = format!(
        "POST /everything/mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\n",
        gw.addr
    );
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"trigger-long-running-operation","arguments":{"duration":1,"steps":2},"_meta":{"progressToken":"p"}}}).to_string();
    let first = sse_exchange(&gw.addr, &head, &call, b"Long running operation completed");
    let text = String::from_utf8_lossy(&first).to_string();
    let first_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("the server numbers its events")
        .trim()
        .to_string();
    // Resume from the first event: the server sends the rest again.
    let get_head = format!(
        "GET /everything/mcp HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\nLast-Event-ID: {first_id}\r\n",
        gw.addr
    );
    let replay = sse_exchange(&gw.addr, &get_head, "", b"Long running operation completed");
    assert!(
        contains(&replay, b"Long running operation completed"),
        "{}",
        String::from_utf8_lossy(&replay)
    );
    gw.stop();
    let all = events(&dir.path().join("data"));
    let responses: Vec<&Event> = all
        .iter()
        .filter(|e| e.kind == EventKind::McpResponse && e.request_id == Some(json!(2)))
        .collect();
    assert_eq!(responses.len(), 2, "the answer, and its replay");
    assert!(!responses[0].flags.contains(&mcptrail_event::Flag::Replayed));
    assert!(
        responses[1].flags.contains(&mcptrail_event::Flag::Replayed),
        "{:?}",
        responses[1].flags
    );
}

fn openssl(args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian's openssl package) makes the test certificates");
    assert!(st.success(), "openssl {args:?}");
}

#[test]
fn client_certificates_identify_callers_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
    ];
    // Two CAs: the gateway trusts "good" only.
    for name in ["good", "other"] {
        let (k, c, subj) = (
            p(&format!("{name}-ca.key")),
            p(&format!("{name}-ca.pem")),
            format!("/CN={name} CA"),
        );
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            &k,
            "-out",
            &c,
        ]);
        openssl(&a);
    }
    // A client certificate from each (email SAN), and the server's own.
    std::fs::write(
        p("client.ext"),
        "subjectAltName=email:runner7@example.com\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (name, issuer) in [("alice", "good"), ("mallory", "other")] {
        let (k, csr, c) = (
            p(&format!("{name}.key")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.pem")),
        );
        let mut a = vec!["req"];
        a.extend(&ec[..5]);
        a.extend([
            "-subj",
            "/CN=agent-runner-7/O=Example",
            "-keyout",
            &k,
            "-out",
            &csr,
        ]);
        openssl(&a);
        let (ca_c, ca_k, ext) = (
            p(&format!("{issuer}-ca.pem")),
            p(&format!("{issuer}-ca.key")),
            p("client.ext"),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_c,
            "-CAkey",
            &ca_k,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &c,
        ]);
    }
    let (sk, sc) = (p("server.key"), p("server.pem"));
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        &sk,
        "-out",
        &sc,
    ]);
    openssl(&a);
    let up = HttpPeer::test_upstream(&[]);
    let config = format!(
        "[gateway]\n[gateway.tls]\ncert_file = \"{sc}\"\nkey_file = \"{sk}\"\nclient_ca_file = \"{}\"\n{}[gateway.routes.auth]\nmode = \"mtls\"\n",
        p("good-ca.pem"),
        route("echo", "/echo", &format!("{}/echo", up.base_url()))
    );
    let gw = Gateway::start(dir.path(), &config);
    let addr = gw.addr.clone();
    let curl = |who: Option<&str>| {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &sc,
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json, text/event-stream",
            "--data-binary",
        ])
        .arg(String::from_utf8(init_body(1)).unwrap());
        if let Some(w) = who {
            c.args([
                "--cert",
                &p(&format!("{w}.pem")),
                "--key",
                &p(&format!("{w}.key")),
            ]);
        }
        c.arg(format!("https://{addr}/echo/mcp"));
        String::from_utf8_lossy(&c.output().expect("curl").stdout).to_string()
    };
    let alice = curl(Some("alice"));
    let nobody = curl(None);
    let mallory = curl(Some("mallory"));
    gw.stop();
    assert_eq!(alice, "200");
    assert_eq!(nobody, "401");
    assert_eq!(
        mallory, "000",
        "a certificate from another CA fails the handshake"
    );
    let data = dir.path().join("data");
    let all = events(&data);
    let req = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest)
        .unwrap();
    let u = req.user_identity.as_ref().unwrap();
    assert_eq!(u.source, "mtls");
    let claims = u.claims.as_ref().unwrap();
    assert!(
        claims["issuer"].as_str().unwrap().contains("good CA"),
        "{claims}"
    );
    let denied = all
        .iter()
        .find(|e| e.kind == EventKind::AuthDenied)
        .unwrap();
    assert_eq!(
        denied.detail.as_ref().unwrap()["reason"],
        "missing_client_certificate"
    );
    let (_, out, _) = run(&[
        "log",
        "--data-dir",
        data.to_str().unwrap(),
        "--user",
        "runner7@example.com",
        "--json",
    ]);
    assert!(
        out.contains("\"mcp.request\""),
        "the email SAN is the principal: {out}"
    );
}

#[test]
fn the_gateways_events_ship_to_configured_sinks_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let ev = HttpPeer::everything("streamableHttp");
    let out = dir.path().join("shipped/events.jsonl");
    let config = format!(
        "[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"{}\"\n\n[gateway]\n{}",
        out.display(),
        route("everything", "/everything", &ev.base_url())
    );
    let gw = Gateway::start(dir.path(), &config);
    py_client(&[
        "--url",
        &gw.url("/everything/mcp"),
        "--call",
        r#"echo={"message":"shipped"}"#,
        "--no-extras",
    ]);
    gw.stop();
    let shipped = std::fs::read_to_string(&out).expect("the file sink wrote");
    let ids: std::collections::HashSet<String> = shipped
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let all = events(&dir.path().join("data"));
    let call = all
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("echo"))
        .unwrap();
    assert!(
        ids.contains(&call.event_id),
        "the tool call was shipped while the gateway ran"
    );
}

#[test]
fn a_stdio_route_with_egress_records_its_servers_outbound_calls_in_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("notes.txt"), "meeting notes\n".repeat(50)).unwrap();
    let web = mcptrail_test_support::destinations::Destination::http_files(&site);
    let fetch: Vec<String> = mcptrail_test_support::fetch::fetch_server_cmd()
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    let config = format!(
        "[egress]\ndefault = \"deny\"\nallow = [\"wiki.corp.example\"]\n\
         [egress.resolve]\n\"wiki.corp.example\" = \"127.0.0.1\"\n\
         [gateway]\n[[gateway.routes]]\nname = \"fetch\"\npath = \"/fetch\"\ncommand = [{}]\negress = true\n",
        fetch.join(", ")
    );
    let gw = Gateway::start(dir.path(), &config);
    let url = format!("http://wiki.corp.example:{}/notes.txt", web.port);
    let summary = fetch_through(
        McpAt::Http(&gw.url("/fetch/mcp")),
        &[json!({ "url": url, "raw": true })],
    );
    assert_eq!(summary["calls"][0]["is_error"], false, "{summary}");
    gw.stop();
    let evs = events(&dir.path().join("data"));
    let call = evs
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("fetch"))
        .expect("the tool call is recorded");
    let egress = of_kind(&evs, EventKind::NetEgress);
    assert_eq!(egress.len(), 1, "{egress:#?}");
    let e = egress[0];
    assert_eq!(
        e.session_id, call.session_id,
        "in the MCP session of the call"
    );
    assert_eq!(e.request_event_id.as_ref(), Some(&call.event_id));
    let d = e.detail.as_ref().unwrap();
    assert_eq!(d["host"], "wiki.corp.example");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["status"], 200);
    assert!(e.bytes_in.unwrap() > 700);
}
