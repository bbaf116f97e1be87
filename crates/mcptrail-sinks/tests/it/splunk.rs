//! The Splunk HEC sink against the protocol-faithful HEC receiver of test-support: envelopes,
//! indexer acknowledgement, the error codes, checkpoints riding along, at-least-once.

use std::collections::HashSet;
use std::time::Duration;

use mcptrail_sinks::{Cursor, SendErrorKind, ShipOptions, Shipper};
use mcptrail_test_support::siem::{HecFailure, HecReceiver};
use mcptrail_test_support::sinks::{free_loopback_port, write_ledger};

use crate::common::*;

const TOKEN: &str = "6f1c3a52-1f0e-4b7e-9d0a-0c4f3e2b1a99";

fn hec_config(url: &str, var: &str, extra: &str) -> mcptrail_sinks::SinkConfig {
    sink_config(&format!(
        "name = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"{url}\"\ntoken = {{ env = \"{var}\" }}\nindex = \"mcp_audit\"\nhost = \"laptop-7\"\nbatch_max_events = 100\nbackoff_initial_ms = 10\nbackoff_max_ms = 200\nack_poll_ms = 5\ntimeout_secs = 5\n{extra}"
    ))
}

fn first_records(data: &std::path::Path, n: usize) -> Vec<mcptrail_sinks::ShipRecord> {
    let mut tail = mcptrail_sinks::LedgerTail::open(data, 1);
    (0..n)
        .map(|_| tail.next_record().unwrap().unwrap())
        .collect()
}

#[test]
fn hec_indexes_every_event_after_its_ack_and_signed_checkpoints_ride_along() {
    std::env::set_var("MCPTRAIL_TEST_HEC_TOKEN_OK", TOKEN);
    let rx = HecReceiver::start(TOKEN, &["mcp_audit"]);
    rx.log.lock().unwrap().ack_after_polls = 2;
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 1000);
    mcptrail_ledger::Ledger::open(dir.path(), mcptrail_ledger::LedgerConfig::default())
        .unwrap()
        .checkpoint_now()
        .unwrap();
    let cfg = hec_config(&rx.url(), "MCPTRAIL_TEST_HEC_TOKEN_OK", "");
    let probe = mcptrail_sinks::build(&cfg).unwrap().probe().unwrap();
    assert!(probe.contains("acknowledgement"), "{probe}");
    let st = ship(dir.path(), &cfg);
    assert_eq!((st.shipped, st.failures, st.cursor), (1000, 0, 1000));
    let log = rx.log.lock().unwrap();
    assert_eq!(log.event_ids, ids, "every event once, in order");
    assert_eq!(log.accepted, 10);
    assert!(
        log.ack_queries >= 30,
        "each batch polled until indexed: {}",
        log.ack_queries
    );
    assert_eq!(
        log.checkpoint_sizes,
        vec![1000],
        "the signed checkpoint went along once"
    );
    let sourcetypes: HashSet<&str> = log.envelopes.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(
        sourcetypes,
        HashSet::from(["mcptrail:event", "mcptrail:checkpoint"])
    );
    assert!(log
        .envelopes
        .iter()
        .all(|(host, source, _, index)| host == "laptop-7"
            && source == "mcptrail"
            && index == "mcp_audit"));
    drop(log);
    // The next run sends nothing new, not even the checkpoint again.
    assert_eq!(ship(dir.path(), &cfg).shipped, 0);
    assert_eq!(rx.log.lock().unwrap().checkpoint_sizes.len(), 1);
}

#[test]
fn busy_throttled_and_internal_errors_are_retried_and_bad_data_is_rejected_naming_the_event() {
    std::env::set_var("MCPTRAIL_TEST_HEC_TOKEN_RETRY", TOKEN);
    let rx = HecReceiver::start(TOKEN, &[]);
    rx.log.lock().unwrap().fail_next = vec![
        HecFailure::Busy,
        HecFailure::TooManyRequests,
        HecFailure::Internal,
    ];
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 300);
    let cfg = hec_config(
        &rx.url(),
        "MCPTRAIL_TEST_HEC_TOKEN_RETRY",
        "checkpoints = false\n",
    );
    let st = ship(dir.path(), &cfg);
    assert_eq!((st.shipped, st.failures), (300, 3), "{st:?}");
    assert_eq!(rx.log.lock().unwrap().event_ids, ids);

    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let recs = first_records(dir.path(), 5);
    for (failure, kind, text) in [
        (HecFailure::Busy, SendErrorKind::Throttled, "HEC code 9"),
        (
            HecFailure::TooManyRequests,
            SendErrorKind::Throttled,
            "HTTP 429",
        ),
        (HecFailure::Internal, SendErrorKind::Transport, "HEC code 8"),
        (
            HecFailure::InvalidDataFormat(2),
            SendErrorKind::Rejected,
            "Invalid data format",
        ),
    ] {
        rx.log.lock().unwrap().fail_next = vec![failure];
        let e = sink.send(&recs).unwrap_err();
        assert_eq!(e.kind, kind, "{failure:?}: {e}");
        assert!(e.message.contains(text), "{failure:?}: {e}");
    }
    rx.log.lock().unwrap().fail_next = vec![HecFailure::InvalidDataFormat(2)];
    let e = sink.send(&recs).unwrap_err();
    assert!(
        e.message
            .contains(&format!("seq {}, {}", recs[2].seq, recs[2].event_id)),
        "names the refused event: {e}"
    );
    assert!(e.message.contains("sink_failing alert"), "{e}");
}

