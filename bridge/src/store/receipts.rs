//! Receipts for queued copies the peer got some other way: a relay's `Released` for a copy in
//! its custody, or the recipient's own ack of an id we no longer send. Each closes the row as
//! delivered at most once (guarded by `state = 'queued'`), and only when it comes from the key
//! the row names: a hostile peer's receipt changes nothing.

use toxmail_protocol::{MessageId, PublicKey, ToxId};

use super::events::{COPY_COLUMNS, CopyEvent};
use super::{Store, StoreError};
use crate::events::{DsnStatus, EventKind, Path};

/// The event of a copy closed by a receipt: it went (at least partly) through a relay.
const CLOSED: CopyEvent = CopyEvent {
    kind: EventKind::Delivered,
    status: Some(DsnStatus::DELIVERED),
    path: Some(Path::Relay),
};

/// Most rows one receipt looks at: a message id is random, so more than one queued copy under
/// it with relays recorded is already odd; this bounds what a stray id can cost.
const MAX_CANDIDATES: i64 = 16;

/// True when `relay` is one of the relays recorded as holding the copy (`relayed_to`, the Tox
/// IDs that confirmed custody, comma separated).
pub fn in_custody_of(relayed_to: &str, relay: &PublicKey) -> bool {
    relayed_to
        .split(',')
        .filter_map(|r| r.trim().parse::<ToxId>().ok())
        .any(|r| r.public_key() == *relay)
}

const DELIVERED: &str = "UPDATE outbound SET state = 'delivered', envelope = ''::bytea, \
                         dsn_original = CASE WHEN success_notice_due THEN dsn_original END, \
                         delivered_at = COALESCE(delivered_at, now()) \
                         WHERE id = $1 AND state = 'queued' RETURNING ";

impl Store {
    /// `relay` released `id` to its recipient: closes the queued copy it holds under that id as
    /// delivered. Returns the row closed, or `None` when no queued copy under `id` is in
    /// `relay`'s custody (unknown id, another relay, already closed).
    pub async fn close_released(
        &self,
        id: &MessageId,
        relay: &PublicKey,
    ) -> Result<Option<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT id, relayed_to FROM outbound \
                 WHERE message_id = $1 AND state = 'queued' AND relayed_to IS NOT NULL \
                 ORDER BY id LIMIT $2",
                &[&&id.0[..], &MAX_CANDIDATES],
            )
            .await?;
        let delivered = format!("{DELIVERED}{COPY_COLUMNS}");
        for row in rows {
            let (row_id, to): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
            if !in_custody_of(&to, relay) {
                continue;
            }
            if let Some(closed) = tx.query_opt(&delivered, &[&row_id]).await? {
                self.report_copy(&tx, &closed, CLOSED).await?;
                tx.commit().await?;
                self.wake_publisher(true);
                return Ok(Some(row_id));
            }
        }
        Ok(None)
    }

    /// `peer` acknowledged `id` although we no longer send it (it came through a relay): closes
    /// our queued copy of `id` to that peer as delivered. Returns the row closed, if any.
    pub async fn close_acked(
        &self,
        id: &MessageId,
        peer: &PublicKey,
    ) -> Result<Option<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "UPDATE outbound SET state = 'delivered', envelope = ''::bytea, \
             dsn_original = CASE WHEN success_notice_due THEN dsn_original END, \
             delivered_at = COALESCE(delivered_at, now()) \
             WHERE id = (SELECT id FROM outbound WHERE message_id = $1 AND state = 'queued' \
                         AND substring(peer FROM 1 FOR 32) = $2 ORDER BY id LIMIT 1) \
               AND state = 'queued' \
             RETURNING {COPY_COLUMNS}"
        );
        let Some(row) = tx.query_opt(&sql, &[&&id.0[..], &&peer.0[..]]).await? else {
            return Ok(None);
        };
        self.report_copy(&tx, &row, CLOSED).await?;
        tx.commit().await?;
        self.wake_publisher(true);
        Ok(Some(row.try_get("id")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_relay_recorded_as_custodian_is_one() {
        let a = ToxId::new(PublicKey([1; 32]), 7);
        let b = ToxId::new(PublicKey([2; 32]), 9);
        let to = format!("{a},{b}");
        assert!(in_custody_of(&to, &a.public_key()));
        assert!(in_custody_of(&to, &b.public_key()));
        assert!(!in_custody_of(&to, &PublicKey([3; 32])));
        assert!(!in_custody_of("", &a.public_key()));
        assert!(!in_custody_of("not a tox id", &a.public_key()));
    }
}
