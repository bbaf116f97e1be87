//! Following the ledger by `seq`, as it grows.
//!
//! The ledger's own reader lists the segments once; a sink that keeps up with a live `wrap`
//! must notice both a growing active segment and a new segment after rotation, without
//! re-reading what it already has. [`LedgerTail`] keeps the byte offset of the next line and:
//!
//! - returns only complete lines (ending in `\n`). An unterminated last line is a write in
//!   progress or a torn tail left by a killed writer: the tail waits at its offset, and reads
//!   whatever complete line is there later (the next writer truncates a torn tail and appends
//!   in its place). Half a record is never shipped.
//! - moves to the next segment only when one exists *and* the current one has nothing more
//!   past our offset (the writer seals a segment before it starts the next one).
//! - checks that `seq` increases by exactly one. A gap or an unparsable line stops the
//!   consumer with an error instead of skipping events — except records removed by retention
//!   under signed tombstones before the sink shipped them: the tail continues after them and
//!   says so ([`LedgerTail::skipped_removed`]).

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use mcptrail_ledger::{list_segments, LEDGER_DIR};
use serde::Deserialize;

use crate::Error;

/// One ledger record as the sinks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipRecord {
    /// Ledger sequence number.
    pub seq: u64,
    /// The event's UUIDv7: the dedupe key every receiver can use.
    pub event_id: String,
    /// The event kind (dotted name).
    pub kind: String,
    /// Event time, RFC 3339.
    pub time: String,
    /// Classification labels.
    pub labels: Vec<String>,
    /// The exact stored line, without its newline.
    pub line: Vec<u8>,
}

#[derive(Deserialize)]
struct Head<'a> {
    seq: u64,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(default, borrow)]
    labels: Vec<Cow<'a, str>>,
}

impl ShipRecord {
    /// Read the fields a sink needs from a stored line (the rest stays as bytes).
    pub fn from_line(line: Vec<u8>) -> Result<Self, String> {
        let head: Head<'_> = serde_json::from_slice(&line).map_err(|e| e.to_string())?;
        Ok(ShipRecord {
            seq: head.seq,
            event_id: head.event_id.into_owned(),
            kind: head.kind.into_owned(),
            time: head.time.into_owned(),
            labels: head.labels.into_iter().map(Cow::into_owned).collect(),
            line,
        })
    }
}

struct Open {
    path: PathBuf,
    first_seq: u64,
    reader: BufReader<File>,
    /// Offset of the next unread line.
    offset: u64,
    /// Whether the reader's position is `offset` (false after a partial read).
    positioned: bool,
}

/// A cursor over the ledger that can wait for more.
pub struct LedgerTail {
    ledger_dir: PathBuf,
    current: Option<Open>,
    /// The `seq` the next record must have (0: the first record seen sets it).
    expect: u64,
    /// Records below this `seq` are skipped (positioning).
    from_seq: u64,
    buf: Vec<u8>,
    last_seen: Option<(u64, String)>,
    skipped_removed: Option<(u64, u64)>,
}

impl LedgerTail {
    /// Follow the ledger of `data_dir` from `from_seq` (1: the beginning).
    pub fn open(data_dir: &Path, from_seq: u64) -> Self {
        LedgerTail {
            ledger_dir: data_dir.join(LEDGER_DIR),
            current: None,
            expect: 0,
            from_seq: from_seq.max(1),
            buf: Vec::with_capacity(64 * 1024),
            last_seen: None,
            skipped_removed: None,
        }
    }

    /// The records the cursor asked for that retention had removed before they were shipped
    /// (`first..=last`), if the tail had to skip them.
    pub fn skipped_removed(&self) -> Option<(u64, u64)> {
        self.skipped_removed
    }

    /// `seq` and time of the last record returned.
    pub fn last_seen(&self) -> Option<&(u64, String)> {
        self.last_seen.as_ref()
    }

    fn open_segment(&mut self) -> Result<bool, Error> {
        let segments = list_segments(&self.ledger_dir)?;
        let pick = match &self.current {
            None => segments
                .iter()
                .rposition(|s| s.first_seq <= self.from_seq)
                .or((!segments.is_empty()).then_some(0)),
            Some(cur) => {
                let Some(i) = segments.iter().position(|s| s.first_seq > cur.first_seq) else {
                    return Ok(false);
                };
                // A newer segment exists: the current one was sealed before it was created.
                // Take what was appended to the current one since we looked, first.
                let len = std::fs::metadata(&cur.path)
                    .map_err(Error::io(&cur.path))?
                    .len();
                if len > cur.offset {
                    return Ok(true);
                }
                Some(i)
            }
        };
        let Some(i) = pick else { return Ok(false) };
        let seg = &segments[i];
        let file = File::open(&seg.path).map_err(Error::io(&seg.path))?;
        self.current = Some(Open {
            path: seg.path.clone(),
            first_seq: seg.first_seq,
            reader: BufReader::with_capacity(256 * 1024, file),
            offset: 0,
            positioned: true,
        });
        Ok(true)
    }

