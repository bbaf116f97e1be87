//! Ten `wrap` processes writing one ledger at once, as a client with ten servers does.

use std::collections::HashMap;
use std::time::Duration;

use mcptrail_event::EventKind;
use mcptrail_test_support::target_bin;
use serde_json::json;

use crate::support::*;

#[test]
fn ten_concurrent_taps_never_interleave_or_lose_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = target_bin("rmcp-echo-server").display().to_string();
    const CALLS: i64 = 100;
    let handles: Vec<_> = (0..10)
        .map(|t| {
            let data = data.clone();
            let server = server.clone();
            std::thread::spawn(move || {
                let agent = format!("agent-{t}");
                let mut w = Wrapped::start(&data, &["--agent-id", &agent], &[&server]);
                w.initialize("concurrent");
                for i in 1..=CALLS {
                    let r = w.request(
                        i,
                        "tools/call",
                        json!({"name": "echo", "arguments": {"text": format!("{agent} call {i}")}}),
                    );
                    assert_eq!(
                        r["result"]["content"][0]["text"],
                        format!("{agent} call {i}")
                    );
                }
                let (st, _, _) = w.finish(Duration::from_secs(30));
                assert!(st.success());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let evs = events(&data); // chain verified, schema checked
    let mut per_agent: HashMap<String, Vec<i64>> = HashMap::new();
    for e in evs
        .iter()
        .filter(|e| e.kind == EventKind::McpResponse && e.tool_invoked.is_some())
    {
        per_agent
            .entry(e.agent_id.clone().unwrap())
            .or_default()
            .push(e.request_id.as_ref().unwrap().as_i64().unwrap());
    }
    assert_eq!(per_agent.len(), 10);
    for (agent, ids) in &per_agent {
        assert_eq!(
            ids,
            &(1..=CALLS).collect::<Vec<_>>(),
            "{agent}: every call recorded once, in order"
        );
    }
    assert_eq!(of_kind(&evs, EventKind::SessionStart).len(), 10);
    assert_eq!(of_kind(&evs, EventKind::SessionEnd).len(), 10);
    let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=evs.len() as u64).collect::<Vec<_>>());
}
