//! The mcptrail ledger: the single source of truth every other component reads from.
//!
//! # On-disk layout
//!
//! ```text
//! <data_dir>/ledger/                      0700
//!     LOCK                                0600  advisory lock serialising writers (flock)
//!     seg-00000000000000000001.jsonl      0400 once sealed, 0600 while active
//!     seg-00000000000000004097.jsonl      named after the seq of its first record
//!     quarantine/                         0700  torn tails moved out of a segment
//! <data_dir>/tombstones/                  0700
//!     ts-00000000000000000001-purged.note 0600  signed tombstone of a removed segment
//! ```
//!
//! A segment is a JSON Lines file: one [`mcptrail_event::Event`] per line, each line ended by
//! `\n`, written with `O_APPEND`. The name carries the `seq` of the first record, so a reader
//! finds the segment holding any `seq` with a binary search over file names.
//!
//! # Invariants (checked by [`verify`])
//!
//! 1. `seq` starts at 1 and increases by exactly one from line to line, across segments —
//!    or, once retention removed the oldest segments, at `P + 1`, where signed tombstones
//!    cover `1..=P` exactly, one per removed segment, without a gap (see below).
//! 2. Every record's `prev_hash` is the SHA-256 of the **exact stored bytes** of the previous
//!    line (without its `\n`); the first record's is [`mcptrail_event::GENESIS_HASH`]. Nothing
//!    is ever re-serialised before hashing, so a verifier needs only the bytes on disk.
//!    Modifying, deleting, inserting or reordering any line breaks the chain at that point.
//! 3. Only the newest segment is written to; rotation seals the old one (mode 0400, fsync)
//!    before the next record goes to a new segment, which chains to the sealed one.
//! 4. A record is *durable* once the `fdatasync` of its batch returned; the tap only counts
//!    such records as accepted. Group commit: one writer appends a whole batch with one
//!    `write` and one `fdatasync` while holding the lock, so batches from concurrent writer
//!    processes never interleave and the chain stays linear.
//!
//! # Crashes and torn lines
//!
//! A writer killed during `write` can leave an unterminated last line. The next writer that
//! takes the lock finds it, moves the torn bytes to `quarantine/` (never silently dropped),
//! truncates the segment back to the last complete line, and appends a
//! `system.ledger_recovered` event naming the segment, offset, length and SHA-256 of what it
//! moved (never silently kept either). Until then, [`verify`] reports the torn tail.
//! Readers treat an unterminated last line as not yet written.
//!
//! # Retention: tombstones
//!
//! [`remove_segments`] removes the oldest sealed segments (never the active one), each only
//! after checking it continues the chain and matches every local checkpoint inside it, and
//! leaves a [`Tombstone`]: a C2SP checkpoint at the segment's last seq, signed with the
//! checkpoint key, whose extension lines carry the chain head (`last-hash`), the Merkle tree's
//! right edge (`frontier`) and the MAC epoch there, the segment's SHA-256 and why it was
//! removed (format: the `tombstone` module). [`verify`] continues from the newest tombstone
//! (chain, tree, MAC epochs), reports the removed ranges, and reports a tombstone that is
//! forged, modified, renamed, not continuing the prefix, or contradicted by a segment still on
//! disk. The writer's tree, evidence bundles and consistency proofs continue from it as well.
//! Order of a removal: tombstone durable, then the segment deleted — a crash between leaves a
//! segment identical to its tombstone, which `verify` notes and the next removal deletes.
//!
//! # Threat model of this layer
//!
//! The hash chain detects any change to stored lines by someone who does not rewrite every
//! later line as well. It does not by itself stop an attacker with write access from
//! rewriting the whole tail consistently, nor detect truncation of the newest records: the
//! forward-secure MACs and signed, externally anchored checkpoints of the tamper-evidence
//! layer close those gaps.

mod anchor;
mod bundle;
mod checkpoint;
mod consistency;
mod error;
mod flush;
mod mac;
mod prepared;
mod private_file;
mod reader;
mod record;
mod removal;
mod segment;
pub mod tamper;
mod tombstone;
mod verify;
mod writer;

pub use anchor::{CheckpointAnchor, DirAnchor};
pub use bundle::{
    export_session, export_session_with, verify_bundle, write_bundle, Bundle, BundleError,
    BundleEvent, BundleProblem, BundleReport, Export, ExportOptions, KeySource, BUNDLE_FORMAT,
};
pub use checkpoint::{
    checkpoint_file_name, list_checkpoints, local_verifier, CheckpointPolicy, CHECKPOINT_DIR,
    KEY_DIR, VERIFIER_KEY_FILE,
};
pub use consistency::{check_consistency, prove_consistency, ConsistencyProof, CONSISTENCY_FORMAT};
pub use error::LedgerError;
pub use mac::{default_seed_path, MacPolicy, MAC_SEED_FILE, MAC_STATE_FILE};
pub use prepared::PreparedEvent;
pub use private_file::{create_private_dir, write_private_atomic, PrivateFileError};
pub use reader::{LedgerReader, RawRecord};
pub use record::record_hash;
pub use removal::{remove_segments, Removal, RemovalHook, RemovalOptions, RemovalStep, Removed};
pub use segment::{list_segments, SegmentInfo, LEDGER_DIR};
pub use tombstone::{
    list_tombstones, removed_through, tombstone_file_name, Tombstone, TombstoneState, TOMBSTONE_DIR,
};
pub use verify::{verify, Problem, Progress, RemovedSegment, Verdict, VerifyOptions, VerifyReport};
pub use writer::{AppendReceipt, Ledger, LedgerConfig};
