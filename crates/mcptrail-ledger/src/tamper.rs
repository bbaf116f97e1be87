//! Deliberate damage to a *copy* of a ledger, one tamper class at a time: what
//! `mcptrail drill` performs to show that `verify` catches each class, and what the tests use.
//!
//! Each class is done the way an attacker on the machine would do it, with everything the
//! machine holds: the stored bytes, the current MAC key state and the checkpoint signing key.
//! What the attacker does not have is what the design keeps away: earlier MAC keys (erased),
//! the verification seed (off the machine) and the anchored checkpoints (elsewhere).
//!
//! Never point these functions at a live ledger: they rewrite it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mcptrail_integrity::fsmac::EpochKey;
use mcptrail_integrity::merkle::Frontier;
use mcptrail_integrity::{Checkpoint, NoteSigner};

use crate::checkpoint::{checkpoint_file_name, list_checkpoints, CHECKPOINT_DIR, KEY_DIR};
use crate::mac::MAC_STATE_FILE;
use crate::prepared::hex32;
use crate::record::{hash_record, read_fields, record_hash};
use crate::segment::list_segments;
use crate::{LedgerError, LEDGER_DIR};

/// One way of tampering, aimed at a record by seq where it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Change one character of a record's content; nothing else.
    ModifyRecord { seq: u64 },
    /// Change a record and recompute the hash chain of every later record (the old MACs stay).
    ModifyAndRechain { seq: u64 },
    /// Change a record long past, re-MAC it and everything after with the current key (which
    /// an attacker on the machine has) and recompute the chain and the local checkpoints.
    RemacWithCurrentKey { seq: u64 },
    /// Remove one record.
    DeleteRecord { seq: u64 },
    /// Insert a copy of a record with one field changed right after it.
    InsertForged { after_seq: u64 },
    /// Swap a record with the next one.
    SwapRecords { seq: u64 },
    /// Remove the newest records and the local checkpoints covering them.
    TruncateTail { records: u64 },
    /// Delete a whole sealed segment (not the first or the last).
    DeleteSegment,
    /// Roll back to before `from_seq`, write other records in their place with the current
    /// keys (chain, MACs) and sign a new local checkpoint over them with the signing key.
    Fork { from_seq: u64 },
    /// Alter the newest local checkpoint's root (its signature no longer matches).
    BadSignature,
    /// Make a sealed segment writable again.
    UnsealSegment,
    /// Delete the oldest segment as if retention had purged it, but without a tombstone.
    DeleteOldestSegment,
    /// Sign (with the ledger's key, which the attacker has) a tombstone for a segment that is
    /// not the oldest, and delete that segment: a hole made to look lawful.
    TombstoneForMiddleSegment,
    /// Change one character of a tombstone (its state, archived ↔ purged).
    ModifyTombstone,
}

impl Tamper {
    /// The class name `drill` prints; matches what `verify` should report (see
    /// [`crate::Problem::class`]).
    pub fn name(&self) -> &'static str {
        match self {
            Tamper::ModifyRecord { .. } => "modified record",
            Tamper::ModifyAndRechain { .. } => "modified record, chain recomputed",
            Tamper::RemacWithCurrentKey { .. } => "history re-MACed with the current key",
            Tamper::DeleteRecord { .. } => "deleted record",
            Tamper::InsertForged { .. } => "inserted record",
            Tamper::SwapRecords { .. } => "reordered records",
            Tamper::TruncateTail { .. } => "truncated tail",
            Tamper::DeleteSegment => "missing segment",
            Tamper::Fork { .. } => "fork / rollback",
            Tamper::BadSignature => "bad checkpoint signature",
            Tamper::UnsealSegment => "sealed segment made writable",
            Tamper::DeleteOldestSegment => "oldest segment deleted, no tombstone",
            Tamper::TombstoneForMiddleSegment => "tombstone forged for a middle segment",
            Tamper::ModifyTombstone => "modified tombstone",
        }
    }
}

