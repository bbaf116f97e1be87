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

/// ≥ 10k tool calls judged by every built-in rule, the baseline and silence rules included:
/// twenty days of twelve sessions a day, each opened and closed by its tap with heartbeats
/// every 30 s (and their event counts); normal errors (2 %), latencies, catalogs, occasional
/// personal data, egress only to allowed hosts. Baselines are learnt from days 0–6 (v1,
/// judging days 7–13) and 7–13 (v2, judging days 14–19).
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
    let mut judged_calls = 0;
    let mut t = 0i64;
    for session in 0..240 {
        let sess = format!("sess-{session}");
        // Twelve sessions a day over twenty days, so the daily drift rule judges too.
        t = t.max(session as i64 * 7_200_000);
        let mut made = 0u64;
        let mut next_beat = t + 30_000;
        s.start(t, &sess, 30);
        made += 1;
        s.catalog(t, &sess, &tools);
        made += 1;
        for _ in 0..100 {
            t += 2_000 + (next() % 20_000) as i64;
            while next_beat <= t {
                s.heartbeat(next_beat, &sess, 30, Some(made));
                made += 1;
                next_beat += 30_000;
            }
            let tool = tools[(next() % 4) as usize];
            let session = sess.clone();
            let arg = format!("/srv/data/f{}.txt", next() % 500);
            s.push(t, EventKind::McpRequest, |e| {
                e.session_id = Some(session);
                e.method = Some("tools/call".into());
                e.tool_invoked = Some(tool.into());
                e.parameters_used = Some(json!({ "path": arg }));
            });
            made += 1;
            if t >= 7 * DAY {
                judged_calls += 1;
            }
            let st = if next() % 50 == 0 {
                Status::Error
            } else {
                Status::Ok
            };
            let labels: &[&str] = if next() % 40 == 0 { &["pii"] } else { &[] };
            let ms = 2.0 + (next() % 400) as f64;
            s.response(t + ms as i64, &sess, tool, st, ms, labels);
            s.events
                .last_mut()
                .unwrap()
                .response_summary
                .as_mut()
                .unwrap()
                .size = 200 + next() % 3000;
            made += 1;
            if next() % 30 == 0 {
                s.egress(t + 500, &sess, "api.github.com", Some("*.github.com"));
                made += 1;
            }
        }
        s.push(t + 1000, EventKind::SessionEnd, |e| {
            e.session_id = Some(sess.clone())
        });
    }
    let v1 = learn(&s.events, 0, 7 * DAY);
    let mut v2 = learn(&s.events, 7 * DAY, 14 * DAY);
    v2.version = 2;
    assert!(v1.agents["agent-a"].sessions >= 80);
    let mut engine = Engine::new(RuleSet::builtin());
    engine.add_baseline(v1);
    engine.add_baseline(v2);
    let mut alerts = Vec::new();
    for e in &s.events {
        engine.process(e, &mut alerts);
    }
    // As of a wall clock half an hour after the workload (a later one rightly sees the
    // ingestion stop): every session ended.
    engine.judge_as_of(T0 + 20 * DAY + 1_800_000, &mut alerts);
    let rate = alerts.len() as f64 * 10_000.0 / judged_calls as f64;
    let monitors = RuleSet::builtin().monitors().len();
    println!(
        "benign workload: {judged_calls} tool calls judged with baselines ({} events), {} rules + {monitors} monitors: {} alerts ({rate:.2} per 10k calls)",
        s.events.len(),
        RuleSet::builtin().rules().len(),
        alerts.len()
    );
    for a in &alerts {
        println!("  {} {}", a.rule, a.summary);
    }
    assert!(judged_calls >= 10_000);
    assert!(monitors >= 14, "baseline and silence rules are on");
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

// ---- Baselines and anomalies -------------------------------------------------------------

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

