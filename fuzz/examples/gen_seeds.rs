//! Writes the seed corpora of the fuzz targets with the real ledger writer:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds -- fuzz
//!
//! `fuzz/corpus/ledger_verify/` gets ledgers in the `ledger_verify` input layout (first
//! segment, then `0xFF` and the second segment, if any): one segment; two segments after
//! rotation, across MAC epochs; a torn last line; a recovered torn line
//! (`system.ledger_recovered`); and, when the writer puts a `mac` member on its records,
//! `*_nomac` copies of the first two without it (chain recomputed). All their MACs are made
//! from one key, whose verification seed goes to `fuzz/fixtures/mac.seed` (a test key:
//! the target verifies with it too). `fuzz/corpus/record_parse/` gets single records.
//! It prints what `verify` (with the seed) says of each ledger and of each seed as the
//! target lays it out. Events carry fresh ids, times and keys, so every run writes other
//! bytes: rerun only to refresh the seeds (e.g. after the record format changed).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcptrail_event::{
    Direction, Event, EventKind, PeerInfo, ProcessInfo, ResponseSummary, ServerInfo, Status,
};
use mcptrail_integrity::Seed;
use mcptrail_ledger::{
    default_seed_path, list_segments, verify, Ledger, LedgerConfig, VerifyOptions, KEY_DIR,
    LEDGER_DIR, MAC_STATE_FILE,
};
use serde_json::json;

fn events(session: &str, round: u32) -> Vec<Event> {
    let mut start = Event::new(EventKind::SessionStart);
    start.session_id = Some(session.into());
    start.agent_id = Some("fuzz-agent".into());
    start.host = Some("seedhost".into());
    start.server = Some(ServerInfo {
        name: Some("files".into()),
        version: Some("1.2.0".into()),
        transport: "stdio".into(),
        command: vec!["npx".into(), "server-files".into()],
        url: None,
    });
    start.process = Some(ProcessInfo {
        tap_pid: 4242,
        server_pid: Some(4243),
        tap_version: "0.1.0".into(),
    });
    start.client = Some(PeerInfo {
        name: "claude".into(),
        version: Some("1.0".into()),
    });

    let mut req = Event::new(EventKind::McpRequest);
    req.session_id = Some(session.into());
    req.direction = Some(Direction::ClientToServer);
    req.method = Some("tools/call".into());
    req.request_id = Some(json!(round));
    req.tool_invoked = Some("read_file".into());
    req.parameters_used = Some(json!({"path": "/etc/hosts", "max": 10}));
    req.labels = vec!["pii".into()];

    let mut resp = Event::new(EventKind::McpResponse);
    resp.session_id = Some(session.into());
    resp.direction = Some(Direction::ServerToClient);
    resp.method = Some("tools/call".into());
    resp.request_id = Some(json!(round));
    resp.request_event_id = Some(req.event_id.clone());
    resp.duration_ms = Some(1.25);
    resp.bytes_in = Some(97);
    resp.bytes_out = Some(311);
    resp.response_summary = Some(ResponseSummary {
        status: Status::Ok,
        is_error: false,
        error_code: None,
        error_message: None,
        size: 311,
        sha256: Some(mcptrail_event::sha256_hex(b"response")),
        preview: Some("127.0.0.1 localhost".into()),
        content_types: vec!["text".into()],
    });

    let mut beat = Event::new(EventKind::SystemHeartbeat);
    beat.detail = Some(json!({"events": 3, "uptime_s": 60}));

    let mut end = Event::new(EventKind::SessionEnd);
    end.session_id = Some(session.into());
    vec![start, req, resp, beat, end]
}

fn cfg(segment_max_bytes: u64, epoch_records: u64) -> LedgerConfig {
    let mut cfg = LedgerConfig {
        segment_max_bytes,
        segment_max_age: Duration::from_secs(3600),
        fsync: false,
        ..LedgerConfig::default()
    };
    cfg.macs.epoch_records = epoch_records;
    cfg
}

