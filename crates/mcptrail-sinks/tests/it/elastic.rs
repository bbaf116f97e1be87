//! The Elasticsearch sink against the protocol-faithful `_bulk` receiver of test-support:
//! ECS documents with `_id` = event id, dedupe by 409, per-item 429 and errors, checkpoints.

use std::time::Duration;

use mcptrail_sinks::{Cursor, SendErrorKind, ShipOptions, Shipper};
use mcptrail_test_support::siem::ElasticReceiver;
use mcptrail_test_support::sinks::write_ledger;

use crate::common::*;

const API_KEY: &str = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";

fn es_config(url: &str, var: &str) -> mcptrail_sinks::SinkConfig {
    sink_config(&format!(
        "name = \"es\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"mcptrail-audit\"\napi_key = {{ env = \"{var}\" }}\nbatch_max_events = 200\nbackoff_initial_ms = 10\nbackoff_max_ms = 200\ntimeout_secs = 5\n"
    ))
}

#[test]
fn bulk_creates_ecs_documents_by_event_id_and_a_repeat_is_deduped_by_409() {
    std::env::set_var("MCPTRAIL_TEST_ES_KEY_OK", API_KEY);
    let rx = ElasticReceiver::start(API_KEY);
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 1000);
    mcptrail_ledger::Ledger::open(dir.path(), mcptrail_ledger::LedgerConfig::default())
        .unwrap()
        .checkpoint_now()
        .unwrap();
    let cfg = es_config(&rx.url(), "MCPTRAIL_TEST_ES_KEY_OK");
    let probe = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap();
    assert!(probe.contains("8.15.0"), "{probe}");
    let st = ship(dir.path(), &cfg);
    assert_eq!((st.shipped, st.failures), (1000, 0), "{st:?}");
    {
        let log = rx.log.lock().unwrap();
        let events: Vec<&String> = log
            .created
            .iter()
            .filter(|id| !id.starts_with("checkpoint-"))
            .collect();
        assert_eq!(
            events,
            ids.iter().collect::<Vec<_>>(),
            "each event once, in order"
        );
        let cps: Vec<&String> = log
            .created
            .iter()
            .filter(|id| id.starts_with("checkpoint-"))
            .collect();
        assert_eq!(cps.len(), 1, "the signed checkpoint is a document too");
        assert!(cps[0].ends_with("-1000"));
        let doc = &log.docs[&("mcptrail-audit".to_string(), ids[2].clone())];
        assert_eq!(doc["event"]["id"], ids[2].as_str());
        assert_eq!(doc["event"]["action"], "tools/call");
        assert_eq!(doc["event"]["outcome"], "unknown");
        assert_eq!(doc["event"]["kind"], "event");
        assert_eq!(doc["host"]["name"], "fixture-host");
        assert_eq!(doc["mcptrail"]["seq"], 3);
        assert_eq!(doc["mcptrail"]["event_id"], ids[2].as_str());
        assert_eq!(doc["ecs"]["version"], "8.11.0");
        let pii = &log.docs[&("mcptrail-audit".to_string(), ids[0].clone())];
        assert_eq!(pii["tags"], serde_json::json!(["pii"]));
        let cp = &log.docs[&("mcptrail-audit".to_string(), cps[0].clone())];
        assert_eq!(cp["mcptrail"]["size"], 1000);
        assert!(cp["mcptrail"]["note"]
            .as_str()
            .unwrap()
            .contains("\n1000\n"));
    }
    // A lost cursor: everything is sent again and the index keeps one copy (409 = there).
    Cursor::new(dir.path(), "es").store(0, "").unwrap();
    let again = ship(dir.path(), &cfg);
    assert_eq!((again.shipped, again.failures), (1000, 0));
    let log = rx.log.lock().unwrap();
    assert_eq!(log.conflicts, 1000);
    assert_eq!(log.docs.len(), 1001);
}

