//! The outbound queue: one row per (message copy, recipient) holding the sealed envelope until
//! the peer acknowledges it. Claims use `FOR UPDATE SKIP LOCKED` plus a lease on `next_attempt`,
//! so several workers (or bridges) never send the same row at the same time.

use std::time::{Duration, SystemTime};

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
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
    /// The enhanced status of the failed DSN.
    pub fn status(self) -> DsnStatus {
        match self {
            GiveUp::Expired => DsnStatus::EXPIRED,
            GiveUp::Refused(status) => status,
        }
    }

    pub(super) fn event(self) -> CopyEvent {
        match self {
            GiveUp::Expired => CopyEvent::new(EventKind::Expired, Some(DsnStatus::EXPIRED), None),
            GiveUp::Refused(status) => CopyEvent::new(EventKind::Failed, Some(status), None),
        }
    }
}

/// A queued row as handed to the delivery layer, without its envelope: that is read
/// ([`Store::envelope`]) only when a transfer or a deposit starts, so a queue of any size costs
/// the delivery layer no memory for envelopes.
#[derive(Debug, Clone)]
pub struct OutboundRow {
    pub id: i64,
    pub message_id: MessageId,
    pub recipient: String,
    pub envelope_sender: String,
    pub sender_identity: String,
    pub peer: ToxId,
    /// Attempts so far, counting the claim that returned this row.
    pub attempts: i32,
    pub expires: SystemTime,
    pub created: SystemTime,
    /// Relays the peer published when the copy was queued.
    pub relays: Vec<ToxId>,
    /// A relay confirmed custody of this copy.
    pub relayed: bool,
    /// Bytes of its sealed envelope (PostgreSQL reads the length without the value).
    pub size: i64,
}

/// A sending identity and a peer it has copies queued for: the dispatcher keeps one waiter each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueuedPeer {
    pub sender_identity: String,
    pub peer: ToxId,
}

const ROW_COLUMNS: &str = "id, message_id, recipient, envelope_sender, sender_identity, peer, \
                           attempts, expires, created, relays, relayed_at, \
                           octet_length(envelope)::bigint AS size";

