//! Forward-secure MACs (the idea of Schneier–Kelsey secure audit logs and journald's Forward
//! Secure Sealing): every record is authenticated with HMAC-SHA256 under a key that evolves
//! one way at each epoch, the previous key being erased.
//!
//! ```text
//! seed ──► k0 = SHA-256("mcptrail-fsmac-v1 init" ‖ seed)
//!          k(i+1) = SHA-256("mcptrail-fsmac-v1 evolve" ‖ k(i))
//! mac(record) = HMAC-SHA256(k(epoch), exact stored bytes of the record)
//! ```
//!
//! The writer keeps only the current key (in a 0600 state file replaced atomically at each
//! epoch). The seed is written once, for the verifier, and is never needed by the writer
//! again: keep it off the machine. With the seed a verifier derives every epoch's key.
//!
//! What this gives: someone who takes the machine at epoch `e` learns `k(e)` but cannot
//! compute `k(e-1)` or earlier, so records of earlier epochs cannot be altered or forged
//! without the MACs failing. What it cannot give: records of the *current* epoch can be
//! rewritten with the current key, and the newest records can be deleted outright (a
//! truncated log still has valid MACs) — short epochs and signed checkpoints published off
//! the machine narrow those windows. The old key is overwritten in memory (zeroize) and its
//! file replaced; blocks of the old file may survive on the disk until reused.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

const STATE_MAGIC: &str = "mcptrail-fsmac-state v1";
const SEED_MAGIC: &str = "mcptrail-fsmac-seed v1";

/// What went wrong with MAC keys or their files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MacError {
    /// A key or seed file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A key or seed file is not in the expected format.
    #[error("{path} is not a valid {what} file: {why}")]
    Malformed {
        /// `seed` or `key state`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The operating system provided no randomness.
    #[error("no randomness available from the operating system")]
    NoRandomness,
}

/// The verification seed: from it, every epoch's key. Never stored with the writer.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Seed([u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(…)")
    }
}

impl Seed {
    /// A fresh random seed.
    pub fn generate() -> Result<Self, MacError> {
        let mut s = [0u8; 32];
        getrandom::fill(&mut s).map_err(|_| MacError::NoRandomness)?;
        Ok(Seed(s))
    }

    /// The key of epoch 0.
    pub fn first_key(&self) -> EpochKey {
        let mut h = Sha256::new();
        h.update(b"mcptrail-fsmac-v1 init");
        h.update(self.0);
        EpochKey::new(0, h.finalize().into())
    }

    /// Write the seed to a new file (mode 0600; an existing file is never overwritten).
    pub fn write_new(&self, path: &Path) -> Result<(), MacError> {
        let io = |source| MacError::Io {
            what: "cannot write the verification seed",
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut text = format!("{SEED_MAGIC}\n{}\n", hex_lower(&self.0));
        let r = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
        text.zeroize();
        r.map_err(io)
    }

    /// Read a seed file written by [`write_new`](Self::write_new).
    pub fn read(path: &Path) -> Result<Self, MacError> {
        let mut text = std::fs::read_to_string(path).map_err(|source| MacError::Io {
            what: "cannot read the verification seed",
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = parse_tagged(&text, SEED_MAGIC, false).map(|(_, _, k)| Seed(k));
        text.zeroize();
        parsed.map_err(|why| MacError::Malformed {
            what: "seed",
            path: path.to_path_buf(),
            why,
        })
    }
}

/// The key of one epoch. Deliberately not `PartialEq`: compare MACs with
/// [`verify`](Self::verify), which is constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochKey {
    epoch: u64,
    key: [u8; 32],
    /// HMAC keyed with `key`, ready to clone: saves hashing the key pads for every record.
    /// Replaced (its memory overwritten) whenever the key evolves.
    #[zeroize(skip)]
    keyed: HmacSha256,
    /// The same key for 32-byte messages (what the ledger MACs): two compressions a MAC.
    keyed32: crate::blocks::KeyedHmac32,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKey {{ epoch: {}, .. }}", self.epoch)
    }
}

impl EpochKey {
    fn new(epoch: u64, key: [u8; 32]) -> Self {
        EpochKey {
            epoch,
            keyed: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
            keyed32: crate::blocks::KeyedHmac32::new(&key),
            key,
        }
    }

    /// The epoch this key belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Move to the next epoch; the current key is overwritten.
    pub fn evolve(&mut self) {
        let mut h = Sha256::new();
        h.update(b"mcptrail-fsmac-v1 evolve");
        h.update(self.key);
        let next: [u8; 32] = h.finalize().into();
        self.key.zeroize();
        self.key = next;
        // Overwrites the old keyed state in place.
        self.keyed = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        self.keyed32 = crate::blocks::KeyedHmac32::new(&self.key);
        self.epoch += 1;
    }

