//! Trace headers the receiving bridge prepends before injecting: a `Received:` line (informational),
//! the verified sender key, and an RFC 8601 `Authentication-Results:` header with this bridge's
//! verdict; and the removal of such headers that arrive inside a message, where anyone could have
//! written them. RFC 5322 dates are formatted by hand (no date crate in the tree); the header
//! section is scanned by hand too (mail-parser decodes values, we must cut raw fields out).

use std::time::{SystemTime, UNIX_EPOCH};

use toxmail_protocol::{MessageId, PublicKey};

use super::inbound::admission::Verdict;
use crate::address::ReversePath;

/// The RFC 8601 method name of toxmail's sender check (an unregistered, `x-` method).
pub const AUTH_METHOD: &str = "x-toxmail";

/// Header naming the sender's Tox public key, verified by the envelope's authentication.
pub const SENDER_HEADER: &str = "X-Toxmail-Sender-Key";

pub fn trace_headers(
    hostname: &str,
    sender: &PublicKey,
    id: &MessageId,
    now: SystemTime,
) -> String {
    format!(
        "Received: from tox (toxmail peer {sender})\r\n\tby {hostname} (toxmail) with TOX id {id};\r\n\t{}\r\n\
         {SENDER_HEADER}: {sender}\r\n",
        rfc5322_date(now)
    )
}

/// `Authentication-Results: <hostname>; x-toxmail=<result> (<basis>) smtp.mailfrom=<sender>`.
/// The sender is a validated address (no CR/LF, no specials), so it cannot break the header.
pub fn authentication_results(hostname: &str, verdict: Verdict, sender: &ReversePath) -> String {
    let mut line = format!(
        "Authentication-Results: {hostname}; {AUTH_METHOD}={}",
        verdict.result()
    );
    if let Some(basis) = verdict.basis() {
        line.push_str(&format!(" ({basis})"));
    }
    match sender.address() {
        Some(a) => line.push_str(&format!(" smtp.mailfrom={a}")),
        None => line.push_str(" smtp.mailfrom=<>"),
    }
    line.push_str("\r\n");
    line
}

/// Removes from the message's header section every `X-Toxmail-*` field and every
/// `Authentication-Results` field that names `hostname` as its authserv-id: only this bridge
/// writes those, so a copy that came inside the message is forged. Other fields, the body and
/// line ends are left byte for byte.
pub fn strip_forged_headers(message: &[u8], hostname: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut rest = message;
    let mut dropping = false;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        if line == b"\r\n" || line == b"\n" {
            break; // end of the header section: the rest is copied as is
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            dropping = is_forged_field(line, hostname);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        rest = tail;
    }
    out.extend_from_slice(rest);
    out
}

/// The first line of a field: is it ours to have written?
fn is_forged_field(line: &[u8], hostname: &str) -> bool {
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return false;
    };
    let name = String::from_utf8_lossy(&line[..colon]);
    let name = name.trim_end();
    if name.len() >= 10 && name[..10].eq_ignore_ascii_case("x-toxmail-") {
        return true;
    }
    if !name.eq_ignore_ascii_case("authentication-results") {
        return false;
    }
    // authserv-id: the first token of the value (RFC 8601 §2.2), before any ';'.
    let value = String::from_utf8_lossy(&line[colon + 1..]);
    let id = value
        .trim_start()
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(hostname)
}

/// "Wed, 25 Nov 2026 16:42:07 +0000".
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let (y, mo, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {h:02}:{m:02}:{s:02} +0000",
        WD[days.rem_euclid(7) as usize],
        MO[(mo - 1) as usize]
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_match_known_instants() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc5322_date(at(0)), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(1_795_624_927)),
            "Wed, 25 Nov 2026 16:42:07 +0000"
        );
    }

    #[test]
    fn forged_toxmail_and_own_authentication_results_are_removed() {
        let message = b"Received: from x\r\n\
            X-Toxmail-Sender-Key: ABAB\r\n\
            x-toxmail-verdict:\r\n pass\r\n\tstill folded\r\n\
            Authentication-Results: MX.B.test; x-toxmail=pass\r\n\
            Authentication-Results:mx.b.test;\r\n  spf=pass\r\n\
            Authentication-Results: other.test; x-toxmail=pass\r\n\
            Subject: hi\r\n\
            \r\n\
            X-Toxmail-Sender-Key: in the body stays\r\n";
        let kept = strip_forged_headers(message, "mx.b.test");
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            "Received: from x\r\n\
             Authentication-Results: other.test; x-toxmail=pass\r\n\
             Subject: hi\r\n\
             \r\n\
             X-Toxmail-Sender-Key: in the body stays\r\n"
        );
        let bare = b"X-Toxmail-A: 1\nSubject: s\n\nbody";
        assert_eq!(strip_forged_headers(bare, "h"), b"Subject: s\n\nbody");
        assert_eq!(
            strip_forged_headers(b"no header end", "h"),
            b"no header end"
        );
    }

    #[test]
    fn authentication_results_names_the_verdict_and_the_sender() {
        use crate::delivery::inbound::admission::Basis;
        let sender = ReversePath::parse("alice@a.test").unwrap();
        let h = authentication_results("mx.b.test", Verdict::Pass(Basis::Contact), &sender);
        assert_eq!(
            h,
            "Authentication-Results: mx.b.test; x-toxmail=pass (contact) smtp.mailfrom=alice@a.test\r\n"
        );
        let h = authentication_results("mx.b.test", Verdict::None, &ReversePath::Null);
        assert!(h.ends_with("x-toxmail=none smtp.mailfrom=<>\r\n"), "{h}");
    }

    #[test]
    fn trace_headers_are_folded_crlf_lines() {
        let h = trace_headers(
            "mx.b.test",
            &PublicKey([0xab; 32]),
            &MessageId([1; 32]),
            UNIX_EPOCH,
        );
        assert!(h.starts_with("Received: from tox (toxmail peer ABAB"));
        assert!(h.ends_with(&format!("{SENDER_HEADER}: {}\r\n", PublicKey([0xab; 32]))));
        assert!(h.lines().all(|l| l.len() < 998));
    }
}
