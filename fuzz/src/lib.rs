//! The input layout of the `ledger_verify` target, shared by the target and the examples that
//! lay inputs out the same way (`gen_seeds` checks its seeds, `show_input` triages).
//!
//! The bytes up to the first `0xFF` are the first segment (seq 1); the bytes after it, if
//! there is a `0xFF`, a second segment named after the seq that follows the first segment's
//! complete lines (at least 2). A segment followed by another is sealed (0400), the last one
//! active (0600), as the writer leaves them.

/// `(first seq, bytes, mode)` of each segment an input stands for, in order.
pub fn segments_of(input: &[u8]) -> Vec<(u64, &[u8], u32)> {
    let (first, second) = match input.iter().position(|&b| b == 0xFF) {
        Some(i) => (&input[..i], Some(&input[i + 1..])),
        None => (input, None),
    };
    let lines = first.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut segs = vec![(1, first, if second.is_some() { 0o400 } else { 0o600 })];
    segs.extend(second.map(|b| ((lines + 1).max(2), b, 0o600)));
    segs
}

/// The segment file name for `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.jsonl")
}
