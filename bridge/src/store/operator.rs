//! The operator's view of and decisions on single copies (`toxmail-bridge queue list/show/retry/
//! delete/bounce`) and on identities (`identity remove`). Each decision is one transaction that
//! locks the row first, so a running bridge sees the row either before or after it; the bridge's
//! dispatcher drops a delivery whose row is no longer queued (`Store::still_queued`).
//! Why a copy waits is read from its row and from `peer_presence` (`store/presence.rs`).

use std::time::SystemTime;

use tokio_postgres::Row;
use toxmail_protocol::{MessageId, ToxId};

use super::events::COPY_COLUMNS;
use super::queue::GiveUp;
use super::{Store, StoreError, message_id_from, relays_from, tox_id_from};
use crate::events::DsnStatus;

/// A copy as the operator sees it: metadata only, never the envelope's bytes.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: i64,
    pub message_id: MessageId,
    /// Postfix queue id the copy came with (XFORWARD IDENT), if any.
    pub idem_key: Option<String>,
    pub recipient: String,
    pub envelope_sender: String,
    /// The local identity the envelope is sealed from.
    pub sender_identity: String,
    pub peer: ToxId,
    /// `queued`, `failed` (its failed DSN still to go out) or `delivered`.
    pub state: String,
    pub attempts: i32,
    pub created: SystemTime,
    pub next_attempt: SystemTime,
    pub expires: SystemTime,
    pub delivered_at: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Size of the sealed envelope still held (0 once delivered).
    pub envelope_bytes: i64,
    /// Relays the peer published when the copy was queued.
    pub relays: Vec<ToxId>,
    /// When a relay confirmed custody, and which relays did (Tox IDs, comma separated).
    pub relayed_at: Option<SystemTime>,
    pub relayed_to: Option<String>,
    /// The one "delayed" DSN went out.
    pub delay_notified: bool,
}

impl QueueEntry {
    /// How many relays confirmed custody.
    pub fn custodians(&self) -> usize {
        self.relayed_to
            .as_deref()
            .map_or(0, |r| r.split(',').filter(|r| !r.trim().is_empty()).count())
    }
}

/// One page of `queue list`.
#[derive(Debug, Clone)]
pub struct QueuePage {
    pub entries: Vec<QueueEntry>,
    /// Open copies after the last one listed (after `after` when the page is empty).
    pub more: i64,
}

