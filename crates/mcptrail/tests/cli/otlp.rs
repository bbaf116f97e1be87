//! The OTLP sink through the real binary: `mcptrail wrap` records a session with the
//! server-everything peer (one call carrying the caller's `traceparent` in `params._meta`),
//! `mcptrail ship` exports it to a real collector (rotel, OTLP/gRPC), `mcptrail doctor`
//! probes it.

use std::collections::HashSet;
use std::time::Duration;

use mcptrail_test_support::otlp::{OtlpCapture, Rotel, CALLER_TRACEPARENT};
use mcptrail_test_support::server_everything_cmd;
use serde_json::json;

use crate::support::*;

#[test]
fn otlp_wrap_then_ship_exports_the_session_to_rotel_and_doctor_probes_it() {
    let rx = OtlpCapture::start();
    let rotel = Rotel::start(&rx);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("mcptrail.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\nname = \"otel\"\ntype = \"otlp\"\nendpoint = \"{}\"\nprotocol = \"grpc\"\n",
            rotel.grpc_endpoint()
        ),
    )
    .unwrap();
    let server = server_everything_cmd();
    let mut w = Wrapped::start(&data, &[], &strs(&server));
    w.initialize("otlp-cli-test");
    let r = w.request(
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "hi"},
               "_meta": {"traceparent": CALLER_TRACEPARENT}}),
    );
    assert!(r.get("result").is_some(), "{r}");
    let r = w.request(2, "tools/list", json!({}));
    assert!(r.get("result").is_some(), "{r}");
    // server-everything's own exit status on stdin EOF is not this test's business; the
    // session must be closed in the record.
    let _ = w.finish(Duration::from_secs(30));
    assert!(events(&data)
        .iter()
        .any(|e| e.kind == mcptrail_event::EventKind::SessionEnd));
    let recorded: HashSet<String> = events(&data).into_iter().map(|e| e.event_id).collect();

    let cfg = config.to_str().unwrap();
    let data_s = data.to_str().unwrap();
    let (code, stdout, stderr) = run(&["--data-dir", data_s, "--config", cfg, "ship"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    rx.wait_until(
        "every event as a log record",
        Duration::from_secs(20),
        |rx| {
            let got: HashSet<String> = rx
                .log_records()
                .iter()
                .filter_map(|l| l["attrs"]["mcptrail.event_id"].as_str().map(String::from))
                .collect();
            recorded.iter().all(|id| got.contains(id))
        },
    );
    rx.wait_until("the spans", Duration::from_secs(20), |rx| {
        rx.spans().len() >= 6
    });
    let spans = rx.spans();
    let call: Vec<_> = spans
        .iter()
        .filter(|s| s["name"] == "tools/call echo")
        .collect();
    assert_eq!(call.len(), 2, "SERVER and CLIENT: {spans:#?}");
    let server = call
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER")
        .unwrap();
    let client = call
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .unwrap();
    assert_eq!(server["trace_id"], &CALLER_TRACEPARENT[3..35]);
    assert_eq!(server["parent_span_id"], &CALLER_TRACEPARENT[36..52]);
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(server["attrs"]["gen_ai.tool.name"], "echo");
    assert_eq!(server["attrs"]["network.transport"], "pipe");
    assert_eq!(server["attrs"]["mcp.protocol.version"], "2025-06-18");
    assert_eq!(server["resource"]["mcptrail.agent.id"], "otlp-cli-test");
    assert!(spans.iter().any(|s| s["name"] == "initialize"));
    assert!(spans.iter().any(|s| s["name"] == "tools/list"));

    let (code, stdout, stderr) = run(&["--data-dir", data_s, "--config", cfg, "doctor"]);
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("accepted empty export requests for traces, metrics, logs"),
        "exit {code}: {all}"
    );
}

/// A sink with no endpoint takes it, the protocol, the headers and the timeout from the
/// standard `OTEL_EXPORTER_OTLP_*` variables; the receiver refuses requests without the
/// header that came from the environment.
#[test]
fn otlp_settings_come_from_the_otel_environment_variables() {
    let rx = OtlpCapture::start_with(Some("X-Tenant: acme"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fx = mcptrail_test_support::otlp::write_mcp_session(&data, 3);
    let config = dir.path().join("mcptrail.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nname = \"otel\"\ntype = \"otlp\"\nsignals = [\"logs\"]\nbackoff_initial_ms = 50\n",
    )
    .unwrap();
    let out = mcptrail()
        .args(["--data-dir", data.to_str().unwrap(), "--config"])
        .arg(&config)
        .args(["ship", "--give-up-after", "20"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,x-unused=%20")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "5000")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    let got: HashSet<String> = rx
        .log_records()
        .iter()
        .filter_map(|l| l["attrs"]["mcptrail.event_id"].as_str().map(String::from))
        .collect();
    assert!(
        fx.event_ids.iter().all(|id| got.contains(id)),
        "every event reached the receiver named by the environment: {all}"
    );

    // A per-signal variable the sink cannot honour is refused, not ignored.
    let out = mcptrail()
        .args(["--data-dir", data.to_str().unwrap(), "--config"])
        .arg(&config)
        .args(["ship", "--status"])
        .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", rx.url())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT is set, but per-signal"),
        "{err}"
    );
}
