//! Tamper evidence of the ledger as properties: `proptest` over random ledgers, and sweeps over
//! the byte offsets and record positions of two small ledgers.
//!
//! The ledgers are written by [`Ledger`] with forward-secure MACs on (a new epoch every few
//! records, so there are epoch transition tags), small segments (so there are sealed 0400
//! segments), signed checkpoints also written to an anchor directory, and a final
//! `checkpoint_now`, so a checkpoint covers every record. Some ledgers then get an *unsigned
//! tail*: records appended after the newest checkpoint, which only the hash chain and the MACs
//! protect (a live ledger always has one). Every ledger is verified as an auditor would: with
//! the MAC seed, the checkpoint key and the anchor directory. What is proven:
//!
//! 1. An untampered ledger verifies `Intact` with no problem, every MAC checked and the newest
//!    checkpoint covering every record but the unsigned tail — also after rotation, and after
//!    dropping the writer, reopening the ledger and appending more. (So the properties below
//!    can fail.)
//! 2. After each of these tampers, `verify` returns `Tampered` with at least one problem, never
//!    `Intact` (nor `CannotVerify`):
//!    - a single-byte change (to another value, `\n` included) at any offset of any segment, in
//!      signed records and in the unsigned tail;
//!    - deleting a record, duplicating one, swapping two, deleting a whole (non-empty) segment;
//!    - inserting a forged record: a copy of a record with one field changed (its seq and
//!      prev_hash as copied, or made to fit the place it is put), or a wholly new event with the
//!      place's prev_hash and its seq or seq 0 (without a MAC, with a made-up MAC of the
//!      neighbouring epoch, or of the next epoch with a made-up transition tag) — anywhere, the
//!      end included;
//!    - truncating a fully signed ledger (its segments as one byte stream, later segments
//!      deleted) at any byte offset, keeping or deleting a segment the cut empties, keeping or
//!      deleting the local checkpoints. This is reported as `truncated_tail` every time: at a
//!      line or segment boundary the chain cannot see it, the signed checkpoint does, and the
//!      anchored copy does when the local ones are gone.
//!
//!    Not claimed (undetectable by design): removing records of the unsigned tail (deleting or
//!    truncating them, or the segment holding only them) — the checkpoints exist to bound
//!    that; removing the anchored checkpoints too; an attacker holding the current MAC key and
//!    the checkpoint signing key (both live on the machine).
//!
//! 3. The same holds for a ledger whose oldest segments were removed by retention under
//!    signed tombstones (anchored too): byte changes, record tampers and truncations of what
//!    is left, any changed byte of a tombstone (`bad_tombstone`), and a deleted tombstone with
//!    its anchored copy (`deleted_record` / `missing_segment` / `tombstone_not_prefix`) are
//!    all reported; a local tombstone deleted while its anchored copy remains is not
//!    tampering (the removal is still proven lawful).
//!
//! Sealed segments are made writable for a tamper and set back to their mode afterwards, and no
//! report may blame permissions: the properties test the content checks, not the mode check.
//!
//! Found by these properties and fixed: a line claiming seq 0 used to escape every
//! per-record check (the early return meant for the lines before `--from`), so one appended at
//! the end, or the newest unsigned record rewritten with seq 0, verified as intact. The
//! `*_seq_zero_*` tests below keep it fixed.
//!
//! Cost: the default run checks a budget: 32 random ledgers
//! per property (`PROPTEST_CASES` overrides) and, on the small ledgers, every structurally
//! distinct position (every line boundary; each record's newline, closing brace, seq,
//! prev_hash, MAC epoch, tag and transition tag, and a content byte; every record position).
//! The full sweeps — every byte offset with 3-5 values, every truncation offset, every record
//! tamper at every position, ~30 000 verifications — are `#[ignore]`d: run them with
//! `cargo nextest run --release -p mcptrail-ledger --test tamper_props --run-ignored only`.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcptrail_event::{Event, EventKind, GENESIS_HASH};
use mcptrail_integrity::Seed;
use mcptrail_ledger::{
    default_seed_path, list_segments, list_tombstones, local_verifier, remove_segments,
    removed_through, verify, CheckpointPolicy, Ledger, LedgerConfig, MacPolicy, Removal,
    RemovalOptions, TombstoneState, Verdict, VerifyOptions, VerifyReport, CHECKPOINT_DIR,
    LEDGER_DIR, TOMBSTONE_DIR,
};
use proptest::prelude::*;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Building ledgers
// ---------------------------------------------------------------------------------------------

