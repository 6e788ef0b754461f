//! Receipts owed to depositors: a held envelope leaves the mailbox and, in the same transaction,
//! its depositor is owed a `Released` frame, kept until sent or until the envelope's own expiry.

use toxmail_protocol::{MessageId, PublicKey, ReleaseOutcome};

use super::{Store, StoreError};

/// Most receipts read for one depositor at a time; the rest follow on its next visit or the
/// next release.
const BATCH: i64 = 256;

/// A `Released` owed to `depositor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: MessageId,
    pub outcome: ReleaseOutcome,
}

fn outcome_code(o: ReleaseOutcome) -> i16 {
    match o {
        ReleaseOutcome::Delivered => 1,
        ReleaseOutcome::Expired => 2,
        ReleaseOutcome::Rejected => 3,
    }
}

fn outcome_of(code: i16) -> Option<ReleaseOutcome> {
    match code {
        1 => Some(ReleaseOutcome::Delivered),
        2 => Some(ReleaseOutcome::Expired),
        3 => Some(ReleaseOutcome::Rejected),
        _ => None,
    }
}

impl Store {
    /// Deletes a held envelope (its recipient acknowledged it, or refused it for good) and, in the
    /// same transaction, records the receipt its depositor is owed. Returns that depositor, or
    /// `None` when nothing was held under this id (already released or purged).
    pub async fn release(
        &self,
        recipient: &PublicKey,
        id: &MessageId,
        outcome: ReleaseOutcome,
    ) -> Result<Option<PublicKey>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "DELETE FROM held WHERE recipient = $1 AND message_id = $2
                 RETURNING depositor, expires_at",
                &[&recipient.0.as_slice(), &id.0.as_slice()],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let depositor: &[u8] = row.get(0);
        let expires: std::time::SystemTime = row.get(1);
        tx.execute(
            "INSERT INTO receipts (depositor, message_id, outcome, expires_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[
                &depositor,
                &id.0.as_slice(),
                &outcome_code(outcome),
                &expires,
            ],
        )
        .await?;
        let depositor = PublicKey::from_slice(depositor)
            .map_err(|e| StoreError::Corrupt(format!("depositor: {e}")))?;
        tx.commit().await?;
        Ok(Some(depositor))
    }

    /// Receipts owed to `depositor` that have not expired, oldest first, at most [`BATCH`].
    pub async fn receipts_for(&self, depositor: &PublicKey) -> Result<Vec<Receipt>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT message_id, outcome FROM receipts
                 WHERE depositor = $1 AND expires_at > now() ORDER BY released_at LIMIT $2",
                &[&depositor.0.as_slice(), &BATCH],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Receipt {
                    message_id: MessageId::from_slice(r.get(0))
                        .map_err(|e| StoreError::Corrupt(format!("message id: {e}")))?,
                    outcome: outcome_of(r.get(1))
                        .ok_or_else(|| StoreError::Corrupt("receipt outcome".into()))?,
                })
            })
            .collect()
    }

    /// Forgets a receipt once it was sent.
    pub async fn receipt_sent(
        &self,
        depositor: &PublicKey,
        id: &MessageId,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM receipts WHERE depositor = $1 AND message_id = $2",
                &[&depositor.0.as_slice(), &id.0.as_slice()],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_stored_codes_and_nothing_else_reads_as_one() {
        for o in [
            ReleaseOutcome::Delivered,
            ReleaseOutcome::Expired,
            ReleaseOutcome::Rejected,
        ] {
            assert_eq!(outcome_of(outcome_code(o)), Some(o));
        }
        assert_eq!(outcome_of(0), None);
        assert_eq!(outcome_of(4), None);
    }
}
