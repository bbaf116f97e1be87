//! Sequential reading of ledger records by `seq`, the way every consumer (index, sinks,
//! detectors) reads: from a cursor onwards, raw bytes plus where they are stored.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::segment::{list_segments, SegmentInfo};
use crate::{LedgerError, LEDGER_DIR};

/// One stored line.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// The exact stored bytes, without the trailing newline.
    pub line: Vec<u8>,
    /// The segment holding it.
    pub segment: PathBuf,
    /// Byte offset of the line in the segment.
    pub offset: u64,
    /// 1-based line number in the segment.
    pub line_no: u64,
}

/// Iterates the complete lines of every segment in order, starting with the segment that can
/// hold `from_seq`. An unterminated last line (a write in progress, or a torn tail) is not
/// returned; [`LedgerReader::torn_tail`] tells whether one was seen.
pub struct LedgerReader {
    segments: Vec<SegmentInfo>,
    next_segment: usize,
    current: Option<(PathBuf, BufReader<File>, u64, u64)>,
    torn_tail: Option<(PathBuf, u64, u64)>,
    buf: Vec<u8>,
}

impl LedgerReader {
    /// Open the ledger of `data_dir` for reading from the segment holding `from_seq` (1 = all).
    pub fn open(data_dir: &Path, from_seq: u64) -> Result<Self, LedgerError> {
        let segments = list_segments(&data_dir.join(LEDGER_DIR))?;
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= from_seq.max(1))
            .unwrap_or(0);
        Ok(LedgerReader {
            segments,
            next_segment: start,
            current: None,
            torn_tail: None,
            buf: Vec::new(),
        })
    }

    /// The segments this reader walks.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// An unterminated trailing fragment seen so far: (segment, offset, length).
    pub fn torn_tail(&self) -> Option<&(PathBuf, u64, u64)> {
        self.torn_tail.as_ref()
    }

    /// The next complete line, or `None` at the end of the ledger.
    pub fn next_record(&mut self) -> Result<Option<RawRecord>, LedgerError> {
        loop {
            if self.current.is_none() {
                let Some(seg) = self.segments.get(self.next_segment) else {
                    return Ok(None);
                };
                self.next_segment += 1;
                let mut f = File::open(&seg.path).map_err(LedgerError::io(&seg.path))?;
                f.seek(SeekFrom::Start(0))
                    .map_err(LedgerError::io(&seg.path))?;
                self.current = Some((
                    seg.path.clone(),
                    BufReader::with_capacity(256 * 1024, f),
                    0,
                    0,
                ));
            }
            let (path, reader, offset, line_no) = self.current.as_mut().expect("set above");
            self.buf.clear();
            let n = reader
                .read_until(b'\n', &mut self.buf)
                .map_err(LedgerError::io(&*path))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            let start = *offset;
            *offset += n as u64;
            if self.buf.last() != Some(&b'\n') {
                self.torn_tail = Some((path.clone(), start, n as u64));
                self.current = None;
                continue;
            }
            *line_no += 1;
            self.buf.pop();
            return Ok(Some(RawRecord {
                line: self.buf.clone(),
                segment: path.clone(),
                offset: start,
                line_no: *line_no,
            }));
        }
    }
}

impl Iterator for LedgerReader {
    type Item = Result<RawRecord, LedgerError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
