//! Queuing the copies of one message: all of them in ONE transaction, each envelope sealed only
//! when its turn comes and streamed to the server with `COPY … FROM STDIN (FORMAT binary)` in
//! chunks, then dropped before the next is sealed. The bridge so holds one sealed envelope at a
//! time, and no second copy of it in the driver's buffers (a bytea parameter would be encoded
//! whole into the Bind message, then copied whole into the connection's write buffer).

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use deadpool_postgres::Transaction;
use futures_util::SinkExt;
use tokio_postgres::types::{IsNull, ToSql, Type};
use toxmail_protocol::{MessageId, ToxId};

use super::queue::{Enqueued, NewOutbound};
use super::{Store, StoreError};
use crate::dsn_request::CopyDsn;
use crate::events::{EventKind, NewEvent, outbound_subject};

/// A copy to queue for one recipient, before its envelope is sealed.
#[derive(Debug, Clone)]
pub struct UnsealedCopy {
    pub message_id: MessageId,
    /// Postfix queue id (XFORWARD IDENT): with `recipient`, makes a retried LMTP transaction
    /// a no-op instead of a second copy.
    pub idem_key: Option<String>,
    pub recipient: String,
    pub envelope_sender: String,
    /// The local address (identity) the envelope is sealed from.
    pub sender_identity: String,
    pub peer: ToxId,
    pub expires: SystemTime,
    /// Relays the peer published (DNS `relay=`), for a deposit if it stays offline.
    pub relays: Vec<ToxId>,
    /// What the sender asked for about reports (RFC 3461).
    pub dsn: CopyDsn,
    /// What reports return of the original, sealed to the sending identity's own key (shared
    /// by the copies of one message); `None` when no report will be sent.
    pub original: Option<Arc<Vec<u8>>>,
}

/// The columns `COPY` fills, the envelope last so that it can follow the small fields as a stream.
const COPY_IN: &str = "COPY outbound (message_id, idem_key, recipient, envelope_sender, \
                       sender_identity, peer, expires, relays, dsn_notify, dsn_orcpt, dsn_ret, \
                       dsn_envid, dsn_original, delay_notified, success_notice_due, envelope) \
                       FROM STDIN (FORMAT binary)";
const FIELDS: i16 = 16;
/// Signature, flags (none) and header extension length (none) of the binary COPY format.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the data.
const COPY_TRAILER: &[u8] = &[0xff, 0xff];
/// Bytes of envelope per CopyData message: what the driver buffers at most beside the envelope.
const CHUNK: usize = 256 * 1024;

/// Serialises transactions queuing the same `(idem_key, recipient)` until the first one ends, so
/// the second sees its row and reports a duplicate (COPY has no `ON CONFLICT`). A collision of
/// the 64-bit hash only makes two transactions wait for each other.
const LOCK_IDEM: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(10) || $2, 0))";
const EXISTING: &str = "SELECT id FROM outbound WHERE idem_key = $1 AND recipient = $2";
const BY_MESSAGE_ID: &str = "SELECT id FROM outbound WHERE message_id = $1";

impl NewOutbound {
    fn unsealed(&self) -> UnsealedCopy {
        UnsealedCopy {
            message_id: self.message_id,
            idem_key: self.idem_key.clone(),
            recipient: self.recipient.clone(),
            envelope_sender: self.envelope_sender.clone(),
            sender_identity: self.sender_identity.clone(),
            peer: self.peer,
            expires: self.expires,
            relays: self.relays.clone(),
            dsn: CopyDsn::default(),
            original: None,
        }
    }
}

impl Store {
    /// Queues all copies in ONE transaction: when this returns `Ok` every row is committed, and
    /// on error none is. A copy whose `(idem_key, recipient)` exists is not queued again.
    pub async fn enqueue(&self, copies: &[NewOutbound]) -> Result<Vec<Enqueued>, StoreError> {
        let unsealed: Vec<UnsealedCopy> = copies.iter().map(NewOutbound::unsealed).collect();
        let queued = self
            .enqueue_sealing(&unsealed, |n, _| {
                Ok::<_, Infallible>(copies[n].envelope.clone())
            })
            .await?;
        Ok(queued
            .into_iter()
            .map(|copy| copy.unwrap_or_else(|never| match never {}))
            .collect())
    }

