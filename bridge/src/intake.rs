//! What the LMTP server calls: per-recipient routing checks at RCPT, and after DATA the sealing of
//! one copy per recipient and one database commit for all of them, before any 250.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toxmail_protocol::{Letter, MessageId, Metadata, SecretKey, ToxId, seal, seal_compressed};

use crate::config::UnknownSender;
use crate::delivery::outbound::Dispatcher;
use crate::identity::DEFAULT_IDENTITY;
use crate::postfix::lmtp::{Intake, Transaction};
use crate::reply::{Failure, Reply};
use crate::resolve::{Resolver, Route};
use crate::store::{NewOutbound, QueuedPeer, Store};

#[derive(Debug)]
pub struct BridgeIntake {
    pub resolver: Arc<Resolver>,
    pub store: Store,
    /// Identity address (normalised) → secret key; includes the default identity.
    pub keys: HashMap<String, SecretKey>,
    pub unknown_sender: UnknownSender,
    pub delimiter: Option<String>,
    pub lifetime: Duration,
    pub dispatcher: Arc<Dispatcher>,
}

impl BridgeIntake {
    /// The identity that seals mail from `mail_from`, or why it may not be sent.
    fn sender_identity(&self, mail_from: &str) -> Result<&str, Failure> {
        let normalised = crate::resolve::normalise(mail_from, self.delimiter.as_deref());
        if let Some(addr) = normalised.as_deref()
            && let Some((key, _)) = self.keys.get_key_value(addr)
        {
            return Ok(key);
        }
        match (self.unknown_sender, mail_from.is_empty()) {
            (UnknownSender::Default, _) | (UnknownSender::Refuse, true) => Ok(DEFAULT_IDENTITY),
            (UnknownSender::Refuse, false) => Err(Failure::SenderRefused(
                "this sender has no Tox identity here".into(),
            )),
        }
    }

    /// Whether `peer` said, in a `Hello` to `identity` this run, that it opens compressed
    /// envelopes (protocol level 2). Unknown peers get version 1, which every release opens.
    fn opens_compressed(&self, identity: &str, peer: &ToxId) -> bool {
        let courier = self.dispatcher.couriers.get(identity);
        courier.and_then(|c| c.peer_level(&peer.public_key())) >= Some(2)
    }

    /// The peer's Tox ID and the relays it published.
    async fn route(&self, rcpt: &str) -> Result<(ToxId, Vec<ToxId>), Failure> {
        match self.resolver.resolve(rcpt).await {
            Route::Tox { peer, relays, .. } => Ok((peer, relays)),
            Route::Local | Route::NotTox => Err(Failure::RecipientUnknown),
            Route::Invalid(why) => Err(Failure::BadDestination(why)),
            Route::TempFail(why) => Err(Failure::RoutingTemporary(why)),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Intake for BridgeIntake {
    async fn check_recipient(&self, mail_from: &str, rcpt: &str) -> Result<(), Failure> {
        self.sender_identity(mail_from)?;
        self.route(rcpt).await.map(|_| ())
    }

    async fn deliver(&self, tx: Transaction) -> Vec<Reply> {
        let identity = match self.sender_identity(&tx.mail_from) {
            Ok(i) => i.to_string(),
            Err(f) => return vec![f.reply(); tx.recipients.len()],
        };
        let key = &self.keys[&identity];
        let expires_at = SystemTime::now() + self.lifetime;
        let mut replies: Vec<Option<Reply>> = vec![None; tx.recipients.len()];
        let mut copies = Vec::new();
        let mut slots = Vec::new();
        for (i, rcpt) in tx.recipients.iter().enumerate() {
            let (peer, relays) = match self.route(rcpt).await {
                Ok(p) => p,
                Err(f) => {
                    replies[i] = Some(f.reply());
                    continue;
                }
            };
            let letter = Letter {
                message_id: MessageId::random(),
                metadata: Metadata {
                    envelope_sender: tx.mail_from.clone(),
                    recipient: rcpt.clone(),
                    queue_id: tx.ident.clone().unwrap_or_default(),
                    created: unix_now(),
                    expires: unix_now() + self.lifetime.as_secs(),
                },
                message: tx.data.clone(),
            };
            let sealed = if self.opens_compressed(&identity, &peer) {
                seal_compressed(&letter, key, &peer.public_key())
            } else {
                seal(&letter, key, &peer.public_key())
            };
            let envelope = match sealed {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot seal");
                    replies[i] = Some(
                        match e {
                            toxmail_protocol::SealError::TooLarge { max, .. } => {
                                Failure::MessageTooBig { limit: max as u64 }
                            }
                            _ => Failure::BadArguments("address too long to seal".into()),
                        }
                        .reply(),
                    );
                    continue;
                }
            };
            copies.push(NewOutbound {
                message_id: letter.message_id,
                idem_key: tx.ident.clone(),
                recipient: rcpt.clone(),
                envelope_sender: tx.mail_from.clone(),
                sender_identity: identity.clone(),
                peer,
                envelope,
                expires: expires_at,
                relays,
            });
            slots.push(i);
        }
        if !copies.is_empty() {
            let outcome = self.store.enqueue(&copies).await;
            for (n, &i) in slots.iter().enumerate() {
                replies[i] = Some(match &outcome {
                    Ok(done) => Reply::queued(&format!("queued as {}", done[n].id)),
                    Err(e) => {
                        tracing::warn!(error = %e, "queue commit failed");
                        Failure::StorageUnavailable.reply()
                    }
                });
            }
            if outcome.is_ok() {
                self.dispatcher
                    .queued_for(copies.iter().map(|c| QueuedPeer {
                        sender_identity: c.sender_identity.clone(),
                        peer: c.peer,
                    }));
                self.dispatcher.notices.notify_one();
            }
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Failure::LocalError("no reply".into()).reply()))
            .collect()
    }
}