/// Cases per random-ledger property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A temporary directory, on tmpfs when there is one: the writer fsyncs every checkpoint and
/// key file, which on a disk costs more than everything else here.
fn tempdir() -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("mcptrail-tamper-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Content of one random event.
#[derive(Debug, Clone)]
struct EvSpec {
    agent: String,
    request: u32,
    method: String,
}

/// A ledger: how it is written.
#[derive(Debug, Clone)]
struct Spec {
    /// Appended, then a checkpoint covers them all.
    batches: Vec<Vec<EvSpec>>,
    /// Appended after that checkpoint: the unsigned tail (unless a rotation signs part of it).
    tail: Vec<Vec<EvSpec>>,
    segment_max_bytes: u64,
    every_records: u64,
    epoch_records: u64,
}

fn ev_spec() -> impl Strategy<Value = EvSpec> {
    // Quotes, backslashes and a multi-byte character, so escapes and UTF-8 are on the line.
    ("[a-z0-9-]{1,8}", any::<u32>(), "[a-z/ \"\\\\é]{0,10}").prop_map(|(agent, request, method)| {
        EvSpec {
            agent,
            request,
            method,
        }
    })
}

fn batches(max_batches: usize) -> impl Strategy<Value = Vec<Vec<EvSpec>>> {
    prop::collection::vec(prop::collection::vec(ev_spec(), 1..=3), 1..=max_batches)
}

fn spec(unsigned_tail: bool) -> impl Strategy<Value = Spec> {
    let tail = if unsigned_tail {
        batches(2).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    // Lines are ~400-500 bytes: a segment holds one to six records.
    (
        batches(4),
        tail,
        500u64..2500,
        prop_oneof![Just(0u64), 2u64..=6],
        1u64..=3,
    )
        .prop_map(
            |(batches, tail, segment_max_bytes, every_records, epoch_records)| Spec {
                batches,
                tail,
                segment_max_bytes,
                every_records,
                epoch_records,
            },
        )
}

fn event(s: &EvSpec) -> Event {
    let mut e = Event::new(EventKind::McpRequest);
    e.agent_id = Some(s.agent.clone());
    e.request_id = Some(serde_json::json!(s.request));
    e.method = Some(s.method.clone());
    e
}

fn config(spec: &Spec, anchor: &Path) -> LedgerConfig {
    LedgerConfig {
        segment_max_bytes: spec.segment_max_bytes,
        fsync: false,
        checkpoints: CheckpointPolicy {
            every_records: spec.every_records,
            interval: Duration::from_secs(3600),
            anchor_dir: Some(anchor.to_path_buf()),
            ..CheckpointPolicy::default()
        },
        macs: MacPolicy {
            enabled: true,
            epoch_records: spec.epoch_records,
            epoch_interval: Duration::from_secs(3600),
            seed_path: None,
        },
        ..LedgerConfig::default()
    }
}

fn append_all(ledger: &mut Ledger, batches: &[Vec<EvSpec>]) {
    for b in batches {
        let mut events: Vec<Event> = b.iter().map(event).collect();
        ledger.append(&mut events).unwrap();
    }
}

/// Write `spec` into `data` (anchoring checkpoints in `anchor`).
fn write(spec: &Spec, data: &Path, anchor: &Path) {
    let mut ledger = Ledger::open(data, config(spec, anchor)).unwrap();
    append_all(&mut ledger, &spec.batches);
    ledger.checkpoint_now().unwrap();
    append_all(&mut ledger, &spec.tail);
}

/// A ledger as written, never touched: tampers work on copies of it.
struct Pristine {
    data: TempDir,
    /// The anchor directory: only read once the ledger is written.
    anchor: TempDir,
    opts: VerifyOptions,
    /// Stored lines, without `\n`, in order.
    lines: Vec<Vec<u8>>,
    /// Records of the stored lines covered by the newest checkpoint; the rest is the unsigned
    /// tail.
    covered: u64,
    /// Records `1..=base` were removed by retention under signed tombstones (0: none).
    base: u64,
}

impl Pristine {
    fn build(spec: &Spec) -> Pristine {
        Pristine::build_purged(spec, 0)
    }

    /// Written, then its oldest `purge` segments (at most all but the newest) removed under
    /// signed tombstones, anchored too — what retention does.
    fn build_purged(spec: &Spec, purge: usize) -> Pristine {
        let data = tempdir();
        let anchor = tempdir();
        write(spec, data.path(), anchor.path());
        let names: Vec<String> = segments(data.path())
            .iter()
            .map(|s| s.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        let purge = purge.min(names.len().saturating_sub(1));
        let removals: Vec<Removal> = names[..purge]
            .iter()
            .map(|n| Removal {
                segment: n.clone(),
                state: TombstoneState::Purged,
                archive: None,
            })
            .collect();
        remove_segments(
            data.path(),
            &removals,
            &RemovalOptions {
                meta: serde_json::json!({"policy": "test"}),
                anchor_dir: Some(anchor.path().to_path_buf()),
                ..RemovalOptions::default()
            },
        )
        .unwrap();
        let p = Pristine::open(data, anchor);
        let signed: usize = spec.batches.iter().map(Vec::len).sum();
        let tail: usize = spec.tail.iter().map(Vec::len).sum();
        assert_eq!(p.base + p.records(), (signed + tail) as u64);
        assert!(
            p.base + p.covered >= signed as u64,
            "checkpoint_now signed everything"
        );
        p
    }

    /// The tombstone files (local), in order.
    fn tombstones(&self) -> Vec<PathBuf> {
        list_tombstones(&self.path().join(TOMBSTONE_DIR)).unwrap()
    }

    /// Read what an auditor has (the seed, the checkpoint key, the anchor) and check that the
    /// untampered ledger verifies.
    fn open(data: TempDir, anchor: TempDir) -> Pristine {
        let seed = Seed::read(&default_seed_path(data.path())).unwrap();
        let verifier = local_verifier(data.path())
            .unwrap()
            .expect("a checkpoint was signed, so the key exists");
        let opts = VerifyOptions {
            seed: Some(seed),
            verifier: Some(verifier),
            anchor_dirs: vec![anchor.path().to_path_buf()],
            ..VerifyOptions::default()
        };
        let mut p = Pristine {
            data,
            anchor,
            opts,
            lines: Vec::new(),
            covered: 0,
            base: 0,
        };
        p.reload();
        p
    }

    /// Re-read the lines and check the ledger verifies as intact.
    fn reload(&mut self) {
        self.lines = segments(self.path())
            .iter()
            .flat_map(|s| split_lines(&fs::read(s).unwrap()))
            .collect();
        let r = self.verify(self.path());
        let n = self.records();
        assert_eq!(
            (r.verdict, r.problems.len()),
            (Verdict::Intact, 0),
            "untampered ledger: {:?} {:#?} unchecked {:?}",
            r.verdict,
            r.problems,
            r.unchecked
        );
        assert_eq!(r.records, n, "every record was read");
        assert_eq!(r.macs_checked, n, "every record's MAC was checked");
        self.base = r.removed.last().map_or(0, |t| t.last_seq);
        self.covered = r.latest_checkpoint.expect("a checkpoint was verified") - self.base;
        assert!(self.covered <= n);
    }

    fn path(&self) -> &Path {
        self.data.path()
    }

    fn records(&self) -> u64 {
        self.lines.len() as u64
    }

    /// The segments' bytes as one stream.
    fn bytes(&self) -> Vec<u8> {
        self.lines
            .iter()
            .flat_map(|l| l.iter().chain(b"\n"))
            .copied()
            .collect()
    }

    /// Bytes of the records the newest checkpoint covers (the unsigned tail starts here).
    fn signed_bytes(&self) -> u64 {
        self.lines[..self.covered as usize]
            .iter()
            .map(|l| l.len() as u64 + 1)
            .sum()
    }

    fn verify(&self, data_dir: &Path) -> VerifyReport {
        verify(data_dir, &self.opts).unwrap_or_else(|e| panic!("verify failed to run: {e}"))
    }

    /// Copy, tamper, verify: `Err` says why the report does not show the tampering.
    fn try_check(
        &self,
        what: &dyn std::fmt::Debug,
        tamper: impl FnOnce(&Path),
    ) -> Result<VerifyReport, String> {
        let work = tempdir();
        copy_tree(self.path(), work.path());
        tamper(work.path());
        let r = self.verify(work.path());
        ANCHOR_RESTORE.with(|saved| {
            for (path, bytes) in saved.borrow_mut().drain(..) {
                fs::write(path, bytes).unwrap();
            }
        });
        if r.verdict != Verdict::Tampered || r.problems.is_empty() {
            return Err(format!(
                "NOT DETECTED: {what:?}: verdict {:?}, problems {:?}, unchecked {:?}, records {}",
                r.verdict, r.problems, r.unchecked, r.records
            ));
        }
        // Modes are restored: a permissions problem would make this pass for the wrong reason.
        if r.problems
            .iter()
            .any(|p| p.class() == "segment_permissions")
        {
            return Err(format!(
                "{what:?}: the test left a sealed segment writable: {:?}",
                r.problems
            ));
        }
        Ok(r)
    }

    fn check(&self, what: &dyn std::fmt::Debug, tamper: impl FnOnce(&Path)) -> VerifyReport {
        self.try_check(what, tamper)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Recursive copy keeping every file's and directory's mode (sealed segments stay 0400).
fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).unwrap();
        if meta.is_dir() {
            copy_tree(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
        }
        fs::set_permissions(&to, Permissions::from_mode(meta.permissions().mode())).unwrap();
    }
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    list_segments(&data_dir.join(LEDGER_DIR))
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect()
}

/// The lines of a segment; an empty segment (the active one just after a rotation) has none.
fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(lines.pop().as_deref(), Some(&[][..]), "ends with a newline");
    lines
}

/// Run `f` on `path` made writable, then give it back its mode.
fn with_writable<T>(path: &Path, f: impl FnOnce(&Path) -> T) -> T {
    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    fs::set_permissions(path, Permissions::from_mode(0o600)).unwrap();
    let out = f(path);
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    out
}

fn total_len(data_dir: &Path) -> u64 {
    segments(data_dir)
        .iter()
        .map(|s| fs::metadata(s).unwrap().len())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Tampers
// ---------------------------------------------------------------------------------------------

/// Change the byte at `offset` of the segments taken as one stream.
#[derive(Debug, Clone, Copy)]
struct ByteChange {
    offset: u64,
    from: char,
    to: char,
}

impl ByteChange {
    fn new(p: &Pristine, offset: u64, to: u8) -> ByteChange {
        let from = p.bytes()[offset as usize];
        assert_ne!(from, to, "a change changes the byte");
        ByteChange {
            offset,
            from: from as char,
            to: to as char,
        }
    }

    fn apply(&self, data_dir: &Path) {
        let mut at = self.offset;
        for seg in segments(data_dir) {
            let len = fs::metadata(&seg).unwrap().len();
            if at < len {
                with_writable(&seg, |p| {
                    let mut bytes = fs::read(p).unwrap();
                    assert_eq!(bytes[at as usize] as char, self.from);
                    bytes[at as usize] = self.to as u8;
                    fs::write(p, bytes).unwrap();
                });
                return;
            }
            at -= len;
        }
        panic!("offset {} is beyond the ledger", self.offset);
    }
}

/// How a truncation is done.
#[derive(Debug, Clone, Copy)]
struct Truncation {
    /// Bytes kept of the segments taken as one stream (fewer than there are).
    keep: u64,
    /// Delete the segment the cut falls in if nothing of it is left (else leave it empty).
    remove_emptied: bool,
    /// Delete `<data_dir>/checkpoints` as well (the anchored copies remain).
    remove_local_checkpoints: bool,
}

impl Truncation {
    fn apply(&self, data_dir: &Path) {
        let mut at = self.keep;
        let mut cut = false;
        for seg in segments(data_dir) {
            let len = fs::metadata(&seg).unwrap().len();
            if cut {
                fs::remove_file(&seg).unwrap();
            } else if at < len {
                if at == 0 && self.remove_emptied {
                    fs::remove_file(&seg).unwrap();
                } else {
                    with_writable(&seg, |p| {
                        let f = fs::OpenOptions::new().write(true).open(p).unwrap();
                        f.set_len(at).unwrap();
                    });
                }
                cut = true;
            } else {
                at -= len;
            }
        }
        assert!(cut, "truncation at {} keeps everything", self.keep);
        if self.remove_local_checkpoints {
            fs::remove_dir_all(data_dir.join(CHECKPOINT_DIR)).unwrap();
        }
    }
}

/// Verify a truncation: tampered, and named as a truncated tail.
fn check_truncation(p: &Pristine, t: Truncation) -> Result<(), String> {
    let r = p.try_check(&t, |d| t.apply(d))?;
    if r.problems.iter().any(|p| p.class() == "truncated_tail") {
        Ok(())
    } else {
        Err(format!(
            "{t:?}: reported, but not as truncated_tail: {:?}",
            r.problems
        ))
    }
}

/// The ledger's records, segment by segment, for record-level tampers.
struct Records {
    segs: Vec<(PathBuf, Vec<Vec<u8>>)>,
    /// Where the removed prefix ends: (last seq, its record hash, its MAC epoch).
    base: Option<(u64, String, u64)>,
}

impl Records {
    fn load(data_dir: &Path) -> Records {
        Records {
            base: removed_through(data_dir)
                .unwrap()
                .map(|t| (t.last_seq, t.last_hash, t.mac_epoch.unwrap_or(0))),
            segs: segments(data_dir)
                .into_iter()
                .map(|p| {
                    let lines = split_lines(&fs::read(&p).unwrap());
                    (p, lines)
                })
                .collect(),
        }
    }

    /// (segment, line) of record `i` (0-based); `i == len` is the end of the last segment.
    fn locate(&self, mut i: usize) -> (usize, usize) {
        for (s, (_, lines)) in self.segs.iter().enumerate() {
            if i < lines.len() {
                return (s, i);
            }
            i -= lines.len();
        }
        assert_eq!(i, 0, "position beyond the end");
        let last = self.segs.len() - 1;
        (last, self.segs[last].1.len())
    }

    fn get(&self, i: usize) -> Vec<u8> {
        let (s, k) = self.locate(i);
        self.segs[s].1[k].clone()
    }

    fn remove(&mut self, i: usize) {
        let (s, k) = self.locate(i);
        self.segs[s].1.remove(k);
    }

    /// Insert `line` before record `at` (in that record's segment), or at the very end.
    fn insert(&mut self, at: usize, line: Vec<u8>) {
        let (s, k) = self.locate(at);
        self.segs[s].1.insert(k, line);
    }

    fn swap(&mut self, i: usize, j: usize) {
        let (a, b) = (self.get(i), self.get(j));
        let (si, ki) = self.locate(i);
        let (sj, kj) = self.locate(j);
        self.segs[si].1[ki] = b;
        self.segs[sj].1[kj] = a;
    }

    /// Write back every segment whose content changed, keeping its mode.
    fn store(&self) {
        for (path, lines) in &self.segs {
            let bytes: Vec<u8> = lines
                .iter()
                .flat_map(|l| l.iter().copied().chain([b'\n']))
                .collect();
            if fs::read(path).unwrap() != bytes {
                with_writable(path, |p| fs::write(p, &bytes).unwrap());
            }
        }
    }
}

/// A record-level tamper. Positions are 0-based record indexes of the untampered ledger.
#[derive(Debug, Clone)]
enum RecordTamper {
    Delete(usize),
    /// Insert a copy of record `.0` before record `.1` (`.1 == len`: at the end).
    Duplicate(usize, usize),
    Swap(usize, usize),
    /// Insert, before record `at`, a copy of record `src` with `field` changed; with `fit`,
    /// its seq and prev_hash are those of the place.
    ForgedCopy {
        src: usize,
        field: Field,
        at: usize,
        fit: bool,
    },
    /// Insert a wholly new event before record `at`, with the prev_hash of the place and its
    /// seq (or, with `zero_seq`, seq 0).
    ForgedNew {
        at: usize,
        mac: FakeMac,
        zero_seq: bool,
        salt: u32,
    },
    /// Delete a whole segment (by position in the segment list).
    DeleteSegment(usize),
}

/// The field a forged copy changes.
#[derive(Debug, Clone, Copy)]
enum Field {
    Agent,
    Method,
    RequestId,
    Time,
}

const FIELDS: [Field; 4] = [Field::Agent, Field::Method, Field::RequestId, Field::Time];

/// The MAC member of a wholly new forged event.
#[derive(Debug, Clone, Copy)]
enum FakeMac {
    None,
    /// A made-up tag claiming the epoch of the record before it.
    SameEpoch,
    /// A made-up tag claiming the next epoch, with a made-up transition tag.
    NextEpoch,
}

const FAKE_MACS: [FakeMac; 3] = [FakeMac::None, FakeMac::SameEpoch, FakeMac::NextEpoch];

fn parse(line: &[u8]) -> Event {
    serde_json::from_slice(line).unwrap()
}

fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(mcptrail_ledger::record_hash(bytes))
}

fn epoch_of(line: &[u8]) -> u64 {
    parse(line)
        .mac
        .and_then(|m| m.split(':').next()?.parse().ok())
        .expect("records carry MACs")
}

/// seq and prev_hash that fit a record put before record `at` of `recs`.
fn fitting(recs: &Records, at: usize) -> (u64, String) {
    let base = recs.base.as_ref().map_or(0, |b| b.0);
    match (at, &recs.base) {
        (0, None) => (1, GENESIS_HASH.to_string()),
        (0, Some((_, h, _))) => (base + 1, h.clone()),
        _ => (base + at as u64 + 1, hash_hex(&recs.get(at - 1))),
    }
}

impl RecordTamper {
    /// Whether this only removes records of the unsigned tail: a truncation no checkpoint can
    /// show (not claimed).
    fn truncates_unsigned_tail(&self, p: &Pristine) -> bool {
        let n = p.records() as usize;
        let unsigned = p.covered < p.records();
        match *self {
            RecordTamper::Delete(i) => unsigned && i == n - 1,
            RecordTamper::DeleteSegment(s) => {
                let recs = Records::load(p.path());
                let first: usize = recs.segs[..s].iter().map(|x| x.1.len()).sum();
                let holds = recs.segs[s].1.len();
                // Empty segments hold nothing to remove; a segment holding only unsigned
                // records with none after it is the unsigned tail.
                holds == 0 || (first as u64 >= p.covered && first + holds == n)
            }
            _ => false,
        }
    }

    fn apply(&self, data_dir: &Path) {
        let mut recs = Records::load(data_dir);
        match *self {
            RecordTamper::Delete(i) => recs.remove(i),
            RecordTamper::Duplicate(i, at) => {
                let line = recs.get(i);
                recs.insert(at, line);
            }
            RecordTamper::Swap(i, j) => recs.swap(i, j),
            RecordTamper::ForgedCopy {
                src,
                field,
                at,
                fit,
            } => {
                let line = recs.get(src);
                let mut e = parse(&line);
                // The event serialises back to exactly its stored line, so the forgery differs
                // from the copied record in the one field (and in seq/prev_hash with `fit`).
                assert_eq!(serde_json::to_vec(&e).unwrap(), line, "round trip");
                match field {
                    Field::Agent => e.agent_id = Some(format!("{}x", e.agent_id.unwrap())),
                    Field::Method => e.method = Some(format!("{}x", e.method.unwrap())),
                    Field::RequestId => e.request_id = Some(serde_json::json!("forged")),
                    Field::Time => e.time = "2000-01-01T00:00:00.000000Z".into(),
                }
                if fit {
                    (e.seq, e.prev_hash) = fitting(&recs, at);
                }
                let forged = serde_json::to_vec(&e).unwrap();
                assert_ne!(forged, line);
                recs.insert(at, forged);
            }
            RecordTamper::ForgedNew {
                at,
                mac,
                zero_seq,
                salt,
            } => {
                let mut e = event(&EvSpec {
                    agent: "forger".into(),
                    request: salt,
                    method: "tools/call".into(),
                });
                (e.seq, e.prev_hash) = fitting(&recs, at);
                if zero_seq {
                    e.seq = 0;
                }
                let epoch = match at {
                    0 => recs.base.as_ref().map_or(0, |b| b.2),
                    _ => epoch_of(&recs.get(at - 1)),
                };
                let tag = hash_hex(&salt.to_be_bytes());
                e.mac = match mac {
                    FakeMac::None => None,
                    FakeMac::SameEpoch => Some(format!("{epoch}:{tag}")),
                    FakeMac::NextEpoch => {
                        Some(format!("{}:{tag}:{}", epoch + 1, hash_hex(tag.as_bytes())))
                    }
                };
                recs.insert(at, serde_json::to_vec(&e).unwrap());
            }
            RecordTamper::DeleteSegment(s) => {
                fs::remove_file(&recs.segs[s].0).unwrap();
                return;
            }
        }
        recs.store();
    }
}

/// A record tamper for a ledger of `n` records in `segs` segments, from raw random numbers.
fn record_tamper(kind: u8, a: usize, b: usize, n: usize, segs: usize, salt: u32) -> RecordTamper {
    let i = a % n;
    let at = b % (n + 1);
    match kind % 6 {
        0 => RecordTamper::Delete(i),
        2 if n >= 2 => {
            let j = (i + 1 + b % (n - 1)) % n;
            RecordTamper::Swap(i.min(j), i.max(j))
        }
        1 | 2 => RecordTamper::Duplicate(i, at),
        3 => RecordTamper::ForgedCopy {
            src: i,
            field: FIELDS[b % FIELDS.len()],
            at,
            fit: salt.is_multiple_of(2),
        },
        4 => RecordTamper::ForgedNew {
            at,
            mac: FAKE_MACS[a % FAKE_MACS.len()],
            zero_seq: salt % 4 == 1,
            salt,
        },
        _ => RecordTamper::DeleteSegment(a % segs),
    }
}

// ---------------------------------------------------------------------------------------------
// Random ledgers
// ---------------------------------------------------------------------------------------------

proptest! {
    // Shrinking rebuilds ledgers: bound it.
    #![proptest_config(ProptestConfig {
        max_shrink_time: 10_000,
        ..ProptestConfig::with_cases(cases(32))
    })]

    /// Rotation and reopening keep a ledger verified: the writer's own work never looks like
    /// tampering.
    #[test]
    fn stays_intact_across_rotation_and_reopen(spec in spec(false), more in batches(3)) {
        let mut p = Pristine::build(&spec);
        let before = p.records();
        prop_assert_eq!(p.covered, before);
        if total_len(p.path()) > spec.segment_max_bytes + 600 {
            prop_assert!(segments(p.path()).len() > 1, "rotated");
        }
        // A new writer (another process, after a restart) continues chain, MACs and tree:
        // intact with an unsigned tail, and intact once a third writer signs it.
        let mut ledger = Ledger::open(p.path(), config(&spec, p.anchor.path())).unwrap();
        append_all(&mut ledger, &more);
        drop(ledger);
        p.reload();
        let added: usize = more.iter().map(Vec::len).sum();
        prop_assert_eq!(p.records(), before + added as u64);
        let mut ledger = Ledger::open(p.path(), config(&spec, p.anchor.path())).unwrap();
        prop_assert_eq!(ledger.checkpoint_now().unwrap(), Some(p.records()));
        drop(ledger);
        p.reload();
        prop_assert_eq!(p.covered, p.records());
    }

    /// On a fully signed ledger: a byte change, a record tamper and a truncation, each on its
    /// own copy, are all reported (truncation as `truncated_tail`, with or without the local
    /// checkpoints).
    #[test]
    fn tampering_a_signed_ledger_is_detected(
        spec in spec(false),
        byte in (any::<u64>(), any::<u8>(), any::<bool>()),
        rec in (any::<u8>(), any::<usize>(), any::<usize>(), any::<u32>()),
        cut in (any::<u64>(), any::<bool>(), any::<bool>()),
    ) {
        let p = Pristine::build(&spec);
        let total = total_len(p.path());
        p.check_random_byte(byte, 0);
        p.check_random_record_tamper(rec);
        let t = Truncation { keep: cut.0 % total, remove_emptied: cut.1, remove_local_checkpoints: cut.2 };
        check_truncation(&p, t).map_err(TestCaseError::fail)?;
    }

    /// With an unsigned tail (records after the newest checkpoint, protected only by the chain
    /// and the MACs): byte changes (half of them in the tail) and record tampers are reported.
    #[test]
    fn tampering_a_ledger_with_an_unsigned_tail_is_detected(
        spec in spec(true),
        byte in (any::<u64>(), any::<u8>(), any::<bool>()),
        in_tail in any::<bool>(),
        rec in (any::<u8>(), any::<usize>(), any::<usize>(), any::<u32>()),
    ) {
        let p = Pristine::build(&spec);
        p.check_random_byte(byte, if in_tail { p.signed_bytes() } else { 0 });
        p.check_random_record_tamper(rec);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        max_shrink_time: 10_000,
        ..ProptestConfig::with_cases(cases(16))
    })]

    /// With its oldest segments removed under signed tombstones: a byte change, a record
    /// tamper and a truncation of what is left, a byte change in a tombstone, and a deleted
    /// tombstone (local and anchored copy), each on its own copy, are all reported.
    #[test]
    fn tampering_a_purged_ledger_is_detected(
        spec in spec(false),
        purge in 1usize..=3,
        byte in (any::<u64>(), any::<u8>(), any::<bool>()),
        rec in (any::<u8>(), any::<usize>(), any::<usize>(), any::<u32>()),
        cut in (any::<u64>(), any::<bool>(), any::<bool>()),
        ts in (any::<usize>(), any::<usize>(), 1u8..=255),
    ) {
        let p = Pristine::build_purged(&spec, purge);
        prop_assume!(p.base > 0, "the ledger had a segment to remove");
        let total = total_len(p.path());
        if total > 0 {
            p.check_random_byte(byte, 0);
            p.check_random_record_tamper(rec);
            let t = Truncation { keep: cut.0 % total, remove_emptied: cut.1, remove_local_checkpoints: cut.2 };
            check_truncation(&p, t).map_err(TestCaseError::fail)?;
        }
        let files = p.tombstones();
        let file = &files[ts.0 % files.len()];
        let len = fs::metadata(file).unwrap().len() as usize;
        let change = TombstoneTamper::Byte { file: ts.0 % files.len(), offset: ts.1 % len, xor: ts.2 };
        p.check(&change, |d| change.apply(&p, d));
        let delete = TombstoneTamper::Delete { file: ts.0 % files.len() };
        p.check(&delete, |d| delete.apply(&p, d));
    }
}