/// Why the operator's change to a copy or an identity was not made. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no copy with id {0} in the queue (see `toxmail-bridge queue list`)")]
    Unknown(i64),
    #[error("copy {id}: {why}; nothing changed")]
    Refused { id: i64, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const ENTRY_COLUMNS: &str = "id, message_id, idem_key, recipient, envelope_sender, \
     sender_identity, peer, state, attempts, created, next_attempt, expires, delivered_at, \
     last_error, octet_length(envelope)::bigint AS envelope_bytes, relays, relayed_at, \
     relayed_to, delay_notified";

fn entry(row: &Row) -> Result<QueueEntry, StoreError> {
    Ok(QueueEntry {
        id: row.try_get("id")?,
        message_id: message_id_from(row.try_get("message_id")?, "outbound.message_id")?,
        idem_key: row.try_get("idem_key")?,
        recipient: row.try_get("recipient")?,
        envelope_sender: row.try_get("envelope_sender")?,
        sender_identity: row.try_get("sender_identity")?,
        peer: tox_id_from(row.try_get("peer")?, "outbound.peer")?,
        state: row.try_get("state")?,
        attempts: row.try_get("attempts")?,
        created: row.try_get("created")?,
        next_attempt: row.try_get("next_attempt")?,
        expires: row.try_get("expires")?,
        delivered_at: row.try_get("delivered_at")?,
        last_error: row.try_get("last_error")?,
        envelope_bytes: row.try_get("envelope_bytes")?,
        relays: relays_from(row)?,
        relayed_at: row.try_get("relayed_at")?,
        relayed_to: row.try_get("relayed_to")?,
        delay_notified: row.try_get("delay_notified")?,
    })
}

/// What the operator may do to a copy in `state`: `Ok` for a queued copy, else why not.
fn must_be_queued(e: &QueueEntry, verb: &str) -> Result<(), OperatorError> {
    let why = match e.state.as_str() {
        "queued" => return Ok(()),
        "delivered" => format!("delivered already; there is nothing to {verb}"),
        _ => format!(
            "given up already ({}); its failed DSN is still to go out",
            e.last_error.as_deref().unwrap_or("no reason recorded")
        ),
    };
    Err(OperatorError::Refused { id: e.id, why })
}

impl Store {
    /// Copies still in the queue (queued or failed, not delivered), by id.
    pub async fn queue_list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {ENTRY_COLUMNS} FROM outbound WHERE state <> 'delivered' ORDER BY id");
        let rows = client.query(&sql, &[]).await?;
        rows.iter().map(entry).collect()
    }

    /// One page of the copies still in the queue: up to `limit` with an id above `after`, by id,
    /// and how many more there are after the last one. Reads only open rows (`outbound_open`).
    pub async fn queue_page(&self, after: i64, limit: i64) -> Result<QueuePage, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM outbound WHERE state <> 'delivered' AND id > $1 \
             ORDER BY id LIMIT $2"
        );
        let rows = client.query(&sql, &[&after, &limit.max(0)]).await?;
        let entries = rows.iter().map(entry).collect::<Result<Vec<_>, _>>()?;
        let last = entries.last().map_or(after, |e| e.id);
        let more: i64 = client
            .query_one(
                "SELECT count(*) FROM outbound WHERE state <> 'delivered' AND id > $1",
                &[&last],
            )
            .await?
            .get(0);
        Ok(QueuePage { entries, more })
    }

    /// One copy in any state (a delivered row is kept without its envelope), or `None`.
    pub async fn queue_entry(&self, id: i64) -> Result<Option<QueueEntry>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM outbound WHERE id = $1");
        client
            .query_opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(entry)
            .transpose()
    }

    /// Of `ids`, those still queued: the dispatcher stops delivering the others.
    pub async fn still_queued(&self, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM outbound WHERE id = ANY($1) AND state = 'queued'",
                &[&ids],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Makes copies due now: the one with `id`, or with `None` every queued copy. Returns the
    /// ids made due. Attempts are kept (they are the copy's history, reported in its DSNs).
    pub async fn retry_now(&self, id: Option<i64>) -> Result<Vec<i64>, OperatorError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        if let Some(id) = id {
            let e = locked(&tx, id).await?;
            must_be_queued(&e, "retry")?;
        }
        let rows = tx
            .query(
                "UPDATE outbound SET next_attempt = now() \
                 WHERE state = 'queued' AND ($1::bigint IS NULL OR id = $1) RETURNING id",
                &[&id],
            )
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Removes a queued or failed copy without any DSN; returns it as it was. A queued copy's
    /// `failed` event (5.0.0) is written with it. A copy in a relay's custody is refused unless
    /// `force` (the relay still hands it on).
    pub async fn delete_copy(&self, id: i64, force: bool) -> Result<QueueEntry, OperatorError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let e = locked(&tx, id).await?;
        if e.state == "delivered" {
            let why = "delivered already; there is nothing to delete".to_string();
            return Err(OperatorError::Refused { id, why });
        }
        if e.state == "queued" && !force {
            refuse_custody(&e, "deleting it here does not recall it")?;
        }
        let sql = format!("DELETE FROM outbound WHERE id = $1 RETURNING {COPY_COLUMNS}");
        let row = tx.query_one(&sql, &[&id]).await.map_err(StoreError::from)?;
        // Every copy ends with one final event: a failed copy had it when it failed.
        let queued = e.state == "queued";
        if queued {
            let how = GiveUp::Refused(DsnStatus(5, 0, 0));
            self.report_copy(&tx, &row, how.event()).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.wake_publisher(queued);
        Ok(e)
    }

    /// Gives up on a queued copy now: it becomes `failed` with `reason` (the diagnostic of its
    /// failed DSN, status `status`), and the notifier sends the DSN and removes it as for any
    /// copy given up on. A copy in a relay's custody is refused unless `force`.
    pub async fn bounce_copy(
        &self,
        id: i64,
        reason: &str,
        status: DsnStatus,
        force: bool,
    ) -> Result<QueueEntry, OperatorError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let e = locked(&tx, id).await?;
        must_be_queued(&e, "bounce")?;
        if !force {
            refuse_custody(&e, "a failed DSN would be wrong if they hand it on")?;
        }
        let sql = format!(
            "UPDATE outbound SET state = 'failed', last_error = $2, failure_status = '{status}' \
             WHERE id = $1 RETURNING {COPY_COLUMNS}"
        );
        let row = tx
            .query_one(&sql, &[&id, &reason])
            .await
            .map_err(StoreError::from)?;
        self.report_copy(&tx, &row, GiveUp::Refused(status).event())
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.wake_publisher(true);
        Ok(e)
    }

    /// Copies that depend on identity `address`: queued outbound copies sealed from it, and
    /// inbound mail for it not yet injected.
    pub async fn identity_in_use(&self, address: &str) -> Result<(i64, i64), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM outbound \
                         WHERE sender_identity = $1 AND state = 'queued'), \
                        (SELECT count(*) FROM inbound WHERE identity = $1 AND state = 'pending')",
                &[&address],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Removes a local identity's row and the presence of its peers; false if there was none.
    /// Nothing else references it in the schema: queued copies name it by address and fail
    /// once no node sends for it.
    pub async fn remove_identity(&self, address: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM identities WHERE address = $1", &[&address])
            .await?;
        tx.execute("DELETE FROM peer_presence WHERE identity = $1", &[&address])
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }
}

/// The copy `id`, locked for the rest of `tx`.
async fn locked(
    tx: &deadpool_postgres::Transaction<'_>,
    id: i64,
) -> Result<QueueEntry, OperatorError> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM outbound WHERE id = $1 FOR UPDATE");
    let row = tx.query_opt(&sql, &[&id]).await.map_err(StoreError::from)?;
    match row {
        Some(row) => Ok(entry(&row)?),
        None => Err(OperatorError::Unknown(id)),
    }
}

fn refuse_custody(e: &QueueEntry, consequence: &str) -> Result<(), OperatorError> {
    match &e.relayed_to {
        Some(relays) => Err(OperatorError::Refused {
            id: e.id,
            why: format!(
                "relay node(s) {relays} hold it for the recipient and {consequence}; \
                 add --force to do it anyway"
            ),
        }),
        None => Ok(()),
    }
}
