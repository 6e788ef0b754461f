//! Delivery status notifications: once Postfix has our 250 the bridge owns the recipient, so it
//! tells the envelope sender when delivery over Tox failed, is late, or happened. [`build`] writes
//! an RFC 3464 report inside multipart/report (RFC 6522) and does no I/O; [`send`] injects it into
//! the local MTA with `MAIL FROM:<>`. Everything emitted is 7-bit ASCII (see [`DsnError::Address`]).

use std::time::SystemTime;

use toxmail_protocol::MessageId;

use super::smtp_client::{self, SmtpError};
use super::trace::rfc5322_date;
use crate::address::{MailAddress, ReversePath};
use crate::config::NextHop;

/// Names the bridge's queue entry, as a message header and as a per-message delivery-status
/// extension field (Postfix uses `X-Postfix-Queue-ID` the same way; `X-` names are private).
pub const QUEUE_ID_FIELD: &str = "X-Toxmail-Queue-ID";
/// Per-message extension field with the original envelope sender (Postfix: `X-Postfix-Sender`).
pub const SENDER_FIELD: &str = "X-Toxmail-Sender";

/// Header lines are folded at the first space past this width...
const FOLD_WIDTH: usize = 78;
/// ...and a run without spaces longer than this is cut into pieces (unfolding then reads a space
/// there). With the longest field name this keeps every line under RFC 5322's 998 bytes.
const MAX_WORD: usize = 900;
const TEXT_WIDTH: usize = 72;
const MAX_DIAGNOSTIC: usize = 4000;
const MAX_ADDRESS: usize = 320;
const MAX_MESSAGE_ID: usize = 500;
const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;

/// RFC 3464 §2.3.3 actions the bridge reports (`expanded` is not something it does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Given up: expired in the queue or refused permanently by the peer.
    Failed,
    /// Still queued; a warning, retried until `will_retry_until`.
    Delayed,
    /// Handed over to Tox without an end-to-end acknowledgement.
    Relayed,
    /// The peer's bridge acknowledged that it stored the message.
    Delivered,
}

impl Action {
    pub fn keyword(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
            Action::Delivered => "delivered",
        }
    }
}

/// One per-recipient block.
#[derive(Clone, Debug)]
pub struct RecipientStatus {
    /// `user@domain` (emitted as `rfc822; user@domain`); ASCII only.
    pub final_recipient: String,
    pub action: Action,
    /// RFC 3463 code, e.g. (5, 4, 7); its class must match `action` (5 failed, 4 delayed, 2 else).
    pub status: (u8, u16, u16),
    /// Words an operator understands, emitted as `Diagnostic-Code: X-tox; <text>` (omitted when
    /// empty). Control characters become spaces, other non-ASCII characters `?`.
    pub diagnostic: String,
    /// ORCPT as the Original-Recipient field writes it (`rfc822; bob@b.test`), when given.
    pub original_recipient: Option<String>,
    pub last_attempt: Option<SystemTime>,
    /// Emitted only for [`Action::Delayed`].
    pub will_retry_until: Option<SystemTime>,
}

