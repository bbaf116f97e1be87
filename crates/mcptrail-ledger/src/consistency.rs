//! Consistency proofs between two signed checkpoints: the offline answer to "is today's log
//! an extension of the one I was shown back then?", for an auditor who kept an old
//! checkpoint and does not have (or want to read) the whole ledger.
//!
//! [`prove_consistency`] computes, from the ledger, the RFC 9162 consistency proof from an
//! old checkpoint's tree to the newest checkpoint's; [`check_consistency`] verifies both
//! signatures and the proof with nothing but the public key. A log truncated, rolled back or
//! forked since the old checkpoint cannot produce a valid proof.

use std::path::Path;

use mcptrail_integrity::merkle::{consistency_proof, verify_consistency, Hash};
use mcptrail_integrity::note::open as open_note;
use mcptrail_integrity::{Checkpoint, NoteVerifier};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{list_checkpoints, local_verifier, CHECKPOINT_DIR};
use crate::record::record_hash;
use crate::{LedgerError, LedgerReader};

/// Format tag of a serialised [`ConsistencyProof`].
pub const CONSISTENCY_FORMAT: &str = "mcptrail-consistency-proof v1";

/// Two signed checkpoints and the proof that the second extends the first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// Always [`CONSISTENCY_FORMAT`].
    pub format: String,
    /// The old checkpoint, verbatim (signed note).
    pub old: String,
    /// The new checkpoint, verbatim (signed note).
    pub new: String,
    /// The proof hashes, hex.
    pub proof: Vec<String>,
}

/// Prove that the ledger's newest checkpoint extends `old_note` (a checkpoint of this ledger
/// an auditor kept). The old note must verify with the ledger's key and its tree must be
/// what the ledger's first `size` records hash to — otherwise the log was rewritten since,
/// and the error says so.
pub fn prove_consistency(data_dir: &Path, old_note: &str) -> Result<ConsistencyProof, LedgerError> {
    let verifier = local_verifier(data_dir)?.ok_or_else(|| LedgerError::Key {
        path: data_dir.join("keys"),
        reason: "this ledger has no checkpoint key yet (no checkpoint was ever signed)".into(),
    })?;
    let old = parse(old_note, &verifier).map_err(|reason| LedgerError::Key {
        path: data_dir.join("keys"),
        reason: format!("the old checkpoint is not one of this ledger's: {reason}"),
    })?;
    let (new_size, new_path) = list_checkpoints(&data_dir.join(CHECKPOINT_DIR))?
        .pop()
        .ok_or_else(|| corrupt(data_dir, "no checkpoint in checkpoints/".into()))?;
    let new_note = std::fs::read_to_string(&new_path).map_err(LedgerError::io(&new_path))?;
    let new = parse(&new_note, &verifier)
        .map_err(|reason| corrupt(data_dir, format!("{}: {reason}", new_path.display())))?;
    if old.size > new_size {
        return Err(corrupt(
            data_dir,
            format!(
                "the old checkpoint covers {} records but the newest covers only {new_size}: the log was truncated or rolled back",
                old.size
            ),
        ));
    }
    if let Some(base) = crate::tombstone::removed_through(data_dir)? {
        return prove_after_removal(data_dir, &base, old_note, &old, new_note, &new);
    }
    let mut leaves: Vec<Hash> = Vec::with_capacity(new_size as usize);
    for rec in LedgerReader::open(data_dir, 1)? {
        if leaves.len() as u64 == new_size {
            break;
        }
        leaves.push(record_hash(&rec?.line));
    }
    if leaves.len() as u64 != new_size || mcptrail_integrity::merkle::root(&leaves) != new.root {
        return Err(corrupt(
            data_dir,
            "the ledger's records do not match its newest checkpoint: run `mcptrail verify`".into(),
        ));
    }
    if mcptrail_integrity::merkle::root(&leaves[..old.size as usize]) != old.root {
        return Err(corrupt(
            data_dir,
            format!(
                "the ledger's first {} records do not match the old checkpoint: the log was rewritten since (fork)",
                old.size
            ),
        ));
    }
    let proof =
        consistency_proof(&leaves, old.size).map_err(|e| corrupt(data_dir, e.to_string()))?;
    Ok(ConsistencyProof {
        format: CONSISTENCY_FORMAT.into(),
        old: old_note.to_string(),
        new: new_note,
        proof: proof.iter().map(hex::encode).collect(),
    })
}

