//! `mcptrail serve` over the fleet store (`[serve.fleet]`): a PostgreSQL schema filled by the
//! collector's own storage code (the chain checks included) from two taps' ledgers, then the
//! same API — roles, searches with paging, sessions, timelines, the collector's alerts, the
//! integrity view with each source's chain, the live tail of newly stored events — with the
//! meta-audit of every read in the server's own ledger, and the PostgreSQL password never
//! shown. PostgreSQL at 127.0.0.1:5432 (database `test`) is required.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};

use mcptrail_collector::store::{Checks, Incoming};
use mcptrail_server::fleet::FleetSettings;
use mcptrail_server::ServeConfig;
use mcptrail_test_support::fleet::{FixtureSource, FleetNames, PG_URL};
use serde_json::Value;

use crate::harness::*;

/// Store `lines` of `source` (and checkpoint notes) the way the collector does.
fn store(rt: &tokio::runtime::Runtime, schema: &str, keys: &[&str], msgs: Vec<Incoming>) {
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL must run at 127.0.0.1:5432 (tests never skip)");
        tokio::spawn(conn);
        mcptrail_collector::schema::migrate(&mut client, schema)
            .await
            .unwrap();
        let checks = Checks {
            prefix: "mt".into(),
            schema: schema.into(),
            verifiers: keys
                .iter()
                .map(|k| mcptrail_integrity::NoteVerifier::from_vkey(k).unwrap())
                .collect(),
        };
        let mut partitions = HashSet::new();
        let done =
            mcptrail_collector::store::process(&mut client, &checks, &msgs, &mut partitions).await;
        assert!(done.error.is_none(), "{:?}", done.error);
        assert_eq!(done.committed.len(), msgs.len());
    });
}

fn records(
    source: &str,
    src: &FixtureSource,
    seqs: std::ops::RangeInclusive<usize>,
) -> Vec<Incoming> {
    seqs.map(|seq| Incoming {
        subject: format!("mt.acme.{source}.events"),
        payload: src.lines[seq - 1].clone().into_bytes(),
    })
    .collect()
}

