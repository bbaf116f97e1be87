//! Fuzz target `tombstone`: owns the parsing of a tombstone note (`Tombstone::open` with a
//! key, `Tombstone::read_unverified` without — what `verify`, the writer and the retention
//! engine read from `<data_dir>/tombstones/`). Any bytes may be refused but must not panic;
//! a note that reads must rebuild its tree and read back the same from its own text, and a
//! verified one must have the key's origin.
//! Seeds: fuzz/corpus/tombstone/ (tombstones written by `remove_segments`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptrail_integrity::NoteVerifier;
use mcptrail_ledger::Tombstone;

/// The key the seed tombstones are signed with (fuzz/corpus/tombstone/).
const VKEY: &str = include_str!("../fixtures/tombstone.vkey");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Tombstone::read_unverified(text) {
        let _ = t.tree().root();
        let _ = t.last_hash_bytes();
        let body = t.to_text();
        // The body alone (no signature) reads as the same tombstone once wrapped as a note.
        let again = Tombstone::read_unverified(&format!("{body}\n— x AAAA\n"))
            .expect("a tombstone's own text reads back");
        assert_eq!(again, t, "round trip");
    }
    let key = NoteVerifier::from_vkey(VKEY.trim()).expect("fixture key");
    if let Ok(t) = Tombstone::open(text, &key) {
        assert_eq!(t.origin, key.name());
    }
});