/// Everything a report says about one original message.
#[derive(Clone, Debug)]
pub struct Report {
    /// e.g. `dns; mx.a.test` (a bare host gets `dns; `; empty means the `build` host name).
    pub reporting_mta: String,
    /// Envelope sender of the original, ASCII, without angle brackets; the report goes to it.
    pub original_sender: String,
    /// Message-ID of the original, with or without angle brackets: In-Reply-To and References.
    pub original_message_id: Option<String>,
    /// Subject of the original, named in the human-readable part.
    pub original_subject: Option<String>,
    /// ENVID of the original transaction (RFC 3461), as Original-Envelope-Id.
    pub envelope_id: Option<String>,
    /// The bridge's queue entry, as [`QUEUE_ID_FIELD`].
    pub original_queue_id: Option<String>,
    pub arrival: Option<SystemTime>,
    pub recipients: Vec<RecipientStatus>,
    /// The original's header section, attached as text/rfc822-headers when known and
    /// `original_message` is not.
    pub original_headers: Option<Vec<u8>>,
    /// The whole original, attached as message/rfc822 (RET=FULL) when known.
    pub original_message: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DsnError {
    /// RFC 5321 §6.1: never a notification about mail from `<>` (or from a mailer daemon).
    #[error("no notification for mail from {0:?}: null or mailer-daemon sender")]
    NotNotifiable(String),
    #[error("a report needs at least one recipient")]
    NoRecipients,
    /// Addresses must be plain ASCII `local@domain` without quoting: our SMTP client does not
    /// negotiate SMTPUTF8 and we do not emit message/global-delivery-status (RFC 6533).
    #[error("{field} {value:?} is not a plain ASCII address")]
    Address { field: &'static str, value: String },
    #[error("status {0} does not fit action {1}")]
    Status(String, &'static str),
    #[error("{0:?} is not a host name")]
    Hostname(String),
    #[error("the mail system did not take the notification: {0}")]
    Smtp(#[from] SmtpError),
}

impl DsnError {
    /// Only a failed hand-over that the MTA did not refuse permanently is worth retrying.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DsnError::Smtp(e) if !e.is_permanent())
    }
}

/// False for the null sender and MAILER-DAEMON-ish senders, so reports never loop.
pub fn should_notify(envelope_sender: &str) -> bool {
    let address = bare(envelope_sender);
    let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
    !address.is_empty()
        && !["mailer-daemon", "double-bounce"]
            .iter()
            .any(|daemon| local.eq_ignore_ascii_case(daemon))
}

/// The whole report message, CRLF line ends. `message_id_domain` is the bridge's host name: it
/// ends the Message-ID and names the `MAILER-DAEMON@` sender.
pub fn build(
    report: &Report,
    now: SystemTime,
    message_id_domain: &str,
) -> Result<Vec<u8>, DsnError> {
    let host = host_name(message_id_domain)?;
    let to = bare(&report.original_sender);
    if !should_notify(to) {
        return Err(DsnError::NotNotifiable(report.original_sender.clone()));
    }
    check_address("original sender", to)?;
    if report.recipients.is_empty() {
        return Err(DsnError::NoRecipients);
    }
    report.recipients.iter().try_for_each(check_recipient)?;
    let boundary = format!("=_toxmail_{}", random_token());
    let (text, status) = (explanation(report, host), delivery_status(report, host, to));
    let mut parts = vec![
        ("Notification", "text/plain; charset=us-ascii", text),
        ("Delivery report", "message/delivery-status", status),
    ];
    let headers = report.original_headers.as_deref().map(header_section);
    let full = report.original_message.as_deref();
    if let Some(headers) = headers.filter(|h| !h.is_empty() && full.is_none()) {
        parts.push(("Original message headers", "text/rfc822-headers", headers));
    }
    let eight_bit = full.is_some_and(|m| !m.is_ascii());
    let mut out = top_headers(report, now, host, to, &boundary, eight_bit);
    out.push("\r\nThis is a MIME-encapsulated message.\r\n");
    for (description, content_type, body) in parts {
        out.push(&format!("\r\n--{boundary}\r\n"));
        out.field("Content-Description", description);
        out.field("Content-Type", content_type);
        out.push("\r\n");
        out.push(&body);
    }
    let mut bytes = out.0.into_bytes();
    if let Some(message) = full {
        bytes.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        bytes.extend_from_slice(b"Content-Description: Undelivered Message\r\n");
        bytes.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        append_crlf(&mut bytes, message);
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(bytes)
}

/// The original's lines with CRLF ends (bare LF and bare CR become CRLF), ending in CRLF.
fn append_crlf(out: &mut Vec<u8>, message: &[u8]) {
    let mut lines = message.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if lines.peek().is_none() && line.is_empty() {
            break;
        }
        for piece in line.split(|b| *b == b'\r') {
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Builds the report for now and hands it to `hop` from `<>` to the original sender; refuses
/// (in `build`, before connecting) when [`should_notify`] says no.
pub async fn send(hop: &NextHop, hostname: &str, report: &Report) -> Result<(), DsnError> {
    let message = build(report, SystemTime::now(), hostname)?;
    let to = bare(&report.original_sender);
    let rcpt = MailAddress::parse(to).map_err(|_| DsnError::Address {
        field: "original sender",
        value: to.to_string(),
    })?;
    smtp_client::send(hop, hostname, &ReversePath::Null, &rcpt, &message).await?;
    tracing::info!(to, "delivery status notification sent");
    Ok(())
}

fn top_headers(
    report: &Report,
    now: SystemTime,
    host: &str,
    to: &str,
    boundary: &str,
    eight_bit: bool,
) -> Lines {
    let mut out = Lines::default();
    let from = format!("\"Mail Delivery System\" <MAILER-DAEMON@{host}>");
    out.field("From", &from);
    out.field("To", &format!("<{to}>"));
    out.field("Subject", subject(&report.recipients));
    out.field("Date", &rfc5322_date(now));
    out.field("Message-ID", &format!("<{}.dsn@{host}>", random_token()));
    if let Some(id) = report.original_message_id.as_deref().and_then(message_id) {
        out.field("In-Reply-To", &id);
        out.field("References", &id);
    }
    // RFC 3834 §5.3: a direct reply to a message, which responders must not answer.
    out.field("Auto-Submitted", "auto-replied");
    if let Some(queue_id) = queue_id(report) {
        out.field(QUEUE_ID_FIELD, &queue_id);
    }
    out.field("MIME-Version", "1.0");
    let content_type =
        format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\"");
    out.field("Content-Type", &content_type);
    out.field(
        "Content-Transfer-Encoding",
        if eight_bit { "8bit" } else { "7bit" },
    );
    out
}

/// What the report is mostly about: any failure, else any delay, else a success.
fn overall(recipients: &[RecipientStatus]) -> Action {
    let any = |action| recipients.iter().any(|r| r.action == action);
    match () {
        _ if any(Action::Failed) => Action::Failed,
        _ if any(Action::Delayed) => Action::Delayed,
        _ => Action::Delivered,
    }
}

fn subject(recipients: &[RecipientStatus]) -> &'static str {
    match overall(recipients) {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        Action::Relayed | Action::Delivered => "Successful Mail Delivery Report",
    }
}

/// The human-readable part.
fn explanation(report: &Report, host: &str) -> String {
    let mut out = Lines::default();
    out.paragraph(&format!(
        "This is the mail system at host {host}, a toxmail bridge that carries mail over the \
         Tox network."
    ));
    out.paragraph(match overall(&report.recipients) {
        Action::Failed => {
            "Your message could not be delivered to one or more recipients. The bridge has \
             given up on them; you may want to reach them another way or send it again later."
        }
        Action::Delayed => {
            "Your message has not yet been delivered to one or more recipients. This is only \
             a warning: you do not need to send it again. Delivery is retried until the time \
             given below, and you will be told if it finally fails."
        }
        _ => "Your message was passed on as shown below. You do not need to do anything.",
    });
    for r in &report.recipients {
        let last = r.last_attempt.map(rfc5322_date);
        out.wrap("", &format!("<{}>: {}", r.final_recipient, outcome(r)));
        out.wrap("    Reason: ", &diagnostic(&r.diagnostic));
        out.wrap("    Last attempt: ", &last.unwrap_or_default());
        out.push("\r\n");
    }
    out.paragraph(match (&report.original_message, &report.original_headers) {
        (Some(_), _) => "Your message is attached. These details identify it:",
        (None, Some(_)) => {
            "Your message travelled end-to-end encrypted over Tox; its headers are attached, \
             not its content. These details identify it:"
        }
        (None, None) => {
            "Your message travelled end-to-end encrypted over Tox and this server keeps no \
             readable copy, so the message itself is not attached. These details identify it:"
        }
    });
    let id = report.original_message_id.as_deref().and_then(message_id);
    let subject = report
        .original_subject
        .as_deref()
        .map(|s| diagnostic_bounded(s, 200));
    let details = [
        ("Subject", subject),
        ("Message-ID", id),
        ("Envelope ID", report.envelope_id.as_deref().map(clean)),
        ("Queue ID", queue_id(report)),
        ("Received", report.arrival.map(rfc5322_date)),
    ];
    for (name, value) in details {
        out.wrap(&format!("    {name}: "), &value.unwrap_or_default());
    }
    out.push("\r\n");
    let help = "If you need help, forward this notice to your postmaster.";
    out.fold("", "", help, TEXT_WIDTH);
    out.0
}

fn outcome(r: &RecipientStatus) -> String {
    let status = status_text(r.status);
    let until = r.will_retry_until.map(rfc5322_date);
    let until = until.map(|t| format!(" until {t}"));
    match r.action {
        Action::Failed => format!("not delivered (status {status})."),
        Action::Delayed => format!(
            "not delivered yet (status {status}); still being retried{}.",
            until.unwrap_or_default()
        ),
        Action::Delivered => format!(
            "delivered: the recipient's bridge confirmed it has the message (status {status})."
        ),
        Action::Relayed => format!(
            "handed to a relay node that holds it, sealed, until the recipient's mail server \
             comes online (status {status}); the relay reports delivery when it can, but no \
             further notice is certain."
        ),
    }
}

/// The message/delivery-status body: per-message fields, then one block per recipient.
fn delivery_status(report: &Report, host: &str, sender: &str) -> String {
    let mut out = Lines::default();
    if let Some(envid) = report.envelope_id.as_deref().map(clean) {
        out.field("Original-Envelope-Id", &envid);
    }
    let mta = clean(&report.reporting_mta);
    let mta = match mta.as_str() {
        "" => format!("dns; {host}"),
        typed if typed.contains(';') => mta,
        bare_host => format!("dns; {bare_host}"),
    };
    out.field("Reporting-MTA", &mta);
    if let Some(queue_id) = queue_id(report) {
        out.field(QUEUE_ID_FIELD, &queue_id);
    }
    out.field(SENDER_FIELD, &format!("rfc822; {sender}"));
    out.date("Arrival-Date", report.arrival);
    for r in &report.recipients {
        out.push("\r\n");
        if let Some(orcpt) = r.original_recipient.as_deref().map(clean) {
            out.field("Original-Recipient", &orcpt);
        }
        out.field("Final-Recipient", &format!("rfc822; {}", r.final_recipient));
        out.field("Action", r.action.keyword());
        out.field("Status", &status_text(r.status));
        let diagnostic = diagnostic(&r.diagnostic);
        if !diagnostic.is_empty() {
            out.field("Diagnostic-Code", &format!("X-tox; {diagnostic}"));
        }
        out.date("Last-Attempt-Date", r.last_attempt);
        if r.action == Action::Delayed {
            out.date("Will-Retry-Until", r.will_retry_until);
        }
    }
    out.0
}

/// The original's header section only, CRLF, ASCII (other bytes become `?`), bounded.
fn header_section(raw: &[u8]) -> String {
    let mut out = String::new();
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || out.len() + line.len() + 2 > MAX_ORIGINAL_HEADERS {
            break;
        }
        let printable = |b: &u8| *b == b'\t' || (0x20..0x7f).contains(b);
        let text = line.iter().take(MAX_WORD);
        out.extend(text.map(|b| if printable(b) { char::from(*b) } else { '?' }));
        out.push_str("\r\n");
    }
    out
}

/// CRLF-terminated ASCII lines under construction.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn push(&mut self, text: &str) {
        self.0.push_str(text);
    }

    /// `Name: value` with the value cleaned of CR, LF and other controls (so nothing can start
    /// a new field) and folded before a space.
    fn field(&mut self, name: &str, value: &str) {
        self.fold(&format!("{name}: "), " ", value, FOLD_WIDTH);
    }

    fn date(&mut self, name: &str, t: Option<SystemTime>) {
        if let Some(t) = t {
            self.field(name, &rfc5322_date(t));
        }
    }

    fn paragraph(&mut self, text: &str) {
        self.fold("", "", text, TEXT_WIDTH);
        self.push("\r\n");
    }

    /// A line of the human-readable part, continued indented; nothing when `text` is empty.
    fn wrap(&mut self, first: &str, text: &str) {
        if !text.is_empty() {
            self.fold(first, "    ", text, TEXT_WIDTH);
        }
    }

    /// Greedy word wrap of the cleaned `text`; lines start with `first`, then `next`.
    fn fold(&mut self, first: &str, next: &str, text: &str, width: usize) {
        let text = clean(text);
        let (mut line, mut fresh) = (first.to_string(), true);
        for word in text.split(' ').flat_map(|w| w.as_bytes().chunks(MAX_WORD)) {
            let word = std::str::from_utf8(word).expect("clean text is ASCII");
            if !fresh && line.len() + 1 + word.len() > width {
                self.push(&format!("{line}\r\n"));
                line = next.to_string();
            } else if !fresh {
                line.push(' ');
            }
            line.push_str(word);
            fresh = false;
        }
        self.push(&format!("{}\r\n", line.trim_end()));
    }
}

/// One line of printable ASCII: controls (CR, LF, tabs…) become single spaces, other
/// non-ASCII characters `?` (an ellipsis `...`).
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_ascii_graphic() => out.push(c),
            c if c.is_whitespace() || c.is_control() => out.push(' '),
            '\u{2026}' => out.push_str("..."),
            _ => out.push('?'),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn diagnostic(text: &str) -> String {
    diagnostic_bounded(text, MAX_DIAGNOSTIC)
}

/// `text` cleaned, cut at `max` bytes (then `...`).
fn diagnostic_bounded(text: &str, max: usize) -> String {
    let mut text = clean(text);
    if text.len() > max {
        text.truncate(max);
        text.push_str("...");
    }
    text
}

fn queue_id(report: &Report) -> Option<String> {
    let id = clean(report.original_queue_id.as_deref()?);
    (!id.is_empty()).then_some(id)
}

/// `<id>` when `raw` (with or without brackets) is one plausible msg-id; otherwise nothing,
/// rather than a malformed In-Reply-To.
fn message_id(raw: &str) -> Option<String> {
    let id = clean(raw);
    let inner = id.strip_prefix('<').and_then(|i| i.strip_suffix('>'));
    let inner = inner.unwrap_or(&id);
    let plausible =
        !inner.is_empty() && inner.len() <= MAX_MESSAGE_ID && !inner.contains([' ', '<', '>']);
    plausible.then(|| format!("<{inner}>"))
}

fn check_recipient(r: &RecipientStatus) -> Result<(), DsnError> {
    check_address("final recipient", &r.final_recipient)?;
    let (class, subject, detail) = r.status;
    let expected = match r.action {
        Action::Failed => 5,
        Action::Delayed => 4,
        Action::Relayed | Action::Delivered => 2,
    };
    if class == expected && subject <= 999 && detail <= 999 {
        return Ok(());
    }
    Err(DsnError::Status(status_text(r.status), r.action.keyword()))
}

/// Plain `local@domain` in printable ASCII, without the characters that would need quoting.
fn check_address(field: &'static str, value: &str) -> Result<(), DsnError> {
    let allowed = |b: u8| b.is_ascii_graphic() && !b"<>()\",;\\".contains(&b);
    let parts = value.rsplit_once('@');
    let ok = parts.is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if ok && value.len() <= MAX_ADDRESS && value.bytes().all(allowed) {
        return Ok(());
    }
    let value = value.chars().take(80).collect();
    Err(DsnError::Address { field, value })
}

fn host_name(name: &str) -> Result<&str, DsnError> {
    let name = name.trim();
    let label_char = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    if !name.is_empty() && name.len() <= 253 && name.bytes().all(label_char) {
        return Ok(name);
    }
    Err(DsnError::Hostname(name.chars().take(80).collect()))
}

/// The address inside optional angle brackets.
fn bare(address: &str) -> &str {
    let address = address.trim();
    let inner = address.strip_prefix('<').and_then(|a| a.strip_suffix('>'));
    inner.unwrap_or(address).trim()
}

fn status_text((class, subject, detail): (u8, u16, u16)) -> String {
    format!("{class}.{subject}.{detail}")
}

/// 128 random bits in hex, for Message-IDs and MIME boundaries.
fn random_token() -> String {
    MessageId::random().to_string()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_bracketed_or_dropped() {
        assert_eq!(message_id("a@b").as_deref(), Some("<a@b>"));
        assert_eq!(message_id(" <a@b>\r\n").as_deref(), Some("<a@b>"));
        assert_eq!(message_id("<a@b>\r\nBcc: x@y"), None);
        assert_eq!(message_id("<>"), None);
    }
}
