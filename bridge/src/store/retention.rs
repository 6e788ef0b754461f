//! Retention: the history rows that are finished for good (delivered copies, inbound rows
//! injected or failed and bounced) are deleted once older than the retention, a batch at a time,
//! so no statement holds many row locks or runs long. Open rows (queued, failed awaiting their
//! DSN, pending injection) are never touched: every statement names the final state twice, in
//! the batch it selects and in the `DELETE` itself.
//!
//! An inbound row is what refuses a second injection of the same (sealing key, message id), so
//! it is purged only after the expiry sealed in its envelope has passed by `EXPIRY_GRACE`, and
//! the inbox never stores an envelope that expired that long ago (`stale`): whatever is replayed
//! after its row is gone is acknowledged as the duplicate it is and not injected again.

use std::time::{Duration, SystemTime};

use super::{Store, StoreError};

/// How long after its sealed expiry an inbound envelope is still taken (clock skew between
/// sender and receiver, a relay handing on at the last moment); its row is kept as long.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(86_400);

/// True when an envelope sealed with `expires` must not be stored at `now`: its dedup row may
/// already be purged. The purge waits for the same bound (`purge_inbound`), on the same clock.
pub fn stale(expires: SystemTime, now: SystemTime) -> bool {
    expires
        .checked_add(EXPIRY_GRACE)
        .is_some_and(|limit| limit < now)
}

/// Rows one purge deleted, by table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Delivered outbound copies.
    pub outbound: u64,
    /// Inbound rows injected, or failed and bounced.
    pub inbound: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.outbound + self.inbound
    }
}

/// One batch of delivered copies, oldest delivery first. Rows another transaction holds are
/// skipped (the next pass takes them), and so are rows whose "delivered" notice is still owed.
const DELIVERED: &str = "DELETE FROM outbound WHERE state = 'delivered' AND id IN (
        SELECT id FROM outbound
        WHERE state = 'delivered' AND delivered_at < $1 AND NOT success_notice_due
        ORDER BY delivered_at LIMIT $2
        FOR UPDATE SKIP LOCKED)";

/// One batch of finished inbound rows received before `$1` whose sealed expiry (when known:
/// rows from before schema 11 have none) is before `$2`.
const INBOUND: &str =
    "DELETE FROM inbound WHERE state <> 'pending' AND (sender_key, message_id) IN (
        SELECT sender_key, message_id FROM inbound
        WHERE state <> 'pending' AND received < $1 AND (expires IS NULL OR expires < $2)
        ORDER BY received LIMIT $3
        FOR UPDATE SKIP LOCKED)";

impl Store {
    /// Deletes up to `limit` delivered copies delivered before `before`; returns how many.
    pub async fn purge_delivered(&self, before: SystemTime, limit: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let purge = client.prepare_cached(DELIVERED).await?;
        Ok(client.execute(&purge, &[&before, &limit]).await?)
    }

    /// Deletes up to `limit` inbound rows injected or failed, received before `before`, whose
    /// envelope expired more than `EXPIRY_GRACE` before `now`; returns how many.
    pub async fn purge_inbound(
        &self,
        before: SystemTime,
        now: SystemTime,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let expired_before = now
            .checked_sub(EXPIRY_GRACE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let client = self.client().await?;
        let purge = client.prepare_cached(INBOUND).await?;
        Ok(client
            .execute(&purge, &[&before, &expired_before, &limit])
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_is_stale_only_once_its_expiry_is_more_than_the_grace_past() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(!stale(now + Duration::from_secs(3600), now));
        assert!(
            !stale(now - EXPIRY_GRACE, now),
            "exactly the grace: still taken"
        );
        assert!(stale(now - EXPIRY_GRACE - Duration::from_secs(1), now));
        assert!(!stale(
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4),
            now
        ));
    }
}
