//! The engine against hand-made event streams: each rule type and the built-in pack, rule
//! validation errors, exactly-once alerts across restarts (proptest: any restart points give
//! the alerts of one batch run), bounded memory, and false alerts on a long benign workload.

use mcptrail_detect::{
    Alert, DetectConfig, DetectError, Detector, Engine, RuleSet, Severity, BUILTIN_RULES,
};
use mcptrail_event::{Catalog, CatalogItem, Event, EventKind, ResponseSummary, ServerInfo, Status};
use proptest::prelude::*;
use serde_json::json;

/// Builds events with increasing `seq`, ids and times (ms after a fixed start).
struct Stream {
    seq: u64,
    events: Vec<Event>,
}

const T0: i64 = 1_764_064_800_000; // 2026-11-25T10:00:00Z

fn time_at(ms: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(T0 + ms) * 1_000_000).unwrap();
    mcptrail_event::format_rfc3339_nanos(t)
}

impl Stream {
    fn new() -> Self {
        Stream {
            seq: 0,
            events: Vec::new(),
        }
    }

    fn push(&mut self, at_ms: i64, kind: EventKind, f: impl FnOnce(&mut Event)) -> String {
        self.seq += 1;
        let mut e = Event::new(kind);
        e.seq = self.seq;
        e.event_id = format!("ev-{:06}", self.seq);
        e.time = time_at(at_ms);
        e.agent_id = Some("agent-a".into());
        e.session_id = Some("s1".into());
        e.server = Some(ServerInfo {
            name: Some("files".into()),
            transport: "stdio".into(),
            ..Default::default()
        });
        f(&mut e);
        let id = e.event_id.clone();
        self.events.push(e);
        id
    }

    fn catalog(&mut self, at: i64, session: &str, tools: &[&str]) -> String {
        let session = session.to_string();
        let items = tools
            .iter()
            .map(|t| CatalogItem {
                name: (*t).into(),
                hash: "h".into(),
            })
            .collect();
        self.push(at, EventKind::ToolCatalog, |e| {
            e.session_id = Some(session);
            e.catalog = Some(Catalog {
                list: "tools".into(),
                hash: "x".into(),
                items,
                next_cursor: None,
                changed: vec![],
                added: vec![],
                removed: vec![],
            });
        })
    }

    fn call(&mut self, at: i64, session: &str, tool: &str) -> String {
        let (session, tool) = (session.to_string(), tool.to_string());
        self.push(at, EventKind::McpRequest, |e| {
            e.session_id = Some(session);
            e.method = Some("tools/call".into());
            e.tool_invoked = Some(tool);
        })
    }

    fn response(
        &mut self,
        at: i64,
        session: &str,
        tool: &str,
        status: Status,
        ms: f64,
        labels: &[&str],
    ) -> String {
        let (session, tool) = (session.to_string(), tool.to_string());
        let labels = labels.iter().map(|l| (*l).to_string()).collect();
        self.push(at, EventKind::McpResponse, |e| {
            e.session_id = Some(session);
            e.method = Some("tools/call".into());
            e.tool_invoked = Some(tool);
            e.duration_ms = Some(ms);
            e.bytes_out = Some(800);
            e.labels = labels;
            e.response_summary = Some(ResponseSummary {
                status,
                is_error: status != Status::Ok,
                error_code: None,
                error_message: None,
                size: 800,
                sha256: None,
                preview: None,
                content_types: vec![],
            });
        })
    }

    fn egress(&mut self, at: i64, session: &str, host: &str, matched: Option<&str>) -> String {
        let session = session.to_string();
        let detail = json!({"host": host, "port": 443, "scheme": "https", "sni": host,
            "method": "CONNECT", "decision": "allow", "matched": matched});
        self.push(at, EventKind::NetEgress, |e| {
            e.session_id = Some(session);
            e.bytes_out = Some(4096);
            e.detail = Some(detail);
        })
    }
}

fn rules(extra: &str) -> RuleSet {
    let cfg: DetectConfig = toml::from_str(extra).unwrap();
    RuleSet::load(&cfg, &[], None).unwrap()
}

