//! The friend-request message: toxmail nodes send `toxmail/<version>` (plus an optional note)
//! so a receiving node can tell them from people using ordinary Tox chat clients.

/// Prefix of the friend-request message this build sends.
pub const FRIEND_REQUEST_PREFIX: &str = "toxmail/1";
/// Tox's `TOX_MAX_FRIEND_REQUEST_LENGTH`.
const MAX_FRIEND_REQUEST: usize = 1016;

/// `"toxmail/1"`, followed by a space and `note` when `note` is not empty, cut to Tox's
/// 1016-byte limit at a character boundary.
pub fn friend_request_message(note: &str) -> Vec<u8> {
    let mut text = String::from(FRIEND_REQUEST_PREFIX);
    if !note.is_empty() {
        text.push(' ');
        text.push_str(note);
    }
    text.truncate(text.floor_char_boundary(MAX_FRIEND_REQUEST));
    text.into_bytes()
}

/// The protocol version announced by a toxmail friend request, or `None` for anything else.
///
/// Accepts `toxmail/N` where N is a decimal 1..=255 without leading zeros, followed by the end
/// of the message or a space and a note of UTF-8 text without control characters (a note is
/// only ever logged, but a stranger's bytes are not taken as text unchecked). Case-sensitive.
pub fn parse_friend_request(msg: &[u8]) -> Option<u8> {
    let rest = msg.strip_prefix(b"toxmail/")?;
    let digits_end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, after) = rest.split_at(digits_end);
    if !(after.is_empty() || after[0] == b' ') || digits.len() > 3 || digits.first() == Some(&b'0')
    {
        return None;
    }
    let version = std::str::from_utf8(digits).ok()?.parse::<u8>().ok()?;
    let note = std::str::from_utf8(after).ok()?;
    if note.chars().any(char::is_control) {
        return None;
    }
    Some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friend_request_message_with_and_without_note() {
        assert_eq!(friend_request_message(""), b"toxmail/1");
        assert_eq!(
            friend_request_message("relay example.org"),
            b"toxmail/1 relay example.org"
        );
    }

    #[test]
    fn friend_request_message_is_capped_at_a_char_boundary() {
        // "toxmail/1 " is 10 bytes; 1005 more ASCII bytes leave 1 byte, too few for "é".
        let note = format!("{}é", "n".repeat(1005));
        let msg = friend_request_message(&note);
        assert_eq!(msg.len(), 1015);
        assert!(std::str::from_utf8(&msg).is_ok());
        assert_eq!(friend_request_message(&"n".repeat(5000)).len(), 1016);
    }

    #[test]
    fn parse_friend_request_recognises_toxmail_versions() {
        assert_eq!(parse_friend_request(b"toxmail/1"), Some(1));
        assert_eq!(
            parse_friend_request("toxmail/1 from jörg".as_bytes()),
            Some(1)
        );
        assert_eq!(parse_friend_request(&friend_request_message("x")), Some(1));
        assert_eq!(parse_friend_request(b"toxmail/2"), Some(2));
        assert_eq!(parse_friend_request(b"toxmail/255 later"), Some(255));
    }

    #[test]
    fn parse_friend_request_rejects_everything_else() {
        for msg in [
            &b""[..],
            b"Hello, please add me",
            b"toxmail",
            b"toxmail/",
            b"toxmail/ 1",
            b"toxmail/0",
            b"toxmail/01",
            b"toxmail/256",
            b"toxmail/1x",
            b"toxmail/1\n",
            b"toxmail/1\0",
            b"toxmail/1 \0hidden",
            b"toxmail/1 hello \xff",
            b"toxmail/1 two\r\nlines",
            b"Toxmail/1",
            b" toxmail/1",
            b"toxmail/99999999999999999999",
        ] {
            assert_eq!(
                parse_friend_request(msg),
                None,
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }
}
