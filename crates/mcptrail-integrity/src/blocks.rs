//! SHA-256 of the fixed-size messages the ledger hashes once per record — an interior Merkle
//! node, an HMAC of a 32-byte digest — as one or two direct block compressions with the padding laid out in advance. Same results as the general hasher
//! (tested against it); a fraction of its per-call overhead, which for 33–65-byte messages is
//! most of the cost.

use sha2::compress256;
use sha2::digest::generic_array::GenericArray;
use zeroize::Zeroize;

/// SHA-256's initial state.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    compress256(state, &[*GenericArray::from_slice(block)]);
}

fn digest_of(state: [u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Write the SHA-256 length field (bits) into the last 8 bytes of a block.
fn set_len(block: &mut [u8; 64], message_bytes: u64) {
    block[56..].copy_from_slice(&(message_bytes * 8).to_be_bytes());
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the RFC 9162 node hash, in two compressions.
pub fn node_hash32(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut first = [0u8; 64];
    first[0] = 0x01;
    first[1..33].copy_from_slice(left);
    first[33..64].copy_from_slice(&right[..31]);
    let mut second = [0u8; 64];
    second[0] = right[31];
    second[1] = 0x80;
    set_len(&mut second, 65);
    let mut state = H0;
    compress(&mut state, &first);
    compress(&mut state, &second);
    digest_of(state)
}

/// HMAC-SHA256 with a 32-byte key, its inner and outer pads compressed once: a MAC of a
/// 32-byte message then costs two compressions. Zeroized when dropped or replaced.
#[derive(Clone, Zeroize)]
pub struct KeyedHmac32 {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl Drop for KeyedHmac32 {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl KeyedHmac32 {
    /// Prepare for `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut pad = [0x36u8; 64];
        for (p, k) in pad.iter_mut().zip(key) {
            *p ^= k;
        }
        let mut inner = H0;
        compress(&mut inner, &pad);
        for p in pad.iter_mut() {
            *p ^= 0x36 ^ 0x5c;
        }
        let mut outer = H0;
        compress(&mut outer, &pad);
        pad.zeroize();
        KeyedHmac32 { inner, outer }
    }

    /// HMAC-SHA256(key, message) for a 32-byte message.
    pub fn mac(&self, message: &[u8; 32]) -> [u8; 32] {
        // Inner: 64 bytes of pad already compressed, then message ‖ padding (96 bytes total).
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(message);
        block[32] = 0x80;
        set_len(&mut block, 96);
        let mut state = self.inner;
        compress(&mut state, &block);
        let inner = digest_of(state);
        block[..32].copy_from_slice(&inner);
        let mut state = self.outer;
        compress(&mut state, &block);
        digest_of(state)
    }

    /// Check `tag` against the MAC of `message`, in constant time.
    pub fn verify(&self, message: &[u8; 32], tag: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        tag.len() == 32 && bool::from(self.mac(message).ct_eq(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    proptest! {
        #[test]
        fn same_as_the_general_implementations(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), k in any::<[u8; 32]>()) {
            let mut node = vec![1u8];
            node.extend_from_slice(&a);
            node.extend_from_slice(&b);
            prop_assert_eq!(node_hash32(&a, &b), <[u8; 32]>::from(Sha256::digest(&node)));
            let mut m = <Hmac<Sha256>>::new_from_slice(&k).unwrap();
            m.update(&a);
            let want: [u8; 32] = m.finalize().into_bytes().into();
            let keyed = KeyedHmac32::new(&k);
            prop_assert_eq!(keyed.mac(&a), want);
            prop_assert!(keyed.verify(&a, &want));
            let mut wrong = want;
            wrong[31] ^= 1;
            prop_assert!(!keyed.verify(&a, &wrong));
            prop_assert!(!keyed.verify(&a, &want[..31]));
        }
    }
}
