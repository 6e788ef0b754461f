//! Byte-level LMTP framing, without I/O: command lines bounded by `max_line` (an over-long line is
//! discarded as it streams in, never buffered whole), and DATA bodies dot-unstuffed by smtp-proto's
//! `DataReceiver` and bounded by the message size limit.

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};

/// What a call to [`LineFramer::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Need more bytes; everything given was consumed.
    Incomplete,
    /// One command line, without its line end.
    Complete(Vec<u8>),
    /// A line longer than the limit ended; its bytes were dropped.
    TooLong,
}

/// Splits commands at LF (a CR before it is removed), keeping at most `max_line` bytes.
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    partial: Vec<u8>,
    discarding: bool,
}

impl LineFramer {
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            max_line,
            partial: Vec::new(),
            discarding: false,
        }
    }

    /// Consumes a prefix of `input`; returns how many bytes and what they completed.
    pub fn decode(&mut self, input: &[u8]) -> (usize, Line) {
        let Some(lf) = input.iter().position(|&b| b == b'\n') else {
            self.take(input);
            return (input.len(), Line::Incomplete);
        };
        self.take(&input[..lf]);
        let line = std::mem::take(&mut self.partial);
        let event = if std::mem::take(&mut self.discarding) {
            Line::TooLong
        } else {
            let mut line = line;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            // The CR was counted by `take`; a line of exactly `max_line` bytes plus CR is fine.
            if line.len() > self.max_line {
                Line::TooLong
            } else {
                Line::Complete(line)
            }
        };
        (lf + 1, event)
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.discarding {
            return;
        }
        // One extra byte leaves room for the CR that may precede the LF.
        if self.partial.len() + bytes.len() > self.max_line + 1 {
            self.partial = Vec::new();
            self.discarding = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

/// The message after its final dot.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    /// Dot-unstuffed, line ends as received.
    Complete(Vec<u8>),
    /// Larger than the limit; the bytes were read and dropped.
    TooBig,
}

enum Receiver {
    Keeping(DataReceiver),
    Discarding(DummyDataReceiver),
}

/// Reads one DATA body up to the final `CRLF.CRLF`.
pub struct BodyDecoder {
    receiver: Receiver,
    data: Vec<u8>,
    limit: usize,
}

impl std::fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyDecoder")
            .field("buffered", &self.data.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl BodyDecoder {
    pub fn new(limit: u64) -> Self {
        let mut receiver = DataReceiver::new();
        // `DataReceiver` recognises a leading dot only after CRLF. The line DATA ended with
        // one, so feed it that CRLF (into a throw-away buffer): then a first line of "." ends
        // the message and a first line of ".." is unstuffed, as RFC 5321 §4.5.2 requires.
        receiver.ingest(&mut b"\r\n".iter(), &mut Vec::new());
        BodyDecoder {
            receiver: Receiver::Keeping(receiver),
            data: Vec::new(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }

    /// Consumes a prefix of `input`; returns how many bytes, and the body once the final dot
    /// has been seen. Beyond the limit the buffer is freed and the rest only scanned for the
    /// dot, so memory stays under `limit` plus one `input`.
    pub fn decode(&mut self, input: &[u8]) -> (usize, Option<Body>) {
        let mut bytes = input.iter();
        let done = match &mut self.receiver {
            Receiver::Keeping(receiver) => receiver.ingest(&mut bytes, &mut self.data),
            Receiver::Discarding(receiver) => receiver.ingest(&mut bytes),
        };
        let consumed = input.len() - bytes.len();
        // The receiver keeps the CR of the final ".\r" until the LF comes, then pops it: so one
        // byte over the limit is not yet too big, whichever read the LF arrives in.
        if let Receiver::Keeping(receiver) = &self.receiver
            && self.data.len() > self.limit.saturating_add(1)
        {
            self.receiver = Receiver::Discarding(DummyDataReceiver::new_data(receiver));
            self.data = Vec::new();
        }
        if !done {
            return (consumed, None);
        }
        let body = match self.receiver {
            Receiver::Keeping(_) if self.data.len() <= self.limit => {
                Body::Complete(std::mem::take(&mut self.data))
            }
            Receiver::Keeping(_) | Receiver::Discarding(_) => Body::TooBig,
        };
        (consumed, Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(framer: &mut LineFramer, chunks: &[&[u8]]) -> Vec<Line> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let (n, line) = framer.decode(rest);
                rest = &rest[n..];
                if line != Line::Incomplete {
                    out.push(line);
                }
            }
        }
        out
    }

    #[test]
    fn framer_splits_pipelined_and_fragmented_lines() {
        let mut framer = LineFramer::new(16);
        let got = lines(&mut framer, &[b"NOOP\r\nRS", b"ET\r", b"\nQUIT\n"]);
        let want = ["NOOP", "RSET", "QUIT"].map(|s| Line::Complete(s.as_bytes().to_vec()));
        assert_eq!(got, want);
    }

    #[test]
    fn framer_discards_an_overlong_line_then_recovers() {
        let mut framer = LineFramer::new(8);
        let long = vec![b'x'; 100];
        let got = lines(
            &mut framer,
            &[b"12345678\r\n", &long, &long, b"\r\nNOOP\r\n"],
        );
        assert_eq!(got[0], Line::Complete(b"12345678".to_vec()));
        assert_eq!(got[1], Line::TooLong);
        assert_eq!(got[2], Line::Complete(b"NOOP".to_vec()));
        assert!(framer.partial.capacity() <= 16);
        assert_eq!(lines(&mut framer, &[b"123456789\r\n"]), vec![Line::TooLong]);
    }

    fn body(chunks: &[&[u8]], limit: u64) -> (Body, Vec<u8>) {
        let mut decoder = BodyDecoder::new(limit);
        for (i, chunk) in chunks.iter().enumerate() {
            let (n, done) = decoder.decode(chunk);
            if let Some(body) = done {
                let mut rest = chunk[n..].to_vec();
                rest.extend(chunks[i + 1..].concat());
                return (body, rest);
            }
            assert_eq!(n, chunk.len());
        }
        panic!("no final dot");
    }

    #[test]
    fn body_is_unstuffed_including_the_first_line() {
        let (got, rest) = body(
            &[b"..first\r\nmid\r\n", b"..\r\n.x\r\n.", b"\r\nNOOP\r\n"],
            100,
        );
        assert_eq!(got, Body::Complete(b".first\r\nmid\r\n.\r\nx\r\n".to_vec()));
        assert_eq!(rest, b"NOOP\r\n");
        assert_eq!(body(&[b".\r\n"], 100).0, Body::Complete(Vec::new()));
    }

    #[test]
    fn body_keeps_bare_lf_dot_as_content() {
        let (got, _) = body(&[b"a\n.\nb\r\n.\r\n"], 100);
        assert_eq!(got, Body::Complete(b"a\n.\nb\r\n".to_vec()));
    }

    #[test]
    fn body_over_the_limit_is_dropped_but_read_to_the_dot() {
        let line = [b'y'; 64];
        let mut chunks: Vec<&[u8]> = vec![&line; 10];
        chunks.push(b"\r\n.\r\nQUIT\r\n");
        let (got, rest) = body(&chunks, 100);
        assert_eq!(got, Body::TooBig);
        assert_eq!(rest, b"QUIT\r\n");
        let exact = [b"0123456789\r\n".as_slice(), b".\r\n"];
        assert!(matches!(body(&exact, 12).0, Body::Complete(_)));
        assert_eq!(body(&exact, 11).0, Body::TooBig);
    }

    /// Found by the lmtp_codec fuzz target: a body of exactly the limit was refused when a read
    /// ended between the CR and the LF of the final ".\r\n" (the receiver holds that CR).
    #[test]
    fn body_at_the_limit_does_not_depend_on_where_reads_end() {
        let want = Body::Complete(b"0123456789\r\n".to_vec());
        assert_eq!(body(&[b"0123456789\r\n.\r", b"\n"], 12).0, want);
        assert_eq!(body(&[b"0123456789\r\n.\r\n"], 12).0, want);
        assert_eq!(body(&[b"0123456789\r\n.\r", b"\n"], 11).0, Body::TooBig);
        assert_eq!(body(&[b"0123456789\r\n\r", b"\n.\r\n"], 12).0, Body::TooBig);
    }
}
