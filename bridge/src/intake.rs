//! What the LMTP server calls: per-recipient routing checks at RCPT, and after DATA the sealing of
//! one copy per recipient and one database commit for all of them, before any 250. Copies are
//! sealed and written one at a time inside that transaction, so memory holds the message and one
//! sealed copy, whatever the number of recipients.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toxmail_protocol::{
    Extensions, Letter, MessageId, Metadata, SealError, SecretKey, ToxId, seal, seal_compressed,
};

use crate::config::UnknownSender;
use crate::delivery::dsn::should_notify;
use crate::delivery::outbound::Dispatcher;
use crate::delivery::returned::Returned;
use crate::dsn_request::CopyDsn;
use crate::identity::DEFAULT_IDENTITY;
use crate::postfix::lmtp::{Intake, Transaction};
use crate::reply::{Failure, Reply};
use crate::resolve::{Resolver, Route};
use crate::store::{Enqueued, QueuedPeer, Store, StoreError, UnsealedCopy};

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

    /// The extensions sealed for `peer`: the transaction's, when the peer opens envelopes with
    /// extensions (protocol level 3) or its level is not known yet (the sending side then refuses
    /// the copy with a clear reason if the peer turns out older). A peer known to be older gets
    /// a 5.6.7 refusal for SMTPUTF8 mail, and 8-bit mail sealed as before level 3: the bytes are
    /// carried unchanged, only not declared BODY=8BITMIME at the receiving site (docs/protocol.md).
    fn extensions_for(
        &self,
        identity: &str,
        peer: &ToxId,
        wanted: &Extensions,
        dsn: &CopyDsn,
    ) -> Result<Extensions, Failure> {
        let courier = self.dispatcher.couriers.get(identity);
        let level = courier.and_then(|c| c.peer_level(&peer.public_key()));
        match level {
            Some(level) if level < 3 => {
                if wanted.smtputf8 {
                    return Err(Failure::PeerLacksSmtputf8);
                }
                Ok(Extensions::default())
            }
            // The DSN request rides along only where it costs nothing: the copy is extended
            // anyway, or the peer is known to read extended envelopes. Otherwise it is left
            // out (a version 1 envelope; the far site reports as it did before), never a
            // reason to refuse the mail.
            Some(_) => Ok(Extensions {
                dsn: dsn.sealed(),
                ..wanted.clone()
            }),
            None if !wanted.is_default() => Ok(Extensions {
                dsn: dsn.sealed(),
                ..wanted.clone()
            }),
            None => Ok(wanted.clone()),
        }
    }

    /// The peer's Tox ID and the relays it published.
    async fn route(&self, rcpt: &str) -> Result<(ToxId, Vec<ToxId>), Failure> {
        match self.resolver.resolve(rcpt).await {
            Route::Tox { peer, relays, .. } => Ok((peer, relays)),
            Route::Local | Route::NotTox => Err(Failure::NoLongerTox),
            Route::Invalid(why) => Err(Failure::BadDestination(why)),
            Route::TempFail(why) => Err(Failure::RoutingTemporary(why)),
        }
    }
}

/// How idempotency keys derived from the message start (a Postfix queue id never does).
pub const DERIVED_KEY_PREFIX: &str = "sha256-";