    /// Like [`Store::enqueue`], asking `seal(n, copy)` for the envelope of `copies[n]` only when
    /// that copy is not queued yet, and writing each envelope before asking for the next. A copy
    /// `seal` refuses is left out and its error returned in its place; the others are queued.
    pub async fn enqueue_sealing<E>(
        &self,
        copies: &[UnsealedCopy],
        mut seal: impl FnMut(usize, &UnsealedCopy) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<Result<Enqueued, E>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut queued = Vec::with_capacity(copies.len());
        let mut inserted = false;
        for (n, copy) in copies.iter().enumerate() {
            if let Some(id) = already_queued(&tx, copy).await? {
                queued.push(Ok(Enqueued {
                    id,
                    duplicate: true,
                }));
                continue;
            }
            let envelope = match seal(n, copy) {
                Ok(envelope) => envelope,
                Err(e) => {
                    queued.push(Err(e));
                    continue;
                }
            };
            let id = copy_in(&tx, copy, envelope).await?;
            if let Some(outbox) = &self.events {
                let mut data = outbox.data(&copy.message_id, &copy.recipient);
                (data.queue_id, data.attempt) = (Some(id), Some(0));
                let event = NewEvent {
                    kind: EventKind::Accepted,
                    subject: outbound_subject(id),
                    data,
                };
                super::events::write(&tx, &event).await?;
            }
            inserted = true;
            queued.push(Ok(Enqueued {
                id,
                duplicate: false,
            }));
        }
        tx.commit().await?;
        self.wake_publisher(inserted);
        Ok(queued)
    }
}

