//! The two texts a mixed message produces: the notice mailed to its sender under the `warn`
//! policy (an auto-reply from `<>`, so nothing answers it), and the one-line refusal under
//! `reject`. Composition is pure; [`send`] injects the notice into the local MTA.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::MilterConfig;
use super::recipients::Recipients;
use crate::address::{MailAddress, ReversePath};
use crate::delivery::{smtp_client, trace};

pub const SUBJECT: &str = "Not all recipients got your message end-to-end encrypted";
/// Addresses listed per class in a notice; the rest are counted.
const MAX_LISTED: usize = 50;
/// Reply text budget: mail clients show it in a dialog, and a milter reply line holds 980 bytes.
const MAX_REJECT_TEXT: usize = 400;

/// Everything a notice says, gathered at end of message.
#[derive(Clone, Debug)]
pub struct Notice {
    /// The envelope sender, who gets the notice; never empty.
    pub sender: String,
    /// The original message's Message-ID (`<…>`), for In-Reply-To and References.
    pub original_id: Option<String>,
    pub queue_id: Option<String>,
    pub recipients: Recipients,
}

impl Notice {
    /// The notice as an RFC 5322 message with CRLF line endings.
    pub fn to_message(&self, hostname: &str, now: SystemTime) -> Vec<u8> {
        let mut head = format!(
            "From: toxmail notice <MAILER-DAEMON@{hostname}>\r\n\
             To: <{}>\r\n\
             Subject: {SUBJECT}\r\n\
             Date: {}\r\n\
             Message-ID: {}\r\n",
            one_line(&self.sender),
            trace::rfc5322_date(now),
            new_message_id(hostname, now),
        );
        if let Some(id) = &self.original_id {
            head.push_str(&format!("In-Reply-To: {id}\r\nReferences: {id}\r\n"));
        }
        head.push_str(
            "Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n",
        );
        let mut out = head.into_bytes();
        out.extend(self.body(hostname).replace('\n', "\r\n").into_bytes());
        out
    }

    fn body(&self, hostname: &str) -> String {
        let which = match (&self.original_id, &self.queue_id) {
            (Some(id), _) => format!("  Message-ID: {id}\n"),
            (None, Some(queue_id)) => format!("  Queue ID: {queue_id}\n"),
            (None, None) => String::new(),
        };
        let (tox, tox_more) = self.recipients.tox();
        let (plain, plain_more) = self.recipients.plain();
        format!(
            "This is an automatic notice from the mail system at {hostname}.\n\n\
             Your message was accepted, but not every recipient gets it the same way.\n\
             {which}\n\
             These recipients get it end-to-end encrypted over Tox; only they can read it:\n\
             {}\n\
             These recipients get it through ordinary mail, which is not end-to-end\n\
             encrypted; mail servers on the way can read it:\n\
             {}\n\
             Nothing needs to be done now. To keep a confidential message end-to-end\n\
             encrypted, send it to the Tox recipients separately from the others.\n",
            listing(tox, tox_more),
            listing(plain, plain_more),
        )
    }
}

/// The refusal shown to the sender under the `reject` policy, naming the ordinary-mail
/// recipients within [`MAX_REJECT_TEXT`] bytes. `%` is doubled: Postfix reads milter replies
/// as Sendmail format strings and halves it again.
pub fn reject_text(recipients: &Recipients) -> String {
    let (plain, more) = recipients.plain();
    let total = plain.len() + more;
    let (noun, verb) = if total == 1 {
        ("recipient", "is")
    } else {
        ("recipients", "are")
    };
    let tail = format!(" {verb} not reachable over Tox; send to them separately");
    let mut text = format!("{noun} ");
    let mut listed = 0;
    for address in plain {
        let address = one_line(address).replace('%', "%%");
        let separator = if listed == 0 { "" } else { ", " };
        // Room for " and N more" unless this address is the last one.
        let unlisted_after = total - listed - 1;
        let reserve = match unlisted_after {
            0 => 0,
            n => format!(" and {n} more").len(),
        };
        let needed = text.len() + separator.len() + address.len() + reserve + tail.len();
        if needed > MAX_REJECT_TEXT {
            break;
        }
        text.push_str(separator);
        text.push_str(&address);
        listed += 1;
    }
    if listed < total {
        text.push_str(&format!(" and {} more", total - listed));
    }
    text.push_str(&tail);
    text
}

