//! Every metric the bridge exports, with its help and labels, in one place (docs/operations.md
//! lists them for operators). Counters are process-wide statics registered in the default
//! registry; the Tox layer's and the relay's families come from their crates, and so do
//! `toxmail_database_up` and `toxmail_database_errors_total` (toxmail_relay::metrics), which
//! both daemons export. Labels carry
//! results, states and reasons: never an address, a key or a queue id.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use tox_runtime::metrics::{
    register_counter as counter, register_counter_vec as counter_vec, register_gauge as gauge,
    register_gauge_vec as gauge_vec, register_histogram as histogram,
};

use crate::reply::Reply;

pub static LMTP_TRANSACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_lmtp_transactions_total",
        "LMTP transactions that reached the end of DATA, by result: accepted (every recipient), \
         partial, deferred (none accepted, some 4xx), rejected (all 5xx).",
        "result",
    )
});

pub static LMTP_RECIPIENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_lmtp_recipients_total",
        "LMTP recipients by the final reply they got (at RCPT or after DATA): accepted, deferred, rejected.",
        "result",
    )
});

pub static SOCKETMAP_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_socketmap_lookups_total",
        "Socketmap lookups by answer: tox (routed over Tox), notfound (ordinary routing), invalid \
         (5.1.3), temp (4.4.3), perm (a malformed request).",
        "result",
    )
});

pub static SOCKETMAP_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "toxmail_socketmap_lookup_duration_seconds",
        "Time to answer one socketmap lookup.",
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ],
    )
});

pub static QUEUE_MESSAGES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "toxmail_queue_messages",
        "Outbound copies in the queue by state: queued (waiting for the peer), relayed (a relay \
         holds it), failed (waiting for its bounce).",
        "state",
    )
});

pub static QUEUE_OLDEST: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "toxmail_queue_oldest_age_seconds",
        "Age of the oldest copy still waiting for its peer (0 when none waits).",
    )
});

pub static EVENTS_UNPUBLISHED: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "toxmail_events_unpublished",
        "Delivery events in the outbox the broker has not confirmed yet (0 without [events]).",
    )
});

pub static DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_deliveries_total",
        "Outbound delivery attempts by result: delivered (the peer stored it), deferred, relayed \
         (a relay took custody), failed (permanent), expired.",
        "result",
    )
});

pub static DELIVERY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "toxmail_delivery_duration_seconds",
        "From LMTP acceptance to the peer's stored-ack, per delivered copy.",
        vec![
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0,
            86400.0,
        ],
    )
});

pub static INBOUND: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_inbound_messages_total",
        "Inbound envelopes by result: stored (committed and acked), refused (not opened or not \
         admitted), injected (handed to the local MTA), failed (injection failed for good).",
        "result",
    )
});

pub static DSN_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_dsn_sent_total",
        "Delivery status notifications sent to senders, by action: failed, delayed, relayed, \
         delivered.",
        "action",
    )
});

pub static DSN_UNDELIVERABLE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_dsn_undeliverable_total",
        "Delivery status notifications given up on, by action: the local MTA refused them \
         permanently (5xx) or they could not be built. Each one is logged with the queue id.",
        "action",
    )
});

pub static MILTER_NOTICES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_milter_notices_total",
        "Messages that mixed Tox and plain recipients, by the policy applied: warn, reject.",
        "policy",
    )
});

pub static MILTER_PLAIN_RECIPIENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "toxmail_milter_plain_recipients_total",
        "Plain (not Tox) recipients of messages that also had Tox recipients: mail that fell back \
         to ordinary SMTP.",
    )
});

pub static PURGED_ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_purged_rows_total",
        "History rows deleted past [queue] retention_days, by table: outbound (delivered copies), \
         inbound (received messages injected or bounced, whose sealed expiry has passed).",
        "table",
    )
});

/// Every family of the bridge process: its own, the Tox layer's and the relay service's
/// (histograms by their base name). The dashboard and rules tests check against this.
pub fn exported_names() -> Vec<String> {
    let mut names = tox_runtime::metrics::family_names(own());
    names.extend(tox_runtime::metrics::names());
    names.extend(toxmail_relay::metrics::names());
    names.sort();
    names
}

fn own() -> [&'static dyn Collector; 15] {
    [
        &*LMTP_TRANSACTIONS,
        &*LMTP_RECIPIENTS,
        &*SOCKETMAP_LOOKUPS,
        &*SOCKETMAP_SECONDS,
        &*QUEUE_MESSAGES,
        &*QUEUE_OLDEST,
        &*EVENTS_UNPUBLISHED,
        &*DELIVERIES,
        &*DELIVERY_SECONDS,
        &*INBOUND,
        &*DSN_SENT,
        &*DSN_UNDELIVERABLE,
        &*MILTER_NOTICES,
        &*MILTER_PLAIN_RECIPIENTS,
        &*PURGED_ROWS,
    ]
}

