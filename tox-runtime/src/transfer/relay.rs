//! The engine's relay roles. A depositor sends `Deposit` (instead of `Offer`) and then the file;
//! the relay checks its policy before any byte moves, stores the complete envelope through
//! [`Inbox::store_deposit`] and confirms `Custody` (or `Refuse`s). Other relay frames
//! (`Register`, `Holding`, `Released`, `RelayList`) go to the subscribers.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use toxmail_protocol::{
    Custody, Deposit, Frame, MessageId, NackClass, PublicKey, REGISTER_SUBJECT, RelayFrame,
    RelayRefusal, peek_header,
};

use super::engine::{Engine, Internal};
use super::incoming::{PeerBound, check_header};
use super::{DeliveryError, DepositRefusal, Inbox, PeerEvent};
use crate::event::FriendNumber;

/// The `Deposit` frame announcing `envelope` to a relay: the recipient key comes from its header.
pub(super) fn deposit_frame(
    id: MessageId,
    envelope: &[u8],
    expires: u64,
) -> Result<Frame, DeliveryError> {
    let header = peek_header(envelope).map_err(|e| {
        DeliveryError::RelayRefused(toxmail_protocol::Refuse {
            message_id: id,
            class: NackClass::Permanent,
            code: RelayRefusal::Malformed,
            detail: format!("not a sealed envelope: {e}"),
        })
    })?;
    Ok(Frame::Relay(RelayFrame::Deposit(Deposit {
        message_id: id,
        recipient: header.recipient,
        size: envelope.len() as u64,
        expires,
    })))
}

impl<I: Inbox> Engine<I> {
    pub(super) async fn on_relay_frame(
        &mut self,
        friend: FriendNumber,
        from: PublicKey,
        frame: RelayFrame,
    ) {
        match frame {
            RelayFrame::Deposit(d) => self.on_deposit(friend, from, d).await,
            RelayFrame::Custody(Custody { message_id, .. }) => {
                self.verdict(from, message_id, Ok(()))
            }
            RelayFrame::Refuse(r) if r.message_id != REGISTER_SUBJECT => {
                let id = r.message_id;
                self.verdict(from, id, Err(DeliveryError::RelayRefused(r)))
            }
            frame => self.emit(PeerEvent::Relay { from, frame }),
        }
    }

    async fn refuse_deposit(&self, to: PublicKey, id: MessageId, refusal: DepositRefusal) {
        self.stats.offers_refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %to, %id, code = ?refusal.code, detail = %refusal.detail, "deposit refused");
        self.send_frame(to, &refusal.into_frame(id)).await;
    }

    async fn on_deposit(&mut self, _friend: FriendNumber, from: PublicKey, d: Deposit) {
        let id = d.message_id;
        if d.size > self.config.max_envelope {
            let detail = format!(
                "{} bytes exceed this relay's limit of {}",
                d.size, self.config.max_envelope
            );
            let refusal = DepositRefusal::new(RelayRefusal::TooLarge, detail);
            return self.refuse_deposit(from, id, refusal).await;
        }
        if d.size == 0 {
            let refusal = DepositRefusal::new(RelayRefusal::Malformed, "empty envelope");
            return self.refuse_deposit(from, id, refusal).await;
        }
        if let Some(bound) = self.over_peer_bounds(from, id, d.size) {
            let code = match bound {
                PeerBound::Bytes => RelayRefusal::QuotaBytes,
                PeerBound::Count => RelayRefusal::QuotaCount,
            };
            let refusal = DepositRefusal::new(code, format!("deposits: {}", bound.detail()));
            return self.refuse_deposit(from, id, refusal).await;
        }
        if !self.expect_file(from, id, d.size, Some(d.clone())).await {
            return;
        }
        let (inbox, internal) = (self.inbox.clone(), self.internal.clone());
        tokio::spawn(async move {
            let result = inbox.check_deposit(from, d).await;
            let _ = internal.send(Internal::DepositChecked { from, id, result });
        });
    }

    pub(super) async fn deposit_checked(
        &mut self,
        from: PublicKey,
        id: MessageId,
        result: Result<Option<u64>, DepositRefusal>,
    ) {
        let Some(state) = self.incoming.offers.get_mut(&(from, id)) else {
            return;
        };
        match result {
            Ok(None) => {
                state.checked = true;
                if let Some((friend, file)) = state.parked.take() {
                    let size = state.size;
                    self.accept_file(friend, file, from, id, size).await;
                }
            }
            done => {
                let parked = state.parked;
                self.incoming.offers.remove(&(from, id));
                if let Some((friend, file)) = parked {
                    self.cancel_file(friend, file).await;
                }
                if let Ok(Some(_)) = done {
                    self.stats.duplicates_acked.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %from, %id, "deposit already held; custody confirmed again");
                }
                self.deposited(from, id, done.map(|e| e.unwrap_or_default()))
                    .await;
            }
        }
    }

    /// The complete deposited envelope: header checked (sealed by the depositor, to the
    /// recipient it named), then handed to the inbox.
    pub(super) fn store_deposit(&mut self, from: PublicKey, deposit: Deposit, path: PathBuf) {
        let (inbox, internal) = (self.inbox.clone(), self.internal.clone());
        let id = deposit.message_id;
        tokio::spawn(async move {
            let result = match tokio::fs::read(&path).await {
                Ok(bytes) => match check_deposit_header(&bytes, from, &deposit) {
                    Ok(()) => inbox.store_deposit(from, deposit, bytes).await,
                    Err(refusal) => Err(refusal),
                },
                Err(e) => Err(DepositRefusal::new(
                    RelayRefusal::StorageFailure,
                    format!("spool read: {e}"),
                )),
            };
            let _ = internal.send(Internal::Deposited { from, id, result });
        });
    }

    /// Sends the relay's verdict on a deposit: custody once stored, or a refusal.
    pub(super) async fn deposited(
        &mut self,
        from: PublicKey,
        id: MessageId,
        result: Result<u64, DepositRefusal>,
    ) {
        let was_storing = self.incoming.storing.remove(&(from, id));
        let path = self.spool_path(&from, &id);
        match result {
            Ok(expires) => {
                if was_storing {
                    let _ = std::fs::remove_file(&path);
                    self.stats.envelopes_stored.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(peer = %from, %id, expires, "deposit held; custody confirmed");
                let custody = Custody {
                    message_id: id,
                    expires,
                };
                self.send_frame(from, &Frame::Relay(RelayFrame::Custody(custody)))
                    .await;
            }
            Err(refusal) => {
                if refusal.class == NackClass::Permanent {
                    let _ = std::fs::remove_file(&path);
                }
                self.refuse_deposit(from, id, refusal).await;
            }
        }
    }
}

fn check_deposit_header(bytes: &[u8], from: PublicKey, d: &Deposit) -> Result<(), DepositRefusal> {
    let malformed = |detail: String| DepositRefusal::new(RelayRefusal::Malformed, detail);
    check_header(bytes, from, d.message_id, None).map_err(|r| DepositRefusal {
        class: r.class, // temporary when the transfer was mixed up: deposit it again
        ..malformed(r.detail)
    })?;
    let header = peek_header(bytes).map_err(|e| malformed(e.to_string()))?;
    if header.recipient != d.recipient {
        return Err(malformed(
            "envelope sealed to another key than the deposit names".into(),
        ));
    }
    Ok(())
}
