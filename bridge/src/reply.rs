//! LMTP replies, and the one place where a [`Failure`] becomes a reply code and enhanced status.
//!
//! Reply text is generic: Postfix copies it into bounces and logs, so it never carries database
//! errors, keys or addresses. The strings inside `Failure` are for our own log (`Display`), except
//! the protocol hints of `SyntaxError`, `BadArguments` and `BadSequence`, which the session writes
//! itself from fixed text and which are sent.

use std::fmt::Write as _;

/// An enhanced status code (RFC 3463): class, subject, detail.
pub type Status = (u8, u16, u16);

/// One LMTP reply; several lines of `text` render as a multi-line reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: Option<Status>,
    pub text: String,
}

impl Reply {
    /// `code status text`; the enhanced status is repeated on every line (RFC 2034 §3).
    pub fn new(code: u16, status: Option<Status>, text: impl Into<String>) -> Self {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    /// Renders the reply with CRLF line ends. Text is reduced to printable ASCII so that nothing
    /// in it can end the reply early or inject another one.
    pub fn render(&self) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        let lines = if lines.is_empty() { vec![""] } else { lines };
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let _ = write!(out, "{}", self.code);
            let mut sep = if i + 1 == lines.len() { ' ' } else { '-' };
            if let Some((class, subject, detail)) = self.status {
                let _ = write!(out, "{sep}{class}.{subject}.{detail}");
                sep = ' ';
            }
            if !line.is_empty() || sep == '-' {
                out.push(sep);
                out.extend(line.chars().map(printable));
            }
            out.push_str("\r\n");
        }
        out
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// `250 2.0.0 <text>`: the message is committed for this recipient.
    pub fn queued(text: &str) -> Self {
        ok((2, 0, 0), text)
    }

    /// The connection greeting; no enhanced status before LHLO.
    pub fn greeting(hostname: &str) -> Self {
        Reply::new(220, None, format!("{hostname} LMTP toxmail ready"))
    }

    /// The LHLO answer: the hostname, then one extension keyword per line.
    pub fn lhlo(hostname: &str, extensions: &[String]) -> Self {
        let mut text = hostname.to_string();
        for ext in extensions {
            text.push('\n');
            text.push_str(ext);
        }
        Reply::new(250, None, text)
    }

    /// MAIL accepted (X.1.0: other address status, the sender).
    pub fn sender_ok() -> Self {
        ok((2, 1, 0), "sender ok")
    }

    /// RCPT accepted (X.1.5: destination address valid).
    pub fn recipient_ok() -> Self {
        ok((2, 1, 5), "recipient ok")
    }

    /// RSET, NOOP, XFORWARD.
    pub fn done() -> Self {
        ok((2, 0, 0), "ok")
    }

    /// DATA accepted; 3xx replies carry no enhanced status (RFC 2034 §3).
    pub fn start_data() -> Self {
        Reply::new(354, None, "end data with <CR><LF>.<CR><LF>")
    }

    /// QUIT.
    pub fn closing() -> Self {
        Reply::new(221, Some((2, 0, 0)), "bye")
    }

    /// VRFY: 252, as RFC 5321 §3.5.3 allows for a server that will not verify.
    pub fn cannot_verify() -> Self {
        Reply::new(
            252,
            Some((2, 0, 0)),
            "cannot VRFY; send the message and see",
        )
    }
}

/// A positive reply with an enhanced status.
pub fn ok(status: Status, text: &str) -> Reply {
    Reply::new(250, Some(status), text)
}

fn printable(c: char) -> char {
    if c == ' ' || c.is_ascii_graphic() {
        c
    } else {
        '?'
    }
}

