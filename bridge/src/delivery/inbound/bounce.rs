//! After the ack, deliver or bounce: the sending site recorded "delivered" when this site acked,
//! so when the local MTA refuses the message for good, or keeps refusing it for longer than the
//! queue lifetime, this site owes the envelope sender a "failed" DSN (RFC 3464, the original
//! header section attached), injected through the local MTA like any bounce.

use std::time::{Duration, SystemTime};

use toxmail_protocol::{Letter, MessageId};

use super::InboundContext;
use crate::address::ReversePath;
use crate::delivery::backoff;
use crate::delivery::dsn::{self, Action, DsnError, RecipientStatus, Report};
use crate::delivery::returned::Returned;
use crate::delivery::smtp_client::SmtpError;
use crate::dsn_request::CopyDsn;
use crate::store::InboundRow;

/// What the injector does after a failed hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time.
    Retry(SystemTime),
    /// Give up and tell the sender, with this RFC 3463 status and diagnostic.
    Bounce {
        status: (u8, u16, u16),
        diagnostic: String,
    },
}

/// Decides between retrying and bouncing: a 5xx is final; anything else is retried with backoff
/// until the row has waited `lifetime` since it was received.
pub fn after_failure(
    error: &SmtpError,
    attempts: i32,
    received: SystemTime,
    lifetime: Duration,
    now: SystemTime,
) -> AfterFailure {
    if error.is_permanent() {
        let status = match error {
            SmtpError::Rejected { text, .. } => enhanced_status(text).unwrap_or((5, 0, 0)),
            // X.6.3 "conversion required but not supported": BINARYMIME without BDAT here.
            SmtpError::Unsupported(_) => (5, 6, 3),
            _ => (5, 0, 0),
        };
        let diagnostic = format!("the local mail system refused the message: {error}");
        return AfterFailure::Bounce { status, diagnostic };
    }
    let waited = now.duration_since(received).unwrap_or_default();
    if waited >= lifetime {
        let diagnostic = format!(
            "the local mail system did not take the message within {} hours; last: {error}",
            lifetime.as_secs() / 3600
        );
        return AfterFailure::Bounce {
            status: (5, 4, 7),
            diagnostic,
        };
    }
    let wait = backoff(attempts, Duration::from_secs(5), Duration::from_secs(600));
    AfterFailure::Retry(now + wait)
}

/// The `5.x.y` an SMTP reply text starts with, if it is a failure code.
fn enhanced_status(text: &str) -> Option<(u8, u16, u16)> {
    let token = text.split_whitespace().next()?;
    let mut parts = token.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    (class == 5 && parts.next().is_none() && subject < 1000 && detail < 1000)
        .then_some((class, subject, detail))
}

/// Sends the "failed" DSN for `row` to the letter's envelope sender; Ok when it is sent or none
/// is owed (see [`report`]).
pub async fn bounce(
    ctx: &InboundContext,
    row: &InboundRow,
    letter: &Letter,
    sender: &ReversePath,
    recipient: &str,
    status: (u8, u16, u16),
    diagnostic: String,
) -> Result<(), DsnError> {
    let failed = Failed {
        status,
        diagnostic,
        recipient,
        sender,
    };
    match report(&ctx.hostname, row.message_id, row.received, letter, failed) {
        Some(report) => dsn::send(&ctx.notice_hop, &ctx.hostname, &report).await,
        None => Ok(()),
    }
}

/// What failed, for [`report`].
pub struct Failed<'a> {
    pub status: (u8, u16, u16),
    pub diagnostic: String,
    pub recipient: &'a str,
    pub sender: &'a ReversePath,
}

