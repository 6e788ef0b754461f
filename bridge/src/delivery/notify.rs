//! Telling the sender: a "failed" DSN when a copy expires or the peer refuses it for good (then
//! the row is removed), and one "delayed" DSN after a configurable wait. A copy that expires in a
//! relay's custody with no receipt is not reported failed: its DSN says "relayed", outcome
//! unknown, since the recipient may well have it and a resent copy would be a duplicate. DSNs go through the local
//! MTA with a null sender; none is ever sent about a message whose own sender is <>.
//! The sender's RFC 3461 request is honoured per copy: NOTIFY decides which of these go out
//! (and adds one "delivered" report after the peer's ack for SUCCESS), ORCPT and ENVID are
//! reported back, RET picks what of the original is returned.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use toxmail_protocol::SecretKey;

use super::dsn::{self, Action, RecipientStatus, Report};
use super::returned::{self, Returned};
use super::trace::rfc5322_date;
use crate::config::NextHop;
use crate::store::{CopyInfo, Store};

/// A report the local MTA did not take for now is tried again after this long, doubled after
/// each refusal up to `DSN_RETRY_MAX`.
const DSN_RETRY: Duration = Duration::from_secs(5);
const DSN_RETRY_MAX: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Notifier {
    pub store: Store,
    pub hop: NextHop,
    pub hostname: String,
    /// Send one "delayed" DSN once a copy has waited this long.
    pub delay: Duration,
    /// Woken when a copy failed or new copies were queued (`Dispatcher::notices`).
    pub wake: Arc<Notify>,
    /// Reports not taken for now and reports settled whose database write is still owed.
    pending: Arc<Mutex<Pending>>,
    /// Identity address → secret key: opens the part of the original a report returns.
    keys: Arc<HashMap<String, SecretKey>>,
}

/// Which of a copy's two reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// "delayed" (or "relayed"), once, while the copy waits.
    Interim,
    /// "failed" (or "relayed, outcome unknown"), when the copy is given up.
    Final,
    /// "delivered", once, after the peer's ack, when NOTIFY asked for SUCCESS.
    Success,
}

/// What the notifier remembers between passes, in memory: a restart forgets the backoff (each
/// report is tried once more at once) and, in the milliseconds between a report going out and
/// its row being written, could send one again, as any MTA could.
#[derive(Debug, Default)]
struct Pending {
    /// Reports the MTA did not take: how often, and not before when.
    backoff: HashMap<(i64, Kind), (u32, SystemTime)>,
    /// Reports sent or given up on whose row could not be written yet: only the write is
    /// retried, the report is never sent twice.
    settled: HashSet<(i64, Kind)>,
}

