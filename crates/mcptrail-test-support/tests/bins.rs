//! Smoke tests for this package's binaries (`rmcp-echo-server`, `rmcp-client`,
//! `mcp-bench`) and for the `target_bin` / peer fixtures that locate them.

use std::path::PathBuf;
use std::process::{Command, Output};

use mcptrail_test_support::{server_everything_cmd, target_bin};
use serde_json::Value;

fn run_ok(cmd: &mut Command) -> Value {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "{cmd:?} failed ({status}):\n{stderr}");
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd:?} printed non-JSON ({e}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

#[test]
fn target_bin_finds_the_cargo_built_binaries() {
    for (name, built) in [
        ("rmcp-echo-server", env!("CARGO_BIN_EXE_rmcp-echo-server")),
        ("rmcp-client", env!("CARGO_BIN_EXE_rmcp-client")),
        ("mcp-bench", env!("CARGO_BIN_EXE_mcp-bench")),
    ] {
        assert_eq!(target_bin(name), PathBuf::from(built), "{name}");
    }
}

#[test]
fn rmcp_client_drives_rmcp_echo_server() {
    let doc = run_ok(
        Command::new(target_bin("rmcp-client"))
            .args([
                "--call",
                r#"echo={"text":"hi ✓"}"#,
                "--call",
                r#"add={"a":2,"b":40}"#,
                "--call",
                r#"big={"bytes":100000}"#,
                "--call",
                "fail",
                "--call",
                r#"slow={"ms":20}"#,
                "--",
            ])
            .arg(target_bin("rmcp-echo-server")),
    );
    assert_eq!(doc["server_info"]["name"], "rmcp-echo-server");
    assert_eq!(
        doc["tools"],
        serde_json::json!(["echo", "add", "big", "fail", "slow"])
    );
    let calls = doc["calls"].as_array().unwrap();
    let text = |i: usize| calls[i]["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(text(0), "hi ✓");
    assert_eq!(text(1), "42");
    assert_eq!(text(2).len(), 100_000);
    assert!(text(2).bytes().all(|b| b == b'x'));
    assert_eq!(calls[3]["result"]["isError"], true);
    assert_eq!(text(4), "done");
}

#[test]
fn rmcp_client_fails_loudly_on_a_protocol_error() {
    let out = Command::new(target_bin("rmcp-client"))
        .args(["--call", "no-such-tool", "--"])
        .arg(target_bin("rmcp-echo-server"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-tool"), "{stderr}");
}

#[test]
fn mcp_bench_reports_every_field() {
    let report = run_ok(
        Command::new(target_bin("mcp-bench"))
            .args([
                "--calls",
                "200",
                "--pipelined",
                "1000",
                "--warmup",
                "10",
                "--label",
                "smoke",
                "--",
            ])
            .arg(target_bin("rmcp-echo-server")),
    );
    assert_eq!(report["label"], "smoke");
    assert_eq!(report["calls"], 200);
    assert_eq!(report["pipelined_requests"], 1000);
    for key in [
        "p50_us",
        "p90_us",
        "p99_us",
        "max_us",
        "calls_per_s",
        "pipelined_msgs_per_s",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    let p = |k: &str| report[k].as_f64().unwrap();
    assert!(p("p50_us") <= p("p90_us") && p("p90_us") <= p("p99_us") && p("p99_us") <= p("max_us"));
}

#[test]
fn rmcp_client_drives_server_everything() {
    let doc = run_ok(
        Command::new(target_bin("rmcp-client"))
            .args(["--call", r#"echo={"message":"via rmcp"}"#, "--"])
            .args(server_everything_cmd()),
    );
    assert_eq!(doc["server_info"]["name"], "mcp-servers/everything");
    let tools: Vec<&str> = doc["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tools.contains(&"echo"), "{tools:?}");
    assert_eq!(
        doc["calls"][0]["result"]["content"][0]["text"],
        "Echo: via rmcp"
    );
}
