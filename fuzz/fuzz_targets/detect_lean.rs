//! Fuzz target `detect_lean`: owns the lean parse of a ledger line for detection
//! (`mcptrail_detect::lean::parse`, what `mcptrail detect` and the streaming detector read)
//! and feeding it to a detector with the built-in pack and monitors. Any bytes may fail to
//! parse but must not panic; a line the full `Event` parse accepts must parse lean too and
//! agree on every member the rules read; the detector must not panic on it.
//! Seeds: fuzz/corpus/record_parse/ (single records).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptrail_detect::lean::{parse, Needs};
use mcptrail_detect::{Detector, Engine, RuleSet};
use mcptrail_event::Event;

fuzz_target!(|data: &[u8]| {
    let lean = parse(data, &Needs::all());
    let _ = parse(data, &Needs::default());
    if let Ok(full) = serde_json::from_slice::<Event>(data) {
        let lean = lean.expect("a line that parses as an Event parses lean");
        assert_eq!(lean.event_id, full.event_id);
        assert_eq!(lean.seq, full.seq);
        assert_eq!(lean.time, full.time);
        assert_eq!(lean.kind, full.kind);
        assert_eq!(lean.session_id, full.session_id);
        assert_eq!(lean.agent_id, full.agent_id);
        assert_eq!(lean.method, full.method);
        assert_eq!(lean.tool_invoked, full.tool_invoked);
        assert_eq!(lean.labels, full.labels);
        assert_eq!(lean.detail, full.detail);
        assert_eq!(lean.user_identity, full.user_identity);
        assert_eq!(
            lean.response_summary
                .as_ref()
                .map(|r| (r.status, r.size, r.is_error)),
            full.response_summary
                .as_ref()
                .map(|r| (r.status, r.size, r.is_error))
        );
    }
    let mut det = Detector::new(Engine::new(RuleSet::builtin()));
    if let Ok(e) = det.parse_line(data) {
        det.observe_line(&e, data);
        det.judge_as_of(i64::MAX / 4);
        let _ = det.take_new();
    }
});
