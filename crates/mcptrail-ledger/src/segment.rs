//! Segment files: naming, listing, creating with safe permissions, reading the last line.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::LedgerError;

/// Name of the ledger directory inside the data directory.
pub const LEDGER_DIR: &str = "ledger";
const PREFIX: &str = "seg-";
const SUFFIX: &str = ".jsonl";

/// One segment file of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Full path.
    pub path: PathBuf,
    /// `seq` of its first record, from the file name.
    pub first_seq: u64,
    /// Whether the file is sealed (no write permission left).
    pub sealed: bool,
    /// Size in bytes.
    pub len: u64,
}

pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{PREFIX}{first_seq:020}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// Every segment in `ledger_dir`, ordered by first seq. A missing directory is an empty ledger.
pub fn list_segments(ledger_dir: &Path) -> Result<Vec<SegmentInfo>, LedgerError> {
    let rd = match fs::read_dir(ledger_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LedgerError::io(ledger_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(LedgerError::io(ledger_dir))?;
        let name = entry.file_name();
        let Some(first_seq) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let path = entry.path();
        let meta = entry.metadata().map_err(LedgerError::io(&path))?;
        out.push(SegmentInfo {
            path,
            first_seq,
            sealed: meta.permissions().mode() & 0o222 == 0,
            len: meta.len(),
        });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Create `dir` (and parents) with mode 0700 if missing.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), LedgerError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(LedgerError::io(dir))
}

/// Create a new, empty segment (0600, exclusive) and make its directory entry durable.
pub(crate) fn create_segment(
    ledger_dir: &Path,
    first_seq: u64,
) -> Result<(File, PathBuf), LedgerError> {
    let path = ledger_dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .append(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(LedgerError::io(&path))?;
    sync_dir(ledger_dir)?;
    Ok((file, path))
}

/// Open an existing segment for appending.
pub(crate) fn open_segment_append(path: &Path) -> Result<File, LedgerError> {
    OpenOptions::new()
        .append(true)
        .read(true)
        .open(path)
        .map_err(LedgerError::io(path))
}

/// Seal a segment: fsync it and drop its write permissions.
pub(crate) fn seal(path: &Path, file: &File) -> Result<(), LedgerError> {
    file.sync_all().map_err(LedgerError::io(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o400)).map_err(LedgerError::io(path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LedgerError::io(dir))
}

/// The state at the end of a segment of length `len`.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Offset just past the last `\n` (where a torn remainder would start).
    pub(crate) complete_len: u64,
    /// The last complete line (without `\n`) and its offset, if any.
    pub(crate) last_line: Option<(u64, Vec<u8>)>,
}

/// Read backwards from `len` to find the last complete line and any unterminated remainder.
pub(crate) fn read_tail(path: &Path, file: &mut File, len: u64) -> Result<Tail, LedgerError> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf: Vec<u8> = Vec::new(); // bytes from `start` to `len`
    let mut start = len;
    let mut complete_len: Option<u64> = None;
    loop {
        if let Some(end) = complete_len {
            // Look for the newline before the last complete line.
            let rel_end = (end - start) as usize - 1; // index of the '\n' ending the last line
            if let Some(p) = memrchr(b'\n', &buf[..rel_end]) {
                let line_start = start + p as u64 + 1;
                let line = buf[p + 1..rel_end].to_vec();
                return Ok(Tail {
                    complete_len: end,
                    last_line: Some((line_start, line)),
                });
            }
            if start == 0 {
                let line = buf[..rel_end].to_vec();
                return Ok(Tail {
                    complete_len: end,
                    last_line: Some((0, line)),
                });
            }
        } else if let Some(p) = memrchr(b'\n', &buf) {
            complete_len = Some(start + p as u64 + 1);
            continue;
        } else if start == 0 {
            return Ok(Tail {
                complete_len: 0,
                last_line: None,
            });
        }
        let new_start = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - new_start) as usize];
        file.seek(SeekFrom::Start(new_start))
            .map_err(LedgerError::io(path))?;
        file.read_exact(&mut chunk).map_err(LedgerError::io(path))?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = new_start;
    }
}

fn memrchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().rposition(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail_of(content: &[u8]) -> Tail {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        File::create(&p).unwrap().write_all(content).unwrap();
        let mut f = File::open(&p).unwrap();
        read_tail(&p, &mut f, content.len() as u64).unwrap()
    }

    #[test]
    fn tail_cases() {
        let t = tail_of(b"");
        assert_eq!((t.complete_len, t.last_line), (0, None));
        let t = tail_of(b"abc");
        assert_eq!((t.complete_len, t.last_line), (0, None));
        let t = tail_of(b"a\nbc\n");
        assert_eq!(
            (t.complete_len, t.last_line),
            (5, Some((2, b"bc".to_vec())))
        );
        let t = tail_of(b"a\n");
        assert_eq!((t.complete_len, t.last_line), (2, Some((0, b"a".to_vec()))));
        let t = tail_of(b"a\nbc\ntorn");
        assert_eq!(
            (t.complete_len, t.last_line),
            (5, Some((2, b"bc".to_vec())))
        );
    }

    #[test]
    fn tail_across_chunks() {
        let long = vec![b'x'; 200_000];
        let mut content = b"first\n".to_vec();
        content.extend_from_slice(&long);
        content.push(b'\n');
        content.extend_from_slice(&vec![b'y'; 100_000]);
        let t = tail_of(&content);
        assert_eq!(t.complete_len, 200_007);
        assert_eq!(t.last_line, Some((6, long)));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("seg-x.jsonl"), None);
    }
}
