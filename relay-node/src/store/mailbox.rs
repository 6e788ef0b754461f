//! Held envelopes, registrations and per-depositor daily usage. A deposit is counted against
//! its depositor's quota, the recipient's total and the relay's total in the same transaction
//! that stores it; deposits queue on the one-row `held_total` lock, so two cannot both pass on
//! the same free space.

use toxmail_protocol::{MessageId, PublicKey, RelayRefusal};

use super::{Store, StoreError};

/// Serialises registrations, so two new recipients cannot both take the last free place
/// ("toxregis" in ASCII).
const REGISTRATIONS_LOCK: i64 = 0x746f_7872_6567_6973;

/// The quota part of the relay policy.
#[derive(Clone, Copy, Debug)]
pub struct DepositLimits {
    pub daily_count: u32,
    pub daily_bytes: u64,
    pub recipient_bytes: u64,
    /// Bytes held across all recipients.
    pub total_bytes: u64,
}

/// The quota a deposit would break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    DailyCount,
    DailyBytes,
    RecipientBytes,
    TotalBytes,
}

impl Limit {
    /// The refusal code on the wire; every quota is temporary (space frees, days pass).
    pub fn code(self) -> RelayRefusal {
        match self {
            Limit::DailyCount => RelayRefusal::QuotaCount,
            Limit::DailyBytes | Limit::TotalBytes => RelayRefusal::QuotaBytes,
            Limit::RecipientBytes => RelayRefusal::RecipientFull,
        }
    }
}

/// Why [`Store::hold`] stored nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldRefusal {
    /// The recipient already has an envelope under this id from another depositor.
    IdTaken,
    Over(Limit),
}