/// The "failed" report this site owes for `letter`, or `None` when none is owed: a null or
/// mailer-daemon sender, or a sealed NOTIFY that is NEVER or lacks FAILURE. The sealed ORCPT and
/// ENVID become Original-Recipient and Original-Envelope-Id, and a sealed RET=FULL returns a
/// small message whole (the headers otherwise).
pub fn report(
    hostname: &str,
    message_id: MessageId,
    received: SystemTime,
    letter: &Letter,
    failed: Failed<'_>,
) -> Option<Report> {
    let to = failed.sender.address()?;
    if !dsn::should_notify(to.as_str()) {
        return None;
    }
    let request = CopyDsn::from_sealed(&letter.metadata.extensions.dsn);
    if !request.notify().failure() {
        return None;
    }
    let (original_headers, original_message) =
        match Returned::choose(&letter.message, request.mail.ret) {
            Returned::Full(message) => (None, Some(message)),
            Returned::Headers(headers) => (Some(headers), None),
        };
    Some(Report {
        reporting_mta: format!("dns; {hostname}"),
        original_sender: to.to_string(),
        original_message_id: None,
        original_subject: None,
        envelope_id: request.mail.envid.as_ref().map(|e| e.as_str().to_string()),
        original_queue_id: Some(message_id.to_string()),
        arrival: Some(received),
        recipients: vec![RecipientStatus {
            final_recipient: failed.recipient.to_string(),
            action: Action::Failed,
            status: failed.status,
            diagnostic: failed.diagnostic,
            original_recipient: request.rcpt.orcpt.as_ref().map(|o| o.field_value()),
            last_attempt: Some(SystemTime::now()),
            will_retry_until: None,
        }],
        original_headers,
        original_message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: u16, text: &str) -> SmtpError {
        SmtpError::Rejected {
            code,
            text: text.into(),
        }
    }

    #[test]
    fn a_permanent_refusal_bounces_with_the_mta_status() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let e = rejected(550, "5.7.1 message content rejected");
        match after_failure(&e, 1, t0, day, t0) {
            AfterFailure::Bounce { status, diagnostic } => {
                assert_eq!(status, (5, 7, 1));
                assert!(diagnostic.contains("550 5.7.1 message content rejected"));
            }
            other => panic!("{other:?}"),
        }
        let e = rejected(554, "no enhanced code");
        assert!(matches!(
            after_failure(&e, 1, t0, day, t0),
            AfterFailure::Bounce {
                status: (5, 0, 0),
                ..
            }
        ));
    }

    #[test]
    fn temporary_failures_retry_until_the_lifetime_then_bounce_as_expired() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let e = rejected(451, "4.3.0 try later");
        assert_eq!(
            after_failure(&e, 1, t0, day, t0),
            AfterFailure::Retry(t0 + Duration::from_secs(5))
        );
        let late = t0 + day - Duration::from_secs(1);
        assert_eq!(
            after_failure(&e, 30, t0, day, late),
            AfterFailure::Retry(late + Duration::from_secs(600))
        );
        let io = SmtpError::Timeout;
        match after_failure(&io, 30, t0, day, t0 + day) {
            AfterFailure::Bounce { status, diagnostic } => {
                assert_eq!(status, (5, 4, 7));
                assert!(diagnostic.contains("within 24 hours"), "{diagnostic}");
            }
            other => panic!("{other:?}"),
        }
    }

    fn letter(dsn: toxmail_protocol::DsnRequest) -> Letter {
        let mut letter = Letter {
            message_id: MessageId([7; 32]),
            metadata: toxmail_protocol::Metadata {
                envelope_sender: "alice@a.test".into(),
                recipient: "bob@b.test".into(),
                queue_id: String::new(),
                created: 0,
                expires: 0,
                extensions: Default::default(),
            },
            message: b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
        };
        letter.metadata.extensions.dsn = dsn;
        letter
    }

    fn failed_report(dsn: toxmail_protocol::DsnRequest) -> Option<Report> {
        let sender = ReversePath::parse("alice@a.test").unwrap();
        let failed = Failed {
            status: (5, 1, 1),
            diagnostic: "no such user".into(),
            recipient: "bob@b.test",
            sender: &sender,
        };
        let letter = letter(dsn);
        report(
            "mx.b.test",
            letter.message_id,
            SystemTime::now(),
            &letter,
            failed,
        )
    }

    /// The sealed DSN request decides whether the receiving site reports a failure after its
    /// ack, and what the report says (RFC 3461 §5.2, §6).
    #[test]
    fn the_sealed_dsn_request_shapes_the_failure_report() {
        use toxmail_protocol::{DsnRequest, DsnRet, OrcptType};
        let plain = failed_report(DsnRequest::default()).expect("no NOTIFY: failures reported");
        assert_eq!(plain.envelope_id, None);
        assert_eq!(plain.recipients[0].original_recipient, None);
        assert!(plain.original_headers.is_some() && plain.original_message.is_none());
        for notify in [
            DsnRequest::NEVER,
            DsnRequest::SUCCESS,
            DsnRequest::DELAY,
            DsnRequest::SUCCESS | DsnRequest::DELAY,
        ] {
            let dsn = DsnRequest {
                notify: Some(notify),
                ..Default::default()
            };
            assert!(failed_report(dsn).is_none(), "NOTIFY bits {notify}");
        }
        let asked = failed_report(DsnRequest {
            notify: Some(DsnRequest::FAILURE),
            orcpt: Some((OrcptType::Rfc822, "bob@b.test".into())),
            ret: Some(DsnRet::Full),
            envid: Some("QQ314159".into()),
        })
        .expect("NOTIFY=FAILURE");
        assert_eq!(asked.envelope_id.as_deref(), Some("QQ314159"));
        assert_eq!(
            asked.recipients[0].original_recipient.as_deref(),
            Some("rfc822; bob@b.test")
        );
        assert_eq!(
            asked.original_message.as_deref(),
            Some(&b"Subject: hi\r\n\r\nbody\r\n"[..])
        );
        let text =
            String::from_utf8(dsn::build(&asked, SystemTime::now(), "mx.b.test").unwrap()).unwrap();
        assert!(text.contains("Original-Envelope-Id: QQ314159"), "{text}");
        assert!(
            text.contains("Original-Recipient: rfc822; bob@b.test"),
            "{text}"
        );
    }

    #[test]
    fn enhanced_status_reads_only_failure_codes() {
        assert_eq!(enhanced_status("5.1.1 no such user"), Some((5, 1, 1)));
        assert_eq!(enhanced_status("4.1.1 later"), None);
        assert_eq!(enhanced_status("5.1 short"), None);
        assert_eq!(enhanced_status(""), None);
    }
}
