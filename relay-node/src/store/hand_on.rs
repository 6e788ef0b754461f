//! What the hand-on reads: a recipient's held envelopes listed a page at a time (ids and sizes,
//! no bodies), and one envelope's body read in bounded chunks, so neither the relay nor its
//! database connections ever hold more than the envelopes being handed on.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::IsolationLevel;
use toxmail_protocol::{MessageId, PublicKey};

use super::{Store, StoreError};

/// Bytes of an envelope read per query: a connection's read buffer grows to the largest row it
/// received and keeps that size, so whole 25 MiB envelopes would leave 25 MiB per pooled
/// connection.
const CHUNK: i32 = 1024 * 1024;

/// One held envelope as the listing sees it: no body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    pub message_id: MessageId,
    pub size: u64,
    /// Where the listing goes on from (with the id): oldest deposit first.
    pub deposited_at: SystemTime,
}

/// The place after which the next page starts: the last envelope listed, or the beginning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(Option<(SystemTime, MessageId)>);

impl Cursor {
    pub const START: Cursor = Cursor(None);

    pub fn after(listed: &Listed) -> Cursor {
        Cursor(Some((listed.deposited_at, listed.message_id)))
    }
}

impl Store {
    /// Up to `limit` envelopes held for `recipient` that have not expired, after `cursor`, oldest
    /// first: ids and sizes only.
    pub async fn held_page(
        &self,
        recipient: &PublicKey,
        cursor: Cursor,
        limit: u32,
    ) -> Result<Vec<Listed>, StoreError> {
        let (at, id) = cursor.0.unwrap_or((UNIX_EPOCH, MessageId([0; 32])));
        // Before every deposit: the epoch and the lowest id (only rows after it are listed, and no
        // row was deposited at the epoch).
        let id: &[u8] = if cursor.0.is_some() { &id.0 } else { &[] };
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT message_id, size, deposited_at FROM held
                 WHERE recipient = $1 AND expires_at > now()
                   AND (deposited_at, message_id) > ($2, $3)
                 ORDER BY deposited_at, message_id LIMIT $4",
                &[&recipient.0.as_slice(), &at, &id, &i64::from(limit)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Listed {
                    message_id: MessageId::from_slice(r.get(0))
                        .map_err(|e| StoreError::Corrupt(format!("message id: {e}")))?,
                    size: u64::try_from(r.get::<_, i64>(1))
                        .map_err(|_| StoreError::Corrupt("negative size".into()))?,
                    deposited_at: r.get(2),
                })
            })
            .collect()
    }

    /// The body of the envelope `id` held for `recipient`, read [`CHUNK`] bytes at a time in one
    /// snapshot; `None` once it is no longer held (acknowledged, purged).
    pub async fn held_envelope(
        &self,
        recipient: &PublicKey,
        id: &MessageId,
        size: u64,
    ) -> Result<Option<Arc<[u8]>>, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("envelope {id}: not the size listed"));
        let size = usize::try_from(size).map_err(|_| corrupt())?;
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let chunk = tx
            .prepare(
                "SELECT substring(envelope FROM $3 FOR $4), length(envelope) FROM held
                 WHERE recipient = $1 AND message_id = $2",
            )
            .await?;
        // Filled in place: the courier takes this very buffer, so no second envelope-sized copy
        // exists even for a moment (an iterator of known length is collected in one allocation).
        let mut envelope: Arc<[u8]> = std::iter::repeat_n(0u8, size).collect();
        let buffer = Arc::get_mut(&mut envelope).expect("not shared yet");
        let mut filled = 0;
        loop {
            let from = i32::try_from(filled + 1).map_err(|_| corrupt())?;
            let row = tx
                .query_opt(
                    &chunk,
                    &[&recipient.0.as_slice(), &id.0.as_slice(), &from, &CHUNK],
                )
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            if usize::try_from(row.get::<_, i32>(1)).ok() != Some(size) {
                return Err(corrupt());
            }
            let part = row.get::<_, &[u8]>(0);
            let end = filled + part.len();
            if (part.is_empty() && filled < size) || end > size {
                return Err(corrupt());
            }
            buffer[filled..end].copy_from_slice(part);
            filled = end;
            if filled >= size {
                break;
            }
        }
        tx.commit().await?;
        Ok(Some(envelope))
    }
}