/// Tampering with tombstones (the local files; a deletion takes the anchored copy too).
#[derive(Debug, Clone, Copy)]
enum TombstoneTamper {
    /// XOR one byte of the `file`-th tombstone.
    Byte { file: usize, offset: usize, xor: u8 },
    /// Delete the `file`-th tombstone and its anchored copy.
    Delete { file: usize },
}

impl TombstoneTamper {
    fn apply(&self, p: &Pristine, data_dir: &Path) {
        let name = |i: usize| p.tombstones()[i].file_name().unwrap().to_owned();
        match *self {
            TombstoneTamper::Byte { file, offset, xor } => {
                let path = data_dir.join(TOMBSTONE_DIR).join(name(file));
                let mut b = fs::read(&path).unwrap();
                b[offset] ^= xor;
                fs::write(&path, b).unwrap();
            }
            TombstoneTamper::Delete { file } => {
                fs::remove_file(data_dir.join(TOMBSTONE_DIR).join(name(file))).unwrap();
                // The auditor's anchor is shared by the copies: restore it afterwards.
                let anchored = p.anchor.path().join(TOMBSTONE_DIR).join(name(file));
                let saved = fs::read(&anchored).unwrap();
                fs::remove_file(&anchored).unwrap();
                ANCHOR_RESTORE.with(|r| r.borrow_mut().push((anchored, saved)));
            }
        }
    }
}

