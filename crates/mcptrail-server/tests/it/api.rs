//! Roles × endpoints, the meta-audit of every read and refusal, bad input, the live tail,
//! JWT bearer tokens.

use std::io::{BufRead, BufReader};

use mcptrail_server::api::ROUTES;
use mcptrail_server::{Role, ServeConfig};
use serde_json::{json, Value};

use crate::harness::{ledger_events, wait_for_ledger, Server, ROLES};

fn concrete(path: &str) -> String {
    path.replace("{id}", "sess-1")
}

fn body_for(path: &str) -> Value {
    if path == "/api/v1/requests" {
        json!({"action": "purge", "through_seq": 1, "reason": "matrix test"})
    } else {
        json!({})
    }
}

/// Every authenticated route, with every role: allowed roles get past authorisation
/// (whatever the handler then says), the others get 403 `forbidden`; no token gets 401 with
/// a challenge.
#[test]
fn every_role_on_every_endpoint() {
    let s = Server::start(ServeConfig::default());
    let mut checked = 0;
    for r in ROUTES.iter().filter(|r| !r.roles.is_empty()) {
        let path = concrete(r.path);
        if r.path == "/api/v1/tail" {
            continue; // streams; checked below with a bounded read
        }
        for (name, role) in ROLES {
            let (status, body) = if r.method == "GET" {
                s.get(Some(name), &path)
            } else {
                s.post(Some(name), &path, &body_for(r.path))
            };
            let allowed = r.roles.contains(&role);
            if allowed {
                assert!(
                    status != 401 && !(status == 403 && body["error"] == "forbidden"),
                    "{} {path} as {name} ({role:?}) should be allowed: {status} {body}",
                    r.method
                );
            } else {
                assert_eq!(
                    (status, body["error"].as_str()),
                    (403, Some("forbidden")),
                    "{} {path} as {name} ({role:?}) should be refused: {body}",
                    r.method
                );
            }
            checked += 1;
        }
        let (status, _) = if r.method == "GET" {
            s.get(None, &path)
        } else {
            s.post(None, &path, &body_for(r.path))
        };
        assert_eq!(status, 401, "{} {path} without a token", r.method);
        let (status, body) = s.get(Some("mct_00000000"), &path);
        if r.method == "GET" {
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("unauthenticated"))
            );
        }
    }
    assert_eq!(
        checked,
        (ROUTES.iter().filter(|r| !r.roles.is_empty()).count() - 1) * ROLES.len()
    );
    // The tail: allowed for investigators only.
    for (name, role) in ROLES {
        let resp = s
            .agent
            .get(format!("{}/api/v1/tail", s.base))
            .header("Authorization", format!("Bearer {}", s.token(name)))
            .call()
            .unwrap();
        let want = if role == Role::Investigator { 200 } else { 403 };
        assert_eq!(resp.status().as_u16(), want, "tail as {name}");
    }
    // The challenge.
    let resp = s
        .agent
        .get(format!("{}/api/v1/events", s.base))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let ch = resp
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(ch.starts_with("Bearer realm=\"mcptrail\""), "{ch}");
}