/// Injects the notice into `notice_hop` from `<>`; failures are logged, never retried (the
/// original message is unaffected, and a late notice is worth less than none).
pub async fn send(config: &MilterConfig, notice: Notice) {
    let queue_id = notice.queue_id.as_deref().unwrap_or("-");
    let Ok(sender) = MailAddress::parse(&notice.sender) else {
        tracing::warn!(
            queue_id,
            "mixed-recipient notice not sent: sender is not a plain address"
        );
        return;
    };
    let message = notice.to_message(&config.hostname, SystemTime::now());
    let hop = &config.notice_hop;
    let result =
        smtp_client::send(hop, &config.hostname, &ReversePath::Null, &sender, &message).await;
    match result {
        Ok(()) => tracing::info!(queue_id, sender = %notice.sender, "mixed-recipient notice sent"),
        Err(e) => tracing::warn!(queue_id, error = %e, "mixed-recipient notice not sent"),
    }
}

/// Indented lines of addresses, then "… and N more".
fn listing(addresses: &[String], unlisted: usize) -> String {
    let shown = addresses.len().min(MAX_LISTED);
    let mut out: String = addresses[..shown]
        .iter()
        .map(|a| format!("  {}\n", one_line(a)))
        .collect();
    let more = addresses.len() - shown + unlisted;
    if more > 0 {
        out.push_str(&format!("  ... and {more} more\n"));
    }
    out
}

/// Printable on one line: control characters become `?`.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A fresh `<…@hostname>` for the notice itself.
fn new_message_id(hostname: &str, now: SystemTime) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "<toxmail-notice.{}.{}.{}.{}@{hostname}>",
        since.as_secs(),
        since.subsec_nanos(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postfix::milter::recipients::Class;

    fn mixed(plain: &[&str]) -> Recipients {
        let mut r = Recipients::default();
        r.push(Class::Tox, "bob@b.test");
        for address in plain {
            r.push(Class::Plain, address);
        }
        r
    }

    #[test]
    fn notice_is_an_auto_reply_naming_both_kinds_of_recipient() {
        let notice = Notice {
            sender: "alice@a.test".into(),
            original_id: Some("<m1@a.test>".into()),
            queue_id: Some("4abc".into()),
            recipients: mixed(&["dave@plain.test"]),
        };
        let message = notice.to_message("mx.a.test", UNIX_EPOCH);
        let text = String::from_utf8(message).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        for line in [
            "From: toxmail notice <MAILER-DAEMON@mx.a.test>",
            "To: <alice@a.test>",
            &format!("Subject: {SUBJECT}"),
            "Date: Thu, 01 Jan 1970 00:00:00 +0000",
            "In-Reply-To: <m1@a.test>",
            "References: <m1@a.test>",
            "Auto-Submitted: auto-replied",
        ] {
            assert!(head.lines().any(|l| l == line), "{line} in\n{head}");
        }
        let tox = body.find("end-to-end encrypted over Tox").unwrap();
        let plain = body.find("ordinary mail").unwrap();
        assert!(tox < body.find("  bob@b.test\r\n").unwrap());
        assert!(plain < body.find("  dave@plain.test\r\n").unwrap());
        assert!(body.find("  bob@b.test").unwrap() < plain);
        assert!(text.lines().all(|l| l.len() <= 78), "{text}");
        assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only");
    }

    #[test]
    fn notice_without_message_id_has_no_in_reply_to() {
        let notice = Notice {
            sender: "alice@a.test".into(),
            original_id: None,
            queue_id: Some("4abc".into()),
            recipients: mixed(&["dave@plain.test"]),
        };
        let text = String::from_utf8(notice.to_message("mx.a.test", UNIX_EPOCH)).unwrap();
        assert!(!text.contains("In-Reply-To") && !text.contains("References"));
        assert!(text.contains("\r\n  Queue ID: 4abc\r\n"));
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let addresses: Vec<String> = (0..60).map(|i| format!("u{i}@plain.test")).collect();
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let listed = listing(&addresses, 3);
        assert_eq!(listed.lines().count(), MAX_LISTED + 1);
        assert!(listed.ends_with("  ... and 13 more\n"));

        let text = reject_text(&mixed(&refs));
        assert!(text.len() <= MAX_REJECT_TEXT, "{}", text.len());
        assert!(
            text.starts_with("recipients u0@plain.test, u1@plain.test, "),
            "{text}"
        );
        assert!(text.ends_with(" more are not reachable over Tox; send to them separately"));
    }

    #[test]
    fn reject_text_reads_well_for_one_and_escapes_percent() {
        assert_eq!(
            reject_text(&mixed(&["dave@plain.test"])),
            "recipient dave@plain.test is not reachable over Tox; send to them separately"
        );
        assert_eq!(
            reject_text(&mixed(&["a%b@plain.test", "c@plain.test"])),
            "recipients a%%b@plain.test, c@plain.test are not reachable over Tox; \
             send to them separately"
        );
    }
}