/// Registers every family and its known label values at 0, so a scrape shows every series
/// from the start and `rate()` sees the first increment.
pub fn touch() {
    let _ = own();
    LazyLock::force(&toxmail_relay::metrics::DATABASE_UP);
    LazyLock::force(&toxmail_relay::metrics::DATABASE_ERRORS);
    let known: [(&IntCounterVec, &[&str]); 5] = [
        (
            &LMTP_TRANSACTIONS,
            &["accepted", "partial", "deferred", "rejected"],
        ),
        (&LMTP_RECIPIENTS, &["accepted", "deferred", "rejected"]),
        (
            &SOCKETMAP_LOOKUPS,
            &["tox", "notfound", "invalid", "temp", "perm"],
        ),
        (&DSN_SENT, &["failed", "delayed", "relayed"]),
        (&DSN_UNDELIVERABLE, &["failed", "delayed", "relayed"]),
    ];
    for (vec, labels) in known {
        for label in labels {
            vec.with_label_values(&[label]);
        }
    }
    for d in Delivery::ALL {
        DELIVERIES.with_label_values(&[d.label()]);
    }
    for i in Inbound::ALL {
        INBOUND.with_label_values(&[i.label()]);
    }
    for state in ["queued", "relayed", "failed"] {
        QUEUE_MESSAGES.with_label_values(&[state]);
    }
    for policy in ["warn", "reject"] {
        MILTER_NOTICES.with_label_values(&[policy]);
    }
    for table in ["outbound", "inbound"] {
        PURGED_ROWS.with_label_values(&[table]);
    }
}

/// Counts `n` rows of `table` purged past the retention.
pub fn purged(table: &str, n: u64) {
    PURGED_ROWS.with_label_values(&[table]).inc_by(n);
}

/// The `result` label of one LMTP reply.
pub fn reply_result(reply: &Reply) -> &'static str {
    if reply.is_success() {
        "accepted"
    } else if reply.is_temporary() {
        "deferred"
    } else {
        "rejected"
    }
}

/// Counts one transaction's end-of-DATA replies (one per recipient).
pub fn count_transaction(replies: &[Reply]) {
    let accepted = replies.iter().filter(|r| r.is_success()).count();
    let temporary = replies.iter().filter(|r| r.is_temporary()).count();
    for reply in replies {
        LMTP_RECIPIENTS
            .with_label_values(&[reply_result(reply)])
            .inc();
    }
    let result = if accepted == replies.len() {
        "accepted"
    } else if accepted > 0 {
        "partial"
    } else if temporary > 0 {
        "deferred"
    } else {
        "rejected"
    };
    LMTP_TRANSACTIONS.with_label_values(&[result]).inc();
}

/// A message that mixed Tox and plain recipients, under `policy` (plain recipients only count
/// when the message went out: under `reject` nothing fell back).
pub fn mixed_message(policy: &str, plain: usize) {
    MILTER_NOTICES.with_label_values(&[policy]).inc();
    if policy == "warn" {
        MILTER_PLAIN_RECIPIENTS.inc_by(plain as u64);
    }
}

/// One DSN sent to a sender.
pub fn dsn_sent(action: crate::delivery::dsn::Action) {
    DSN_SENT.with_label_values(&[action.keyword()]).inc();
}

/// One DSN given up on (refused for good by the local MTA, or not buildable).
pub fn dsn_undeliverable(action: crate::delivery::dsn::Action) {
    DSN_UNDELIVERABLE
        .with_label_values(&[action.keyword()])
        .inc();
}

/// The `result` of an outbound delivery attempt (`toxmail_deliveries_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Deferred,
    Relayed,
    Failed,
    Expired,
}

impl Delivery {
    const ALL: [Delivery; 5] = [
        Delivery::Delivered,
        Delivery::Deferred,
        Delivery::Relayed,
        Delivery::Failed,
        Delivery::Expired,
    ];

    fn label(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Deferred => "deferred",
            Delivery::Relayed => "relayed",
            Delivery::Failed => "failed",
            Delivery::Expired => "expired",
        }
    }
}

/// Counts one outbound delivery attempt by its result.
pub fn delivery(result: Delivery) {
    DELIVERIES.with_label_values(&[result.label()]).inc();
}

/// The `result` of an inbound envelope (`toxmail_inbound_messages_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    Stored,
    Refused,
    Injected,
    Failed,
}

impl Inbound {
    const ALL: [Inbound; 4] = [
        Inbound::Stored,
        Inbound::Refused,
        Inbound::Injected,
        Inbound::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            Inbound::Stored => "stored",
            Inbound::Refused => "refused",
            Inbound::Injected => "injected",
            Inbound::Failed => "failed",
        }
    }
}

/// Counts one inbound envelope by its result.
pub fn inbound(result: Inbound) {
    INBOUND.with_label_values(&[result.label()]).inc();
}

/// Observes an accept → ack time.
pub fn delivered_after(age: Duration) {
    DELIVERY_SECONDS.observe(age.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_no_family_is_declared_twice() {
        let names = exported_names();
        assert_eq!(names.len(), 15 + 6 + 8, "{names:?}");
        for name in &names {
            assert!(name.starts_with("toxmail_"), "{name}");
        }
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn a_transaction_counts_each_recipient_and_one_result() {
        let before = LMTP_TRANSACTIONS.with_label_values(&["partial"]).get();
        let ok = Reply::new(250, None, "ok");
        let no = Reply::new(550, None, "no");
        count_transaction(&[ok, no]);
        assert_eq!(
            LMTP_TRANSACTIONS.with_label_values(&["partial"]).get(),
            before + 1
        );
    }
}
