//! The protobuf wire format, as much of it as OTLP export needs: a writer that encodes the
//! `opentelemetry.proto` messages straight from the events (no intermediate structs, no
//! code generation, no prost/tonic tree), and a reader for the one answer we parse, the
//! `partial_success` of an `Export*ServiceResponse`.
//!
//! Field numbers follow `opentelemetry/proto/{common,resource,trace,metrics,logs}/v1/*.proto`
//! and `collector/*/v1/*_service.proto` (OTLP 1.x); the constants below name them. Nested
//! messages are written in place: a one-byte length placeholder is patched afterwards and the
//! body shifted only when it is 128 bytes or longer (varints stay minimal, as decoders expect).

/// Wire type of varints.
const VARINT: u8 = 0;
/// Wire type of `fixed64` and `double`.
const I64: u8 = 1;
/// Wire type of strings, bytes, nested messages and packed repeated fields.
const LEN: u8 = 2;
/// Wire type of `fixed32`.
const I32: u8 = 5;

/// A growing protobuf message.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    /// A `string` field, omitted when empty (the proto3 default).
    pub(crate) fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.string_always(field, s);
        }
    }

    /// A `string` field even when empty (a oneof member must be present to be set).
    pub(crate) fn string_always(&mut self, field: u32, s: &str) {
        self.bytes_always(field, s.as_bytes());
    }

    /// A `bytes` field, omitted when empty.
    pub(crate) fn bytes(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.bytes_always(field, b);
        }
    }

    fn bytes_always(&mut self, field: u32, b: &[u8]) {
        self.tag(field, LEN);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// A `string` field (even when empty) whose value is `pieces` one after the other, so
    /// that callers need not build the string first (the caller guarantees they are UTF-8
    /// together, as `&str` pieces are).
    pub(crate) fn string_pieces(&mut self, field: u32, pieces: &[&[u8]]) {
        self.tag(field, LEN);
        self.varint(pieces.iter().map(|p| p.len() as u64).sum());
        for p in pieces {
            self.buf.extend_from_slice(p);
        }
    }

    /// A `uint32`/`uint64`/enum field, omitted when zero.
    pub(crate) fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, VARINT);
            self.varint(v);
        }
    }

    /// An `int64` field (two's complement varint) even when zero.
    pub(crate) fn int64_always(&mut self, field: u32, v: i64) {
        self.tag(field, VARINT);
        self.varint(v as u64);
    }

    /// A `fixed64` field, omitted when zero.
    pub(crate) fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, I64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// An `sfixed64` field even when zero (oneof member).
    pub(crate) fn sfixed64_always(&mut self, field: u32, v: i64) {
        self.tag(field, I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `double` field even when zero (oneof or `optional` member).
    pub(crate) fn double_always(&mut self, field: u32, v: f64) {
        self.tag(field, I64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A packed `repeated fixed64`.
    pub(crate) fn packed_fixed64(&mut self, field: u32, vs: &[u64]) {
        if vs.is_empty() {
            return;
        }
        self.tag(field, LEN);
        self.varint((vs.len() * 8) as u64);
        for v in vs {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A packed `repeated double`.
    pub(crate) fn packed_double(&mut self, field: u32, vs: &[f64]) {
        if vs.is_empty() {
            return;
        }
        self.tag(field, LEN);
        self.varint((vs.len() * 8) as u64);
        for v in vs {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A nested message written by `body`.
    pub(crate) fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        self.tag(field, LEN);
        self.buf.push(0);
        let start = self.buf.len();
        body(self);
        let len = self.buf.len() - start;
        if len < 0x80 {
            self.buf[start - 1] = len as u8;
            return;
        }
        let mut v = [0u8; 10];
        let mut n = 0;
        let mut rest = len as u64;
        while rest >= 0x80 {
            v[n] = (rest as u8) | 0x80;
            rest >>= 7;
            n += 1;
        }
        v[n] = rest as u8;
        // Make room for the n more length bytes and move the body up by n.
        let end = self.buf.len();
        self.buf.resize(end + n, 0);
        self.buf.copy_within(start..end, start + n);
        self.buf[start - 1..start + n].copy_from_slice(&v[..=n]);
    }

    // ---- common.proto: KeyValue { key = 1; AnyValue value = 2 } ----
    // AnyValue { string_value = 1; bool_value = 2; int_value = 3; double_value = 4;
    //            array_value = 5 (ArrayValue { repeated AnyValue values = 1 }) }

    /// A `KeyValue` with a string value, as repeated field `field`.
    pub(crate) fn kv_str(&mut self, field: u32, key: &str, value: &str) {
        self.message(field, |w| {
            w.string(1, key);
            w.message(2, |v| v.string_always(1, value));
        });
    }

    /// A `KeyValue` with an integer value.
    pub(crate) fn kv_int(&mut self, field: u32, key: &str, value: i64) {
        self.message(field, |w| {
            w.string(1, key);
            w.message(2, |v| v.int64_always(3, value));
        });
    }

    /// A `KeyValue` with an array of strings.
    pub(crate) fn kv_str_array<S: AsRef<str>>(&mut self, field: u32, key: &str, values: &[S]) {
        self.message(field, |w| {
            w.string(1, key);
            w.message(2, |v| {
                v.message(5, |arr| {
                    for s in values {
                        arr.message(1, |item| item.string_always(1, s.as_ref()));
                    }
                })
            });
        });
    }
}

/// What an `Export*ServiceResponse` says: `partial_success { rejected_* = 1; error_message
/// = 2 }` (all three signals use the same numbers). An empty body is full success.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PartialSuccess {
    /// Items the receiver refused.
    pub rejected: i64,
    /// Why (or a warning when nothing was rejected).
    pub message: String,
}

/// Read the `partial_success` of an export response; `None` when the bytes are not a
/// protobuf message.
pub(crate) fn read_partial_success(body: &[u8]) -> Option<PartialSuccess> {
    let mut out = PartialSuccess::default();
    for (field, value) in fields(body)? {
        if let (1, Field::Len(inner)) = (field, value) {
            for (f, v) in fields(inner)? {
                match (f, v) {
                    (1, Field::Varint(n)) => out.rejected = n as i64,
                    (2, Field::Len(s)) => out.message = String::from_utf8_lossy(s).into_owned(),
                    _ => {}
                }
            }
        }
    }
    Some(out)
}

/// One decoded field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field<'a> {
    /// A varint (ints, bools, enums).
    Varint(u64),
    /// A length-delimited value (strings, bytes, messages).
    Len(&'a [u8]),
    /// A fixed32/fixed64 value (not needed by any reader here).
    Fixed,
}

/// The fields of one message, in order; `None` when the bytes are not a message.
pub(crate) fn fields(b: &[u8]) -> Option<Vec<(u32, Field<'_>)>> {
    let mut rest = b;
    let mut out = Vec::new();
    let varint = |rest: &mut &[u8]| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, r) = rest.split_first()?;
            *rest = r;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    };
    let take = |rest: &mut &'_ [u8], n: usize| -> Option<()> {
        if rest.len() < n {
            return None;
        }
        *rest = &rest[n..];
        Some(())
    };
    while !rest.is_empty() {
        let key = varint(&mut rest)?;
        let field = u32::try_from(key >> 3).ok()?;
        let value = match (key & 7) as u8 {
            VARINT => Field::Varint(varint(&mut rest)?),
            I64 => {
                take(&mut rest, 8)?;
                Field::Fixed
            }
            LEN => {
                let n = usize::try_from(varint(&mut rest)?).ok()?;
                if rest.len() < n {
                    return None;
                }
                let (v, r) = rest.split_at(n);
                rest = r;
                Field::Len(v)
            }
            I32 => {
                take(&mut rest, 4)?;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((field, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_nested_lengths_are_minimal() {
        let mut w = Writer::default();
        w.uint(1, 300);
        assert_eq!(w.buf, [0x08, 0xac, 0x02]);
        let mut w = Writer::default();
        w.message(2, |m| m.string(1, "a"));
        assert_eq!(w.buf, [0x12, 3, 0x0a, 1, b'a']);
        // A body of 200 bytes: a two-byte length, body intact after the shift.
        let mut w = Writer::default();
        let s = "x".repeat(197);
        w.message(3, |m| m.string(1, &s));
        assert_eq!(&w.buf[..3], &[0x1a, 0xc8, 0x01]);
        assert_eq!(w.buf.len(), 3 + 200);
        assert_eq!(&w.buf[3..6], &[0x0a, 0xc5, 0x01]);
        assert!(w.buf[6..].iter().all(|b| *b == b'x'));
    }

    #[test]
    fn pieces_make_one_string_and_long_bodies_keep_their_bytes() {
        let mut w = Writer::default();
        w.string_pieces(12, &[b"mcptrail.", b"alert"]);
        assert_eq!(w.buf, b"\x62\x0emcptrail.alert");
        // Nested bodies across the one-, two- and three-byte length boundaries.
        for n in [126usize, 127, 128, 16_381, 16_382, 16_383, 20_000] {
            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut w = Writer::default();
            w.uint(1, 7);
            w.message(2, |m| m.buf.extend_from_slice(&body));
            let f = fields(&w.buf).unwrap();
            assert_eq!(
                f,
                vec![(1, Field::Varint(7)), (2, Field::Len(&body[..]))],
                "{n}"
            );
        }
    }

    #[test]
    fn partial_success_is_read() {
        // partial_success { rejected_spans: 2, error_message: "no" }
        let mut w = Writer::default();
        w.message(1, |p| {
            p.uint(1, 2);
            p.string(2, "no");
        });
        assert_eq!(
            read_partial_success(&w.buf),
            Some(PartialSuccess {
                rejected: 2,
                message: "no".into()
            })
        );
        assert_eq!(read_partial_success(&[]), Some(PartialSuccess::default()));
        assert_eq!(read_partial_success(&[0x0a, 0x05, 1]), None);
    }
}