#[test]
fn every_read_and_every_refusal_is_in_the_ledger() {
    let s = Server::start(ServeConfig::default());
    let reads = [
        ("oscar", "/api/v1/status"),
        ("oscar", "/api/v1/counts"),
        ("oscar", "/api/v1/sinks"),
        ("audrey", "/api/v1/integrity"),
        ("ivy", "/api/v1/events?tool=read_file"),
        ("ivy", "/api/v1/sessions"),
        ("ivy", "/api/v1/sessions/sess-1/timeline"),
        ("ivy", "/api/v1/alerts"),
        ("audrey", "/api/v1/meta-audit"),
        ("audrey", "/api/v1/requests"),
        ("ada", "/api/v1/config"),
        ("ada", "/api/v1/tokens"),
    ];
    let mut returned = Vec::new();
    for (who, path) in reads {
        let (status, body) = s.get(Some(who), path);
        assert_eq!(status, 200, "{path}: {body}");
        returned.push(body["events"].as_array().map_or(0, Vec::len));
    }
    let (st, _) = s.get(Some("oscar"), "/api/v1/events");
    assert_eq!(st, 403);
    let (st, _) = s.get(None, "/api/v1/alerts");
    assert_eq!(st, 401);
    let evs = wait_for_ledger(&s.data_dir(), "all reads", |evs| {
        evs.iter()
            .filter(|e| e["kind"] == "governance.read")
            .count()
            >= reads.len()
            && evs
                .iter()
                .filter(|e| e["kind"] == "governance.access")
                .count()
                >= 2
    });
    for ((who, path), n) in reads.iter().zip(returned) {
        let (p, query) = path
            .split_once('?')
            .map_or((*path, None), |(p, q)| (p, Some(q)));
        let spec_path = p.replace("sess-1", "{id}");
        let found = evs.iter().find(|e| {
            e["kind"] == "governance.read"
                && e["detail"]["endpoint"] == format!("GET {spec_path}")
                && e["detail"]["principal"] == *who
        });
        let d = &found.unwrap_or_else(|| panic!("no governance.read for {path}"))["detail"];
        assert_eq!(d["query"].as_str(), query, "{path}");
        assert_eq!(d["returned"], n, "{path}");
        assert!(d["roles"].is_array());
    }
    // The tool query returned the one request.
    let d = evs
        .iter()
        .find(|e| e["detail"]["query"] == "tool=read_file")
        .unwrap();
    assert_eq!(d["detail"]["returned"], 1);
    let denied: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "governance.access")
        .collect();
    assert!(denied.iter().any(|e| e["detail"]["reason"] == "wrong_role"
        && e["detail"]["principal"] == "oscar"
        && e["detail"]["status"] == 403));
    assert!(denied
        .iter()
        .any(|e| e["detail"]["reason"] == "missing_token" && e["detail"]["status"] == 401));
    // The token itself is never written anywhere in the ledger.
    let all = serde_json::to_string(&ledger_events(&s.data_dir())).unwrap();
    for t in s.tokens.values() {
        assert!(!all.contains(t.as_str()));
    }
}

