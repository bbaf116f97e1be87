//! Real MCP software through the tap: server-everything (npm), the official Python SDK client,
//! rmcp as client and server. Each test taps the wire on both sides of `mcptrail wrap`
//! (client ⇄ tee ⇄ wrap ⇄ tee ⇄ server), so it can show that every byte crossed unchanged, that
//! the client saw what it sees in a direct run, and that the ledger holds exactly one correct
//! event per message.

use std::path::Path;
use std::process::Command;

use mcptrail_event::{sha256_hex, Direction, Event, EventKind};
use mcptrail_test_support::{python_peer, server_everything_cmd, target_bin, workspace_root};
use serde_json::Value;

use crate::support::*;

/// `client -- <this>`: the server behind `mcptrail wrap`, with the bytes on the client side
/// of the tap copied to `c_in.bin`/`c_out.bin` and on the server side to `s_in.bin`/`s_out.bin`.
fn tapped_both_sides(dir: &Path, data: &Path, server: &[String]) -> Vec<String> {
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let inner: Vec<String> = server.iter().map(|a| q(a)).collect();
    let server_side = format!(
        "tee {} | {} | tee {}",
        q(&dir.join("s_in.bin").display().to_string()),
        inner.join(" "),
        q(&dir.join("s_out.bin").display().to_string())
    );
    let script = format!(
        "tee {} | {} wrap --data-dir {} -- sh -c {} | tee {}",
        q(&dir.join("c_in.bin").display().to_string()),
        q(env!("CARGO_BIN_EXE_mcptrail")),
        q(&data.display().to_string()),
        q(&server_side),
        q(&dir.join("c_out.bin").display().to_string()),
    );
    vec!["sh".into(), "-c".into(), script]
}

fn python_client(args: &[&str], server: &[String]) -> Value {
    let script = workspace_root().join("crates/mcptrail-test-support/peers/py_client.py");
    let mut cmd = Command::new(python_peer());
    cmd.arg(script).args(args).arg("--").args(server);
    run_json(cmd)
}

fn rmcp_client(args: &[&str], server: &[String]) -> Value {
    let mut cmd = Command::new(target_bin("rmcp-client"));
    cmd.args(args).arg("--").args(server);
    run_json(cmd)
}

fn run_json(mut cmd: Command) -> Value {
    cmd.env_remove("MCPTRAIL_DATA_DIR")
        .env_remove("MCPTRAIL_CONFIG")
        .env_remove("MCPTRAIL_AGENT_ID");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{cmd:?} printed no JSON ({e})"))
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// The wire on both sides of the tap is identical, and the ledger holds one event per message,
/// each matching its line. Returns the events.
fn check_wire_and_ledger(dir: &Path, data: &Path, agent: &str) -> Vec<Event> {
    let c_in = read_file(&dir.join("c_in.bin"));
    let c_out = read_file(&dir.join("c_out.bin"));
    assert!(!c_in.is_empty() && !c_out.is_empty());
    assert!(
        read_file(&dir.join("s_in.bin")) == c_in,
        "the server received exactly what the client sent"
    );
    assert!(
        read_file(&dir.join("s_out.bin")) == c_out,
        "the client received exactly what the server sent"
    );

    let evs = events(data);
    let session_ids: std::collections::BTreeSet<_> =
        evs.iter().map(|e| e.session_id.clone().unwrap()).collect();
    assert_eq!(session_ids.len(), 1, "one session");
    for (direction, wire) in [
        (Direction::ClientToServer, &c_in),
        (Direction::ServerToClient, &c_out),
    ] {
        let messages: Vec<&Event> = evs
            .iter()
            .filter(|e| e.direction == Some(direction))
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::McpRequest
                        | EventKind::McpResponse
                        | EventKind::McpNotification
                        | EventKind::Malformed
                )
            })
            .collect();
        let wire = lines(wire);
        assert_eq!(
            messages.len(),
            wire.len(),
            "one event per {direction:?} message"
        );
        for (line, e) in wire.iter().zip(&messages) {
            let msg: Value = serde_json::from_slice(line).unwrap();
            assert!(
                e.flags.is_empty(),
                "a well-formed message carries no flag: {e:?}"
            );
            match e.kind {
                EventKind::McpRequest => {
                    assert_eq!(e.method.as_deref(), msg["method"].as_str());
                    assert_eq!(e.request_id.as_ref(), Some(&msg["id"]));
                    if e.method.as_deref() == Some("tools/call") {
                        assert_eq!(e.tool_invoked.as_deref(), msg["params"]["name"].as_str());
                        assert_eq!(e.parameters_used.as_ref(), msg["params"].get("arguments"));
                    }
                }
                EventKind::McpNotification => {
                    assert_eq!(e.method.as_deref(), msg["method"].as_str())
                }
                EventKind::McpResponse => {
                    assert_eq!(e.request_id.as_ref(), Some(&msg["id"]));
                    assert!(
                        e.request_event_id.is_some(),
                        "every answer is paired with its request"
                    );
                    assert!(e.duration_ms.unwrap() > 0.0);
                    let s = e.response_summary.as_ref().unwrap();
                    assert_eq!(s.size, line.len() as u64);
                    assert_eq!(s.sha256.as_deref(), Some(sha256_hex(line).as_str()));
                    let tool_error = msg["result"]["isError"] == true;
                    assert_eq!(s.is_error, tool_error);
                    assert_eq!(
                        s.status == mcptrail_event::Status::Error,
                        msg.get("error").is_some() || tool_error,
                        "a JSON-RPC error or an isError result is an error"
                    );
                }
                other => panic!("unexpected {other:?} for {}", String::from_utf8_lossy(line)),
            }
        }
    }
    // The essential fields, on every MCP event.
    for e in evs.iter().filter(|e| e.kind.as_str().starts_with("mcp.")) {
        assert_eq!(e.agent_id.as_deref(), Some(agent), "{e:?}");
        assert!(e
            .user_identity
            .as_ref()
            .is_some_and(|u| !u.principal.is_empty()));
        assert!(e.session_id.is_some() && e.time.ends_with('Z') && e.seq > 0);
    }
    let end = evs.last().unwrap();
    assert_eq!(end.kind, EventKind::SessionEnd);
    assert_eq!(
        end.session.as_ref().unwrap().end_reason.as_deref(),
        Some("client_eof")
    );
    evs
}