/// The `ledger_verify` input of the ledger in `data_dir`: its segments joined by `0xFF`.
fn fuzz_input(data_dir: &Path) -> Vec<u8> {
    let segs = list_segments(&data_dir.join(LEDGER_DIR)).expect("list segments");
    assert!(
        (1..=2).contains(&segs.len()),
        "{} segments: the input layout holds one or two",
        segs.len()
    );
    let mut out = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let bytes = fs::read(&seg.path).expect("read segment");
        if i == 1 {
            out.push(0xFF);
        } else {
            // The target names the second segment after the first one's line count.
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            if let Some(next) = segs.get(1) {
                assert_eq!(next.first_seq, lines + 1, "second segment naming");
            }
        }
        out.extend_from_slice(&bytes);
    }
    out
}

/// The same input without the `mac` member on any line (the chain still holds: record
/// hashes cover lines without it); `None` when no line has one.
fn strip_mac(input: &[u8]) -> Option<Vec<u8>> {
    const MAC: &[u8] = b",\"mac\":\"";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut found = false;
    let mut out = Vec::new();
    for (si, seg) in input.split(|&b| b == 0xFF).enumerate() {
        if si > 0 {
            out.push(0xFF);
        }
        let mut lines: Vec<&[u8]> = seg.split(|&b| b == b'\n').collect();
        let torn = lines.pop().unwrap_or_default(); // after the last '\n': "" or a torn line
        for line in lines {
            let mut line = line.to_vec();
            if let Some(at) = find(&line, MAC) {
                let end = at + MAC.len() + find(&line[at + MAC.len()..], b"\"")? + 1;
                line.drain(at..end);
                found = true;
            }
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        out.extend_from_slice(torn);
    }
    found.then_some(out)
}

/// What `verify` with the seed says of the ledger in `data_dir`, for the log.
fn verdict(data_dir: &Path, seed: &Seed) -> String {
    let opts = VerifyOptions {
        seed: Some(seed.clone()),
        ..VerifyOptions::default()
    };
    match verify(data_dir, &opts) {
        Ok(r) if r.ok() => format!(
            "verify: {:?}, {} records, {} MACs checked, epochs {:?}",
            r.verdict, r.records, r.macs_checked, r.mac_epochs
        ),
        Ok(r) => format!("verify: {} problem(s): {:?}", r.problems.len(), r.problems),
        Err(e) => format!("verify: error {e}"),
    }
}

/// What `verify` says of a `ledger_verify` input, laid out as the target does.
fn verdict_of_input(input: &[u8], seed: &Seed) -> String {
    let tmp = tempfile::tempdir().expect("temp dir");
    mcptrail_fuzz::lay_out(input, tmp.path()).expect("lay out the input");
    verdict(tmp.path(), seed)
}

fn write_seed(dir: &Path, name: &str, bytes: &[u8], seed: &Seed) {
    fs::create_dir_all(dir).expect("seed dir");
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write seed");
    if dir.ends_with("ledger_verify") {
        println!(
            "{} ({} bytes): {}",
            path.display(),
            bytes.len(),
            verdict_of_input(bytes, seed)
        );
    } else {
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
}

/// A new, empty ledger whose writer starts from the MAC key state `mac_state` (epoch 0), so
/// that every seed ledger verifies with the one seed.
fn new_ledger(root: &Path, name: &str, cfg: LedgerConfig, mac_state: &[u8]) -> (PathBuf, Ledger) {
    let data = root.join(name);
    let keys = data.join(KEY_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys)
        .expect("key dir");
    fs::write(keys.join(MAC_STATE_FILE), mac_state).expect("write MAC key state");
    fs::set_permissions(keys.join(MAC_STATE_FILE), fs::Permissions::from_mode(0o600))
        .expect("chmod MAC key state");
    let ledger = Ledger::open(&data, cfg).expect("open ledger");
    (data, ledger)
}

fn main() {
    let fuzz_dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: gen_seeds FUZZ_DIR (the fuzz/ directory)"),
    );
    let lv = fuzz_dir.join("corpus").join("ledger_verify");
    let rp = fuzz_dir.join("corpus").join("record_parse");
    let tmp = tempfile::tempdir().expect("temp dir");

    // The MAC key every seed ledger starts from: a first ledger's, taken before its second
    // record (epoch 0), with its verification seed.
    let template = tmp.path().join("template");
    let mut ledger = Ledger::open(&template, cfg(1 << 20, 0)).expect("open template ledger");
    ledger
        .append(&mut [Event::new(EventKind::SystemHeartbeat)])
        .unwrap();
    drop(ledger);
    let mac_state = fs::read(template.join(KEY_DIR).join(MAC_STATE_FILE)).expect("MAC state");
    let seed_path = default_seed_path(&template);
    let seed = Seed::read(&seed_path).expect("MAC seed");
    let fixtures = fuzz_dir.join("fixtures");
    fs::create_dir_all(&fixtures).expect("fixtures dir");
    fs::copy(&seed_path, fixtures.join("mac.seed")).expect("copy MAC seed");
    let seed = &seed;

    // One segment, two sessions.
    let (data, mut ledger) = new_ledger(tmp.path(), "single", cfg(1 << 20, 0), &mac_state);
    ledger
        .append(&mut events("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 1))
        .unwrap();
    ledger
        .append(&mut events("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", 2))
        .unwrap();
    drop(ledger);
    println!("single: {}", verdict(&data, seed));
    let single = fuzz_input(&data);
    write_seed(&lv, "single_segment", &single, seed);
    if let Some(nomac) = strip_mac(&single) {
        write_seed(&lv, "single_segment_nomac", &nomac, seed);
    }

    // Rotation after the first batch: two segments chained across the boundary; a new MAC
    // epoch every 3 records, so epoch steps with their transition tags too.
    let (data, mut ledger) = new_ledger(tmp.path(), "rotated", cfg(1, 3), &mac_state);
    ledger
        .append(&mut events("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d", 1))
        .unwrap();
    ledger
        .append(&mut events("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5e", 2)[..2])
        .unwrap();
    drop(ledger);
    println!("rotated: {}", verdict(&data, seed));
    let two = fuzz_input(&data);
    write_seed(&lv, "two_segments", &two, seed);
    if let Some(nomac) = strip_mac(&two) {
        write_seed(&lv, "two_segments_nomac", &nomac, seed);
    }

    // A writer killed mid-record: a torn last line.
    let cut = single.len() - 40;
    write_seed(&lv, "torn_tail", &single[..cut], seed);

    // The next writer quarantines the torn line and records system.ledger_recovered.
    let (data, mut ledger) = new_ledger(tmp.path(), "recovered", cfg(1 << 20, 0), &mac_state);
    ledger
        .append(&mut events("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5f", 1)[..3])
        .unwrap();
    drop(ledger);
    let seg = list_segments(&data.join(LEDGER_DIR))
        .unwrap()
        .remove(0)
        .path;
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(br#"{"schema_version":"1.0","event_id":"0190a1b2-c3d4-7e5f"#)
        .unwrap();
    let mut ledger = Ledger::open(&data, cfg(1 << 20, 0)).expect("reopen ledger");
    ledger
        .append(&mut events("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a60", 2)[3..])
        .unwrap();
    drop(ledger);
    println!("recovered: {}", verdict(&data, seed));
    write_seed(&lv, "recovered", &fuzz_input(&data), seed);

    // Single records for record_parse: one session's lines (one of each kind), with and
    // without `mac`.
    let nomac = strip_mac(&single).unwrap_or_default();
    for (variant, input) in [("", &single), ("_nomac", &nomac)] {
        for (i, line) in input.split(|&b| b == b'\n').take(5).enumerate() {
            write_seed(&rp, &format!("record_{:02}{variant}", i + 1), line, seed);
        }
    }
}
