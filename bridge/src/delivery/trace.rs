//! Trace headers the receiving bridge prepends before injecting: a `Received:` line and the
//! verified sender key. RFC 5322 dates are formatted by hand (no date crate in the tree).

use std::time::{SystemTime, UNIX_EPOCH};

use toxmail_protocol::{MessageId, PublicKey};

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
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