impl Stream {
    /// A successful tool result of `size` bytes for `agent`.
    fn result(&mut self, at: i64, agent: &str, session: &str, tool: &str, size: u64) -> String {
        let (agent, session) = (agent.to_string(), session.to_string());
        let id = self.response(at, &session, tool, Status::Ok, 3.0, &[]);
        let e = self.events.last_mut().unwrap();
        e.agent_id = Some(agent);
        e.response_summary.as_mut().unwrap().size = size;
        e.bytes_out = Some(size);
        id
    }

    fn call_as(
        &mut self,
        at: i64,
        agent: &str,
        session: &str,
        tool: &str,
        args: serde_json::Value,
    ) {
        self.call(at, session, tool);
        let e = self.events.last_mut().unwrap();
        e.agent_id = Some(agent.to_string());
        e.parameters_used = Some(args);
    }
}

/// Learn a baseline from the stream's events in `[since, until)` (ms after T0), as version 1.
fn learn(events: &[Event], since: i64, until: i64) -> mcptrail_detect::Baseline {
    let mut l = mcptrail_detect::Learner::new();
    for e in events {
        let ms = mcptrail_detect::clock::parse_event_time(&e.time).unwrap() - T0;
        if ms >= since && ms < until {
            l.observe(e);
        }
    }
    let mut b = l.finish(T0 + since, T0 + until, "2026-12-01T00:00:00Z");
    b.version = 1;
    b
}

fn run_with(rules: RuleSet, baseline: &mcptrail_detect::Baseline, events: &[Event]) -> Vec<Alert> {
    let mut engine = Engine::new(rules);
    engine.add_baseline(baseline.clone());
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    out
}

/// Ten benign days of agent-a: two sessions a day of 20 record reads (~1 KB each) with
/// a few listings, calls spread over working hours.
fn benign_history(s: &mut Stream) {
    for day in 0..10 {
        for sess in 0..2 {
            let sid = format!("hist-{day}-{sess}");
            let base = day * DAY + 9 * HOUR + sess * 4 * HOUR;
            s.start(base, &sid, 600);
            for i in 0..20 {
                let at = base + i * 60_000;
                s.call_as(
                    at,
                    "agent-a",
                    &sid,
                    "read_text_file",
                    json!({"path": format!("/srv/records/p{i}.json")}),
                );
                s.result(
                    at + 50,
                    "agent-a",
                    &sid,
                    "read_text_file",
                    900 + (i as u64 * 7) % 200,
                );
            }
            s.call_as(
                base + 30 * 60_000,
                "agent-a",
                &sid,
                "list_directory",
                json!({"path": "/srv/records"}),
            );
            s.result(
                base + 30 * 60_000 + 20,
                "agent-a",
                &sid,
                "list_directory",
                400,
            );
            s.egress(
                base + 31 * 60_000,
                &sid,
                "api.github.com",
                Some("*.github.com"),
            );
            s.push(base + 40 * 60_000, EventKind::SessionEnd, |e| {
                e.session_id = Some(sid.clone())
            });
        }
    }
}

