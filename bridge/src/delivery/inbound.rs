//! Inbound: the `Inbox` each identity's courier calls with a complete envelope, and the injector.
//! The inbox opens the envelope (which verifies the sender), checks the recipient is a local
//! mailbox, and commits the *sealed* envelope to the database before the courier acks; the injector
//! later opens it again, prepends trace headers and hands it to the local MTA until it succeeds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tox_runtime::transfer::{DepositRefusal, Inbox, Refusal};
use toxmail_protocol::{
    Deposit, MessageId, NackClass, NackCode, PublicKey, RelayRefusal, SecretKey, open,
};
use toxmail_relay::service::RelayInbox;

use super::smtp_client::{self, SmtpError};
use super::{backoff, trace};
use crate::config::NextHop;
use crate::identity::DEFAULT_IDENTITY;
use crate::store::{InboundRow, NewInbound, Store};

/// What the inbox and the injector share.
#[derive(Debug)]
pub struct InboundContext {
    pub store: Store,
    pub hostname: String,
    pub next_hop: NextHop,
    pub local_domains: Vec<String>,
    /// Identity address → secret key.
    pub keys: HashMap<String, SecretKey>,
    pub injector: Notify,
}

/// Maps the letter's recipient to the mailbox at this site, or None if it is not ours.
pub fn local_recipient(
    recipient: &str,
    identity: &str,
    local_domains: &[String],
) -> Option<String> {
    let (local, domain) = recipient.rsplit_once('@')?;
    let domain = domain.to_ascii_lowercase();
    if domain == "tox" {
        // <ToxID>@tox reaches whichever mailbox owns that identity.
        return (identity != DEFAULT_IDENTITY).then(|| identity.to_string());
    }
    local_domains
        .contains(&domain)
        .then(|| format!("{local}@{domain}"))
}

/// The inbox of one identity.
#[derive(Clone, Debug)]
pub struct BridgeInbox {
    pub identity: String,
    pub ctx: Arc<InboundContext>,
    /// `[relays].serve_friends`: deposits from friends go to the relay service.
    pub relay: Option<RelayInbox>,
}

fn not_serving() -> DepositRefusal {
    DepositRefusal::new(
        RelayRefusal::NotAllowed,
        "this site does not relay for friends",
    )
}

impl Inbox for BridgeInbox {
    async fn check_deposit(
        &self,
        from: PublicKey,
        deposit: Deposit,
    ) -> Result<Option<u64>, DepositRefusal> {
        match &self.relay {
            Some(relay) => relay.check_deposit(from, deposit).await,
            None => Err(not_serving()),
        }
    }

    async fn store_deposit(
        &self,
        from: PublicKey,
        deposit: Deposit,
        envelope: Vec<u8>,
    ) -> Result<u64, DepositRefusal> {
        match &self.relay {
            Some(relay) => relay.store_deposit(from, deposit, envelope).await,
            None => Err(not_serving()),
        }
    }

    async fn contains(&self, _from: PublicKey, id: MessageId) -> bool {
        self.ctx.store.inbound_exists(&id).await.unwrap_or(false)
    }

    async fn store(
        &self,
        from: PublicKey,
        id: MessageId,
        envelope: Vec<u8>,
    ) -> Result<(), Refusal> {
        let key = self.ctx.keys.get(&self.identity).ok_or_else(|| {
            Refusal::new(
                NackCode::StorageFailure,
                "identity not loaded at the receiver",
            )
        })?;
        let opened = open(&envelope, key).map_err(|e| Refusal::for_open_error(&e))?;
        if opened.sender != from {
            return Err(Refusal::new(
                NackCode::Forged,
                "sealed by another key than the sender's",
            ));
        }
        let rcpt = &opened.letter.metadata.recipient;
        let Some(mailbox) = local_recipient(rcpt, &self.identity, &self.ctx.local_domains) else {
            return Err(Refusal::new(
                NackCode::UnknownMailbox,
                "no such mailbox at this site",
            ));
        };
        match smtp_client::probe(&self.ctx.next_hop, &self.ctx.hostname, &mailbox).await {
            Err(e) if e.is_permanent() => {
                return Err(Refusal::new(
                    NackCode::UnknownMailbox,
                    "no such mailbox at this site",
                ));
            }
            Err(e) => tracing::info!(error = %e, "mailbox check deferred; the injector will retry"),
            Ok(()) => {}
        }
        let record = NewInbound {
            message_id: id,
            sender_key: from,
            identity: self.identity.clone(),
            envelope,
        };
        match self.ctx.store.record_inbound(&record).await {
            Ok(_) => {
                self.ctx.injector.notify_one();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbound envelope not committed");
                Err(Refusal {
                    class: NackClass::Temporary,
                    code: NackCode::StorageFailure,
                    detail: "receiver storage unavailable".into(),
                })
            }
        }
    }
}

