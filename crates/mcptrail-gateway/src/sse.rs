//! An incremental Server-Sent Events parser for the recorder's copy of a stream (WHATWG HTML
//! §9.2.6): lines end in CRLF, LF or CR; `data` lines accumulate; a blank line dispatches.
//! Memory is bounded: one event's data is held up to the tap's message limit (past it, only
//! size, SHA-256 and prefix), other fields up to [`MAX_FIELD`] bytes, field names up to
//! [`MAX_NAME`]. The relayed bytes never pass through here.

use mcptrail_tap::{FrameBody, MessageCopy};

/// Longest `event`, `id` or `retry` value kept (longer ones are cut).
pub const MAX_FIELD: usize = 1024;
/// Longest field name recognised (longer lines are ignored, as an unknown field would be).
pub const MAX_NAME: usize = 16;

/// One dispatched event.
#[derive(Debug)]
pub struct SseEvent {
    /// `event:` type; `None` means the default, `message`.
    pub event: Option<String>,
    /// `id:` of this event, when it set one.
    pub id: Option<String>,
    /// The data lines joined with `\n`.
    pub data: FrameBody,
    /// Stream offset just past the blank line that dispatched it.
    pub end_offset: u64,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Reading a field name.
    Name,
    /// Just after `name:`; one leading space is skipped.
    ValueStart,
    /// Reading a value.
    Value,
    /// A comment or an over-long name: skip to end of line.
    Skip,
}

/// The parser. Feed bytes as they arrive; dispatched events are returned in order.
#[derive(Debug)]
pub struct SseParser {
    state: State,
    name: Vec<u8>,
    value: Vec<u8>,
    data: MessageCopy,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    after_cr: bool,
    offset: u64,
}

