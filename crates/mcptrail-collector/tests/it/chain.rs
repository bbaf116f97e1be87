//! Chain checks as records arrive out of order, with gaps, from the middle of a ledger, with
//! untrusted checkpoints or malformed payloads; silence during open sessions.

use std::time::Duration;

use mcptrail_test_support::fleet::wait_until;

use crate::harness::*;

#[test]
fn out_of_order_gaps_mid_chain_starts_and_bad_checkpoints_are_stored_checked_or_alerted() {
    let mut f = Fleet::new("chain");
    let a = FixtureSource::build(&f.dir.path().join("a"), 9, "sa", true, &[5]);
    let b = FixtureSource::build(&f.dir.path().join("b"), 9, "sb", true, &[]);
    let c = FixtureSource::build(&f.dir.path().join("c"), 9, "sc", true, &[]);
    let d = FixtureSource::build(&f.dir.path().join("d"), 4, "sd", true, &[]);
    assert_eq!(a.lines.len(), 11, "session.start, 9 events, session.end");
    let cfg = f.config(
        &[&a.vkey, &b.vkey, &c.vkey],
        "hold_secs = 2\ngap_alert_secs = 2\nsilence_secs = 600\n",
    );
    f.start_collector(&cfg);

    // a: seq 4 missing; the checkpoint of 11 is ahead of the chain.
    for seq in [1, 2, 3, 5, 6, 7, 8, 9, 10, 11] {
        f.publish_record("a", &a, seq);
    }
    f.publish_checkpoint("a", &a, 11);
    // b: shipped from the middle (seq 6 on), with its checkpoint.
    for seq in 6..=11 {
        f.publish_record("b", &b, seq);
    }
    f.publish_checkpoint("b", &b, 11);
    // c: every record, newest first.
    for seq in (1..=11).rev() {
        f.publish_record("c", &c, seq);
    }
    f.publish_checkpoint("c", &c, 11);
    // d: its checkpoint key is not trusted.
    for seq in 1..=d.lines.len() {
        f.publish_record("d", &d, seq);
    }
    f.publish_checkpoint("d", &d, d.lines.len() as u64);
    // e: not a record at all.
    f.publish_raw(
        &format!("{}.acme.e.events", f.names.prefix),
        "junk-1",
        b"{\"seq\": 1, not json",
    );

    wait_until("the gap and the mid-chain start decided", 30, || {
        f.alert_kinds("a").len() >= 2 && f.alert_kinds("b").len() == 1
    });
    let mut ka = f.alert_kinds("a");
    ka.sort();
    assert_eq!(ka, ["chain_gap", "checkpoint_ahead"]);
    assert_eq!(f.events_of("a"), 3, "only what chains is searchable");
    assert_eq!(
        f.pg(
            "SELECT count(*) FROM pending p JOIN sources s USING (source_id) WHERE s.source = 'a'"
        ),
        "7"
    );
    assert_eq!(f.alert_kinds("b"), ["unanchored_source"]);
    assert_eq!(f.events_of("b"), 6);
    assert_eq!(
        f.pg("SELECT anchored || ',' || first_seq || ',' || last_seq FROM sources WHERE source = 'b'"),
        "false,6,11"
    );
    assert_eq!(
        f.pg("SELECT verified FROM checkpoints k JOIN sources s USING (source_id) WHERE s.source = 'b'"),
        "f",
        "an unanchored source's checkpoint covers leaves the collector never saw"
    );
    wait_until("c stored in full", 30, || f.events_of("c") == 11);
    assert!(f.alert_kinds("c").is_empty(), "reordering is not an alert");
    assert_eq!(
        f.pg("SELECT verified FROM checkpoints k JOIN sources s USING (source_id) WHERE s.source = 'c'"),
        "t"
    );
    wait_until("d's checkpoint refused", 30, || {
        !f.alert_kinds("d").is_empty()
    });
    assert_eq!(f.alert_kinds("d"), ["checkpoint_signature"]);
    assert_eq!(f.events_of("d"), d.lines.len() as u64, "its records chain");
    wait_until("e quarantined", 30, || !f.alert_kinds("e").is_empty());
    assert_eq!(f.alert_kinds("e"), ["record_malformed"]);
    // g: a first record that chains (genesis) but reuses the event id of one of c's.
    let g = FixtureSource::build(&f.dir.path().join("g"), 1, "sg", true, &[]);
    let c2: serde_json::Value = serde_json::from_str(&c.lines[1]).unwrap();
    let mut g1: serde_json::Value = serde_json::from_str(&g.lines[0]).unwrap();
    g1["event_id"] = c2["event_id"].clone();
    f.publish_raw(
        &format!("{}.acme.g.events", f.names.prefix),
        "g-1-reused",
        g1.to_string().as_bytes(),
    );
    wait_until("g quarantined", 30, || !f.alert_kinds("g").is_empty());
    assert_eq!(f.alert_kinds("g"), ["event_id_reused"]);
    assert_eq!(f.events_of("g"), 0);

    // The missing record arrives late: everything after it is stored, the waiting
    // checkpoint verified, and an older checkpoint of a size inside the chain too.
    f.publish_record("a", &a, 4);
    wait_until("a complete", 30, || f.events_of("a") == 11);
    f.publish_checkpoint("a", &a, 5);
    wait_until("both of a's checkpoints verified", 30, || {
        f.pg("SELECT count(*) FROM checkpoints k JOIN sources s USING (source_id) WHERE s.source = 'a' AND verified")
            == "2"
    });
    assert_eq!(f.pg("SELECT count(*) FROM pending"), "0");
    assert_eq!(f.pg("SELECT count(*) FROM pending_checkpoints"), "0");
    assert_eq!(
        f.pg("SELECT count(*) FROM quarantine"),
        "3",
        "d's checkpoint, e's junk, g's reused id"
    );
    // Redeliveries change nothing (new message ids, so JetStream does not drop them).
    for seq in [1, 4, 11] {
        let line = &a.lines[seq - 1];
        f.publish_raw(
            &format!("{}.acme.a.events", f.names.prefix),
            &format!("again-{seq}"),
            line.as_bytes(),
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let stats = f.stop_collectors();
    assert!(stats[0].counts.duplicates >= 3, "{:?}", stats[0]);
    assert_eq!(f.events_of("a"), 11);
    assert_eq!(f.pg("SELECT count(*) FROM quarantine"), "3");

    // Every alert also came on NATS, once.
    let mut on_nats: Vec<String> = f
        .nats_alerts()
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["source"].as_str().unwrap(),
                a["kind"].as_str().unwrap()
            )
        })
        .collect();
    on_nats.sort();
    assert_eq!(
        on_nats,
        [
            "a:chain_gap",
            "a:checkpoint_ahead",
            "b:unanchored_source",
            "d:checkpoint_signature",
            "e:record_malformed",
            "g:event_id_reused"
        ]
    );
}