/// Where the damage was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TamperSite {
    /// The first record affected.
    pub seq: Option<u64>,
    /// The file affected.
    pub file: String,
}

struct Seg {
    path: PathBuf,
    mode: u32,
    lines: Vec<Vec<u8>>,
}

fn load(data_dir: &Path) -> Result<Vec<Seg>, LedgerError> {
    let mut out = Vec::new();
    for s in list_segments(&data_dir.join(LEDGER_DIR))? {
        let bytes = std::fs::read(&s.path).map_err(LedgerError::io(&s.path))?;
        let mode = std::fs::metadata(&s.path)
            .map_err(LedgerError::io(&s.path))?
            .permissions()
            .mode();
        let lines = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        out.push(Seg {
            path: s.path,
            mode,
            lines,
        });
    }
    Ok(out)
}

fn store(seg: &Seg) -> Result<(), LedgerError> {
    let io = || LedgerError::io(&seg.path);
    std::fs::set_permissions(&seg.path, std::fs::Permissions::from_mode(0o600)).map_err(io())?;
    let mut bytes = Vec::new();
    for l in &seg.lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    std::fs::write(&seg.path, bytes).map_err(io())?;
    std::fs::set_permissions(&seg.path, std::fs::Permissions::from_mode(seg.mode)).map_err(io())
}

fn name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string()
}

/// (segment index, line index) of `seq`.
fn find(segs: &[Seg], seq: u64) -> Option<(usize, usize)> {
    for (si, s) in segs.iter().enumerate() {
        for (li, l) in s.lines.iter().enumerate() {
            if read_fields(l).map(|f| f.seq) == Some(seq) {
                return Some((si, li));
            }
        }
    }
    None
}

/// Change one character of the event id (keeps the line valid JSON).
fn alter(line: &mut [u8]) {
    let at = memchr::memmem::find(line, b"\"event_id\":\"").map_or(2, |i| i + 12);
    line[at] = if line[at] == b'0' { b'1' } else { b'0' };
}

fn set_prev_hash(line: &mut [u8], prev: &[u8; 32]) {
    if let Some(f) = read_fields(line) {
        let start = f.prefix_len - 65;
        line[start..start + 64].copy_from_slice(&hex32(prev));
    }
}

/// Replace the line's MAC with one under `key` (no transition tag).
fn remac(line: &mut Vec<u8>, key: &EpochKey) {
    let Some(f) = read_fields(line) else { return };
    let tag = key.mac32(&hash_record(line, f.prefix_len));
    line.truncate(f.prefix_len);
    line.extend_from_slice(format!(",\"mac\":\"{}:", key.epoch()).as_bytes());
    line.extend_from_slice(&hex32(&tag));
    line.extend_from_slice(b"\"}");
}

/// From global position `from` on, recompute every `prev_hash` (and re-MAC with `key`).
fn rechain(segs: &mut [Seg], from: (usize, usize), key: Option<&EpochKey>) {
    let mut prev: Option<[u8; 32]> = None;
    for (si, s) in segs.iter_mut().enumerate() {
        for (li, l) in s.lines.iter_mut().enumerate() {
            if (si, li) >= from {
                if let Some(p) = prev {
                    set_prev_hash(l, &p);
                }
                if let Some(k) = key {
                    remac(l, k);
                }
            }
            prev = Some(record_hash(l));
        }
    }
}

fn current_key(data_dir: &Path) -> Result<EpochKey, LedgerError> {
    let path = data_dir.join(KEY_DIR).join(MAC_STATE_FILE);
    EpochKey::load(&path)
        .map(|(k, _)| k)
        .map_err(|e| LedgerError::Key {
            path,
            reason: e.to_string(),
        })
}