#[test]
fn python_sdk_client_and_server_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let direct = python_client(&[], &server_everything_cmd());
    let tapped = python_client(
        &[],
        &tapped_both_sides(dir.path(), &data, &server_everything_cmd()),
    );
    assert_eq!(
        direct, tapped,
        "the client sees the same session through the tap"
    );
    assert_eq!(
        tapped["calls"][1]["content"][0]["text"],
        "The sum of 2 and 40 is 42."
    );

    let evs = check_wire_and_ledger(dir.path(), &data, "mcp");
    let start = evs
        .iter()
        .find(|e| e.method.as_deref() == Some("initialize") && e.kind == EventKind::McpResponse)
        .unwrap();
    let server = start.server.as_ref().unwrap();
    assert_eq!(server.name.as_deref(), Some("mcp-servers/everything"));
    assert_eq!(server.version.as_deref(), Some("2.0.0"));
    assert_eq!(start.protocol_version.as_deref(), Some("2025-11-25"));
    assert!(start
        .session
        .as_ref()
        .unwrap()
        .server_capabilities
        .as_ref()
        .unwrap()
        .get("tools")
        .is_some());
    // tools/list, prompts/list, resources/list each become a catalog snapshot.
    let catalogs: Vec<&Event> = of_kind(&evs, EventKind::ToolCatalog);
    assert_eq!(catalogs.len(), 3);
    let tools = catalogs
        .iter()
        .find(|e| e.catalog.as_ref().unwrap().list == "tools")
        .unwrap()
        .catalog
        .as_ref()
        .unwrap();
    let mut names: Vec<&str> = tools.items.iter().map(|i| i.name.as_str()).collect();
    let mut listed: Vec<&str> = tapped["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    names.sort_unstable();
    listed.sort_unstable();
    assert_eq!(names, listed, "the snapshot holds every listed tool");
    assert!(tools.items.iter().all(|i| i.hash.len() == 64));
    let echo = evs
        .iter()
        .find(|e| e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("echo"))
        .unwrap();
    assert_eq!(
        echo.response_summary.as_ref().unwrap().preview.as_deref(),
        Some("Echo: hello from python")
    );
    assert!(
        echo.tool_schema_hash.is_some(),
        "the call names the schema the tool had when listed"
    );

    let (code, tl, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "timeline",
        "--session",
        "latest",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        tl.contains("→ tools/call get-sum") && tl.contains("The sum of 2 and 40 is 42."),
        "{tl}"
    );
}

#[test]
fn rmcp_client_and_rmcp_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = vec![target_bin("rmcp-echo-server").display().to_string()];
    let calls = [
        "--call",
        r#"echo={"text":"über ✓"}"#,
        "--call",
        r#"add={"a":2,"b":40}"#,
        "--call",
        "fail",
        "--call",
        r#"big={"bytes":200000}"#,
    ];
    let direct = rmcp_client(&calls, &server);
    let tapped = rmcp_client(&calls, &tapped_both_sides(dir.path(), &data, &server));
    assert_eq!(direct, tapped);
    let evs = check_wire_and_ledger(dir.path(), &data, "rmcp-client");
    let fail = evs
        .iter()
        .find(|e| e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("fail"))
        .unwrap();
    assert!(
        fail.response_summary.as_ref().unwrap().is_error,
        "isError results are visible in the record"
    );
    let big = evs
        .iter()
        .find(|e| e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("big"))
        .unwrap();
    assert!(big.response_summary.as_ref().unwrap().size > 200_000);
}

#[test]
fn rmcp_client_and_server_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let calls = [
        "--call",
        r#"echo={"message":"from rust"}"#,
        "--call",
        r#"get-sum={"a":1,"b":2}"#,
    ];
    let direct = rmcp_client(&calls, &server_everything_cmd());
    let tapped = rmcp_client(
        &calls,
        &tapped_both_sides(dir.path(), &data, &server_everything_cmd()),
    );
    assert_eq!(direct, tapped);
    let evs = check_wire_and_ledger(dir.path(), &data, "rmcp-client");
    let call = evs
        .iter()
        .find(|e| e.kind == EventKind::McpRequest && e.tool_invoked.as_deref() == Some("get-sum"))
        .unwrap();
    assert_eq!(
        call.parameters_used,
        Some(serde_json::json!({"a": 1, "b": 2}))
    );
}

#[test]
fn python_sdk_client_and_rmcp_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = vec![target_bin("rmcp-echo-server").display().to_string()];
    let args = [
        "--no-extras",
        "--call",
        r#"echo={"text":"py→rs"}"#,
        "--call",
        r#"slow={"ms":30}"#,
    ];
    let direct = python_client(&args, &server);
    let tapped = python_client(&args, &tapped_both_sides(dir.path(), &data, &server));
    assert_eq!(direct, tapped);
    let evs = check_wire_and_ledger(dir.path(), &data, "mcp");
    let slow = evs
        .iter()
        .find(|e| e.kind == EventKind::McpResponse && e.tool_invoked.as_deref() == Some("slow"))
        .unwrap();
    assert!(
        slow.duration_ms.unwrap() >= 30.0,
        "duration measured: {:?}",
        slow.duration_ms
    );
}
