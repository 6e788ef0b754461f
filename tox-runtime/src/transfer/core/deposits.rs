//! The relay roles. A depositor sends `Deposit` (instead of `Offer`) and then the file; the relay
//! checks its policy before any byte moves, stores the complete envelope through
//! [`crate::transfer::Inbox::store_deposit`] and confirms `Custody` (or `Refuse`s). Other relay
//! frames (`Register`, `Holding`, `Released`, `RelayList`) go to the subscribers.

use toxmail_protocol::{
    Custody, Deposit, Frame, MessageId, NackClass, PublicKey, RelayFrame, RelayRefusal, peek_header,
};

use super::{Action, Core, PeerBound};
use crate::transfer::{DeliveryError, DepositRefusal};

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

impl Core {
    fn refuse_deposit(&mut self, to: PublicKey, id: MessageId, refusal: DepositRefusal) {
        self.count(|s| &s.offers_refused);
        tracing::info!(peer = %to, %id, code = ?refusal.code, detail = %refusal.detail, "deposit refused");
        self.send(to, refusal.into_frame(id));
    }

    pub(super) fn on_deposit(&mut self, from: PublicKey, d: Deposit) {
        let id = d.message_id;
        if d.size > self.config.max_envelope {
            let detail = format!(
                "{} bytes exceed this relay's limit of {}",
                d.size, self.config.max_envelope
            );
            return self.refuse_deposit(
                from,
                id,
                DepositRefusal::new(RelayRefusal::TooLarge, detail),
            );
        }
        if d.size == 0 {
            let refusal = DepositRefusal::new(RelayRefusal::Malformed, "empty envelope");
            return self.refuse_deposit(from, id, refusal);
        }
        if let Some(bound) = self.over_peer_bounds(from, id, d.size) {
            let code = match bound {
                PeerBound::Bytes => RelayRefusal::QuotaBytes,
                PeerBound::Count => RelayRefusal::QuotaCount,
            };
            let refusal = DepositRefusal::new(code, format!("deposits: {}", bound.detail()));
            return self.refuse_deposit(from, id, refusal);
        }
        if self.expect_file(from, id, d.size, Some(d.clone())) {
            self.act(Action::CheckDeposit { from, deposit: d });
        }
    }

    pub(super) fn deposit_checked(
        &mut self,
        from: PublicKey,
        id: MessageId,
        result: Result<Option<u64>, DepositRefusal>,
    ) {
        let Some(state) = self.receiving.offers.get_mut(&(from, id)) else {
            return;
        };
        match result {
            Ok(None) => {
                state.checked = true;
                if let Some(key) = state.parked.take() {
                    let size = state.size;
                    self.accept_file(key, from, id, size);
                }
            }
            done => {
                let parked = state.parked;
                self.receiving.offers.remove(&(from, id));
                if let Some(key) = parked {
                    self.cancel_file(key);
                }
                if self.receiving.storing.contains(&(from, id)) {
                    // A deposit made again while the first is being stored: that store's
                    // verdict answers both (`deposited` would take it for the store's own).
                    return;
                }
                if let Ok(Some(_)) = done {
                    self.count(|s| &s.duplicates_acked);
                    tracing::info!(peer = %from, %id, "deposit already held; custody confirmed again");
                }
                self.deposited(from, id, done.map(|e| e.unwrap_or_default()));
            }
        }
    }

    /// Sends the relay's verdict on a deposit: custody once stored, or a refusal.
    pub(super) fn deposited(
        &mut self,
        from: PublicKey,
        id: MessageId,
        result: Result<u64, DepositRefusal>,
    ) {
        let was_storing = self.receiving.storing.remove(&(from, id));
        match result {
            Ok(expires) => {
                if was_storing {
                    self.act(Action::RemoveSpool { from, id });
                    self.count(|s| &s.envelopes_stored);
                }
                tracing::info!(peer = %from, %id, expires, "deposit held; custody confirmed");
                let custody = Custody {
                    message_id: id,
                    expires,
                };
                self.send(from, Frame::Relay(RelayFrame::Custody(custody)));
            }
            Err(refusal) => {
                if refusal.class == NackClass::Permanent {
                    self.act(Action::RemoveSpool { from, id });
                }
                self.refuse_deposit(from, id, refusal);
            }
        }
    }
}