fn run(rules: RuleSet, events: &[Event]) -> Vec<Alert> {
    let mut engine = Engine::new(rules);
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    out
}

fn by_rule<'a>(alerts: &'a [Alert], rule: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| a.rule == rule).collect()
}

const MIN: i64 = 60_000;

#[test]
fn s3_secret_read_then_egress_to_an_unknown_host_in_the_same_session() {
    let mut s = Stream::new();
    s.catalog(0, "s1", &["read_text_file"]);
    s.call(1000, "s1", "read_text_file");
    let secret = s.response(1100, "s1", "read_text_file", Status::Ok, 3.0, &["secret"]);
    s.egress(2 * MIN, "s1", "api.github.com", Some("api.github.com")); // on the proxy's allow list
    s.egress(2 * MIN, "s2", "exfil.evil.test", None); // another session
    let bad = s.egress(3 * MIN, "s1", "exfil.evil.test", None);
    s.response(
        4 * MIN,
        "s3",
        "read_text_file",
        Status::Ok,
        3.0,
        &["secret"],
    );
    s.egress(10 * MIN, "s3", "late.evil.test", None); // more than 5 minutes later
    let alerts = run(rules(""), &s.events);
    let chain = by_rule(&alerts, "builtin.secret_then_egress");
    assert_eq!(chain.len(), 1, "{alerts:#?}");
    let a = chain[0];
    assert_eq!(a.evidence, vec![secret.clone(), bad.clone()]);
    assert_eq!(a.severity, Severity::Critical);
    assert!(a.summary.contains("exfil.evil.test:443"), "{}", a.summary);
    assert_eq!(a.group.get("session_id").map(String::as_str), Some("s1"));
    let ev = a.to_event("2026-11-25T11:00:00.000000000Z");
    assert_eq!(ev.kind, EventKind::Alert);
    assert_eq!(ev.event_id, a.id);
    let d = ev.detail.unwrap();
    assert_eq!(d["rule"], "builtin.secret_then_egress");
    assert_eq!(d["severity"], "critical");
    assert_eq!(d["evidence"], json!([secret, bad]));
    assert_eq!(d["source"], "detect");

    // With the host on the detect allow list, no alert.
    let alerts = run(
        rules("[lists]\negress_allow = [\"*.evil.test\"]\n"),
        &s.events,
    );
    assert!(by_rule(&alerts, "builtin.secret_then_egress").is_empty());
}

#[test]
fn sequence_with_a_join_key() {
    let r = rules(
        r#"builtin = false
[[rules]]
id = "read-then-send-same-file"
type = "sequence"
severity = "high"
summary = "{tool_invoked} sent {parameters_used.path}"
within = "1m"
steps = [
  { where = [{ field = "tool_invoked", equals = "read_file" }], key = "parameters_used.path" },
  { where = [{ field = "tool_invoked", equals = "http_post" }], key = "parameters_used.path" },
]
"#,
    );
    let mut s = Stream::new();
    let with_path = |tool: &'static str, path: &'static str| {
        move |e: &mut Event| {
            e.tool_invoked = Some(tool.into());
            e.parameters_used = Some(json!({ "path": path }));
        }
    };
    let a = s.push(
        0,
        EventKind::McpRequest,
        with_path("read_file", "/etc/passwd"),
    );
    s.push(
        1000,
        EventKind::McpRequest,
        with_path("http_post", "/tmp/other"),
    );
    let b = s.push(
        2000,
        EventKind::McpRequest,
        with_path("http_post", "/etc/passwd"),
    );
    let alerts = run(r, &s.events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].evidence, vec![a, b]);
    assert_eq!(alerts[0].summary, "http_post sent /etc/passwd");
}

