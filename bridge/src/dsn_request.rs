//! What a sender asked for about delivery status notifications (RFC 3461): RET and ENVID on
//! MAIL, NOTIFY and ORCPT on RCPT. Parsed here from an LMTP command line into bounded, validated
//! values (xtext decoded, lengths checked) that the queue stores on each copy and the notifier
//! honours; smtp-proto then parses the rest of the line.

use std::fmt::Write;

use toxmail_protocol::{DsnRequest, DsnRet, OrcptType};

/// Longest decoded ENVID (RFC 3461 §4.4).
pub const MAX_ENVID: usize = 100;
/// Longest ORCPT value, `addr-type;xtext` as sent (RFC 3461 §4.2).
pub const MAX_ORCPT: usize = 500;

/// NOTIFY: which outcomes the sender wants to hear about. Absent means FAILURE,DELAY (the
/// bridge's behaviour before RFC 3461 was supported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify(u8);

impl Notify {
    pub const SUCCESS: u8 = 1;
    pub const FAILURE: u8 = 2;
    pub const DELAY: u8 = 4;
    pub const NEVER: u8 = 8;

    /// From the stored column; `None` (no NOTIFY given) is [`Notify::absent`].
    pub fn from_bits(bits: Option<i16>) -> Notify {
        match bits {
            Some(b) if (1..=15).contains(&b) => Notify(b as u8),
            _ => Notify::absent(),
        }
    }

    pub fn absent() -> Notify {
        Notify(Notify::FAILURE | Notify::DELAY)
    }

    pub fn bits(self) -> i16 {
        i16::from(self.0)
    }

    pub fn success(self) -> bool {
        self.0 & Notify::SUCCESS != 0
    }

    pub fn failure(self) -> bool {
        self.0 & Notify::FAILURE != 0
    }

    pub fn delay(self) -> bool {
        self.0 & Notify::DELAY != 0
    }

    /// NEVER: no report of any kind.
    pub fn never(self) -> bool {
        self.0 & Notify::NEVER != 0
    }
}

/// RET: what of the original a failure report returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn keyword(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }

    pub fn from_keyword(word: &str) -> Option<Ret> {
        match word {
            w if w.eq_ignore_ascii_case("FULL") => Some(Ret::Full),
            w if w.eq_ignore_ascii_case("HDRS") => Some(Ret::Hdrs),
            _ => None,
        }
    }
}

/// ORCPT: the recipient as the sender first gave it, as RFC 3464's Original-Recipient writes it:
/// `rfc822;` and the decoded address (printable ASCII), or `utf-8;` and its utf-8-addr-xtext
/// (RFC 6533, ASCII with `\x{HEX}` escapes). Never holds CR, LF or other controls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orcpt(String);

impl Orcpt {
    /// `addr-type;xtext` as it follows `ORCPT=`.
    pub fn parse(value: &str) -> Result<Orcpt, String> {
        if value.len() > MAX_ORCPT {
            return Err(format!("ORCPT longer than {MAX_ORCPT} characters"));
        }
        let (addr_type, text) = value
            .split_once(';')
            .ok_or("ORCPT=addr-type;address expected")?;
        let address = decode_xtext(text).ok_or("ORCPT address is not valid xtext")?;
        if address.is_empty() {
            return Err("ORCPT address is empty".into());
        }
        if addr_type.eq_ignore_ascii_case("rfc822") {
            return Ok(Orcpt(format!("rfc822;{address}")));
        }
        if addr_type.eq_ignore_ascii_case("utf-8") {
            check_utf8_addr_xtext(&address)?;
            return Ok(Orcpt(format!("utf-8;{address}")));
        }
        Err("ORCPT address type must be rfc822 or utf-8".into())
    }

    /// From the stored column, validated again (the database is outside input too).
    pub fn from_stored(stored: &str) -> Option<Orcpt> {
        let (addr_type, address) = stored.split_once(';')?;
        let printable = !address.is_empty() && address.bytes().all(|b| (0x20..0x7f).contains(&b));
        let known = addr_type == "rfc822"
            || (addr_type == "utf-8" && check_utf8_addr_xtext(address).is_ok());
        (printable && known).then(|| Orcpt(stored.to_string()))
    }

    pub fn as_stored(&self) -> &str {
        &self.0
    }

    /// The Original-Recipient field's value: `rfc822; bob@b.test`.
    pub fn field_value(&self) -> String {
        let (addr_type, address) = self.0.split_once(';').unwrap_or(("rfc822", &self.0));
        format!("{addr_type}; {address}")
    }
}

