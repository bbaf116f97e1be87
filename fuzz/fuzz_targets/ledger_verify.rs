//! Fuzz target `ledger_verify`: owns the read side of the ledger against hostile bytes on
//! disk — `mcptrail_ledger::verify`, without and with a MAC verification seed (and what
//! `mcptrail verify` then does with its report: `Display` of every problem, the JSON
//! report) — and a full walk with `mcptrail_ledger::LedgerReader`. Whatever is in the
//! segment files, neither may panic (that includes arithmetic overflow: cargo fuzz builds
//! with overflow checks); errors and reported problems are fine.
//!
//! Input layout: the bytes up to the first `0xFF` are the first segment,
//! `<data>/ledger/seg-00000000000000000001.jsonl`; the bytes after it, if there is a `0xFF`,
//! are a second segment, named as the writer would name it after rotation: after the seq
//! that follows the first segment's complete lines (at least 2). `0xFF` never occurs in
//! UTF-8, so it never cuts a valid record. Modes as the writer leaves them: directories
//! 0700, the active (last) segment 0600, a sealed one 0400. Seeds:
//! fuzz/corpus/ledger_verify/, made by `examples/gen_seeds.rs` with the real writer; their
//! MACs check out under the test seed fuzz/fixtures/mac.seed, which the second verify uses.
//!
//! Strict mode (`MCPTRAIL_FUZZ_STRICT=1`, off by default and in CI): also fail when verify
//! reports the ledger intact (no problem) although not every complete line was counted as
//! a record: a line that was skipped without being reported.
//!
//! The data directory is one temp dir per process (under `$TMPDIR`), rewritten each run.

#![no_main]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use mcptrail_integrity::Seed;
use mcptrail_ledger::{verify, LedgerReader, VerifyOptions, VerifyReport, LEDGER_DIR};

/// The verification seed of the seed corpus's MACs (a test key, made by gen_seeds).
const MAC_SEED: &[u8] = include_bytes!("../fixtures/mac.seed");

struct Scratch {
    data_dir: PathBuf,
    ledger_dir: PathBuf,
    /// The second segment written by the previous run, removed when this run has another.
    second: Mutex<Option<PathBuf>>,
    seed: Seed,
    strict: bool,
    _tmp: tempfile::TempDir,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let tmp = tempfile::Builder::new()
            .prefix("mcptrail-fuzz-")
            .tempdir()
            .expect("temp dir");
        let data_dir = tmp.path().join("data");
        let ledger_dir = data_dir.join(LEDGER_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&ledger_dir)
            .expect("ledger dir");
        let seed_path = tmp.path().join("mac.seed");
        fs::write(&seed_path, MAC_SEED).expect("write seed");
        let seed = Seed::read(&seed_path).expect("fixtures/mac.seed is a seed");
        Scratch {
            seed,
            data_dir,
            ledger_dir,
            second: Mutex::new(None),
            strict: std::env::var_os("MCPTRAIL_FUZZ_STRICT").is_some_and(|v| v == "1"),
            _tmp: tmp,
        }
    })
}

/// Write a segment afresh with `mode`: 0600 for the active (last) one, 0400 for a sealed
/// one, as the writer leaves them (verify reports a writable sealed segment).
fn write_segment(path: &Path, bytes: &[u8], mode: u32) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove {}: {e}", path.display()),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .expect("create segment");
    f.write_all(bytes).expect("write segment");
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let mut second_path = None;
    for (i, (first_seq, bytes, mode)) in mcptrail_fuzz::segments_of(data).into_iter().enumerate() {
        let path = s.ledger_dir.join(mcptrail_fuzz::segment_name(first_seq));
        write_segment(&path, bytes, mode);
        if i == 1 {
            second_path = Some(path);
        }
    }
    {
        let mut prev = s.second.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = prev.take() {
            if Some(&old) != second_path.as_ref() {
                fs::remove_file(&old).expect("remove previous second segment");
            }
        }
        *prev = second_path;
    }

    // verify without and with the seed, then use each report as `mcptrail verify` does.
    let plain = verify(&s.data_dir, &VerifyOptions::default());
    let keyed = verify(
        &s.data_dir,
        &VerifyOptions {
            seed: Some(s.seed.clone()),
            ..VerifyOptions::default()
        },
    );
    for report in [&plain, &keyed].into_iter().flatten() {
        show(report);
    }

    // A full read, as every consumer does.
    let mut lines = 0u64;
    match LedgerReader::open(&s.data_dir, 1) {
        Ok(reader) => {
            for rec in reader {
                match rec {
                    Ok(rec) => {
                        lines += 1;
                        std::hint::black_box(rec.line.len());
                    }
                    Err(_) => break,
                }
            }
        }
        Err(_) => return,
    }

    if s.strict {
        for report in [&plain, &keyed].into_iter().flatten() {
            if report.ok() {
                assert_eq!(
                    report.records, lines,
                    "verify reported no problem but counted {} of {} complete lines",
                    report.records, lines
                );
            }
        }
    }
});

/// What `mcptrail verify` does with a report: print every problem (text) or the JSON.
fn show(report: &VerifyReport) {
    for p in &report.problems {
        std::hint::black_box((p.class(), p.seq(), p.to_string()));
    }
    std::hint::black_box((
        &report.notices,
        &report.unchecked,
        report.verdict.exit_code(),
    ));
    std::hint::black_box(serde_json::to_string_pretty(report).expect("report serialises"));
    if let Some(h) = &report.head_hash {
        std::hint::black_box(&h[..16]);
    }
}
