//! The read side for investigators (`mcptrail serve` on the fleet store): searches with
//! every filter, paging that neither repeats nor misses an event (events sharing a
//! microsecond included), session and kind summaries, injection strings as plain values.

use std::collections::HashSet;

use mcptrail_collector::query::{FleetSearch, FleetStore};
use mcptrail_test_support::fleet::{wait_until, PG_URL};

use crate::harness::*;

#[test]
fn fleet_searches_page_filter_and_summarise_what_the_collector_stored() {
    let mut f = Fleet::new("query");
    let a = FixtureSource::build(&f.dir.path().join("a"), 120, "s-a", true, &[]);
    let b = FixtureSource::build(&f.dir.path().join("b"), 80, "s-b", false, &[]);
    let cfg = f.config(&[&a.vkey, &b.vkey], "");
    f.start_collector(&cfg);
    for seq in 1..=a.lines.len() {
        f.publish_record("a", &a, seq);
    }
    for seq in 1..=b.lines.len() {
        f.publish_record("b", &b, seq);
    }
    let total = (a.lines.len() + b.lines.len()) as u64;
    wait_until("every event stored", 60, || {
        f.pg("SELECT count(*) FROM events") == total.to_string()
    });
    let store =
        f.rt.block_on(FleetStore::connect(PG_URL, &f.names.schema))
            .expect("connect the fleet store");
    let search = |s: &FleetSearch| f.rt.block_on(store.search(s)).unwrap();

    // Page through everything, 7 at a time.
    let mut seen = HashSet::new();
    let mut times = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = search(&FleetSearch {
            before_us: cursor,
            limit: 7,
            ..FleetSearch::default()
        });
        pages += 1;
        for e in &page.events {
            assert!(
                seen.insert(e["event_id"].as_str().unwrap().to_string()),
                "an event on two pages"
            );
            times.push(e["time"].as_str().unwrap().to_string());
            assert!(e["_source"] == "acme/a" || e["_source"] == "acme/b");
        }
        match page.next_before_us {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen.len() as u64,
        total,
        "every event, once, in {pages} pages"
    );
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(times, sorted, "newest first");

    // Filters.
    let n = |s: FleetSearch| search(&FleetSearch { limit: 1000, ..s }).events.len();
    assert_eq!(
        n(FleetSearch {
            kind: Some("session.".into()),
            ..FleetSearch::default()
        }),
        3,
        "two starts, one end"
    );
    assert_eq!(
        n(FleetSearch {
            session: Some("s-".into()),
            ..FleetSearch::default()
        }),
        3
    );
    assert_eq!(
        n(FleetSearch {
            tool: Some("get|weather=now\\3".into()),
            ..FleetSearch::default()
        }),
        (0..120).filter(|i| i % 7 == 3).count() + (0..80).filter(|i| i % 7 == 3).count()
    );
    assert_eq!(
        n(FleetSearch {
            agent: Some("fixture-agent".into()),
            exclude_kind_prefix: Some("session.".into()),
            ..FleetSearch::default()
        }),
        200
    );
    assert_eq!(
        n(FleetSearch {
            text: Some("QUOTED".into()),
            ..FleetSearch::default()
        }),
        200,
        "case-insensitive substring of the stored line"
    );
    // Wildcards are literal: `schema%version` and `eve_t_id` would match every line if they
    // were patterns.
    for evil in [
        "%' OR 1=1 --",
        "schema%version",
        "eve_t_id",
        "'; DROP TABLE events; --",
    ] {
        assert_eq!(
            n(FleetSearch {
                text: Some(evil.into()),
                ..FleetSearch::default()
            }),
            0,
            "{evil:?} is a literal"
        );
        assert_eq!(
            n(FleetSearch {
                session: Some(evil.into()),
                ..FleetSearch::default()
            }),
            0
        );
    }
    assert_eq!(f.pg("SELECT count(*) FROM events"), total.to_string());
    assert!(f
        .rt
        .block_on(store.search(&FleetSearch {
            since: Some("yesterday".into()),
            limit: 10,
            ..FleetSearch::default()
        }))
        .is_err());

    // Summaries.
    let sessions = f.rt.block_on(store.sessions(None, 100)).unwrap();
    let by_id: Vec<(&str, i64)> = sessions
        .iter()
        .map(|s| (s.session_id.as_str(), s.events))
        .collect();
    assert!(
        by_id.contains(&("s-a", 2)) && by_id.contains(&("s-b", 1)),
        "{by_id:?}"
    );
    let fixture = sessions
        .iter()
        .filter(|s| s.session_id == "01a2125b-85b5-74a5-94ab-08c55a216fca")
        .map(|s| s.events)
        .sum::<i64>();
    assert_eq!(fixture, 200);
    let counts = f.rt.block_on(store.counts_by_kind()).unwrap();
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), total);
    let (n_total, lo, hi) = f.rt.block_on(store.totals()).unwrap();
    assert_eq!(n_total, total);
    assert!(lo.unwrap() <= hi.unwrap());
    let id = seen.iter().next().unwrap();
    let one = f.rt.block_on(store.event_by_id(id)).unwrap().unwrap();
    assert_eq!(one["event_id"], id.as_str());
    assert_eq!(
        f.rt.block_on(store.event_by_id("not-a-uuid")).unwrap(),
        None
    );
    let sources = f.rt.block_on(store.sources()).unwrap();
    assert_eq!(sources.len(), 2);
    assert!(sources.iter().all(|s| s.anchored && s.pending == 0));
    assert_eq!(
        sources
            .iter()
            .find(|s| s.source == "b")
            .unwrap()
            .open_sessions,
        1
    );
    f.stop_collectors();
}
