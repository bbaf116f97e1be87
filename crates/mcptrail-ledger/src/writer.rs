//! The one write path: group-committed, lock-serialised appends that extend the hash chain.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use mcptrail_event::{sha256_hex, Event, EventKind};

use crate::checkpoint::{load_or_create_signer, write_checkpoint, CheckpointPolicy, TreeState};
use crate::flush::Flusher;
use crate::mac::{MacKeeper, MacPolicy};
use crate::prepared::{hex32, PreparedEvent};
use crate::record::{hash_record, read_fields, record_hash};
use crate::segment::{
    self, create_segment, ensure_private_dir, list_segments, open_segment_append, read_tail, seal,
};
use crate::LedgerReader;
use crate::{LedgerError, LEDGER_DIR};
use mcptrail_integrity::{EpochKey, NoteSigner};

/// Writer settings.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Seal the active segment and start a new one once it would exceed this many bytes.
    pub segment_max_bytes: u64,
    /// Seal the active segment once its first record is older than this.
    pub segment_max_age: Duration,
    /// `fdatasync` every batch (turn off only for benchmarks of the CPU path).
    pub fsync: bool,
    /// When to sign Merkle checkpoints, and where to anchor them.
    pub checkpoints: CheckpointPolicy,
    /// Forward-secure MACs on every record.
    pub macs: MacPolicy,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            segment_max_bytes: 64 * 1024 * 1024,
            segment_max_age: Duration::from_secs(24 * 3600),
            fsync: true,
            checkpoints: CheckpointPolicy::default(),
            macs: MacPolicy::default(),
        }
    }
}

/// What an append made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// `seq` of the first record of the batch.
    pub first_seq: u64,
    /// `seq` of the last record of the batch.
    pub last_seq: u64,
}

struct Active {
    path: PathBuf,
    file: File,
    len: u64,
    last_seq: u64,
    last_hash: [u8; 32],
    /// MAC epoch of the last record (`None`: it has no MAC, or there is none).
    last_epoch: Option<u64>,
    opened: SystemTime,
}

/// A handle for appending to the ledger under `<data_dir>/ledger`. Several processes may each
/// hold one: appends are serialised by an advisory lock and never interleave.
pub struct Ledger {
    data_dir: PathBuf,
    dir: PathBuf,
    cfg: LedgerConfig,
    lock: File,
    active: Option<Active>,
    buf: Vec<u8>,
    /// The Merkle tree's right edge at our view of the tail (`None`: to be loaded or rebuilt).
    tree: Option<TreeState>,
    /// The checkpoint signer, loaded (or created) at the first checkpoint.
    signer: Option<NoteSigner>,
    /// Record hashes of the batch being written.
    batch_hashes: Vec<[u8; 32]>,
    /// The MAC key, loaded (or created) at the first append.
    mac: Option<MacKeeper>,
    /// Flushes segments while the tree is extended (started by the first large batch).
    flusher: Option<Flusher>,
    /// A checkpoint failure not yet reported (appends do not fail for it).
    checkpoint_problem: Option<LedgerError>,
    /// When the TREE cache was last written.
    tree_saved: Instant,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // Best effort, under the lock: the cache must describe a prefix of the ledger.
        if let Some(t) = &self.tree {
            if self.lock.lock().is_ok() {
                if self
                    .active
                    .as_ref()
                    .is_some_and(|a| a.last_seq >= t.frontier.size())
                {
                    t.save(&self.dir);
                }
                let _ = self.lock.unlock();
            }
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Open (creating if needed) the ledger of `data_dir`.
    pub fn open(data_dir: &Path, cfg: LedgerConfig) -> Result<Self, LedgerError> {
        ensure_private_dir(data_dir)?;
        let dir = data_dir.join(LEDGER_DIR);
        ensure_private_dir(&dir)?;
        let mode = std::fs::metadata(&dir)
            .map_err(LedgerError::io(&dir))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(LedgerError::InsecurePermissions { path: dir, mode });
        }
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(LedgerError::io(&lock_path))?;
        Ok(Ledger {
            data_dir: data_dir.to_path_buf(),
            dir,
            cfg,
            lock,
            active: None,
            buf: Vec::with_capacity(1 << 20),
            tree: None,
            signer: None,
            batch_hashes: Vec::new(),
            flusher: None,
            mac: None,
            checkpoint_problem: None,
            tree_saved: Instant::now(),
        })
    }

