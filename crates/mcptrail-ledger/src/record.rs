//! The integrity fields of a stored line, read without parsing the whole event, and the
//! record hash that the chain, the Merkle tree and the MAC all use.
//!
//! A stored line is `{"schema_version":…,"event_id":…,"seq":N,…,"prev_hash":"<64 hex>"}`,
//! optionally followed by `,"mac":"<epoch>:<64 hex>"` before the closing brace; the first
//! record of an epoch also carries the tag that closed the previous epoch:
//! `"mac":"<epoch>:<64 hex>:<64 hex>"`.
//!
//! The *body* of a line is the line without its `mac` member. The *record hash* is the RFC 9162
//! leaf hash of the body, `SHA-256(0x00 ‖ body)`: it is the next record's `prev_hash`, the
//! record's Merkle leaf, and what the MAC authenticates (`HMAC-SHA256(epoch key, record
//! hash)`). One SHA-256 pass per line gives all three. The MAC member stays outside what it
//! authenticates; a forged or altered MAC fails its own check, and a dropped one is reported
//! as missing.
//!
//! The layout reader is only a fast path: a line it does not recognise is handed to the full
//! JSON parser, and since every byte of the body is covered by the chain, the MACs and the
//! checkpoints, a line that merely looks right cannot pass verification unless it is what the
//! writer wrote.

use sha2::{Digest, Sha256};

const SEQ_KEY: &[u8] = b",\"seq\":";
const PREV_HASH_KEY: &[u8] = b",\"prev_hash\":\"";
const MAC_KEY: &[u8] = b",\"mac\":\"";
/// `seq` is the third member; it starts within this many bytes of a well-formed line.
const SEQ_WINDOW: usize = 160;

/// The integrity members of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordFields {
    pub seq: u64,
    pub prev_hash: [u8; 32],
    /// `(epoch, tag)` when the record carries a MAC.
    pub mac: Option<(u64, [u8; 32])>,
    /// The previous epoch's closing tag, on the first record of an epoch.
    pub transition: Option<[u8; 32]>,
    /// Length of the line up to (not including) the `,"mac":…` member, or the whole line
    /// without its closing brace when there is no MAC.
    pub prefix_len: usize,
}

/// Read the integrity members from the layout the ledger writes; `None` when the line does
/// not have it (the caller then falls back to a full parse).
pub(crate) fn read_fields(line: &[u8]) -> Option<RecordFields> {
    let body_end = line.len().checked_sub(1)?;
    if line.first() != Some(&b'{') || line[body_end] != b'}' {
        return None;
    }
    // Optional MAC member at the very end.
    let (prefix_len, mac, transition) = match read_mac(&line[..body_end]) {
        Some((start, epoch, tag, transition)) => (start, Some((epoch, tag)), transition),
        None => (body_end, None, None),
    };
    let prefix = &line[..prefix_len];
    // `,"prev_hash":"<64 hex>"` ends the prefix.
    let hex_start = prefix.len().checked_sub(65)?;
    if prefix[prefix.len() - 1] != b'"' || !prefix[..hex_start].ends_with(PREV_HASH_KEY) {
        return None;
    }
    let prev_hash = decode_hex32(&prefix[hex_start..hex_start + 64])?;
    let window = &prefix[..prefix.len().min(SEQ_WINDOW)];
    let at = seq_finder().find(window)? + SEQ_KEY.len();
    let digits = prefix[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 20 || prefix.get(at + digits) != Some(&b',') {
        return None;
    }
    let seq = std::str::from_utf8(&prefix[at..at + digits])
        .ok()?
        .parse()
        .ok()?;
    Some(RecordFields {
        seq,
        prev_hash,
        mac,
        transition,
        prefix_len,
    })
}

/// `,"mac":"<epoch>:<64 hex>[:<64 hex>]"` at the end of `body` (the line without its last
/// `}`): where it starts, the epoch, the tag and the transition tag.
#[allow(clippy::type_complexity)]
fn read_mac(body: &[u8]) -> Option<(usize, u64, [u8; 32], Option<[u8; 32]>)> {
    let end = body.len().checked_sub(1)?;
    if body[end] != b'"' {
        return None;
    }
    let last = decode_hex32(&body[end.checked_sub(64)?..end])?;
    let c1 = end.checked_sub(65)?;
    if body[c1] != b':' {
        return None;
    }
    // A second tag before it (`…:<tag>:<transition>"`)? Only hex digits can stand there.
    let first = c1
        .checked_sub(65)
        .filter(|&c0| body[c0] == b':')
        .and_then(|c0| Some((c0, decode_hex32(&body[c0 + 1..c1])?)));
    let (colon, tag, transition) = match first {
        Some((c0, tag)) => (c0, tag, Some(last)),
        None => (c1, last, None),
    };
    let digits = body[..colon]
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let epoch_start = colon - digits;
    if !body[..epoch_start].ends_with(MAC_KEY) {
        return None;
    }
    let epoch = std::str::from_utf8(&body[epoch_start..colon])
        .ok()?
        .parse()
        .ok()?;
    Some((epoch_start - MAC_KEY.len(), epoch, tag, transition))
}

/// The record hash of a line whose body is `line[..prefix_len]` followed by `}` (what
/// [`read_fields`] reports as `prefix_len`, with or without a MAC member).
pub(crate) fn hash_record(line: &[u8], prefix_len: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(&line[..prefix_len]);
    h.update(b"}");
    h.finalize().into()
}

/// The record hash of any stored line (without its `\n`): `SHA-256(0x00 ‖ body)`, where the
/// body is the line without a well-formed trailing `mac` member, or the whole line when it
/// has none (or is not in the ledger's layout at all).
pub fn record_hash(line: &[u8]) -> [u8; 32] {
    match line
        .split_last()
        .filter(|(last, _)| **last == b'}')
        .and_then(|(_, body)| read_mac(body))
    {
        Some((prefix_len, ..)) => hash_record(line, prefix_len),
        None => {
            let mut h = Sha256::new();
            h.update([LEAF_PREFIX]);
            h.update(line);
            h.finalize().into()
        }
    }
}

/// The RFC 9162 leaf-hash prefix.
const LEAF_PREFIX: u8 = 0x00;

/// The searcher for `,"seq":`, built once (building one costs more than a search).
fn seq_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(SEQ_KEY))
}