#[test]
fn throttling_whole_or_per_item_is_retried_until_every_document_is_in() {
    std::env::set_var("MCPTRAIL_TEST_ES_KEY_429", API_KEY);
    let rx = ElasticReceiver::start(API_KEY);
    {
        let mut log = rx.log.lock().unwrap();
        log.fail_next = vec![429, 503];
    }
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 600);
    let cfg = es_config(&rx.url(), "MCPTRAIL_TEST_ES_KEY_429");
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 1);
    let recs: Vec<_> = (0..10)
        .map(|_| tail.next_record().unwrap().unwrap())
        .collect();
    let e = sink.send(&recs).unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Throttled, "{e}");
    assert!(e.message.contains("es_rejected_execution_exception"), "{e}");
    let e = sink.send(&recs).unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Throttled, "{e}");
    // Part of a bulk refused with 429: the batch fails as throttled, the rest went in.
    rx.log.lock().unwrap().reject_items_429 = 4;
    let e = sink.send(&recs).unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Throttled, "{e}");
    assert!(
        e.message
            .contains("4 of 10 documents were rejected with 429"),
        "{e}"
    );
    assert_eq!(rx.log.lock().unwrap().created.len(), 6);
    rx.log.lock().unwrap().reject_items_429 = 150;
    let st = ship(dir.path(), &cfg);
    assert_eq!((st.cursor, st.failures), (600, 1), "{st:?}");
    let log = rx.log.lock().unwrap();
    let events: Vec<&String> = log
        .created
        .iter()
        .filter(|id| !id.starts_with("checkpoint-"))
        .collect();
    let mut sorted = events.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 600, "each document once");
    assert_eq!(log.docs.len(), ids.len());
}

#[test]
fn an_item_the_index_refuses_fails_the_batch_naming_it_and_the_cursor_stays() {
    std::env::set_var("MCPTRAIL_TEST_ES_KEY_POISON", API_KEY);
    let rx = ElasticReceiver::start(API_KEY);
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 300);
    rx.log.lock().unwrap().poison_id = Some(ids[250].clone());
    let cfg = es_config(&rx.url(), "MCPTRAIL_TEST_ES_KEY_POISON");
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let st = Shipper::new(dir.path(), cfg.clone(), sink, None)
        .run(&ShipOptions {
            give_up_after: Some(Duration::from_millis(300)),
            ..ShipOptions::default()
        })
        .unwrap();
    assert!(st.gave_up, "{st:?}");
    assert_eq!(
        st.cursor, 200,
        "the batch holding the refused event is not committed"
    );
    let err = st.last_error.unwrap();
    assert!(
        err.contains("rejected error")
            && err.contains(&format!("event seq 251 ({})", ids[250]))
            && err.contains("status 400: document_parsing_exception"),
        "{err}"
    );
    // Fixed on the receiver's side: the batch goes through, and nothing was skipped.
    rx.log.lock().unwrap().poison_id = None;
    assert_eq!(ship(dir.path(), &cfg).cursor, 300);
    assert_eq!(rx.log.lock().unwrap().docs.len(), 300);
}

#[test]
fn a_wrong_api_key_is_rejected_without_showing_it() {
    std::env::set_var("MCPTRAIL_TEST_ES_KEY_WRONG", "d3Jvbmc6a2V5LXRoYXQtbGVha3M=");
    let rx = ElasticReceiver::start(API_KEY);
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 2);
    let cfg = es_config(&rx.url(), "MCPTRAIL_TEST_ES_KEY_WRONG");
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 1);
    let e = sink
        .send(&[tail.next_record().unwrap().unwrap()])
        .unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected, "{e}");
    assert!(
        e.message.contains("HTTP 401") && e.message.contains("check api_key"),
        "{e}"
    );
    assert!(!format!("{e:?} {cfg:?}").contains("d3Jvbmc6"), "{e:?}");
    assert!(sink
        .probe()
        .unwrap_err()
        .message
        .contains("security_exception"));
    assert!(rx.log.lock().unwrap().docs.is_empty());
}