    /// The ledger directory (`<data_dir>/ledger`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append `events` as one durable batch: assign `seq` and `prev_hash`, write them with one
    /// `write` and one `fdatasync`. On return every event carries its stored `seq`.
    ///
    /// On error nothing of the batch is counted as written; the caller keeps the events and may
    /// retry (a retry never duplicates: partial writes are detected as a torn tail and
    /// quarantined by the next append).
    pub fn append(&mut self, events: &mut [Event]) -> Result<AppendReceipt, LedgerError> {
        let prepared = events
            .iter_mut()
            .map(PreparedEvent::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let receipt = self.append_prepared(&prepared)?;
        let first = receipt.last_seq + 1 - events.len() as u64;
        for (i, ev) in events.iter_mut().enumerate() {
            ev.seq = first + i as u64;
        }
        Ok(receipt)
    }

    /// [`append`](Self::append) for events already serialised (on another thread, say): the
    /// writer only completes, hashes and writes them. `first_seq..=last_seq` of the receipt
    /// are theirs, in order (a recovery record, if one was due, comes just before).
    pub fn append_prepared(
        &mut self,
        events: &[PreparedEvent],
    ) -> Result<AppendReceipt, LedgerError> {
        if events.is_empty() {
            let last = self.active.as_ref().map_or(0, |a| a.last_seq);
            return Ok(AppendReceipt {
                first_seq: last + 1,
                last_seq: last,
            });
        }
        self.locked(|l| l.append_locked(events, false))
    }

    /// Make sure a signed checkpoint covers every record (a tap calls this when its session
    /// ends). Returns the number of records the newest checkpoint covers (`None`: empty log).
    pub fn checkpoint_now(&mut self) -> Result<Option<u64>, LedgerError> {
        self.locked(|l| l.append_locked(&[], true))?;
        Ok(self
            .tree
            .as_ref()
            .map(|t| t.last_checkpoint.0)
            .filter(|&s| s > 0))
    }

    fn locked<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.lock
            .lock()
            .map_err(LedgerError::io(self.dir.join("LOCK")))?;
        let result = f(self);
        // Dropping the lock cannot meaningfully fail; the fd close would release it anyway.
        let _ = self.lock.unlock();
        if result.is_err() {
            // Our view of the tail may be stale after a failed write: re-read it next time.
            self.active = None;
            self.tree = None;
            self.mac = None;
        }
        result
    }

