//! After the ack, deliver or bounce: the sending site recorded "delivered" when this site acked,
//! so when the local MTA refuses the message for good, or keeps refusing it for longer than the
//! queue lifetime, this site owes the envelope sender a "failed" DSN (RFC 3464, the original
//! header section attached), injected through the local MTA like any bounce.

use std::time::{Duration, SystemTime};

use toxmail_protocol::Letter;

use super::InboundContext;
use crate::address::ReversePath;
use crate::delivery::backoff;
use crate::delivery::dsn::{self, Action, DsnError, RecipientStatus, Report};
use crate::delivery::smtp_client::SmtpError;
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
/// is owed (null or mailer-daemon sender).
pub async fn bounce(
    ctx: &InboundContext,
    row: &InboundRow,
    letter: &Letter,
    sender: &ReversePath,
    recipient: &str,
    status: (u8, u16, u16),
    diagnostic: String,
) -> Result<(), DsnError> {
    let Some(to) = sender.address() else {
        return Ok(());
    };
    if !dsn::should_notify(to.as_str()) {
        return Ok(());
    }
    let report = Report {
        reporting_mta: format!("dns; {}", ctx.hostname),
        original_sender: to.to_string(),
        original_message_id: None,
        original_subject: None,
        envelope_id: None,
        original_queue_id: Some(row.message_id.to_string()),
        arrival: Some(row.received),
        recipients: vec![RecipientStatus {
            final_recipient: recipient.to_string(),
            action: Action::Failed,
            status,
            diagnostic,
            original_recipient: None,
            last_attempt: Some(SystemTime::now()),
            will_retry_until: None,
        }],
        original_headers: Some(letter.message.clone()),
        original_message: None,
    };
    dsn::send(&ctx.notice_hop, &ctx.hostname, &report).await
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

    #[test]
    fn enhanced_status_reads_only_failure_codes() {
        assert_eq!(enhanced_status("5.1.1 no such user"), Some((5, 1, 1)));
        assert_eq!(enhanced_status("4.1.1 later"), None);
        assert_eq!(enhanced_status("5.1 short"), None);
        assert_eq!(enhanced_status(""), None);
    }
}
