//! What a report returns of the original message (RFC 3461 RET): its header section, or for
//! RET=FULL the whole message when it is small. The store keeps only sealed envelopes, so the
//! intake seals this part once per message to the sending identity's own key, and the notifier
//! opens it with that key when a report is built.

use toxmail_protocol::{Letter, MessageId, Metadata, SecretKey, open, public_key_of, seal};

use crate::dsn_request::Ret;

/// RET=FULL returns messages up to this size whole, larger ones by their headers only (what
/// Postfix's `bounce_size_limit` does, with its default).
pub const FULL_RETURN_LIMIT: usize = 50_000;
/// The header section returned is cut at this many bytes.
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// What a report carries of the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Returned {
    /// The header section only (text/rfc822-headers).
    Headers(Vec<u8>),
    /// The whole message (message/rfc822).
    Full(Vec<u8>),
}

impl Returned {
    /// The part of `message` a report returns under `ret` (absent: the headers, this bridge's
    /// choice: the message went end-to-end encrypted, and its sender has it).
    pub fn choose(message: &[u8], ret: Option<Ret>) -> Returned {
        if ret == Some(Ret::Full) && message.len() <= FULL_RETURN_LIMIT {
            return Returned::Full(message.to_vec());
        }
        Returned::Headers(header_section(message).to_vec())
    }

    /// The header section, whichever was kept.
    pub fn headers(&self) -> &[u8] {
        match self {
            Returned::Headers(h) => h,
            Returned::Full(m) => header_section(m),
        }
    }

    /// Sealed to `key`'s own public key; `Full` and `Headers` are told apart by a first byte.
    pub fn seal(&self, key: &SecretKey) -> Option<Vec<u8>> {
        let (tag, bytes) = match self {
            Returned::Headers(h) => (b'H', h),
            Returned::Full(m) => (b'F', m),
        };
        let mut message = Vec::with_capacity(bytes.len() + 1);
        message.push(tag);
        message.extend_from_slice(bytes);
        let letter = Letter {
            message_id: MessageId::random(),
            metadata: Metadata {
                envelope_sender: String::new(),
                recipient: String::new(),
                queue_id: String::new(),
                created: 0,
                expires: 0,
                extensions: Default::default(),
            },
            message,
        };
        seal(&letter, key, &public_key_of(key)).ok()
    }

    /// Opens what [`Returned::seal`] made; `None` if it is not that (wrong key, damaged).
    pub fn open(sealed: &[u8], key: &SecretKey) -> Option<Returned> {
        let opened = open(sealed, key).ok()?;
        if opened.sender != public_key_of(key) {
            return None;
        }
        let message = opened.letter.message;
        let (&tag, rest) = message.split_first()?;
        match tag {
            b'H' => Some(Returned::Headers(rest.to_vec())),
            b'F' => Some(Returned::Full(rest.to_vec())),
            _ => None,
        }
    }
}

/// The Subject and Message-ID of a header section (outside input: parsed by mail-parser, each
/// bounded; the report cleans them again before writing them).
pub fn subject_and_id(headers: &[u8]) -> (Option<String>, Option<String>) {
    let Some(message) = mail_parser::MessageParser::new().parse_headers(headers) else {
        return (None, None);
    };
    let bounded = |s: &str| s.chars().take(MAX_NAMED).collect::<String>();
    (
        message.subject().map(bounded),
        message.message_id().map(bounded),
    )
}

/// Longest Subject or Message-ID a report names.
const MAX_NAMED: usize = 500;

/// The header section of a message: up to (without) the empty line, bounded.
pub fn header_section(message: &[u8]) -> &[u8] {
    let end = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 1)
        .into_iter()
        .chain(
            message
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|at| at + 2),
        )
        .min()
        .unwrap_or(message.len());
    &message[..end.min(MAX_RETURNED_HEADERS)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"Subject: hi\r\nMessage-ID: <m@a.test>\r\n\r\nbody\r\n";

    #[test]
    fn the_returned_part_follows_ret_and_size() {
        let headers = b"Subject: hi\r\nMessage-ID: <m@a.test>\r\n".to_vec();
        assert_eq!(
            Returned::choose(MESSAGE, None),
            Returned::Headers(headers.clone())
        );
        let hdrs = Returned::choose(MESSAGE, Some(Ret::Hdrs));
        assert_eq!(hdrs, Returned::Headers(headers.clone()));
        let full = Returned::choose(MESSAGE, Some(Ret::Full));
        assert_eq!(full, Returned::Full(MESSAGE.to_vec()));
        assert_eq!(full.headers(), &headers[..]);
        let mut big = MESSAGE.to_vec();
        big.resize(FULL_RETURN_LIMIT + 1, b'x');
        assert_eq!(
            Returned::choose(&big, Some(Ret::Full)),
            Returned::Headers(headers)
        );
        assert_eq!(header_section(b"A: b\nC: d\n\nbody"), b"A: b\nC: d\n");
    }

    #[test]
    fn subject_and_message_id_are_read_from_a_header_section() {
        let headers =
            header_section(b"Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <m@a.test>\r\n\r\nx");
        let (subject, id) = subject_and_id(headers);
        assert_eq!(subject.as_deref(), Some("caf\u{e9}"));
        assert_eq!(id.as_deref(), Some("m@a.test"));
        assert_eq!(subject_and_id(b""), (None, None));
    }

    #[test]
    fn sealed_to_the_own_key_opens_with_it_only() {
        let key = SecretKey::from([7; 32]);
        let other = SecretKey::from([8; 32]);
        let full = Returned::choose(MESSAGE, Some(Ret::Full));
        let sealed = full.seal(&key).unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"Subject"),
            "sealed, not plain"
        );
        assert_eq!(Returned::open(&sealed, &key), Some(full));
        assert_eq!(Returned::open(&sealed, &other), None);
    }
}