thread_local! {
    /// Anchored files a tamper removed, put back once the copy was verified.
    static ANCHOR_RESTORE: std::cell::RefCell<Vec<(PathBuf, Vec<u8>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Pristine {
    /// A byte change at an offset `>= from` (if there is one) chosen by `pos`, to `to` (or
    /// `\n`).
    fn check_random_byte(&self, (pos, to, newline): (u64, u8, bool), from: u64) {
        let total = total_len(self.path());
        let from = if from < total { from } else { 0 };
        let offset = from + pos % (total - from);
        let old = self.bytes()[offset as usize];
        let to = match (newline, to == old) {
            (true, _) if old != b'\n' => b'\n',
            (_, true) => to ^ 0x01,
            _ => to,
        };
        let c = ByteChange::new(self, offset, to);
        self.check(&c, |d| c.apply(d));
    }

    fn check_random_record_tamper(&self, (kind, a, b, salt): (u8, usize, usize, u32)) {
        let segs = segments(self.path()).len();
        let t = record_tamper(kind, a, b, self.records() as usize, segs, salt);
        if !t.truncates_unsigned_tail(self) {
            self.check(&t, |d| t.apply(d));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small ledgers, swept
// ---------------------------------------------------------------------------------------------

fn small_spec(batches: &[usize]) -> Vec<Vec<EvSpec>> {
    batches
        .iter()
        .enumerate()
        .map(|(b, &k)| {
            (0..k)
                .map(|i| EvSpec {
                    agent: format!("agent-{b}"),
                    request: (b * 10 + i) as u32,
                    method: if i % 2 == 0 {
                        "tools/call"
                    } else {
                        "a \"q\" \\ é"
                    }
                    .into(),
                })
                .collect()
        })
        .collect()
}

/// 10 records in 5 batches, 3 segments, an epoch every 3 records (with transition tags), a
/// checkpoint at every seal and one at the end covering everything.
fn small_signed() -> Pristine {
    let p = Pristine::build(&Spec {
        batches: small_spec(&[2, 1, 3, 2, 2]),
        tail: Vec::new(),
        segment_max_bytes: 1000,
        every_records: 0,
        epoch_records: 3,
    });
    assert_eq!((p.records(), p.covered), (10, 10));
    assert!(segments(p.path()).len() >= 3, "several segments");
    p
}

/// 9 records: 6 signed in 2 segments, then an unsigned tail of 3 in the third (seqs 7-9, one
/// digit each: a single-byte change can set any seq to 0).
fn small_unsigned_tail() -> Pristine {
    let p = Pristine::build(&Spec {
        batches: small_spec(&[2, 1, 3]),
        tail: small_spec(&[1, 2]),
        segment_max_bytes: 1000,
        every_records: 0,
        epoch_records: 2,
    });
    assert_eq!((p.records(), p.covered), (9, 6));
    assert!(segments(p.path()).len() >= 3, "several segments");
    p
}

/// The values a byte is changed to: `\n`, one bit off, a neighbour in its class (next digit,
/// next hex letter, next letter), `0` for a digit, upper case for a hex letter.
fn replacements(old: u8) -> Vec<u8> {
    let near = match old {
        b'0'..=b'8' | b'a'..=b'e' | b'A'..=b'Y' => old + 1,
        b'9' => b'0',
        b'f' => b'a',
        _ => old.wrapping_add(0x80),
    };
    let mut out = vec![b'\n', old ^ 0x01, near];
    if old.is_ascii_digit() {
        out.push(b'0');
    }
    if (b'a'..=b'f').contains(&old) {
        out.push(old.to_ascii_uppercase());
    }
    let mut seen = Vec::new();
    out.retain(|&b| {
        b != old && !seen.contains(&b) && {
            seen.push(b);
            true
        }
    });
    out
}

/// Each record's structurally distinct positions, with the changes that matter there:
/// `(offset, to)`.
fn structural_changes(p: &Pristine) -> Vec<(u64, u8)> {
    fn after(line: &[u8], key: &[u8]) -> Option<usize> {
        line.windows(key.len())
            .position(|w| w == key)
            .map(|i| i + key.len())
    }
    let mut out = Vec::new();
    let mut base = 0u64;
    for line in &p.lines {
        let at = |i: usize| base + i as u64;
        let len = line.len();
        out.push((at(len), b' ')); // the newline: two lines become one
        out.push((at(len - 1), b'\n')); // the closing brace: a torn line
        let seq = after(line, b"\"seq\":").unwrap();
        out.push((at(seq), b'0'));
        out.push((at(seq), line[seq] % 9 + b'1'));
        let prev = after(line, b"\"prev_hash\":\"").unwrap();
        // A hex letter in upper case still decodes to the same hash (the full parser's path).
        match line[prev..prev + 64]
            .iter()
            .position(|b| (b'a'..=b'f').contains(b))
        {
            Some(k) => out.push((at(prev + k), line[prev + k].to_ascii_uppercase())),
            None => out.push((at(prev), b'1')),
        }
        let mac = after(line, b"\"mac\":\"").unwrap();
        out.push((at(mac), line[mac] % 9 + b'1')); // the epoch
        let tag = mac + line[mac..].iter().position(|&b| b == b':').unwrap() + 1;
        out.push((at(tag), line[tag] ^ 0x01));
        if line[tag + 64] == b':' {
            out.push((at(tag + 65), line[tag + 65] ^ 0x01)); // the transition tag
        }
        let agent = after(line, b"\"agent_id\":\"").unwrap();
        out.push((at(agent), line[agent] ^ 0x01));
        base += len as u64 + 1;
    }
    let all = p.bytes();
    out.retain(|&(o, to)| all[o as usize] != to);
    out
}

/// Check every change; report all that were not detected at once.
fn sweep_bytes(p: &Pristine, changes: &[(u64, u8)]) {
    let started = Instant::now();
    let missed: Vec<String> = changes
        .iter()
        .filter_map(|&(offset, to)| {
            let c = ByteChange::new(p, offset, to);
            p.try_check(&c, |d| c.apply(d)).err()
        })
        .collect();
    eprintln!(
        "{} byte changes over {} bytes in {:?}",
        changes.len(),
        total_len(p.path()),
        started.elapsed()
    );
    assert!(
        missed.is_empty(),
        "{} of {} byte changes not detected:\n{}",
        missed.len(),
        changes.len(),
        missed.join("\n")
    );
}

fn every_change(p: &Pristine) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    for (offset, b) in p.bytes().into_iter().enumerate() {
        out.extend(replacements(b).into_iter().map(|to| (offset as u64, to)));
    }
    out
}

/// Global offsets of line starts (0 and after every `\n`, the end excluded).
fn line_starts(p: &Pristine) -> Vec<u64> {
    let mut out = vec![0];
    for l in &p.lines {
        out.push(out.last().unwrap() + l.len() as u64 + 1);
    }
    out.pop();
    out
}

fn segment_starts(data_dir: &Path) -> Vec<u64> {
    let mut at = 0;
    segments(data_dir)
        .iter()
        .map(|s| {
            let start = at;
            at += fs::metadata(s).unwrap().len();
            start
        })
        .collect()
}

fn sweep_truncations(p: &Pristine, keeps: &[u64], local_checkpoints: &[bool]) {
    let started = Instant::now();
    let seg_starts = segment_starts(p.path());
    let mut ts = Vec::new();
    for &keep in keeps {
        for &remove_local_checkpoints in local_checkpoints {
            for remove_emptied in [false, true] {
                // Deleting an emptied segment differs only where a segment starts.
                if remove_emptied && !seg_starts.contains(&keep) {
                    continue;
                }
                ts.push(Truncation {
                    keep,
                    remove_emptied,
                    remove_local_checkpoints,
                });
            }
        }
    }
    let missed: Vec<String> = ts
        .iter()
        .filter_map(|&t| check_truncation(p, t).err())
        .collect();
    eprintln!("{} truncations in {:?}", ts.len(), started.elapsed());
    assert!(
        missed.is_empty(),
        "{} of {} truncations not detected:\n{}",
        missed.len(),
        ts.len(),
        missed.join("\n")
    );
}

fn sweep_records(p: &Pristine, tampers: &[RecordTamper]) {
    let started = Instant::now();
    let tampers: Vec<&RecordTamper> = tampers
        .iter()
        .filter(|t| !t.truncates_unsigned_tail(p))
        .collect();
    let missed: Vec<String> = tampers
        .iter()
        .filter_map(|t| p.try_check(t, |d| t.apply(d)).err())
        .collect();
    eprintln!(
        "{} record tampers in {:?}",
        tampers.len(),
        started.elapsed()
    );
    assert!(
        missed.is_empty(),
        "{} of {} record tampers not detected:\n{}",
        missed.len(),
        tampers.len(),
        missed.join("\n")
    );
}

/// Every record position once per kind of tamper: each record deleted, duplicated just after
/// itself, swapped with the next, copied with a field changed (fitting its new place) just
/// after itself; the first record duplicated and copied to the end; wholly new events at the
/// start, the middle and the end with each kind of fake MAC; each segment deleted.
fn record_tampers_budget(n: usize, segs: usize) -> Vec<RecordTamper> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(RecordTamper::Delete(i));
        out.push(RecordTamper::Duplicate(i, i + 1));
        out.push(RecordTamper::Swap(i, (i + 1) % n));
        out.push(RecordTamper::ForgedCopy {
            src: i,
            field: FIELDS[i % FIELDS.len()],
            at: i + 1,
            fit: true,
        });
    }
    out.push(RecordTamper::Duplicate(0, n));
    out.push(RecordTamper::ForgedCopy {
        src: 0,
        field: Field::Agent,
        at: n,
        fit: false,
    });
    for at in [0, n / 2, n] {
        for mac in FAKE_MACS {
            out.push(RecordTamper::ForgedNew {
                at,
                mac,
                zero_seq: false,
                salt: at as u32,
            });
        }
    }
    for at in [0, n] {
        out.push(RecordTamper::ForgedNew {
            at,
            mac: FakeMac::None,
            zero_seq: true,
            salt: 0,
        });
    }
    out.extend((0..segs).map(RecordTamper::DeleteSegment));
    out
}

/// Every combination: each deletion, each duplication to each position, each swap, each
/// forged copy of each record with each field to each position (fitting or not), wholly new
/// events at each position with each fake MAC, each segment deleted.
fn record_tampers_all(n: usize, segs: usize) -> Vec<RecordTamper> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(RecordTamper::Delete(i));
        for at in 0..=n {
            out.push(RecordTamper::Duplicate(i, at));
            for field in FIELDS {
                for fit in [false, true] {
                    out.push(RecordTamper::ForgedCopy {
                        src: i,
                        field,
                        at,
                        fit,
                    });
                }
            }
        }
        for j in i + 1..n {
            out.push(RecordTamper::Swap(i, j));
        }
    }
    for at in 0..=n {
        for mac in FAKE_MACS {
            for zero_seq in [false, true] {
                out.push(RecordTamper::ForgedNew {
                    at,
                    mac,
                    zero_seq,
                    salt: at as u32,
                });
            }
        }
    }
    out.extend((0..segs).map(RecordTamper::DeleteSegment));
    out
}

