//! Lifecycle of a wrapped server: crashes, stubborn servers, signals, heartbeats, timeouts,
//! cancellation, a tap killed with SIGKILL, and a client that goes away mid-stream.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcptrail_event::{EventKind, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::support::*;

fn odd(extra: &[&str]) -> Vec<String> {
    let mut v = vec!["python3".to_string(), script("odd_server.py")];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn config(dir: &std::path::Path, body: &str) -> String {
    let p = dir.join("mcptrail.toml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// `mcptrail --config <toml with body> wrap --data-dir <data> -- odd_server.py <flags>`, with
/// piped stdin and stdout.
fn spawn_odd(
    dir: &std::path::Path,
    data: &std::path::Path,
    config_body: &str,
    flags: &[&str],
) -> std::process::Child {
    let cfg = config(dir, config_body);
    let mut cmd = mcptrail();
    cmd.args([
        "--config",
        &cfg,
        "wrap",
        "--data-dir",
        data.to_str().unwrap(),
        "--",
    ])
    .args(odd(flags))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    cmd.spawn().unwrap()
}

fn session_end(evs: &[mcptrail_event::Event]) -> mcptrail_event::SessionDetail {
    let ends = of_kind(evs, EventKind::SessionEnd);
    assert_eq!(ends.len(), 1, "exactly one session.end");
    ends[0].session.clone().unwrap()
}

#[test]
fn server_crash_ends_the_session_with_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut w = Wrapped::start(&data, &[], &strs(&odd(&[])));
    w.initialize("crash-client");
    w.send_line(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crash","arguments":{}}}"#);
    // Keep our stdin open: the tap must notice the server is gone by itself.
    let status = wait_timeout(&mut w.child, Duration::from_secs(10))
        .expect("wrap exits when the server dies");
    assert_eq!(
        status.code(),
        Some(3),
        "wrap exits with the server's status"
    );
    let evs = events(&data);
    let end = session_end(&evs);
    assert_eq!(end.end_reason.as_deref(), Some("server_exited"));
    assert_eq!(end.exit_code, Some(3));
    assert_eq!(end.unanswered, Some(1));
    let lost = evs
        .iter()
        .find(|e| e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("crash"))
        .unwrap();
    assert_eq!(
        lost.response_summary.as_ref().unwrap().status,
        Status::NoResponse
    );
}

#[test]
fn server_ignoring_eof_gets_sigterm_then_sigkill() {
    for (flags, forced, signal, code) in [
        (vec!["--ignore-eof"], "sigterm", "SIGTERM", 143),
        (
            vec!["--ignore-eof", "--ignore-term"],
            "sigkill",
            "SIGKILL",
            137,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = spawn_odd(
            dir.path(),
            &data,
            "[tap]\nshutdown_grace_secs = 1\n",
            &flags,
        );
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}
"#).unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let t = Instant::now();
        drop(stdin);
        let status = wait_timeout(&mut child, Duration::from_secs(10))
            .expect("wrap stops a stubborn server");
        assert_eq!(status.code(), Some(code), "{flags:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "waited the grace period first"
        );
        let end = session_end(&events(&data));
        assert_eq!(end.end_reason.as_deref(), Some("client_eof"));
        assert_eq!(end.forced_stop.as_deref(), Some(forced));
        assert_eq!(end.exit_signal.as_deref(), Some(signal));
    }
}

#[test]
fn sigterm_and_sigint_are_forwarded_to_the_server() {
    for (sig, name) in [(Signal::SIGTERM, "SIGTERM"), (Signal::SIGINT, "SIGINT")] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut w = Wrapped::start(&data, &[], &strs(&odd(&[])));
        w.initialize("signal-client");
        kill(Pid::from_raw(w.child.id() as i32), sig).unwrap();
        let status =
            wait_timeout(&mut w.child, Duration::from_secs(10)).expect("exits after the signal");
        assert_eq!(status.code(), Some(128 + sig as i32), "{name}");
        let end = session_end(&events(&data));
        assert_eq!(
            end.end_reason.as_deref(),
            Some(format!("signal:{name}").as_str())
        );
        assert_eq!(
            end.exit_signal.as_deref(),
            Some(name),
            "the server died of the forwarded signal"
        );
    }
}

#[test]
fn heartbeats_timeouts_and_cancellations_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = spawn_odd(
        dir.path(),
        &data,
        "[tap]\nheartbeat_interval_secs = 1\nrequest_timeout_secs = 1\n",
        &[],
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"c","version":"1"}}}}}}"#).unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"hang","arguments":{{}}}}}}"#).unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"hang","arguments":{{}}}}}}"#).unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":2,"reason":"user pressed stop"}}}}"#).unwrap();
    std::thread::sleep(Duration::from_millis(2600));
    drop(stdin);
    wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    let evs = events(&data);
    let beats = of_kind(&evs, EventKind::SystemHeartbeat);
    assert!(beats.len() >= 2, "{} heartbeats in 2.6 s", beats.len());
    assert!(
        beats
            .iter()
            .all(|b| b.session_id.is_some()
                && b.detail.as_ref().unwrap()["pending_requests"].is_u64())
    );
    let status_of = |id: i64| {
        let req = evs
            .iter()
            .find(|e| e.kind == EventKind::McpRequest && e.request_id == Some(json!(id)))
            .unwrap();
        evs.iter()
            .filter(|e| {
                e.kind == EventKind::McpResponse
                    && e.request_event_id.as_ref() == Some(&req.event_id)
            })
            .map(|e| e.response_summary.as_ref().unwrap().status)
            .collect::<Vec<_>>()
    };
    assert_eq!(status_of(1), [Status::Timeout]);
    assert_eq!(status_of(2), [Status::Cancelled]);
    let cancelled = evs
        .iter()
        .find(|e| {
            e.response_summary
                .as_ref()
                .is_some_and(|s| s.status == Status::Cancelled)
        })
        .unwrap();
    assert_eq!(
        cancelled
            .response_summary
            .as_ref()
            .unwrap()
            .error_message
            .as_deref(),
        Some("user pressed stop")
    );
    assert_eq!(
        session_end(&evs).unanswered,
        Some(0),
        "timed-out and cancelled requests are closed"
    );
}