    fn append_locked(
        &mut self,
        events: &[PreparedEvent],
        force_checkpoint: bool,
    ) -> Result<AppendReceipt, LedgerError> {
        let recovered = self.sync_tail()?.map(PreparedEvent::new).transpose()?;
        if events.is_empty() && recovered.is_none() && self.active.is_none() {
            // Nothing to write to an empty ledger (a checkpoint of nothing is not one).
            return Ok(AppendReceipt {
                first_seq: 1,
                last_seq: 0,
            });
        }
        let rotate = match &self.active {
            Some(a) => {
                a.len > 0
                    && (a.len >= self.cfg.segment_max_bytes
                        || a.opened.elapsed().unwrap_or_default() >= self.cfg.segment_max_age)
            }
            None => false,
        };
        let tree_on = self.cfg.checkpoints.enabled;
        if tree_on {
            self.sync_tree()?;
        }
        if rotate {
            // Sealing closes a segment: sign what it ends on first.
            if tree_on
                && self
                    .tree
                    .as_ref()
                    .is_some_and(|t| t.due(&self.cfg.checkpoints, true))
            {
                self.checkpoint_or_note();
            }
            let a = self.active.take().expect("checked above");
            seal(&a.path, &a.file)?;
            let (file, path) = create_segment(&self.dir, a.last_seq + 1)?;
            self.active = Some(Active {
                path,
                file,
                len: 0,
                opened: SystemTime::now(),
                ..a
            });
        }
        let (mut last_seq, mut last_hash, tail_epoch) = match &self.active {
            Some(a) => (a.last_seq, a.last_hash, a.last_epoch),
            None => (0, [0u8; 32], None),
        };
        let writes = recovered.is_some() || !events.is_empty();
        if self.cfg.macs.enabled && writes {
            MacKeeper::sync(
                &mut self.mac,
                &self.data_dir,
                &self.cfg.macs,
                tail_epoch,
                (last_seq, last_hash),
            )?;
        }
        let keeper = self
            .mac
            .as_ref()
            .filter(|_| self.cfg.macs.enabled && writes);
        let key = keeper.map(MacKeeper::key);
        // The first record of an epoch carries the tag that closed the previous one.
        let mut transition = keeper
            .filter(|k| tail_epoch.is_some_and(|e| e < k.key().epoch()))
            .and_then(MacKeeper::transition);
        if self.active.is_none() {
            let (file, path) = create_segment(&self.dir, 1)?;
            self.active = Some(Active {
                path,
                file,
                len: 0,
                last_seq: 0,
                last_hash,
                last_epoch: None,
                opened: SystemTime::now(),
            });
        }

        self.buf.clear();
        self.batch_hashes.clear();
        let mut first_seq = last_seq + 1;
        for ev in recovered.iter().chain(events) {
            let mac = key.map(|k| (k, transition.take()));
            encode(ev, mac, &mut last_seq, &mut last_hash, &mut self.buf);
            self.batch_hashes.push(last_hash);
        }
        if recovered.is_some() {
            first_seq += 1;
        }
        let a = self.active.as_mut().expect("set above");
        let mut folded = false;
        if !self.buf.is_empty() {
            a.file
                .write_all(&self.buf)
                .map_err(LedgerError::io(&a.path))?;
            if self.cfg.fsync {
                let overlap = tree_on && self.batch_hashes.len() >= OVERLAP_MIN_RECORDS;
                if overlap && self.flusher.is_none() {
                    self.flusher = Flusher::spawn().ok();
                }
                let synced = match self.flusher.as_ref().filter(|_| overlap) {
                    Some(flusher) => {
                        // The disk flush leaves this thread idle: fold the batch into the
                        // tree meanwhile (on a failed flush the tree is dropped, to be
                        // rebuilt from what is on disk).
                        let tree = self.tree.as_mut().expect("sync_tree set it");
                        let hashes = &self.batch_hashes;
                        let (synced, ()) = flusher.sync_data_while(&a.file, || {
                            for h in hashes {
                                tree.frontier.push(*h);
                            }
                        });
                        folded = true;
                        synced
                    }
                    None => a.file.sync_data(),
                };
                if let Err(e) = synced {
                    if folded {
                        self.tree = None;
                    }
                    return Err(LedgerError::io(&a.path)(e));
                }
            }
        }
        a.len += self.buf.len() as u64;
        a.last_seq = last_seq;
        a.last_hash = last_hash;
        if writes {
            a.last_epoch = key.map(EpochKey::epoch);
        }
        if self.buf.capacity() > 8 << 20 {
            self.buf = Vec::with_capacity(1 << 20);
        }
        if !tree_on {
            return Ok(AppendReceipt {
                first_seq,
                last_seq,
            });
        }
        // The batch is durable: extend the tree, and sign it when a checkpoint is due.
        let tree = self.tree.as_mut().expect("sync_tree set it");
        if !folded {
            for h in &self.batch_hashes {
                tree.frontier.push(*h);
            }
        }
        if tree.due(&self.cfg.checkpoints, force_checkpoint) {
            if force_checkpoint {
                self.checkpoint()?;
            } else {
                self.checkpoint_or_note();
            }
        }
        // The TREE cache only spares a reader of the whole ledger at the next start: save it at
        // checkpoints and at most once a second (and when the handle is dropped).
        let tree = self.tree.as_ref().expect("still set");
        if tree.last_checkpoint.0 == tree.frontier.size()
            || self.tree_saved.elapsed() >= Duration::from_secs(1)
        {
            tree.save(&self.dir);
            self.tree_saved = Instant::now();
        }
        Ok(AppendReceipt {
            first_seq,
            last_seq,
        })
    }