    /// The next complete record at or after `from_seq`, or `None` when there is none yet.
    pub fn next_record(&mut self) -> Result<Option<ShipRecord>, Error> {
        loop {
            if self.current.is_none() && !self.open_segment()? {
                return Ok(None);
            }
            let cur = self.current.as_mut().expect("opened above");
            if !cur.positioned {
                cur.reader
                    .seek(SeekFrom::Start(cur.offset))
                    .map_err(Error::io(&cur.path))?;
                cur.positioned = true;
            }
            self.buf.clear();
            let n = cur
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(Error::io(&cur.path))?;
            if n == 0 || self.buf.last() != Some(&b'\n') {
                // End of the segment, or a line still being written (or torn): come back to
                // this offset later; meanwhile a newer segment may have started.
                if n > 0 {
                    cur.positioned = false;
                    return Ok(None);
                }
                if !self.open_segment()? {
                    return Ok(None);
                }
                continue;
            }
            let start = cur.offset;
            cur.offset += n as u64;
            self.buf.pop();
            let rec = match ShipRecord::from_line(self.buf.clone()) {
                Ok(r) => r,
                Err(e) => {
                    return Err(Error::LedgerContent {
                        path: cur.path.clone(),
                        problem: format!("the line at byte {start} is not an event ({e})"),
                    })
                }
            };
            if rec.seq < self.from_seq {
                continue;
            }
            if self.expect != 0 && rec.seq != self.expect {
                let path = cur.path.clone();
                // Stay before this line: nothing after a gap is shipped.
                cur.offset = start;
                cur.positioned = false;
                return Err(Error::LedgerContent {
                    path,
                    problem: format!(
                        "expected seq {} at byte {start}, found {}: records are missing or out of order",
                        self.expect, rec.seq
                    ),
                });
            }
            if self.expect == 0 && self.from_seq > 1 && rec.seq > self.from_seq {
                // Retention removed the records the cursor points at (signed tombstones up
                // to just before this one): they cannot be shipped any more; go on.
                let removed = mcptrail_ledger::removed_through(
                    self.ledger_dir.parent().unwrap_or(Path::new(".")),
                )?
                .map_or(0, |t| t.last_seq);
                if removed + 1 == rec.seq {
                    self.skipped_removed = Some((self.from_seq, removed));
                    self.from_seq = rec.seq;
                }
            }
            if self.expect == 0 && self.from_seq > 1 && rec.seq != self.from_seq {
                return Err(Error::LedgerContent {
                    path: cur.path.clone(),
                    problem: format!(
                        "the cursor asks for seq {} but the ledger continues at {}",
                        self.from_seq, rec.seq
                    ),
                });
            }
            self.expect = rec.seq + 1;
            self.last_seen = Some((rec.seq, rec.time.clone()));
            return Ok(Some(rec));
        }
    }
}

/// The newest record of the ledger: its `seq` and time (`None`: empty). Reads only the end of
/// the last segment.
pub fn ledger_head(data_dir: &Path) -> Result<Option<(u64, String)>, Error> {
    use std::io::Read;
    let dir = data_dir.join(LEDGER_DIR);
    let segments = list_segments(&dir)?;
    for seg in segments.iter().rev() {
        let mut f = File::open(&seg.path).map_err(Error::io(&seg.path))?;
        let len = f.metadata().map_err(Error::io(&seg.path))?.len();
        let mut window: u64 = 64 * 1024;
        loop {
            let start = len.saturating_sub(window);
            f.seek(SeekFrom::Start(start))
                .map_err(Error::io(&seg.path))?;
            let mut bytes = Vec::with_capacity((len - start) as usize);
            f.read_to_end(&mut bytes).map_err(Error::io(&seg.path))?;
            // Complete lines only: cut an unterminated tail.
            let Some(end) = memchr::memrchr(b'\n', &bytes) else {
                if start == 0 {
                    break;
                }
                window *= 4;
                continue;
            };
            let body = &bytes[..end];
            let line_start = memchr::memrchr(b'\n', body).map(|i| i + 1);
            match line_start {
                None if start > 0 => {
                    window *= 4;
                    continue;
                }
                _ => {}
            }
            let line = &body[line_start.unwrap_or(0)..];
            let rec = ShipRecord::from_line(line.to_vec()).map_err(|e| Error::LedgerContent {
                path: seg.path.clone(),
                problem: format!("its last line is not an event ({e})"),
            })?;
            return Ok(Some((rec.seq, rec.time)));
        }
    }
    Ok(None)
}