    /// Evolve until `epoch` (a verifier walking forward; never backwards).
    pub fn advance_to(&mut self, epoch: u64) {
        while self.epoch < epoch {
            self.evolve();
        }
    }

    /// HMAC-SHA256 of `record` under this key.
    pub fn mac(&self, record: &[u8]) -> [u8; 32] {
        let mut m = self.keyed.clone();
        m.update(record);
        m.finalize().into_bytes().into()
    }

    /// The tag that closes this epoch: binds its last record (seq and record hash) under this
    /// epoch's key, so nobody holding only a later key can move the epoch boundary. The first
    /// record of the next epoch carries it.
    pub fn transition_tag(&self, last_seq: u64, last_record_hash: &[u8; 32]) -> [u8; 32] {
        let mut m = self.keyed.clone();
        m.update(&transition_message(self.epoch, last_seq, last_record_hash));
        m.finalize().into_bytes().into()
    }

    /// Check a transition tag (see [`transition_tag`](Self::transition_tag)), in constant time.
    pub fn verify_transition(
        &self,
        last_seq: u64,
        last_record_hash: &[u8; 32],
        tag: &[u8],
    ) -> bool {
        let mut m = self.keyed.clone();
        m.update(&transition_message(self.epoch, last_seq, last_record_hash));
        m.verify_slice(tag).is_ok()
    }

    /// HMAC-SHA256 of a 32-byte digest under this key (equal to [`mac`](Self::mac) of it,
    /// at a fraction of the cost: what the ledger MACs per record).
    pub fn mac32(&self, digest: &[u8; 32]) -> [u8; 32] {
        self.keyed32.mac(digest)
    }

    /// [`verify`](Self::verify) for a 32-byte digest, in constant time.
    pub fn verify32(&self, digest: &[u8; 32], tag: &[u8]) -> bool {
        self.keyed32.verify(digest, tag)
    }

    /// Check `tag` against the MAC of `record`, in constant time.
    pub fn verify(&self, record: &[u8], tag: &[u8]) -> bool {
        let mut m = self.keyed.clone();
        m.update(record);
        m.verify_slice(tag).is_ok()
    }