/// Everything that can refuse a command, a recipient or a message. Rendered only by [`Failure::reply`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("storage unavailable")]
    StorageUnavailable,
    #[error("storage full")]
    StorageFull,
    #[error("message larger than {limit} bytes")]
    MessageTooBig { limit: u64 },
    #[error("recipient not reachable over Tox")]
    RecipientUnknown,
    /// Postfix routed the recipient here, but it no longer resolves to Tox (a contact removed, a
    /// DNS record withdrawn since the socketmap answered): Postfix should route it again.
    #[error("recipient no longer routed over Tox")]
    NoLongerTox,
    #[error("bad destination: {0}")]
    BadDestination(String),
    #[error("temporary routing failure: {0}")]
    RoutingTemporary(String),
    #[error("sender refused: {0}")]
    SenderRefused(String),
    #[error("too many recipients")]
    TooManyRecipients,
    #[error("peer queue full")]
    PeerQueueFull,
    /// Unrecognised command or garbage; the text is a fixed hint and is sent.
    #[error("syntax error: {0}")]
    SyntaxError(String),
    /// A known command with malformed arguments; the text is a fixed hint and is sent.
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// A MAIL/RCPT parameter we did not announce (SMTPUTF8, NOTIFY, ...); the text is logged only.
    #[error("unsupported parameter: {0}")]
    UnsupportedParameter(String),
    /// Out of order; the text is a fixed hint and is sent.
    #[error("bad sequence: {0}")]
    BadSequence(String),
    /// HELO or EHLO on an LMTP server.
    #[error("HELO/EHLO on LMTP")]
    NotLmtp,
    #[error("command line too long")]
    LineTooLong,
    #[error("idle timeout")]
    IdleTimeout,
    #[error("shutting down")]
    ShuttingDown,
    /// Over the server's connection cap; sent before the greeting, then closed.
    #[error("too many connections")]
    TooManyConnections,
    #[error("local error: {0}")]
    LocalError(String),
    /// A non-ASCII address in a transaction whose MAIL did not give SMTPUTF8.
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsSmtputf8,
    /// The message needs SMTPUTF8 and the recipient's bridge speaks a protocol level without it.
    #[error("recipient's bridge cannot take SMTPUTF8 mail")]
    PeerLacksSmtputf8,
}

impl Failure {
    /// The one mapping from failures to replies. Each choice, with its source:
    pub fn reply(&self) -> Reply {
        use Failure::*;
        let (code, status, text): (u16, Status, &str) = match self {
            // RFC 3463 X.3.0 "other or undefined mail system status": the database is down.
            StorageUnavailable => (451, (4, 3, 0), "local storage unavailable, try again later"),
            // X.3.1 "mail system full"; 452 is RFC 5321's "insufficient system storage".
            StorageFull => (452, (4, 3, 1), "mail system full, try again later"),
            // X.3.4 "message too big for system", with 552 as RFC 1870 §6.2 asks for SIZE.
            MessageTooBig { .. } => (552, (5, 3, 4), "message too big for this system"),
            // X.1.1 "bad destination mailbox address": no (longer a) Tox mapping.
            RecipientUnknown => (550, (5, 1, 1), "recipient not reachable over Tox"),
            // X.4.0 "other or undefined network or routing status", temporary: Postfix asks the
            // socketmap again at its next attempt and takes the ordinary route.
            NoLongerTox => (
                450,
                (4, 4, 0),
                "recipient no longer routed over Tox, route it again",
            ),
            // X.1.3 "bad destination mailbox address syntax": the nearest fit for a bad Tox ID.
            BadDestination(_) => (550, (5, 1, 3), "recipient has an invalid Tox address"),
            // X.4.3 "directory server failure": the DNS lookup failed.
            RoutingTemporary(_) => (451, (4, 4, 3), "recipient lookup failed, try again later"),
            // X.7.1 "delivery not authorized, message refused": policy, not a bad address.
            SenderRefused(_) => (550, (5, 7, 1), "sender not authorized to send over Tox"),
            // X.5.3 "too many recipients"; RFC 5321 §4.5.3.1.10 asks for 452, so the client
            // retries the rest later.
            TooManyRecipients => (452, (4, 5, 3), "too many recipients"),
            // X.2.2 "mailbox full": the per-peer queue.
            PeerQueueFull => (452, (4, 2, 2), "recipient queue full, try again later"),
            // X.5.2 "syntax error", 500 "command unrecognized" (RFC 5321 §4.2.2).
            SyntaxError(hint) => return Reply::new(500, Some((5, 5, 2)), hint.clone()),
            // X.5.4 "invalid command arguments", 501 "syntax error in parameters".
            BadArguments(hint) => return Reply::new(501, Some((5, 5, 4)), hint.clone()),
            // 555 "MAIL FROM/RCPT TO parameters not recognized" (RFC 5321 §4.2.3), X.5.4.
            UnsupportedParameter(_) => (555, (5, 5, 4), "unsupported parameter"),
            // X.5.1 "invalid command": out of sequence.
            BadSequence(hint) => return Reply::new(503, Some((5, 5, 1)), hint.clone()),
            // X.5.1 covers "unsupported" commands too; RFC 2033 §4.1 has LHLO replace them.
            NotLmtp => (500, (5, 5, 1), "this is LMTP: use LHLO"),
            // RFC 5321 §4.2.2 lists "command line too long" under 500. X.5.6 is registered only
            // for AUTH exchange lines (RFC 4954), so the generic X.5.2 syntax error is used.
            LineTooLong => (500, (5, 5, 2), "line too long"),
            // X.4.2 "bad connection"; 421 closes the channel (RFC 5321 §3.8).
            IdleTimeout => (421, (4, 4, 2), "timeout, closing connection"),
            // X.3.2 "system not accepting network messages".
            ShuttingDown => (421, (4, 3, 2), "shutting down, try again later"),
            // X.3.2 "system not accepting network messages": busy, come back.
            TooManyConnections => (421, (4, 3, 2), "too many connections, try again later"),
            // 451 "local error in processing", X.3.0.
            LocalError(_) => (451, (4, 3, 0), "local error, try again later"),
            // X.6.7 "non-ASCII addresses not permitted for that sender/recipient" (RFC 6531
            // §3.7.5), with 553 "mailbox name not allowed" as RFC 6531 §3.5 has for it.
            NeedsSmtputf8 => (553, (5, 6, 7), "non-ASCII address needs SMTPUTF8"),
            // X.6.7 again, as Postfix bounces mail for a next hop that does not offer SMTPUTF8.
            PeerLacksSmtputf8 => (
                550,
                (5, 6, 7),
                "SMTPUTF8 is required, but the recipient's bridge does not support it",
            ),
        };
        Reply::new(code, Some(status), text)
    }