#[test]
fn structural_byte_changes_are_detected_in_the_unsigned_tail() {
    let p = small_unsigned_tail();
    let from = p.signed_bytes();
    let changes: Vec<_> = structural_changes(&p)
        .into_iter()
        .filter(|c| c.0 >= from)
        .collect();
    sweep_bytes(&p, &changes);
}

#[test]
fn truncation_at_every_line_boundary_is_detected() {
    let p = small_signed();
    // Every line boundary (detectable by the checkpoints only), with and without the local
    // checkpoints; cuts one byte into a segment and one byte short of the end (torn lines).
    let starts = line_starts(&p);
    sweep_truncations(&p, &starts, &[false, true]);
    let total = total_len(p.path());
    let mut torn: Vec<u64> = segment_starts(p.path())
        .iter()
        .map(|s| s + 1)
        .filter(|&k| k < total)
        .collect();
    torn.push(total - 1);
    sweep_truncations(&p, &torn, &[true]);
}

#[test]
fn record_tampers_at_every_position_are_detected() {
    let p = small_unsigned_tail();
    let segs = segments(p.path()).len();
    sweep_records(&p, &record_tampers_budget(p.records() as usize, segs));
}

// ---- minimal cases of a gap these properties found (fixed) ----
//
// `verify` (verify.rs, `Walk::line`) returned early for any line whose seq was below
// `from_seq` (1 by default) — meant for the lines before the start when verifying from the
// middle — so a line claiming seq 0 got no MAC check, no seq/order check and no check of its
// own `prev_hash`. Only the next line's `prev_hash` and the checkpoints covered its bytes: at
// the end of the ledger, beyond the newest checkpoint's size, nothing did.

