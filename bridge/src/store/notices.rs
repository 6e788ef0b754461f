//! What delivery status notifications need from the queue: rows due a "delayed" notice (sent
//! once), delivered rows due a "delivered" notice (NOTIFY=SUCCESS, sent once), and removing a row
//! once its final "failed" notice went out.

use std::time::{Duration, SystemTime};

use toxmail_protocol::MessageId;

use super::{Store, StoreError, message_id_from};
use crate::dsn_request::{CopyDsn, EnvId, MailDsn, Notify, Orcpt, RcptDsn, Ret};

/// A queued or failed copy, as notices need it (no envelope).
#[derive(Debug, Clone)]
pub struct CopyInfo {
    pub id: i64,
    pub message_id: MessageId,
    pub recipient: String,
    pub envelope_sender: String,
    pub idem_key: Option<String>,
    pub created: SystemTime,
    pub expires: SystemTime,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The relays that confirmed custody of the copy, if any did.
    pub relayed_to: Option<String>,
    /// A failed copy's DSN status as decided when it was given up ("5.1.1"); `None` for copies
    /// failed before it was recorded.
    pub failure_status: Option<String>,
    /// The local identity the copy was sealed from: its key opens `original`.
    pub sender_identity: String,
    /// NOTIFY, ORCPT, RET and ENVID as the sender gave them.
    pub dsn: CopyDsn,
    /// What a report returns of the original, sealed to `sender_identity`'s own key.
    pub original: Option<Vec<u8>>,
}

impl Store {
    /// Queued rows older than `after` whose delayed notice has not gone out yet.
    pub async fn delay_notice_due(&self, after: Duration) -> Result<Vec<CopyInfo>, StoreError> {
        let cutoff = SystemTime::now() - after;
        self.copies(
            "state = 'queued' AND NOT delay_notified AND created <= $1",
            Some(cutoff),
        )
        .await
    }

    async fn copies(
        &self,
        filter: &str,
        cutoff: Option<SystemTime>,
    ) -> Result<Vec<CopyInfo>, StoreError> {
        let client = self.client().await?;
        let fence = self.fence("outbound.sender_identity");
        let sql = format!(
            "SELECT id, message_id, recipient, envelope_sender, idem_key, created, expires, \
             attempts, last_error, relayed_to, failure_status, sender_identity, dsn_notify, \
             dsn_orcpt, dsn_ret, dsn_envid, dsn_original FROM outbound \
             WHERE {filter}{fence} ORDER BY id"
        );
        let rows = match cutoff {
            Some(c) => client.query(&sql, &[&c]).await?,
            None => client.query(&sql, &[]).await?,
        };
        rows.iter()
            .map(|r| {
                Ok(CopyInfo {
                    id: r.try_get(0)?,
                    message_id: message_id_from(r.try_get(1)?, "outbound.message_id")?,
                    recipient: r.try_get(2)?,
                    envelope_sender: r.try_get(3)?,
                    idem_key: r.try_get(4)?,
                    created: r.try_get(5)?,
                    expires: r.try_get(6)?,
                    attempts: r.try_get(7)?,
                    last_error: r.try_get(8)?,
                    relayed_to: r.try_get(9)?,
                    failure_status: r.try_get(10)?,
                    sender_identity: r.try_get(11)?,
                    dsn: copy_dsn(
                        r.try_get(12)?,
                        r.try_get(13)?,
                        r.try_get(14)?,
                        r.try_get(15)?,
                    ),
                    original: r.try_get(16)?,
                })
            })
            .collect()
    }

    /// Failed rows: their "failed" notice is still to go out (a row is removed once it has).
    pub async fn failed_copies(&self) -> Result<Vec<CopyInfo>, StoreError> {
        self.copies("state = 'failed'", None).await
    }

    /// Delivered rows whose sender asked to hear of the delivery (NOTIFY=SUCCESS) and has not
    /// been told yet.
    pub async fn success_notices_due(&self) -> Result<Vec<CopyInfo>, StoreError> {
        self.copies("state = 'delivered' AND success_notice_due", None)
            .await
    }

    /// The "delivered" notice went out (or none could be): never again, and the original's
    /// sealed headers are no longer kept.
    pub async fn mark_success_notified(&self, id: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let fence = self.fence("outbound.sender_identity");
        client
            .execute(
                &format!(
                    "UPDATE outbound SET success_notice_due = false, dsn_original = NULL \
                     WHERE id = $1{fence}"
                ),
                &[&id],
            )
            .await?;
        Ok(())
    }

    pub async fn mark_delay_notified(&self, id: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let fence = self.fence("outbound.sender_identity");
        client
            .execute(
                &format!("UPDATE outbound SET delay_notified = true WHERE id = $1{fence}"),
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// Deletes a row for good (after its final DSN went out, or when none is due).
    pub async fn remove_outbound(&self, id: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let fence = self.fence("outbound.sender_identity");
        client
            .execute(
                &format!("DELETE FROM outbound WHERE id = $1{fence}"),
                &[&id],
            )
            .await?;
        Ok(())
    }
}

/// The stored DSN request, each value validated again: one that does not pass is left out.
fn copy_dsn(
    notify: Option<i16>,
    orcpt: Option<String>,
    ret: Option<String>,
    envid: Option<String>,
) -> CopyDsn {
    CopyDsn {
        mail: MailDsn {
            ret: ret.as_deref().and_then(Ret::from_keyword),
            envid: envid.and_then(EnvId::checked),
        },
        rcpt: RcptDsn {
            notify: notify.map(|bits| Notify::from_bits(Some(bits))),
            orcpt: orcpt.as_deref().and_then(Orcpt::from_stored),
        },
    }
}