    /// Make `self.tree` describe the ledger up to our view of the tail: keep it, load the
    /// TREE cache, or rebuild it from every record (after a crash or when the cache is gone).
    fn sync_tree(&mut self) -> Result<(), LedgerError> {
        let size = self.active.as_ref().map_or(0, |a| a.last_seq);
        if self
            .tree
            .as_ref()
            .is_some_and(|t| t.frontier.size() == size)
        {
            return Ok(());
        }
        // Our own view (behind when another writer appended since), else the TREE cache
        // (behind since its last save): extend either with the records written since. Only
        // without both, or when they do not fit, read the whole ledger.
        let mut behind = self
            .tree
            .take()
            .filter(|t| t.frontier.size() < size)
            .or_else(|| TreeState::load(&self.dir, size));
        if let Some(t) = behind.as_mut() {
            if !catch_up(t, &self.data_dir, size)? {
                behind = None;
            } else if let Some(cp) = TreeState::cached_checkpoint(&self.dir) {
                // Another writer may have signed since: follow the shared schedule.
                if cp.0 > t.last_checkpoint.0 && cp.0 <= size {
                    t.last_checkpoint = cp;
                }
            }
        }
        self.tree = match behind {
            Some(t) => Some(t),
            None => {
                // After retention removed the oldest segments, the newest tombstone holds
                // the tree of the removed records: continue from it.
                let base = crate::tombstone::removed_through(&self.data_dir)?;
                let (start, from) = match &base {
                    Some(t) => (t.tree(), t.last_seq + 1),
                    None => (Default::default(), 1),
                };
                let mut hashes = Vec::new();
                for rec in LedgerReader::open(&self.data_dir, from)? {
                    let rec = rec?;
                    if read_fields(&rec.line).is_some_and(|f| f.seq < from) {
                        continue; // a removed segment still there (an interrupted removal)
                    }
                    hashes.push(record_hash(&rec.line));
                }
                let t = TreeState::rebuild(&self.data_dir, start, hashes.into_iter())?;
                if t.frontier.size() != size {
                    return Err(LedgerError::Corrupt {
                        segment: self.dir.clone(),
                        offset: 0,
                        reason: format!(
                            "the ledger holds {} complete records but its last one has seq {size}",
                            t.frontier.size()
                        ),
                    });
                }
                Some(t)
            }
        };
        Ok(())
    }

    /// A checkpoint that fails (disk full, anchor unreachable) must not fail an append whose
    /// records are durable, or a retry would write them twice: keep the error for the caller
    /// ([`take_checkpoint_problem`](Self::take_checkpoint_problem)); the next one tries again.
    fn checkpoint_or_note(&mut self) {
        if let Err(e) = self.checkpoint() {
            self.checkpoint_problem = Some(e);
        }
    }

    /// The last checkpoint failure since asked, if any (see `checkpoint_or_note`).
    pub fn take_checkpoint_problem(&mut self) -> Option<LedgerError> {
        self.checkpoint_problem.take()
    }

    /// Sign and store a checkpoint of the tree as it stands.
    fn checkpoint(&mut self) -> Result<(), LedgerError> {
        if self.signer.is_none() {
            self.signer = Some(load_or_create_signer(&self.data_dir)?);
        }
        let signer = self.signer.as_ref().expect("set above");
        let tree = self.tree.as_mut().expect("sync_tree set it");
        write_checkpoint(&self.data_dir, signer, tree, &self.cfg.checkpoints)
    }

