use std::collections::HashSet;

use mcptrail_sinks::SendErrorKind;
use mcptrail_test_support::sinks::{write_ledger, WebhookReceiver};

use crate::common::*;

const KEY_VAR: &str = "MCPTRAIL_TEST_WEBHOOK_KEY_IT";

fn hook_config(url: &str, var: &str) -> mcptrail_sinks::SinkConfig {
    sink_config(&format!(
        "name = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret = {{ env = \"{var}\" }}\nbatch_max_events = 100\nbackoff_initial_ms = 10\nbackoff_max_ms = 200\ntimeout_secs = 5\n"
    ))
}

#[test]
fn signed_batches_arrive_and_500_and_429_are_retried_with_backoff() {
    std::env::set_var(KEY_VAR, "k3y-for-the-webhook-test");
    let rx = WebhookReceiver::start(b"k3y-for-the-webhook-test");
    rx.log.lock().unwrap().fail_next = vec![500, 429, 503];
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 1000);
    let st = ship(dir.path(), &hook_config(&rx.url(), KEY_VAR));
    assert_eq!(st.shipped, 1000);
    assert_eq!(st.failures, 3, "three failed attempts, each retried");
    let log = rx.log.lock().unwrap();
    assert_eq!(log.injected_failures, 3);
    assert_eq!(log.bad_signatures, 0);
    assert_eq!(log.batches, 10);
    assert_eq!(log.event_ids, ids, "every event once, in order");
}

#[test]
fn a_wrong_key_is_rejected_by_the_receiver_and_never_shown() {
    std::env::set_var("MCPTRAIL_TEST_WEBHOOK_WRONG_KEY", "not-the-receivers-key");
    let rx = WebhookReceiver::start(b"the-receivers-key");
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 5);
    let cfg = hook_config(&rx.url(), "MCPTRAIL_TEST_WEBHOOK_WRONG_KEY");
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 1);
    let rec = tail.next_record().unwrap().unwrap();
    let e = sink.send(&[rec]).unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected);
    assert!(e.message.contains("401"), "{e}");
    assert!(
        !format!("{e:?} {cfg:?}").contains("not-the-receivers-key"),
        "the key leaks: {e:?}"
    );
    assert_eq!(rx.log.lock().unwrap().bad_signatures, 1);
    assert!(rx.log.lock().unwrap().event_ids.is_empty());
}

#[test]
fn a_missing_key_stops_the_sink_before_it_starts_and_names_the_variable() {
    let cfg = hook_config("http://127.0.0.1:9/x", "MCPTRAIL_TEST_SURELY_UNSET_KEY");
    let e = mcptrail_sinks::build(&cfg).err().unwrap().to_string();
    assert!(
        e.contains("sink \"hook\"") && e.contains("MCPTRAIL_TEST_SURELY_UNSET_KEY"),
        "{e}"
    );
}

#[test]
fn ocsf_batches_carry_api_activity() {
    std::env::set_var("MCPTRAIL_TEST_WEBHOOK_KEY_OCSF", "ocsf-key");
    let rx = WebhookReceiver::start(b"ocsf-key");
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 50);
    let mut cfg = hook_config(&rx.url(), "MCPTRAIL_TEST_WEBHOOK_KEY_OCSF");
    if let mcptrail_sinks::SinkTarget::Webhook(w) = &mut cfg.target {
        w.format = mcptrail_sinks::PayloadFormat::Ocsf;
    }
    assert_eq!(ship(dir.path(), &cfg).shipped, 50);
    let got: HashSet<String> = rx.log.lock().unwrap().event_ids.iter().cloned().collect();
    assert_eq!(got, ids.into_iter().collect());
}

#[test]
fn a_dead_receiver_is_a_connect_error_that_does_not_quote_credentials_in_the_url() {
    std::env::set_var("MCPTRAIL_TEST_WEBHOOK_KEY_DEAD", "k");
    let port = mcptrail_test_support::sinks::free_loopback_port();
    let cfg = hook_config(
        &format!("http://user:pa55word@127.0.0.1:{port}/hook?token=s3cr3t-token"),
        "MCPTRAIL_TEST_WEBHOOK_KEY_DEAD",
    );
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 1);
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let mut tail = mcptrail_sinks::LedgerTail::open(dir.path(), 1);
    let e = sink
        .send(&[tail.next_record().unwrap().unwrap()])
        .unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Connect, "{e}");
    let shown = format!("{e} {e:?}");
    assert!(shown.contains(&format!("127.0.0.1:{port}/hook")), "{shown}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("pa55word"),
        "{shown}"
    );
}
