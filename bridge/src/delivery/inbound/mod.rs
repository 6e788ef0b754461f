//! Inbound: the `Inbox` each identity's courier calls with a complete envelope, and the injector.
//! The inbox opens the envelope (which proves the sealing key), admits its sealed addresses
//! (`admission`: the recipient is this identity's mailbox, the sender gets a verdict), checks the
//! mailbox with the local MTA, and commits the *sealed* envelope, keyed by (sealing key, message
//! id), before the courier acks; the injector (`injector`) later opens it again, strips forged
//! trace headers, prepends its own and hands it to the local MTA until it succeeds.

pub mod admission;
mod bounce;
mod injector;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tox_runtime::transfer::{DepositRefusal, Inbox, Refusal};
use toxmail_protocol::{
    Deposit, MessageId, NackClass, NackCode, PublicKey, RelayRefusal, SecretKey, open,
    public_key_of,
};
use toxmail_relay::service::RelayInbox;

use super::smtp_client;
use crate::config::{NextHop, SenderMismatch};
use crate::resolve::{Resolver, Route};
use crate::store::{NewInbound, Store, retention};
use admission::{SiteView, Verdict};
pub use injector::run_injector;

/// What the inbox and the injector share.
#[derive(Debug)]
pub struct InboundContext {
    pub store: Store,
    pub hostname: String,
    pub next_hop: NextHop,
    /// Where bounces go: they are for other sites, which an injection service refuses.
    pub notice_hop: NextHop,
    /// Local domains, delimiter, identities and their public keys.
    pub site: SiteView,
    /// Identity address → secret key.
    pub keys: std::collections::HashMap<String, SecretKey>,
    /// How mail to a sender would be routed: what the site knows of the sender's key.
    pub resolver: Arc<Resolver>,
    pub sender_mismatch: SenderMismatch,
    /// `friend_policy = "contacts"`: only contacts' (and our own) keys may seal mail for us,
    /// also when it comes through a relay.
    pub contacts_only: bool,
    /// Keys the operator blocked (kept current by the roster): their envelopes are refused.
    pub blocked: std::sync::RwLock<std::collections::HashSet<PublicKey>>,
    /// How long the injector keeps retrying a temporary refusal before it bounces.
    pub lifetime: std::time::Duration,
    pub injector: Notify,
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

    async fn contains(&self, from: PublicKey, id: MessageId) -> bool {
        self.ctx
            .store
            .inbound_exists(&from, &id)
            .await
            .unwrap_or(false)
    }

    async fn store(
        &self,
        from: PublicKey,
        id: MessageId,
        envelope: Vec<u8>,
    ) -> Result<(), Refusal> {
        let admitted = self.admit(from, &envelope).await.inspect_err(|r| {
            crate::metrics::inbound(crate::metrics::Inbound::Refused);
            tracing::info!(%id, sealer = %from, reason = %r.detail, "envelope refused at admission");
        })?;
        let (verdict, expires) = match admitted {
            Admitted::Take { verdict, expires } => (verdict, expires),
            Admitted::Stale { expires } => {
                // Its dedup row may have been purged (store/retention.rs): the answer is the
                // one a kept row would have given, an ack without a second store.
                tracing::info!(%id, sealer = %from, expired = %crate::admin::utc(expires),
                    "envelope expired long ago; acknowledged as a duplicate, not stored");
                return Ok(());
            }
        };
        let record = NewInbound {
            message_id: id,
            sender_key: from,
            identity: self.identity.clone(),
            envelope,
            sender_verdict: verdict.as_db().to_string(),
            expires,
        };
        match self.ctx.store.record_inbound(&record).await {
            Ok(new) => {
                if new {
                    crate::metrics::inbound(crate::metrics::Inbound::Stored);
                }
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

impl BridgeInbox {
    /// A blocked key never delivers; under the contacts policy only contacts and our own
    /// identities do, also through a relay (where the friendship check does not apply).
    fn check_sealer(&self, sealer: &PublicKey) -> Result<(), Refusal> {
        let blocked = self.ctx.blocked.read().unwrap_or_else(|e| e.into_inner());
        if blocked.contains(sealer) {
            return Err(Refusal::new(
                NackCode::UnknownMailbox,
                "this site does not take mail from this key",
            ));
        }
        let own = self.ctx.site.identities.values().any(|k| k == sealer);
        if self.ctx.contacts_only && !own && !self.ctx.resolver.is_contact_key(sealer) {
            return Err(Refusal::new(
                NackCode::UnknownMailbox,
                "this site takes mail only from its contacts",
            ));
        }
        Ok(())
    }

    /// Opens the envelope and decides whether this site takes it: sealed by the sender, to this
    /// identity's mailbox, from a sender whose key does not contradict what the site knows, to a
    /// mailbox the local MTA does not refuse. The verdict on the sender goes with the row.
    async fn admit(&self, from: PublicKey, envelope: &[u8]) -> Result<Admitted, Refusal> {
        let key = self.ctx.keys.get(&self.identity).ok_or_else(|| {
            Refusal::new(
                NackCode::StorageFailure,
                "identity not loaded at the receiver",
            )
        })?;
        let opened = open(envelope, key).map_err(|e| Refusal::for_open_error(&e))?;
        if opened.sender != from {
            return Err(Refusal::new(
                NackCode::Forged,
                "sealed by another key than the sender's",
            ));
        }
        self.check_sealer(&from)?;
        let meta = &opened.letter.metadata;
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.expires);
        if retention::stale(expires, SystemTime::now()) {
            return Ok(Admitted::Stale { expires });
        }
        let site = &self.ctx.site;
        let mailbox =
            admission::bind_recipient(&meta.recipient, &self.identity, &public_key_of(key), site)?;
        let sender = admission::parse_sender(&meta.envelope_sender)?;
        let route = match sender.address() {
            Some(a) => self.ctx.resolver.explain(a.as_str()).await.route,
            None => Route::NotTox,
        };
        let verdict = admission::sender_verdict(&sender, &from, &route, site)?;
        if matches!(verdict, Verdict::Fail(_)) && self.ctx.sender_mismatch == SenderMismatch::Reject
        {
            return Err(Refusal::new(
                NackCode::Forged,
                "sealed by another key than this site knows for the envelope sender",
            ));
        }
        let deadline = smtp_client::PROBE_DEADLINE;
        let hop = &self.ctx.next_hop;
        match smtp_client::probe(hop, &self.ctx.hostname, &mailbox, deadline).await {
            Err(e) if e.is_permanent() => Err(Refusal::new(
                NackCode::UnknownMailbox,
                "no such mailbox at this site",
            )),
            Err(e) => {
                tracing::info!(error = %e, "mailbox check deferred; the injector will retry");
                Ok(Admitted::Take { verdict, expires })
            }
            Ok(()) => Ok(Admitted::Take { verdict, expires }),
        }
    }
}

/// What admission decided about an envelope it did not refuse.
enum Admitted {
    /// Store it, with the verdict on its sender and the expiry it was sealed with.
    Take {
        verdict: Verdict,
        expires: SystemTime,
    },
    /// It expired longer ago than the purge waits after an expiry: never stored.
    Stale { expires: SystemTime },
}
