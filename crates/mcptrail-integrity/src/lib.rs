//! mcptrail tamper evidence (DESIGN.md §3): the pieces that let an auditor prove, offline,
//! that a ledger is complete and unaltered.
//!
//! This first part is the Merkle tree over a ledger's records, hashed as RFC 9162 §2.1
//! specifies (leaf `SHA-256(0x00 ‖ data)`, node `SHA-256(0x01 ‖ left ‖ right)`), with
//! inclusion and consistency proofs and their verification:
//!
//! - [`merkle::root`], [`merkle::inclusion_proof`], [`merkle::consistency_proof`] compute from
//!   all leaf hashes (what `verify` and evidence export have at hand);
//! - [`merkle::Frontier`] appends one leaf at a time in O(log n) memory (what a writer keeps
//!   to sign checkpoints);
//! - [`merkle::verify_inclusion`] and [`merkle::verify_consistency`] check proofs with
//!   nothing but the two tree sizes and roots (what an auditor's machine has).
//!
//! Checkpoints of the tree are published as C2SP `tlog-checkpoint` bodies in Ed25519 signed
//! notes ([`note`]), the format transparency logs use, so tools of that ecosystem can read
//! them. [`fsmac`] holds the forward-secure MAC key schedule. The ledger crate wires these into
//! its writer, `verify`, anchoring and evidence bundles.

pub mod blocks;
pub mod fsmac;
pub mod merkle;
pub mod note;

pub use fsmac::{EpochKey, EpochStart, MacError, Seed};
pub use merkle::{Hash, ProofError};
pub use note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
