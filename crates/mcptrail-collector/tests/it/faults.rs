//! Faults on the PostgreSQL side: the collector's connections are terminated
//! (`pg_terminate_backend`) again and again while it stores; nothing is lost or doubled.

use std::time::Duration;

use mcptrail_test_support::fleet::{psql, wait_until, PG_URL};

use crate::harness::*;

#[test]
fn postgres_connections_dropped_mid_stream_lose_and_double_nothing() {
    const N: usize = 6000;
    let mut f = Fleet::new("pgdrop");
    let src = FixtureSource::build(&f.dir.path().join("t"), N - 2, "s", true, &[]);
    assert_eq!(src.lines.len(), N);
    let app = format!("{}_app", f.names.schema);
    let mut cfg = f.config(&[&src.vkey], "");
    cfg.postgres_url = format!("{PG_URL}?application_name={app}");
    f.start_collector(&cfg);
    let kill = || {
        psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .parse::<u64>()
        .unwrap()
    };
    let mut killed = 0;
    for (i, seq) in (1..=N).enumerate() {
        f.publish_record("t", &src, seq);
        if i % 1500 == 1499 {
            killed += kill();
        }
    }
    f.publish_checkpoint("t", &src, N as u64);
    wait_until("every record stored", 120, || f.events_of("t") == N as u64);
    killed += kill();
    wait_until("the checkpoint verified", 60, || {
        f.pg("SELECT count(*) FROM checkpoints WHERE verified") == "1"
    });
    std::thread::sleep(Duration::from_millis(500));
    let stats = f.stop_collectors();
    println!("terminated {killed} connections; {:?}", stats[0]);
    assert!(killed >= 2, "the connections were terminated");
    assert!(stats[0].pg_reconnects >= 2, "{:?}", stats[0]);
    assert_eq!(f.events_of("t"), N as u64);
    assert_eq!(
        f.pg("SELECT count(DISTINCT event_id) FROM events"),
        N.to_string()
    );
    assert_eq!(f.pg("SELECT count(*) FROM quarantine"), "0");
    assert_eq!(f.pg("SELECT count(*) FROM pending"), "0");
    assert_eq!(f.pg("SELECT count(*) FROM alerts"), "0");
}