impl SseParser {
    /// A parser keeping at most `max_data` bytes of one event's data.
    pub fn new(max_data: usize) -> Self {
        SseParser {
            state: State::LineStart,
            name: Vec::new(),
            value: Vec::new(),
            data: MessageCopy::new(max_data),
            has_data: false,
            event: None,
            id: None,
            after_cr: false,
            offset: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Feed bytes; complete events are pushed to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Value {
                // Inside a value: take everything up to the end of the line at once (a
                // message's JSON is one long `data:` line).
                let end = memchr::memchr2(b'\r', b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n);
                if end > i {
                    self.value_run(&bytes[i..end]);
                    self.offset += (end - i) as u64;
                    i = end;
                    continue;
                }
            }
            let b = bytes[i];
            i += 1;
            self.offset += 1;
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue; // the LF of a CRLF
                }
            }
            match b {
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.end_line(out);
                }
                _ => self.byte(b),
            }
        }
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::LineStart => {
                if b == b':' {
                    self.state = State::Skip;
                } else {
                    self.name.clear();
                    self.name.push(b);
                    self.state = State::Name;
                }
            }
            State::Name => {
                if b == b':' {
                    self.start_value();
                    self.state = State::ValueStart;
                } else if self.name.len() < MAX_NAME {
                    self.name.push(b);
                } else {
                    self.state = State::Skip;
                }
            }
            State::ValueStart => {
                self.state = State::Value;
                if b != b' ' {
                    self.value_run(&[b]);
                }
            }
            State::Value => self.value_run(&[b]),
            State::Skip => {}
        }
    }

    fn start_value(&mut self) {
        self.value.clear();
        if self.name == b"data" {
            if self.has_data {
                self.data.absorb(b"\n");
            }
            self.has_data = true;
        }
    }

    fn value_run(&mut self, run: &[u8]) {
        if self.name == b"data" {
            self.data.absorb(run);
        } else {
            let room = MAX_FIELD.saturating_sub(self.value.len());
            self.value.extend_from_slice(&run[..run.len().min(room)]);
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        match self.state {
            State::LineStart => self.dispatch(out),
            State::Name => {
                // A field with no colon: the whole line is the name, the value is empty.
                self.start_value();
                self.finish_field();
            }
            State::ValueStart | State::Value => self.finish_field(),
            State::Skip => {}
        }
        self.state = State::LineStart;
    }

    fn finish_field(&mut self) {
        let value = String::from_utf8_lossy(&self.value).into_owned();
        match self.name.as_slice() {
            b"event" => self.event = Some(value),
            b"id" if !value.contains('\0') => self.id = Some(value),
            _ => {} // data (already absorbed), retry, unknown fields
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let id = self.id.take();
        if !self.has_data {
            return; // nothing was absorbed: the data copy is still empty
        }
        self.has_data = false;
        let data = self.data.take_exact();
        out.push(SseEvent {
            event,
            id,
            data,
            end_offset: self.offset,
        });
    }

    /// End of stream: an event that was never dispatched (no blank line after it) is returned
    /// as an `Unterminated` body. A client discards such an event; it is still evidence.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.state != State::LineStart {
            self.end_line(&mut Vec::new());
        }
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        let data = match self.data.take_exact() {
            FrameBody::Line(l) => FrameBody::Unterminated(l),
            other => other,
        };
        Some(SseEvent {
            event: self.event.take(),
            id: self.id.take(),
            data,
            end_offset: self.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<(Option<String>, Option<String>, String)> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        out.into_iter()
            .map(|e| {
                let data = match e.data {
                    FrameBody::Line(l) => String::from_utf8(l).unwrap(),
                    other => format!("{other:?}"),
                };
                (e.event, e.id, data)
            })
            .collect()
    }

    #[test]
    fn the_specs_examples() {
        let got = parse(&[b"data: YHOO\ndata: +2\ndata: 10\n\n"]);
        assert_eq!(got, [(None, None, "YHOO\n+2\n10".to_string())]);
        let got = parse(&[b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"]);
        assert_eq!(
            got,
            [
                (None, Some("1".into()), "first event".to_string()),
                (None, Some(String::new()), "second event".to_string()),
                (None, None, " third event".to_string()),
            ]
        );
        let got = parse(&[b"data\n\ndata\ndata\n\ndata:\n"]);
        assert_eq!(
            got,
            [(None, None, String::new()), (None, None, "\n".to_string())]
        );
    }

    #[test]
    fn line_endings_and_chunk_boundaries() {
        let stream =
            b"event: message\r\nid: 7\r\ndata: {\"a\":1}\r\n\r\nevent: endpoint\rdata: /m?x=1\r\r";
        let whole = parse(&[stream]);
        assert_eq!(
            whole,
            [
                (
                    Some("message".into()),
                    Some("7".into()),
                    "{\"a\":1}".to_string()
                ),
                (Some("endpoint".into()), None, "/m?x=1".to_string()),
            ]
        );
        for cut in 1..stream.len() {
            assert_eq!(
                parse(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse(&bytewise), whole);
    }

    #[test]
    fn end_offsets_point_past_the_blank_line() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        p.feed(b"event: endpoint\ndata: /x\n\ndata: y\n\n", &mut out);
        assert_eq!(out[0].end_offset, 26);
        assert_eq!(out[1].end_offset, 35);
    }

    #[test]
    fn oversized_data_is_digested_and_unterminated_tail_is_kept() {
        let mut p = SseParser::new(8);
        let mut out = Vec::new();
        p.feed(b"data: 0123456789abcdef\n\ndata: tail", &mut out);
        assert!(matches!(out[0].data, FrameBody::TooLarge { size: 16, .. }));
        let tail = p.finish().unwrap();
        assert!(matches!(tail.data, FrameBody::Unterminated(ref l) if l == b"tail"));
        assert!(p.finish().is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let mut p = SseParser::new(64);
        let mut out = Vec::new();
        let junk: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 256) as u8).collect();
        p.feed(&junk, &mut out);
        let _ = p.finish();
    }
}