#[test]
fn search_filters_pagination_and_redacted_content() {
    let s = Server::start(ServeConfig::default());
    let (_, b) = s.get(Some("ivy"), "/api/v1/events?session=sess-1&limit=2");
    let evs = b["events"].as_array().unwrap();
    assert_eq!(evs.len(), 2);
    assert!(
        evs[0]["seq"].as_u64() > evs[1]["seq"].as_u64(),
        "newest first"
    );
    let next = b["next_before_seq"].as_u64().expect("a next page");
    let (_, b2) = s.get(
        Some("ivy"),
        &format!("/api/v1/events?session=sess-1&limit=2&before_seq={next}"),
    );
    assert_eq!(b2["events"].as_array().unwrap().len(), 2);
    assert!(b2["next_before_seq"].is_null());
    let (_, b) = s.get(Some("ivy"), "/api/v1/events?user=alice@example.com");
    assert_eq!(b["events"].as_array().unwrap().len(), 1);
    let (_, b) = s.get(Some("ivy"), "/api/v1/events?q=REDACTED:EMAIL");
    assert_eq!(
        b["events"].as_array().unwrap().len(),
        1,
        "full text over the stored form"
    );
    let (_, b) = s.get(Some("ivy"), "/api/v1/events?kind=session.*");
    assert_eq!(b["events"].as_array().unwrap().len(), 1);
    let (_, b) = s.get(
        Some("ivy"),
        "/api/v1/events?since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z",
    );
    assert_eq!(b["events"].as_array().unwrap().len(), 0);
    // The meta-audit is not the investigator's.
    let (_, b) = s.get(Some("ivy"), "/api/v1/events?limit=500");
    assert!(b["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| !e["kind"].as_str().unwrap().starts_with("governance.")));
    let (_, b) = s.get(Some("ivy"), "/api/v1/sessions/sess-1/timeline");
    let kinds: Vec<&str> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["session.start", "mcp.request", "mcp.response", "alert"],
        "oldest first"
    );
    let (_, b) = s.get(Some("ivy"), "/api/v1/sessions");
    assert_eq!(b["sessions"][0]["session_id"], "sess-1");
    assert_eq!(b["sessions"][0]["events"], 4);
    let (_, b) = s.get(Some("ivy"), "/api/v1/alerts");
    assert_eq!(b["events"][0]["detail"]["evidence"][0], "/etc/hosts");
    let (_, b) = s.get(Some("oscar"), "/api/v1/counts");
    assert_eq!(b["by_kind"]["mcp.request"], 1);
    assert!(b.get("events").is_none(), "no payloads for operators");
    // Activity per agent: counts only, for operators and investigators.
    let (st, b) = s.get(Some("oscar"), "/api/v1/agents");
    assert_eq!(st, 200, "{b}");
    let a = &b["agents"][0];
    assert_eq!(
        (
            a["agent_id"].as_str(),
            a["sessions"].as_u64(),
            a["events"].as_u64()
        ),
        (Some("claude-desktop"), Some(1), Some(4))
    );
    assert_eq!(b["agents"].as_array().unwrap().len(), 1);
    let (st, _) = s.get(Some("ivy"), "/api/v1/agents?limit=5");
    assert_eq!(st, 200);
    let (st, _) = s.get(Some("ivy"), "/api/v1/agents?limit=0");
    assert_eq!(st, 400);
}

/// An agent's hourly activity next to its baseline, and the stored baselines themselves:
/// counts and statistics for operators, investigators and auditors; bad ranges are a 400.
#[test]
fn agent_activity_per_hour_and_the_stored_baselines() {
    let s = Server::start(ServeConfig::default());
    // Nothing learnt yet: an empty list, no baseline next to the activity.
    let (st, b) = s.get(Some("oscar"), "/api/v1/baselines");
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        (b["versions"].as_array().unwrap().len(), &b["baseline"]),
        (0, &Value::Null)
    );
    let (st, b) = s.get(Some("audrey"), "/api/v1/agents/claude-desktop/activity");
    assert_eq!(st, 200, "{b}");
    let hours = b["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 1, "the seeded session is in this hour: {b}");
    assert_eq!(
        (&hours[0]["events"], &hours[0]["calls"]),
        (&json!(2), &json!(1)),
        "session.start and the tools/call request carry the agent"
    );
    assert!(b["baseline"].is_null());
    // Learn a baseline from the ledger as `mcptrail baseline learn` does, and store it.
    let mut learner = mcptrail_detect::Learner::new();
    for e in ledger_events(&s.data_dir()) {
        learner.observe(&serde_json::from_value(e).unwrap());
    }
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let mut learnt = learner.finish(now_ms - 86_400_000, now_ms + 1, "2026-12-07T00:00:00Z");
    mcptrail_detect::BaselineStore::new(&s.data_dir())
        .store(&mut learnt)
        .unwrap();
    let (st, b) = s.get(Some("ivy"), "/api/v1/baselines");
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["versions"][0]["version"], 1);
    let agent = &b["baseline"]["agents"]["claude-desktop"];
    assert_eq!(
        (&agent["calls"], &agent["sessions"]),
        (&json!(1), &json!(1)),
        "{b}"
    );
    assert_eq!(agent["hourly_calls"]["n"], 1);
    assert_eq!(agent["tools"]["read_file"]["calls"], 1);
    assert!(agent["error_rate"].is_number());
    let (_, b) = s.get(Some("ivy"), "/api/v1/baselines?agent=nobody");
    assert_eq!(b["baseline"]["agents"], json!({}));
    let (st, b) = s.get(Some("ivy"), "/api/v1/baselines?version=9");
    assert_eq!((st, b["error"].as_str()), (404, Some("not_found")), "{b}");
    let (_, b) = s.get(Some("oscar"), "/api/v1/agents/claude-desktop/activity");
    assert_eq!(b["baseline"]["version"], 1, "{b}");
    assert_eq!(b["baseline"]["hourly_calls"]["p50"], 1.0);
    // A window without the session; an agent nobody saw.
    let (_, b) = s.get(
        Some("oscar"),
        "/api/v1/agents/claude-desktop/activity?since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z",
    );
    assert_eq!(b["hours"], json!([]));
    let (_, b) = s.get(Some("oscar"), "/api/v1/agents/nobody/activity");
    assert_eq!((&b["hours"], &b["baseline"]), (&json!([]), &Value::Null));
    for (path, needle) in [
        ("/api/v1/agents/a/activity?since=yesterday", "RFC 3339"),
        (
            "/api/v1/agents/a/activity?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "before until",
        ),
        (
            "/api/v1/agents/a/activity?since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z",
            "at most 744 hours",
        ),
        ("/api/v1/agents/a/activity?limit=5", "unknown field"),
        ("/api/v1/baselines?version=x", "version"),
    ] {
        let (st, b) = s.get(Some("oscar"), path);
        assert_eq!(st, 400, "{path}: {b}");
        assert!(
            b["message"].as_str().unwrap().contains(needle),
            "{path}: {b}"
        );
    }
    // Each read is in the meta-audit.
    wait_for_ledger(
        &s.data_dir(),
        "the reads of activity and baselines",
        |evs| {
            ["GET /api/v1/agents/{id}/activity", "GET /api/v1/baselines"]
                .iter()
                .all(|ep| {
                    evs.iter()
                        .any(|e| e["kind"] == "governance.read" && e["detail"]["endpoint"] == *ep)
                })
        },
    );
}

