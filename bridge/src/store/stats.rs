//! What the queue holds, in counts and age, for metrics and `status`: no envelopes are read.

use std::time::Duration;

use super::{Store, StoreError};

/// Copies not yet delivered, by state, and how long the oldest has waited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Waiting for the peer, no relay holds a copy.
    pub queued: i64,
    /// Waiting for the peer, a relay holds a copy.
    pub relayed: i64,
    /// Failed for good, the bounce not yet sent.
    pub failed: i64,
    /// Age of the oldest copy still waiting (queued or relayed).
    pub oldest: Duration,
    /// Delivery events written and not yet confirmed by the broker (0 without `[events]`).
    pub events_unpublished: i64,
}

impl Store {
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'queued' AND relayed_at IS NULL), \
                        count(*) FILTER (WHERE state = 'queued' AND relayed_at IS NOT NULL), \
                        count(*) FILTER (WHERE state = 'failed'), \
                        COALESCE(EXTRACT(EPOCH FROM now() - min(created) \
                                 FILTER (WHERE state = 'queued')), 0)::float8, \
                        (SELECT count(*) FROM events WHERE published_at IS NULL) \
                 FROM outbound WHERE state <> 'delivered'",
                &[],
            )
            .await?;
        let oldest: f64 = row.try_get(3)?;
        Ok(QueueStats {
            queued: row.try_get(0)?,
            relayed: row.try_get(1)?,
            failed: row.try_get(2)?,
            oldest: Duration::from_secs_f64(oldest.max(0.0)),
            events_unpublished: row.try_get(4)?,
        })
    }
}

/// One error a copy or an inbound message met last, for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentError {
    /// "outbound <id> to <recipient>" or "inbound <message id>".
    pub what: String,
    pub state: String,
    pub error: String,
}

impl Store {
    /// The last errors of copies and inbound messages not yet done, most recent attempt first.
    pub async fn recent_errors(&self, limit: i64) -> Result<Vec<RecentError>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "(SELECT 'outbound ' || id || ' to ' || recipient, state, last_error, next_attempt \
                   FROM outbound WHERE state <> 'delivered' AND last_error IS NOT NULL) \
                 UNION ALL \
                 (SELECT 'inbound ' || encode(message_id, 'hex'), state, last_error, next_attempt \
                   FROM inbound WHERE state <> 'injected' AND last_error IS NOT NULL) \
                 ORDER BY 4 DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RecentError {
                    what: r.try_get(0)?,
                    state: r.try_get(1)?,
                    error: r.try_get(2)?,
                })
            })
            .collect()
    }
}
