//! The purge of finished history (`[queue] retention_days`): every few minutes the daemon deletes
//! delivered copies and finished inbound rows older than the retention, in batches of
//! `BATCH` rows, each its own short statement (`store/retention.rs` says what is safe to delete
//! and why). Counted in `toxmail_purged_rows_total`, logged with the counts.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::store::{Purged, Store, StoreError};

/// How often the purge runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(300);
/// The first pass waits this long after start-up, out of the way of the start-up work.
const FIRST_PASS: Duration = Duration::from_secs(60);
/// Rows deleted per statement: a few milliseconds of locks and WAL each.
pub const BATCH: i64 = 1000;

/// What to purge and how.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Rows finished longer ago than this go.
    pub keep: Duration,
    /// Rows per statement.
    pub batch: i64,
}

impl Retention {
    pub fn new(keep: Duration) -> Retention {
        Retention { keep, batch: BATCH }
    }

    /// Deletes, batch after batch, everything past the retention at `now`; stops early (with
    /// what it did so far) when `stop` is cancelled.
    pub async fn purge(
        &self,
        store: &Store,
        now: SystemTime,
        stop: &CancellationToken,
    ) -> Result<Purged, StoreError> {
        let before = now.checked_sub(self.keep).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut purged = Purged::default();
        loop {
            let n = store.purge_delivered(before, self.batch).await?;
            purged.outbound += n;
            metrics::purged("outbound", n);
            if n < self.batch.max(0) as u64 || stop.is_cancelled() {
                break;
            }
            tokio::task::yield_now().await;
        }
        loop {
            let n = store.purge_inbound(before, now, self.batch).await?;
            purged.inbound += n;
            metrics::purged("inbound", n);
            if n < self.batch.max(0) as u64 || stop.is_cancelled() {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(purged)
    }
}

/// Purges every `PURGE_EVERY` until `shutdown`. A failed pass is logged and tried again at the
/// next one: nothing depends on the purge but the size of the tables.
pub async fn run(store: Store, retention: Retention, shutdown: CancellationToken) {
    let mut wait = FIRST_PASS;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = PURGE_EVERY;
        let started = std::time::Instant::now();
        match retention.purge(&store, SystemTime::now(), &shutdown).await {
            Ok(p) if p.total() > 0 => tracing::info!(
                outbound = p.outbound,
                inbound = p.inbound,
                ms = started.elapsed().as_millis() as u64,
                "history past the retention purged"
            ),
            Ok(_) => tracing::debug!("nothing past the retention"),
            Err(e) => tracing::warn!(error = %e, "history purge failed; next pass in 5 minutes"),
        }
    }
}
