//! The events outbox (docs/events.md): rows written inside the transactions of the queue changes
//! they report (only when the store was given an `Outbox`), read back in id order by the
//! publisher, marked published after the broker confirmed them, purged a day later.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::{Store, StoreError, message_id_from};
use crate::events::{DsnStatus, EventKind, NewEvent, Outbox, Path, StoredEvent, outbound_subject};

const INSERT: &str = "INSERT INTO events (type, subject, data) VALUES ($1, $2, $3::text::jsonb)";

/// The outbound columns an event about a copy needs, for `RETURNING` and `SELECT`.
pub(super) const COPY_COLUMNS: &str = "id, message_id, recipient, attempts";

/// What an event about a queued copy reports beyond the copy itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct CopyEvent {
    pub kind: EventKind,
    pub status: Option<DsnStatus>,
    pub path: Option<Path>,
}

impl CopyEvent {
    pub fn new(kind: EventKind, status: Option<DsnStatus>, path: Option<Path>) -> CopyEvent {
        CopyEvent { kind, status, path }
    }
}

/// Writes one event in `tx`.
pub(super) async fn write(tx: &Transaction<'_>, event: &NewEvent) -> Result<(), StoreError> {
    let data = serde_json::to_string(&event.data)
        .map_err(|e| StoreError::Query(format!("event data: {e}")))?;
    let insert = tx.prepare_cached(INSERT).await?;
    tx.execute(&insert, &[&event.kind.type_name(), &event.subject, &data])
        .await?;
    Ok(())
}

/// Writes the event about the copy in `row` (selected or returned with `COPY_COLUMNS`).
async fn write_copy(
    tx: &Transaction<'_>,
    outbox: &Outbox,
    row: &Row,
    what: CopyEvent,
) -> Result<(), StoreError> {
    let id: i64 = row.try_get("id")?;
    let message_id = message_id_from(row.try_get("message_id")?, "outbound.message_id")?;
    let mut data = outbox.data(&message_id, row.try_get("recipient")?);
    data.queue_id = Some(id);
    data.status = what.status.map(|s| s.to_string());
    data.attempt = Some(row.try_get("attempts")?);
    data.path = what.path;
    let event = NewEvent {
        kind: what.kind,
        subject: outbound_subject(id),
        data,
    };
    write(tx, &event).await
}

impl Store {
    /// Writes, when events are on, the event about the copy in `row` (selected or returned
    /// with `COPY_COLUMNS`) in `tx`.
    pub(super) async fn report_copy(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        what: CopyEvent,
    ) -> Result<(), StoreError> {
        match &self.events {
            Some(outbox) => write_copy(tx, outbox, row, what).await,
            None => Ok(()),
        }
    }

    /// The same store, writing an event with every reported change from now on.
    pub fn with_events(mut self, outbox: Arc<Outbox>) -> Store {
        self.events = Some(outbox);
        self
    }

    /// The outbox, when events are on.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.events.as_ref()
    }

    /// Tells the publisher that committed events wait (call after the commit).
    pub(super) fn wake_publisher(&self, wrote: bool) {
        if let (true, Some(outbox)) = (wrote, &self.events) {
            outbox.wake.notify_one();
        }
    }

    /// Up to `limit` unpublished events, oldest first.
    pub async fn unpublished_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT id, event_id::text, type, \
                 to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                 subject, data::text FROM events WHERE published_at IS NULL ORDER BY id LIMIT $1",
            )
            .await?;
        let rows = client.query(&select, &[&limit]).await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    row: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    type_name: r.try_get(2)?,
                    time: r.try_get(3)?,
                    subject: r.try_get(4)?,
                    data: serde_json::from_str(r.try_get(5)?)
                        .map_err(|e| StoreError::Corrupt(format!("events.data: {e}")))?,
                })
            })
            .collect()
    }

    /// The broker confirmed these events.
    pub async fn mark_events_published(&self, rows: &[i64]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE events SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL",
                &[&rows],
            )
            .await?;
        Ok(())
    }

    /// Deletes events published more than `age` ago; returns how many.
    pub async fn purge_published_events(&self, age: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM events WHERE published_at < now() - make_interval(secs => $1)",
                &[&age.as_secs_f64()],
            )
            .await?;
        Ok(n)
    }
}