#[test]
fn bad_input_is_a_clear_400_and_never_reaches_sql_as_text() {
    let s = Server::start(ServeConfig::default());
    for (path, needle) in [
        ("/api/v1/events?limit=0", "at least 1"),
        ("/api/v1/events?limit=1000000", "maximum page size"),
        ("/api/v1/events?limit=-1", "limit"),
        ("/api/v1/events?limit=abc", "limit"),
        ("/api/v1/events?since=yesterday", "RFC 3339"),
        ("/api/v1/events?kind=drop.table", "no event kind"),
        ("/api/v1/events?sessoin=x", "unknown field"),
        ("/api/v1/events?before_seq=x", "before_seq"),
        ("/api/v1/sessions?limit=99999999999999999999999", "limit"),
        (
            "/api/v1/sessions/..%2F..%2Fetc%2Fpasswd/timeline",
            "an id is",
        ),
        ("/api/v1/sessions/a%00b/timeline", "an id is"),
    ] {
        let (status, body) = s.get(Some("ivy"), path);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    for inj in [
        "' OR 1=1 --",
        "x'; DROP TABLE events; --",
        "%",
        "\\",
        "\" OR \"\"=\"",
    ] {
        let enc: String = url_encode(inj);
        // An unescaped `%` would match every event in a LIKE; `q` is an FTS5 phrase, and
        // the other parameters are compared as bound values.
        for param in ["q", "session", "tool", "user", "agent"] {
            let (status, body) = s.get(Some("ivy"), &format!("/api/v1/events?{param}={enc}"));
            if param == "q" && !inj.chars().any(char::is_alphanumeric) {
                // q matches words: no word, no search, and a message that says so.
                assert_eq!(status, 400, "{param}={inj}: {body}");
                assert!(body["message"]
                    .as_str()
                    .unwrap()
                    .contains("letter or digit"));
                continue;
            }
            assert_eq!(status, 200, "{param}={inj}: {body}");
            assert_eq!(
                body["events"].as_array().unwrap().len(),
                0,
                "{param}={inj} matched something"
            );
        }
    }
    let (status, b) = s.get(Some("ivy"), "/api/v1/events");
    assert_eq!(status, 200);
    assert_eq!(
        b["events"].as_array().unwrap().len(),
        4,
        "the table is still there"
    );
    let (status, body) = s.post(
        Some("audrey"),
        "/api/v1/requests",
        &json!({"action": "format_disk"}),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.post(
        Some("audrey"),
        "/api/v1/requests",
        &json!({"action": "forget", "subject": "a", "reason": ""}),
    );
    assert_eq!(status, 400);
    let (status, body) = s.get(None, "/api/v1/nope");
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn live_tail_streams_new_records() {
    let s = Server::start(ServeConfig::default());
    let resp = s
        .agent
        .get(format!("{}/api/v1/tail", s.base))
        .header("Authorization", format!("Bearer {}", s.token("ivy")))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let dir = s.data_dir();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut l = mcptrail_ledger::Ledger::open(&dir, crate::harness::ledger_cfg()).unwrap();
        // A meta-audit record first: the tail leaves governance.* out, as the search does.
        let mut g = mcptrail_event::Event::new(mcptrail_event::EventKind::GovernanceRead);
        g.detail = Some(json!({"principal": "governance_marker"}));
        let mut e = mcptrail_event::Event::new(mcptrail_event::EventKind::McpRequest);
        e.tool_invoked = Some("tail_marker_tool".into());
        l.append(&mut [g, e]).unwrap();
    });
    let mut reader = BufReader::new(resp.into_body().into_reader());
    let mut line = String::new();
    let mut saw = false;
    for _ in 0..200 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        assert!(
            !line.contains("governance_marker") && !line.contains("governance."),
            "a governance record came down the investigator's tail: {line}"
        );
        if line.starts_with("data:") && line.contains("tail_marker_tool") {
            saw = true;
            break;
        }
    }
    writer.join().unwrap();
    assert!(saw, "the appended record never came down the tail");
}

