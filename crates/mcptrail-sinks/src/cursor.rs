//! Durable sink cursors: `<data_dir>/sinks/<name>.cursor`.
//!
//! A cursor records the last ledger `seq` a sink has finished with (delivered and
//! acknowledged, or filtered out), and the `event_id` of that record, so a cursor copied
//! next to another ledger is noticed instead of silently skipping that ledger's events.
//!
//! ```text
//! {"format":"mcptrail-sink-cursor v1","sink":"siem","seq":4096,"event_id":"019a…"}
//! ```
//!
//! Written atomically ([`mcptrail_ledger::write_private_atomic`]): a temporary file in the
//! same directory (0600), `fsync`, `rename` over the cursor, `fsync` of the directory. A crash
//! leaves the old cursor or the new one, never a mix; the old one means the last batch is
//! delivered again (at-least-once). A cursor that cannot be read is an error that names the
//! file and how to reset it: guessing could skip events or flood a receiver.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Directory of the cursors under the data directory.
pub const SINKS_DIR: &str = "sinks";
const FORMAT: &str = "mcptrail-sink-cursor v1";

/// A sink's position in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorState {
    format: String,
    /// The sink's name.
    pub sink: String,
    /// Last `seq` finished with (0: nothing yet).
    pub seq: u64,
    /// `event_id` of the record at `seq` (empty when `seq` is 0).
    pub event_id: String,
}

/// The cursor file of one sink.
#[derive(Debug, Clone)]
pub struct Cursor {
    sink: String,
    path: PathBuf,
    dir: PathBuf,
}

impl Cursor {
    /// The cursor of `sink` under `data_dir` (nothing is read or created yet).
    pub fn new(data_dir: &Path, sink: &str) -> Self {
        let dir = data_dir.join(SINKS_DIR);
        Cursor {
            sink: sink.to_string(),
            path: dir.join(format!("{sink}.cursor")),
            dir,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, problem: impl Into<String>) -> Error {
        Error::Cursor {
            sink: self.sink.clone(),
            path: self.path.clone(),
            problem: problem.into(),
            fix: format!(
                "shipping stopped so that no event is skipped; inspect the file, then either restore it or set it deliberately with `mcptrail ship --sink {} --reset-cursor SEQ` (0 re-ships everything; receivers dedupe by event_id)",
                self.sink
            ),
        }
    }

    /// The stored position, or `None` when the sink has never committed one.
    pub fn load(&self) -> Result<Option<CursorState>, Error> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&self.path)(e)),
        };
        let state: CursorState =
            serde_json::from_slice(&text).map_err(|e| self.corrupt(format!("unreadable ({e})")))?;
        if state.format != FORMAT {
            return Err(self.corrupt(format!("unknown format `{}`", state.format)));
        }
        if state.sink != self.sink {
            return Err(self.corrupt(format!("it belongs to sink `{}`", state.sink)));
        }
        if (state.seq == 0) != state.event_id.is_empty() {
            return Err(self.corrupt("seq and event_id disagree"));
        }
        Ok(Some(state))
    }

    /// Commit `seq` (whose record has `event_id`) durably.
    pub fn store(&self, seq: u64, event_id: &str) -> Result<(), Error> {
        mcptrail_ledger::create_private_dir(&self.dir).map_err(private_io)?;
        let state = CursorState {
            format: FORMAT.to_string(),
            sink: self.sink.clone(),
            seq,
            event_id: event_id.to_string(),
        };
        let mut bytes = serde_json::to_vec(&state).expect("cursor serialises");
        bytes.push(b'\n');
        mcptrail_ledger::write_private_atomic(&self.path, &bytes).map_err(private_io)
    }
}

fn private_io(e: mcptrail_ledger::PrivateFileError) -> Error {
    Error::io(e.path)(e.source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn store_load_round_trip_private_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(dir.path(), "siem");
        assert_eq!(c.load().unwrap(), None);
        c.store(41, "a").unwrap();
        c.store(42, "b").unwrap();
        let s = c.load().unwrap().unwrap();
        assert_eq!((s.seq, s.event_id.as_str()), (42, "b"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(c.path()), 0o600);
        assert_eq!(mode(&dir.path().join(SINKS_DIR)), 0o700);
        // Only the cursor is left: the temp file was renamed over it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join(SINKS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["siem.cursor".to_string()]);
    }

    #[test]
    fn a_crash_before_rename_leaves_the_old_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(dir.path(), "s");
        c.store(7, "x").unwrap();
        // What a crash between write and rename leaves: a half-written temp file.
        std::fs::write(dir.path().join(SINKS_DIR).join(".s.cursor.tmp"), b"{\"form").unwrap();
        assert_eq!(c.load().unwrap().unwrap().seq, 7);
        c.store(8, "y").unwrap();
        assert_eq!(c.load().unwrap().unwrap().seq, 8);
    }

    #[test]
    fn corrupt_cursors_are_refused_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(dir.path(), "s");
        c.store(7, "x").unwrap();
        for bad in [
            &b"\0\0\0garbage"[..],
            b"{\"format\":\"mcptrail-sink-cursor v9\",\"sink\":\"s\",\"seq\":1,\"event_id\":\"x\"}",
            b"{\"format\":\"mcptrail-sink-cursor v1\",\"sink\":\"other\",\"seq\":1,\"event_id\":\"x\"}",
            b"{\"format\":\"mcptrail-sink-cursor v1\",\"sink\":\"s\",\"seq\":5,\"event_id\":\"\"}",
        ] {
            std::fs::write(c.path(), bad).unwrap();
            let e = c.load().unwrap_err().to_string();
            assert!(e.contains("--reset-cursor"), "{e}");
            assert!(e.contains("s.cursor"), "{e}");
        }
    }
}
