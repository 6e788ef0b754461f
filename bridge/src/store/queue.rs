//! The outbound queue: one row per (message copy, recipient) holding the sealed envelope until
//! the peer acknowledges it. Claims use `FOR UPDATE SKIP LOCKED` plus a lease on `next_attempt`,
//! so several workers (or bridges) never send the same row at the same time.

use std::time::{Duration, SystemTime};

use tokio_postgres::Row;
use toxmail_protocol::{MessageId, PublicKey, ToxId};

use super::events::{COPY_COLUMNS, CopyEvent};
use super::{Store, StoreError, message_id_from, relays_from, tox_id_from};
use crate::events::{DsnStatus, EventKind, Path};

/// A copy to queue for one recipient.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub message_id: MessageId,
    /// Postfix queue id (XFORWARD IDENT): with `recipient`, makes a retried LMTP transaction
    /// a no-op instead of a second copy.
    pub idem_key: Option<String>,
    pub recipient: String,
    pub envelope_sender: String,
    /// The local address (identity) the envelope is sealed from.
    pub sender_identity: String,
    pub peer: ToxId,
    /// The sealed envelope, never plaintext.
    pub envelope: Vec<u8>,
    pub expires: SystemTime,
    /// Relays the peer published (DNS `relay=`), for a deposit if it stays offline.
    pub relays: Vec<ToxId>,
}

/// What `enqueue` did with one copy, in input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// True when `(idem_key, recipient)` was already queued: `id` is that earlier row.
    pub duplicate: bool,
}

/// How a queued copy ended without delivery: typed, so its event (`failed` or `expired`) needs
/// no reading of the reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Its queue lifetime ran out.
    Expired,
    /// Refused for good, with the enhanced status the failed DSN reports.
    Refused(DsnStatus),
}

impl GiveUp {
    pub(super) fn event(self) -> CopyEvent {
        match self {
            GiveUp::Expired => CopyEvent::new(EventKind::Expired, Some(DsnStatus::EXPIRED), None),
            GiveUp::Refused(status) => CopyEvent::new(EventKind::Failed, Some(status), None),
        }
    }
}

/// A queued row with its envelope, as handed to the delivery layer.
#[derive(Debug, Clone)]
pub struct OutboundRow {
    pub id: i64,
    pub message_id: MessageId,
    pub recipient: String,
    pub envelope_sender: String,
    pub sender_identity: String,
    pub peer: ToxId,
    pub envelope: Vec<u8>,
    /// Attempts so far, counting the claim that returned this row.
    pub attempts: i32,
    pub expires: SystemTime,
    pub created: SystemTime,
    /// Relays the peer published when the copy was queued.
    pub relays: Vec<ToxId>,
    /// A relay confirmed custody of this copy.
    pub relayed: bool,
}

const ROW_COLUMNS: &str = "id, message_id, recipient, envelope_sender, sender_identity, peer, \
                           envelope, attempts, expires, created, relays, relayed_at";

