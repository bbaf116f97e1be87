//! Bad input in both directions: every byte is forwarded unchanged (checked against what the
//! server really received and sent), and every message is recorded, flagged or `malformed`.

use std::time::Duration;

use mcptrail_event::{EventKind, Flag, Status};
use mcptrail_test_support::target_bin;
use serde_json::json;

use crate::support::*;

#[test]
fn client_garbage_is_forwarded_unchanged_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = teed_echo_server(dir.path());
    let mut w = Wrapped::start(&data, &[], &strs(&server));
    w.initialize("garbage-client");
    w.send(b"garbage{\n");
    w.send(b"\xff\xfe{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n");
    w.send(b"42\n[]\n");
    w.send_line(r#"[{"jsonrpc":"2.0","id":20,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}]"#);
    w.send_line(r#"{"jsonrpc":"2.0","id":21,"method":"server/discover"}"#);
    // The same id twice while the first is still running.
    w.send_line(r#"{"jsonrpc":"2.0","id":30,"method":"tools/call","params":{"name":"slow","arguments":{"ms":300}}}"#);
    w.send_line(r#"{"jsonrpc":"2.0","id":30,"method":"tools/call","params":{"name":"echo","arguments":{"text":"second"}}}"#);
    // rmcp tracks requests by id: the second replaces the first, whose answer never comes.
    w.read_response(&json!(30));
    let r = w.request(
        31,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "still alive"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "still alive");
    let (status, sent, received) = w.finish(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");

    // Byte for byte, both ways.
    assert_eq!(
        read_file(&dir.path().join("server_in.bin")),
        sent,
        "server received exactly what the client sent"
    );
    assert_eq!(
        read_file(&dir.path().join("server_out.bin")),
        received,
        "client received exactly what the server sent"
    );

    let evs = events(&data);
    let malformed: Vec<&str> = of_kind(&evs, EventKind::Malformed)
        .iter()
        .filter(|e| e.direction == Some(mcptrail_event::Direction::ClientToServer))
        .map(|e| e.malformed.as_ref().unwrap().reason.as_str())
        .collect();
    assert_eq!(
        malformed,
        ["invalid_json", "invalid_utf8", "not_jsonrpc", "empty_batch"]
    );
    for m in of_kind(&evs, EventKind::Malformed) {
        let d = m.malformed.as_ref().unwrap();
        assert_eq!(d.digest.sha256.len(), 64);
        assert!(d.digest.size > 0);
    }
    let batch: Vec<_> = evs
        .iter()
        .filter(|e| e.flags.contains(&Flag::Batch))
        .collect();
    assert_eq!(batch.len(), 2, "both batch elements recorded");
    assert_eq!(batch[0].method.as_deref(), Some("ping"));
    assert_eq!(batch[1].kind, EventKind::McpNotification);
    let discover = evs
        .iter()
        .find(|e| e.method.as_deref() == Some("server/discover") && e.kind == EventKind::McpRequest)
        .unwrap();
    assert!(discover.flags.contains(&Flag::UnknownMethod));
    let discover_resp = evs
        .iter()
        .find(|e| {
            e.kind == EventKind::McpResponse
                && e.request_event_id.as_ref() == Some(&discover.event_id)
        })
        .unwrap();
    assert_eq!(
        discover_resp.response_summary.as_ref().unwrap().status,
        Status::Error
    );

    let calls30: Vec<_> = evs
        .iter()
        .filter(|e| e.kind == EventKind::McpRequest && e.request_id == Some(json!(30)))
        .collect();
    assert_eq!(calls30.len(), 2);
    assert!(!calls30[0].flags.contains(&Flag::IdReused));
    assert!(calls30[1].flags.contains(&Flag::IdReused));
    let answers30: Vec<_> = evs
        .iter()
        .filter(|e| e.kind == EventKind::McpResponse && e.request_id == Some(json!(30)))
        .collect();
    assert_eq!(
        answers30.len(),
        2,
        "one real answer, one recorded as never answered"
    );
    let statuses: Vec<Status> = answers30
        .iter()
        .map(|e| e.response_summary.as_ref().unwrap().status)
        .collect();
    assert!(
        statuses.contains(&Status::Ok) && statuses.contains(&Status::NoResponse),
        "{statuses:?}"
    );
    let real = answers30
        .iter()
        .find(|e| e.response_summary.as_ref().unwrap().status == Status::Ok)
        .unwrap();
    assert!(
        real.flags.contains(&Flag::IdReused),
        "an answer to a reused id says its pairing is a guess"
    );
    // rmcp answers unparseable lines with id-less errors: recorded as responses to no request.
    let idless: Vec<_> = evs
        .iter()
        .filter(|e| e.kind == EventKind::McpResponse && e.flags.contains(&Flag::NullId))
        .collect();
    assert!(!idless.is_empty());
    assert!(idless.iter().all(|e| e.request_event_id.is_none()));
}

#[test]
fn server_anomalies_and_server_to_client_requests() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = teed(dir.path(), &["python3".into(), script("odd_server.py")]);
    let mut w = Wrapped::start(&data, &["--agent-id", "auditor-test"], &strs(&server));
    w.initialize("odd-client");
    w.send_line(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"anomalies","arguments":{}}}"#);
    // Answer the server's own requests as a client would.
    let mut answered = 0;
    while answered < 2 {
        let line = w.read_line().expect("server output");
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
            match v.get("method").and_then(|m| m.as_str()) {
                Some("sampling/createMessage") => {
                    w.send_line(&json!({"jsonrpc":"2.0","id":"s1","result":{"role":"assistant","content":{"type":"text","text":"ok"},"model":"m"}}).to_string());
                    answered += 1;
                }
                Some("roots/list") => {
                    w.send_line(
                        &json!({"jsonrpc":"2.0","id":"s2","result":{"roots":[]}}).to_string(),
                    );
                    answered += 1;
                }
                _ => {}
            }
        }
    }
    let r = w.read_response(&json!(1));
    assert_eq!(r["result"]["content"][0]["text"], "anomalies done");
    // A response to a request nobody made, from the client side.
    w.send_line(r#"{"jsonrpc":"2.0","id":"never-asked","result":{}}"#);
    let (status, sent, received) = w.finish(Duration::from_secs(20));
    assert!(status.success());
    assert_eq!(read_file(&dir.path().join("server_in.bin")), sent);
    assert_eq!(read_file(&dir.path().join("server_out.bin")), received);

    let evs = events(&data);
    assert!(
        evs.iter()
            .all(|e| e.agent_id.as_deref() == Some("auditor-test")),
        "--agent-id wins everywhere"
    );
    let resp = |f: Flag| {
        evs.iter()
            .filter(move |e| e.kind == EventKind::McpResponse && e.flags.contains(&f))
            .count()
    };
    assert_eq!(
        resp(Flag::UnknownId),
        2,
        "id 999 from the server, never-asked from the client"
    );
    assert_eq!(resp(Flag::NullId), 1);
    let s2c_malformed: Vec<&str> = of_kind(&evs, EventKind::Malformed)
        .iter()
        .map(|e| e.malformed.as_ref().unwrap().reason.as_str())
        .collect();
    assert_eq!(s2c_malformed, ["invalid_json", "invalid_utf8"]);
    // Server->client requests are correlated with the client's answers.
    for (method, id) in [("sampling/createMessage", "s1"), ("roots/list", "s2")] {
        let req = evs
            .iter()
            .find(|e| e.kind == EventKind::McpRequest && e.method.as_deref() == Some(method))
            .unwrap();
        assert_eq!(
            req.direction,
            Some(mcptrail_event::Direction::ServerToClient)
        );
        assert_eq!(req.request_id, Some(json!(id)));
        let answer = evs
            .iter()
            .find(|e| e.request_event_id.as_ref() == Some(&req.event_id))
            .expect("answer recorded");
        assert_eq!(
            answer.direction,
            Some(mcptrail_event::Direction::ClientToServer)
        );
        assert_eq!(answer.response_summary.as_ref().unwrap().status, Status::Ok);
        assert!(answer.duration_ms.unwrap() >= 0.0);
    }
    let call = evs
        .iter()
        .find(|e| {
            e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("anomalies")
        })
        .unwrap();
    assert_eq!(
        call.response_summary.as_ref().unwrap().preview.as_deref(),
        Some("anomalies done")
    );
    assert_eq!(
        call.server.as_ref().unwrap().name.as_deref(),
        Some("odd-server")
    );

    // The timeline nests the server's requests under the tool call that caused them.
    let (code, tl, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "timeline",
        "--session",
        "latest",
    ]);
    assert_eq!(code, 0, "{err}");
    let line_of = |needle: &str| {
        tl.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in\n{tl}"))
            .to_string()
    };
    let indent = |l: &str| l.split("  ").skip(1).take_while(|s| s.is_empty()).count();
    assert!(
        indent(&line_of("← sampling/createMessage")) > indent(&line_of("→ tools/call anomalies")),
        "{tl}"
    );
}

#[test]
fn fifty_mib_messages_are_relayed_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = teed_echo_server(dir.path());
    let mut w = Wrapped::start(&data, &[], &strs(&server));
    w.initialize("big-client");
    // 50 MiB from the server.
    let r = w.request(
        1,
        "tools/call",
        json!({"name": "big", "arguments": {"bytes": 50 * 1024 * 1024}}),
    );
    assert_eq!(
        r["result"]["content"][0]["text"].as_str().unwrap().len(),
        50 * 1024 * 1024
    );
    // 50 MiB to the server (rmcp drops lines this large without answering: that is recorded too).
    let big = "y".repeat(50 * 1024 * 1024);
    w.send_line(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text": big}}}).to_string());
    let r = w.request(
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "after"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "after");
    let (status, sent, received) = w.finish(Duration::from_secs(60));
    assert!(status.success());
    assert!(
        read_file(&dir.path().join("server_in.bin")) == sent,
        "50 MiB request relayed unchanged"
    );
    assert!(
        read_file(&dir.path().join("server_out.bin")) == received,
        "50 MiB response relayed unchanged"
    );

    let evs = events(&data);
    let big_resp = evs
        .iter()
        .find(|e| e.kind == EventKind::McpResponse && e.request_id == Some(json!(1)))
        .unwrap();
    let s = big_resp.response_summary.as_ref().unwrap();
    assert!(s.size > 50 * 1024 * 1024);
    let line = received
        .split(|&b| b == b'\n')
        .find(|l| l.len() > 50 * 1024 * 1024)
        .unwrap();
    assert_eq!(
        s.sha256.as_deref(),
        Some(mcptrail_event::sha256_hex(line).as_str())
    );
    assert!(
        s.preview.as_ref().unwrap().chars().count() <= 201,
        "preview stays short"
    );
    let big_req = evs
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.request_id == Some(json!(2)))
        .unwrap();
    assert!(big_req.flags.contains(&Flag::Oversize));
    assert!(
        big_req.parameters_used.is_none(),
        "oversize parameters are not stored"
    );
    assert!(big_req.parameters_digest.as_ref().unwrap().size > 50 * 1024 * 1024);
    let unanswered = evs
        .iter()
        .find(|e| {
            e.kind == EventKind::McpResponse
                && e.request_event_id.as_ref() == Some(&big_req.event_id)
        })
        .unwrap();
    assert_eq!(
        unanswered.response_summary.as_ref().unwrap().status,
        Status::NoResponse
    );
    assert!(unanswered.flags.contains(&Flag::Unanswered));
    // No stored line carries the payload.
    let ledger_bytes: u64 = std::fs::read_dir(data.join("ledger"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        ledger_bytes < 1024 * 1024,
        "ledger holds summaries, not payloads ({ledger_bytes} bytes)"
    );
}

#[test]
fn messages_over_the_parse_limit_are_hashed_not_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mcptrail.toml");
    std::fs::write(&cfg, "[tap]\nmax_message_bytes = 1048576\n").unwrap();
    let data = dir.path().join("data");
    let mut cmd = mcptrail();
    cmd.args([
        "--config",
        cfg.to_str().unwrap(),
        "wrap",
        "--data-dir",
        data.to_str().unwrap(),
        "--",
        target_bin("rmcp-echo-server").to_str().unwrap(),
    ]);
    let input = format!(
        "{}\n{}\n",
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"big","arguments":{"bytes": 3 * 1024 * 1024}}})
    );
    let out = run_with_input(cmd, input.as_bytes(), Duration::from_millis(1500));
    let big_line = out
        .split(|&b| b == b'\n')
        .find(|l| l.len() > 3 * 1024 * 1024)
        .expect("3 MiB response relayed");
    let evs = events(&data);
    let too_large = of_kind(&evs, EventKind::Malformed);
    assert_eq!(too_large.len(), 1);
    let m = too_large[0].malformed.as_ref().unwrap();
    assert_eq!(m.reason, "too_large");
    assert_eq!(m.digest.size, big_line.len() as u64);
    assert_eq!(m.digest.sha256, mcptrail_event::sha256_hex(big_line));
    assert!(too_large[0].flags.contains(&Flag::TooLargeToParse));
}

/// Feed `input`, keep stdin open for `linger` (so responses arrive), then close; return stdout.
pub(crate) fn run_with_input(
    mut cmd: std::process::Command,
    input: &[u8],
    linger: Duration,
) -> Vec<u8> {
    use std::io::{Read, Write};
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v
    });
    std::thread::sleep(linger);
    drop(stdin);
    let out = reader.join().unwrap();
    wait_timeout(&mut child, Duration::from_secs(20)).expect("exits");
    out
}
