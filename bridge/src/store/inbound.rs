//! Inbound messages: deduplication by (sealing key, message id) and the queue of sealed envelopes
//! waiting to be opened and injected into Postfix. The row outlives injection (envelope emptied)
//! so a resent copy is recognised and acknowledged without a second delivery. A message id is
//! chosen by whoever seals, so it only means something together with the key that sealed it.

use std::time::{Duration, SystemTime};

use tokio_postgres::Row;
use toxmail_protocol::{MessageId, PublicKey};

use super::{Store, StoreError, message_id_from, public_key_from};
use crate::events::{DsnStatus, EventKind, NewEvent, inbound_subject};

/// An envelope received from a peer, as stored before the Ack is sent.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub message_id: MessageId,
    /// The Tox key that sealed (and sent) the envelope.
    pub sender_key: PublicKey,
    /// The local address (identity) it is for.
    pub identity: String,
    /// The sealed envelope, never plaintext.
    pub envelope: Vec<u8>,
    /// The admission verdict on sealing key versus envelope sender (`Verdict::as_db`).
    pub sender_verdict: String,
    /// The expiry sealed in the envelope: the row is not purged before it has passed
    /// (`store/retention.rs`).
    pub expires: SystemTime,
}

/// What names one inbound row: the key that sealed the envelope and the id it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InboundKey {
    pub sender: PublicKey,
    pub id: MessageId,
}

/// A pending inbound envelope handed to the injector.
#[derive(Debug, Clone)]
pub struct InboundRow {
    pub message_id: MessageId,
    pub sender_key: PublicKey,
    pub identity: String,
    pub envelope: Vec<u8>,
    pub sender_verdict: String,
    /// Attempts so far, counting the claim that returned this row.
    pub attempts: i32,
    pub received: SystemTime,
}

impl InboundRow {
    pub fn key(&self) -> InboundKey {
        InboundKey {
            sender: self.sender_key,
            id: self.message_id,
        }
    }
}