#[test]
fn thresholds_slide_in_event_time() {
    let r = || {
        rules(
            r#"builtin = false
[[rules]]
id = "many-calls"
type = "threshold"
severity = "low"
summary = "{value} calls in {window} by {agent_id} ({group})"
where = [{ field = "kind", equals = "mcp.request" }]
group_by = ["agent_id"]
window = "1m"
threshold = 3

[[rules]]
id = "volume"
type = "threshold"
severity = "medium"
summary = "{value} bytes"
where = [{ field = "kind", equals = "net.egress" }]
window = "10m"
aggregate = "sum"
field = "bytes_out"
threshold = 10000

[[rules]]
id = "hosts"
type = "threshold"
severity = "medium"
summary = "{value} hosts"
where = [{ field = "kind", equals = "net.egress" }]
window = "10m"
aggregate = "distinct"
field = "detail.host"
threshold = 3
"#,
        )
    };
    let mut s = Stream::new();
    // Three calls, but never three within one minute.
    s.call(0, "s1", "t");
    s.call(40_000, "s1", "t");
    s.call(61_000, "s1", "t");
    assert!(run(r(), &s.events).is_empty(), "the first call slid out");
    let third = s.call(70_000, "s1", "t");
    let alerts = run(r(), &s.events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].value, Some(3.0));
    assert_eq!(alerts[0].evidence.last(), Some(&third));
    assert_eq!(
        alerts[0].summary,
        "3 calls in 1m by agent-a (agent_id=agent-a)"
    );
    // The window restarts after an alert.
    s.call(71_000, "s1", "t");
    assert_eq!(run(r(), &s.events).len(), 1);

    let mut s = Stream::new();
    s.egress(0, "s1", "a.test", None);
    s.egress(1000, "s1", "a.test", None);
    assert!(run(r(), &s.events).is_empty(), "8 KiB, one host");
    s.egress(2000, "s1", "b.test", None);
    let alerts = run(r(), &s.events);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].rule, "volume");
    assert_eq!(alerts[0].value, Some(12288.0));
    s.egress(3000, "s1", "c.test", None);
    let alerts = run(r(), &s.events);
    assert_eq!(by_rule(&alerts, "hosts").len(), 1);
    assert_eq!(
        by_rule(&alerts, "hosts")[0].evidence.len(),
        3,
        "one event per host"
    );
}

#[test]
fn builtin_error_rate_latency_auth_and_unknown_tools() {
    let mut s = Stream::new();
    s.catalog(0, "s1", &["good"]);
    // 20 calls, 9 failures: below half.
    for i in 0..20 {
        let st = if i < 9 { Status::Error } else { Status::Ok };
        s.response(i * 1000, "s1", "good", st, 5.0, &[]);
    }
    assert!(by_rule(&run(rules(""), &s.events), "builtin.error_rate_spike").is_empty());
    s.response(21_000, "s1", "good", Status::Error, 5.0, &[]);
    s.response(22_000, "s1", "good", Status::Timeout, 5.0, &[]);
    let alerts = run(rules(""), &s.events);
    let err = by_rule(&alerts, "builtin.error_rate_spike");
    assert_eq!(err.len(), 1, "{alerts:#?}");
    assert_eq!(
        err[0].evidence.len(),
        11,
        "the failed calls are the evidence"
    );
    assert!(
        err[0].summary.starts_with("50% of tool calls"),
        "{}",
        err[0].summary
    );

    let mut s = Stream::new();
    for i in 0..5 {
        s.response(i * 1000, "s1", "slow", Status::Ok, 12_000.0, &[]);
    }
    let alerts = run(rules(""), &s.events);
    assert_eq!(
        by_rule(&alerts, "builtin.latency_spike").len(),
        1,
        "{alerts:#?}"
    );

    let mut s = Stream::new();
    for i in 0..12 {
        s.push(i * 1000, EventKind::AuthDenied, |e| {
            e.http = Some(mcptrail_event::HttpDetail {
                route: "mcp".into(),
                method: "POST".into(),
                client_address: Some("127.0.0.1:40000".into()),
                ..Default::default()
            });
        });
    }
    let alerts = run(rules(""), &s.events);
    let denied = by_rule(&alerts, "builtin.auth_denied_burst");
    assert_eq!(denied.len(), 1, "ten in a minute, then the window restarts");
    assert_eq!(denied[0].severity, Severity::High);

    let mut s = Stream::new();
    s.call(0, "s0", "anything"); // no catalog yet: not judged
    s.catalog(0, "s1", &["read_file"]);
    s.call(1000, "s1", "read_file");
    let rogue = s.call(2000, "s1", "exec_shell");
    s.call(3000, "s1", "exec_shell"); // cooldown
    let alerts = run(rules(""), &s.events);
    let unknown = by_rule(&alerts, "builtin.unknown_tool");
    assert_eq!(unknown.len(), 1, "{alerts:#?}");
    assert_eq!(unknown[0].evidence, vec![rogue]);
    // known_tools switches the allow-list rule on.
    let alerts = run(rules("[lists]\nknown_tools = [\"read_*\"]\n"), &s.events);
    assert_eq!(
        by_rule(&alerts, "builtin.tool_not_allowed").len(),
        2,
        "one per tool (anything, exec_shell)"
    );
}

