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

/// Write the segments `input` stands for into `<data_dir>/ledger/` (created 0700), each with
/// its mode: what the examples verify. (The target keeps one scratch directory per process
/// and rewrites it in place instead.)
pub fn lay_out(input: &[u8], data_dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let ledger_dir = data_dir.join(mcptrail_ledger::LEDGER_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ledger_dir)?;
    for (first_seq, bytes, mode) in segments_of(input) {
        let path = ledger_dir.join(segment_name(first_seq));
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}