#[test]
fn s1_cumulative_reads_alert_past_the_learnt_session_baseline_not_before() {
    let mut s = Stream::new();
    benign_history(&mut s);
    let baseline = learn(&s.events, 0, 10 * DAY);
    let a = &baseline.agents["agent-a"];
    assert_eq!(a.sessions, 20);
    assert_eq!(a.active_days, 10);
    assert_eq!(a.session_records.max, 21.0);
    // The learnt baseline alone raises nothing over its own window (it applies after it).
    let alerts = run_with(RuleSet::builtin(), &baseline, &s.events);
    assert!(
        alerts
            .iter()
            .all(|a| !a.rule.starts_with("builtin.baseline.")),
        "{alerts:#?}"
    );
    let start = s.events.len();

    // Day 11: a session of many small legitimate reads, slow enough for the hourly rate.
    let sid = "exfil";
    let base = 11 * DAY + 10 * HOUR;
    s.start(base, sid, 600);
    let mut ids = Vec::new();
    for i in 0..200 {
        let at = base + i * 40_000;
        s.call_as(
            at,
            "agent-a",
            sid,
            "read_text_file",
            json!({"path": format!("/srv/records/p{i}.json")}),
        );
        ids.push(s.result(at + 50, "agent-a", sid, "read_text_file", 950));
    }
    let alerts = run_with(RuleSet::builtin(), &baseline, &s.events);
    // Independently: the limit is max(volume_factor × p99, floor); the alert comes at the
    // first result that takes the total past it.
    let t = mcptrail_detect::Thresholds::default();
    let rec_limit = (t.volume_factor * a.session_records.p99).max(t.min_records);
    let first_over_records = (1..=200).find(|n| *n as f64 > rec_limit).unwrap();
    let byte_limit = (t.volume_factor * a.session_bytes.p99).max(t.min_bytes);
    let first_over_bytes = (1..=200).find(|n| (*n * 950) as f64 > byte_limit).unwrap();
    let records = by_rule(&alerts, "builtin.baseline.session_records");
    assert_eq!(records.len(), 1, "{alerts:#?}");
    assert_eq!(
        records[0].evidence.last(),
        Some(&ids[first_over_records - 1])
    );
    assert_eq!(records[0].evidence_total, first_over_records);
    assert_eq!(records[0].baseline_version, Some(1));
    assert!(
        records[0].summary.contains("agent agent-a received"),
        "{}",
        records[0].summary
    );
    let bytes = by_rule(&alerts, "builtin.baseline.session_volume");
    assert_eq!(bytes.len(), 1);
    assert_eq!(bytes[0].evidence.last(), Some(&ids[first_over_bytes - 1]));
    assert_eq!(bytes[0].value, Some((first_over_bytes * 950) as f64));
    // The day's totals against the daily baseline (ten days of history).
    let day_limit = (t.volume_factor * a.daily_records.p99).max(t.min_records);
    let daily = by_rule(&alerts, "builtin.baseline.daily_records");
    assert_eq!(daily.len(), 1);
    assert_eq!(
        daily[0].evidence.last(),
        Some(&ids[(1..=200).find(|n| *n as f64 > day_limit).unwrap() - 1])
    );
    // Nothing else: the reads look like the history in every other way.
    let others: Vec<&str> = alerts
        .iter()
        .map(|a| a.rule.as_str())
        .filter(|r| !r.contains("session_") && !r.contains("daily_"))
        .collect();
    assert!(others.is_empty(), "{others:?}");

    // One record fewer than the limit: quiet.
    let mut quiet = Stream::new();
    benign_history(&mut quiet);
    quiet.start(base, sid, 600);
    for i in 0..(first_over_records.min(first_over_bytes) - 1) as i64 {
        let at = base + i * 40_000;
        quiet.call_as(
            at,
            "agent-a",
            sid,
            "read_text_file",
            json!({"path": "/srv/records/x.json"}),
        );
        quiet.result(at + 50, "agent-a", sid, "read_text_file", 950);
    }
    let alerts = run_with(RuleSet::builtin(), &baseline, &quiet.events);
    assert!(
        alerts
            .iter()
            .all(|a| !a.rule.starts_with("builtin.baseline.session")),
        "{alerts:#?}"
    );

    // Per-agent thresholds: agent-a allowed ten times its p99 (and 1000 records) is quiet.
    let cfg =
        "[baseline.agents.agent-a]\nvolume_factor = 10\nmin_records = 1000\nmin_bytes = 10000000\n";
    let alerts = run_with(rules(cfg), &baseline, &s.events);
    assert!(
        alerts
            .iter()
            .all(|a| !a.rule.starts_with("builtin.baseline.")),
        "{alerts:#?}"
    );
    // Disabled by id like any built-in rule.
    let alerts = run_with(
        rules("disable = [\"builtin.baseline.session_records\"]\n"),
        &baseline,
        &s.events,
    );
    assert!(by_rule(&alerts, "builtin.baseline.session_records").is_empty());
    assert_eq!(by_rule(&alerts, "builtin.baseline.session_volume").len(), 1);
    // Streaming in chunks with restarts gives the same ids as one pass.
    let batch: Vec<String> = run_with(RuleSet::builtin(), &baseline, &s.events)
        .into_iter()
        .map(|a| a.id)
        .collect();
    let mut det = Detector::new(Engine::new(RuleSet::builtin()));
    det.engine_mut().add_baseline(baseline.clone());
    let mut streamed = Vec::new();
    for chunk in s.events.chunks(37) {
        for e in chunk {
            det.observe(e);
        }
        streamed.extend(det.take_new().into_iter().map(|a| a.id));
    }
    assert_eq!(streamed, batch);
    assert!(start > 0);
}

