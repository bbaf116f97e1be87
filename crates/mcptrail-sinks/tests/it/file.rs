use mcptrail_test_support::sinks::{event_id_of, write_ledger};

use crate::common::*;

#[test]
fn file_sink_writes_the_ledger_lines_verbatim_filtered_and_resumes_at_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 3000);
    let out = dir.path().join("out/pii.jsonl");
    let cfg = sink_config(&format!(
        "name = \"pii-file\"\ntype = \"file\"\npath = \"{}\"\nlabels = [\"pii\"]\nkinds = [\"mcp.request\"]\nbatch_max_events = 64\n",
        out.display()
    ));
    let st = ship(&data, &cfg);
    let expected: Vec<Vec<u8>> = ledger_lines(&data)
        .into_iter()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            v["kind"] == "mcp.request"
                && v["labels"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "pii"))
        })
        .collect();
    assert!(expected.len() > 100, "the fixture has pii requests");
    let got: Vec<Vec<u8>> = std::fs::read(&out)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(got, expected, "exact ledger bytes, filtered, in order");
    assert_eq!(st.shipped as usize, expected.len());
    assert_eq!(st.filtered as usize, 3000 - expected.len());
    assert_eq!((st.cursor, st.head, st.lag_records()), (3000, 3000, 0));

    // A second run ships nothing; new events are shipped once.
    assert_eq!(ship(&data, &cfg).shipped, 0);
    let new_ids = write_ledger(&data, 30);
    let st = ship(&data, &cfg);
    assert_eq!(st.cursor, 3030);
    let text = std::fs::read_to_string(&out).unwrap();
    let ids: Vec<String> = text.lines().map(|l| event_id_of(l.as_bytes())).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no duplicates without a crash");
    assert_eq!(
        st.shipped as usize,
        new_ids.iter().filter(|id| ids.contains(id)).count()
    );
}

#[test]
fn a_full_disk_keeps_the_cursor_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_ledger(&data, 10);
    // /dev/full: every write fails with ENOSPC, as on a full file system.
    let cfg = sink_config(
        "name = \"full\"\ntype = \"file\"\npath = \"/dev/full\"\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n",
    );
    let sink = mcptrail_sinks::build(&cfg).unwrap();
    let st = mcptrail_sinks::Shipper::new(&data, cfg, sink, None)
        .run(&mcptrail_sinks::ShipOptions {
            give_up_after: Some(std::time::Duration::from_millis(200)),
            ..mcptrail_sinks::ShipOptions::default()
        })
        .unwrap();
    assert!(st.gave_up && st.failures >= 2, "{st:?}");
    assert_eq!((st.shipped, st.cursor, st.lag_records()), (0, 0, 10));
    assert!(st.last_error.unwrap().contains("No space left on device"));
    assert_eq!(
        mcptrail_sinks::Cursor::new(&data, "full").load().unwrap(),
        None
    );
}