/// ENVID: the sender's identifier of this transaction, printable ASCII, at most [`MAX_ENVID`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvId(String);

impl EnvId {
    pub fn parse(xtext: &str) -> Result<EnvId, String> {
        let value = decode_xtext(xtext).ok_or("ENVID is not valid xtext")?;
        EnvId::checked(value).ok_or_else(|| format!("ENVID must be 1 to {MAX_ENVID} characters"))
    }

    pub fn checked(value: String) -> Option<EnvId> {
        let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
        (printable && (1..=MAX_ENVID).contains(&value.len())).then_some(EnvId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The DSN parameters of MAIL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailDsn {
    pub ret: Option<Ret>,
    pub envid: Option<EnvId>,
}

/// The DSN parameters of one RCPT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptDsn {
    /// `None` when NOTIFY was not given.
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

/// Everything stored on one outbound copy about its reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyDsn {
    pub mail: MailDsn,
    pub rcpt: RcptDsn,
}

impl CopyDsn {
    pub fn notify(&self) -> Notify {
        self.rcpt.notify.unwrap_or_else(Notify::absent)
    }

    /// The request as the sealed extension block carries it to the receiving site.
    pub fn sealed(&self) -> DsnRequest {
        DsnRequest {
            notify: self.rcpt.notify.map(|n| n.0),
            orcpt: self.rcpt.orcpt.as_ref().and_then(|o| {
                let (kind, address) = o.0.split_once(';')?;
                let kind = match kind {
                    "rfc822" => OrcptType::Rfc822,
                    "utf-8" => OrcptType::Utf8,
                    _ => return None,
                };
                Some((kind, address.to_string()))
            }),
            ret: self.mail.ret.map(|r| match r {
                Ret::Full => DsnRet::Full,
                Ret::Hdrs => DsnRet::Hdrs,
            }),
            envid: self.mail.envid.as_ref().map(|e| e.0.clone()),
        }
    }

    /// The request a peer sealed, validated again by the bridge's own rules (a value the bridge
    /// would not have accepted at LMTP is left out).
    pub fn from_sealed(sealed: &DsnRequest) -> CopyDsn {
        CopyDsn {
            mail: MailDsn {
                ret: sealed.ret.map(|r| match r {
                    DsnRet::Full => Ret::Full,
                    DsnRet::Hdrs => Ret::Hdrs,
                }),
                envid: sealed.envid.clone().and_then(EnvId::checked),
            },
            rcpt: RcptDsn {
                notify: sealed
                    .notify
                    .filter(|&b| DsnRequest::valid_notify(b))
                    .map(Notify),
                orcpt: sealed.orcpt.as_ref().and_then(|(kind, address)| {
                    Orcpt::from_stored(&format!("{};{address}", kind.keyword()))
                }),
            },
        }
    }
}

/// Takes RET and ENVID out of a `MAIL FROM:<…> params` line: the line without them, and their
/// values. A malformed or repeated one is an error naming it.
pub fn take_mail_params(line: &[u8]) -> Result<(Vec<u8>, MailDsn), String> {
    let mut dsn = MailDsn::default();
    let rest = take_params(line, |key, value| {
        if key.eq_ignore_ascii_case("RET") {
            let ret = Ret::from_keyword(value).ok_or("RET must be FULL or HDRS")?;
            once(&mut dsn.ret, ret, "RET").map(|_| true)
        } else if key.eq_ignore_ascii_case("ENVID") {
            once(&mut dsn.envid, EnvId::parse(value)?, "ENVID").map(|_| true)
        } else {
            Ok(false)
        }
    })?;
    Ok((rest, dsn))
}

/// Takes NOTIFY and ORCPT out of a `RCPT TO:<…> params` line, like [`take_mail_params`].
pub fn take_rcpt_params(line: &[u8]) -> Result<(Vec<u8>, RcptDsn), String> {
    let mut dsn = RcptDsn::default();
    let rest = take_params(line, |key, value| {
        if key.eq_ignore_ascii_case("NOTIFY") {
            once(&mut dsn.notify, parse_notify(value)?, "NOTIFY").map(|_| true)
        } else if key.eq_ignore_ascii_case("ORCPT") {
            once(&mut dsn.orcpt, Orcpt::parse(value)?, "ORCPT").map(|_| true)
        } else {
            Ok(false)
        }
    })?;
    Ok((rest, dsn))
}

/// `NEVER`, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1).
fn parse_notify(value: &str) -> Result<Notify, String> {
    let mut bits = 0;
    for word in value.split(',') {
        let bit = match word.to_ascii_uppercase().as_str() {
            "NEVER" => Notify::NEVER,
            "SUCCESS" => Notify::SUCCESS,
            "FAILURE" => Notify::FAILURE,
            "DELAY" => Notify::DELAY,
            _ => return Err("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY".into()),
        };
        if bits & bit != 0 {
            return Err("NOTIFY names a keyword twice".into());
        }
        bits |= bit;
    }
    if bits & Notify::NEVER != 0 && bits != Notify::NEVER {
        return Err("NOTIFY=NEVER cannot be combined with other keywords".into());
    }
    Ok(Notify(bits))
}

fn once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// Splits the parameters off after the path, hands each `KEY=value` to `take` (true: it was
/// ours, drop it) and returns the line rebuilt from the others.
fn take_params(
    line: &[u8],
    mut take: impl FnMut(&str, &str) -> Result<bool, String>,
) -> Result<Vec<u8>, String> {
    let end = path_end(line);
    let (head, params) = line.split_at(end);
    let mut out = head.to_vec();
    let params = std::str::from_utf8(params).map_err(|_| "8-bit data in parameters")?;
    for word in params.split([' ', '\t']).filter(|w| !w.is_empty()) {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        if !take(key, value)? {
            out.push(b' ');
            out.extend_from_slice(word.as_bytes());
        }
    }
    Ok(out)
}

/// Where the path of `MAIL FROM:<path>` / `RCPT TO:<path>` ends: after its closing `>` (quoted
/// strings and backslash escapes skipped), or at the first space when it has no brackets. A line
/// without ':' has no parameters to take.
fn path_end(line: &[u8]) -> usize {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return line.len();
    };
    let mut i = colon + 1;
    while line.get(i).is_some_and(|b| *b == b' ') {
        i += 1;
    }
    if line.get(i) != Some(&b'<') {
        return line[i..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(line.len(), |p| i + p);
    }
    let (mut quoted, mut escaped) = (false, false);
    for (at, &b) in line.iter().enumerate().skip(i + 1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return at + 1,
            _ => {}
        }
    }
    line.len()
}

/// xtext (RFC 3461 §4): `+HH` (hex) stands for one byte; every other character is printable
/// ASCII other than `+` and `=`. The result holds printable ASCII and spaces only.
fn decode_xtext(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        let byte = match b {
            b'+' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b'=' => return None,
            b if b.is_ascii_graphic() => b,
            _ => return None,
        };
        if !(0x20..0x7f).contains(&byte) {
            return None;
        }
        out.push(char::from(byte));
    }
    Some(out)
}

