//! Events serialised ahead of their append.
//!
//! Serialising an event is most of the CPU an append costs, and it needs nothing from the
//! ledger: only `seq` and `prev_hash` do. A [`PreparedEvent`] is the event's stored line with
//! those two left open, so any thread can serialise while the writer is busy with the previous
//! batch's `fdatasync`; the append then only fills in the two fields, hashes the line and
//! writes it. The stored bytes are exactly what serialising the completed event would give.

use mcptrail_event::Event;

use crate::LedgerError;

/// `seq` as serialised with the placeholder 0: always the third member, after
/// `schema_version` and `event_id`, neither of which can contain it unescaped.
const SEQ_PLACEHOLDER: &[u8] = b",\"seq\":0,";
/// `prev_hash` as serialised with the placeholder "": always the last member.
const PREV_HASH_PLACEHOLDER: &[u8] = b",\"prev_hash\":\"\"}";

/// One event's stored line, but for `seq` and `prev_hash`. See the module doc.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    /// The line with `"seq":0` and `"prev_hash":""`.
    bytes: Vec<u8>,
    /// Index of the `0` of `"seq":0`.
    seq_digit: usize,
}

impl PreparedEvent {
    /// Serialise `event` (its `seq` and `prev_hash` are ignored and replaced at append time).
    pub fn new(mut event: Event) -> Result<Self, LedgerError> {
        Self::prepare(&mut event)
    }

    /// As [`new`](Self::new), leaving the event in place (with `seq` 0 and no `prev_hash`).
    pub fn prepare(event: &mut Event) -> Result<Self, LedgerError> {
        event.seq = 0;
        event.prev_hash.clear();
        let bytes = serde_json::to_vec(&*event)?;
        let seq_at =
            memchr::memmem::find(&bytes, SEQ_PLACEHOLDER).ok_or_else(|| layout_error("seq"))?;
        if !bytes.ends_with(PREV_HASH_PLACEHOLDER) {
            return Err(layout_error("prev_hash"));
        }
        Ok(PreparedEvent {
            seq_digit: seq_at + SEQ_PLACEHOLDER.len() - 2,
            bytes,
        })
    }

    /// Serialised size without `seq` and `prev_hash` (for batching decisions).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: an event has fields.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Append the finished line (without `\n`) to `out`.
    pub(crate) fn write_line(&self, seq: u64, prev_hash_hex: &[u8; 64], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes[..self.seq_digit]);
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        // Everything after the `0`, up to and including `"prev_hash":"`.
        out.extend_from_slice(&self.bytes[self.seq_digit + 1..self.bytes.len() - 2]);
        out.extend_from_slice(prev_hash_hex);
        out.extend_from_slice(b"\"}");
    }
}

fn layout_error(field: &str) -> LedgerError {
    LedgerError::Serialise(<serde_json::Error as serde::ser::Error>::custom(format!(
        "the serialised event does not have `{field}` where the ledger expects it"
    )))
}

/// Lower-case hex of a SHA-256, without allocating.
pub(crate) fn hex32(hash: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptrail_event::{EventKind, GENESIS_HASH};
    use serde_json::json;

    fn tricky() -> Event {
        let mut e = Event::new(EventKind::McpRequest);
        e.method = Some("tools/call".into());
        // Lookalikes of the placeholders inside user content must not confuse the splice.
        e.parameters_used = Some(json!({"seq": 0, "prev_hash": "", "x": ",\"seq\":0,"}));
        e.tool_invoked = Some("\"prev_hash\":\"\"}".into());
        e
    }

    #[test]
    fn the_spliced_line_is_the_serialised_completed_event() {
        for (seq, prev) in [(1u64, [0u8; 32]), (42, [0xab; 32]), (u64::MAX, [7; 32])] {
            let ev = tricky();
            let prepared = PreparedEvent::new(ev.clone()).unwrap();
            let mut line = Vec::new();
            prepared.write_line(seq, &hex32(&prev), &mut line);
            let mut done = ev;
            done.seq = seq;
            done.prev_hash = hex::encode(prev);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&done).unwrap()
            );
        }
    }

    #[test]
    fn hex32_matches_hex_encode() {
        let h: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(&hex32(&h)[..], hex::encode(h).as_bytes());
        assert_eq!(&hex32(&[0; 32])[..], GENESIS_HASH.as_bytes());
    }
}
