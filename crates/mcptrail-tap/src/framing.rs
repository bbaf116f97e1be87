//! Splitting a byte stream into newline-delimited messages (MCP stdio framing), with a hard
//! cap on how much of one message is buffered; [`MessageCopy`] is that capped buffer on its
//! own, for transports that delimit messages themselves (HTTP bodies, SSE events). Bytes are
//! never altered here: the relay forwards them itself; this only makes copies for the
//! recorder.

use std::time::{Instant, SystemTime};

use mcptrail_event::{Direction, Flag, HttpDetail, UserIdentity};
use sha2::{Digest, Sha256};

/// Bytes of a message kept when it is too large to parse.
const PREFIX_KEEP: usize = 4096;

/// One message as seen on the wire.
#[derive(Debug)]
pub struct Frame {
    /// Which way it travelled.
    pub direction: Direction,
    /// When its last byte was read (monotonic, for durations).
    pub at: Instant,
    /// When its last byte was read (wall clock, for the event time).
    pub wall: SystemTime,
    /// What was read.
    pub body: FrameBody,
    /// It could not be delivered to the other side.
    pub undelivered: bool,
    /// Number of the read (per direction, from 1) that brought its last byte.
    pub chunk: u64,
    /// What an HTTP tap knows about the message beyond its bytes (none for stdio).
    pub context: Option<Box<FrameContext>>,
}

impl Frame {
    /// A message delimited by its transport (an HTTP body, an SSE event), read just now.
    pub fn message(direction: Direction, body: FrameBody, context: Option<FrameContext>) -> Self {
        Frame {
            direction,
            at: Instant::now(),
            wall: SystemTime::now(),
            body,
            undelivered: false,
            chunk: 0,
            context: context.map(Box::new),
        }
    }
}

/// Facts an HTTP tap establishes per message: who sent it (verified identity), the trace span
/// the tap opened for it, and the HTTP exchange it travelled in. Each one, when present,
/// replaces what the recorder would otherwise record for the events made from the frame.
#[derive(Debug, Clone, Default)]
pub struct FrameContext {
    /// The principal the request was authenticated as.
    pub user: Option<UserIdentity>,
    /// The span the tap opened for a request (responses reuse their request's span).
    pub trace: Option<TraceIds>,
    /// The HTTP exchange.
    pub http: Option<HttpDetail>,
    /// Flags for every event made from the frame (`synthesized`, `replayed`).
    pub flags: Vec<Flag>,
}

/// W3C trace context ids of one span, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits: the span the tap opened.
    pub span_id: String,
    /// 16 hex digits: the caller's span, when the request carried one.
    pub parent_span_id: Option<String>,
}

/// The content of a frame.
#[derive(Debug)]
pub enum FrameBody {
    /// A complete line (without `\n`).
    Line(Vec<u8>),
    /// A line that ended at EOF without `\n`.
    Unterminated(Vec<u8>),
    /// A line over the parse limit: only its size, hash and first bytes.
    TooLarge {
        /// Total bytes (without `\n`).
        size: u64,
        /// SHA-256 hex.
        sha256: String,
        /// First bytes.
        prefix: Vec<u8>,
    },
}

/// A copy of one message as its bytes arrive, buffering at most `max` bytes: past that, only
/// a streaming SHA-256, the size and the first bytes are kept.
#[derive(Debug)]
pub struct MessageCopy {
    max: usize,
    buf: Vec<u8>,
    /// Set once the message exceeded `max`: streaming digest instead of buffering.
    overflow: Option<(Sha256, u64)>,
}

