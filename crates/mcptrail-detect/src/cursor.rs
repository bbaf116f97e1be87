//! The streaming detector's durable cursor: `<data_dir>/detect/cursor.json` (0600, in a
//! 0700 directory), written atomically ([`mcptrail_ledger::write_private_atomic`]: temporary
//! file, fsync, rename, fsync of the directory).
//!
//! ```text
//! {"format":"mcptrail-detect-cursor v1","seq":4096,"event_id":"019a…","replay_from":3840}
//! ```
//!
//! `seq`/`event_id`: the last record the detector finished with (its alerts appended);
//! `event_id` lets a cursor copied next to another ledger be noticed. `replay_from`: where to
//! start reading again so window and sequence state is rebuilt (see [`crate::detector`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DetectError;

/// Directory of the detector's files under the data directory.
pub const DETECT_DIR: &str = "detect";
const FORMAT: &str = "mcptrail-detect-cursor v1";

/// The stored position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorState {
    format: String,
    /// Last `seq` finished with.
    pub seq: u64,
    /// `event_id` of the record at `seq`.
    pub event_id: String,
    /// Where to start reading to rebuild the state (`<= seq + 1`).
    pub replay_from: u64,
}

/// The cursor file.
#[derive(Debug, Clone)]
pub struct DetectCursor {
    dir: PathBuf,
    path: PathBuf,
}

impl DetectCursor {
    /// The cursor under `data_dir` (nothing read or created yet).
    pub fn new(data_dir: &Path) -> DetectCursor {
        let dir = data_dir.join(DETECT_DIR);
        DetectCursor {
            path: dir.join("cursor.json"),
            dir,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored position, `None` when there is none yet.
    pub fn load(&self) -> Result<Option<CursorState>, DetectError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DetectError::io(&self.path)(e)),
        };
        let bad = |problem: String| DetectError::Cursor {
            path: self.path.clone(),
            problem,
        };
        let s: CursorState =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("unreadable ({e})")))?;
        if s.format != FORMAT {
            return Err(bad(format!("unknown format `{}`", s.format)));
        }
        if s.seq == 0 || s.event_id.is_empty() || s.replay_from == 0 || s.replay_from > s.seq + 1 {
            return Err(bad("its fields disagree".into()));
        }
        Ok(Some(s))
    }

    /// Commit a position durably.
    pub fn store(&self, seq: u64, event_id: &str, replay_from: u64) -> Result<(), DetectError> {
        mcptrail_ledger::create_private_dir(&self.dir).map_err(private_io)?;
        let state = CursorState {
            format: FORMAT.into(),
            seq,
            event_id: event_id.into(),
            replay_from: replay_from.clamp(1, seq + 1),
        };
        let mut bytes = serde_json::to_vec(&state).expect("cursor serialises");
        bytes.push(b'\n');
        mcptrail_ledger::write_private_atomic(&self.path, &bytes).map_err(private_io)
    }

    /// Take `detect/detector.lock` (held while the file is open), `None` when another
    /// detector holds it: one streaming detector per data directory, the others wait.
    pub fn try_lock(&self) -> Result<Option<File>, DetectError> {
        mcptrail_ledger::create_private_dir(&self.dir).map_err(private_io)?;
        let path = self.dir.join("detector.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(DetectError::io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(DetectError::io(&path)(e)),
        }
    }
}

fn private_io(e: mcptrail_ledger::PrivateFileError) -> DetectError {
    DetectError::Io {
        path: e.path,
        source: e.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = DetectCursor::new(dir.path());
        assert_eq!(c.load().unwrap(), None);
        c.store(10, "e10", 3).unwrap();
        let s = c.load().unwrap().unwrap();
        assert_eq!((s.seq, s.event_id.as_str(), s.replay_from), (10, "e10", 3));
        let mode = std::fs::metadata(c.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(c.path(), b"{\"format\":\"x\"}").unwrap();
        let e = c.load().unwrap_err().to_string();
        assert!(
            e.contains("cursor.json") && e.contains("move it aside"),
            "{e}"
        );
        let lock = c.try_lock().unwrap();
        assert!(lock.is_some());
        assert!(c.try_lock().unwrap().is_none(), "a second detector waits");
        drop(lock);
        assert!(c.try_lock().unwrap().is_some());
    }
}
