//! What both ledger benches append: the shape of event the tap writes most, a `tools/call`
//! response with the who/where context every event carries (~1 KB stored line).

use mcptrail_event::{
    Event, EventKind, PeerInfo, ProcessInfo, ResponseSummary, ServerInfo, Status, UserIdentity,
};

/// The `i`-th sample event.
pub(crate) fn sample_event(i: u64) -> Event {
    let mut e = Event::new(EventKind::McpResponse);
    e.agent_id = Some("claude-desktop".into());
    e.session_id = Some("0193a0f0-0000-7000-8000-000000000001".into());
    e.method = Some("tools/call".into());
    e.tool_invoked = Some("read_file".into());
    e.request_id = Some(serde_json::json!(i));
    e.parameters_used = Some(serde_json::json!({"path": "/home/user/projects/report.md"}));
    e.response_summary = Some(ResponseSummary {
        status: Status::Ok,
        is_error: false,
        error_code: None,
        error_message: None,
        size: 1834,
        sha256: Some("9f2c".repeat(16)),
        preview: Some("# Quarterly report\nRevenue grew by".into()),
        content_types: vec!["text".into()],
    });
    e.duration_ms = Some(1.25);
    // The context every event the tap writes carries (~950 bytes per stored line in all).
    e.user_identity = Some(UserIdentity {
        principal: "alice".into(),
        source: "os".into(),
        os_user: Some("alice".into()),
        os_uid: Some(1000),
        claims: None,
    });
    e.client = Some(PeerInfo {
        name: "claude-desktop".into(),
        version: Some("0.14.2".into()),
    });
    e.host = Some("build-host-17".into());
    e.process = Some(ProcessInfo {
        tap_pid: 4581,
        server_pid: Some(4584),
        tap_version: "0.1.0".into(),
    });
    e.server = Some(ServerInfo {
        name: Some("filesystem".into()),
        version: Some("2026.8.31".into()),
        transport: "stdio".into(),
        command: vec![
            "npx".into(),
            "-y".into(),
            "@modelcontextprotocol/server-filesystem".into(),
        ],
        url: None,
    });
    e.request_event_id = Some("0193a0f0-0000-7000-8000-000000000002".into());
    e.protocol_version = Some("2025-11-25".into());
    e
}