/// What a deposit is measured against: its depositor's usage today, and what is held.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    count: i32,
    bytes: i64,
    for_recipient: i64,
    total: i64,
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

    /// The quota a deposit of `size` bytes would break now, if any (checked again when stored).
    pub async fn quota_refusal(
        &self,
        depositor: &PublicKey,
        recipient: &PublicKey,
        size: u64,
        limits: DepositLimits,
    ) -> Result<Option<Limit>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT
                   COALESCE((SELECT count FROM deposit_usage
                             WHERE depositor = $1 AND day = (now() AT TIME ZONE 'UTC')::date), 0),
                   COALESCE((SELECT bytes FROM deposit_usage
                             WHERE depositor = $1 AND day = (now() AT TIME ZONE 'UTC')::date), 0),
                   COALESCE((SELECT sum(size) FROM held WHERE recipient = $2), 0)::bigint,
                   (SELECT bytes FROM held_total)",
                &[&depositor.0.as_slice(), &recipient.0.as_slice()],
            )
            .await?;
        let usage = Usage {
            count: row.get(0),
            bytes: row.get(1),
            for_recipient: row.get(2),
            total: row.get(3),
        };
        Ok(over_limits(usage, size, limits))
    }

    /// Stores a deposit and counts it, all or nothing. `Ok(Err(_))`: refused by quota, or the
    /// id is held for this recipient from another depositor; nothing changed. A message already
    /// held from this depositor is not stored again; its expiry is returned.
    pub async fn hold(
        &self,
        held: &Held,
        depositor: &PublicKey,
        limits: DepositLimits,
    ) -> Result<Result<u64, HoldRefusal>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Deposits queue here, before any other lock: each one after sees what the one before
        // committed (READ COMMITTED takes a new snapshot per statement). Deletes of held rows
        // take this row only after their own (through the triggers), so the order never cycles;
        // hence no `FOR UPDATE` on an existing row below: a delivery deleting it waits for us.
        let total: i64 = tx
            .query_one("SELECT bytes FROM held_total FOR UPDATE", &[])
            .await?
            .get(0);
        let id = held.message_id.0.as_slice();
        if let Some(row) = tx
            .query_opt(
                "SELECT depositor, extract(epoch FROM expires_at)::bigint FROM held
                 WHERE recipient = $1 AND message_id = $2",
                &[&held.recipient.0.as_slice(), &id],
            )
            .await?
        {
            let by: &[u8] = row.get(0);
            if by != depositor.0.as_slice() {
                return Ok(Err(HoldRefusal::IdTaken));
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
        let usage = Usage {
            count: usage.get(0),
            bytes: usage.get(1),
            for_recipient,
            total,
        };
        if let Some(limit) = over_limits(usage, size, limits) {
            return Ok(Err(HoldRefusal::Over(limit))); // dropping the transaction rolls it back
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

    /// Deletes expired envelopes, registrations, receipts and old usage counters; returns the
    /// envelopes.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM held WHERE expires_at <= now()", &[])
            .await?;
        tx.execute("DELETE FROM registrations WHERE expires_at <= now()", &[])
            .await?;
        tx.execute("DELETE FROM receipts WHERE expires_at <= now()", &[])
            .await?;
        tx.execute(
            "DELETE FROM deposit_usage WHERE day < (now() AT TIME ZONE 'UTC')::date - 1",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Records (or, with an expiry in the past, ends) a recipient's registration. `Ok(false)`:
    /// refused, nothing changed: `max` other registrations are in force. Renewing or ending
    /// one is never refused.
    pub async fn register(
        &self,
        recipient: &PublicKey,
        expires: u64,
        max: u32,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&REGISTRATIONS_LOCK])
            .await?;
        let key = recipient.0.as_slice();
        let row = tx
            .query_one(
                "SELECT to_timestamp($2::bigint) > now(),
                        EXISTS (SELECT 1 FROM registrations
                                WHERE recipient = $1 AND expires_at > now()),
                        (SELECT count(*) FROM registrations WHERE expires_at > now())",
                &[&key, &i64_of(expires)],
            )
            .await?;
        let (starts, renewal, in_force): (bool, bool, i64) = (row.get(0), row.get(1), row.get(2));
        if starts && !renewal && in_force >= i64::from(max) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO registrations (recipient, expires_at)
             VALUES ($1, to_timestamp($2::bigint))
             ON CONFLICT (recipient) DO UPDATE
             SET expires_at = excluded.expires_at, registered_at = now()",
            &[&key, &i64_of(expires)],
        )
        .await?;
        tx.execute(
            "DELETE FROM registrations WHERE recipient = $1 AND expires_at <= now()",
            &[&key],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
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
/// and what is already held for its recipient and in all.
fn over_limits(usage: Usage, size: u64, limits: DepositLimits) -> Option<Limit> {
    let size = i64_of(size);
    if i64::from(usage.count) >= i64::from(limits.daily_count) {
        Some(Limit::DailyCount)
    } else if usage.bytes.saturating_add(size) > i64_of(limits.daily_bytes) {
        Some(Limit::DailyBytes)
    } else if usage.for_recipient.saturating_add(size) > i64_of(limits.recipient_bytes) {
        Some(Limit::RecipientBytes)
    } else if usage.total.saturating_add(size) > i64_of(limits.total_bytes) {
        Some(Limit::TotalBytes)
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
        total_bytes: 200,
    };

    fn usage(count: i32, bytes: i64, for_recipient: i64, total: i64) -> Usage {
        Usage {
            count,
            bytes,
            for_recipient,
            total,
        }
    }

    #[test]
    fn limits_are_checked_count_then_bytes_then_recipient_then_total() {
        assert_eq!(over_limits(usage(0, 0, 0, 0), 100, LIMITS), None);
        assert_eq!(
            over_limits(usage(2, 0, 0, 0), 1, LIMITS),
            Some(Limit::DailyCount)
        );
        assert_eq!(
            over_limits(usage(1, 50, 0, 0), 51, LIMITS),
            Some(Limit::DailyBytes)
        );
        assert_eq!(
            over_limits(usage(1, 0, 100, 100), 51, LIMITS),
            Some(Limit::RecipientBytes)
        );
        assert_eq!(
            over_limits(usage(1, 0, 0, 151), 50, LIMITS),
            Some(Limit::TotalBytes)
        );
        assert_eq!(over_limits(usage(1, 50, 100, 150), 50, LIMITS), None);
    }

    #[test]
    fn the_total_is_refused_as_a_temporary_byte_quota() {
        assert_eq!(Limit::TotalBytes.code(), RelayRefusal::QuotaBytes);
        assert_eq!(
            Limit::TotalBytes.code().default_class(),
            toxmail_protocol::NackClass::Temporary
        );
        assert_eq!(Limit::RecipientBytes.code(), RelayRefusal::RecipientFull);
    }
}
