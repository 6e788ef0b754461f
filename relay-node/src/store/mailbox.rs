//! Held envelopes, registrations and per-depositor daily usage. A deposit is counted against
//! its depositor's quota and the recipient's total in the same transaction that stores it.

use toxmail_protocol::{MessageId, PublicKey, RelayRefusal};

use super::{Store, StoreError};

/// The quota part of the relay policy.
#[derive(Clone, Copy, Debug)]
pub struct DepositLimits {
    pub daily_count: u32,
    pub daily_bytes: u64,
    pub recipient_bytes: u64,
}

/// One envelope held for a recipient.
#[derive(Clone, Debug)]
pub struct Held {
    pub message_id: MessageId,
    pub recipient: PublicKey,
    pub envelope: Vec<u8>,
    pub expires: u64,
}

/// What `toxmail-relay status` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub held: i64,
    pub held_bytes: i64,
    pub recipients: i64,
    pub registrations: i64,
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Who deposited `id` for `recipient` and until when it is held, if it is.
    pub async fn held_by(
        &self,
        recipient: &PublicKey,
        id: &MessageId,
    ) -> Result<Option<(PublicKey, u64)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT depositor, extract(epoch FROM expires_at)::bigint FROM held
                 WHERE recipient = $1 AND message_id = $2",
                &[&recipient.0.as_slice(), &id.0.as_slice()],
            )
            .await?;
        row.map(|r| {
            let depositor = PublicKey::from_slice(r.get(0))
                .map_err(|e| StoreError::Corrupt(format!("depositor: {e}")))?;
            Ok((depositor, r.get::<_, i64>(1).max(0) as u64))
        })
        .transpose()
    }

    /// The refusal a deposit of `size` bytes would get now, if any (checked again when stored).
    pub async fn quota_refusal(
        &self,
        depositor: &PublicKey,
        recipient: &PublicKey,
        size: u64,
        limits: DepositLimits,
    ) -> Result<Option<RelayRefusal>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT
                   COALESCE((SELECT count FROM deposit_usage
                             WHERE depositor = $1 AND day = (now() AT TIME ZONE 'UTC')::date), 0),
                   COALESCE((SELECT bytes FROM deposit_usage
                             WHERE depositor = $1 AND day = (now() AT TIME ZONE 'UTC')::date), 0),
                   COALESCE((SELECT sum(size) FROM held WHERE recipient = $2), 0)::bigint",
                &[&depositor.0.as_slice(), &recipient.0.as_slice()],
            )
            .await?;
        let (count, bytes, for_recipient): (i32, i64, i64) = (row.get(0), row.get(1), row.get(2));
        Ok(over_limits(count, bytes, for_recipient, size, limits))
    }

    /// Stores a deposit and counts it, all or nothing. `Ok(Err(_))`: refused by quota, or the
    /// id is held for this recipient from another depositor; nothing changed. A message already
    /// held from this depositor is not stored again; its expiry is returned.
    pub async fn hold(
        &self,
        held: &Held,
        depositor: &PublicKey,
        limits: DepositLimits,
    ) -> Result<Result<u64, RelayRefusal>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = held.message_id.0.as_slice();
        if let Some(row) = tx
            .query_opt(
                "SELECT depositor, extract(epoch FROM expires_at)::bigint FROM held
                 WHERE recipient = $1 AND message_id = $2 FOR UPDATE",
                &[&held.recipient.0.as_slice(), &id],
            )
            .await?
        {
            let by: &[u8] = row.get(0);
            if by != depositor.0.as_slice() {
                return Ok(Err(RelayRefusal::NotAllowed));
            }
            return Ok(Ok(row.get::<_, i64>(1).max(0) as u64));
        }
        let size = held.envelope.len() as u64;
        let usage = tx
            .query_one(
                "INSERT INTO deposit_usage (depositor, day, count, bytes)
                 VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 0, 0)
                 ON CONFLICT (depositor, day) DO UPDATE SET count = deposit_usage.count
                 RETURNING count, bytes",
                &[&depositor.0.as_slice()],
            )
            .await?;
        let for_recipient: i64 = tx
            .query_one(
                "SELECT COALESCE(sum(size), 0)::bigint FROM held WHERE recipient = $1",
                &[&held.recipient.0.as_slice()],
            )
            .await?
            .get(0);
        if let Some(refusal) = over_limits(usage.get(0), usage.get(1), for_recipient, size, limits)
        {
            return Ok(Err(refusal)); // dropping the transaction rolls it back
        }
        tx.execute(
            "UPDATE deposit_usage SET count = count + 1, bytes = bytes + $2
             WHERE depositor = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
            &[&depositor.0.as_slice(), &i64_of(size)],
        )
        .await?;
        tx.execute(
            "INSERT INTO held (message_id, recipient, depositor, envelope, size, expires_at)
             VALUES ($1, $2, $3, $4, $5, to_timestamp($6::bigint))",
            &[
                &id,
                &held.recipient.0.as_slice(),
                &depositor.0.as_slice(),
                &held.envelope,
                &i64_of(size),
                &i64_of(held.expires),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(held.expires))
    }

    /// Everything held for `recipient` that has not expired, oldest first.
    pub async fn held_for(&self, recipient: &PublicKey) -> Result<Vec<Held>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT message_id, envelope, extract(epoch FROM expires_at)::bigint FROM held
                 WHERE recipient = $1 AND expires_at > now() ORDER BY deposited_at",
                &[&recipient.0.as_slice()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: &[u8] = r.get(0);
                Ok(Held {
                    message_id: MessageId::from_slice(id)
                        .map_err(|e| StoreError::Corrupt(format!("message id: {e}")))?,
                    recipient: *recipient,
                    envelope: r.get(1),
                    expires: r.get::<_, i64>(2).max(0) as u64,
                })
            })
            .collect()
    }

    /// Count and bytes held for `recipient`.
    pub async fn holdings(&self, recipient: &PublicKey) -> Result<(u32, u64), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), COALESCE(sum(size), 0)::bigint FROM held
                 WHERE recipient = $1 AND expires_at > now()",
                &[&recipient.0.as_slice()],
            )
            .await?;
        let (count, bytes): (i64, i64) = (row.get(0), row.get(1));
        Ok((count.clamp(0, u32::MAX as i64) as u32, bytes.max(0) as u64))
    }

    /// Deletes a held envelope once its recipient acknowledged it (or refused it for good).
    pub async fn release(&self, recipient: &PublicKey, id: &MessageId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM held WHERE recipient = $1 AND message_id = $2",
                &[&recipient.0.as_slice(), &id.0.as_slice()],
            )
            .await?;
        Ok(n > 0)
    }

    /// Deletes expired envelopes, registrations and old usage counters; returns the envelopes.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM held WHERE expires_at <= now()", &[])
            .await?;
        tx.execute("DELETE FROM registrations WHERE expires_at <= now()", &[])
            .await?;
        tx.execute(
            "DELETE FROM deposit_usage WHERE day < (now() AT TIME ZONE 'UTC')::date - 1",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Records (or, with an expiry in the past, ends) a recipient's registration.
    pub async fn register(&self, recipient: &PublicKey, expires: u64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO registrations (recipient, expires_at)
                 VALUES ($1, to_timestamp($2::bigint))
                 ON CONFLICT (recipient) DO UPDATE
                 SET expires_at = excluded.expires_at, registered_at = now()",
                &[&recipient.0.as_slice(), &i64_of(expires)],
            )
            .await?;
        client
            .execute(
                "DELETE FROM registrations WHERE recipient = $1 AND expires_at <= now()",
                &[&recipient.0.as_slice()],
            )
            .await?;
        Ok(())
    }

    /// True if `recipient` has a registration in force.
    pub async fn is_registered(&self, recipient: &PublicKey) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM registrations WHERE recipient = $1 AND expires_at > now()",
                &[&recipient.0.as_slice()],
            )
            .await?;
        Ok(row.is_some())
    }

    pub async fn status(&self) -> Result<Status, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM held),
                        (SELECT COALESCE(sum(size), 0)::bigint FROM held),
                        (SELECT count(DISTINCT recipient) FROM held),
                        (SELECT count(*) FROM registrations WHERE expires_at > now())",
                &[],
            )
            .await?;
        Ok(Status {
            held: row.get(0),
            held_bytes: row.get(1),
            recipients: row.get(2),
            registrations: row.get(3),
        })
    }
}