/// The idempotency key of a transaction that came without a queue id: the SHA-256 of its sender
/// and message bytes (128 bits of it).
pub fn derived_idem_key(mail_from: &str, data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(mail_from.as_bytes());
    hash.update([0]);
    hash.update(data);
    format!(
        "{DERIVED_KEY_PREFIX}{}",
        hex::encode(&hash.finalize()[..16])
    )
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
        let mut replies: Vec<Option<Reply>> = vec![None; tx.recipients.len()];
        // Postfix's queue id (XFORWARD IDENT) makes a retried transaction a no-op; without it
        // (Zimbra's stock lmtp service, any client that does not send XFORWARD) the message
        // itself is the key: a retry repeats its bytes, and Postfix put its own queue id in its
        // Received: header and a unique Message-ID in it if the sender left none.
        let idem_key = Some(match &tx.ident {
            Some(ident) => ident.clone(),
            None => derived_idem_key(&tx.mail_from, &tx.data),
        });
        let mut copies = Vec::new();
        let mut extensions = Vec::new();
        let mut slots = Vec::new();
        let expires = SystemTime::now() + self.lifetime;
        let mut original = None;
        for (i, rcpt) in tx.recipients.iter().enumerate() {
            let dsn = CopyDsn {
                mail: tx.dsn.clone(),
                rcpt: tx.recipient_dsn.get(i).cloned().unwrap_or_default(),
            };
            let reports = should_notify(&tx.mail_from) && !dsn.notify().never();
            if reports && original.is_none() {
                original = Some(self.sealed_original(&identity, &tx));
            }
            let routed = self.route(rcpt).await.and_then(|(peer, relays)| {
                let ext = self.extensions_for(&identity, &peer, &tx.extensions, &dsn)?;
                Ok((peer, relays, ext))
            });
            match routed {
                Ok((peer, relays, ext)) => {
                    extensions.push(ext);
                    copies.push(UnsealedCopy {
                        dsn,
                        original: original.clone().flatten().filter(|_| reports),
                        message_id: MessageId::random(),
                        idem_key: idem_key.clone(),
                        recipient: rcpt.clone(),
                        envelope_sender: tx.mail_from.clone(),
                        sender_identity: identity.clone(),
                        peer,
                        expires,
                        relays,
                    });
                    slots.push(i);
                }
                Err(f) => replies[i] = Some(f.reply()),
            }
        }
        if !copies.is_empty() {
            let queued = self.enqueue(&identity, tx, &copies, &extensions).await;
            for (n, &i) in slots.iter().enumerate() {
                replies[i] = Some(match &queued {
                    Ok(done) => match &done[n] {
                        Ok(copy) => Reply::queued(&format!("queued as {}", copy.id)),
                        Err(e) => seal_failure(e).reply(),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "queue commit failed");
                        Failure::StorageUnavailable.reply()
                    }
                });
            }
            if queued.is_ok() {
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

impl BridgeIntake {
    /// What reports return of the message, sealed to the identity's own key: once per
    /// message, shared by its copies.
    fn sealed_original(&self, identity: &str, tx: &Transaction) -> Option<Arc<Vec<u8>>> {
        let returned = Returned::choose(&tx.data, tx.dsn.ret);
        let sealed = returned.seal(&self.keys[identity]);
        if sealed.is_none() {
            tracing::warn!("cannot seal the part of the message reports return");
        }
        sealed.map(Arc::new)
    }

    /// Seals and queues the copies in one transaction, one at a time: each copy's envelope is
    /// written and dropped before the next is sealed, so at most one exists beside the message.
    async fn enqueue(
        &self,
        identity: &str,
        tx: Transaction,
        copies: &[UnsealedCopy],
        extensions: &[Extensions],
    ) -> Result<Vec<Result<Enqueued, SealError>>, StoreError> {
        let key = &self.keys[identity];
        let queue_id = tx.ident.unwrap_or_default();
        let lifetime = self.lifetime.as_secs();
        // The one copy of the message: lent to each copy's `Letter` and taken back after sealing.
        let mut message = tx.data;
        let seal_copy = |n: usize, copy: &UnsealedCopy| {
            let letter = Letter {
                message_id: copy.message_id,
                metadata: Metadata {
                    envelope_sender: copy.envelope_sender.clone(),
                    recipient: copy.recipient.clone(),
                    queue_id: queue_id.clone(),
                    created: unix_now(),
                    expires: unix_now() + lifetime,
                    extensions: extensions[n].clone(),
                },
                message: std::mem::take(&mut message),
            };
            let sealed = if self.opens_compressed(identity, &copy.peer) {
                seal_compressed(&letter, key, &copy.peer.public_key())
            } else {
                seal(&letter, key, &copy.peer.public_key())
            };
            message = letter.message;
            if let Err(e) = &sealed {
                tracing::warn!(error = %e, "cannot seal");
            }
            sealed
        };
        self.store.enqueue_sealing(copies, seal_copy).await
    }
}

/// The reply to a copy that could not be sealed.
fn seal_failure(e: &SealError) -> Failure {
    match e {
        SealError::TooLarge { max, .. } => Failure::MessageTooBig { limit: *max as u64 },
        _ => Failure::BadArguments("address too long to seal".into()),
    }
}
