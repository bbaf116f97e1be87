//! The meta-audit writer: every API read (`governance.read`), refusal (`governance.access`)
//! and governance step (`governance.request` / `decision` / `execution`) is an event in the
//! ledger itself. One thread owns the ledger writer and appends what request handlers send
//! it in batches (group commit: one write and one fdatasync per batch), so a read costs the
//! caller a channel send, not a disk flush. Governance steps wait for their batch to be
//! durable before the caller is answered: a decision is never acknowledged unrecorded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mcptrail_event::Event;
use mcptrail_ledger::{Ledger, LedgerConfig};
use tokio::sync::oneshot;

/// Applied to every event before it is appended (the binary redacts: a reason may name a
/// person).
pub type EventHook = Arc<dyn Fn(&mut Event) + Send + Sync>;

/// Longest a batch waits for more events once it has one.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Most events in one batch.
const BATCH_MAX: usize = 1024;

type Reply = oneshot::Sender<Result<u64, String>>;

struct Msg {
    event: Event,
    reply: Option<Reply>,
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Recorder {
    tx: Sender<Msg>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Open the ledger of `data_dir` and start the writer thread.
    pub fn start(
        data_dir: PathBuf,
        cfg: LedgerConfig,
        hook: Option<EventHook>,
    ) -> Result<Self, mcptrail_ledger::LedgerError> {
        let ledger = Ledger::open(&data_dir, cfg)?;
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(65_536);
        std::thread::Builder::new()
            .name("mcptrail-serve-audit".into())
            .spawn(move || run(ledger, rx, hook))
            .map_err(|source| mcptrail_ledger::LedgerError::Io {
                path: data_dir.clone(),
                source,
            })?;
        Ok(Recorder { tx })
    }

    /// Record `event` with the next batch; does not wait for the disk.
    pub fn record(&self, event: Event) {
        // A full channel means the disk cannot keep up: wait rather than lose the record.
        let _ = self.tx.send(Msg { event, reply: None });
    }

    /// Record `event` and wait until it is durable; its seq.
    pub async fn record_durable(&self, event: Event) -> Result<u64, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg {
                event,
                reply: Some(reply),
            })
            .map_err(|_| "the meta-audit writer has stopped".to_string())?;
        rx.await
            .map_err(|_| "the meta-audit writer has stopped".to_string())?
    }
}

fn run(mut ledger: Ledger, rx: Receiver<Msg>, hook: Option<EventHook>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.recv_timeout(BATCH_WINDOW) {
                Ok(m) => batch.push(m),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let (mut events, replies): (Vec<Event>, Vec<Option<Reply>>) =
            batch.into_iter().map(|m| (m.event, m.reply)).unzip();
        if let Some(h) = &hook {
            for e in &mut events {
                h(e);
            }
        }
        let result = ledger.append(&mut events).map_err(|e| e.to_string());
        for (e, r) in events.iter().zip(replies) {
            if let Some(r) = r {
                let _ = r.send(result.as_ref().map(|_| e.seq).map_err(Clone::clone));
            }
        }
        if let Err(e) = result {
            eprintln!("mcptrail serve: cannot record the meta-audit: {e}");
        }
    }
}
