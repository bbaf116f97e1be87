//! Retention on a tap, seen by the fleet: the tap's oldest segments are removed under signed
//! tombstones, and its fleet sink (the real shipper) publishes the tombstones before its
//! events. A collector meeting the source after the purge continues its chain, anchored,
//! after the removed records (its checkpoints verify); one that stored the records checks the
//! tombstone against them; records removed before they were shipped are an alert, not a gap.

use std::path::Path;
use std::time::Duration;

use mcptrail_event::{Event, EventKind};
use mcptrail_ledger::{
    list_segments, remove_segments, Ledger, LedgerConfig, Removal, RemovalOptions, TombstoneState,
    LEDGER_DIR,
};
use mcptrail_sinks::{ShipOptions, Shipper, SinkConfig};
use mcptrail_test_support::fleet::{wait_until, NATS_URL};

use crate::harness::*;

fn config() -> LedgerConfig {
    LedgerConfig {
        segment_max_bytes: 3000,
        fsync: false,
        ..LedgerConfig::default()
    }
}

fn append(dir: &Path, n: usize) {
    let mut l = Ledger::open(dir, config()).unwrap();
    for i in 0..n {
        let mut e = Event::new(EventKind::McpRequest);
        e.method = Some("tools/call".into());
        e.tool_invoked = Some("read_file".into());
        e.request_id = Some(serde_json::json!(i));
        l.append(&mut [e]).unwrap();
    }
    l.checkpoint_now().unwrap();
}

/// Purge the `k` oldest sealed segments; the last seq removed.
fn purge_oldest(dir: &Path, k: usize) -> u64 {
    let segs = list_segments(&dir.join(LEDGER_DIR)).unwrap();
    assert!(segs.len() > k, "{} segments", segs.len());
    let removals: Vec<Removal> = segs[..k]
        .iter()
        .map(|s| Removal {
            segment: s.path.file_name().unwrap().to_str().unwrap().to_string(),
            state: TombstoneState::Purged,
            archive: None,
        })
        .collect();
    let done = remove_segments(
        dir,
        &removals,
        &RemovalOptions {
            meta: serde_json::json!({"policy": {"default": {"days": 90}}}),
            ..RemovalOptions::default()
        },
    )
    .unwrap();
    done.last().unwrap().tombstone.last_seq
}

fn ship(dir: &Path, prefix: &str, source: &str) {
    let cfg = SinkConfig::from_table(
        toml::from_str(&format!(
            "name = \"fleet\"\ntype = \"nats\"\nurl = \"{NATS_URL}\"\nfleet = {{ tenant = \"acme\", source = \"{source}\", prefix = \"{prefix}\" }}\n"
        ))
        .unwrap(),
    )
    .unwrap();
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    Shipper::new(dir, cfg, sink, None)
        .run(&ShipOptions::default())
        .unwrap();
}

fn vkey(dir: &Path) -> String {
    mcptrail_ledger::local_verifier(dir)
        .unwrap()
        .unwrap()
        .to_vkey()
}

