//! What the milter decides, without I/O: the class of each recipient (from Postfix's
//! `{rcpt_mailer}`/`{rcpt_host}`), the recipients of one message, and the policy's verdict.

use super::MixedPolicy;

/// Recipients kept per message; more are counted, not listed. Postfix's own default
/// `smtpd_recipient_limit` is 1000.
pub const MAX_KEPT: usize = 1000;
/// Longest address kept (64-byte local part, `@`, 255-byte domain).
pub const MAX_ADDRESS: usize = 320;

/// How one recipient's copy travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// End-to-end encrypted over Tox (the bridge's LMTP transport).
    Tox,
    /// Any other transport: ordinary mail.
    Plain,
}

/// The class Postfix's routing gave a recipient, or `None` when `{rcpt_mailer}` is missing.
///
/// `tox_transport` is either a transport name (`toxlmtp`), compared with `{rcpt_mailer}`, or a
/// whole `transport:nexthop` (`lmtp:inet:[127.0.0.1]:2424`), compared with
/// `{rcpt_mailer}:{rcpt_host}`: the second form is for sites (Zimbra) where the socketmap
/// answers with the stock `lmtp` transport that local mailboxes use too.
pub fn classify(tox_transport: &str, mailer: Option<&str>, host: Option<&str>) -> Option<Class> {
    let mailer = mailer?;
    let is_tox = match tox_transport.split_once(':') {
        None => mailer == tox_transport,
        Some((transport, nexthop)) => mailer == transport && host == Some(nexthop),
    };
    Some(if is_tox { Class::Tox } else { Class::Plain })
}

/// The recipients of one message, in RCPT order, each once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipients {
    tox: Vec<String>,
    plain: Vec<String>,
    /// Recipients beyond [`MAX_KEPT`], per class: (tox, plain).
    unlisted: (usize, usize),
}

impl Recipients {
    pub fn push(&mut self, class: Class, address: &str) {
        let address = bounded(address);
        let known = |list: &[String]| list.iter().any(|a| a.eq_ignore_ascii_case(&address));
        if known(&self.tox) || known(&self.plain) {
            return;
        }
        let full = self.tox.len() + self.plain.len() >= MAX_KEPT;
        match (class, full) {
            (Class::Tox, false) => self.tox.push(address),
            (Class::Plain, false) => self.plain.push(address),
            (Class::Tox, true) => self.unlisted.0 += 1,
            (Class::Plain, true) => self.unlisted.1 += 1,
        }
    }

    /// Addresses that get the message over Tox, and how many more were not kept.
    pub fn tox(&self) -> (&[String], usize) {
        (&self.tox, self.unlisted.0)
    }

    /// Addresses that get the message as ordinary mail, and how many more were not kept.
    pub fn plain(&self) -> (&[String], usize) {
        (&self.plain, self.unlisted.1)
    }

    /// Both classes are present: some copies go end-to-end encrypted, others do not.
    pub fn is_mixed(&self) -> bool {
        let tox = !self.tox.is_empty() || self.unlisted.0 > 0;
        let plain = !self.plain.is_empty() || self.unlisted.1 > 0;
        tox && plain
    }
}

/// What to do with a message at end of data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accept, nothing else.
    Accept,
    /// Accept, then send the envelope sender a notice.
    Notify,
    /// Refuse the whole message.
    Reject,
}

/// Only mixed messages are acted on; a null sender (a bounce or a notice) gets no notice.
pub fn decide(policy: MixedPolicy, sender: &str, recipients: &Recipients) -> Verdict {
    if !recipients.is_mixed() {
        return Verdict::Accept;
    }
    match policy {
        MixedPolicy::Allow => Verdict::Accept,
        MixedPolicy::Warn if sender.is_empty() => Verdict::Accept,
        MixedPolicy::Warn => Verdict::Notify,
        MixedPolicy::Reject => Verdict::Reject,
    }
}

/// The `<…>` token of a Message-ID header value, if it is one usable in In-Reply-To:
/// printable ASCII without spaces, at most 900 bytes (a header line holds 998).
pub fn message_id(value: &str) -> Option<String> {
    let start = value.find('<')?;
    let end = start + value[start..].find('>')?;
    let id = &value[start..=end];
    let printable = id.bytes().all(|b| b.is_ascii_graphic());
    (printable && id.len() > 2 && id.len() <= 900).then(|| id.to_string())
}