    /// Replace the writer's key state file with this key and where its epoch began (0600,
    /// written to a temporary file, fsynced, renamed over the old one). If a crash loses the
    /// rename, the older state comes back; a writer then sees records of a later epoch than
    /// its key and evolves forward (which it can; going back is what it cannot do).
    pub fn save(&self, path: &Path, since: EpochStart) -> Result<(), MacError> {
        let io = |source| MacError::Io {
            what: "cannot write the MAC key state",
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let mut text = format!(
            "{STATE_MAGIC}\nepoch {}\nsince {} {} {}\n{}\n",
            self.epoch,
            since.first_seq,
            since.unix_secs,
            since.transition.as_ref().map_or("-".to_string(), hex_lower),
            hex_lower(&self.key)
        );
        let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_data());
        text.zeroize();
        written.map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Load the writer's key state file.
    pub fn load(path: &Path) -> Result<(Self, EpochStart), MacError> {
        let mut text = std::fs::read_to_string(path).map_err(|source| MacError::Io {
            what: "cannot read the MAC key state",
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = parse_tagged(&text, STATE_MAGIC, true);
        text.zeroize();
        let (epoch, since, key) = parsed.map_err(|why| MacError::Malformed {
            what: "key state",
            path: path.to_path_buf(),
            why,
        })?;
        Ok((
            EpochKey::new(epoch.unwrap_or(0), key),
            since.unwrap_or_default(),
        ))
    }
}

/// Where an epoch began: the seq of its first record and the time (Unix seconds). The writer
/// starts the next epoch after so many records or so much time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochStart {
    /// The first record of the epoch (it may not be written yet).
    pub first_seq: u64,
    /// When the epoch began.
    pub unix_secs: u64,
    /// The previous epoch's [`EpochKey::transition_tag`], for the epoch's first record (`None`
    /// for epoch 0, or once that record is written by a writer that lost it).
    pub transition: Option<[u8; 32]>,
}

fn transition_message(epoch: u64, last_seq: u64, last_record_hash: &[u8; 32]) -> Vec<u8> {
    let mut msg = b"mcptrail-fsmac-v1 epoch-end".to_vec();
    msg.extend_from_slice(&epoch.to_be_bytes());
    msg.extend_from_slice(&last_seq.to_be_bytes());
    msg.extend_from_slice(last_record_hash);
    msg
}

fn hex_lower(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `MAGIC\n[epoch N\nsince SEQ SECS\n]<64 hex>\n`.
#[allow(clippy::type_complexity)]
fn parse_tagged(
    text: &str,
    magic: &str,
    with_epoch: bool,
) -> Result<(Option<u64>, Option<EpochStart>, [u8; 32]), &'static str> {
    let mut lines = text.lines();
    if lines.next() != Some(magic) {
        return Err("unknown header");
    }
    let (epoch, since) = if with_epoch {
        let epoch = lines
            .next()
            .and_then(|l| l.strip_prefix("epoch "))
            .and_then(|n| n.parse().ok())
            .ok_or("no epoch line")?;
        let since = lines
            .next()
            .and_then(|l| l.strip_prefix("since "))
            .and_then(|l| {
                let mut parts = l.split(' ');
                let first_seq = parts.next()?.parse().ok()?;
                let unix_secs = parts.next()?.parse().ok()?;
                let transition = match parts.next()? {
                    "-" => None,
                    h => Some(decode_hex32(h).ok()?),
                };
                Some(EpochStart {
                    first_seq,
                    unix_secs,
                    transition,
                })
            })
            .ok_or("no since line")?;
        (Some(epoch), Some(since))
    } else {
        (None, None)
    };
    let hex = lines.next().ok_or("no key line")?;
    if lines.next().is_some() {
        return Err("unexpected lines after the key");
    }
    Ok((epoch, since, decode_hex32(hex)?))
}

fn decode_hex32(hex: &str) -> Result<[u8; 32], &'static str> {
    if hex.len() != 64 {
        return Err("the key line is not 64 hex digits");
    }
    let mut key = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| "not hex")?;
        key[i] = u8::from_str_radix(s, 16).map_err(|_| "not hex")?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_verifier_derives_every_epoch_key_from_the_seed() {
        let seed = Seed::generate().unwrap();
        let mut writer = seed.first_key();
        let record = br#"{"seq":1}"#;
        let mut tags = Vec::new();
        for _ in 0..5 {
            tags.push((writer.epoch(), writer.mac(record)));
            writer.evolve();
        }
        let mut verifier = seed.first_key();
        for (epoch, tag) in &tags {
            verifier.advance_to(*epoch);
            assert!(verifier.verify(record, tag), "epoch {epoch}");
            assert!(!verifier.verify(br#"{"seq":2}"#, tag), "another record");
        }
        // The tag closing an epoch verifies under that epoch's key only, for that record only.
        let mut k0 = seed.first_key();
        let tag = k0.transition_tag(41, &[7; 32]);
        assert!(k0.verify_transition(41, &[7; 32], &tag));
        assert!(!k0.verify_transition(42, &[7; 32], &tag));
        assert!(!k0.verify_transition(41, &[8; 32], &tag));
        k0.evolve();
        assert!(!k0.verify_transition(41, &[7; 32], &tag));
        assert_ne!(k0.transition_tag(41, &[7; 32]), tag);
        // A key of a later epoch does not verify an earlier epoch's MAC.
        assert!(!writer.verify(record, &tags[0].1));
        assert_ne!(tags[0].1, tags[1].1);
    }

    #[test]
    fn state_and_seed_files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let seed = Seed::generate().unwrap();
        let seed_path = dir.path().join("seed");
        seed.write_new(&seed_path).unwrap();
        assert!(
            seed.write_new(&seed_path).is_err(),
            "a seed is never overwritten"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&seed_path), 0o600);
        let back = Seed::read(&seed_path).unwrap();
        assert_eq!(back.first_key().mac(b"r"), seed.first_key().mac(b"r"));

        let state = dir.path().join("mac.state");
        let mut k = seed.first_key();
        let since = EpochStart {
            first_seq: 7,
            unix_secs: 1_700_000_000,
            transition: Some(k.transition_tag(6, &[9; 32])),
        };
        k.save(&state, EpochStart::default()).unwrap();
        let old_text = std::fs::read_to_string(&state).unwrap();
        k.evolve();
        k.save(&state, since).unwrap();
        assert_eq!(mode(&state), 0o600);
        let new_text = std::fs::read_to_string(&state).unwrap();
        assert_ne!(
            old_text.lines().last(),
            new_text.lines().last(),
            "the old key is gone from the file"
        );
        let (loaded, loaded_since) = EpochKey::load(&state).unwrap();
        assert_eq!((loaded.epoch(), loaded.mac(b"r")), (k.epoch(), k.mac(b"r")));
        assert_eq!(loaded_since, since);
        assert!(!format!("{k:?}{seed:?}").contains(&new_text.lines().last().unwrap()[..16]));

        std::fs::write(&state, "garbage\n").unwrap();
        assert!(matches!(
            EpochKey::load(&state),
            Err(MacError::Malformed { .. })
        ));
    }
}
