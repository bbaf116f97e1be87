//! A helper thread that flushes a segment to disk while the writer does CPU work.
//!
//! `fdatasync` leaves the writer thread waiting on the disk for most of a batch's time. The
//! Merkle tree does not need to be extended before the batch is durable, only before the next
//! checkpoint is signed, so the writer folds the batch's leaves into the tree while this
//! thread waits on the flush. One thread, started on first use and living as long as the
//! ledger handle: spawning one per batch would cost more than the work it overlaps.

use std::fs::File;
use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};

pub(crate) struct Flusher {
    jobs: Sender<File>,
    done: Receiver<io::Result<()>>,
}

impl Flusher {
    pub(crate) fn spawn() -> io::Result<Flusher> {
        let (jobs, job_rx) = channel::<File>();
        let (done_tx, done) = channel();
        std::thread::Builder::new()
            .name("mcptrail-ledger-flush".into())
            .spawn(move || {
                // Ends when the ledger handle (the sender) is dropped.
                for file in job_rx {
                    if done_tx.send(file.sync_data()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Flusher { jobs, done })
    }

    /// `fdatasync` `file` on the helper thread while `work` runs on this one; the flush's
    /// result once both are done. Falls back to flushing here when the helper is gone.
    pub(crate) fn sync_data_while<T>(
        &self,
        file: &File,
        work: impl FnOnce() -> T,
    ) -> (io::Result<()>, T) {
        // A second descriptor for the same open file: its flush is the segment's flush.
        let sent = file
            .try_clone()
            .map(|dup| self.jobs.send(dup).is_ok())
            .unwrap_or(false);
        let out = work();
        let synced = if sent {
            self.done.recv().unwrap_or_else(|_| file.sync_data())
        } else {
            file.sync_data()
        };
        (synced, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flushes_while_the_work_runs_and_reports_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::create(dir.path().join("seg")).unwrap();
        f.write_all(b"line\n").unwrap();
        let flusher = Flusher::spawn().unwrap();
        for i in 0..3 {
            let (synced, out) = flusher.sync_data_while(&f, || i * 2);
            synced.unwrap();
            assert_eq!(out, i * 2);
        }
    }

    #[test]
    fn a_failed_flush_is_reported() {
        // fdatasync on a pipe fails (EINVAL).
        let (reader, _writer) = std::io::pipe().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(reader));
        let flusher = Flusher::spawn().unwrap();
        let (synced, ()) = flusher.sync_data_while(&file, || ());
        assert!(synced.is_err());
    }
}