/// A wholly forged event, `"seq":0` and no MAC, appended to a fully signed ledger.
#[test]
fn forged_event_with_seq_zero_appended_is_detected() {
    let p = small_signed();
    let t = RecordTamper::ForgedNew {
        at: p.records() as usize,
        mac: FakeMac::None,
        zero_seq: true,
        salt: 0,
    };
    p.check(&t, |d| t.apply(d));
}

/// The newest record, not yet covered by a checkpoint, rewritten at will (here its agent)
/// once its seq is set to 0 — a single-byte change when the seq has one digit.
#[test]
fn newest_record_rewritten_with_seq_zero_is_detected() {
    let p = Pristine::build(&Spec {
        batches: small_spec(&[2]),
        tail: small_spec(&[1]),
        segment_max_bytes: 1 << 20,
        every_records: 0,
        epoch_records: 3,
    });
    assert_eq!((p.records(), p.covered), (3, 2));
    let last = String::from_utf8(p.lines[2].clone()).unwrap();
    let forged = last
        .replace("\"seq\":3,", "\"seq\":0,")
        .replace("\"agent_id\":\"agent-0\"", "\"agent_id\":\"someone-else\"");
    assert_ne!(forged, last);
    p.check(
        &("newest record: seq 3 -> 0, agent rewritten", &forged),
        |d| {
            let seg = segments(d).pop().unwrap();
            let text = fs::read_to_string(&seg).unwrap().replace(&last, &forged);
            with_writable(&seg, |s| fs::write(s, text).unwrap());
        },
    );
}