#[test]
fn serve_on_the_fleet_store_searches_every_tap_with_the_same_roles_and_meta_audit() {
    let names = FleetNames::new("serve");
    let schema = names.schema.clone();
    let dir = tempfile::tempdir().unwrap();
    let a = FixtureSource::build(&dir.path().join("a"), 30, "fleet-sess-a", true, &[]);
    let b = FixtureSource::build(&dir.path().join("b"), 20, "fleet-sess-b", false, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = [a.vkey.as_str(), b.vkey.as_str()];
    let mut msgs = records("a", &a, 1..=a.lines.len());
    msgs.extend(records("b", &b, 1..=b.lines.len() - 1));
    // A record of a's modified in transit: quarantined, and an alert.
    msgs.push(Incoming {
        subject: "mt.acme.a.events".into(),
        payload: a.lines[4].replacen("Zürich", "Zurich", 1).into_bytes(),
    });
    store(&rt, &schema, &keys, msgs);
    let total = a.lines.len() + b.lines.len() - 1;

    let cfg = ServeConfig {
        fleet: Some(FleetSettings {
            // trust auth ignores the password; it must never be shown.
            postgres_url: "postgres://postgres:s3cret-pw@127.0.0.1:5432/test".into(),
            schema: schema.clone(),
            tail_poll_ms: 100,
            tail_lookback_secs: 30,
        }),
        ..ServeConfig::default()
    };
    let s = Server::start(cfg);

    // Roles are those of the local mode.
    assert_eq!(s.get(Some("oscar"), "/api/v1/events").0, 403);
    assert_eq!(s.get(None, "/api/v1/events").0, 401);

    // Every event of both taps, paged 7 at a time, none twice.
    let mut seen = HashSet::new();
    let mut path = "/api/v1/events?limit=7".to_string();
    loop {
        let (code, page) = s.get(Some("ivy"), &path);
        assert_eq!(code, 200, "{page}");
        for e in page["events"].as_array().unwrap() {
            assert!(seen.insert(e["event_id"].as_str().unwrap().to_string()));
        }
        match page["next_before_seq"].as_u64() {
            Some(c) => path = format!("/api/v1/events?limit=7&before_seq={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), total, "both taps, every stored event once");
    let (_, one) = s.get(Some("ivy"), "/api/v1/events?session=fleet-sess-b&limit=10");
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    assert_eq!(one["events"][0]["_source"], "acme/b");
    let (_, tool) = s.get(
        Some("ivy"),
        "/api/v1/events?tool=get%7Cweather%3Dnow%5C2&limit=100",
    );
    assert_eq!(
        tool["events"].as_array().unwrap().len(),
        (0..30).filter(|i| i % 7 == 2).count() + (0..19).filter(|i| i % 7 == 2).count()
    );
    let (_, text) = s.get(Some("ivy"), "/api/v1/events?q=Z%C3%BCrich&limit=500");
    // a's 30 fixture events and b's first 19 (its 20th is stored later, for the tail).
    assert_eq!(text["events"].as_array().unwrap().len(), 30 + 19);
    let (code, bad) = s.get(Some("ivy"), "/api/v1/events?since=yesterday");
    assert_eq!(code, 400, "{bad}");

    // Sessions, a timeline oldest first, counts, agents.
    let (_, sessions) = s.get(Some("ivy"), "/api/v1/sessions?limit=50");
    let ids: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["session_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"fleet-sess-a") && ids.contains(&"fleet-sess-b"),
        "{ids:?}"
    );
    let (_, tl) = s.get(Some("ivy"), "/api/v1/sessions/fleet-sess-a/timeline");
    let kinds: Vec<&str> = tl["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["session.start", "session.end"]);
    let (_, counts) = s.get(Some("oscar"), "/api/v1/counts");
    assert_eq!(counts["total"], total);
    let (_, agents) = s.get(Some("oscar"), "/api/v1/agents");
    assert_eq!(agents["agents"][0]["agent_id"], "fixture-agent");
    // The agent's hours, summed over both sources: every stored record of the agent, and its
    // tools/call requests, counted from the lines themselves.
    let stored: Vec<Value> = a
        .lines
        .iter()
        .chain(&b.lines[..b.lines.len() - 1])
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["agent_id"] == "fixture-agent")
        .collect();
    let want_calls = stored
        .iter()
        .filter(|e| e["kind"] == "mcp.request" && e["method"] == "tools/call")
        .count();
    assert!(want_calls > 0);
    let (code, act) = s.get(Some("oscar"), "/api/v1/agents/fixture-agent/activity");
    assert_eq!(code, 200, "{act}");
    let sum = |k: &str| {
        act["hours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[k].as_u64().unwrap())
            .sum::<u64>() as usize
    };
    assert_eq!(
        (sum("events"), sum("calls")),
        (stored.len(), want_calls),
        "{act}"
    );

    // The collector's alerts, shaped like alert events.
    let (code, alerts) = s.get(Some("ivy"), "/api/v1/alerts");
    assert_eq!(code, 200);
    let first = &alerts["events"][0];
    assert_eq!(first["kind"], "alert");
    assert_eq!(first["detail"]["rule"], "chain_conflict");
    assert_eq!(first["_source"], "acme/a");

    // Integrity: each source's chain; a quarantined record makes it red.
    let (_, integ) = s.get(Some("audrey"), "/api/v1/integrity");
    let sources = integ["fleet"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(integ["fleet"]["sources_with_problems"], 1);
    assert_eq!(integ["green"], false);
    let (_, status) = s.get(Some("oscar"), "/api/v1/status");
    assert_eq!(status["fleet"]["events"], total);

    // The live tail: b's last record, stored after the tail opened, arrives.
    let resp = s
        .agent
        .get(format!("{}/api/v1/tail", s.base))
        .header("Authorization", format!("Bearer {}", s.token("ivy")))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let last_id = mcptrail_test_support::sinks::event_id_of(b.lines.last().unwrap().as_bytes());
    let (schema2, keys2) = (schema.clone(), [a.vkey.clone(), b.vkey.clone()]);
    let lines_b = b.lines.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let keys: Vec<&str> = keys2.iter().map(String::as_str).collect();
        store(
            &rt,
            &schema2,
            &keys,
            vec![Incoming {
                subject: "mt.acme.b.events".into(),
                payload: lines_b.last().unwrap().clone().into_bytes(),
            }],
        );
    });
    let mut reader = BufReader::new(resp.into_body().into_reader());
    let mut line = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut got = false;
    while std::time::Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.starts_with("id:") && line.contains(&last_id) {
            got = true;
            break;
        }
    }
    writer.join().unwrap();
    assert!(got, "the tail streamed the newly stored event");

    // The meta-audit is in the server's own ledger; the password is nowhere.
    let evs = wait_for_ledger(&s.data_dir(), "the reads", |evs: &[Value]| {
        evs.iter()
            .filter(|e| e["kind"] == "governance.read")
            .any(|e| e["detail"]["endpoint"] == "GET /api/v1/alerts")
    });
    assert!(
        evs.iter()
            .any(|e| e["kind"] == "governance.read"
                && e["detail"]["endpoint"] == "GET /api/v1/events")
    );
    let (_, config) = s.get(Some("ada"), "/api/v1/config");
    let text = config.to_string();
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(text.contains("postgres://postgres@127.0.0.1:5432/test"));
    for e in &evs {
        assert!(!e.to_string().contains("s3cret-pw"));
    }
    drop(s);
    names.drop_schema();
}
