//! The OTLP sink against a real collector (rotel, over gRPC and OTLP/HTTP) whose output is
//! decoded with the official opentelemetry-proto messages; failure modes against the decoding
//! receiver directly (it answers 429/503, partial success and 401 as a collector does).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mcptrail_sinks::{SendErrorKind, ShipOptions, Shipper};
use mcptrail_test_support::otlp::{write_mcp_session, OtlpCapture, Rotel, SessionFixture};
use serde_json::Value;

use crate::common::*;

fn otlp_config(endpoint: &str, protocol: &str, extra: &str) -> mcptrail_sinks::SinkConfig {
    sink_config(&format!(
        "name = \"otel\"\ntype = \"otlp\"\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\nbackoff_initial_ms = 10\nbackoff_max_ms = 2000\ntimeout_secs = 5\n{extra}"
    ))
}

fn logged_ids(rx: &OtlpCapture) -> Vec<String> {
    rx.log_records()
        .iter()
        .filter_map(|l| l["attrs"]["mcptrail.event_id"].as_str().map(String::from))
        .collect()
}

fn wait_for_all(rx: &OtlpCapture, fx: &SessionFixture) {
    let want: HashSet<&String> = fx.event_ids.iter().collect();
    rx.wait_until(
        "every event as a log record",
        Duration::from_secs(20),
        |rx| {
            let got: HashSet<String> = logged_ids(rx).into_iter().collect();
            want.iter().all(|id| got.contains(*id))
        },
    );
}