/// An address cut to [`MAX_ADDRESS`] characters, controls replaced, brackets removed.
fn bounded(address: &str) -> String {
    let address = address.trim();
    let address = address.strip_prefix('<').unwrap_or(address);
    let address = address.strip_suffix('>').unwrap_or(address);
    address
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_ADDRESS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_compares_the_mailer_or_the_whole_nexthop() {
        let hop = Some("inet:[127.0.0.1]:2424");
        let table = [
            ("toxlmtp", Some("toxlmtp"), hop, Some(Class::Tox)),
            (
                "toxlmtp",
                Some("smtp"),
                Some("[relay]:25"),
                Some(Class::Plain),
            ),
            ("toxlmtp", Some("virtual"), None, Some(Class::Plain)),
            ("toxlmtp", None, hop, None),
            (
                "lmtp:inet:[127.0.0.1]:2424",
                Some("lmtp"),
                hop,
                Some(Class::Tox),
            ),
            (
                "lmtp:inet:[127.0.0.1]:2424",
                Some("lmtp"),
                Some("unix:private/dovecot-lmtp"),
                Some(Class::Plain),
            ),
            (
                "lmtp:inet:[127.0.0.1]:2424",
                Some("lmtp"),
                None,
                Some(Class::Plain),
            ),
        ];
        for (transport, mailer, host, expected) in table {
            assert_eq!(
                classify(transport, mailer, host),
                expected,
                "{transport} {mailer:?} {host:?}"
            );
        }
    }

    #[test]
    fn recipients_are_kept_once_in_order_and_counted_past_the_cap() {
        let mut r = Recipients::default();
        r.push(Class::Tox, "<bob@b.test>");
        r.push(Class::Plain, "dave@plain.test");
        r.push(Class::Plain, "BOB@b.test");
        r.push(Class::Plain, "erin@plain.test");
        assert_eq!(r.tox(), (&["bob@b.test".to_string()][..], 0));
        assert_eq!(r.plain().0, ["dave@plain.test", "erin@plain.test"]);
        assert!(r.is_mixed());

        let mut many = Recipients::default();
        for i in 0..MAX_KEPT {
            many.push(Class::Plain, &format!("u{i}@plain.test"));
        }
        assert!(!many.is_mixed());
        many.push(Class::Tox, "late@b.test");
        assert_eq!(many.tox(), (&[][..], 1));
        assert!(many.is_mixed(), "an unlisted Tox recipient still counts");
    }

    #[test]
    fn only_mixed_messages_are_acted_on() {
        let mut mixed = Recipients::default();
        mixed.push(Class::Tox, "bob@b.test");
        mixed.push(Class::Plain, "dave@plain.test");
        let mut tox_only = Recipients::default();
        tox_only.push(Class::Tox, "bob@b.test");
        use MixedPolicy::*;
        let table = [
            (Warn, "alice@a.test", &mixed, Verdict::Notify),
            (Warn, "", &mixed, Verdict::Accept),
            (Reject, "alice@a.test", &mixed, Verdict::Reject),
            (Reject, "", &mixed, Verdict::Reject),
            (Allow, "alice@a.test", &mixed, Verdict::Accept),
            (Warn, "alice@a.test", &tox_only, Verdict::Accept),
            (Reject, "alice@a.test", &tox_only, Verdict::Accept),
            (
                Reject,
                "alice@a.test",
                &Recipients::default(),
                Verdict::Accept,
            ),
        ];
        for (policy, sender, recipients, expected) in table {
            assert_eq!(
                decide(policy, sender, recipients),
                expected,
                "{policy:?} {sender:?}"
            );
        }
    }

    #[test]
    fn message_ids_are_taken_only_when_usable() {
        assert_eq!(message_id("<a.b@c.test>").as_deref(), Some("<a.b@c.test>"));
        assert_eq!(
            message_id("\n\t<a@c.test> (comment)").as_deref(),
            Some("<a@c.test>")
        );
        assert_eq!(message_id("a@c.test"), None);
        assert_eq!(message_id("<a b@c.test>"), None);
        assert_eq!(message_id("<>"), None);
        assert_eq!(message_id(&format!("<{}@c.test>", "x".repeat(1000))), None);
    }
}
