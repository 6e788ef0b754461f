//! One command line → [`Command`], without I/O. smtp-proto parses the standard verbs and their
//! parameters; XFORWARD (a Postfix extension it does not know) is parsed here. Anything we did not
//! announce in LHLO is refused.

use smtp_proto::{
    Error as ProtoError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, MailFrom, Request,
};
use toxmail_protocol::{BodyType, Extensions};

use crate::dsn_request::{self, MailDsn, RcptDsn};
use crate::reply::Failure;

/// A parsed LMTP command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Lhlo,
    /// HELO or EHLO: refused on LMTP.
    Helo,
    /// `from` is "" for the null reverse-path `<>`.
    Mail {
        from: String,
        size: Option<u64>,
        /// RET and ENVID (RFC 3461).
        dsn: MailDsn,
        /// SMTPUTF8 and BODY= (RFC 6531, RFC 6152), carried to the receiving site.
        extensions: Extensions,
    },
    Rcpt {
        to: String,
        /// NOTIFY and ORCPT (RFC 3461).
        dsn: RcptDsn,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Xforward(Vec<(XAttr, Option<String>)>),
}

/// The XFORWARD attributes we announce; values arrive xtext-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAttr {
    Name,
    Addr,
    Proto,
    Helo,
    Ident,
    Source,
}

impl XAttr {
    /// In declaration order, so that `index()` is the position here.
    pub const ALL: [XAttr; 6] = [
        XAttr::Name,
        XAttr::Addr,
        XAttr::Proto,
        XAttr::Helo,
        XAttr::Ident,
        XAttr::Source,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn keyword(self) -> &'static str {
        match self {
            XAttr::Name => "NAME",
            XAttr::Addr => "ADDR",
            XAttr::Proto => "PROTO",
            XAttr::Helo => "HELO",
            XAttr::Ident => "IDENT",
            XAttr::Source => "SOURCE",
        }
    }
}

/// Longest decoded XFORWARD value we keep (Postfix's own limit for these is 255).
const MAX_XFORWARD_VALUE: usize = 255;

/// Parses one line (without its line end).
pub fn parse(line: &[u8]) -> Result<Command, Failure> {
    check_text(line)?;
    let verb_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    if line[..verb_len].eq_ignore_ascii_case(b"XFORWARD") {
        return parse_xforward(&line[verb_len..]);
    }
    let (mut framed, dsn) = take_dsn_params(line)?;
    framed.extend_from_slice(b"\r\n");
    match Request::parse(&mut framed.iter()) {
        Ok(request) => from_request(request).map(|command| with_dsn(command, dsn)),
        Err(e) => Err(from_error(e)),
    }
}

/// The DSN parameters of MAIL or RCPT, parsed by `dsn_request` (strictly: smtp-proto accepts
/// `NOTIFY=NEVER,SUCCESS` and knows no utf-8 ORCPT) and taken off the line smtp-proto parses.
enum Dsn {
    Mail(MailDsn),
    Rcpt(RcptDsn),
    None,
}

fn take_dsn_params(line: &[u8]) -> Result<(Vec<u8>, Dsn), Failure> {
    let verb = |v: &[u8]| line.len() >= 4 && line[..4].eq_ignore_ascii_case(v);
    let taken = if verb(b"MAIL") {
        dsn_request::take_mail_params(line).map(|(l, d)| (l, Dsn::Mail(d)))
    } else if verb(b"RCPT") {
        dsn_request::take_rcpt_params(line).map(|(l, d)| (l, Dsn::Rcpt(d)))
    } else {
        Ok((line.to_vec(), Dsn::None))
    };
    taken.map_err(Failure::BadArguments)
}

fn with_dsn(command: Command, taken: Dsn) -> Command {
    match (command, taken) {
        (
            Command::Mail {
                from,
                size,
                extensions,
                ..
            },
            Dsn::Mail(dsn),
        ) => Command::Mail {
            from,
            size,
            dsn,
            extensions,
        },
        (Command::Rcpt { to, .. }, Dsn::Rcpt(dsn)) => Command::Rcpt { to, dsn },
        (command, _) => command,
    }
}

/// A command is ASCII, or UTF-8 where SMTPUTF8 allows it (RFC 6531 §3.3: addresses); either
/// way no control character. Bytes smtp-proto would replace with U+FFFD are refused here; whether
/// the transaction announced SMTPUTF8 is the session's check.
fn check_text(line: &[u8]) -> Result<(), Failure> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Err(Failure::SyntaxError(
            "8-bit data in command is not UTF-8".into(),
        ));
    };
    if text
        .chars()
        .any(|c| c != ' ' && c != '\t' && c.is_control())
    {
        return Err(Failure::SyntaxError("control character in command".into()));
    }
    Ok(())
}

/// The MAIL parameters this server announces besides SIZE: SMTPUTF8 and BODY=7BIT/8BITMIME.
/// BINARYMIME is not announced (it needs BDAT, which Postfix's LMTP client never sends) and is
/// refused by the caller as any parameter not announced.
fn mail_extensions(from: &MailFrom<std::borrow::Cow<'_, str>>) -> Extensions {
    Extensions {
        smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
        body: if from.flags & MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        },
        ..Default::default()
    }
}