/// `small_signed` with its oldest segment removed under a signed tombstone.
fn small_purged() -> Pristine {
    let p = Pristine::build_purged(
        &Spec {
            batches: small_spec(&[2, 1, 3, 2, 2]),
            tail: Vec::new(),
            segment_max_bytes: 1000,
            every_records: 0,
            epoch_records: 3,
        },
        1,
    );
    assert!(p.base > 0 && p.records() > 0);
    assert_eq!(p.tombstones().len(), 1);
    p
}

#[test]
fn after_a_purge_structural_changes_record_tampers_and_truncations_are_detected() {
    let p = small_purged();
    sweep_bytes(&p, &structural_changes(&p));
    let segs = segments(p.path()).len();
    sweep_records(&p, &record_tampers_budget(p.records() as usize, segs));
    sweep_truncations(&p, &line_starts(&p), &[false, true]);
}

/// Every byte of the tombstone changed (one bit in the default run: the signature covers
/// every byte of the body and the signature line is checked strictly).
fn sweep_tombstone(p: &Pristine, xors: &[u8]) {
    let started = Instant::now();
    let len = fs::metadata(&p.tombstones()[0]).unwrap().len() as usize;
    let mut missed = Vec::new();
    let mut n = 0;
    for offset in 0..len {
        for &xor in xors {
            let t = TombstoneTamper::Byte {
                file: 0,
                offset,
                xor,
            };
            n += 1;
            if let Err(e) = p.try_check(&t, |d| t.apply(p, d)) {
                missed.push(e);
            }
        }
    }
    eprintln!("{n} tombstone byte changes in {:?}", started.elapsed());
    assert!(
        missed.is_empty(),
        "{} of {n} not detected:\n{}",
        missed.len(),
        missed.join("\n")
    );
}

