//! Property tests of the SSE copy parser: however a stream is cut into reads, the same events
//! come out; well-formed events come out exactly as written; hostile bytes never panic it and
//! its offsets stay within what was fed.

use mcptrail_gateway::sse::{SseEvent, SseParser};
use mcptrail_tap::FrameBody;
use proptest::prelude::*;

/// (event type, id, data, end offset) per dispatched event.
type Parsed = Vec<(Option<String>, Option<String>, Vec<u8>, u64)>;

fn parse(chunks: &[&[u8]], max: usize) -> (Parsed, Option<Vec<u8>>) {
    let mut p = SseParser::new(max);
    let mut out: Vec<SseEvent> = Vec::new();
    for c in chunks {
        p.feed(c, &mut out);
    }
    let tail = p.finish().map(|e| body(e.data));
    let events = out
        .into_iter()
        .map(|e| (e.event, e.id, body(e.data), e.end_offset))
        .collect();
    (events, tail)
}

fn body(b: FrameBody) -> Vec<u8> {
    match b {
        FrameBody::Line(l) | FrameBody::Unterminated(l) => l,
        FrameBody::TooLarge { sha256, size, .. } => {
            format!("too-large:{size}:{sha256}").into_bytes()
        }
    }
}

fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for p in points {
        chunks.push(&bytes[at..p]);
        at = p;
    }
    chunks.push(&bytes[at..]);
    chunks
}

/// Bytes that look like SSE often: field names, separators and line endings mixed in.
fn sse_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: message".to_vec()),
        Just(b"id: 7".to_vec()),
        Just(b"retry: 10".to_vec()),
        Just(b": comment".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reads_can_be_cut_anywhere(bytes in sse_ish(), cuts in proptest::collection::vec(any::<usize>(), 0..8), small in any::<bool>()) {
        let max = if small { 16 } else { 1 << 20 };
        let whole = parse(&[&bytes], max);
        let pieces = cut(&bytes, &cuts);
        prop_assert_eq!(parse(&pieces, max), whole.clone());
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(parse(&bytewise, max), whole.clone());
        let mut last = 0;
        for e in &whole.0 {
            prop_assert!(e.3 >= last && e.3 <= bytes.len() as u64);
            last = e.3;
        }
    }

    #[test]
    fn well_formed_events_come_out_as_written(
        events in proptest::collection::vec(
            (proptest::collection::vec("[^\r\n]{0,40}", 1..4), proptest::option::of("[a-z]{1,8}"), proptest::option::of("[0-9a-f-]{1,12}")),
            0..10,
        ),
        crlf in any::<bool>(),
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut stream = String::new();
        let mut expect = Vec::new();
        for (lines, event, id) in &events {
            if let Some(ev) = event {
                stream.push_str(&format!("event: {ev}{nl}"));
            }
            if let Some(id) = id {
                stream.push_str(&format!("id: {id}{nl}"));
            }
            for l in lines {
                stream.push_str(&format!("data: {l}{nl}"));
            }
            stream.push_str(nl);
            expect.push((event.clone(), id.clone(), lines.join("\n").into_bytes()));
        }
        let (got, tail) = parse(&[stream.as_bytes()], 1 << 20);
        prop_assert!(tail.is_none());
        let got: Vec<_> = got.into_iter().map(|(e, i, d, _)| (e, i, d)).collect();
        prop_assert_eq!(got, expect);
    }
}