/// What became of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// Sent, or none owed (the sender is <>).
    Done,
    /// Refused for good by the local MTA, or not buildable: given up, logged and counted.
    GaveUp,
    /// Not taken now: tried again after a backoff.
    Later,
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
    pub fn new(
        store: Store,
        hop: NextHop,
        hostname: String,
        delay: Duration,
        wake: Arc<Notify>,
    ) -> Self {
        Notifier {
            store,
            hop,
            hostname,
            delay,
            wake,
            pending: Arc::default(),
            keys: Arc::default(),
        }
    }

    /// The identities' keys, to open and return the original's headers (or the message, for
    /// RET=FULL); without them reports only name the queue id.
    pub fn with_keys(mut self, keys: HashMap<String, SecretKey>) -> Self {
        self.keys = Arc::new(keys);
        self
    }

    /// The part of the original the copy kept for its reports, opened.
    fn returned(&self, copy: &CopyInfo) -> Option<Returned> {
        let sealed = copy.original.as_deref()?;
        let key = self.keys.get(&copy.sender_identity)?;
        let opened = Returned::open(sealed, key);
        if opened.is_none() {
            tracing::warn!(id = copy.id, "the original kept for reports does not open");
        }
        opened
    }

    fn report(&self, o: &Outcome) -> Report {
        let now = SystemTime::now();
        let returned = self.returned(&o.copy);
        let (subject, message_id) = returned
            .as_ref()
            .map(|r| returned::subject_and_id(r.headers()))
            .unwrap_or_default();
        let (headers, message) = match returned {
            Some(Returned::Full(m)) => (None, Some(m)),
            Some(Returned::Headers(h)) => (Some(h), None),
            None => (None, None),
        };
        Report {
            reporting_mta: format!("dns; {}", self.hostname),
            original_sender: o.copy.envelope_sender.clone(),
            original_message_id: message_id,
            original_subject: subject,
            envelope_id: o
                .copy
                .dsn
                .mail
                .envid
                .as_ref()
                .map(|e| e.as_str().to_string()),
            // A key derived from the message is not a queue id anyone could look up.
            original_queue_id: o
                .copy
                .idem_key
                .clone()
                .filter(|k| !k.starts_with(crate::intake::DERIVED_KEY_PREFIX)),
            arrival: Some(o.copy.created),
            recipients: vec![RecipientStatus {
                final_recipient: o.copy.recipient.clone(),
                action: o.action,
                status: o.status,
                diagnostic: o.diagnostic.clone(),
                original_recipient: o.copy.dsn.rcpt.orcpt.as_ref().map(|o| o.field_value()),
                last_attempt: Some(now),
                will_retry_until: (o.action == Action::Delayed).then_some(o.copy.expires),
            }],
            original_headers: headers,
            original_message: message,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the report unless the sender is <> or its NOTIFY did not ask for this kind, or
    /// this report is backing off after the MTA did not take it (then `Later`).
    async fn tell(&self, o: &Outcome, kind: Kind) -> Told {
        let key = (o.copy.id, kind);
        let notify = o.copy.dsn.notify();
        let wanted = match kind {
            Kind::Interim => notify.delay(),
            Kind::Final => notify.failure(),
            Kind::Success => notify.success(),
        };
        if !wanted || !dsn::should_notify(&o.copy.envelope_sender) {
            return Told::Done;
        }
        let waiting = self.pending().backoff.get(&key).map(|(_, at)| *at);
        if waiting.is_some_and(|at| at > SystemTime::now()) {
            return Told::Later;
        }
        let result = dsn::send(&self.hop, &self.hostname, &self.report(o)).await;
        let mut pending = self.pending();
        match result {
            Ok(()) => {
                pending.backoff.remove(&key);
                crate::metrics::dsn_sent(o.action);
                tracing::info!(id = o.copy.id, action = ?o.action, "delivery status notification sent");
                Told::Done
            }
            Err(e) if e.is_temporary() => {
                let tries = pending.backoff.get(&key).map_or(0, |(n, _)| *n) + 1;
                let wait = DSN_RETRY
                    .saturating_mul(1 << (tries - 1).min(10))
                    .min(DSN_RETRY_MAX);
                pending
                    .backoff
                    .insert(key, (tries, SystemTime::now() + wait));
                tracing::warn!(id = o.copy.id, error = %e, retry_in = ?wait, "DSN not taken by the local MTA; will retry");
                Told::Later
            }
            Err(e) => {
                pending.backoff.remove(&key);
                crate::metrics::dsn_undeliverable(o.action);
                tracing::error!(id = o.copy.id, action = ?o.action, error = %e, "DSN given up: the local MTA refused it for good or it could not be built; the sender is not told");
                Told::GaveUp
            }
        }
    }

    /// Tells the sender once (unless already settled), then writes `record`; a failed write is
    /// retried at the next pass without telling again.
    async fn settle<F, Fut>(&self, o: Outcome, kind: Kind, record: F)
    where
        F: FnOnce(i64) -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::store::StoreError>>,
    {
        let key = (o.copy.id, kind);
        if !self.pending().settled.contains(&key) {
            if self.tell(&o, kind).await == Told::Later {
                return;
            }
            self.pending().settled.insert(key);
        }
        match record(o.copy.id).await {
            Ok(()) => {
                self.pending().settled.remove(&key);
            }
            Err(e) => {
                tracing::warn!(id = o.copy.id, error = %e, "report settled but its row not updated; retried later, the report is not sent again")
            }
        }
    }

    /// After a copy was marked failed: tells the sender, then removes the row.
    async fn failed(&self, o: Outcome) {
        self.settle(o, Kind::Final, |id| self.store.remove_outbound(id))
            .await
    }

    /// Periodically: "delayed" notices that are due, and "failed" notices still owed (after a
    /// crash or while the local MTA was down).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Ok(due) = self.store.delay_notice_due(self.delay).await {
                for copy in due {
                    let o = delayed(copy);
                    self.settle(o, Kind::Interim, |id| self.store.mark_delay_notified(id))
                        .await;
                }
            }
            if let Ok(failed) = self.store.failed_copies().await {
                for copy in failed {
                    self.failed(final_outcome(copy)).await;
                }
            }
            if let Ok(delivered) = self.store.success_notices_due().await {
                for copy in delivered {
                    let record = |id| self.store.mark_success_notified(id);
                    self.settle(delivered_outcome(copy), Kind::Success, record)
                        .await;
                }
            }
            // Sleep until a copy fails, the next "delayed" notice falls due, or a report that
            // was not taken may be tried again.
            let due = self
                .store
                .next_delay_notice(self.delay)
                .await
                .unwrap_or(None);
            // A notice due now was just tried: if the MTA refused it, not again at once.
            let due = due.map(|t| t.max(SystemTime::now() + DSN_RETRY));
            let retry = {
                let mut pending = self.pending();
                // Rows gone meanwhile (deleted by the operator) leave nothing to wait for.
                pending
                    .backoff
                    .retain(|_, (_, at)| *at + DSN_RETRY_MAX > SystemTime::now());
                let settled = !pending.settled.is_empty();
                let next = pending.backoff.values().map(|(_, at)| *at).min();
                if settled {
                    Some(SystemTime::now() + DSN_RETRY)
                } else {
                    next
                }
            };
            let due = match (due, retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !super::idle(&self.wake, due, &shutdown).await {
                return;
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

/// The one "delivered" notice, after the peer's bridge acknowledged that it stored the copy.
fn delivered_outcome(copy: CopyInfo) -> Outcome {
    Outcome {
        copy,
        action: Action::Delivered,
        status: (2, 0, 0),
        diagnostic: "the recipient's mail server acknowledged over Tox that it has stored the \
                     message"
            .into(),
    }
}

/// The notice for a copy given up on: "failed", unless it expired in a relay's custody, where
/// nothing says whether the recipient got it ("relayed", outcome unknown).
fn final_outcome(copy: CopyInfo) -> Outcome {
    let reason = copy.last_error.clone().unwrap_or_default();
    match copy.relayed_to.clone() {
        Some(relays) if reason.starts_with("expired") => {
            let diagnostic = format!(
                "relay node(s) {relays} took custody of the message, sealed, for the recipient's \
                 mail server, which was not reachable over Tox before the message expired on {}; \
                 no receipt came back, so whether the recipient has it is unknown: ask them \
                 before sending it again",
                rfc5322_date(copy.expires),
            );
            Outcome {
                copy,
                action: Action::Relayed,
                status: (2, 0, 0),
                diagnostic,
            }
        }
        _ => Outcome {
            // Decided from the typed error when the copy was given up; the reason text only
            // for copies failed before that was recorded.
            status: copy
                .failure_status
                .as_deref()
                .and_then(parse_status)
                .unwrap_or_else(|| status_for(&reason)),
            copy,
            action: Action::Failed,
            diagnostic: reason,
        },
    }
}

/// How the reason of a copy the operator gave up on (`toxmail-bridge queue bounce`) starts.
pub const OPERATOR_BOUNCE: &str = "given up by the mail system's operator";

/// The reason (and failed DSN diagnostic) of a copy the operator gives up on.
pub fn operator_bounce_reason(attempts: i32, last_error: Option<&str>) -> String {
    let last = last_error
        .map(|e| format!("; last problem: {e}"))
        .unwrap_or_default();
    format!(
        "{OPERATOR_BOUNCE} before the recipient's mail server took it over Tox; it was not \
         delivered ({attempts} attempt(s){last})"
    )
}

/// "5.1.1" → (5, 1, 1); `None` for anything else.
fn parse_status(text: &str) -> Option<(u8, u16, u16)> {
    let mut parts = text.split('.');
    let status = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(status)
}

/// The enhanced status of a permanent failure, from the reason recorded with it (copies failed
/// before their status was recorded).
pub fn status_for(reason: &str) -> (u8, u16, u16) {
    if reason.starts_with(OPERATOR_BOUNCE) {
        (5, 0, 0)
    } else if reason.starts_with("expired") {
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

#[cfg(test)]
mod tests {
    use super::*;
    use toxmail_protocol::MessageId;

    fn copy(last_error: &str, relayed_to: Option<&str>) -> CopyInfo {
        CopyInfo {
            id: 1,
            message_id: MessageId([1; 32]),
            recipient: "bob@b.example".into(),
            envelope_sender: "alice@a.example".into(),
            idem_key: None,
            created: SystemTime::UNIX_EPOCH,
            expires: SystemTime::UNIX_EPOCH + Duration::from_secs(86400),
            attempts: 3,
            last_error: Some(last_error.into()),
            relayed_to: relayed_to.map(Into::into),
            failure_status: None,
            sender_identity: "alice@a.example".into(),
            dsn: Default::default(),
            original: None,
        }
    }

    #[test]
    fn a_copy_expired_in_a_relays_custody_is_reported_relayed_outcome_unknown_not_failed() {
        let o = final_outcome(copy(
            "expired: the peer did not come online in time",
            Some("R"),
        ));
        assert_eq!((o.action, o.status), (Action::Relayed, (2, 0, 0)));
        assert!(o.diagnostic.contains("unknown"), "{}", o.diagnostic);
        let o = final_outcome(copy("expired: the peer did not come online in time", None));
        assert_eq!((o.action, o.status), (Action::Failed, (5, 4, 7)));
        // Refused for good by the recipient itself: failed, custody or not.
        let o = final_outcome(copy("refused by the peer (UnknownMailbox): no", Some("R")));
        assert_eq!((o.action, o.status), (Action::Failed, (5, 1, 1)));
    }

    #[test]
    fn the_recorded_status_wins_over_the_reason_text() {
        let mut c = copy(
            "refused by the peer (Forged): the text says otherwise",
            None,
        );
        c.failure_status = Some("5.1.1".into());
        let o = final_outcome(c);
        assert_eq!((o.action, o.status), (Action::Failed, (5, 1, 1)));
        for bad in ["5.1", "5.1.1.1", "x.1.1", ""] {
            assert_eq!(parse_status(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_operator_bounce_is_failed_5_0_0_whatever_the_last_problem_was() {
        let reason = operator_bounce_reason(4, Some("refused by the peer (TooLarge): big"));
        let o = final_outcome(copy(&reason, None));
        assert_eq!((o.action, o.status), (Action::Failed, (5, 0, 0)));
        assert!(o.diagnostic.contains("not delivered"), "{}", o.diagnostic);
    }
}
