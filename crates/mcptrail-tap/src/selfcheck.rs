//! Scheduled self-verification: a low-priority thread that verifies the ledger when the tap
//! starts and then at an interval, and hands each result to the recorder, which records it as
//! a `system.verify` event (and an `alert` when the ledger does not verify). The tap holds no
//! MAC seed, so it checks the chain, segment continuity and permissions, and the signed
//! checkpoints (local and anchored); `mcptrail verify --seed` adds the MACs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mcptrail_ledger::{verify, Verdict, VerifyOptions};

/// The result of one self-check.
#[derive(Debug, Clone)]
pub struct SelfCheck {
    /// Intact, tampered or cannot verify; `None` when verification itself failed (I/O).
    pub verdict: Option<Verdict>,
    /// Records checked.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Signed checkpoints that matched.
    pub checkpoints_verified: u64,
    /// Problems found (the first few, as text, with their class).
    pub problems: Vec<(String, String)>,
    /// Total number of problems.
    pub problem_count: usize,
    /// What could not be checked, or the error.
    pub unchecked: Vec<String>,
    /// How long it took.
    pub duration: Duration,
}

/// Handle that stops the self-check thread when dropped.
#[derive(Debug)]
pub struct SelfChecker {
    _stop: Sender<()>,
    /// Results, one per run.
    pub results: Receiver<SelfCheck>,
}

/// Start checking `data_dir` now and every `interval`. `None` interval: not at all.
pub fn spawn(
    data_dir: PathBuf,
    anchor_dirs: Vec<PathBuf>,
    interval: Option<Duration>,
) -> SelfChecker {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (tx, rx) = crossbeam_channel::bounded(4);
    if let Some(interval) = interval {
        let spawned = std::thread::Builder::new()
            .name("mcptrail-self-verify".into())
            .spawn(move || {
                crate::run_in_background();
                loop {
                    let result = check(&data_dir, &anchor_dirs);
                    if tx.send(result).is_err() {
                        return;
                    }
                    match stop_rx.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("mcptrail: warning: the scheduled self-verification could not start: {e}");
        }
    }
    SelfChecker {
        _stop: stop_tx,
        results: rx,
    }
}

/// One verification of the ledger, as the tap can do it (no MAC seed).
pub fn check(data_dir: &std::path::Path, anchor_dirs: &[PathBuf]) -> SelfCheck {
    let started = Instant::now();
    let opts = VerifyOptions {
        anchor_dirs: anchor_dirs.to_vec(),
        skip_macs: true,
        ..VerifyOptions::default()
    };
    match verify(data_dir, &opts) {
        Ok(r) => SelfCheck {
            verdict: Some(r.verdict),
            records: r.records,
            bytes: r.bytes,
            checkpoints_verified: r.checkpoints_verified,
            problems: r
                .problems
                .iter()
                .take(5)
                .map(|p| (p.class().to_string(), p.to_string()))
                .collect(),
            problem_count: r.problems.len(),
            unchecked: r.unchecked,
            duration: started.elapsed(),
        },
        Err(e) => SelfCheck {
            verdict: None,
            records: 0,
            bytes: 0,
            checkpoints_verified: 0,
            problems: Vec::new(),
            problem_count: 0,
            unchecked: vec![format!("verification failed: {e}")],
            duration: started.elapsed(),
        },
    }
}