fn from_request(request: Request<std::borrow::Cow<'_, str>>) -> Result<Command, Failure> {
    Ok(match request {
        Request::Lhlo { .. } => Command::Lhlo,
        Request::Helo { .. } | Request::Ehlo { .. } => Command::Helo,
        Request::Mail { from } => {
            let known = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
            let unannounced = from.flags & !known != 0
                || from.env_id.is_some()
                || from.trans_id.is_some()
                || from.auth.is_some()
                || from.mtrk.is_some()
                || from.solicit.is_some()
                || from.by != 0
                || from.hold_for != 0
                || from.hold_until != 0
                || from.mt_priority != 0;
            if unannounced {
                return Err(Failure::UnsupportedParameter(
                    "MAIL parameter not announced".into(),
                ));
            }
            // smtp-proto reports "no SIZE=" as 0; SIZE=0 means "unknown" anyway (RFC 1870 §6).
            let size = (from.size > 0).then_some(from.size as u64);
            let extensions = mail_extensions(&from);
            Command::Mail {
                from: from.address.into_owned(),
                size,
                dsn: MailDsn::default(),
                extensions,
            }
        }
        Request::Rcpt { to } => {
            if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
                return Err(Failure::UnsupportedParameter(
                    "RCPT parameter not announced".into(),
                ));
            }
            if to.address.is_empty() {
                return Err(Failure::BadArguments("RCPT TO:<mailbox@domain>".into()));
            }
            Command::Rcpt {
                to: to.address.into_owned(),
                dsn: RcptDsn::default(),
            }
        }
        Request::Data => Command::Data,
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        // EXPN, HELP, AUTH, STARTTLS, BDAT, ETRN, ATRN, BURL: not offered.
        _ => return Err(unrecognised()),
    })
}

fn from_error(error: ProtoError) -> Failure {
    match error {
        ProtoError::InvalidSenderAddress => {
            Failure::BadArguments("bad sender address syntax".into())
        }
        ProtoError::InvalidRecipientAddress => {
            Failure::BadArguments("bad recipient address syntax".into())
        }
        ProtoError::SyntaxError { syntax } => Failure::BadArguments(format!("syntax: {syntax}")),
        ProtoError::InvalidParameter { param } => {
            Failure::BadArguments(format!("invalid {param} parameter"))
        }
        ProtoError::UnsupportedParameter { param } => Failure::UnsupportedParameter(param),
        _ => unrecognised(),
    }
}

fn unrecognised() -> Failure {
    Failure::SyntaxError("command not recognized".into())
}

/// `XFORWARD 1*( SP name "=" xtext )`, where the value `[UNAVAILABLE]` means none.
fn parse_xforward(args: &[u8]) -> Result<Command, Failure> {
    let bad = |hint: &str| Failure::BadArguments(hint.to_string());
    let mut attrs = Vec::new();
    for word in args
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
    {
        let eq = word
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("XFORWARD name=value"))?;
        let (name, value) = (&word[..eq], &word[eq + 1..]);
        let attr = XAttr::ALL
            .into_iter()
            .find(|a| name.eq_ignore_ascii_case(a.keyword().as_bytes()))
            .ok_or_else(|| bad("bad XFORWARD attribute name"))?;
        let value = if value.eq_ignore_ascii_case(b"[UNAVAILABLE]") {
            None
        } else {
            Some(decode_xtext(value).ok_or_else(|| bad("bad XFORWARD attribute value"))?)
        };
        attrs.push((attr, value));
    }
    if attrs.is_empty() {
        return Err(bad("XFORWARD name=value"));
    }
    Ok(Command::Xforward(attrs))
}