impl Store {
    /// Claims up to `limit` queued rows that are due, skipping rows another claimer holds, and
    /// leases them: they are not due again until `lease` has passed (unless rescheduled).
    pub async fn claim_due(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboundRow>, StoreError> {
        let client = self.client().await?;
        let claim = client
            .prepare_cached(&format!(
                "WITH due AS (
                     SELECT id AS due_id FROM outbound
                     WHERE state = 'queued' AND next_attempt <= now()
                     ORDER BY next_attempt, id
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbound
                 SET next_attempt = now() + make_interval(secs => $2), attempts = attempts + 1
                 FROM due WHERE id = due_id
                 RETURNING {ROW_COLUMNS}"
            ))
            .await?;
        let rows = client
            .query(&claim, &[&limit, &lease.as_secs_f64()])
            .await?;
        let mut claimed = rows
            .iter()
            .map(outbound_row)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// Every queued row, due or not, oldest first (start-up hands them all to the Tox layer).
    pub async fn queued(&self) -> Result<Vec<OutboundRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM outbound WHERE state = 'queued' ORDER BY id"
            ))
            .await?;
        let rows = client.query(&select, &[]).await?;
        rows.iter().map(outbound_row).collect()
    }

    /// The peer acknowledged: the row stays (for the log and the CLI) without its envelope.
    /// A row already delivered is left as it is (and reported once).
    pub async fn mark_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.update_copy(
            "UPDATE outbound SET state = 'delivered', envelope = ''::bytea, \
             delivered_at = COALESCE(delivered_at, now()) WHERE id = $1 AND state <> 'delivered'",
            id,
            None,
            None,
            CopyEvent::new(
                EventKind::Delivered,
                Some(DsnStatus::DELIVERED),
                Some(Path::Direct),
            ),
        )
        .await
    }

    /// Gives up on a queued row; it stays, with its envelope, until the bounce is sent.
    /// A row that is no longer queued (already delivered or failed) is left as it is.
    pub async fn mark_failed(&self, id: i64, reason: &str, how: GiveUp) -> Result<(), StoreError> {
        self.update_copy(
            "UPDATE outbound SET state = 'failed', last_error = $2 \
             WHERE id = $1 AND state = 'queued'",
            id,
            Some(reason),
            None,
            how.event(),
        )
        .await
    }

    /// Keeps a queued row queued, due again at `next`. No-op for a row no longer queued.
    pub async fn reschedule(
        &self,
        id: i64,
        next: SystemTime,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.update_copy(
            "UPDATE outbound SET next_attempt = $3, last_error = $2 \
             WHERE id = $1 AND state = 'queued'",
            id,
            Some(reason),
            Some(next),
            CopyEvent::new(
                EventKind::Deferred,
                Some(DsnStatus::DEFERRED),
                Some(Path::Direct),
            ),
        )
        .await
    }

    /// A relay confirmed custody of a queued copy: recorded, so it is not deposited again.
    pub async fn mark_relayed(&self, id: i64, relays: &str) -> Result<(), StoreError> {
        self.update_copy(
            "UPDATE outbound SET relayed_at = now(), relayed_to = $2 \
             WHERE id = $1 AND state = 'queued'",
            id,
            Some(relays),
            None,
            CopyEvent::new(
                EventKind::Relayed,
                Some(DsnStatus::DELIVERED),
                Some(Path::Relay),
            ),
        )
        .await
    }

    /// Replaces the relays `peer` told us (its `RelayList`).
    pub async fn set_peer_relays(
        &self,
        peer: &PublicKey,
        relays: &[ToxId],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "DELETE FROM peer_relays WHERE peer_key = $1",
            &[&&peer.0[..]],
        )
        .await?;
        for r in relays {
            tx.execute(
                "INSERT INTO peer_relays (peer_key, relay) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&&peer.0[..], &&r.as_bytes()[..]],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The relays `peer` told us, oldest first.
    pub async fn peer_relays(&self, peer: &PublicKey) -> Result<Vec<ToxId>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT relay FROM peer_relays WHERE peer_key = $1 ORDER BY learned, relay",
                &[&&peer.0[..]],
            )
            .await?;
        rows.iter()
            .map(|r| tox_id_from(r.get(0), "peer_relays.relay"))
            .collect()
    }

    /// Runs a guarded update of one copy (`$1` the id, `$2` the text, `$3` the time) and, when
    /// it changed the row and events are on, writes `event` in the same transaction. NotFound
    /// only when the id does not exist; a row the guard skips changes nothing and reports nothing.
    async fn update_copy(
        &self,
        sql: &str,
        id: i64,
        text: Option<&str>,
        next: Option<SystemTime>,
        event: CopyEvent,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!("{sql} RETURNING {COPY_COLUMNS}");
        let updated = match (text, next) {
            (Some(text), Some(next)) => tx.query_opt(&sql, &[&id, &text, &next]).await?,
            (Some(text), None) => tx.query_opt(&sql, &[&id, &text]).await?,
            (None, _) => tx.query_opt(&sql, &[&id]).await?,
        };
        let Some(row) = updated else {
            let exists = tx
                .query_opt("SELECT 1 FROM outbound WHERE id = $1", &[&id])
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound(format!("outbound row {id}")));
            }
            tracing::debug!(id, "outbound row not in a state for this update; skipped");
            return Ok(());
        };
        self.report_copy(&tx, &row, event).await?;
        tx.commit().await?;
        self.wake_publisher(true);
        Ok(())
    }
}

fn outbound_row(row: &Row) -> Result<OutboundRow, StoreError> {
    Ok(OutboundRow {
        id: row.try_get("id")?,
        message_id: message_id_from(row.try_get("message_id")?, "outbound.message_id")?,
        recipient: row.try_get("recipient")?,
        envelope_sender: row.try_get("envelope_sender")?,
        sender_identity: row.try_get("sender_identity")?,
        peer: tox_id_from(row.try_get("peer")?, "outbound.peer")?,
        envelope: row.try_get("envelope")?,
        attempts: row.try_get("attempts")?,
        expires: row.try_get("expires")?,
        created: row.try_get("created")?,
        relays: relays_from(row)?,
        relayed: row
            .try_get::<_, Option<SystemTime>>("relayed_at")?
            .is_some(),
    })
}