#[test]
fn tool_changed_secret_labels_and_allowed_hours() {
    let mut s = Stream::new();
    s.push(0, EventKind::ToolChanged, |e| {
        e.catalog = Some(Catalog {
            list: "tools".into(),
            hash: "x".into(),
            items: vec![],
            next_cursor: None,
            changed: vec!["read_file".into()],
            added: vec!["exfiltrate".into()],
            removed: vec![],
        });
    });
    s.call(1000, "s1", "read_file"); // 10:00 UTC, a Wednesday
    s.push(2000, EventKind::McpRequest, |e| {
        e.method = Some("tools/call".into());
        e.tool_invoked = Some("login".into());
        e.labels = vec!["secret".into()];
    });
    s.call(9 * 60 * MIN, "s1", "read_file"); // 19:00 UTC
    let alerts = run(rules(""), &s.events);
    let changed = by_rule(&alerts, "builtin.tool_definition_changed");
    assert_eq!(changed.len(), 1);
    assert!(
        changed[0]
            .summary
            .contains("changed [read_file] added [exfiltrate]"),
        "{}",
        changed[0].summary
    );
    assert_eq!(by_rule(&alerts, "builtin.secret_in_tool_call").len(), 1);
    assert!(
        by_rule(&alerts, "builtin.outside_allowed_hours").is_empty(),
        "not configured: off"
    );
    let alerts = run(
        rules("[allowed_hours]\nstart = \"08:00\"\nend = \"18:00\"\nutc_offset = \"+01:00\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n"),
        &s.events,
    );
    let late = by_rule(&alerts, "builtin.outside_allowed_hours");
    assert_eq!(
        late.len(),
        1,
        "only the call at 20:00 local time: {alerts:#?}"
    );
    assert_eq!(late[0].evidence, vec![s.events[3].event_id.clone()]);
}

#[test]
fn alert_events_are_input_only_for_rules_that_ask() {
    let r = rules(
        r#"builtin = false
[[rules]]
id = "any-request"
type = "match"
severity = "info"
summary = "x"
where = [{ field = "method", exists = true }]

[[rules]]
id = "alert-storm"
type = "threshold"
severity = "high"
summary = "{value} alerts"
where = [{ field = "kind", equals = "alert" }]
window = "1m"
threshold = 2
"#,
    );
    let mut s = Stream::new();
    s.push(0, EventKind::Alert, |e| {
        e.method = Some("tools/call".into())
    });
    s.push(1, EventKind::Alert, |e| {
        e.method = Some("tools/call".into())
    });
    let alerts = run(r, &s.events);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "alert-storm");
}

