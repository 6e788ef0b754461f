//! Every metric of the relay service, in one place: what it holds, what it took and refused, how
//! long handing on takes; plus the database families both daemons share (the bridge, which
//! links this crate for `serve_friends`, exports these same statics). Labels carry outcomes and
//! quota names, never keys.

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use tox_runtime::metrics::{
    register_counter, register_counter_vec as counter_vec, register_gauge as gauge,
    register_histogram,
};

use crate::store::{Limit, Status};

pub static HELD_MESSAGES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "toxmail_relay_held_messages",
        "Envelopes the relay service holds for offline recipients.",
    )
});

pub static HELD_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "toxmail_relay_held_bytes",
        "Bytes of envelopes the relay service holds.",
    )
});

pub static CAPACITY_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "toxmail_relay_capacity_bytes",
        "The relay's cap on bytes held in all (policy total_bytes).",
    )
});

pub static DEPOSITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_relay_deposits_total",
        "Deposits offered to the relay service, by outcome: stored, duplicate (already held \
         from the same depositor), refused.",
        "outcome",
    )
});

pub static QUOTA_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "toxmail_relay_quota_refusals_total",
        "Deposits and registrations refused by a quota: daily_count, daily_bytes, \
         recipient_bytes, total_bytes, registrations.",
        "quota",
    )
});

pub static HANDON_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram(
        "toxmail_relay_handon_duration_seconds",
        "Time to hand one held envelope on: offer to the recipient's stored-ack.",
        vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
    )
});

pub static DATABASE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_counter(
        "toxmail_database_errors_total",
        "Database operations that failed (unreachable, busy, or a query error).",
    )
});

pub static DATABASE_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "toxmail_database_up",
        "1 when the last check reached PostgreSQL, 0 when it did not.",
    )
});

/// Whether the last database check succeeded (what `/readyz` asks first).
pub fn database_up() -> bool {
    DATABASE_UP.get() == 1
}

/// Every family of this module.
pub fn names() -> Vec<String> {
    tox_runtime::metrics::family_names(families())
}

fn families() -> [&'static dyn Collector; 8] {
    [
        &*HELD_MESSAGES,
        &*HELD_BYTES,
        &*CAPACITY_BYTES,
        &*DEPOSITS,
        &*QUOTA_REFUSALS,
        &*HANDON_SECONDS,
        &*DATABASE_ERRORS,
        &*DATABASE_UP,
    ]
}

/// Registers every family with its known label values at 0.
pub fn touch(capacity: u64) {
    CAPACITY_BYTES.set(i64::try_from(capacity).unwrap_or(i64::MAX));
    let _ = families();
    for outcome in ["stored", "duplicate", "refused"] {
        DEPOSITS.with_label_values(&[outcome]);
    }
    for quota in [
        "daily_count",
        "daily_bytes",
        "recipient_bytes",
        "total_bytes",
        "registrations",
    ] {
        QUOTA_REFUSALS.with_label_values(&[quota]);
    }
}

pub fn quota_label(limit: Limit) -> &'static str {
    match limit {
        Limit::DailyCount => "daily_count",
        Limit::DailyBytes => "daily_bytes",
        Limit::RecipientBytes => "recipient_bytes",
        Limit::TotalBytes => "total_bytes",
    }
}

/// Sets the holding gauges from a status read.
pub fn holding(status: &Status) {
    HELD_MESSAGES.set(status.held);
    HELD_BYTES.set(status.held_bytes);
}

/// Counts one deposit's outcome.
pub fn deposit(outcome: &str) {
    DEPOSITS.with_label_values(&[outcome]).inc();
}

/// Counts one quota refusal.
pub fn quota_refusal(quota: &str) {
    QUOTA_REFUSALS.with_label_values(&[quota]).inc();
}

/// `toxmail_database_up` and the log lines of an outage: one when the database stops answering,
/// one when it answers again, however many checks fail in between.
#[derive(Debug, Default)]
pub struct DatabaseWatch {
    down_since: Option<std::time::Instant>,
}

impl DatabaseWatch {
    pub fn observe(&mut self, check: Result<(), String>) {
        DATABASE_UP.set(i64::from(check.is_ok()));
        match (check, self.down_since) {
            (Err(error), None) => {
                tracing::error!(%error, "database unreachable");
                self.down_since = Some(std::time::Instant::now());
            }
            (Err(_), Some(_)) => {}
            (Ok(()), Some(since)) => {
                tracing::info!(down_for = ?since.elapsed(), "database reachable again");
                self.down_since = None;
            }
            (Ok(()), None) => {}
        }
    }

    pub fn is_up(&self) -> bool {
        self.down_since.is_none()
    }
}