/// [`prove_consistency`] once retention removed records `1..=P`: the tree of the removed
/// prefix comes from its tombstone, so the proof works for any old checkpoint of at least `P`
/// records (an older one covers records that are gone).
fn prove_after_removal(
    data_dir: &Path,
    base: &crate::Tombstone,
    old_note: &str,
    old: &Checkpoint,
    new_note: String,
    new: &Checkpoint,
) -> Result<ConsistencyProof, LedgerError> {
    let p = base.last_seq;
    if old.size < p {
        return Err(corrupt(
            data_dir,
            format!(
                "the old checkpoint covers {} records, but records 1..={p} were removed by retention (tombstones/): a consistency proof needs the tree at the old size; check the old checkpoint against the tombstone of the segment it ends in instead",
                old.size
            ),
        ));
    }
    let mut leaves: Vec<Hash> = Vec::new();
    for rec in LedgerReader::open(data_dir, p + 1)? {
        let rec = rec?;
        let seq = crate::record::read_fields(&rec.line).map_or(0, |f| f.seq);
        if seq <= p {
            continue;
        }
        if p + leaves.len() as u64 == new.size {
            break;
        }
        leaves.push(record_hash(&rec.line));
    }
    let tree = crate::bundle::Tree::with_base(&base.tree(), leaves.clone());
    if p + leaves.len() as u64 != new.size || tree.root() != new.root {
        return Err(corrupt(
            data_dir,
            "the ledger's records do not match its newest checkpoint: run `mcptrail verify`".into(),
        ));
    }
    let old_tree =
        crate::bundle::Tree::with_base(&base.tree(), leaves[..(old.size - p) as usize].to_vec());
    if old_tree.root() != old.root {
        return Err(corrupt(
            data_dir,
            format!(
                "the ledger's first {} records do not match the old checkpoint: the log was rewritten since (fork)",
                old.size
            ),
        ));
    }
    let proof = tree.consistency(old.size);
    Ok(ConsistencyProof {
        format: CONSISTENCY_FORMAT.into(),
        old: old_note.to_string(),
        new: new_note,
        proof: proof.iter().map(hex::encode).collect(),
    })
}

/// Check a consistency proof with the log's public key: both checkpoints are validly signed,
/// of the same log, and the new tree extends the old. Returns (old size, new size), or the
/// problem's class (`bad_signature`, `fork_or_rollback`, `unparseable`) and what is wrong.
pub fn check_consistency(
    p: &ConsistencyProof,
    verifier: &NoteVerifier,
) -> Result<(u64, u64), (&'static str, String)> {
    if p.format != CONSISTENCY_FORMAT {
        return Err(("unparseable", format!("unknown format {:?}", p.format)));
    }
    let old =
        parse(&p.old, verifier).map_err(|e| ("bad_signature", format!("old checkpoint: {e}")))?;
    let new =
        parse(&p.new, verifier).map_err(|e| ("bad_signature", format!("new checkpoint: {e}")))?;
    let proof = p
        .proof
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|v| <Hash>::try_from(v).ok())
                .ok_or_else(|| {
                    (
                        "unparseable",
                        format!("proof hash {h:?} is not 32 bytes of hex"),
                    )
                })
        })
        .collect::<Result<Vec<Hash>, _>>()?;
    verify_consistency(old.size, new.size, &old.root, &new.root, &proof).map_err(|e| {
        (
            "fork_or_rollback",
            format!(
                "the checkpoint at {} records does not extend the one at {}: {e} — the log was truncated, rolled back or forked in between",
                new.size, old.size
            ),
        )
    })?;
    Ok((old.size, new.size))
}

fn parse(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, String> {
    let cp = open_note(note, std::slice::from_ref(verifier))
        .and_then(Checkpoint::parse)
        .map_err(|e| e.to_string())?;
    if cp.origin != verifier.name() {
        return Err(format!(
            "origin {} is not this log's ({})",
            cp.origin,
            verifier.name()
        ));
    }
    Ok(cp)
}

fn corrupt(data_dir: &Path, reason: String) -> LedgerError {
    LedgerError::Corrupt {
        segment: data_dir.join(crate::LEDGER_DIR),
        offset: 0,
        reason,
    }
}