/// The row already queued for this copy's `(idem_key, recipient)`, committed or queued earlier
/// in this transaction. Holds the idem lock until the transaction ends.
async fn already_queued(
    tx: &Transaction<'_>,
    copy: &UnsealedCopy,
) -> Result<Option<i64>, StoreError> {
    let Some(idem_key) = &copy.idem_key else {
        return Ok(None);
    };
    let lock = tx.prepare_cached(LOCK_IDEM).await?;
    tx.execute(&lock, &[idem_key, &copy.recipient]).await?;
    // A new statement after the lock: under READ COMMITTED it sees what the holder committed.
    let existing = tx.prepare_cached(EXISTING).await?;
    let row = tx
        .query_opt(&existing, &[idem_key, &copy.recipient])
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Writes one row with `COPY`, the envelope in chunks, and returns its id. The envelope is
/// dropped when this returns.
async fn copy_in(
    tx: &Transaction<'_>,
    copy: &UnsealedCopy,
    envelope: Vec<u8>,
) -> Result<i64, StoreError> {
    let head = row_head(copy, envelope.len())?;
    let mut sink = pin!(tx.copy_in::<_, Bytes>(COPY_IN).await?);
    sink.send(head).await?;
    let mut rest = Bytes::from(envelope);
    while !rest.is_empty() {
        let chunk = rest.split_to(CHUNK.min(rest.len()));
        sink.send(chunk).await?;
    }
    sink.send(Bytes::from_static(COPY_TRAILER)).await?;
    let rows = sink.finish().await?;
    if rows != 1 {
        return Err(StoreError::Query(format!("COPY wrote {rows} rows, not 1")));
    }
    let by_id = tx.prepare_cached(BY_MESSAGE_ID).await?;
    let row = tx.query_one(&by_id, &[&&copy.message_id.0[..]]).await?;
    Ok(row.get(0))
}

/// The COPY header and the tuple up to the envelope's bytes: every field but the envelope, then
/// the envelope's length.
fn row_head(copy: &UnsealedCopy, envelope_len: usize) -> Result<Bytes, StoreError> {
    let relays: Vec<u8> = copy.relays.iter().flat_map(|r| *r.as_bytes()).collect();
    let notify = copy.dsn.notify();
    let notify_bits = copy.dsn.rcpt.notify.map(|n| n.bits());
    let orcpt = copy.dsn.rcpt.orcpt.as_ref().map(|o| o.as_stored());
    let ret = copy.dsn.mail.ret.map(|r| r.keyword());
    let envid = copy.dsn.mail.envid.as_ref().map(|e| e.as_str());
    let original = copy.original.as_deref().map(Vec::as_slice);
    // No "delayed" notice is owed when NOTIFY leaves DELAY out: queued as already sent.
    let no_delay_notice = !notify.delay();
    let success_due = notify.success();
    let fields: [(&(dyn ToSql + Sync), Type); 15] = [
        (&&copy.message_id.0[..], Type::BYTEA),
        (&copy.idem_key, Type::TEXT),
        (&copy.recipient, Type::TEXT),
        (&copy.envelope_sender, Type::TEXT),
        (&copy.sender_identity, Type::TEXT),
        (&&copy.peer.as_bytes()[..], Type::BYTEA),
        (&copy.expires, Type::TIMESTAMPTZ),
        (&relays, Type::BYTEA),
        (&notify_bits, Type::INT2),
        (&orcpt, Type::TEXT),
        (&ret, Type::TEXT),
        (&envid, Type::TEXT),
        (&original, Type::BYTEA),
        (&no_delay_notice, Type::BOOL),
        (&success_due, Type::BOOL),
    ];
    let mut buf = BytesMut::with_capacity(COPY_HEADER.len() + 512);
    buf.put_slice(COPY_HEADER);
    buf.put_i16(FIELDS);
    for (value, ty) in fields {
        let at = buf.len();
        buf.put_i32(0);
        let is_null = value
            .to_sql_checked(&ty, &mut buf)
            .map_err(|e| StoreError::Query(format!("cannot encode a {ty} for COPY: {e}")))?;
        let len = match is_null {
            IsNull::Yes => -1,
            IsNull::No => field_len(buf.len() - at - 4)?,
        };
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    buf.put_i32(field_len(envelope_len)?);
    Ok(buf.freeze())
}

fn field_len(len: usize) -> Result<i32, StoreError> {
    i32::try_from(len).map_err(|_| StoreError::Query(format!("a {len}-byte field is too long")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use toxmail_protocol::PublicKey;

    #[test]
    fn row_head_is_the_binary_copy_layout() {
        let copy = UnsealedCopy {
            message_id: MessageId([7; 32]),
            idem_key: None,
            recipient: "r".into(),
            envelope_sender: String::new(),
            sender_identity: "me".into(),
            peer: ToxId::new(PublicKey([1; 32]), 2),
            // 2000-01-01T00:00:01Z: PostgreSQL's epoch plus one second, in microseconds.
            expires: UNIX_EPOCH + Duration::from_secs(946_684_801),
            relays: Vec::new(),
            dsn: CopyDsn::default(),
            original: None,
        };
        let head = row_head(&copy, 5000).unwrap();
        let mut want = COPY_HEADER.to_vec();
        want.extend_from_slice(&16i16.to_be_bytes());
        want.extend_from_slice(&32i32.to_be_bytes());
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&(-1i32).to_be_bytes());
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(b"r");
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(b"me");
        want.extend_from_slice(&38i32.to_be_bytes());
        want.extend_from_slice(copy.peer.as_bytes());
        want.extend_from_slice(&8i32.to_be_bytes());
        want.extend_from_slice(&1_000_000i64.to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        // NOTIFY, ORCPT, RET, ENVID and the original: none; delay notice owed, no success one.
        for _ in 0..5 {
            want.extend_from_slice(&(-1i32).to_be_bytes());
        }
        want.extend_from_slice(&1i32.to_be_bytes());
        want.push(0);
        want.extend_from_slice(&1i32.to_be_bytes());
        want.push(0);
        want.extend_from_slice(&5000i32.to_be_bytes());
        assert_eq!(&head[..], &want[..]);
    }
}