/// Spans by (request event id, kind).
fn spans_by_request(rx: &OtlpCapture) -> HashMap<(String, String), Value> {
    rx.spans()
        .into_iter()
        .map(|s| {
            (
                (
                    s["attrs"]["mcptrail.request_event_id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    s["kind"].as_str().unwrap().to_string(),
                ),
                s,
            )
        })
        .collect()
}

fn check_session(rx: &OtlpCapture, fx: &SessionFixture, calls: usize) {
    wait_for_all(rx, fx);
    // Metrics come in their own request; wait for the operation histogram.
    rx.wait_until("the metrics", Duration::from_secs(20), |rx| {
        rx.metrics()
            .iter()
            .any(|m| m["name"] == "mcp.server.session.duration")
    });
    let logs = rx.log_records();
    assert_eq!(logs.len(), fx.event_ids.len(), "one log record per event");
    let alert = logs
        .iter()
        .find(|l| l["attrs"]["mcptrail.event.kind"] == "alert")
        .unwrap();
    assert_eq!(alert["severity_text"], "ERROR");
    assert_eq!(alert["attrs"]["mcptrail.alert.rule"], "secret_then_egress");
    assert!(logs.iter().all(|l| l["body"]["string_value"]
        .as_str()
        .is_some_and(|b| b.contains("\"event_id\""))));
    assert!(
        logs.iter().all(|l| !l["body"]["string_value"]
            .as_str()
            .unwrap()
            .contains("Zürich")),
        "no tool arguments in log bodies unless include_payloads"
    );

    let spans = spans_by_request(rx);
    // initialize, tools/list, calls, prompts/get, resources/read, the timed-out call.
    let answered = 2 + calls + 3;
    assert_eq!(
        spans.len(),
        2 * answered,
        "a SERVER and a CLIENT span per request"
    );
    for id in &fx.request_ids {
        let server = &spans[&(id.clone(), "SPAN_KIND_SERVER".to_string())];
        let client = &spans[&(id.clone(), "SPAN_KIND_CLIENT".to_string())];
        assert_eq!(
            client["parent_span_id"], server["span_id"],
            "CLIENT is the child of SERVER"
        );
        assert_eq!(client["trace_id"], server["trace_id"]);
        assert_eq!(
            server["start_time_unix_nano"],
            client["start_time_unix_nano"]
        );
        assert_eq!(server["resource"]["service.name"], "mcptrail");
        assert_eq!(server["resource"]["host.name"], "fixture-host");
        assert_eq!(server["resource"]["mcptrail.agent.id"], "fixture-agent");
        assert_eq!(server["attrs"]["mcp.session.id"], fx.session_id.as_str());
        assert_eq!(server["attrs"]["network.transport"], "pipe");
        assert_eq!(server["attrs"]["jsonrpc.protocol.version"], "2.0");
        assert_eq!(server["attrs"]["mcp.protocol.version"], "2025-06-18");
    }
    // A request's log record links to the SERVER span of that request.
    let mut linked = 0;
    for l in logs
        .iter()
        .filter(|l| l["attrs"]["mcptrail.event.kind"] == "mcp.request")
    {
        let id = l["attrs"]["mcptrail.event_id"]
            .as_str()
            .unwrap()
            .to_string();
        if let Some(server) = spans.get(&(id, "SPAN_KIND_SERVER".to_string())) {
            assert_eq!(l["trace_id"], server["trace_id"], "{l}");
            assert_eq!(l["span_id"], server["span_id"], "{l}");
            linked += 1;
        }
    }
    assert_eq!(
        linked, answered,
        "every answered request's log record is linked"
    );
    // The first tool call carried the caller's traceparent: its spans continue that trace.
    let first_call = &fx.request_ids[2];
    let server = &spans[&(first_call.clone(), "SPAN_KIND_SERVER".to_string())];
    assert_eq!(server["trace_id"], fx.caller.0.as_str());
    assert_eq!(server["parent_span_id"], fx.caller.1.as_str());
    assert_eq!(server["name"], "tools/call get-weather");
    assert_eq!(server["attrs"]["gen_ai.tool.name"], "get-weather");
    assert_eq!(server["attrs"]["gen_ai.operation.name"], "execute_tool");
    assert_eq!(server["attrs"]["jsonrpc.request.id"], "3");
    assert!(server["attrs"].get("gen_ai.tool.call.arguments").is_none());
    assert_eq!(
        server["resource"]["mcptrail.server.tool_catalog.hash"],
        fx.catalog_hash.as_str()
    );
    // Call 5 (index 4) is a tool error; call 7 (index 6) a JSON-RPC -32602, which only the
    // CLIENT side counts as an error.
    let tool_error = &spans[&(
        fx.request_ids[2 + 4].clone(),
        "SPAN_KIND_CLIENT".to_string(),
    )];
    assert_eq!(tool_error["attrs"]["error.type"], "tool_error");
    assert_eq!(tool_error["status"]["code"], "STATUS_CODE_ERROR");
    let bad = &fx.request_ids[2 + 6];
    let c = &spans[&(bad.clone(), "SPAN_KIND_CLIENT".to_string())];
    let s = &spans[&(bad.clone(), "SPAN_KIND_SERVER".to_string())];
    assert_eq!(c["attrs"]["error.type"], "-32602");
    assert_eq!(c["attrs"]["rpc.response.status_code"], "-32602");
    assert_eq!(c["status"]["message"], "Unknown tool: nope");
    assert!(s["attrs"].get("error.type").is_none(), "{s}");
    assert_eq!(s["attrs"]["rpc.response.status_code"], "-32602");
    let prompt = &spans[&(
        fx.request_ids[2 + calls].clone(),
        "SPAN_KIND_SERVER".to_string(),
    )];
    assert_eq!(prompt["name"], "prompts/get summarise");
    assert_eq!(prompt["attrs"]["gen_ai.prompt.name"], "summarise");
    let resource = &spans[&(
        fx.request_ids[3 + calls].clone(),
        "SPAN_KIND_SERVER".to_string(),
    )];
    assert_eq!(
        resource["name"], "resources/read",
        "no URI in the name (cardinality)"
    );
    assert_eq!(resource["attrs"]["mcp.resource.uri"], "file:///etc/motd");
    let timeout = &spans[&(
        fx.request_ids[4 + calls].clone(),
        "SPAN_KIND_SERVER".to_string(),
    )];
    assert_eq!(timeout["attrs"]["error.type"], "timeout");

    let metrics = rx.metrics();
    let named = |n: &'static str| metrics.iter().filter(move |m| m["name"] == n);
    for n in [
        "mcp.server.operation.duration",
        "mcp.client.operation.duration",
        "mcp.server.session.duration",
        "mcp.client.session.duration",
    ] {
        let m = named(n).next().unwrap_or_else(|| panic!("no {n}"));
        assert_eq!(m["unit"], "s");
        assert_eq!(
            m["histogram"]["aggregation_temporality"],
            "AGGREGATION_TEMPORALITY_DELTA"
        );
    }
    let ops: u64 = named("mcp.server.operation.duration")
        .flat_map(|m| m["histogram"]["data_points"].as_array().unwrap().clone())
        .map(|p| p["count"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(ops, answered as u64);
    let events: i64 = named("mcptrail.events")
        .flat_map(|m| m["sum"]["data_points"].as_array().unwrap().clone())
        .map(|p| p["as_int"].as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(events, fx.event_ids.len() as i64);
    assert!(named("mcptrail.redactions").next().is_some());
    assert!(named("mcptrail.alerts").next().is_some());
}

#[test]
fn otlp_grpc_to_rotel_spans_metrics_and_logs_with_conventions_and_parents() {
    let rx = OtlpCapture::start();
    let rotel = Rotel::start(&rx);
    let dir = tempfile::tempdir().unwrap();
    let fx = write_mcp_session(dir.path(), 20);
    let st = ship(dir.path(), &otlp_config(&rotel.grpc_endpoint(), "grpc", ""));
    assert_eq!(st.shipped as usize, fx.event_ids.len(), "{st:?}");
    check_session(&rx, &fx, 20);
}

#[test]
fn otlp_http_gzip_to_rotel_in_small_batches() {
    let rx = OtlpCapture::start();
    let rotel = Rotel::start(&rx);
    let dir = tempfile::tempdir().unwrap();
    let fx = write_mcp_session(dir.path(), 20);
    let cfg = otlp_config(
        &rotel.http_endpoint(),
        "http/protobuf",
        "compression = \"gzip\"\nbatch_max_events = 7\n",
    );
    let st = ship(dir.path(), &cfg);
    assert_eq!(st.shipped as usize, fx.event_ids.len(), "{st:?}");
    check_session(&rx, &fx, 20);

    // The sink's own gauges, one point per batch: the records still to ship after it.
    let total = fx.event_ids.len() as i64;
    let batches = (total + 6) / 7;
    let want: HashSet<i64> = (1..=batches).map(|b| (total - 7 * b).max(0)).collect();
    rx.wait_until("a lag point per batch", Duration::from_secs(20), |rx| {
        rx.metrics()
            .iter()
            .filter(|m| m["name"] == "mcptrail.sink.lag")
            .count()
            >= want.len()
    });
    let metrics = rx.metrics();
    let mut got = HashSet::new();
    for m in metrics.iter().filter(|m| m["name"] == "mcptrail.sink.lag") {
        assert_eq!(m["unit"], "{record}");
        assert_eq!(m["resource"]["service.name"], "mcptrail");
        assert!(m["resource"]["host.name"].is_string(), "{m}");
        for p in m["gauge"]["data_points"].as_array().unwrap() {
            let attrs = mcptrail_test_support::otlp::attributes(&p["attributes"]);
            assert_eq!(attrs["mcptrail.sink.name"], "otel");
            got.insert(p["as_int"].as_str().unwrap().parse::<i64>().unwrap());
        }
    }
    assert_eq!(got, want, "records behind after each batch of 7");
    let age = metrics
        .iter()
        .find(|m| m["name"] == "mcptrail.sink.lag.age")
        .expect("the age gauge");
    assert_eq!(age["unit"], "s");
    let secs = age["gauge"]["data_points"][0]["as_double"]
        .as_f64()
        .unwrap();
    assert!((0.0..600.0).contains(&secs), "{secs}");
}

#[test]
fn otlp_receiver_down_then_up_loses_nothing() {
    let rx = OtlpCapture::start();
    let mut rotel = Rotel::start(&rx);
    rotel.kill();
    let dir = tempfile::tempdir().unwrap();
    let fx = write_mcp_session(dir.path(), 30);
    let cfg = otlp_config(&rotel.grpc_endpoint(), "grpc", "batch_max_events = 10\n");
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let st = Shipper::new(dir.path(), cfg.clone(), sink, None)
        .run(&ShipOptions {
            jitter_seed: Some(1),
            give_up_after: Some(Duration::from_millis(300)),
            ..ShipOptions::default()
        })
        .unwrap();
    assert!(st.gave_up && st.shipped == 0 && st.cursor == 0, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .starts_with("connect error"),
        "{st:?}"
    );
    rotel.restart();
    let st = ship(dir.path(), &cfg);
    assert_eq!(st.shipped as usize, fx.event_ids.len());
    wait_for_all(&rx, &fx);
    let got: HashSet<String> = logged_ids(&rx).into_iter().collect();
    assert_eq!(
        got.len(),
        fx.event_ids.len(),
        "every event, counted by event id"
    );
}

#[test]
fn otlp_throttling_and_partial_success_are_retried_and_resends_keep_their_ids() {
    let rx = OtlpCapture::start();
    // The three signals of a batch go out at once: the first attempt meets 503, 429 and 503,
    // the second one 429 (the two others accepted), the third succeeds.
    rx.control(&serde_json::json!({"fail_next": [503, 429, 503, 429], "retry_after": 1}));
    let dir = tempfile::tempdir().unwrap();
    let fx = write_mcp_session(dir.path(), 10);
    let cfg = otlp_config(&rx.url(), "http/protobuf", "");
    let t = std::time::Instant::now();
    let st = ship(dir.path(), &cfg);
    assert_eq!(st.failures, 2, "{st:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "Retry-After: 1 honoured twice"
    );
    assert_eq!(st.shipped as usize, fx.event_ids.len());
    let first_spans: HashSet<String> = rx
        .spans()
        .iter()
        .map(|s| s["span_id"].as_str().unwrap().to_string())
        .collect();

    // A partial success: the traces request of the next batch is refused in part, so the
    // batch is sent again; the spans come back with the same ids (receivers can dedupe).
    let dir2 = tempfile::tempdir().unwrap();
    let fx2 = write_mcp_session(dir2.path(), 5);
    rx.control(&serde_json::json!({"reject_next": 2, "reject_signal": "traces"}));
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut shipper = Shipper::new(dir2.path(), cfg.clone(), sink, None);
    let st = shipper
        .run(&ShipOptions {
            jitter_seed: Some(1),
            ..ShipOptions::default()
        })
        .unwrap();
    assert_eq!(st.failures, 1, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("partial success"),
        "{st:?}"
    );
    let spans2: Vec<Value> = rx
        .spans()
        .into_iter()
        .filter(|s| !first_spans.contains(s["span_id"].as_str().unwrap()))
        .collect();
    let ids: Vec<&str> = spans2
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        2 * unique.len(),
        "every span twice, with the same id"
    );
    let logged: Vec<String> = logged_ids(&rx);
    for id in &fx2.event_ids {
        assert_eq!(
            logged.iter().filter(|l| *l == id).count(),
            1,
            "logs went once: the retry skipped the signals already accepted"
        );
    }
}

#[test]
fn otlp_wrong_token_is_rejected_and_never_shown() {
    let rx = OtlpCapture::start_with(Some("authorization: Bearer right-token-123"));
    let dir = tempfile::tempdir().unwrap();
    let fx = write_mcp_session(dir.path(), 2);
    std::env::set_var("MCPTRAIL_TEST_OTLP_TOKEN_WRONG", "Bearer wrong-token-456");
    std::env::set_var("MCPTRAIL_TEST_OTLP_TOKEN_RIGHT", "Bearer right-token-123");
    let wrong = otlp_config(
        &rx.url(),
        "http/protobuf",
        "headers = { authorization = { env = \"MCPTRAIL_TEST_OTLP_TOKEN_WRONG\" } }\n",
    );
    let mut sink = mcptrail_sinks::build(&wrong).unwrap();
    let e = sink.probe().unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected);
    assert!(
        e.message.contains("401") && e.message.contains("credentials"),
        "{e}"
    );
    let shown = format!("{e:?} {wrong:?}");
    assert!(!shown.contains("wrong-token-456"), "{shown}");
    let right = otlp_config(
        &rx.url(),
        "http/protobuf",
        "headers = { authorization = { env = \"MCPTRAIL_TEST_OTLP_TOKEN_RIGHT\" } }\n",
    );
    let probed = mcptrail_sinks::build(&right).unwrap().probe().unwrap();
    assert!(
        probed.contains("accepted empty export requests for traces, metrics, logs"),
        "{probed}"
    );
    assert_eq!(
        ship(dir.path(), &right).shipped as usize,
        fx.event_ids.len()
    );
    assert!(rx.counters()["unauthorized"].as_u64().unwrap() >= 1);
}

#[test]
fn otlp_payloads_only_when_configured_even_across_batches() {
    let rx = OtlpCapture::start();
    let dir = tempfile::tempdir().unwrap();
    let fx = write_mcp_session(dir.path(), 3);
    // One event per batch: every response arrives in a later batch than its request.
    let cfg = otlp_config(
        &rx.url(),
        "http/protobuf",
        "include_payloads = true\nbatch_max_events = 1\nsignals = [\"traces\", \"logs\"]\n",
    );
    assert_eq!(ship(dir.path(), &cfg).shipped as usize, fx.event_ids.len());
    assert!(rx.metrics().is_empty(), "metrics were not asked for");
    let spans = spans_by_request(&rx);
    let call = &spans[&(fx.request_ids[2].clone(), "SPAN_KIND_SERVER".to_string())];
    let args = call["attrs"]["gen_ai.tool.call.arguments"]
        .as_str()
        .unwrap();
    assert!(
        args.contains("[REDACTED:api_key]") && args.contains("Zürich"),
        "{args}"
    );
    assert_eq!(call["attrs"]["gen_ai.tool.call.result"], "Sunny, 21 °C");
    let prompt = &spans[&(
        fx.request_ids[2 + 3].clone(),
        "SPAN_KIND_SERVER".to_string(),
    )];
    assert_eq!(prompt["attrs"]["gen_ai.prompt.variable.style"], "short");
    assert!(rx.log_records().iter().any(|l| l["body"]["string_value"]
        .as_str()
        .unwrap()
        .contains("Zürich")));
}

#[test]
fn otlp_config_errors_name_the_sink_and_the_key() {
    let parse = |extra: &str| {
        let table: toml::Table =
            toml::from_str(&format!("name = \"otel\"\ntype = \"otlp\"\n{extra}")).unwrap();
        mcptrail_sinks::SinkConfig::from_table(table)
            .unwrap_err()
            .to_string()
    };
    let e = parse("endpont = \"http://127.0.0.1:4317\"\n");
    assert!(
        e.contains("sink \"otel\"") && e.contains("endpont") && e.contains("endpoint"),
        "{e}"
    );
    let e = parse("endpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpcc\"\n");
    assert!(e.contains("grpcc") && e.contains("http/protobuf"), "{e}");
    let e = parse("endpoint = \"http://127.0.0.1:4317\"\nsignals = [\"trace\"]\n");
    assert!(e.contains("trace") && e.contains("traces"), "{e}");
    let e = parse("endpoint = \"http://user:pw@127.0.0.1:4317\"\n");
    assert!(e.contains("headers") && !e.contains("pw"), "{e}");
    let e = parse("endpoint = \"127.0.0.1:4317\"\n");
    assert!(e.contains("http://"), "{e}");
    let e = parse("endpoint = \"http://127.0.0.1:4317\"\nheaders = { te = \"x\" }\n");
    assert!(e.contains("`te`"), "{e}");
}

#[test]
fn otlp_probe_answers_for_rotel_and_a_dead_port_is_a_connect_error() {
    let rx = OtlpCapture::start();
    let rotel = Rotel::start(&rx);
    for (endpoint, protocol) in [
        (rotel.grpc_endpoint(), "grpc"),
        (rotel.http_endpoint(), "http/protobuf"),
    ] {
        let msg = mcptrail_sinks::build(&otlp_config(&endpoint, protocol, ""))
            .unwrap()
            .probe()
            .unwrap_or_else(|e| panic!("{protocol}: {e}\n{}", rotel.output()));
        assert!(msg.contains("accepted empty export requests"), "{msg}");
    }
    let dead = format!(
        "http://127.0.0.1:{}",
        mcptrail_test_support::sinks::free_loopback_port()
    );
    for protocol in ["grpc", "http/protobuf"] {
        let e = mcptrail_sinks::build(&otlp_config(&dead, protocol, ""))
            .unwrap()
            .probe()
            .unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Connect, "{protocol}: {e}");
    }
}