#[test]
fn rule_errors_name_the_rule_and_the_key() {
    let err = |text: &str| -> String {
        let cfg: Result<DetectConfig, _> = toml::from_str(text);
        match cfg {
            Err(e) => e.to_string(),
            Ok(cfg) => RuleSet::load(&cfg, &[], None).unwrap_err().to_string(),
        }
    };
    let base = "[[rules]]\nid = \"r1\"\nseverity = \"low\"\nsummary = \"s\"\n";
    let cases: &[(&str, &str)] = &[
        ("type = \"match\"\nwhere = [{ field = \"kind\", equals = \"mcp.requets\" }]", "rule `r1` in `[detect]`: `where[0]`: unknown kind `mcp.requets`"),
        ("type = \"match\"\nwhere = [{ field = \"tool_name\", exists = true }]", "`where[0].field`: unknown event field `tool_name`"),
        ("type = \"match\"\nwhere = [{ field = \"tool\", regex = \"(\" }]", "`where[0].regex`: does not compile"),
        ("type = \"match\"\nwhere = [{ field = \"tool\", equals = \"x\" }]\nwindow = \"5m\"", "`window`: does not apply to a `match` rule"),
        ("type = \"threshold\"\nwhere = [{ field = \"tool\", exists = true }]\nwindow = \"5\"\nthreshold = 3", "`window`: `5` has no unit"),
        ("type = \"threshold\"\nwhere = [{ field = \"tool\", exists = true }]\nwindow = \"5m\"", "`threshold`: missing"),
        ("type = \"threshold\"\nwhere = [{ field = \"tool\", exists = true }]\nwindow = \"5m\"\naggregate = \"sum\"\nthreshold = 3", "`field`: missing: sum, distinct and avg"),
        ("type = \"sequence\"\nwithin = \"5m\"\nsteps = [{ where = [{ field = \"tool\", exists = true }] }]", "`steps`: a sequence needs at least two steps"),
        ("type = \"alarm\"", "`type`: `alarm` is not one of match, threshold, sequence"),
        ("type = \"match\"\nwhere = [{ field = \"tool\", exists = true }]\nsummary2 = 1", "unknown field `summary2`"),
        ("type = \"match\"\nwhere = [{ field = \"tool\", exsts = true }]", "unknown field `exsts`"),
        ("type = \"match\"\nwhere = [{ field = \"tool\", exists = true }]\n[[rules]]\nid = \"r1\"\ntype = \"match\"\nseverity = \"low\"\nsummary = \"s\"\nwhere = [{ field = \"tool\", exists = true }]", "`id`: is used twice"),
    ];
    for (body, want) in cases {
        let got = err(&format!("{base}{body}\n"));
        assert!(got.contains(want), "for\n{body}\nwanted `{want}` in\n{got}");
    }
    assert!(err("[[rules]]\nid = \"r2\"\ntype = \"match\"\nseverity = \"urgent\"\nsummary = \"s\"\nwhere = [{ field = \"tool\", exists = true }]\n")
        .contains("rule `r2` in `[detect]`: `severity`: `urgent` is not one of"));
    assert!(err("[[rules]]\nid = \"r3\"\ntype = \"match\"\nseverity = \"low\"\nsummary = \"{tool_nme}\"\nwhere = [{ field = \"tool\", exists = true }]\n")
        .contains("`summary`: placeholder {tool_nme}"));
    assert!(err("disable = [\"builtin.nope\"]\n")
        .contains("[detect] `disable`: no rule has the id `builtin.nope`"));
    assert!(
        err("[allowed_hours]\nstart = \"8\"\nend = \"18:00\"\n").contains("allowed_hours.start")
    );
    // A rule file names itself.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("mine.toml");
    std::fs::write(
        &f,
        format!("{base}type = \"match\"\nwhere = [{{ field = \"tool\", glob = [] }}]\n"),
    )
    .unwrap();
    let e = RuleSet::load(&DetectConfig::default(), std::slice::from_ref(&f), None).unwrap_err();
    assert!(matches!(e, DetectError::Rule { .. }));
    assert!(
        e.to_string().contains("mine.toml") && e.to_string().contains("where[0].glob"),
        "{e}"
    );
    std::fs::write(&f, "[[rules]]\nid = \"x\"\ncolour = \"red\"\n").unwrap();
    let e = RuleSet::load(&DetectConfig::default(), &[f], None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mine.toml") && e.contains("unknown field `colour`"),
        "{e}"
    );
}

