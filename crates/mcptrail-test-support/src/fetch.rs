//! The egress tests' tool server and client in one place: the reference fetch server
//! (`mcp-server-fetch`, PyPI) as the tests run it, and the official Python SDK client
//! (`peers/py_client.py`) calling its `fetch` tool, over stdio (a command, e.g. `mcptrail wrap
//! --egress -- <fetch server>`) or Streamable HTTP (a gateway route).

use std::process::Command;

use serde_json::Value;

use crate::{python_peer, server_fetch_cmd, workspace_root};

/// The fetch server's command line with `robots.txt` ignored (the local sites have none).
pub fn fetch_server_cmd() -> Vec<String> {
    server_fetch_cmd(&["--ignore-robots-txt"])
}

/// Where the Python client finds the MCP server.
#[derive(Debug, Clone, Copy)]
pub enum McpAt<'a> {
    /// Spawn this command and speak stdio to it.
    Stdio(&'a [String]),
    /// Connect to this Streamable HTTP URL.
    Http(&'a str),
}

/// One `tools/call fetch` per entry of `calls` (the tool's arguments, e.g.
/// `{"url": …, "raw": true}`), in order, in one session; no other tool, resource or prompt
/// request. A call answered with a JSON-RPC error is recorded in the summary rather than
/// failing the client. Returns the client's JSON summary (`calls[i].is_error`,
/// `calls[i].content`, …); panics with the client's stderr when it fails.
/// `MCPTRAIL_CONFIG` and `MCPTRAIL_DATA_DIR` are removed from the environment, so a command
/// running `mcptrail` uses only what its arguments say.
pub fn fetch_through(at: McpAt<'_>, calls: &[Value]) -> Value {
    let mut cmd = Command::new(python_peer());
    cmd.arg(workspace_root().join("crates/mcptrail-test-support/peers/py_client.py"))
        .args(["--no-default-calls", "--no-extras", "--allow-call-errors"]);
    if let McpAt::Http(url) = at {
        cmd.arg("--url").arg(url);
    }
    for args in calls {
        cmd.arg("--call").arg(format!("fetch={args}"));
    }
    if let McpAt::Stdio(server) = at {
        cmd.arg("--").args(server);
    }
    let out = cmd
        .env_remove("MCPTRAIL_CONFIG")
        .env_remove("MCPTRAIL_DATA_DIR")
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