#[test]
fn anomalies_of_shape_destination_rate_size_errors_and_hour() {
    let mut s = Stream::new();
    benign_history(&mut s);
    let baseline = learn(&s.events, 0, 10 * DAY);
    let base = 11 * DAY + 10 * HOUR;
    s.start(base, "new", 600);
    // A known tool with new argument keys, twice (one alert).
    s.call_as(
        base,
        "agent-a",
        "new",
        "read_text_file",
        json!({"path": "/etc/shadow", "head": 5}),
    );
    s.call_as(
        base + 1,
        "agent-a",
        "new",
        "read_text_file",
        json!({"path": "/etc/x", "head": 1}),
    );
    // A host the agent never reached; a known one.
    s.egress(base + 2, "new", "paste.example", None);
    s.egress(base + 3, "new", "api.github.com", Some("*.github.com"));
    s.events
        .iter_mut()
        .rev()
        .take(2)
        .for_each(|e| e.agent_id = Some("agent-a".into()));
    // One huge result.
    s.result(base + 4, "agent-a", "new", "read_text_file", 5_000_000);
    // An error storm within one hour.
    for i in 0..30 {
        s.response(
            base + 10 + i,
            "new",
            "read_text_file",
            Status::Error,
            1.0,
            &[],
        );
    }
    // A call at 03:00 UTC, an hour the agent never works (needs 500 calls of history).
    let alerts = run_with(RuleSet::builtin(), &baseline, &s.events);
    let got = |r: &str| by_rule(&alerts, r).len();
    assert_eq!(got("builtin.baseline.argument_shape"), 1, "{alerts:#?}");
    assert!(by_rule(&alerts, "builtin.baseline.argument_shape")[0]
        .summary
        .contains("{head:number,path:string}"));
    assert_eq!(got("builtin.baseline.destination"), 1);
    assert!(by_rule(&alerts, "builtin.baseline.destination")[0]
        .summary
        .contains("paste.example"));
    assert_eq!(got("builtin.baseline.response_size"), 1);
    assert_eq!(got("builtin.baseline.error_rate"), 1);
    assert_eq!(
        got("builtin.baseline.time_of_day"),
        0,
        "10:00 is a usual hour"
    );
    // Hour of day and call rate: 600 calls at 03:00 (the baseline has 420 calls, so lower the
    // profile minimum for this agent).
    let mut n = Stream::new();
    benign_history(&mut n);
    for i in 0..600 {
        n.call_as(
            12 * DAY + 3 * HOUR + i * 1000,
            "agent-a",
            "night",
            "read_text_file",
            json!({"path": "/srv/records/p1.json"}),
        );
    }
    let alerts = run_with(
        rules("[baseline.agents.agent-a]\nmin_profile_calls = 100\n"),
        &baseline,
        &n.events,
    );
    assert_eq!(
        by_rule(&alerts, "builtin.baseline.time_of_day").len(),
        1,
        "{alerts:#?}"
    );
    let rate = by_rule(&alerts, "builtin.baseline.call_rate");
    assert_eq!(rate.len(), 1);
    let t = mcptrail_detect::Thresholds::default();
    let limit =
        (t.rate_factor * baseline.agents["agent-a"].hourly_calls.p99).max(t.min_hourly_calls);
    assert_eq!(rate[0].value, Some(limit.floor() + 1.0));
    // An agent without a baseline is not judged.
    let mut other = Stream::new();
    for i in 0..300 {
        other.call_as(
            12 * DAY + i * 1000,
            "agent-z",
            "z",
            "read_text_file",
            json!({"x": 1}),
        );
        other.result(
            12 * DAY + i * 1000 + 5,
            "agent-z",
            "z",
            "read_text_file",
            1_000_000,
        );
    }
    assert!(run_with(RuleSet::builtin(), &baseline, &other.events).is_empty());
}