#[test]
fn sigkill_of_the_tap_keeps_every_durable_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut w = Wrapped::start(&data, &[], &strs(&odd(&[])));
    w.initialize("doomed-client");
    for i in 1..=50 {
        w.request(
            i,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": format!("call {i}")}}),
        );
    }
    // Give group commit a moment, then kill the tap without warning.
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(w.child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = wait_timeout(&mut w.child, Duration::from_secs(5));
    let evs = events(&data); // verifies the chain
    let answered = evs
        .iter()
        .filter(|e| e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("echo"))
        .count();
    assert_eq!(
        answered, 50,
        "all calls made durable before the kill are intact"
    );
    assert!(
        of_kind(&evs, EventKind::SessionEnd).is_empty(),
        "no session.end: the abrupt end is visible"
    );
    // The next tap appends cleanly after it.
    let w2 = Wrapped::start(&data, &[], &strs(&odd(&[])));
    let (st, _, _) = w2.finish(Duration::from_secs(10));
    assert!(st.success());
    assert_eq!(of_kind(&events(&data), EventKind::SessionEnd).len(), 1);
}

#[test]
fn a_server_that_cannot_start_is_an_error_and_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, out, err) = run(&[
        "wrap",
        "--data-dir",
        data.to_str().unwrap(),
        "--",
        "/nonexistent/mcp-server",
        "--flag",
    ]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "nothing of ours on stdout");
    assert!(
        err.contains("could not start the MCP server `/nonexistent/mcp-server`"),
        "{err}"
    );
    let evs = events(&data);
    assert_eq!(
        session_end(&evs).end_reason.as_deref(),
        Some("spawn_failed")
    );
}

#[test]
fn client_disconnecting_mid_stream_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = spawn_odd(
        dir.path(),
        &data,
        "[tap]\nshutdown_grace_secs = 1\n",
        &["--ignore-eof"],
    );
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    drop(stdout); // the client stops reading: the tap's writes fail with EPIPE
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"c","version":"1"}}}}}}"#).unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10))
        .expect("the tap ends the session when the client is gone");
    assert!(!status.success());
    drop(stdin);
    let evs = events(&data);
    assert_eq!(session_end(&evs).end_reason.as_deref(), Some("client_gone"));
    let resp = evs
        .iter()
        .find(|e| e.kind == EventKind::McpResponse && e.method.as_deref() == Some("initialize"))
        .unwrap();
    let failure = evs
        .iter()
        .find(|e| e.kind == EventKind::SystemError)
        .expect("the failed delivery is recorded");
    let detail = failure.detail.as_ref().unwrap();
    assert_eq!(detail["error"], "undelivered");
    assert_eq!(
        failure.direction,
        Some(mcptrail_event::Direction::ServerToClient)
    );
    let named: Vec<&str> = detail["undelivered_event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        [resp.event_id.as_str()],
        "the response the client never got is named"
    );
    assert!(failure.seq > resp.seq);
}

#[test]
fn a_server_surviving_a_forwarded_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = spawn_odd(
        dir.path(),
        &data,
        "[tap]\nshutdown_grace_secs = 1\n",
        &["--ignore-term"],
    );
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"c","version":"1"}}}}}}"#).unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10))
        .expect("wrap does not hang on a stubborn server");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "the server had its grace period"
    );
    assert_eq!(status.code(), Some(128 + Signal::SIGKILL as i32));
    drop(stdin);
    let end = session_end(&events(&data));
    assert_eq!(end.end_reason.as_deref(), Some("signal:SIGTERM"));
    assert_eq!(end.forced_stop.as_deref(), Some("sigkill"));
    assert_eq!(end.exit_signal.as_deref(), Some("SIGKILL"));
}
