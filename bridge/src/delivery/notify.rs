//! Telling the sender: a "failed" DSN when a copy expires or the peer refuses it for good (then
//! the row is removed), and one "delayed" DSN after a configurable wait. DSNs go through the local
//! MTA with a null sender; none is ever sent about a message whose own sender is <>.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::dsn::{self, Action, RecipientStatus, Report};
use super::trace::rfc5322_date;
use crate::config::NextHop;
use crate::store::{CopyInfo, Store};

#[derive(Debug, Clone)]
pub struct Notifier {
    pub store: Store,
    pub hop: NextHop,
    pub hostname: String,
    /// Send one "delayed" DSN once a copy has waited this long.
    pub delay: Duration,
}

/// One copy's final or interim status, ready for a report.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub copy: CopyInfo,
    pub action: Action,
    pub status: (u8, u16, u16),
    pub diagnostic: String,
}

impl Notifier {
    fn report(&self, o: &Outcome) -> Report {
        let now = SystemTime::now();
        Report {
            reporting_mta: format!("dns; {}", self.hostname),
            original_sender: o.copy.envelope_sender.clone(),
            original_message_id: None,
            original_queue_id: o.copy.idem_key.clone(),
            arrival: Some(o.copy.created),
            recipients: vec![RecipientStatus {
                final_recipient: o.copy.recipient.clone(),
                action: o.action,
                status: o.status,
                diagnostic: o.diagnostic.clone(),
                last_attempt: Some(now),
                will_retry_until: (o.action == Action::Delayed).then_some(o.copy.expires),
            }],
            original_headers: None,
        }
    }

    /// Sends the report unless the sender is <>; true when nothing more is owed to the sender.
    async fn tell(&self, o: &Outcome) -> bool {
        if !dsn::should_notify(&o.copy.envelope_sender) {
            return true;
        }
        match dsn::send(&self.hop, &self.hostname, &self.report(o)).await {
            Ok(()) => {
                tracing::info!(id = o.copy.id, action = ?o.action, "delivery status notification sent");
                true
            }
            Err(e) => {
                tracing::warn!(id = o.copy.id, error = %e, "DSN not sent; will retry");
                false
            }
        }
    }

    /// After a copy was marked failed: tells the sender, then removes the row.
    pub async fn failed(&self, o: Outcome) {
        if self.tell(&o).await
            && let Err(e) = self.store.remove_outbound(o.copy.id).await
        {
            tracing::warn!(id = o.copy.id, error = %e, "failed row not removed; retried later");
        }
    }

    /// Periodically: "delayed" notices that are due, and "failed" notices still owed (after a
    /// crash or while the local MTA was down).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Ok(due) = self.store.delay_notice_due(self.delay).await {
                for copy in due {
                    let o = delayed(copy);
                    if self.tell(&o).await {
                        let _ = self.store.mark_delay_notified(o.copy.id).await;
                    }
                }
            }
            if let Ok(failed) = self.store.failed_copies().await {
                for copy in failed {
                    let diagnostic = copy.last_error.clone().unwrap_or_default();
                    let status = status_for(&diagnostic);
                    self.failed(Outcome {
                        copy,
                        action: Action::Failed,
                        status,
                        diagnostic,
                    })
                    .await;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

/// The one interim notice: "delayed", or "relayed" once a relay node holds the copy.
fn delayed(copy: CopyInfo) -> Outcome {
    if let Some(relays) = copy.relayed_to.clone() {
        let diagnostic = format!(
            "the recipient's mail server has not been reachable over Tox since the message was \
             queued on {}; relay node(s) {relays} hold it, sealed, for the recipient until {}",
            rfc5322_date(copy.created),
            rfc5322_date(copy.expires),
        );
        return Outcome {
            copy,
            action: Action::Relayed,
            status: (2, 0, 0),
            diagnostic,
        };
    }
    let diagnostic = format!(
        "the recipient's mail server has not been reachable over Tox since the message was \
         queued on {}; {} attempt(s) so far{}; retrying until {}",
        rfc5322_date(copy.created),
        copy.attempts,
        copy.last_error
            .as_deref()
            .map(|e| format!(", last problem: {e}"))
            .unwrap_or_default(),
        rfc5322_date(copy.expires),
    );
    Outcome {
        copy,
        action: Action::Delayed,
        status: (4, 4, 1),
        diagnostic,
    }
}

/// The enhanced status of a permanent failure, from the reason recorded with it.
pub fn status_for(reason: &str) -> (u8, u16, u16) {
    if reason.starts_with("expired") {
        (5, 4, 7)
    } else if reason.contains("UnknownMailbox") {
        (5, 1, 1)
    } else if reason.contains("TooLarge") || reason.contains("exceeds the peer's limit") {
        (5, 3, 4)
    } else if reason.contains("Forged") || reason.contains("WrongRecipient") {
        (5, 7, 0)
    } else {
        (5, 0, 0)
    }
}