#[test]
fn a_wrong_token_or_index_is_rejected_with_the_fix_and_the_token_is_never_shown() {
    std::env::set_var("MCPTRAIL_TEST_HEC_TOKEN_WRONG", "not-the-token-at-all-4711");
    std::env::set_var("MCPTRAIL_TEST_HEC_TOKEN_IDX", TOKEN);
    let rx = HecReceiver::start(TOKEN, &["mcp_audit"]);
    let dir = tempfile::tempdir().unwrap();
    write_ledger(dir.path(), 3);
    let recs = first_records(dir.path(), 3);
    let cfg = hec_config(&rx.url(), "MCPTRAIL_TEST_HEC_TOKEN_WRONG", "");
    let mut sink = mcptrail_sinks::build(&cfg).unwrap();
    let e = sink.send(&recs).unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected, "{e}");
    assert!(e.message.contains("HTTP 403, HEC code 4"), "{e}");
    let shown = format!("{e} {e:?} {cfg:?}");
    assert!(!shown.contains("not-the-token"), "the token leaks: {shown}");
    assert!(sink.probe().is_err());
    assert_eq!(rx.log.lock().unwrap().auth_failures, 2);

    let mut other = hec_config(&rx.url(), "MCPTRAIL_TEST_HEC_TOKEN_IDX", "");
    if let mcptrail_sinks::SinkTarget::SplunkHec(c) = &mut other.target {
        c.index = Some("no_such_index".into());
    }
    let e = mcptrail_sinks::build(&other)
        .unwrap()
        .send(&recs)
        .unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Rejected);
    assert!(
        e.message.contains("Incorrect index") && e.message.contains("fix `index`"),
        "{e}"
    );
    assert!(
        rx.log.lock().unwrap().event_ids.is_empty(),
        "nothing indexed"
    );

    let e = mcptrail_sinks::build(&hec_config(&rx.url(), "MCPTRAIL_TEST_SURELY_UNSET_HEC", ""))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("MCPTRAIL_TEST_SURELY_UNSET_HEC"), "{e}");
    let port = free_loopback_port();
    let e = mcptrail_sinks::build(&hec_config(
        &format!("http://127.0.0.1:{port}"),
        "MCPTRAIL_TEST_HEC_TOKEN_IDX",
        "",
    ))
    .unwrap()
    .send(&recs)
    .unwrap_err();
    assert_eq!(e.kind, SendErrorKind::Connect, "{e}");
}

#[test]
fn an_ack_that_never_comes_fails_the_batch_which_is_sent_again_and_nothing_is_lost() {
    std::env::set_var("MCPTRAIL_TEST_HEC_TOKEN_ACK", TOKEN);
    let rx = HecReceiver::start(TOKEN, &[]);
    rx.log.lock().unwrap().never_ack = true;
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 250);
    let cfg = hec_config(
        &rx.url(),
        "MCPTRAIL_TEST_HEC_TOKEN_ACK",
        "ack_timeout_secs = 1\n",
    );
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let st = Shipper::new(dir.path(), cfg.clone(), sink, None)
        .run(&ShipOptions {
            give_up_after: Some(Duration::from_millis(1500)),
            jitter_seed: Some(3),
            ..ShipOptions::default()
        })
        .unwrap();
    assert!(st.gave_up && st.cursor == 0, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("was not indexed within 1s"),
        "{st:?}"
    );
    assert!(
        !rx.log.lock().unwrap().event_ids.is_empty(),
        "HEC took the batch, the ack was lost"
    );
    // The indexer recovers: everything is shipped; duplicates are removable by event id.
    rx.log.lock().unwrap().never_ack = false;
    let st = ship(dir.path(), &cfg);
    assert_eq!(st.cursor, 250);
    assert_eq!(
        Cursor::new(dir.path(), "splunk")
            .load()
            .unwrap()
            .unwrap()
            .seq,
        250
    );
    let got = rx.log.lock().unwrap().event_ids.clone();
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(
        distinct,
        ids.iter().collect::<HashSet<_>>(),
        "every event at least once"
    );
    println!(
        "ack lost: {} deliveries, {} distinct",
        got.len(),
        distinct.len()
    );
}

#[test]
fn gzip_compressed_batches_are_indexed_like_plain_ones() {
    std::env::set_var("MCPTRAIL_TEST_HEC_TOKEN_GZIP", TOKEN);
    let rx = HecReceiver::start(TOKEN, &["mcp_audit"]);
    let dir = tempfile::tempdir().unwrap();
    let ids = write_ledger(dir.path(), 250);
    let cfg = hec_config(
        &rx.url(),
        "MCPTRAIL_TEST_HEC_TOKEN_GZIP",
        "compression = \"gzip\"\n",
    );
    let st = ship(dir.path(), &cfg);
    assert_eq!((st.shipped, st.failures), (250, 0), "{st:?}");
    let log = rx.log.lock().unwrap();
    assert_eq!(log.event_ids, ids, "every event once, in order");
    assert_eq!(log.accepted, 3);
    assert_eq!(
        log.gzip_requests, 3,
        "each event request compressed, no ack query"
    );
}