#[test]
fn tombstones_anchor_a_purged_source_check_a_stored_one_and_name_records_never_shipped() {
    let mut f = Fleet::new("tomb");
    let (late, early, behind) = (
        f.dir.path().join("late"),
        f.dir.path().join("early"),
        f.dir.path().join("behind"),
    );
    // late: purged before the fleet ever heard of it.
    append(&late, 60);
    let p_late = purge_oldest(&late, 3);
    append(&late, 5);
    // early: shipped in full, then purged, then more shipped.
    append(&early, 60);
    // behind: its first records shipped, then records purged that were never shipped.
    append(&behind, 3);
    // up: its records reach the fleet without its tombstones (their delivery marked done),
    // so it is accepted unanchored; when the tombstones come, it is anchored.
    let up = f.dir.path().join("up");
    append(&up, 40);
    let p_up = purge_oldest(&up, 2);
    let names: Vec<String> =
        mcptrail_ledger::list_tombstones(&up.join(mcptrail_ledger::TOMBSTONE_DIR))
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
    mcptrail_sinks::checkpoints::TombstoneProgress::new(&up, "fleet")
        .store(names.iter().map(String::as_str))
        .unwrap();
    let keys = [vkey(&late), vkey(&early), vkey(&behind), vkey(&up)];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let cfg = f.config(&keys, "hold_secs = 2\ngap_alert_secs = 2\n");
    f.start_collector(&cfg);
    let prefix = f.names.prefix.clone();

    ship(&late, &prefix, "late");
    ship(&early, &prefix, "early");
    ship(&behind, &prefix, "behind");
    ship(&up, &prefix, "up");
    wait_until("early stored", 30, || f.events_of("early") == 60);
    wait_until("behind stored", 30, || f.events_of("behind") == 3);
    let p_early = purge_oldest(&early, 2);
    append(&early, 5);
    ship(&early, &prefix, "early");
    append(&behind, 60);
    let p_behind = purge_oldest(&behind, 3);
    append(&behind, 5);
    ship(&behind, &prefix, "behind");

    wait_until("late stored after its purge", 30, || {
        f.events_of("late") == 65 - p_late
    });
    wait_until("early's new records", 30, || f.events_of("early") == 65);
    wait_until("behind after the purge", 30, || {
        f.events_of("behind") == 3 + (68 - p_behind)
    });
    wait_until("up accepted unanchored", 30, || {
        f.alert_kinds("up") == ["unanchored_source"]
    });
    std::fs::remove_file(up.join("sinks/fleet.tombstones")).unwrap();
    append(&up, 1);
    ship(&up, &prefix, "up");
    wait_until("up's last record", 30, || f.events_of("up") == 41 - p_up);
    std::thread::sleep(Duration::from_secs(3)); // past hold_secs and gap_alert_secs
    let state = |s: &str| {
        f.pg(&format!(
            "SELECT first_seq || '..' || last_seq || ' ' || anchored FROM sources WHERE source = '{s}'"
        ))
    };
    assert_eq!(
        state("late"),
        format!("{}..65 true", p_late + 1),
        "continued after the tombstone, anchored"
    );
    assert!(
        f.alert_kinds("late").is_empty(),
        "{:?}",
        f.alert_kinds("late")
    );
    assert_eq!(state("early"), "1..65 true");
    assert!(
        f.alert_kinds("early").is_empty(),
        "{:?}",
        f.alert_kinds("early")
    );
    assert!(p_early > 0);
    assert_eq!(state("behind"), "1..68 true");
    assert_eq!(f.alert_kinds("behind"), ["purged_before_shipped"]);
    assert_eq!(
        state("up"),
        format!("{}..41 true", p_up + 1),
        "anchored by its tombstones after all"
    );
    // Every source's newest checkpoint verified against the chain (the tombstone's frontier
    // standing in for the records removed before they were seen).
    for s in ["late", "early", "behind", "up"] {
        let newest = f.pg(&format!(
            "SELECT verified FROM checkpoints k JOIN sources s USING (source_id) WHERE s.source = '{s}' ORDER BY size DESC LIMIT 1"
        ));
        assert_eq!(newest, "t", "{s}'s newest checkpoint");
    }
    assert_eq!(
        f.pg("SELECT count(*) FROM tombstones t JOIN sources s USING (source_id) WHERE s.source = 'late'"),
        "3"
    );
    assert_eq!(
        f.pg("SELECT count(*) FROM tombstones t JOIN sources s USING (source_id) WHERE s.source = 'early'"),
        "2",
        "checked against the stored chain and kept"
    );
    assert_eq!(f.pg("SELECT count(*) FROM quarantine"), "0");
    assert_eq!(f.pg("SELECT count(*) FROM pending"), "0");
    f.stop_collectors();
}

#[test]
fn one_removal_whose_tombstones_come_in_several_batches_is_one_alert() {
    let mut f = Fleet::new("tombsplit");
    let behind = f.dir.path().join("behind");
    append(&behind, 3);
    let keys = [vkey(&behind)];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    // One message per batch: each of the removal's tombstones is stored on its own.
    let mut cfg = f.config(&keys, "");
    cfg.batch_size = 1;
    f.start_collector(&cfg);
    let prefix = f.names.prefix.clone();
    ship(&behind, &prefix, "behind");
    wait_until("behind stored", 30, || f.events_of("behind") == 3);
    append(&behind, 60);
    let purged = purge_oldest(&behind, 3);
    append(&behind, 5);
    ship(&behind, &prefix, "behind");
    wait_until("behind after the purge", 30, || {
        f.events_of("behind") == 3 + (68 - purged)
    });
    assert_eq!(f.alert_kinds("behind"), ["purged_before_shipped"]);
    let message = f.pg("SELECT message FROM alerts WHERE source = 'behind'");
    assert!(
        message.contains(&format!("records seq 4..={purged} were removed")),
        "{message}"
    );
    assert!(
        message.contains(&format!("continues at seq {}", purged + 1)),
        "{message}"
    );
}