/// Drop local checkpoints beyond `size` records and sign a fresh one over the records as
/// they now are (the attacker has the signing key).
fn resign(data_dir: &Path, segs: &[Seg], keep_upto: u64) -> Result<(), LedgerError> {
    let dir = data_dir.join(CHECKPOINT_DIR);
    for (size, path) in list_checkpoints(&dir)? {
        if size > keep_upto {
            std::fs::remove_file(&path).map_err(LedgerError::io(&path))?;
        }
    }
    let skey_path = data_dir.join(KEY_DIR).join("checkpoint.skey");
    let Ok(text) = std::fs::read_to_string(&skey_path) else {
        return Ok(()); // no signing key: nothing to re-sign
    };
    let signer = NoteSigner::from_skey(text.trim()).map_err(|e| LedgerError::Key {
        path: skey_path.clone(),
        reason: e.to_string(),
    })?;
    // After retention removed a prefix, the tree continues from the newest tombstone.
    let base = crate::tombstone::removed_through(data_dir)?;
    let through = base.as_ref().map_or(0, |b| b.last_seq);
    let mut frontier = base.map_or_else(Frontier::new, |b| b.tree());
    for l in segs.iter().flat_map(|s| &s.lines) {
        if read_fields(l).is_some_and(|f| f.seq <= through) {
            continue;
        }
        frontier.push(record_hash(l));
    }
    let cp = Checkpoint {
        origin: signer.verifier().name().to_string(),
        size: frontier.size(),
        root: frontier.root(),
        extensions: Vec::new(),
    };
    let note = signer.sign(&cp.to_text()).map_err(|e| LedgerError::Key {
        path: skey_path,
        reason: e.to_string(),
    })?;
    let path = dir.join(checkpoint_file_name(cp.size));
    std::fs::write(&path, note).map_err(LedgerError::io(&path))?;
    let _ = std::fs::remove_file(data_dir.join(LEDGER_DIR).join("TREE"));
    Ok(())
}

fn missing(what: &str) -> LedgerError {
    LedgerError::Corrupt {
        segment: PathBuf::from(LEDGER_DIR),
        offset: 0,
        reason: format!("this ledger is too small for the drill: {what}"),
    }
}