/// utf-8-addr-xtext (RFC 6533 §3): printable ASCII but `+`, `=`, `\`, and `\x{HEX}` escapes
/// of Unicode scalar values that are not ASCII controls.
fn check_utf8_addr_xtext(text: &str) -> Result<(), String> {
    let bad = || "ORCPT utf-8 address is not valid utf-8-addr-xtext".to_string();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(tail) = rest.strip_prefix("\\x{") {
            let close = tail.find('}').ok_or_else(bad)?;
            let hex = &tail[..close];
            let point = (1..=6)
                .contains(&hex.len())
                .then(|| u32::from_str_radix(hex, 16).ok())
                .flatten()
                .and_then(char::from_u32)
                .ok_or_else(bad)?;
            if point.is_control() {
                return Err(bad());
            }
            rest = &tail[close + 1..];
        } else if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            rest = &rest[1..];
        } else {
            return Err(bad());
        }
    }
    Ok(())
}

/// xtext-encodes `text` (RFC 3461 §4): every byte outside `!`..`~`, and `+` and `=`, as `+HH`.
/// The result holds only printable ASCII without spaces, whatever `text` holds.
pub fn encode_xtext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sealed_request_round_trips_and_is_validated_again() {
        let copy = CopyDsn {
            mail: take_mail_params(b"MAIL FROM:<a@x.test> RET=HDRS ENVID=e+2B1")
                .unwrap()
                .1,
            rcpt: take_rcpt_params(
                b"RCPT TO:<b@y.test> NOTIFY=SUCCESS ORCPT=utf-8;j\\x{F6}rg@y.test",
            )
            .unwrap()
            .1,
        };
        let sealed = copy.sealed();
        assert_eq!(sealed.envid.as_deref(), Some("e+1"));
        assert_eq!(sealed.notify, Some(Notify::SUCCESS));
        assert_eq!(CopyDsn::from_sealed(&sealed), copy);
        assert!(CopyDsn::default().sealed().is_empty());
        // A utf-8 ORCPT that is not utf-8-addr-xtext is left out by the bridge's own rules.
        let odd = DsnRequest {
            orcpt: Some((OrcptType::Utf8, "a\\x{0}b@y.test".into())),
            ..Default::default()
        };
        assert_eq!(CopyDsn::from_sealed(&odd).rcpt.orcpt, None);
    }

    #[test]
    fn rcpt_params_are_taken_out_and_decoded() {
        let line = b"RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+2Bx@Y.test";
        let (rest, dsn) = take_rcpt_params(line).unwrap();
        assert_eq!(rest, b"RCPT TO:<b@y.test>");
        let notify = dsn.notify.unwrap();
        assert!(notify.success() && notify.failure() && !notify.delay() && !notify.never());
        assert_eq!(dsn.orcpt.unwrap().field_value(), "rfc822; B+x@Y.test");
        let (rest, dsn) = take_rcpt_params(b"RCPT TO:<\"a b>\"@y.test> NOTIFY=never").unwrap();
        assert_eq!(rest, b"RCPT TO:<\"a b>\"@y.test>");
        assert!(dsn.notify.unwrap().never());
        let (_, dsn) =
            take_rcpt_params(b"RCPT TO:<b@y.test> ORCPT=utf-8;J\\x{F6}rg@y.test").unwrap();
        assert_eq!(dsn.orcpt.unwrap().as_stored(), "utf-8;J\\x{F6}rg@y.test");
    }

    #[test]
    fn mail_params_are_taken_out_and_others_kept() {
        let line = b"MAIL FROM:<a@x.test> SIZE=10 RET=hdrs ENVID=QQ+20314159 BODY=8BITMIME";
        let (rest, dsn) = take_mail_params(line).unwrap();
        assert_eq!(rest, b"MAIL FROM:<a@x.test> SIZE=10 BODY=8BITMIME");
        assert_eq!(dsn.ret, Some(Ret::Hdrs));
        assert_eq!(dsn.envid.unwrap().as_str(), "QQ 314159");
        let (rest, dsn) = take_mail_params(b"MAIL FROM:<>").unwrap();
        assert_eq!(
            (rest.as_slice(), dsn),
            (&b"MAIL FROM:<>"[..], MailDsn::default())
        );
    }

    #[test]
    fn malformed_params_are_refused_with_a_reason() {
        for line in [
            "RCPT TO:<b@y.test> NOTIFY=NEVER,SUCCESS",
            "RCPT TO:<b@y.test> NOTIFY=SUCCESS,SUCCESS",
            "RCPT TO:<b@y.test> NOTIFY=SOMETIMES",
            "RCPT TO:<b@y.test> NOTIFY=",
            "RCPT TO:<b@y.test> NOTIFY=DELAY NOTIFY=DELAY",
            "RCPT TO:<b@y.test> ORCPT=x400;b",
            "RCPT TO:<b@y.test> ORCPT=rfc822;",
            "RCPT TO:<b@y.test> ORCPT=rfc822;b+0D+0Ab@y.test",
            "RCPT TO:<b@y.test> ORCPT=rfc822;b+G1",
            "RCPT TO:<b@y.test> ORCPT=utf-8;b\\x{0A}",
            "RCPT TO:<b@y.test> ORCPT=utf-8;b\\x{D800}",
        ] {
            assert!(take_rcpt_params(line.as_bytes()).is_err(), "{line}");
        }
        let long = format!("RCPT TO:<b@y.test> ORCPT=rfc822;{}@y.test", "b".repeat(500));
        assert!(take_rcpt_params(long.as_bytes()).is_err());
        for line in [
            "MAIL FROM:<a@x.test> RET=BODY",
            "MAIL FROM:<a@x.test> RET=FULL RET=HDRS",
            "MAIL FROM:<a@x.test> ENVID=",
            "MAIL FROM:<a@x.test> ENVID=a+0Db",
        ] {
            assert!(take_mail_params(line.as_bytes()).is_err(), "{line}");
        }
        let envid = format!("MAIL FROM:<a@x.test> ENVID={}", "e".repeat(MAX_ENVID + 1));
        assert!(take_mail_params(envid.as_bytes()).is_err());
    }

    #[test]
    fn stored_values_are_checked_again() {
        assert!(Orcpt::from_stored("rfc822;b@y.test").is_some());
        assert!(Orcpt::from_stored("rfc822;b@y.test\r\nBcc: x").is_none());
        assert!(Orcpt::from_stored("x400;b").is_none());
        assert_eq!(Notify::from_bits(None), Notify::absent());
        assert_eq!(Notify::from_bits(Some(99)), Notify::absent());
        assert_eq!(encode_xtext("a b+c=d"), "a+20b+2Bc+3Dd");
    }
}