    /// Bring our view of the tail up to date with what other writers did since our last
    /// append; quarantine a torn tail. Returns the recovery event to append, if any.
    fn sync_tail(&mut self) -> Result<Option<Event>, LedgerError> {
        if let Some(a) = &self.active {
            let meta = a.file.metadata().map_err(LedgerError::io(&a.path))?;
            let sealed = meta.permissions().mode() & 0o222 == 0;
            if !sealed && meta.len() == a.len {
                return Ok(None);
            }
        }
        // Someone else wrote or rotated (or this is our first append): re-read from disk.
        self.active = None;
        let segments = list_segments(&self.dir)?;
        let Some(last) = segments.last() else {
            return Ok(None);
        };
        let path = last.path.clone();
        let mut file = open_segment_append(&path)?;
        let len = file.metadata().map_err(LedgerError::io(&path))?.len();
        let tail = read_tail(&path, &mut file, len)?;
        let mut recovered = None;
        if tail.complete_len < len {
            recovered = Some(self.quarantine_torn(&path, &mut file, tail.complete_len, len)?);
        }
        let (last_seq, last_hash, last_epoch, opened) = match &tail.last_line {
            Some((offset, line)) => {
                let ev: Event = serde_json::from_slice(line).map_err(|e| LedgerError::Corrupt {
                    segment: path.clone(),
                    offset: *offset,
                    reason: format!("last record is not a valid event ({e})"),
                })?;
                (
                    ev.seq,
                    record_hash(line),
                    mac_epoch(line),
                    first_record_time(&path, last.first_seq, &ev),
                )
            }
            None if last.first_seq == 1 => (0, [0u8; 32], None, SystemTime::now()),
            None => {
                // An empty segment after a rotation: continue from the previous segment.
                let prev = segments
                    .get(segments.len().wrapping_sub(2))
                    .ok_or_else(|| LedgerError::Corrupt {
                        segment: path.clone(),
                        offset: 0,
                        reason: format!(
                            "empty segment starts at seq {} but there is no earlier segment",
                            last.first_seq
                        ),
                    })?;
                let mut pf = File::open(&prev.path).map_err(LedgerError::io(&prev.path))?;
                let ptail = read_tail(&prev.path, &mut pf, prev.len)?;
                let (off, line) = ptail.last_line.ok_or_else(|| LedgerError::Corrupt {
                    segment: prev.path.clone(),
                    offset: 0,
                    reason: "sealed segment holds no complete record".into(),
                })?;
                let ev: Event =
                    serde_json::from_slice(&line).map_err(|e| LedgerError::Corrupt {
                        segment: prev.path.clone(),
                        offset: off,
                        reason: format!("last record is not a valid event ({e})"),
                    })?;
                (
                    ev.seq,
                    record_hash(&line),
                    mac_epoch(&line),
                    SystemTime::now(),
                )
            }
        };
        if last.sealed {
            // A writer sealed this segment but stopped before starting the next one.
            let (file, path) = create_segment(&self.dir, last_seq + 1)?;
            self.active = Some(Active {
                path,
                file,
                len: 0,
                last_seq,
                last_hash,
                last_epoch,
                opened: SystemTime::now(),
            });
        } else {
            let len = tail.complete_len;
            self.active = Some(Active {
                path,
                file,
                len,
                last_seq,
                last_hash,
                last_epoch,
                opened,
            });
        }
        Ok(recovered)
    }

    fn quarantine_torn(
        &self,
        path: &Path,
        file: &mut File,
        complete_len: u64,
        len: u64,
    ) -> Result<Event, LedgerError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut torn = vec![0u8; (len - complete_len) as usize];
        file.seek(SeekFrom::Start(complete_len))
            .map_err(LedgerError::io(path))?;
        file.read_exact(&mut torn).map_err(LedgerError::io(path))?;
        let qdir = self.dir.join("quarantine");
        ensure_private_dir(&qdir)?;
        let seg_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("segment")
            .to_string();
        let qpath = qdir.join(format!("{seg_name}.{complete_len}.torn"));
        let mut q = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&qpath)
            .map_err(LedgerError::io(&qpath))?;
        q.write_all(&torn)
            .and_then(|_| q.sync_all())
            .map_err(LedgerError::io(&qpath))?;
        segment::sync_dir(&qdir)?;
        // Only now that the bytes are safe elsewhere, cut them from the segment.
        file.set_len(complete_len)
            .and_then(|_| file.sync_all())
            .map_err(LedgerError::io(path))?;
        let mut ev = Event::new(EventKind::SystemLedgerRecovered);
        ev.detail = Some(serde_json::json!({
            "reason": "torn_tail",
            "segment": seg_name,
            "offset": complete_len,
            "length": torn.len(),
            "sha256": sha256_hex(&torn),
            "quarantined_to": format!("quarantine/{}", qpath.file_name().and_then(|n| n.to_str()).unwrap_or_default()),
            "explanation": "a writer stopped in the middle of a record (killed or crashed); the incomplete bytes were never acknowledged as durable and were moved out of the segment",
        }));
        Ok(ev)
    }
}