/// Apply `t` to the ledger in `data_dir` (a copy!). Returns where.
pub fn apply(data_dir: &Path, t: Tamper) -> Result<TamperSite, LedgerError> {
    let mut segs = load(data_dir)?;
    let total: u64 = segs.iter().map(|s| s.lines.len() as u64).sum();
    let at = |segs: &[Seg], seq: u64| find(segs, seq).ok_or_else(|| missing("no such seq"));
    let site = |segs: &[Seg], (si, _): (usize, usize), seq: u64| TamperSite {
        seq: Some(seq),
        file: name(&segs[si].path),
    };
    match t {
        Tamper::ModifyRecord { seq } => {
            let p = at(&segs, seq)?;
            alter(&mut segs[p.0].lines[p.1]);
            store(&segs[p.0])?;
            Ok(site(&segs, p, seq))
        }
        Tamper::ModifyAndRechain { seq } => {
            let p = at(&segs, seq)?;
            alter(&mut segs[p.0].lines[p.1]);
            rechain(&mut segs, p, None);
            for s in &segs[p.0..] {
                store(s)?;
            }
            Ok(site(&segs, p, seq))
        }
        Tamper::RemacWithCurrentKey { seq } => {
            let key = current_key(data_dir)?;
            let p = at(&segs, seq)?;
            alter(&mut segs[p.0].lines[p.1]);
            rechain(&mut segs, p, Some(&key));
            for s in &segs[p.0..] {
                store(s)?;
            }
            resign(data_dir, &segs, seq - 1)?;
            Ok(site(&segs, p, seq))
        }
        Tamper::DeleteRecord { seq } => {
            let p = at(&segs, seq)?;
            segs[p.0].lines.remove(p.1);
            store(&segs[p.0])?;
            Ok(site(&segs, p, seq))
        }
        Tamper::InsertForged { after_seq } => {
            let p = at(&segs, after_seq)?;
            let mut forged = segs[p.0].lines[p.1].clone();
            alter(&mut forged);
            segs[p.0].lines.insert(p.1 + 1, forged);
            store(&segs[p.0])?;
            Ok(site(&segs, p, after_seq + 1))
        }
        Tamper::SwapRecords { seq } => {
            let p = at(&segs, seq)?;
            let q = at(&segs, seq + 1)?;
            if p.0 != q.0 {
                return Err(missing("the two records are in different segments"));
            }
            segs[p.0].lines.swap(p.1, q.1);
            store(&segs[p.0])?;
            Ok(site(&segs, p, seq))
        }
        Tamper::TruncateTail { records } => {
            if records == 0 || records >= total {
                return Err(missing("not enough records"));
            }
            // Seqs continue after what retention removed.
            let through = crate::tombstone::removed_through(data_dir)?.map_or(0, |t| t.last_seq);
            let keep = through + total - records;
            let p = at(&segs, keep + 1)?;
            segs[p.0].lines.truncate(p.1);
            store(&segs[p.0])?;
            // Later segments go too.
            for s in segs.drain(p.0 + 1..) {
                let _ = std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o600));
                std::fs::remove_file(&s.path).map_err(LedgerError::io(&s.path))?;
            }
            let dir = data_dir.join(CHECKPOINT_DIR);
            for (size, path) in list_checkpoints(&dir)? {
                if size > keep {
                    std::fs::remove_file(&path).map_err(LedgerError::io(&path))?;
                }
            }
            let _ = std::fs::remove_file(data_dir.join(LEDGER_DIR).join("TREE"));
            Ok(site(&segs, p, keep + 1))
        }
        Tamper::DeleteSegment => {
            if segs.len() < 3 {
                return Err(missing("it needs at least 3 segments"));
            }
            let s = &segs[1];
            let seq = s.lines.first().and_then(|l| read_fields(l)).map(|f| f.seq);
            std::fs::remove_file(&s.path).map_err(LedgerError::io(&s.path))?;
            Ok(TamperSite {
                seq,
                file: name(&s.path),
            })
        }
        Tamper::Fork { from_seq } => {
            let key = current_key(data_dir)?;
            let p = at(&segs, from_seq)?;
            // Rewrite every record from `from_seq` on as if history had gone differently.
            for (si, s) in segs.iter_mut().enumerate() {
                for (li, l) in s.lines.iter_mut().enumerate() {
                    if (si, li) >= p {
                        alter(l);
                    }
                }
            }
            rechain(&mut segs, p, Some(&key));
            for s in &segs[p.0..] {
                store(s)?;
            }
            resign(data_dir, &segs, from_seq - 1)?;
            Ok(site(&segs, p, from_seq))
        }
        Tamper::BadSignature => {
            let dir = data_dir.join(CHECKPOINT_DIR);
            let (_, path) = list_checkpoints(&dir)?
                .pop()
                .ok_or_else(|| missing("no checkpoint"))?;
            let text = std::fs::read_to_string(&path).map_err(LedgerError::io(&path))?;
            // The root is the third line: change one base64 character.
            let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
            if let Some(root) = lines.get_mut(2) {
                let c = if root.starts_with('A') { "B" } else { "A" };
                root.replace_range(0..1, c);
            }
            std::fs::write(&path, lines.join("\n")).map_err(LedgerError::io(&path))?;
            Ok(TamperSite {
                seq: None,
                file: format!("{CHECKPOINT_DIR}/{}", name(&path)),
            })
        }
        Tamper::DeleteOldestSegment => {
            if segs.len() < 2 {
                return Err(missing("it needs at least 2 segments"));
            }
            let s = &segs[0];
            let seq = s.lines.first().and_then(|l| read_fields(l)).map(|f| f.seq);
            let _ = std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o600));
            std::fs::remove_file(&s.path).map_err(LedgerError::io(&s.path))?;
            Ok(TamperSite {
                seq,
                file: name(&s.path),
            })
        }
        Tamper::TombstoneForMiddleSegment => {
            if segs.len() < 3 {
                return Err(missing("it needs at least 3 segments"));
            }
            let skey_path = data_dir.join(KEY_DIR).join("checkpoint.skey");
            let text = std::fs::read_to_string(&skey_path)
                .map_err(|_| missing("no checkpoint signing key"))?;
            let signer = NoteSigner::from_skey(text.trim()).map_err(|e| LedgerError::Key {
                path: skey_path.clone(),
                reason: e.to_string(),
            })?;
            // The state after the segment before it, computed as the removal would.
            let base = crate::tombstone::removed_through(data_dir)?;
            let through = base.as_ref().map_or(0, |b| b.last_seq);
            let mut frontier = base.map_or_else(Frontier::new, |b| b.tree());
            let s = &segs[1];
            for l in segs[..2].iter().flat_map(|s| &s.lines) {
                if read_fields(l).is_some_and(|f| f.seq > through) {
                    frontier.push(record_hash(l));
                }
            }
            let first = s.lines.first().and_then(|l| read_fields(l)).map(|f| f.seq);
            let last_line = s.lines.last().ok_or_else(|| missing("an empty segment"))?;
            let f = read_fields(last_line).ok_or_else(|| missing("an odd record"))?;
            let bytes = std::fs::read(&s.path).map_err(LedgerError::io(&s.path))?;
            use sha2::Digest as _;
            let t = crate::Tombstone {
                origin: signer.verifier().name().to_string(),
                segment: name(&s.path),
                first_seq: first.unwrap_or(1),
                last_seq: f.seq,
                bytes: bytes.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                last_hash: hex::encode(record_hash(last_line)),
                frontier: frontier.subtree_roots().map(hex::encode).collect(),
                mac_epoch: f.mac.map(|m| m.0),
                times: ("-".into(), "-".into()),
                labels: Vec::new(),
                state: crate::TombstoneState::Purged,
                archive: None,
                time: mcptrail_event::now_rfc3339_nanos(),
                meta: serde_json::json!({"forged": true}),
            };
            let note = t.sign(&signer).map_err(|reason| LedgerError::Key {
                path: skey_path,
                reason,
            })?;
            crate::tombstone::store(
                &data_dir.join(crate::TOMBSTONE_DIR),
                &crate::tombstone_file_name(t.first_seq, t.state),
                &note,
            )?;
            let _ = std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o600));
            std::fs::remove_file(&s.path).map_err(LedgerError::io(&s.path))?;
            Ok(TamperSite {
                seq: first,
                file: name(&s.path),
            })
        }
        Tamper::ModifyTombstone => {
            let dir = data_dir.join(crate::TOMBSTONE_DIR);
            let path = crate::list_tombstones(&dir)?
                .pop()
                .ok_or_else(|| missing("no tombstone (nothing was removed by retention)"))?;
            let text = std::fs::read_to_string(&path).map_err(LedgerError::io(&path))?;
            let changed = if text.contains("\nstate purged\n") {
                text.replacen("\nstate purged\n", "\nstate archived\n", 1)
            } else {
                text.replacen("\nstate archived\n", "\nstate purged\n", 1)
            };
            std::fs::write(&path, changed).map_err(LedgerError::io(&path))?;
            Ok(TamperSite {
                seq: None,
                file: format!("{}/{}", crate::TOMBSTONE_DIR, name(&path)),
            })
        }
        Tamper::UnsealSegment => {
            let s = segs
                .iter()
                .find(|s| s.mode & 0o222 == 0)
                .ok_or_else(|| missing("no sealed segment"))?;
            std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o600))
                .map_err(LedgerError::io(&s.path))?;
            Ok(TamperSite {
                seq: None,
                file: name(&s.path),
            })
        }
    }
}
