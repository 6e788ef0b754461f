//! When the next piece of work falls due, so the work loops sleep until then instead of polling:
//! the next queued copy's expiry (each peer's waiter asks for its own next attempt), the next
//! inbound row's injection, the next "delayed" notice.

use std::time::{Duration, SystemTime};

use super::{Store, StoreError};

impl Store {
    /// When the next queued copy expires.
    pub async fn next_outbound_expiry(&self) -> Result<Option<SystemTime>, StoreError> {
        self.earliest("SELECT min(expires) FROM outbound WHERE state = 'queued'")
            .await
    }

    /// The earliest `next_attempt` of an inbound row still to inject.
    pub async fn next_inbound_due(&self) -> Result<Option<SystemTime>, StoreError> {
        self.earliest("SELECT min(next_attempt) FROM inbound WHERE state = 'pending'")
            .await
    }

    /// When the next "delayed" notice falls due: `after` past the oldest queued copy that has
    /// not had one.
    pub async fn next_delay_notice(
        &self,
        after: Duration,
    ) -> Result<Option<SystemTime>, StoreError> {
        let oldest = self
            .earliest(
                "SELECT min(created) FROM outbound WHERE state = 'queued' AND NOT delay_notified",
            )
            .await?;
        Ok(oldest.map(|t| t + after))
    }

    async fn earliest(&self, sql: &str) -> Result<Option<SystemTime>, StoreError> {
        let client = self.client().await?;
        let row = client.query_one(sql, &[]).await?;
        Ok(row.try_get(0)?)
    }
}