/// Batches at least this large fold their leaves into the tree during the flush (smaller
/// ones do it after: handing the flush over costs more than their few merges).
const OVERLAP_MIN_RECORDS: usize = 64;

/// Complete one line with the next seq, the previous record's hash and (with a key) the MAC;
/// advance the chain. The record hash covers the line as it stands before the MAC member is
/// added (see [`crate::record`]), so one pass gives the chain link, the leaf and the MAC input.
fn encode(
    ev: &PreparedEvent,
    mac: Option<(&EpochKey, Option<&[u8; 32]>)>,
    last_seq: &mut u64,
    last_hash: &mut [u8; 32],
    buf: &mut Vec<u8>,
) {
    *last_seq += 1;
    // Before the first record `last_hash` is all zero bytes, whose hex is GENESIS_HASH.
    let start = buf.len();
    ev.write_line(*last_seq, &hex32(last_hash), buf);
    let line = &buf[start..];
    *last_hash = hash_record(line, line.len() - 1);
    if let Some((key, transition)) = mac {
        let tag = key.mac32(last_hash);
        buf.pop(); // the closing brace, restored after the MAC member
        buf.extend_from_slice(b",\"mac\":\"");
        buf.extend_from_slice(itoa::Buffer::new().format(key.epoch()).as_bytes());
        buf.push(b':');
        buf.extend_from_slice(&hex32(&tag));
        if let Some(t) = transition {
            buf.push(b':');
            buf.extend_from_slice(&hex32(t));
        }
        buf.extend_from_slice(b"\"}");
    }
    buf.push(b'\n');
}

/// The MAC epoch of a stored line, if it carries a MAC.
fn mac_epoch(line: &[u8]) -> Option<u64> {
    read_fields(line)
        .and_then(|f| f.mac)
        .map(|(epoch, _)| epoch)
}

/// When the active segment was started: the time of its first record, else now.
fn first_record_time(path: &Path, first_seq: u64, last: &Event) -> SystemTime {
    let first_time = if last.seq == first_seq {
        Some(last.time.clone())
    } else {
        std::fs::File::open(path).ok().and_then(|f| {
            use std::io::BufRead;
            let mut line = Vec::new();
            std::io::BufReader::new(f)
                .read_until(b'\n', &mut line)
                .ok()?;
            serde_json::from_slice::<Event>(&line).ok().map(|e| e.time)
        })
    };
    first_time
        .and_then(|t| mcptrail_event::parse_rfc3339(&t).ok())
        .map(SystemTime::from)
        .unwrap_or_else(SystemTime::now)
}

/// Extend `tree` with the records after its size, up to `size`. False when the records do not
/// follow on (a gap, an odd line): the caller then rebuilds from the whole ledger.
fn catch_up(tree: &mut TreeState, data_dir: &Path, size: u64) -> Result<bool, LedgerError> {
    let from = tree.frontier.size() + 1;
    if from > size {
        return Ok(tree.frontier.size() == size);
    }
    for rec in LedgerReader::open(data_dir, from)? {
        let rec = rec?;
        let Some(f) = read_fields(&rec.line) else {
            return Ok(false);
        };
        if f.seq < from {
            continue;
        }
        if f.seq != tree.frontier.size() + 1 {
            return Ok(false);
        }
        tree.frontier.push(record_hash(&rec.line));
        if tree.frontier.size() == size {
            break;
        }
    }
    Ok(tree.frontier.size() == size)
}