#[test]
fn jwt_bearer_with_role_claim() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef-secret";
    let secret_file = dir.path().join("hs256");
    std::fs::write(&secret_file, secret).unwrap();
    let cfg = ServeConfig {
        jwt: Some(mcptrail_server::config::JwtSettings {
            hs256_secret_file: Some(secret_file),
            issuer: Some("https://idp.test".into()),
            audience: vec!["mcptrail".into()],
            role_claim: "roles".into(),
            ..Default::default()
        }),
        ..ServeConfig::default()
    };
    let s = Server::start(cfg);
    let mint = |roles: Value, aud: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "carol@idp", "iss": "https://idp.test", "aud": aud, "exp": exp, "roles": roles}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let (st, b) = s.get(
        Some(&mint(json!(["investigator"]), "mcptrail")),
        "/api/v1/whoami",
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["name"], "carol@idp");
    assert_eq!(b["source"], "jwt");
    let (st, _) = s.get(
        Some(&mint(json!("investigator"), "mcptrail")),
        "/api/v1/events",
    );
    assert_eq!(st, 200);
    let (st, _) = s.get(Some(&mint(json!("operator"), "mcptrail")), "/api/v1/events");
    assert_eq!(st, 403);
    let (st, b) = s.get(
        Some(&mint(json!("superuser"), "mcptrail")),
        "/api/v1/events",
    );
    assert_eq!(st, 401, "{b}");
    assert!(b["message"].as_str().unwrap().contains("roles"), "{b}");
    let (st, _) = s.get(
        Some(&mint(json!("investigator"), "other-service")),
        "/api/v1/events",
    );
    assert_eq!(st, 401);
}
