//! Dual authorisation: requests, self-approval, expiry, execution through the library code,
//! state derived from the ledger across a restart, a purge without approval.

use std::collections::BTreeMap;
use std::sync::Arc;

use mcptrail_retention::{Engine, EngineConfig, Policy, Rule, SystemClock};
use mcptrail_server::ServeConfig;
use serde_json::json;

use crate::harness::{ledger_cfg, seed_ledger, wait_for_ledger, Server};

fn sealed_subject(s: &Server, subject: &str) -> std::path::PathBuf {
    let key = mcptrail_redact::TokenKey::load_or_create(
        &s.data_dir()
            .join("keys")
            .join(mcptrail_redact::TOKEN_KEY_FILE),
    )
    .unwrap();
    let token = mcptrail_redact::Vault::subject_token(&key, subject);
    let vault = mcptrail_redact::Vault::new(
        &s.data_dir(),
        mcptrail_redact::MasterKey::from_bytes([7; 32]),
    );
    vault
        .seal(
            "email",
            &token,
            "ev-1",
            "/parameters_used/email",
            "alice@example.com",
        )
        .unwrap();
    let path = s
        .data_dir()
        .join("keys")
        .join("subjects")
        .join(format!("{token}.key"));
    assert!(path.exists(), "the subject key {path:?} was not created");
    path
}

#[test]
fn forget_needs_a_second_auditor_and_survives_a_restart() {
    let s = Server::start(ServeConfig::default());
    let key_file = sealed_subject(&s, "alice@example.com");
    let (st, r) = s.post(
        Some("audrey"),
        "/api/v1/requests",
        &json!({"action": "forget", "subject": "alice@example.com", "reason": "GDPR art. 17, request 118"}),
    );
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["state"], "pending");
    let id = r["id"].as_str().unwrap().to_string();
    assert!(
        !r.to_string().contains("alice@example.com"),
        "the clear subject is not kept: {r}"
    );
    // Self-approval: refused, recorded, nothing done.
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!(
        (st, b["error"].as_str()),
        (403, Some("self_approval")),
        "{b}"
    );
    assert!(key_file.exists());
    // An investigator cannot approve at all.
    let (st, _) = s.post(
        Some("ivy"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!(st, 403);
    // Restart: the request is still pending (derived from the ledger).
    let dir = s.stop();
    let s = Server::start_in(dir, ServeConfig::default(), None);
    let (_, list) = s.get(Some("abe"), "/api/v1/requests");
    let r = &list["requests"][0];
    assert_eq!(
        (r["id"].as_str(), r["state"].as_str()),
        (Some(id.as_str()), Some("pending"))
    );
    assert_eq!(r["refusals"][0]["decision"], "refused");
    // A second auditor approves: executed through mcptrail-redact.
    let (st, b) = s.post(
        Some("abe"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["state"], "executed", "{b}");
    assert_eq!(b["decided_by"], "abe");
    assert!(!key_file.exists(), "the subject's data key is gone");
    // Decided once only.
    let (st, b) = s.post(
        Some("abe"),
        &format!("/api/v1/requests/{id}/deny"),
        &json!({}),
    );
    assert_eq!((st, b["error"].as_str()), (409, Some("already_decided")));
    let evs = wait_for_ledger(&s.data_dir(), "the governance trail", |evs| {
        evs.iter().any(|e| e["kind"] == "governance.execution")
    });
    let steps: Vec<(&str, &str)> = evs
        .iter()
        .filter(|e| e["detail"]["request_id"] == id.as_str())
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["detail"]["decision"]
                    .as_str()
                    .or(e["detail"]["outcome"].as_str())
                    .unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("governance.request", ""),
            ("governance.decision", "refused"),
            ("governance.decision", "approved"),
            ("governance.forget", ""),
            ("governance.execution", "executed"),
            ("governance.decision", "refused"),
        ]
    );
    let forget = evs
        .iter()
        .find(|e| e["kind"] == "governance.forget")
        .unwrap();
    assert_eq!(forget["detail"]["by"], "audrey");
    assert_eq!(forget["detail"]["approved_by"], "abe");
    assert_eq!(forget["detail"]["key_deleted"], true);
    // The restarted server still reports it executed.
    let dir = s.stop();
    let s = Server::start_in(dir, ServeConfig::default(), None);
    let (_, list) = s.get(Some("abe"), "/api/v1/requests");
    assert_eq!(list["requests"][0]["state"], "executed");
}

