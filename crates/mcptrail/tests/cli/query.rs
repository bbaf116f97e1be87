//! `log`, `timeline`, `verify`, `reindex`, `schema` and config errors, through the real CLI.

use std::time::Duration;

use mcptrail_test_support::target_bin;
use serde_json::json;

use crate::support::*;

/// Record a small session and return its data dir.
fn recorded() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut w = Wrapped::start(
        &data,
        &[],
        &[target_bin("rmcp-echo-server").to_str().unwrap()],
    );
    w.initialize("query-client");
    w.request(1, "tools/list", json!({}));
    w.request(
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "find me"}}),
    );
    w.request(3, "tools/call", json!({"name": "fail", "arguments": {}}));
    w.request(
        4,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
    );
    let (st, _, _) = w.finish(Duration::from_secs(10));
    assert!(st.success());
    let d = data.display().to_string();
    (dir, d)
}

#[test]
fn log_filters_and_formats() {
    let (_dir, data) = recorded();
    let (code, out, err) = run(&["--data-dir", &data, "log", "--tool", "echo", "--json"]);
    assert_eq!(code, 0, "{err}");
    let evs: Vec<mcptrail_event::Event> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs.len(), 2, "request and response of the echo call");
    assert!(evs
        .iter()
        .all(|e| e.tool_invoked.as_deref() == Some("echo")));
    assert_eq!(evs[0].parameters_used, Some(json!({"text": "find me"})));

    let (_, out, _) = run(&["--data-dir", &data, "log", "--status", "error", "--json"]);
    let evs: Vec<mcptrail_event::Event> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].tool_invoked.as_deref(), Some("fail"));
    assert!(evs[0].response_summary.as_ref().unwrap().is_error);

    let (_, out, _) = run(&["--data-dir", &data, "log", "--kind", "session.*", "--json"]);
    assert_eq!(out.lines().count(), 2);
    let (_, out, _) = run(&[
        "--data-dir",
        &data,
        "log",
        "--agent",
        "query-client",
        "--since",
        "1h",
        "--json",
    ]);
    assert!(out.lines().count() >= 10);
    let (_, out, _) = run(&[
        "--data-dir",
        &data,
        "log",
        "--until",
        "2000-01-01",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 0);
    let (_, out, _) = run(&["--data-dir", &data, "log", "-n", "3", "--json"]);
    let last3: Vec<mcptrail_event::Event> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(last3.len(), 3);
    assert!(last3[0].seq < last3[2].seq, "newest N, oldest first");
    assert_eq!(last3[2].kind, mcptrail_event::EventKind::SessionEnd);

    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let (_, out, _) = run(&[
        "--data-dir",
        &data,
        "log",
        "--user",
        &user,
        "--kind",
        "mcp.request",
        "--json",
    ]);
    assert!(
        out.lines().count() >= 5,
        "user filter finds the OS user's events"
    );

    let (code, table, _) = run(&["--data-dir", &data, "log"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("SEQ"), "{table}");
    assert!(table.contains("tools/call echo"));

    let (code, _, err) = run(&["--data-dir", &data, "log", "--kind", "mcp.requset"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown kind `mcp.requset`") && err.contains("mcp.request"),
        "{err}"
    );
    let (code, _, err) = run(&["--data-dir", &data, "log", "--since", "last tuesday"]);
    assert_eq!(code, 2);
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn timeline_shows_the_session_as_a_tree() {
    let (_dir, data) = recorded();
    let (_, out, _) = run(&[
        "--data-dir",
        &data,
        "log",
        "--kind",
        "session.start",
        "--json",
    ]);
    let start: mcptrail_event::Event = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let sid = start.session_id.unwrap();
    let (code, tl, err) = run(&["--data-dir", &data, "timeline", "--session", &sid[..13]]);
    assert_eq!(code, 0, "{err}");
    assert!(tl.starts_with(&format!("session {sid}")), "{tl}");
    assert!(tl.contains("client query-client 1.2.3"), "{tl}");
    assert!(tl.contains("server rmcp-echo-server"), "{tl}");
    let lines: Vec<&str> = tl.lines().collect();
    let call = lines
        .iter()
        .position(|l| l.contains("→ tools/call echo #2"))
        .expect(&tl);
    assert!(lines[call].contains(r#"{"text":"find me"}"#));
    assert!(
        lines[call + 1].contains("← ok")
            && lines[call + 1].contains(" ms")
            && lines[call + 1].contains("find me"),
        "{tl}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("← error") && l.contains("fail") || l.contains("← error")),
        "{tl}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .contains("session.end  client_eof, exit 0"),
        "{tl}"
    );
    let (code, _, err) = run(&["--data-dir", &data, "timeline", "--session", "ffff"]);
    assert_eq!(code, 2);
    assert!(err.contains("no session matches"), "{err}");
}

#[test]
fn verify_reports_tampering_and_reindex_rebuilds() {
    let (_dir, data) = recorded();
    let (code, out, _) = run(&["--data-dir", &data, "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK    hash chain intact"), "{out}");
    // The tap signed a checkpoint covering the session when it ended.
    let records = out
        .split("seq 1..=")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert!(
        out.contains(&format!(
            "1 signed checkpoint matches the records (latest covers seq 1..={records})"
        )),
        "{out}"
    );
    // An auditor passes the public key they were handed; a different key trusts nothing.
    let vkey = format!("{data}/keys/checkpoint.vkey");
    let (code, out, err) = run(&["--data-dir", &data, "verify", "--key", &vkey]);
    assert_eq!(code, 0, "{out}{err}");
    let stranger = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let (code, out, _) = run(&["--data-dir", &data, "verify", "--key", stranger]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("not a valid checkpoint signed by the trusted key"),
        "{out}"
    );

    // An attacker edits a tool argument in the ledger.
    let seg = std::fs::read_dir(format!("{data}/ledger"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(&seg, text.replacen("find me", "find ME", 1)).unwrap();
    let (code, out, _) = run(&["--data-dir", &data, "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("chain broken before seq"),
        "{out}"
    );
    let (code, json_out, _) = run(&["--data-dir", &data, "verify", "--json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    // Sorted by place: the edited record's MAC fails, then the link after it.
    assert_eq!(report["problems"][0]["problem"], "mac_invalid");
    assert_eq!(report["problems"][1]["problem"], "chain_broken");
    assert_eq!(report["verdict"], "tampered");

    // The index is derived: deleting it loses nothing.
    let (code, _, err) = run(&["--data-dir", &data, "log", "-n", "1"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(format!("{data}/index.sqlite")).unwrap();
    let (code, out, err) = run(&["--data-dir", &data, "reindex"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("reindexed "), "{out}");
    let (_, out, _) = run(&["--data-dir", &data, "log", "--json"]);
    assert!(out.lines().count() >= 12);
}

#[test]
fn schema_is_published_and_config_errors_name_the_key() {
    let (code, out, _) = run(&["schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    for f in [
        "schema_version",
        "event_id",
        "seq",
        "time",
        "agent_id",
        "session_id",
        "tool_invoked",
        "parameters_used",
        "response_summary",
        "user_identity",
        "prev_hash",
    ] {
        assert!(schema["properties"].get(f).is_some(), "schema lacks {f}");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[tap]\nheartbeat_secs = 5\n").unwrap();
    let (code, out, err) = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
        "wrap",
        "--",
        "true",
    ]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("heartbeat_secs") && err.contains("bad.toml"),
        "{err}"
    );
    let (code, _, err) = run(&["--data-dir", "/nonexistent-mcptrail", "log"]);
    assert_eq!(code, 2);
    assert!(err.contains("no ledger in /nonexistent-mcptrail"), "{err}");
}

#[test]
fn mcptrail_user_is_recorded_as_asserted_identity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = mcptrail();
    cmd.env("MCPTRAIL_USER", "alice@example.com").args([
        "wrap",
        "--data-dir",
        data.to_str().unwrap(),
        "--",
        "true",
    ]);
    let st = cmd.status().unwrap();
    assert!(st.success());
    let evs = events(&data);
    let u = evs[0].user_identity.as_ref().unwrap();
    // Pseudonymised by default: a stable keyed token, never the principal itself.
    assert!(u.principal.starts_with("[tok:user:"), "{}", u.principal);
    assert!(u.os_user.as_deref().unwrap().starts_with("[tok:user:"));
    assert_eq!(u.source, "env");
    assert!(evs[0].host.is_some());
    assert!(evs[0]
        .redactions
        .iter()
        .any(|r| r.rule == "pseudonymise_user" && r.path == "/user_identity"));
    let ledger_bytes: Vec<u8> = std::fs::read_dir(data.join("ledger"))
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!String::from_utf8_lossy(&ledger_bytes).contains("alice@example.com"));
    // The investigator still finds alice's events by her name (the key turns it into the token).
    let (code, out, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "log",
        "--user",
        "Alice@Example.com",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), evs.len());

    // Switched off, the principal is stored as asserted.
    let config = dir.path().join("mcptrail.toml");
    std::fs::write(&config, "[redact]\npseudonymise_user = false\n").unwrap();
    let data2 = dir.path().join("data2");
    let st = mcptrail()
        .env("MCPTRAIL_USER", "alice@example.com")
        .args(["--config", config.to_str().unwrap()])
        .args(["wrap", "--data-dir", data2.to_str().unwrap(), "--", "true"])
        .status()
        .unwrap();
    assert!(st.success());
    let evs = events(&data2);
    assert_eq!(
        evs[0].user_identity.as_ref().unwrap().principal,
        "alice@example.com"
    );
}

#[test]
fn errors_are_one_line_naming_the_cause_once() {
    let (code, out, err) = run(&[
        "wrap",
        "--data-dir",
        "/proc/mcptrail-cannot-exist",
        "--",
        "true",
    ]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("mcptrail: error: ") && err.contains("/proc/mcptrail-cannot-exist"),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "the cause once: {err}");
}

#[test]
fn the_server_command_may_follow_wrap_without_a_double_dash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Flags after the command are the server's, not wrap's.
    let out = mcptrail()
        .args([
            "wrap",
            "--data-dir",
            data.to_str().unwrap(),
            "sh",
            "-c",
            "echo \"$0 $1\"; exit 7",
            "--agent-id",
            "-x",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "--agent-id -x\n");
    let evs = events(&data);
    let start = &evs[0];
    assert_eq!(
        start.server.as_ref().unwrap().command,
        ["sh", "-c", "echo \"$0 $1\"; exit 7", "--agent-id", "-x"]
    );
    assert_eq!(
        start.agent_id, None,
        "--agent-id after the command is not wrap's"
    );
}
