//! Fuzz target `record_parse`: owns the parsing of one ledger line into
//! `mcptrail_event::Event` (`serde_json::from_slice`, as `verify` and every consumer do).
//! Any bytes may fail to parse but must not panic; a line that parses must serialise again
//! and parse back. (Not compared for equality: serde_json's default float parsing is not
//! exactly round-trip, and the ledger never re-serialises a stored line anyway.)
//! Seeds: fuzz/corpus/record_parse/ (single records).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptrail_event::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = serde_json::from_slice::<Event>(data) {
        let again = serde_json::to_vec(&ev).expect("a parsed event serialises");
        let back = serde_json::from_slice::<Event>(&again);
        assert!(back.is_ok(), "a serialised event does not parse: {back:?}");
    }
});