/// xtext (RFC 3461 §4): `+HH` stands for one byte. The result must be printable ASCII.
fn decode_xtext(value: &[u8]) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some((&b, tail)) = rest.split_first() {
        let (byte, tail) = if b == b'+' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            (u8::from_str_radix(hex, 16).ok()?, &tail[2..])
        } else {
            (b, tail)
        };
        if !(byte == b' ' || byte.is_ascii_graphic()) || out.len() >= MAX_XFORWARD_VALUE {
            return None;
        }
        out.push(char::from(byte));
        rest = tail;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, Failure> {
        parse(line.as_bytes())
    }

    #[test]
    fn mail_with_size_and_body() {
        let got = parse_str("MAIL FROM:<a@x.test> SIZE=1234 BODY=8BITMIME");
        let eight = Extensions {
            smtputf8: false,
            body: BodyType::EightBitMime,
            ..Default::default()
        };
        assert_eq!(
            got,
            Ok(Command::Mail {
                from: "a@x.test".into(),
                size: Some(1234),
                dsn: MailDsn::default(),
                extensions: eight,
            })
        );
        let null = parse_str("mail from:<> BODY=7BIT");
        assert_eq!(
            null,
            Ok(Command::Mail {
                from: String::new(),
                size: None,
                dsn: MailDsn::default(),
                extensions: Extensions::default(),
            })
        );
    }

    #[test]
    fn smtputf8_addresses_parse_as_utf8() {
        let got = parse_str("MAIL FROM:<jörg@bücher.test> SMTPUTF8 BODY=8BITMIME");
        let want = Extensions {
            smtputf8: true,
            body: BodyType::EightBitMime,
            ..Default::default()
        };
        assert_eq!(
            got,
            Ok(Command::Mail {
                from: "jörg@bücher.test".into(),
                size: None,
                dsn: MailDsn::default(),
                extensions: want,
            })
        );
        assert_eq!(
            parse_str("RCPT TO:<δοκιμή@παράδειγμα.test>"),
            Ok(Command::Rcpt {
                to: "δοκιμή@παράδειγμα.test".into(),
                dsn: RcptDsn::default(),
            })
        );
    }

    #[test]
    fn unannounced_parameters_are_refused() {
        for line in [
            "MAIL FROM:<a@x.test> BODY=BINARYMIME",
            "MAIL FROM:<a@x.test> XYZZY=1",
            "MAIL FROM:<a@x.test> MT-PRIORITY=3",
        ] {
            assert!(
                matches!(parse_str(line), Err(Failure::UnsupportedParameter(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn dsn_parameters_are_parsed_and_malformed_ones_refused_with_501() {
        let got = parse_str("MAIL FROM:<a@x.test> RET=HDRS ENVID=id+2B1 SIZE=5");
        let Ok(Command::Mail {
            from, size, dsn, ..
        }) = got
        else {
            panic!("{got:?}")
        };
        assert_eq!((from.as_str(), size), ("a@x.test", Some(5)));
        assert_eq!(dsn.ret, Some(dsn_request::Ret::Hdrs));
        assert_eq!(
            dsn.envid.map(|e| e.as_str().to_string()).as_deref(),
            Some("id+1")
        );
        let got = parse_str("RCPT TO:<b@y.test> NOTIFY=NEVER ORCPT=rfc822;b@y.test");
        let Ok(Command::Rcpt { to, dsn }) = got else {
            panic!("{got:?}")
        };
        assert_eq!(to, "b@y.test");
        assert!(dsn.notify.is_some_and(|n| n.never()));
        for bad in [
            "RCPT TO:<b@y.test> NOTIFY=NEVER,DELAY",
            "RCPT TO:<b@y.test> ORCPT=x400;b",
            "MAIL FROM:<a@x.test> RET=NONE",
        ] {
            let got = parse_str(bad);
            assert!(
                matches!(got, Err(Failure::BadArguments(_))),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn verbs_map_to_commands() {
        assert_eq!(parse_str("LHLO mx.test"), Ok(Command::Lhlo));
        assert_eq!(parse_str("EHLO mx.test"), Ok(Command::Helo));
        assert_eq!(
            parse_str("RCPT TO:<b@y.test>"),
            Ok(Command::Rcpt {
                to: "b@y.test".into(),
                dsn: RcptDsn::default(),
            })
        );
        assert_eq!(parse_str("data"), Ok(Command::Data));
        assert_eq!(parse_str("VRFY someone"), Ok(Command::Vrfy));
        assert!(matches!(
            parse_str("STARTTLS"),
            Err(Failure::SyntaxError(_))
        ));
        assert!(matches!(parse_str("FROB"), Err(Failure::SyntaxError(_))));
        assert!(matches!(
            parse_str("RCPT TO:<>"),
            Err(Failure::BadArguments(_))
        ));
        assert!(matches!(
            parse_str("MAIL FROM:nobracket"),
            Err(Failure::BadArguments(_))
        ));
    }

    #[test]
    fn non_ascii_and_control_bytes_are_refused() {
        for bad in [
            &b"RCPT TO:<\xff@y.test>"[..],
            b"RCPT TO:<j\xc3@y.test>",
            b"NOOP\0",
            "RCPT TO:<a\u{85}b@y.test>".as_bytes(),
            b"RCPT TO:<a\x7fb@y.test>",
        ] {
            assert!(
                matches!(parse(bad), Err(Failure::SyntaxError(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn xforward_attributes_are_decoded() {
        assert!(XAttr::ALL.iter().enumerate().all(|(i, a)| a.index() == i));
        let got = parse_str("XFORWARD IDENT=4ZxYz+2B1 NAME=[UNAVAILABLE] ADDR=127.0.0.1");
        let want = vec![
            (XAttr::Ident, Some("4ZxYz+1".to_string())),
            (XAttr::Name, None),
            (XAttr::Addr, Some("127.0.0.1".to_string())),
        ];
        assert_eq!(got, Ok(Command::Xforward(want)));
        for bad in [
            "XFORWARD",
            "XFORWARD BOGUS=1",
            "XFORWARD IDENT=+0A",
            "XFORWARD IDENT=+G1",
        ] {
            assert!(
                matches!(parse_str(bad), Err(Failure::BadArguments(_))),
                "{bad}"
            );
        }
        let long = format!("XFORWARD IDENT={}", "a".repeat(MAX_XFORWARD_VALUE + 1));
        assert!(parse_str(&long).is_err());
    }
}