    /// Whether the client should try again later (a 4xx reply).
    pub fn is_temporary(&self) -> bool {
        self.reply().is_temporary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "db password=hunter2 key=abcdef";

    fn s() -> String {
        SECRET.to_string()
    }

    #[test]
    fn every_failure_maps_to_its_documented_code() {
        use Failure::*;
        let table: Vec<(Failure, u16, Status, bool)> = vec![
            (StorageUnavailable, 451, (4, 3, 0), true),
            (StorageFull, 452, (4, 3, 1), true),
            (MessageTooBig { limit: 10 }, 552, (5, 3, 4), false),
            (RecipientUnknown, 550, (5, 1, 1), false),
            (NoLongerTox, 450, (4, 4, 0), true),
            (BadDestination(s()), 550, (5, 1, 3), false),
            (RoutingTemporary(s()), 451, (4, 4, 3), true),
            (SenderRefused(s()), 550, (5, 7, 1), false),
            (TooManyRecipients, 452, (4, 5, 3), true),
            (PeerQueueFull, 452, (4, 2, 2), true),
            (SyntaxError("hint".into()), 500, (5, 5, 2), false),
            (BadArguments("hint".into()), 501, (5, 5, 4), false),
            (UnsupportedParameter(s()), 555, (5, 5, 4), false),
            (BadSequence("hint".into()), 503, (5, 5, 1), false),
            (NotLmtp, 500, (5, 5, 1), false),
            (LineTooLong, 500, (5, 5, 2), false),
            (IdleTimeout, 421, (4, 4, 2), true),
            (ShuttingDown, 421, (4, 3, 2), true),
            (TooManyConnections, 421, (4, 3, 2), true),
            (LocalError(s()), 451, (4, 3, 0), true),
            (NeedsSmtputf8, 553, (5, 6, 7), false),
            (PeerLacksSmtputf8, 550, (5, 6, 7), false),
        ];
        for (failure, code, status, temporary) in table {
            let reply = failure.reply();
            assert_eq!(
                (reply.code, reply.status),
                (code, Some(status)),
                "{failure:?}"
            );
            assert_eq!(
                u16::from(status.0),
                code / 100,
                "class mismatch for {failure:?}"
            );
            assert_eq!(failure.is_temporary(), temporary, "{failure:?}");
            assert_eq!(reply.is_temporary(), temporary, "{failure:?}");
            assert_eq!(reply.is_permanent(), !temporary, "{failure:?}");
            assert!(!reply.is_success());
            assert!(!reply.text.is_empty(), "{failure:?}");
            assert!(
                !reply.render().contains("hunter2"),
                "{failure:?} leaks its detail"
            );
        }
    }

    #[test]
    fn render_single_and_multi_line() {
        assert_eq!(
            Reply::queued("queued as 7").render(),
            "250 2.0.0 queued as 7\r\n"
        );
        assert_eq!(Reply::start_data().render().split(' ').next(), Some("354"));
        assert_eq!(Reply::closing().render(), "221 2.0.0 bye\r\n");
        let lhlo = Reply::lhlo("mx.test", &["PIPELINING".into(), "SIZE 10".into()]);
        assert_eq!(
            lhlo.render(),
            "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        let multi = Reply::new(451, Some((4, 3, 0)), "a\nb");
        assert_eq!(multi.render(), "451-4.3.0 a\r\n451 4.3.0 b\r\n");
    }

    #[test]
    fn render_cannot_inject_lines_or_bytes() {
        let reply = Reply::new(250, Some((2, 0, 0)), "x\r\u{7f}é\0y");
        assert_eq!(reply.render(), "250 2.0.0 x????y\r\n");
        assert_eq!(Reply::new(250, None, "").render(), "250\r\n");
        assert_eq!(
            Reply::new(250, Some((2, 0, 0)), "").render(),
            "250 2.0.0\r\n"
        );
    }
}
