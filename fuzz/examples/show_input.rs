//! Prints what `verify` (without and with the test seed fuzz/fixtures/mac.seed) and a
//! `LedgerReader` walk make of `ledger_verify` inputs, laid out as the target lays them out:
//! for triaging a crash artifact or a corpus entry.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example show_input -- FILE...

use std::fs;
use std::path::Path;

use mcptrail_integrity::Seed;
use mcptrail_ledger::{verify, LedgerReader, VerifyOptions};

fn main() {
    let seed_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mac.seed");
    let seed = Seed::read(&seed_path).expect("fixtures/mac.seed");
    for file in std::env::args().skip(1) {
        let input = fs::read(&file).expect("read input");
        let tmp = tempfile::tempdir().expect("temp dir");
        mcptrail_fuzz::lay_out(&input, tmp.path()).expect("lay out the input");
        println!("== {file}");
        for (label, opts) in [
            ("verify", VerifyOptions::default()),
            (
                "verify with seed",
                VerifyOptions {
                    seed: Some(seed.clone()),
                    ..VerifyOptions::default()
                },
            ),
        ] {
            match verify(tmp.path(), &opts) {
                Ok(r) => {
                    println!(
                        "{label}: {:?}, {} records, {} MACs checked",
                        r.verdict, r.records, r.macs_checked
                    );
                    for p in &r.problems {
                        println!("  FAIL [{}] {p}", p.class());
                    }
                    for u in &r.unchecked {
                        println!("  unchecked: {u}");
                    }
                }
                Err(e) => println!("{label}: error: {e}"),
            }
        }
        let (mut complete, mut events) = (0, 0);
        for rec in LedgerReader::open(tmp.path(), 1).expect("reader") {
            let Ok(rec) = rec else { break };
            complete += 1;
            events +=
                usize::from(serde_json::from_slice::<mcptrail_event::Event>(&rec.line).is_ok());
        }
        println!("reader: {complete} complete lines, {events} of them parse as events");
    }
}
