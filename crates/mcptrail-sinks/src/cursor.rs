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

/// Commits a sink's cursor on a thread of its own, so the shipper sends the next batch while
/// the last position is made durable (an `fdatasync`, a rename and a directory `fsync`: ≈ 10
/// ms on a busy virtual disk, as long as shipping a whole batch).
///
/// Only positions the receiver acknowledged are handed over, in order, so the file still
/// never runs ahead of delivery; a position handed over while the previous one is being
/// written replaces it (the newest wins: writing the older one too gains nothing). A crash
/// can lose the position handed over last, which means that batch is sent again —
/// at-least-once, as before. A failed write is returned by the next [`CursorWriter::commit`]
/// or by [`CursorWriter::finish`]; dropping the writer writes what is pending first.
pub(crate) struct CursorWriter {
    inner: std::sync::Arc<WriterInner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct WriterState {
    pending: Option<(u64, String)>,
    writing: bool,
    error: Option<Error>,
    closed: bool,
}

struct WriterInner {
    state: std::sync::Mutex<WriterState>,
    changed: std::sync::Condvar,
}

impl WriterInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CursorWriter {
    /// A writer for `cursor` (starts its thread; if the thread cannot start, commits are
    /// written by the caller's thread instead).
    pub(crate) fn start(cursor: Cursor) -> Self {
        let inner = std::sync::Arc::new(WriterInner {
            state: std::sync::Mutex::new(WriterState::default()),
            changed: std::sync::Condvar::new(),
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mcptrail-cursor-{}", cursor.sink))
            .spawn(move || {
                crate::shipper::run_in_background();
                let mut s = worker.lock();
                loop {
                    if let Some((seq, id)) = s.pending.take() {
                        s.writing = true;
                        drop(s);
                        let written = cursor.store(seq, &id);
                        s = worker.lock();
                        s.writing = false;
                        if let Err(e) = written {
                            s.error.get_or_insert(e);
                        }
                        worker.changed.notify_all();
                    } else if s.closed {
                        return;
                    } else {
                        s = worker.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                    }
                }
            })
            .ok();
        let w = CursorWriter { inner, thread };
        if w.thread.is_none() {
            // No thread: `commit` writes in place (see there).
            w.inner.lock().closed = true;
        }
        w
    }

    /// Hand over the position `seq` (with its `event_id`) to be written; returns at once.
    /// Fails with the error of an earlier write that failed.
    pub(crate) fn commit(&self, cursor: &Cursor, seq: u64, event_id: &str) -> Result<(), Error> {
        if self.thread.is_none() {
            return cursor.store(seq, event_id);
        }
        let mut s = self.inner.lock();
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        s.pending = Some((seq, event_id.to_string()));
        self.inner.changed.notify_all();
        Ok(())
    }

    /// Wait until every position handed over is written; the first failed write, if any.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        let mut s = self.inner.lock();
        while s.pending.is_some() || s.writing {
            s = self
                .inner
                .changed
                .wait(s)
                .unwrap_or_else(|p| p.into_inner());
        }
        s.error.take().map_or(Ok(()), Err)
    }

    /// Write what is pending, stop the thread and return the first failed write, if any.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        let flushed = self.flush();
        self.stop();
        flushed
    }

    fn stop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for CursorWriter {
    fn drop(&mut self) {
        // The thread writes what is pending before it sees `closed`.
        self.stop();
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

    #[test]
    fn the_writer_commits_in_the_background_newest_position_last() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(dir.path(), "bg");
        let w = CursorWriter::start(c.clone());
        for seq in 1..=50 {
            w.commit(&c, seq, &format!("e{seq}")).unwrap();
        }
        w.flush().unwrap();
        let s = c.load().unwrap().unwrap();
        assert_eq!((s.seq, s.event_id.as_str()), (50, "e50"));
        w.commit(&c, 51, "e51").unwrap();
        drop(w);
        assert_eq!(
            c.load().unwrap().unwrap().seq,
            51,
            "dropping writes what is pending"
        );
    }

    #[test]
    fn a_failed_background_write_is_returned_by_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::new(dir.path(), "bad");
        let w = CursorWriter::start(c.clone());
        w.commit(&c, 7, "e7").unwrap();
        w.flush().unwrap();
        // `sinks/` replaced by a file: every later write fails (also for root).
        let sinks = dir.path().join(SINKS_DIR);
        std::fs::remove_dir_all(&sinks).unwrap();
        std::fs::write(&sinks, b"not a directory").unwrap();
        w.commit(&c, 8, "e8").unwrap();
        let e = w.flush().unwrap_err().to_string();
        assert!(e.contains("sinks"), "{e}");
        // Reported once; the writer goes on (the shipper stops on the error).
        w.commit(&c, 9, "e9").unwrap();
        assert!(w.finish().is_err(), "the write of 9 fails too");
    }
}