/// Hands committed inbound mail to the local MTA, retrying with backoff until it succeeds.
pub async fn run_injector(ctx: Arc<InboundContext>, shutdown: CancellationToken) {
    if let Err(e) = ctx.store.release_inbound_leases().await {
        tracing::debug!(error = %e, "could not release inbound leases");
    }
    loop {
        match ctx.store.claim_inbound(20, Duration::from_secs(300)).await {
            Ok(rows) => {
                for row in rows {
                    inject(&ctx, row).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "inbound queue not readable"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.injector.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn inject(ctx: &InboundContext, row: InboundRow) {
    let id = row.message_id;
    let Some(key) = ctx.keys.get(&row.identity) else {
        tracing::error!(%id, identity = %row.identity, "inbound mail for an identity not loaded");
        return;
    };
    let opened = match open(&row.envelope, key) {
        Ok(o) => o,
        Err(e) => {
            let _ = ctx
                .store
                .mark_inbound_failed(&id, &format!("cannot open: {e}"))
                .await;
            return;
        }
    };
    let letter = opened.letter;
    let Some(rcpt) = local_recipient(
        &letter.metadata.recipient,
        &row.identity,
        &ctx.local_domains,
    ) else {
        let _ = ctx
            .store
            .mark_inbound_failed(&id, "recipient not local")
            .await;
        return;
    };
    let mut message =
        trace::trace_headers(&ctx.hostname, &row.sender_key, &id, SystemTime::now()).into_bytes();
    message.extend_from_slice(&letter.message);
    let sender = &letter.metadata.envelope_sender;
    match smtp_client::send(&ctx.next_hop, &ctx.hostname, sender, &rcpt, &message).await {
        Ok(()) => {
            tracing::info!(%id, "injected into the local MTA");
            if let Err(e) = ctx.store.mark_injected(&id).await {
                tracing::error!(%id, error = %e, "injected but not marked; it may be injected again");
            }
        }
        Err(e @ SmtpError::Rejected { .. }) if e.is_permanent() => {
            tracing::warn!(%id, error = %e, "local MTA refused the message");
            let _ = ctx.store.mark_inbound_failed(&id, &e.to_string()).await;
        }
        Err(e) => {
            let wait = backoff(
                row.attempts,
                Duration::from_secs(5),
                Duration::from_secs(600),
            );
            tracing::info!(%id, error = %e, retry_in = ?wait, "injection deferred");
            let next = SystemTime::now() + wait;
            let _ = ctx
                .store
                .reschedule_inbound(&id, next, &e.to_string())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_recipient_maps_tox_addresses_to_the_identity() {
        let domains = vec!["b.test".to_string()];
        let tox = format!("{}@tox", "A".repeat(76));
        assert_eq!(
            local_recipient(&tox, "bob@b.test", &domains).as_deref(),
            Some("bob@b.test")
        );
        assert_eq!(local_recipient(&tox, DEFAULT_IDENTITY, &domains), None);
        assert_eq!(
            local_recipient("bob+x@B.Test", "x", &domains).as_deref(),
            Some("bob+x@b.test")
        );
        assert_eq!(local_recipient("bob@c.test", "bob@b.test", &domains), None);
    }
}
