//! RFC 9162 Merkle tree hashing, proofs and their verification.
//!
//! The tree over `n` leaves is the one RFC 9162 §2.1.1 defines: split at the largest power of
//! two smaller than `n`, recurse, and never duplicate a node. Proof generation follows
//! §2.1.3.1 (`PATH`) and §2.1.4.1 (`SUBPROOF`); verification follows §2.1.3.2 and §2.1.4.2,
//! which need only sizes, roots and the proof.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Why a proof did not verify. Each names the first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The sizes of a consistency proof are not `0 < old <= new`.
    #[error("cannot prove consistency from size {old} to size {new}")]
    BadSizes {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    /// Two equal trees must have equal roots and an empty proof.
    #[error("equal tree sizes with different roots or a non-empty proof")]
    SameSizeMismatch,
    /// The proof leads to another root than the one given.
    #[error("the proof does not lead to the given root")]
    RootMismatch,
}

/// `SHA-256(0x00 ‖ data)`: the hash of a leaf (RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    crate::blocks::node_hash32(left, right)
}

/// The root of the empty tree: `SHA-256()` of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree hash (MTH) over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree over `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(index as usize, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    if d.len() <= 1 {
        return;
    }
    let k = split(d.len());
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// Verify that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves with `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The consistency proof from the tree of the first `old_size` leaves to the tree of all
/// `leaves`.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let new_size = leaves.len() as u64;
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::BadSizes {
            old: old_size,
            new: new_size,
        });
    }
    let mut proof = Vec::new();
    subproof(old_size as usize, leaves, true, &mut proof);
    Ok(proof)
}

fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Verify that the tree of `new_size` leaves with `new_root` extends the tree of `old_size`
/// leaves with `old_root` (nothing of the old tree changed, was removed or reordered).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::BadSizes {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::SameSizeMismatch)
        };
    }
    // When the old tree is a complete subtree on the left edge, its root is the first node.
    let seeded: Vec<Hash>;
    let path: &[Hash] = if old_size.is_power_of_two() {
        seeded = std::iter::once(*old_root)
            .chain(proof.iter().copied())
            .collect();
        &seeded
    } else {
        proof
    };
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if &f_r != old_root || &s_r != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first. Enough
/// to append leaves and compute the root at any size in O(log n) memory and time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, root)` of each perfect subtree, heights strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The roots of the perfect subtrees, largest first (what to persist besides the size).
    pub fn subtree_roots(&self) -> impl Iterator<Item = &Hash> {
        self.nodes.iter().map(|(_, h)| h)
    }

    /// Rebuild from a size and its subtree roots (largest first), as persisted. `None` when
    /// the number of roots does not fit the size (one per set bit of the size).
    pub fn from_parts(size: u64, roots: Vec<Hash>) -> Option<Self> {
        if roots.len() != size.count_ones() as usize {
            return None;
        }
        let heights = (0..u64::BITS).rev().filter(|b| size >> b & 1 == 1);
        Some(Frontier {
            size,
            nodes: heights.zip(roots).collect(),
        })
    }

    /// The root of the tree so far (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The leaves of the RFC 6962 / Certificate Transparency reference test tree.
    fn reference_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|x| leaf_hash(&hex::decode(x).unwrap()))
        .collect()
    }

    /// Roots of its first 1..=8 leaves, as published with the CT reference implementations
    /// (and recomputed independently with Python's hashlib when this test was written).
    const REFERENCE_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn reference_roots_batch_and_incremental() {
        let leaves = reference_leaves();
        let mut f = Frontier::new();
        assert_eq!(
            f.root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        for (i, want) in REFERENCE_ROOTS.iter().enumerate() {
            f.push(leaves[i]);
            assert_eq!(
                root(&leaves[..=i]),
                h(want),
                "batch root of {} leaves",
                i + 1
            );
            assert_eq!(f.root(), h(want), "incremental root of {} leaves", i + 1);
        }
    }

    #[test]
    fn reference_inclusion_proof() {
        // Leaf 0 of the 8-leaf tree (CT reference vector).
        let leaves = reference_leaves();
        let proof = inclusion_proof(&leaves, 0).unwrap();
        let want = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(proof, want.map(h));
        verify_inclusion(&leaves[0], 0, 8, &proof, &h(REFERENCE_ROOTS[7])).unwrap();
    }

    #[test]
    fn wrong_inputs_are_named() {
        let leaves = reference_leaves();
        let r = root(&leaves);
        let p = inclusion_proof(&leaves, 5).unwrap();
        assert_eq!(
            verify_inclusion(&leaves[5], 4, 8, &p, &r),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_inclusion(&leaves[5], 5, 8, &p[..2], &r),
            Err(ProofError::WrongLength)
        );
        assert_eq!(
            verify_inclusion(&leaves[5], 8, 8, &p, &r),
            Err(ProofError::IndexOutOfRange { index: 8, size: 8 })
        );
        let c = consistency_proof(&leaves, 3).unwrap();
        let old = root(&leaves[..3]);
        assert_eq!(verify_consistency(3, 8, &old, &r, &c), Ok(()));
        // Claiming another old size: the proof no longer fits (4 is a power of two, so the old
        // root is prepended and the path is one hash too long).
        assert_eq!(
            verify_consistency(4, 8, &old, &r, &c),
            Err(ProofError::WrongLength)
        );
        assert_eq!(
            verify_consistency(3, 8, &root(&leaves[..2]), &r, &c),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(0, 8, &old, &r, &c),
            Err(ProofError::BadSizes { old: 0, new: 8 })
        );
        assert_eq!(verify_consistency(8, 8, &r, &r, &[]), Ok(()));
        assert_eq!(
            verify_consistency(8, 8, &old, &r, &[]),
            Err(ProofError::SameSizeMismatch)
        );
    }

    fn leaves_of(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    proptest! {
        #[test]
        fn every_inclusion_proof_verifies_and_no_tampered_one_does(n in 1usize..70, flip in any::<(usize, u8)>()) {
            let leaves = leaves_of(n);
            let r = root(&leaves);
            for i in 0..n {
                let p = inclusion_proof(&leaves, i as u64).unwrap();
                prop_assert_eq!(verify_inclusion(&leaves[i], i as u64, n as u64, &p, &r), Ok(()));
                if !p.is_empty() {
                    let mut bad = p.clone();
                    let j = flip.0 % bad.len();
                    bad[j][usize::from(flip.1) % 32] ^= 1;
                    prop_assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &bad, &r).is_err());
                }
                let other = leaf_hash(b"forged");
                prop_assert!(verify_inclusion(&other, i as u64, n as u64, &p, &r).is_err());
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_a_rewritten_history_does_not(n in 1usize..70, old in 1usize..70, edit in any::<usize>()) {
            let old = old.min(n);
            let leaves = leaves_of(n);
            let p = consistency_proof(&leaves, old as u64).unwrap();
            let (old_root, new_root) = (root(&leaves[..old]), root(&leaves));
            prop_assert_eq!(verify_consistency(old as u64, n as u64, &old_root, &new_root, &p), Ok(()));
            // Rewrite one leaf of the old history in the new tree: no proof may connect them.
            let mut rewritten = leaves.clone();
            rewritten[edit % old] = leaf_hash(b"rewritten");
            let forged_root = root(&rewritten);
            let forged_proof = consistency_proof(&rewritten, old as u64).unwrap();
            prop_assert!(verify_consistency(old as u64, n as u64, &old_root, &forged_root, &forged_proof).is_err());
            prop_assert!(verify_consistency(old as u64, n as u64, &old_root, &forged_root, &p).is_err());
        }

        #[test]
        fn frontier_matches_the_batch_root(n in 0usize..300) {
            let leaves = leaves_of(n);
            let mut f = Frontier::new();
            for l in &leaves {
                f.push(*l);
            }
            prop_assert_eq!(f.size(), n as u64);
            prop_assert_eq!(f.root(), root(&leaves));
            let again = Frontier::from_parts(f.size(), f.subtree_roots().copied().collect()).unwrap();
            prop_assert_eq!(&again, &f);
            prop_assert!(Frontier::from_parts(f.size() + 1, f.subtree_roots().copied().collect()).is_none() || (n + 1).count_ones() == n.count_ones());
        }
    }
}