#[test]
fn builtin_pack_overrides_and_disable() {
    let all = RuleSet::builtin();
    let ids: Vec<&str> = all.rules().iter().map(|r| r.id()).collect();
    for id in [
        "builtin.secret_in_tool_call",
        "builtin.sensitive_data_bulk",
        "builtin.unknown_tool",
        "builtin.tool_definition_changed",
        "builtin.auth_denied_burst",
        "builtin.error_rate_spike",
        "builtin.latency_spike",
        "builtin.secret_then_egress",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(BUILTIN_RULES.contains("builtin.outside_allowed_hours"));
    let r = rules("disable = [\"builtin.unknown_tool\", \"builtin.outside_allowed_hours\"]\n[[rules]]\nid = \"builtin.auth_denied_burst\"\ntype = \"threshold\"\nseverity = \"critical\"\nsummary = \"{value}\"\nwhere = [{ field = \"kind\", equals = \"auth.denied\" }]\nwindow = \"1m\"\nthreshold = 3\n");
    assert!(!r.rules().iter().any(|r| r.id() == "builtin.unknown_tool"));
    let over: Vec<_> = r
        .rules()
        .iter()
        .filter(|r| r.id() == "builtin.auth_denied_burst")
        .collect();
    assert_eq!(over.len(), 1);
    assert_eq!(over[0].severity(), Severity::Critical);
    assert!(!over[0].is_builtin());
}

/// A mixed stream with alerts of every rule type, for the restart property.
fn eventful_stream() -> Vec<Event> {
    let mut s = Stream::new();
    let mut t = 0;
    for round in 0..6 {
        let sess = format!("s{round}");
        s.catalog(t, &sess, &["read_file", "list"]);
        for i in 0..30 {
            t += 7_000;
            let tool = if i % 11 == 10 { "rogue" } else { "read_file" };
            s.call(t, &sess, tool);
            let st = if round % 2 == 0 && i % 3 != 0 {
                Status::Error
            } else {
                Status::Ok
            };
            let labels: &[&str] = if i % 13 == 5 { &["secret"] } else { &[] };
            s.response(t + 5, &sess, tool, st, 4.0, labels);
            if i % 9 == 8 {
                s.egress(t + 30_000, &sess, "x.evil.test", None);
            }
        }
    }
    s.events
}

/// Feed `events` to detectors that restart at `cuts` (resuming from `replay_from`, as the
/// streaming detector does), appending alerts to the stream like the ledger would.
fn run_with_restarts(events: &[Event], cuts: &[usize]) -> Vec<String> {
    let mut ledger: Vec<Event> = Vec::new();
    let mut appended = Vec::new();
    let mut input = events.iter().cloned();
    let mut next_seq = 1u64;
    let mut push = |ledger: &mut Vec<Event>, mut e: Event| {
        e.seq = next_seq;
        next_seq += 1;
        ledger.push(e);
    };
    let mut cut_points: Vec<usize> = cuts.iter().map(|c| (*c).min(events.len())).collect();
    cut_points.sort_unstable();
    cut_points.push(events.len());
    let mut taken = 0;
    let mut replay_from = 1u64;
    for cut in cut_points {
        let mut det = Detector::new(Engine::new(RuleSet::builtin()));
        // Replay what is already in the ledger from replay_from.
        for e in ledger.iter().filter(|e| e.seq >= replay_from) {
            det.observe(e);
        }
        // New events arrive in small chunks; alerts are appended after each chunk.
        while taken < cut {
            let chunk: Vec<Event> = input.by_ref().take((cut - taken).min(17)).collect();
            taken += chunk.len();
            for e in chunk {
                push(&mut ledger, e);
                let e = ledger.last().unwrap().clone();
                det.observe(&e);
            }
            for a in det.take_new() {
                appended.push(a.id.clone());
                push(&mut ledger, a.to_event(&time_at(0)));
                let e = ledger.last().unwrap().clone();
                det.observe(&e);
            }
        }
        let _ = det.take_new();
        replay_from = det.replay_from();
    }
    appended
}

#[test]
fn restarts_neither_duplicate_nor_miss() {
    let events = eventful_stream();
    let batch: Vec<String> = run(RuleSet::builtin(), &events)
        .into_iter()
        .map(|a| a.id)
        .collect();
    let rules_hit: std::collections::BTreeSet<String> = run(RuleSet::builtin(), &events)
        .into_iter()
        .map(|a| a.rule)
        .collect();
    assert!(
        rules_hit.len() >= 4,
        "the stream exercises several rules: {rules_hit:?}"
    );
    assert_eq!(run_with_restarts(&events, &[]), batch);
    assert_eq!(run_with_restarts(&events, &[1, 100, 101, 250, 400]), batch);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn streaming_with_any_restarts_equals_one_batch(cuts in proptest::collection::vec(0usize..560, 0..6)) {
        let events = eventful_stream();
        let batch: Vec<String> = run(RuleSet::builtin(), &events).into_iter().map(|a| a.id).collect();
        prop_assert_eq!(run_with_restarts(&events, &cuts), batch);
    }
}

#[test]
fn a_second_pass_over_a_ledger_with_its_alerts_adds_nothing() {
    let events = eventful_stream();
    let mut det = Detector::new(Engine::new(RuleSet::builtin()));
    let mut ledger = events.clone();
    for e in &events {
        det.observe(e);
    }
    let first = det.take_new();
    assert!(!first.is_empty());
    ledger.extend(first.iter().map(|a| a.to_event(&time_at(0))));
    let mut again = Detector::new(Engine::new(RuleSet::builtin()));
    for e in &ledger {
        again.observe(e);
    }
    assert!(again.take_new().is_empty());
    assert_eq!(again.duplicates(), first.len() as u64);
}

#[test]
fn memory_stays_bounded_with_many_groups() {
    let cfg: DetectConfig = toml::from_str("max_groups = 100\nmax_window_events = 50\n").unwrap();
    let mut engine = Engine::new(RuleSet::load(&cfg, &[], None).unwrap());
    let mut s = Stream::new();
    for i in 0..20_000 {
        // Every event in a new session and from a new address, all within one minute.
        let sess = format!("s{i}");
        s.push(i, EventKind::AuthDenied, |e| {
            e.session_id = Some(sess);
            e.http = Some(mcptrail_event::HttpDetail {
                client_address: Some(format!("10.0.{}.{}:1", i / 250, i % 250)),
                ..Default::default()
            });
        });
        s.response(i, &format!("s{i}"), "t", Status::Ok, 1.0, &["pii"]);
    }
    let mut out = Vec::new();
    for e in &s.events {
        engine.process(e, &mut out);
        assert!(engine.tracked_groups() <= 100 * engine.rules().len());
    }
    assert!(engine.stats().groups_evicted > 0);
    // One group, far more events than the window holds.
    let mut s = Stream::new();
    for i in 0..1000 {
        s.response(i, "one", "t", Status::Ok, 1.0, &["pii"]);
    }
    let mut engine = Engine::new(RuleSet::load(&cfg, &[], None).unwrap());
    for e in &s.events {
        engine.process(e, &mut out);
    }
    // The error-rate rule never fires on all-ok calls: its window is capped instead.
    assert!(engine.stats().window_events_dropped > 0);
}

/// ≥ 10k tool calls over ten days, with normal errors (2 %), normal
/// latencies, catalogs listed, occasional personal data, egress only to allowed hosts.
#[test]
fn false_alerts_on_a_long_benign_workload() {
    let mut s = Stream::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let tools = [
        "read_text_file",
        "list_directory",
        "search_files",
        "get_file_info",
    ];
    let mut calls = 0;
    let mut t = 0i64;
    for session in 0..120 {
        let sess = format!("sess-{session}");
        // Twelve sessions a day over ten days, so the daily drift rule judges too.
        t = t.max(session as i64 * 7_200_000);
        s.catalog(t, &sess, &tools);
        for _ in 0..100 {
            t += 2_000 + (next() % 20_000) as i64;
            let tool = tools[(next() % 4) as usize];
            s.call(t, &sess, tool);
            calls += 1;
            let st = if next() % 50 == 0 {
                Status::Error
            } else {
                Status::Ok
            };
            let labels: &[&str] = if next() % 40 == 0 { &["pii"] } else { &[] };
            let ms = 2.0 + (next() % 400) as f64;
            s.response(t + ms as i64, &sess, tool, st, ms, labels);
            if next() % 30 == 0 {
                s.egress(t + 500, &sess, "api.github.com", Some("*.github.com"));
            }
        }
        s.push(t + 1000, EventKind::SessionEnd, |e| {
            e.session_id = Some(sess.clone())
        });
    }
    let alerts = run(RuleSet::builtin(), &s.events);
    let rate = alerts.len() as f64 * 10_000.0 / calls as f64;
    println!(
        "benign workload: {calls} tool calls, {} events, {} alerts ({rate:.2} per 10k calls)",
        s.events.len(),
        alerts.len()
    );
    assert!(calls >= 10_000);
    assert!(rate <= 1.0, "{alerts:#?}");
}

/// S4: an agent's tool mix shifts a little more every simulated day. The drift rule must stay
/// quiet while the divergence against the previous seven days is under the threshold and
/// alert on the first day it passes it (computed here independently): 20 more calls of 200
/// go to another tool every day from day 8.
#[test]
fn s4_gradual_drift_alerts_once_the_divergence_passes_the_threshold() {
    const DAY: i64 = 86_400_000;
    let mut s = Stream::new();
    let mut per_day: Vec<[u64; 2]> = Vec::new();
    for day in 0..30i64 {
        let shifted = if day < 8 {
            0
        } else {
            ((day - 8) * 20).min(200) as u64
        };
        per_day.push([200 - shifted, shifted]);
        for i in 0..200u64 {
            let tool = if i < shifted {
                "export_records"
            } else {
                "read_record"
            };
            s.response(
                day * DAY + 3_600_000 + i as i64 * 60_000,
                "s1",
                tool,
                Status::Ok,
                3.0,
                &[],
            );
        }
    }
    s.call(30 * DAY + 1000, "s1", "read_record"); // closes day 29 (not a response: ignored)
    s.response(30 * DAY + 2000, "s1", "read_record", Status::Ok, 3.0, &[]);
    // Independent JSD of day d against days d-7..d-1.
    let jsd = |p: [f64; 2], q: [f64; 2]| -> f64 {
        let (tp, tq) = (p[0] + p[1], q[0] + q[1]);
        (0..2)
            .map(|i| {
                let (a, b) = (p[i] / tp, q[i] / tq);
                let m = (a + b) / 2.0;
                let t = |x: f64| {
                    if x > 0.0 {
                        0.5 * x * (x / m).log2()
                    } else {
                        0.0
                    }
                };
                t(a) + t(b)
            })
            .sum()
    };
    let first_over = (1..30usize)
        .find(|&d| {
            let mut r = [0f64; 2];
            for day in per_day[d.saturating_sub(7)..d].iter() {
                r[0] += day[0] as f64;
                r[1] += day[1] as f64;
            }
            jsd(r, [per_day[d][0] as f64, per_day[d][1] as f64]) >= 0.1
        })
        .expect("the workload drifts far enough");
    let alerts = run(RuleSet::builtin(), &s.events);
    let drift = by_rule(&alerts, "builtin.behaviour_drift");
    assert!(!drift.is_empty(), "{alerts:#?}");
    let day_of = |a: &Alert| {
        let first = s
            .events
            .iter()
            .find(|e| e.event_id == a.evidence[0])
            .unwrap();
        (mcptrail_detect::clock::parse_event_time(&first.time).unwrap() - T0) / DAY
    };
    assert_eq!(
        day_of(drift[0]) as usize,
        first_over,
        "alerts on the first day past the threshold, not before"
    );
    assert!(drift[0].value.unwrap() >= 0.1);
    assert!(
        drift[0].summary.contains("agent agent-a"),
        "{}",
        drift[0].summary
    );
    println!(
        "S4: first day over 0.1 = {first_over}, {} drift alerts over 30 days",
        drift.len()
    );
}