/// The first limit a deposit of `size` bytes would break, given today's usage of its depositor
/// (`count`, `bytes`) and what is already held for its recipient.
fn over_limits(
    count: i32,
    bytes: i64,
    for_recipient: i64,
    size: u64,
    limits: DepositLimits,
) -> Option<RelayRefusal> {
    let size = i64_of(size);
    if i64::from(count) >= i64::from(limits.daily_count) {
        Some(RelayRefusal::QuotaCount)
    } else if bytes.saturating_add(size) > i64_of(limits.daily_bytes) {
        Some(RelayRefusal::QuotaBytes)
    } else if for_recipient.saturating_add(size) > i64_of(limits.recipient_bytes) {
        Some(RelayRefusal::RecipientFull)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DepositLimits = DepositLimits {
        daily_count: 2,
        daily_bytes: 100,
        recipient_bytes: 150,
    };

    #[test]
    fn limits_are_checked_count_then_bytes_then_recipient() {
        assert_eq!(over_limits(0, 0, 0, 100, LIMITS), None);
        assert_eq!(
            over_limits(2, 0, 0, 1, LIMITS),
            Some(RelayRefusal::QuotaCount)
        );
        assert_eq!(
            over_limits(1, 50, 0, 51, LIMITS),
            Some(RelayRefusal::QuotaBytes)
        );
        assert_eq!(
            over_limits(1, 0, 100, 51, LIMITS),
            Some(RelayRefusal::RecipientFull)
        );
        assert_eq!(over_limits(1, 50, 100, 50, LIMITS), None);
    }
}