#[test]
fn baselines_apply_by_event_time_and_settings_are_checked() {
    let mut s = Stream::new();
    benign_history(&mut s);
    let mut b1 = learn(&s.events, 0, 5 * DAY);
    b1.version = 1;
    let mut b2 = learn(&s.events, 0, 10 * DAY);
    b2.version = 2;
    // Day 7's normal reads judged against v1 only: its new shapes are already in v2.
    s.call_as(
        7 * DAY + HOUR,
        "agent-a",
        "d7",
        "read_text_file",
        json!({"path": "/a", "offset": 3}),
    );
    s.call_as(
        11 * DAY + HOUR,
        "agent-a",
        "d11",
        "read_text_file",
        json!({"path": "/a", "limit": 3}),
    );
    let mut engine = Engine::new(RuleSet::builtin());
    engine.add_baseline(b2.clone());
    engine.add_baseline(b1.clone());
    assert_eq!(engine.baselines(), 2);
    let mut out = Vec::new();
    for e in &s.events {
        engine.process(e, &mut out);
    }
    let shapes = by_rule(&out, "builtin.baseline.argument_shape");
    assert_eq!(shapes.len(), 2, "{out:#?}");
    assert_eq!(shapes[0].baseline_version, Some(1));
    assert_eq!(shapes[1].baseline_version, Some(2));

    let err = |t: &str| {
        RuleSet::load(&toml::from_str::<DetectConfig>(t).unwrap(), &[], None)
            .unwrap_err()
            .to_string()
    };
    assert!(err("[baseline]\nwindow = \"2w\"\n").contains("`baseline.window`"));
    assert!(err("[baseline.thresholds]\nvolume_factor = 0\n")
        .contains("`baseline.thresholds.volume_factor`"));
    assert!(err("[baseline.agents.bob]\ningestion_drop = 1.5\n")
        .contains("`baseline.agents.bob.ingestion_drop`"));
    assert!(err("[silence]\nmissed_heartbeats = 0\n").contains("`silence.missed_heartbeats`"));
    assert!(
        toml::from_str::<DetectConfig>("[baseline.thresholds]\nvolume_factr = 2\n")
            .unwrap_err()
            .to_string()
            .contains("volume_factr")
    );
}

#[test]
fn ingestion_dropping_against_the_hourly_baseline() {
    let mut s = Stream::new();
    // Ten days of 200 events an hour, every hour.
    for h in 0..(10 * 24) {
        for i in 0..200 {
            s.push(h * HOUR + i * 15_000, EventKind::McpNotification, |_| {});
        }
    }
    let baseline = learn(&s.events, 0, 10 * DAY);
    assert!((baseline.ingestion.hour_of_day_mean[5] - 200.0).abs() < 1e-9);
    let last_normal = s.events.last().unwrap().event_id.clone();
    // Day 10: hour 0 has 20 events (a drop of 90 %), hours 1–2 none, hour 3 normal again.
    for i in 0..20 {
        s.push(10 * DAY + i * 60_000, EventKind::McpNotification, |_| {});
    }
    let after_drop_start = s.events.len();
    for i in 0..200 {
        s.push(
            10 * DAY + 3 * HOUR + i * 15_000,
            EventKind::McpNotification,
            |_| {},
        );
    }
    s.push(10 * DAY + 4 * HOUR + 1, EventKind::McpNotification, |_| {});
    let alerts = run_with(RuleSet::builtin(), &baseline, &s.events);
    let drops = by_rule(&alerts, "builtin.silence.ingestion_drop");
    assert_eq!(
        drops.len(),
        1,
        "one alert per run of dropped hours: {alerts:#?}"
    );
    assert_eq!(drops[0].evidence, vec![last_normal.clone()]);
    assert_eq!(drops[0].value, Some(20.0));
    // As of now: the ledger ends within the dropped run; the wall clock judges the hours
    // since, and the alert is the one the later events raise.
    let mut engine = Engine::new(RuleSet::builtin());
    engine.add_baseline(baseline.clone());
    let mut out = Vec::new();
    for e in &s.events[..after_drop_start] {
        engine.process(e, &mut out);
    }
    assert!(by_rule(&out, "builtin.silence.ingestion_drop").is_empty());
    engine.judge_as_of(T0 + 10 * DAY + 2 * HOUR + 5, &mut out);
    let now = by_rule(&out, "builtin.silence.ingestion_drop");
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].id, drops[0].id);
}