impl MessageCopy {
    /// An empty copy that buffers at most `max` bytes.
    pub fn new(max: usize) -> Self {
        MessageCopy {
            max,
            buf: Vec::new(),
            overflow: None,
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        match &self.overflow {
            Some((_, n)) => *n,
            None => self.buf.len() as u64,
        }
    }

    /// The message as a frame body exactly as seen (whitespace kept), leaving the copy empty.
    pub fn take_exact(&mut self) -> FrameBody {
        if let Some((h, size)) = self.overflow.take() {
            let prefix = std::mem::take(&mut self.buf);
            return FrameBody::TooLarge {
                size,
                sha256: hex::encode(h.finalize()),
                prefix,
            };
        }
        FrameBody::Line(std::mem::take(&mut self.buf))
    }

    /// Nothing seen yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append bytes of the message.
    pub fn absorb(&mut self, chunk: &[u8]) {
        if let Some((h, n)) = &mut self.overflow {
            h.update(chunk);
            *n += chunk.len() as u64;
            return;
        }
        if self.buf.len() + chunk.len() > self.max {
            let mut h = Sha256::new();
            h.update(&self.buf);
            h.update(chunk);
            let n = (self.buf.len() + chunk.len()) as u64;
            if self.buf.len() < PREFIX_KEEP {
                let take = (PREFIX_KEEP - self.buf.len()).min(chunk.len());
                self.buf.extend_from_slice(&chunk[..take]);
            }
            self.buf.truncate(PREFIX_KEEP);
            self.overflow = Some((h, n));
        } else {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The message so far as a frame body, leaving the copy empty; `None` when it is only
    /// whitespace (keep-alives carry no message). A trailing `\r` is dropped.
    pub fn take(&mut self) -> Option<FrameBody> {
        if let Some((h, size)) = self.overflow.take() {
            let prefix = std::mem::take(&mut self.buf);
            return Some(FrameBody::TooLarge {
                size,
                sha256: hex::encode(h.finalize()),
                prefix,
            });
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(FrameBody::Line(line))
    }
}

/// Incremental splitter for one direction.
#[derive(Debug)]
pub struct LineSplitter {
    direction: Direction,
    copy: MessageCopy,
    /// Reads fed so far.
    chunks: u64,
}

impl LineSplitter {
    /// A splitter that buffers at most `max_message_bytes` of one line.
    pub fn new(direction: Direction, max_message_bytes: usize) -> Self {
        LineSplitter {
            direction,
            copy: MessageCopy::new(max_message_bytes),
            chunks: 0,
        }
    }

    /// Feed freshly read bytes; complete frames are passed to `emit`.
    pub fn feed(&mut self, mut data: &[u8], undelivered: bool, emit: &mut impl FnMut(Frame)) {
        self.chunks += 1;
        while !data.is_empty() {
            let nl = memchr::memchr(b'\n', data);
            let (chunk, rest, complete) = match nl {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &[][..], false),
            };
            self.copy.absorb(chunk);
            if complete {
                if let Some(body) = self.copy.take() {
                    emit(self.frame(body, undelivered));
                }
            }
            data = rest;
        }
        if self.copy.buf.capacity() > (1 << 20) && self.copy.buf.is_empty() {
            self.copy.buf = Vec::new();
        }
    }

    /// How many reads were fed: the `chunk` of frames the last `feed` emitted.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// End of stream: a pending partial line becomes an `Unterminated` frame.
    pub fn finish(&mut self, emit: &mut impl FnMut(Frame)) {
        if self.copy.overflow.is_some() {
            if let Some(body) = self.copy.take() {
                emit(self.frame(body, false));
            }
        } else if !self.copy.buf.iter().all(u8::is_ascii_whitespace) {
            let line = std::mem::take(&mut self.copy.buf);
            emit(self.frame(FrameBody::Unterminated(line), false));
        }
    }

    fn frame(&self, body: FrameBody, undelivered: bool) -> Frame {
        Frame {
            direction: self.direction,
            at: Instant::now(),
            wall: SystemTime::now(),
            body,
            undelivered,
            chunk: self.chunks,
            context: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<FrameBody> {
        let mut s = LineSplitter::new(Direction::ClientToServer, max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, false, &mut |f| out.push(f.body));
        }
        s.finish(&mut |f| out.push(f.body));
        out
    }

    fn lines(v: &[FrameBody]) -> Vec<String> {
        v.iter()
            .map(|b| match b {
                FrameBody::Line(l) => format!("L:{}", String::from_utf8_lossy(l)),
                FrameBody::Unterminated(l) => format!("U:{}", String::from_utf8_lossy(l)),
                FrameBody::TooLarge { size, prefix, .. } => {
                    format!("T:{size}:{}", String::from_utf8_lossy(prefix))
                }
            })
            .collect()
    }

    #[test]
    fn splits_across_reads_and_keeps_partial() {
        let out = split(
            &[b"{\"a\"", b":1}\n{\"b\":2}\r\n\n  \n{\"c\"", b":3}"],
            1 << 20,
        );
        assert_eq!(lines(&out), ["L:{\"a\":1}", "L:{\"b\":2}", "U:{\"c\":3}"]);
    }

    #[test]
    fn too_large_lines_are_digested_not_buffered() {
        let big = vec![b'x'; 10_000];
        let mut input = big.clone();
        input.extend_from_slice(b"\n{}\n");
        let out = split(&[&input[..3000], &input[3000..]], 5000);
        let expect_hash = hex::encode(Sha256::digest(&big));
        match &out[0] {
            FrameBody::TooLarge {
                size,
                sha256,
                prefix,
            } => {
                assert_eq!(*size, 10_000);
                assert_eq!(*sha256, expect_hash);
                assert_eq!(prefix.len(), PREFIX_KEEP);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lines(&out[1..]), ["L:{}"]);
    }
}
