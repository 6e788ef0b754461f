//! The LMTP byte framing, whatever the input and however TCP splits it: command lines until a
//! `DATA` line, then a body up to its final dot, then lines again. Fed whole and fed in chunks
//! (sizes from the input), the framing must give the same lines and bodies, within the limits.
//!
//! Input: byte 0 = max line (1..=64), byte 1 = body limit (0..=255), byte 2 = chunk size seed,
//! then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toxmail_bridge::postfix::lmtp::fuzzing::{Body, BodyDecoder, Line, LineFramer};

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Line(Line),
    Body(Body),
}

/// Runs the framing over `stream` cut into chunks of `chunk(round)` bytes.
fn frame(stream: &[u8], chunk: impl Fn(usize) -> usize, max_line: usize, limit: u64) -> Vec<Event> {
    let mut framer = LineFramer::new(max_line);
    let mut body: Option<BodyDecoder> = None;
    let mut events = Vec::new();
    let (mut at, mut round) = (0, 0);
    while at < stream.len() {
        let end = (at + chunk(round).max(1)).min(stream.len());
        round += 1;
        // Like the connection driver: everything read is offered until it is all consumed.
        let mut input = &stream[at..end];
        while !input.is_empty() {
            let consumed = match &mut body {
                Some(decoder) => {
                    let (n, done) = decoder.decode(input);
                    if let Some(done) = done {
                        events.push(Event::Body(done));
                        body = None;
                    }
                    n
                }
                None => {
                    let (n, line) = framer.decode(input);
                    if let Line::Complete(text) = &line
                        && text.eq_ignore_ascii_case(b"DATA")
                    {
                        body = Some(BodyDecoder::new(limit));
                    }
                    if line != Line::Incomplete {
                        events.push(Event::Line(line));
                    }
                    n
                }
            };
            assert!(consumed <= input.len());
            assert!(consumed > 0 || input.is_empty(), "no progress on {input:?}");
            input = &input[consumed..];
        }
        at = end;
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let [max_line, limit, seed, stream @ ..] = data else {
        return;
    };
    let max_line = usize::from(max_line % 64) + 1;
    let limit = u64::from(*limit);
    let whole = frame(stream, |_| stream.len(), max_line, limit);
    let seed = usize::from(*seed);
    let chunked = frame(stream, |i| (seed * (i + 7)) % 13 + 1, max_line, limit);
    assert_eq!(whole, chunked, "framing depends on how the bytes arrive");
    let bytewise = frame(stream, |_| 1, max_line, limit);
    assert_eq!(whole, bytewise, "framing depends on how the bytes arrive");
    for event in &whole {
        match event {
            Event::Line(Line::Complete(line)) => {
                assert!(line.len() <= max_line && !line.contains(&b'\n'));
            }
            Event::Body(Body::Complete(body)) => assert!(body.len() as u64 <= limit),
            _ => {}
        }
    }
});
