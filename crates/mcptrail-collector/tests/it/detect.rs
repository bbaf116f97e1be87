//! Detection across sources: a threshold no single tap reaches is reached by the fleet; the
//! alert is stored once (with its evidence from several sources) and published, and neither
//! a restart nor a second collector raises it again.

use std::time::Duration;

use mcptrail_event::{Event, EventKind, UserIdentity};
use mcptrail_ledger::{Ledger, LedgerConfig};
use mcptrail_test_support::fleet::wait_until;

use crate::harness::*;

/// A tap whose user `alice` makes `calls` `read_file` calls; its record lines.
fn alice_tap(dir: &std::path::Path, calls: usize) -> (Vec<String>, String) {
    let cfg = LedgerConfig {
        fsync: false,
        ..LedgerConfig::default()
    };
    let mut ledger = Ledger::open(dir, cfg).unwrap();
    let mut events: Vec<Event> = (0..calls)
        .map(|i| {
            let mut e = Event::new(EventKind::McpRequest);
            e.method = Some("tools/call".into());
            e.tool_invoked = Some("read_file".into());
            e.request_id = Some(serde_json::json!(i));
            e.session_id = Some(format!("{}-session", dir.display()));
            e.user_identity = Some(UserIdentity {
                principal: "alice".into(),
                source: "jwt".into(),
                os_user: None,
                os_uid: None,
                claims: None,
            });
            e
        })
        .collect();
    ledger.append(&mut events).unwrap();
    ledger.checkpoint_now().unwrap();
    drop(ledger);
    let lines = mcptrail_ledger::LedgerReader::open(dir, 1)
        .unwrap()
        .map(|r| String::from_utf8(r.unwrap().line).unwrap())
        .collect();
    let vkey = mcptrail_ledger::local_verifier(dir)
        .unwrap()
        .unwrap()
        .to_vkey();
    (lines, vkey)
}

const RULE: &str = r#"
[[rules]]
id = "fleet.bulk_reads_by_user"
type = "threshold"
severity = "high"
summary = "{value} reads by {user} across the fleet"
where = [{ field = "kind", equals = "mcp.request" }, { field = "tool", equals = "read_file" }]
group_by = ["user"]
window = "10m"
aggregate = "count"
threshold = 6
cooldown = "1h"
"#;

#[test]
fn a_threshold_reached_only_across_taps_is_one_alert_with_evidence_from_each() {
    let mut f = Fleet::new("detect");
    let rules_file = f.dir.path().join("rules.toml");
    std::fs::write(&rules_file, RULE).unwrap();
    let dc = mcptrail_detect::DetectConfig {
        builtin: false,
        ..Default::default()
    };
    f.rules = Some(mcptrail_detect::RuleSet::load(&dc, &[rules_file], None).unwrap());
    let taps: Vec<(Vec<String>, String)> = (0..3)
        .map(|t| alice_tap(&f.dir.path().join(format!("t{t}")), 2))
        .collect();
    let keys: Vec<&str> = taps.iter().map(|(_, k)| k.as_str()).collect();
    let cfg = f.config(&keys, "");
    f.start_collector(&cfg);
    f.start_collector(&cfg); // a second one: only one detects
    let publish = |f: &Fleet, t: usize, seq: usize| {
        let line = &taps[t].0[seq - 1];
        f.publish_raw(
            &format!("{}.acme.t{t}.events", f.names.prefix),
            &mcptrail_test_support::sinks::event_id_of(line.as_bytes()),
            line.as_bytes(),
        );
    };
    // Two taps: 4 reads, below the threshold.
    for t in 0..2 {
        for seq in 1..=2 {
            publish(&f, t, seq);
        }
    }
    wait_until("4 events stored", 30, || {
        f.pg("SELECT count(*) FROM events") == "4"
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(f.pg("SELECT count(*) FROM alerts"), "0", "not yet");
    // The third tap's reads make six.
    for seq in 1..=2 {
        publish(&f, 2, seq);
    }
    wait_until("the fleet alert", 30, || {
        f.pg("SELECT count(*) FROM alerts") == "1"
    });
    let row = f.pg(
        "SELECT kind || '|' || severity || '|' || message || '|' || jsonb_array_length(detail->'evidence') FROM alerts",
    );
    assert_eq!(
        row,
        "fleet.bulk_reads_by_user|high|6 reads by alice across the fleet|6"
    );
    let sources = f.pg(
        "SELECT count(DISTINCT e.source_id) FROM alerts a, jsonb_array_elements_text(a.detail->'evidence') ev(id)
         JOIN events e ON e.event_id = ev.id::uuid",
    );
    assert_eq!(sources, "3", "evidence from every tap");
    wait_until("the alert on NATS", 30, || {
        f.nats_alerts()
            .iter()
            .any(|a| a["rule"] == "fleet.bulk_reads_by_user")
    });
    let published = f
        .nats_alerts()
        .into_iter()
        .find(|a| a["rule"] == "fleet.bulk_reads_by_user")
        .unwrap();
    assert_eq!(published["kind"], "detection");
    assert_eq!(published["evidence"].as_array().unwrap().len(), 6);

    // Restart both collectors: the replay rebuilds the window and raises the alert again,
    // which is already stored: still one.
    f.stop_collectors();
    f.start_collector(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(f.pg("SELECT count(*) FROM alerts"), "1", "exactly once");
    assert_eq!(
        f.pg("SELECT string_agg(seq::text, ',' ORDER BY source_id) FROM detect_cursors"),
        "2,2,2"
    );
    let stats = f.stop_collectors();
    assert_eq!(
        stats[0].detected, 0,
        "the restarted detector raised nothing new"
    );
}