#[test]
fn every_byte_of_a_tombstone_is_protected_and_its_deletion_is_detected() {
    let p = small_purged();
    sweep_tombstone(&p, &[0x01]);
    let t = TombstoneTamper::Delete { file: 0 };
    let r = p.check(&t, |d| t.apply(&p, d));
    assert!(
        r.problems.iter().any(|x| x.class() == "deleted_record"),
        "{:?}",
        r.problems
    );
    // The local tombstone alone deleted: the anchored copy still proves the removal lawful.
    let r = {
        let work = tempdir();
        copy_tree(p.path(), work.path());
        fs::remove_dir_all(work.path().join(TOMBSTONE_DIR)).unwrap();
        p.verify(work.path())
    };
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.problems);
}

// ---- the full sweeps: minutes in debug ----

#[test]
#[ignore = "exhaustive: every byte of a tombstone x 4 values, every byte change of the segment that continues from it, every record tamper"]
fn every_tombstone_and_purged_ledger_change_is_detected_exhaustive() {
    let p = small_purged();
    sweep_tombstone(&p, &[0x01, 0x20, 0x80, 0xff]);
    // The segment right after the tombstone is where the chain, tree and epochs continue
    // from its state; the later ones are what the other exhaustive sweeps cover already.
    let first_len = fs::metadata(&segments(p.path())[0]).unwrap().len();
    let changes: Vec<_> = every_change(&p)
        .into_iter()
        .filter(|c| c.0 < first_len)
        .collect();
    sweep_bytes(&p, &changes);
    let segs = segments(p.path()).len();
    sweep_records(&p, &record_tampers_all(p.records() as usize, segs));
}

#[test]
#[ignore = "exhaustive: every byte offset x 3-5 values; minutes in debug (--release advised)"]
fn every_byte_change_is_detected_exhaustive() {
    for p in [small_signed(), small_unsigned_tail()] {
        sweep_bytes(&p, &every_change(&p));
    }
}

#[test]
#[ignore = "exhaustive: every byte offset x 2-4 variants; minutes in debug (--release advised)"]
fn every_truncation_is_detected_exhaustive() {
    let p = small_signed();
    let keeps: Vec<u64> = (0..total_len(p.path())).collect();
    sweep_truncations(&p, &keeps, &[false, true]);
}

#[test]
#[ignore = "exhaustive: ~1000 record tampers per ledger; minutes in debug (--release advised)"]
fn every_record_tamper_is_detected_exhaustive() {
    for p in [small_signed(), small_unsigned_tail()] {
        let segs = segments(p.path()).len();
        sweep_records(&p, &record_tampers_all(p.records() as usize, segs));
    }
}

#[test]
#[ignore = "exhaustive: every structural byte change of both small ledgers"]
fn structural_byte_changes_are_detected_exhaustive() {
    for p in [small_signed(), small_unsigned_tail()] {
        sweep_bytes(&p, &structural_changes(&p));
    }
}