/// Lower-case hex digit values; 0xff for anything else.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

pub(crate) fn decode_hex32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0xf);
    }
    // Valid digits are below 16; 0xff marks anything else.
    (bad & 0xf0 == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn reads_lines_with_and_without_mac() {
        let plain = format!(
            r#"{{"schema_version":"1","event_id":"x","seq":42,"time":"t","prev_hash":"{H}"}}"#
        );
        let f = read_fields(plain.as_bytes()).unwrap();
        assert_eq!((f.seq, f.mac, f.prefix_len), (42, None, plain.len() - 1));
        assert_eq!(hex::encode(f.prev_hash), H);

        let body = plain.clone();
        let with = format!("{},\"mac\":\"17:{H}\"}}", &plain[..plain.len() - 1]);
        let f = read_fields(with.as_bytes()).unwrap();
        assert_eq!(f.seq, 42);
        assert_eq!(f.mac.map(|m| m.0), Some(17));
        assert_eq!(f.transition, None);
        let t = "ff".repeat(32);
        let first = format!("{},\"mac\":\"18:{H}:{t}\"}}", &plain[..plain.len() - 1]);
        let g = read_fields(first.as_bytes()).unwrap();
        assert_eq!(g.mac, Some((18, f.mac.unwrap().1)));
        assert_eq!(g.transition, Some([0xff; 32]));
        assert_eq!(g.prefix_len, f.prefix_len);
        assert_eq!(&with[..f.prefix_len], &plain[..plain.len() - 1]);
        // The record hash is the leaf hash of the body, whether or not a MAC is attached.
        let leaf = |b: &[u8]| -> [u8; 32] {
            Sha256::new()
                .chain_update([0u8])
                .chain_update(b)
                .finalize()
                .into()
        };
        assert_eq!(
            hash_record(with.as_bytes(), f.prefix_len),
            leaf(body.as_bytes())
        );
        assert_eq!(record_hash(with.as_bytes()), leaf(body.as_bytes()));
        assert_eq!(record_hash(first.as_bytes()), leaf(body.as_bytes()));
        assert_eq!(record_hash(plain.as_bytes()), leaf(plain.as_bytes()));
        // A line outside the layout: the whole line, unless a well-formed MAC member ends it.
        assert_eq!(record_hash(b"not json"), leaf(b"not json"));
        let odd = format!(r#"{{"x":1,"mac":"3:{H}"}}"#);
        assert_eq!(record_hash(odd.as_bytes()), leaf(br#"{"x":1}"#));
    }

    #[test]
    fn other_layouts_are_left_to_the_full_parser() {
        for bad in [
            "".to_string(),
            "{}".to_string(),
            format!(r#"{{"seq":1,"prev_hash":"{H}"}}"#),
            format!(r#"{{"a":"b","seq":x,"prev_hash":"{H}"}}"#),
            format!(r#"{{"a":"b","seq":1,"prev_hash":"{}"}}"#, &H[1..]),
            format!(r#"{{"a":"b","seq":1,"prev_hash":"{}"}}"#, H.to_uppercase()),
            format!(r#"{{"a":"b","seq":1,"prev_hash":"{H}","mac":"1:{H}""#),
        ] {
            let got = read_fields(bad.as_bytes());
            assert!(
                got.is_none() || bad.starts_with(r#"{"seq""#),
                "{bad}: {got:?}"
            );
        }
        // A MAC member that is not well formed is not a MAC: the line is not in the layout.
        let odd = format!(r#"{{"a":"b","seq":1,"prev_hash":"{H}","mac":"x:{H}"}}"#);
        assert!(read_fields(odd.as_bytes()).is_none());
    }
}