impl Store {
    /// Claims up to `limit` queued rows that are due, skipping rows another claimer holds, and
    /// leases them: they are not due again until `lease` has passed (unless rescheduled). Over
    /// all peers, for tools and tests; the dispatcher claims per peer ([`Store::claim_for`]).
    pub async fn claim_due(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboundRow>, StoreError> {
        self.claim("", "next_attempt, id", &[], limit, lease).await
    }

    /// Claims up to `limit` due copies for one (sending identity, peer), earliest due first,
    /// leased like [`Store::claim_due`]; no envelope is read.
    pub async fn claim_for(
        &self,
        pair: &QueuedPeer,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboundRow>, StoreError> {
        let peer = &pair.peer.as_bytes()[..];
        let scope = "AND sender_identity = $3 AND peer = $4";
        let params: [&(dyn ToSql + Sync); 2] = [&pair.sender_identity, &peer];
        self.claim(scope, "next_attempt", &params, limit, lease)
            .await
    }

    /// The one claim both use: due queued rows narrowed by `scope` (parameters from `$3`, given
    /// in `params`), `limit` of them in `order`, skipping rows another claimer holds, leased for
    /// `lease`; returned by id.
    async fn claim(
        &self,
        scope: &str,
        order: &str,
        params: &[&(dyn ToSql + Sync)],
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboundRow>, StoreError> {
        let client = self.client().await?;
        let fence = self.fence("outbound.sender_identity");
        let claim = client
            .prepare_cached(&format!(
                "WITH due AS (
                     SELECT id AS due_id FROM outbound
                     WHERE state = 'queued' {scope}{fence} AND next_attempt <= now()
                     ORDER BY {order}
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE outbound
                 SET next_attempt = now() + make_interval(secs => $2), attempts = attempts + 1
                 FROM due WHERE id = due_id
                 RETURNING {ROW_COLUMNS}"
            ))
            .await?;
        let lease = lease.as_secs_f64();
        let mut all: Vec<&(dyn ToSql + Sync)> = vec![&limit, &lease];
        all.extend_from_slice(params);
        let rows = client.query(&claim, &all).await?;
        let mut claimed = rows
            .iter()
            .map(outbound_row)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    /// The sealed envelope of a copy still queued; `None` once it is delivered, failed or gone.
    pub async fn envelope(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT envelope FROM outbound WHERE id = $1 AND state = 'queued'")
            .await?;
        let row = client.query_opt(&select, &[&id]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Every (sending identity, peer) with queued copies: a skip scan of the index, one probe
    /// per pair, however many copies each has.
    pub async fn queued_peers(&self) -> Result<Vec<QueuedPeer>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "WITH RECURSIVE pairs AS (
                     (SELECT sender_identity, peer FROM outbound WHERE state = 'queued'
                      ORDER BY sender_identity, peer LIMIT 1)
                     UNION ALL
                     SELECT next.sender_identity, next.peer FROM pairs, LATERAL (
                         SELECT o.sender_identity, o.peer FROM outbound o
                         WHERE o.state = 'queued'
                           AND (o.sender_identity, o.peer) > (pairs.sender_identity, pairs.peer)
                         ORDER BY o.sender_identity, o.peer LIMIT 1) next)
                 SELECT sender_identity, peer FROM pairs",
            )
            .await?;
        let rows = client.query(&select, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedPeer {
                    sender_identity: r.try_get(0)?,
                    peer: tox_id_from(r.try_get(1)?, "outbound.peer")?,
                })
            })
            .collect()
    }

    /// Whether `pair` has any queued copy, due or not.
    pub async fn has_queued(&self, pair: &QueuedPeer) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbound WHERE state = 'queued' \
                 AND sender_identity = $1 AND peer = $2)",
            )
            .await?;
        let peer = &pair.peer.as_bytes()[..];
        let row = client
            .query_one(&select, &[&pair.sender_identity, &peer])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// When `pair`'s next queued copy falls due (leased copies count at their lease's end).
    pub async fn next_due_for(&self, pair: &QueuedPeer) -> Result<Option<SystemTime>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT min(next_attempt) FROM outbound WHERE state = 'queued' \
                 AND sender_identity = $1 AND peer = $2",
            )
            .await?;
        let peer = &pair.peer.as_bytes()[..];
        let row = client
            .query_one(&select, &[&pair.sender_identity, &peer])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Makes every leased or rescheduled queued copy due now: at start-up nothing of this
    /// process is in flight, so every queued copy is tried once (as a restart always did).
    /// A fenced store touches only the copies of identities it leases: a second bridge never
    /// makes the first one's transfers due again. Returns how many rows changed.
    pub async fn release_leases(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let fence = self.fence("outbound.sender_identity");
        Ok(client
            .execute(
                &format!(
                    "UPDATE outbound SET next_attempt = now() \
                     WHERE state = 'queued' AND next_attempt > now(){fence}"
                ),
                &[],
            )
            .await?)
    }

    /// Up to `limit` queued copies past their expiry, earliest first: (id, its pair).
    pub async fn expired(&self, limit: i64) -> Result<Vec<(i64, QueuedPeer)>, StoreError> {
        let client = self.client().await?;
        let fence = self.fence("outbound.sender_identity");
        let select = client
            .prepare_cached(&format!(
                "SELECT id, sender_identity, peer FROM outbound \
                 WHERE state = 'queued' AND expires <= now(){fence} ORDER BY expires LIMIT $1"
            ))
            .await?;
        let rows = client.query(&select, &[&limit]).await?;
        rows.iter()
            .map(|r| {
                let pair = QueuedPeer {
                    sender_identity: r.try_get(1)?,
                    peer: tox_id_from(r.try_get(2)?, "outbound.peer")?,
                };
                Ok((r.try_get(0)?, pair))
            })
            .collect()
    }

    /// Up to `limit` of `pair`'s queued copies with id above `after_id` that no relay holds and
    /// that were queued at least `waited` ago, by id (the relay fallback's pages).
    pub async fn deposit_due(
        &self,
        pair: &QueuedPeer,
        waited: Duration,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboundRow>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM outbound \
                 WHERE state = 'queued' AND relayed_at IS NULL \
                   AND sender_identity = $1 AND peer = $2 AND id > $3 \
                   AND created <= now() - make_interval(secs => $4) \
                 ORDER BY id LIMIT $5"
            ))
            .await?;
        let peer = &pair.peer.as_bytes()[..];
        let rows = client
            .query(
                &select,
                &[
                    &pair.sender_identity,
                    &peer,
                    &after_id,
                    &waited.as_secs_f64(),
                    &limit,
                ],
            )
            .await?;
        rows.iter().map(outbound_row).collect()
    }

    /// When the first of `pair`'s copies with id above `after_id` that no relay holds was
    /// queued (its deposit falls due `deposit_after` later).
    pub async fn first_undeposited(
        &self,
        pair: &QueuedPeer,
        after_id: i64,
    ) -> Result<Option<SystemTime>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT min(created) FROM outbound WHERE state = 'queued' AND relayed_at IS NULL \
                 AND sender_identity = $1 AND peer = $2 AND id > $3",
            )
            .await?;
        let peer = &pair.peer.as_bytes()[..];
        let row = client
            .query_one(&select, &[&pair.sender_identity, &peer, &after_id])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Every queued row, due or not, oldest first, without envelopes (tests and tools; the
    /// dispatcher works per peer and in pages).
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
             dsn_original = CASE WHEN success_notice_due THEN dsn_original END, \
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
        // The status is three numbers from a typed value, never outside input.
        let status = how.status();
        self.update_copy(
            &format!(
                "UPDATE outbound SET state = 'failed', last_error = $2, \
                 failure_status = '{status}' WHERE id = $1 AND state = 'queued'"
            ),
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
        let fence = self.fence("outbound.sender_identity");
        let sql = format!("{sql}{fence} RETURNING {COPY_COLUMNS}");
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
        attempts: row.try_get("attempts")?,
        expires: row.try_get("expires")?,
        created: row.try_get("created")?,
        relays: relays_from(row)?,
        relayed: row
            .try_get::<_, Option<SystemTime>>("relayed_at")?
            .is_some(),
        size: row.try_get("size")?,
    })
}