#[test]
fn expired_requests_cannot_be_approved_and_denials_stick() {
    let cfg = ServeConfig {
        approval_ttl_secs: 1,
        ..ServeConfig::default()
    };
    let s = Server::start(cfg.clone());
    let (_, r) = s.post(
        Some("ivy"),
        "/api/v1/requests",
        &json!({"action": "purge", "through_seq": 3, "reason": "court order 7"}),
    );
    let id = r["id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!((st, b["error"].as_str()), (409, Some("expired")), "{b}");
    let (_, list) = s.get(Some("audrey"), "/api/v1/requests");
    assert_eq!(list["requests"][0]["expired"], true);
    assert_eq!(list["requests"][0]["state"], "pending");
    // A fresh one, denied.
    let (_, r) = s.post(
        Some("ivy"),
        "/api/v1/requests",
        &json!({"action": "purge", "through_seq": 3, "reason": "court order 7"}),
    );
    let id2 = r["id"].as_str().unwrap().to_string();
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{id2}/deny"),
        &json!({}),
    );
    assert_eq!(st, 200);
    assert_eq!(b["state"], "denied");
    let evs = wait_for_ledger(&s.data_dir(), "the refusal", |evs| {
        evs.iter()
            .any(|e| e["kind"] == "governance.decision" && e["detail"]["request_id"] == id.as_str())
    });
    let refusal = evs
        .iter()
        .find(|e| e["kind"] == "governance.decision" && e["detail"]["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(refusal["detail"]["decision"], "refused");
    assert!(refusal["detail"]["why"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert!(
        !evs.iter().any(|e| e["kind"] == "governance.purge"),
        "nothing was purged"
    );
}

#[test]
fn purge_without_approval_is_refused_and_recorded() {
    let s = Server::start(ServeConfig::default());
    for who in ["ivy", "audrey", "ada", "oscar"] {
        let (st, b) = s.post(
            Some(who),
            "/api/v1/retention/purge",
            &json!({"through_seq": 4}),
        );
        assert_eq!(
            (st, b["error"].as_str()),
            (403, Some("approval_required")),
            "{b}"
        );
    }
    let evs = wait_for_ledger(&s.data_dir(), "the refusals", |evs| {
        evs.iter()
            .filter(|e| e["detail"]["reason"] == "purge_without_approval")
            .count()
            == 4
    });
    assert!(evs.iter().all(|e| e["kind"] != "governance.purge"));
    assert_eq!(
        mcptrail_ledger::removed_through(&s.data_dir())
            .unwrap()
            .map(|t| t.last_seq),
        None
    );
}

#[test]
fn retention_policy_change_goes_through_the_engine_with_the_authorisation() {
    let dir = tempfile::tempdir().unwrap();
    seed_ledger(dir.path());
    let engine = Arc::new(Engine::new(
        dir.path(),
        EngineConfig {
            ledger: ledger_cfg(),
            ..Default::default()
        },
        Arc::new(SystemClock),
    ));
    let old = Policy {
        default: Rule {
            days: 90,
            at_hand_days: 90,
        },
        labels: BTreeMap::new(),
    };
    engine.bootstrap(&old, None, "test").unwrap();
    let s = Server::start_in(dir, ServeConfig::default(), Some(engine.clone()));
    let new = json!({"default": {"days": 400, "at_hand_days": 90}, "labels": {"pci": {"days": 365, "at_hand_days": 90}}});
    let (st, r) = s.post(
        Some("ada"),
        "/api/v1/requests",
        &json!({"action": "retention_policy", "policy": new}),
    );
    assert_eq!(st, 201, "{r}");
    let bad = json!({"default": {"days": 10, "at_hand_days": 20}});
    let (st, _) = s.post(
        Some("ada"),
        "/api/v1/requests",
        &json!({"action": "retention_policy", "policy": bad}),
    );
    assert_eq!(st, 400, "an impossible policy is refused up front");
    let id = r["id"].as_str().unwrap();
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["state"], "executed", "{b}");
    let eff = engine.effective_policy().unwrap().unwrap();
    assert_eq!(eff.policy.default.days, 400);
    match eff.source {
        mcptrail_retention::PolicySource::Approved(a) => {
            assert_eq!(
                (
                    a.request_id.as_str(),
                    a.requested_by.as_str(),
                    a.approved_by.as_str()
                ),
                (id, "ada", "audrey")
            );
        }
        other => panic!("policy source {other:?}"),
    }
}

#[test]
fn a_failed_execution_is_recorded_as_failed() {
    // No retention engine configured: the approved purge cannot run, and says why.
    let s = Server::start(ServeConfig::default());
    let (_, r) = s.post(
        Some("ivy"),
        "/api/v1/requests",
        &json!({"action": "purge", "through_seq": 4, "reason": "x"}),
    );
    let id = r["id"].as_str().unwrap();
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!(st, 200);
    assert_eq!(b["state"], "failed");
    assert!(
        b["outcome"]["result"]["error"]
            .as_str()
            .unwrap()
            .contains("[retention]"),
        "{b}"
    );
    let (st, b) = s.post(
        Some("ivy"),
        "/api/v1/requests",
        &json!({"action": "reveal"}),
    );
    assert_eq!(st, 400, "a reveal names the event, the field and why: {b}");
}

const SSN: &str = "123-45-6789";

/// An event with an encrypted field, sealed with the harness's master key, in the ledger.
fn encrypted_event(s: &Server) -> String {
    let key = mcptrail_redact::TokenKey::load_or_create(
        &s.data_dir()
            .join("keys")
            .join(mcptrail_redact::TOKEN_KEY_FILE),
    )
    .unwrap();
    let token = mcptrail_redact::Vault::subject_token(&key, "alice@example.com");
    let vault = mcptrail_redact::Vault::new(
        &s.data_dir(),
        mcptrail_redact::MasterKey::from_bytes([7; 32]),
    );
    let mut e = mcptrail_event::Event::new(mcptrail_event::EventKind::McpRequest);
    e.session_id = Some("sess-enc".into());
    e.tool_invoked = Some("lookup_customer".into());
    let sealed = vault
        .seal(
            "national_id",
            &token,
            &e.event_id,
            "/parameters_used/ssn",
            SSN,
        )
        .unwrap();
    e.parameters_used = Some(json!({"ssn": sealed, "name": "[redacted:name]"}));
    let id = e.event_id.clone();
    mcptrail_ledger::Ledger::open(&s.data_dir(), ledger_cfg())
        .unwrap()
        .append(&mut [e])
        .unwrap();
    id
}

/// Every byte under the data directory (ledger, index and its WAL, checkpoints, state).
fn stored_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn reveal_needs_a_second_auditor_and_is_collected_once_by_the_requester() {
    let s = Server::start(ServeConfig::default());
    let event_id = encrypted_event(&s);
    let field = "/parameters_used/ssn";
    // Bad requests are refused up front, with what to fix.
    for (body, status, needle) in [
        (
            json!({"action": "reveal", "event_id": event_id, "field": field, "reason": " "}),
            400,
            "reason",
        ),
        (
            json!({"action": "reveal", "event_id": event_id, "field": "ssn", "reason": "x"}),
            400,
            "JSON pointer",
        ),
        (
            json!({"action": "reveal", "event_id": event_id, "field": "/parameters_used/name", "reason": "x"}),
            400,
            "no encrypted value",
        ),
        (
            json!({"action": "reveal", "event_id": "01900000-0000-7000-8000-000000000000", "field": field, "reason": "x"}),
            404,
            "no event",
        ),
    ] {
        let (st, b) = s.post(Some("ivy"), "/api/v1/requests", &body);
        assert_eq!(st, status, "{body}: {b}");
        assert!(b["message"].as_str().unwrap().contains(needle), "{b}");
    }
    let (st, r) = s.post(
        Some("ivy"),
        "/api/v1/requests",
        &json!({"action": "reveal", "event_id": event_id, "field": field, "reason": "fraud case 4711"}),
    );
    assert_eq!(st, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let collect = format!("/api/v1/requests/{id}/reveal");
    // Nothing to collect before approval.
    let (st, b) = s.post(Some("ivy"), &collect, &json!({}));
    assert_eq!(
        (st, b["error"].as_str()),
        (409, Some("not_approved")),
        "{b}"
    );
    // The requester cannot approve; an auditor who asked cannot approve their own either.
    let (st, _) = s.post(
        Some("ivy"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!(st, 403);
    let (_, own) = s.post(
        Some("audrey"),
        "/api/v1/requests",
        &json!({"action": "reveal", "event_id": event_id, "field": field, "reason": "audit sample"}),
    );
    let own_id = own["id"].as_str().unwrap();
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{own_id}/approve"),
        &json!({}),
    );
    assert_eq!(
        (st, b["error"].as_str()),
        (403, Some("self_approval")),
        "{b}"
    );
    // A second principal approves without seeing the value.
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{id}/approve"),
        &json!({}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["state"], "approved", "{b}");
    assert!(
        !b.to_string().contains(SSN),
        "the approver does not see the value: {b}"
    );
    // Only the requester collects, once.
    let (st, b) = s.post(Some("audrey"), &collect, &json!({}));
    assert_eq!(
        (st, b["error"].as_str()),
        (403, Some("not_requester")),
        "{b}"
    );
    let (st, b) = s.post(Some("ivy"), &collect, &json!({}));
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["value"], SSN);
    assert_eq!(b["values"][0]["result"], "revealed");
    let (st, b) = s.post(Some("ivy"), &collect, &json!({}));
    assert_eq!((st, b["error"].as_str()), (410, Some("collected")), "{b}");
    let (_, list) = s.get(Some("ivy"), "/api/v1/requests");
    let mine = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(mine["state"], "executed");
    // The trail: request, decision, reveal (without the value), execution; the value is
    // nowhere in what the server stored.
    let evs = wait_for_ledger(&s.data_dir(), "the reveal", |evs| {
        evs.iter().any(|e| {
            e["kind"] == "governance.execution" && e["detail"]["request_id"] == id.as_str()
        })
    });
    let steps: Vec<&str> = evs
        .iter()
        .filter(|e| e["detail"]["request_id"] == id.as_str())
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "governance.request",
            "governance.decision",
            "governance.reveal",
            "governance.execution"
        ]
    );
    let reveal = evs
        .iter()
        .find(|e| e["kind"] == "governance.reveal")
        .unwrap();
    let d = &reveal["detail"];
    assert_eq!(
        (
            d["by"].as_str(),
            d["approved_by"].as_str(),
            d["reason"].as_str(),
            d["field"].as_str()
        ),
        (
            Some("ivy"),
            Some("audrey"),
            Some("fraud case 4711"),
            Some(field)
        )
    );
    assert_eq!(d["event_id"], event_id.as_str());
    let stored = stored_text(&s.data_dir());
    assert!(!stored.contains(SSN), "the clear value is stored somewhere");
    // A restart keeps it collected.
    let dir = s.stop();
    let s = Server::start_in(dir, ServeConfig::default(), None);
    let (st, _) = s.post(Some("ivy"), &collect, &json!({}));
    assert_eq!(st, 410);
}

#[test]
fn an_expired_reveal_cannot_be_approved_or_collected() {
    let cfg = ServeConfig {
        approval_ttl_secs: 1,
        ..ServeConfig::default()
    };
    let s = Server::start(cfg);
    let event_id = encrypted_event(&s);
    let ask = || {
        let (st, r) = s.post(
            Some("ivy"),
            "/api/v1/requests",
            &json!({"action": "reveal", "event_id": event_id, "field": "/parameters_used/ssn", "reason": "case 9"}),
        );
        assert_eq!(st, 201, "{r}");
        r["id"].as_str().unwrap().to_string()
    };
    let late = ask();
    let approved = ask();
    let (st, _) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{approved}/approve"),
        &json!({}),
    );
    assert_eq!(st, 200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (st, b) = s.post(
        Some("audrey"),
        &format!("/api/v1/requests/{late}/approve"),
        &json!({}),
    );
    assert_eq!((st, b["error"].as_str()), (409, Some("expired")), "{b}");
    let (st, b) = s.post(
        Some("ivy"),
        &format!("/api/v1/requests/{approved}/reveal"),
        &json!({}),
    );
    assert_eq!((st, b["error"].as_str()), (409, Some("expired")), "{b}");
    let evs = wait_for_ledger(&s.data_dir(), "the refusals", |evs| {
        evs.iter()
            .any(|e| e["kind"] == "governance.access" && e["detail"]["reason"] == "expired")
    });
    assert!(
        evs.iter().all(|e| e["kind"] != "governance.reveal"),
        "nothing was revealed"
    );
    assert!(!stored_text(&s.data_dir()).contains(SSN));
}

#[test]
fn reveal_without_a_master_key_is_refused() {
    let s = crate::harness::Server::start_without_master_key();
    let event_id = encrypted_event(&s);
    let (st, b) = s.post(
        Some("ivy"),
        "/api/v1/requests",
        &json!({"action": "reveal", "event_id": event_id, "field": "/parameters_used/ssn", "reason": "x"}),
    );
    assert_eq!(
        (st, b["error"].as_str()),
        (409, Some("no_master_key")),
        "{b}"
    );
}