// ---- Silence -----------------------------------------------------------------------------

impl Stream {
    fn heartbeat(
        &mut self,
        at: i64,
        session: &str,
        interval_s: u64,
        events_recorded: Option<u64>,
    ) -> String {
        let session = session.to_string();
        self.push(at, EventKind::SystemHeartbeat, |e| {
            e.session_id = Some(session);
            let mut d = json!({"uptime_s": 1, "interval_s": interval_s});
            if let Some(n) = events_recorded {
                d["events_recorded"] = json!(n);
            }
            e.detail = Some(d);
        })
    }

    fn start(&mut self, at: i64, session: &str, interval_s: u64) -> String {
        let session = session.to_string();
        self.push(at, EventKind::SessionStart, |e| {
            e.session_id = Some(session);
            e.detail = Some(json!({"heartbeat_interval_s": interval_s}));
        })
    }
}

#[test]
fn a_tap_that_stops_writing_is_silent_in_event_time_and_as_of_now_with_one_id() {
    let mut s = Stream::new();
    s.start(0, "a", 1);
    s.start(0, "b", 1);
    let mut last_a = String::new();
    for t in 1..=5 {
        s.call(t * 1000 - 500, "a", "read_text_file");
        last_a = s.heartbeat(t * 1000, "a", 1, None);
        s.heartbeat(t * 1000, "b", 1, None);
    }
    // Tap a is killed at 5 s; b goes on. 3 intervals of silence is the limit: b's heartbeat
    // at 8 s is exactly 3 s after a's last event (not more), the one at 9 s is.
    for t in 6..=9 {
        s.heartbeat(t * 1000, "b", 1, None);
    }
    let alerts = run(RuleSet::builtin(), &s.events);
    let silent = by_rule(&alerts, "builtin.silence.tap_silent");
    assert_eq!(silent.len(), 1, "{alerts:#?}");
    assert_eq!(silent[0].evidence, vec![last_a.clone()]);
    assert_eq!(silent[0].session_id.as_deref(), Some("a"));
    assert!(
        silent[0].summary.contains("5 requests recorded"),
        "{}",
        silent[0].summary
    );
    let nine = s.events.len();
    let alerts8 = run(RuleSet::builtin(), &s.events[..nine - 1]);
    assert!(
        by_rule(&alerts8, "builtin.silence.tap_silent").is_empty(),
        "not before"
    );
    // As of now, over the ledger that ends at a's last heartbeat: same alert id.
    // (a's heartbeat at 5 s, then b's.)
    let upto = s.events.iter().position(|e| e.event_id == last_a).unwrap() + 2;
    let mut engine = Engine::new(RuleSet::builtin());
    let mut out = Vec::new();
    for e in &s.events[..upto] {
        engine.process(e, &mut out);
    }
    engine.judge_as_of(T0 + 8000, &mut out);
    assert!(out.is_empty(), "3 s is not more than 3 intervals");
    engine.judge_as_of(T0 + 60_000, &mut out);
    let now: Vec<&Alert> = by_rule(&out, "builtin.silence.tap_silent");
    assert_eq!(now.len(), 2, "a and b are both open at 5 s");
    assert!(now.iter().any(|a| a.id == silent[0].id));
    // A session that ends is never silent.
    let mut ended = Stream::new();
    ended.start(0, "c", 1);
    ended.heartbeat(1000, "c", 1, None);
    ended.push(1500, EventKind::SessionEnd, |e| {
        e.session_id = Some("c".into())
    });
    let mut engine = Engine::new(RuleSet::builtin());
    for e in &ended.events {
        engine.process(e, &mut out);
    }
    out.clear();
    engine.judge_as_of(T0 + 3_600_000, &mut out);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn heartbeat_gaps_and_events_missing_from_the_ledger() {
    let mut s = Stream::new();
    s.start(0, "a", 30);
    s.call(100, "a", "t");
    s.response(200, "a", "t", Status::Ok, 1.0, &[]);
    // The tap made 4 events before its first heartbeat (start, request, response, and one
    // that never reached the ledger).
    s.heartbeat(30_000, "a", 30, Some(3));
    s.heartbeat(60_000, "a", 30, Some(5));
    // Suspended for 5 minutes, then back.
    let back = s.heartbeat(360_000, "a", 30, None);
    s.push(361_000, EventKind::SessionEnd, |e| {
        e.session_id = Some("a".into())
    });
    let alerts = run(RuleSet::builtin(), &s.events);
    let missing = by_rule(&alerts, "builtin.silence.events_missing");
    assert_eq!(missing.len(), 1, "{alerts:#?}");
    assert!(
        missing[0].summary.contains("the tap made 5 events"),
        "{}",
        missing[0].summary
    );
    assert!(
        missing[0].summary.contains("the ledger holds 4"),
        "{}",
        missing[0].summary
    );
    let gaps = by_rule(&alerts, "builtin.silence.heartbeat_gap");
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].evidence[1], back);
    assert!(by_rule(&alerts, "builtin.silence.tap_silent").is_empty());
    // A session first seen at a heartbeat (its start is before the events read) is tracked
    // for silence but its counts are not judged.
    let alerts = run(RuleSet::builtin(), &s.events[4..]);
    assert!(by_rule(&alerts, "builtin.silence.events_missing").is_empty());
}