#[test]
fn a_source_silent_while_its_session_is_open_is_an_alert_once_and_one_that_closed_is_not() {
    let mut f = Fleet::new("silence");
    let open = FixtureSource::build(&f.dir.path().join("open"), 5, "s-open", false, &[]);
    let closed = FixtureSource::build(&f.dir.path().join("closed"), 5, "s-closed", true, &[]);
    let cfg = f.config(
        &[&open.vkey, &closed.vkey],
        "hold_secs = 30\ngap_alert_secs = 30\nsilence_secs = 2\n",
    );
    f.start_collector(&cfg);
    for seq in 1..=4 {
        f.publish_record("open", &open, seq);
    }
    for seq in 1..=closed.lines.len() {
        f.publish_record("closed", &closed, seq);
    }
    wait_until("the silence alert", 30, || {
        !f.alert_kinds("open").is_empty()
    });
    let first = f.alert_kinds("open");
    assert_eq!(first, ["source_silent"]);
    assert_eq!(
        f.pg("SELECT count(*) FROM open_sessions o JOIN sources s USING (source_id) WHERE s.source = 'open'"),
        "1"
    );
    // Still silent: no second alert.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(f.alert_kinds("open"), ["source_silent"]);
    assert!(
        f.alert_kinds("closed").is_empty(),
        "a source whose sessions ended may go quiet"
    );
    // It speaks again: the alert is re-armed.
    f.publish_record("open", &open, 5);
    wait_until("the record stored", 30, || f.events_of("open") == 5);
    assert_eq!(
        f.pg("SELECT silent_alerted FROM sources WHERE source = 'open'"),
        "f"
    );
    wait_until("a second silence alert", 30, || {
        f.alert_kinds("open").len() == 2
    });
    f.stop_collectors();
}

#[test]
fn a_waiting_record_whose_predecessor_is_stored_is_chained_by_the_sweep() {
    let mut f = Fleet::new("sweepchain");
    let a = FixtureSource::build(&f.dir.path().join("a"), 3, "sa", true, &[]);
    let n = a.lines.len();
    let cfg = f.config(
        &[&a.vkey],
        "hold_secs = 1\ngap_alert_secs = 1\nsilence_secs = 600\n",
    );
    f.start_collector(&cfg);
    for seq in 1..n {
        f.publish_record("a", &a, seq);
    }
    wait_until("all but the last record stored", 30, || {
        f.events_of("a") == n as u64 - 1
    });
    // The last record parked in `pending` as if by a batch that did not see its predecessor
    // being stored, with no later batch of the source to pick it up.
    let line = &a.lines[n - 1];
    let hash = hex::encode(mcptrail_ledger::record_hash(line.as_bytes()));
    f.pg(&format!(
        "INSERT INTO pending (source_id, seq, record_hash, subject, line, received_at)
         SELECT source_id, {n}, '\\x{hash}', '{}.acme.a.events', $l${line}$l$, now() - interval '1 minute'
         FROM sources WHERE source = 'a'",
        f.names.prefix
    ));
    wait_until("the sweep chained it", 30, || f.events_of("a") == n as u64);
    assert_eq!(f.pg("SELECT count(*) FROM pending"), "0");
    assert_eq!(
        f.pg("SELECT last_seq FROM sources WHERE source = 'a'"),
        n.to_string()
    );
    assert!(f.alert_kinds("a").is_empty(), "{:?}", f.alert_kinds("a"));
    f.stop_collectors();
}
