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