// ---- Lean parsing ------------------------------------------------------------------------

/// Over ledger lines, the lean parse (only what the rules read) raises exactly the alerts of
/// a full parse: same ids, rules, evidence, summaries and identity.
#[test]
fn lean_parsing_raises_the_alerts_of_a_full_parse() {
    let mut s = Stream::new();
    benign_history(&mut s);
    let base = 11 * DAY + 10 * HOUR;
    s.start(base, "x", 600);
    for i in 0..120 {
        s.call_as(
            base + i * 30_000,
            "agent-a",
            "x",
            "read_text_file",
            json!({"path": "/srv", "n": i}),
        );
        s.result(base + i * 30_000 + 5, "agent-a", "x", "read_text_file", 950);
    }
    let baseline = learn(&s.events, 0, 10 * DAY);
    let mut streams = vec![eventful_stream(), s.events.clone()];
    // Identity members that lean events leave out, to see them restored on alerts.
    for events in &mut streams {
        for e in events.iter_mut() {
            e.user_identity = Some(mcptrail_event::UserIdentity {
                principal: format!("tok_{}", e.seq % 3),
                source: "os".into(),
                ..Default::default()
            });
            if let Some(srv) = e.server.as_mut() {
                srv.command = vec!["node".into(), "index.js".into()];
            }
            e.prev_hash = "00".repeat(32);
        }
    }
    for events in &streams {
        let lines: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap())
            .collect();
        let mut full = Detector::new(Engine::new(RuleSet::builtin()));
        let mut lean = Detector::new(Engine::new(RuleSet::builtin()));
        full.engine_mut().add_baseline(baseline.clone());
        lean.engine_mut().add_baseline(baseline.clone());
        for line in &lines {
            let e: Event = serde_json::from_slice(line).unwrap();
            full.observe(&e);
            let e = lean.parse_line(line).unwrap();
            lean.observe_line(&e, line);
        }
        let (a, b) = (full.take_new(), lean.take_new());
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }
}
