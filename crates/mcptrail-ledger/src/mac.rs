//! The writer's forward-secure MAC key: where it lives, when it evolves, how writers share it.
//!
//! Files (under `<data_dir>/keys/`, 0700):
//! - `mac.state` (0600): the current epoch, where the epoch began and its key. Replaced
//!   atomically when the key evolves; the previous key is overwritten in memory and no longer
//!   in the file.
//! - the verification seed (default `mac.seed`, or `MacPolicy::seed_path`): written once,
//!   when the first MAC'd record is about to be written, and never read by a writer again.
//!   Move it off the machine: whoever holds it can forge MACs for every epoch.
//!
//! Several writer processes share the state under the ledger lock: before each batch a
//! writer checks whether the state file changed (inode) and reloads it. A writer whose state
//! is older than the newest record's epoch (a crash lost a rename) evolves forward to it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcptrail_integrity::fsmac::{EpochKey, EpochStart, Seed};

use crate::checkpoint::KEY_DIR;
use crate::segment::{ensure_private_dir, sync_dir};
use crate::LedgerError;

/// The writer's key state file, under [`KEY_DIR`].
pub const MAC_STATE_FILE: &str = "mac.state";
/// Default file name of the verification seed, under [`KEY_DIR`].
pub const MAC_SEED_FILE: &str = "mac.seed";

/// When the MAC key evolves (part of [`crate::LedgerConfig`]).
#[derive(Debug, Clone)]
pub struct MacPolicy {
    /// MAC every record (on by default).
    pub enabled: bool,
    /// Start a new epoch once this many records were written in the current one (checked
    /// between batches; 0: never by count).
    pub epoch_records: u64,
    /// Start a new epoch at the first batch this long after the current one began.
    pub epoch_interval: Duration,
    /// Where to write the verification seed when the key is created (default
    /// `<data_dir>/keys/mac.seed`). It must not exist yet.
    pub seed_path: Option<PathBuf>,
}

impl Default for MacPolicy {
    fn default() -> Self {
        MacPolicy {
            enabled: true,
            epoch_records: 100_000,
            epoch_interval: Duration::from_secs(60),
            seed_path: None,
        }
    }
}

/// Where the seed of `data_dir` is written by default.
pub fn default_seed_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_DIR).join(MAC_SEED_FILE)
}

/// The writer's current key, valid while it holds the lock.
pub(crate) struct MacKeeper {
    key: EpochKey,
    since: EpochStart,
    /// Identity of the state file we last read or wrote: another writer's rename changes it.
    file_id: (u64, u64),
}

impl MacKeeper {
    /// Make sure the key is the shared current one, evolving it when the policy says so.
    /// `tail_epoch` is the epoch of the newest record (`None`: no record carries a MAC yet),
    /// `tail` its seq and record hash; the batch starts at `tail.0 + 1`.
    pub(crate) fn sync(
        current: &mut Option<MacKeeper>,
        data_dir: &Path,
        policy: &MacPolicy,
        tail_epoch: Option<u64>,
        tail: (u64, [u8; 32]),
    ) -> Result<(), LedgerError> {
        let next_seq = tail.0 + 1;
        let path = data_dir.join(KEY_DIR).join(MAC_STATE_FILE);
        let on_disk = match std::fs::metadata(&path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LedgerError::io(&path)(e)),
        };
        if on_disk.is_none() || current.as_ref().map(|k| k.file_id) != on_disk {
            *current = None;
        }
        if current.is_none() {
            *current = Some(match on_disk {
                Some(_) => {
                    let (key, since) = EpochKey::load(&path).map_err(key_error(&path))?;
                    let m = std::fs::metadata(&path).map_err(LedgerError::io(&path))?;
                    MacKeeper {
                        key,
                        since,
                        file_id: (m.dev(), m.ino()),
                    }
                }
                None => {
                    if let Some(epoch) = tail_epoch {
                        return Err(LedgerError::Key {
                            path,
                            reason: format!(
                                "the MAC key state is missing but the ledger's records carry MACs up to epoch {epoch}; \
                                 restore the file from a backup of this machine, or move the ledger aside to start a new one \
                                 (a new key would make every later record fail verification against the existing seed)"
                            ),
                        });
                    }
                    Self::create(data_dir, policy, next_seq)?
                }
            });
        }
        let k = current.as_mut().expect("set above");
        if let Some(epoch) = tail_epoch {
            if k.key.epoch() < epoch {
                // A crash lost our last rename: catch up (one way, as always).
                // The epoch's first record, with its transition tag, is already written.
                k.key.advance_to(epoch);
                k.since = EpochStart {
                    first_seq: next_seq,
                    unix_secs: unix_now(),
                    transition: None,
                };
                k.save(&path)?;
            }
        }
        // Evolve only once the epoch holds a record (the newest one): its closing tag binds
        // that record, so the boundary cannot be moved by anyone holding only a later key.
        let written = next_seq.saturating_sub(k.since.first_seq);
        let age = unix_now().saturating_sub(k.since.unix_secs);
        if tail_epoch == Some(k.key.epoch())
            && written > 0
            && ((policy.epoch_records > 0 && written >= policy.epoch_records)
                || age >= policy.epoch_interval.as_secs())
        {
            let transition = k.key.transition_tag(tail.0, &tail.1);
            k.key.evolve();
            k.since = EpochStart {
                first_seq: next_seq,
                unix_secs: unix_now(),
                transition: Some(transition),
            };
            k.save(&path)?;
        }
        Ok(())
    }

    /// First use: a new seed for the verifier, the key of epoch 0 for the writer.
    fn create(
        data_dir: &Path,
        policy: &MacPolicy,
        next_seq: u64,
    ) -> Result<MacKeeper, LedgerError> {
        let dir = data_dir.join(KEY_DIR);
        ensure_private_dir(&dir)?;
        let seed_path = policy
            .seed_path
            .clone()
            .unwrap_or_else(|| default_seed_path(data_dir));
        if let Some(parent) = seed_path.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                ensure_private_dir(parent)?;
            }
        }
        let seed = Seed::generate().map_err(key_error(&seed_path))?;
        seed.write_new(&seed_path).map_err(|e| LedgerError::Key {
            path: seed_path.clone(),
            reason: format!(
                "{e} — a MAC key must be created (no key state yet) and its verification seed goes here; \
                 if this seed belongs to an earlier ledger, move it away first"
            ),
        })?;
        let mut k = MacKeeper {
            key: seed.first_key(),
            since: EpochStart {
                first_seq: next_seq,
                unix_secs: unix_now(),
                transition: None,
            },
            file_id: (0, 0),
        };
        drop(seed);
        k.save(&dir.join(MAC_STATE_FILE))?;
        sync_dir(&dir)?;
        Ok(k)
    }

    fn save(&mut self, path: &Path) -> Result<(), LedgerError> {
        self.key.save(path, self.since).map_err(key_error(path))?;
        let m = std::fs::metadata(path).map_err(LedgerError::io(path))?;
        self.file_id = (m.dev(), m.ino());
        Ok(())
    }

    /// The current key.
    pub(crate) fn key(&self) -> &EpochKey {
        &self.key
    }

    /// The closing tag of the previous epoch, which the first record of this one carries.
    pub(crate) fn transition(&self) -> Option<&[u8; 32]> {
        self.since.transition.as_ref()
    }
}

fn key_error(path: &Path) -> impl Fn(mcptrail_integrity::MacError) -> LedgerError + '_ {
    move |e| LedgerError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