impl Store {
    /// Stores a received envelope. True if inserted; false if this sealer's message id is already
    /// known (pending, injected or failed). Committed when it returns, so the Ack may follow.
    pub async fn record_inbound(&self, rec: &NewInbound) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO inbound (message_id, sender_key, identity, envelope, sender_verdict, \
                 expires) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (sender_key, message_id) DO NOTHING",
            )
            .await?;
        let inserted = client
            .execute(
                &insert,
                &[
                    &&rec.message_id.0[..],
                    &&rec.sender_key.0[..],
                    &rec.identity,
                    &rec.envelope,
                    &rec.sender_verdict,
                    &rec.expires,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Makes every pending row due now. Called once at start-up: leases of a process that died
    /// mid-injection must not delay its mail (a single bridge owns its database).
    pub async fn release_inbound_leases(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let fence = self.fence("inbound.identity");
        let n = client
            .execute(
                &format!(
                    "UPDATE inbound SET next_attempt = now() \
                     WHERE state = 'pending' AND next_attempt > now(){fence}"
                ),
                &[],
            )
            .await?;
        Ok(n)
    }

    /// True if this sealer's message id was ever recorded, whatever its state.
    pub async fn inbound_exists(
        &self,
        sender_key: &PublicKey,
        message_id: &MessageId,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM inbound WHERE sender_key = $1 AND message_id = $2",
                &[&&sender_key.0[..], &&message_id.0[..]],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Claims up to `limit` pending envelopes that are due, skipping rows another claimer holds,
    /// and leases them for `lease`.
    pub async fn claim_inbound(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<InboundRow>, StoreError> {
        let client = self.client().await?;
        let fence = self.fence("inbound.identity");
        let claim = client
            .prepare_cached(&format!(
                "WITH due AS (
                     SELECT sender_key AS due_key, message_id AS due_id FROM inbound
                     WHERE state = 'pending' AND next_attempt <= now(){fence}
                     ORDER BY next_attempt, received
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE inbound
                 SET next_attempt = now() + make_interval(secs => $2), attempts = attempts + 1
                 FROM due WHERE sender_key = due_key AND message_id = due_id
                 RETURNING message_id, sender_key, identity, envelope, sender_verdict, attempts, received"
            ))
            .await?;
        let rows = client
            .query(&claim, &[&limit, &lease.as_secs_f64()])
            .await?;
        let mut claimed = rows
            .iter()
            .map(inbound_row)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|row| row.received);
        Ok(claimed)
    }

    /// Postfix accepted the message for `recipient`: drop the envelope, keep the id for
    /// deduplication. A row already injected is left as it is (and reported once).
    pub async fn mark_injected(&self, key: &InboundKey, recipient: &str) -> Result<(), StoreError> {
        let sql = "UPDATE inbound SET state = 'injected', envelope = ''::bytea, \
                   injected_at = COALESCE(injected_at, now()) \
                   WHERE sender_key = $1 AND message_id = $2 AND state <> 'injected'";
        let end = InboundEnd {
            kind: EventKind::InboundInjected,
            recipient,
            status: DsnStatus::DELIVERED,
        };
        self.end_inbound(sql, key, None, end).await
    }

    /// Gives up on a pending envelope for `recipient` (kept for the operator), reporting
    /// `status`. No-op if no longer pending.
    pub async fn mark_inbound_failed(
        &self,
        key: &InboundKey,
        reason: &str,
        recipient: &str,
        status: DsnStatus,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE inbound SET state = 'failed', last_error = $3 \
                   WHERE sender_key = $1 AND message_id = $2 AND state = 'pending'";
        let end = InboundEnd {
            kind: EventKind::InboundFailed,
            recipient,
            status,
        };
        self.end_inbound(sql, key, Some(reason), end).await
    }

    /// Runs a guarded final update of an inbound row and, when it changed the row and events
    /// are on, writes its event in the same transaction. NotFound only when the id is unknown.
    async fn end_inbound(
        &self,
        sql: &str,
        key: &InboundKey,
        reason: Option<&str>,
        end: InboundEnd<'_>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (sender, id) = (&key.sender.0[..], &key.id.0[..]);
        let sql = &format!("{sql}{} RETURNING attempts", self.fence("inbound.identity"));
        let updated = match reason {
            Some(reason) => tx.query_opt(sql, &[&sender, &id, &reason]).await?,
            None => tx.query_opt(sql, &[&sender, &id]).await?,
        };
        let Some(row) = updated else {
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM inbound WHERE sender_key = $1 AND message_id = $2",
                    &[&sender, &id],
                )
                .await?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound(format!("inbound message {}", key.id)));
            }
            tracing::debug!(message_id = %key.id, "inbound row already final; update skipped");
            return Ok(());
        };
        if let Some(outbox) = &self.events {
            let mut data = outbox.data(&key.id, end.recipient);
            data.status = Some(end.status.to_string());
            data.attempt = Some(row.try_get(0)?);
            let event = NewEvent {
                kind: end.kind,
                subject: inbound_subject(&key.id),
                data,
            };
            super::events::write(&tx, &event).await?;
        }
        tx.commit().await?;
        self.wake_publisher(true);
        Ok(())
    }

    /// Keeps an envelope pending, due again at `next`. No-op if no longer pending.
    pub async fn reschedule_inbound(
        &self,
        key: &InboundKey,
        next: SystemTime,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.update_pending(
            "UPDATE inbound SET next_attempt = $4, last_error = $3 \
             WHERE sender_key = $1 AND message_id = $2 AND state = 'pending'",
            key,
            reason,
            Some(next),
        )
        .await
    }

    /// Runs an update guarded by `state = 'pending'`; NotFound only when the id is unknown.
    async fn update_pending(
        &self,
        sql: &str,
        key: &InboundKey,
        reason: &str,
        next: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let (sender, id) = (&key.sender.0[..], &key.id.0[..]);
        let sql = &format!("{sql}{}", self.fence("inbound.identity"));
        let updated = match next {
            Some(next) => client.execute(sql, &[&sender, &id, &reason, &next]).await?,
            None => client.execute(sql, &[&sender, &id, &reason]).await?,
        };
        if updated == 0 {
            if !self.inbound_exists(&key.sender, &key.id).await? {
                return Err(StoreError::NotFound(format!("inbound message {}", key.id)));
            }
            tracing::debug!(message_id = %key.id, "inbound row no longer pending; update skipped");
        }
        Ok(())
    }
}

/// The event a final inbound update reports.
struct InboundEnd<'a> {
    kind: EventKind,
    recipient: &'a str,
    status: DsnStatus,
}

fn inbound_row(row: &Row) -> Result<InboundRow, StoreError> {
    Ok(InboundRow {
        message_id: message_id_from(row.try_get("message_id")?, "inbound.message_id")?,
        sender_key: public_key_from(row.try_get("sender_key")?, "inbound.sender_key")?,
        identity: row.try_get("identity")?,
        envelope: row.try_get("envelope")?,
        sender_verdict: row.try_get("sender_verdict")?,
        attempts: row.try_get("attempts")?,
        received: row.try_get("received")?,
    })
}
