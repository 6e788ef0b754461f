//! Envelopes coming in: an offer is checked against our bounds and the inbox, its file (which may
//! come before the offer) is accepted from what the spool already holds, chunks are written, and
//! the complete envelope is handed to the inbox; the verdict goes back only after the inbox
//! answered. Message ids already stored are acked again, never stored twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use toxmail_protocol::{Deposit, Frame, MessageId, NackCode, Offer, PublicKey};

use super::{Action, Core, FileKey};
use crate::event::{FileNumber, FriendNumber};
use crate::transfer::Refusal;

/// Tox's file kind for data (as opposed to avatars).
pub(crate) const FILE_KIND_DATA: u32 = 0;
/// A file may overtake its Offer (the sender's packet queue was full while the file started):
/// it waits this long, paused, for the Offer before it is cancelled.
pub(crate) const ORPHAN_WAIT: Duration = Duration::from_secs(3);
/// Offers one peer may have outstanding or in transfer at once; more are refused for now. A
/// sender offers one message at a time per file; this leaves room for bursts and relays.
pub(crate) const MAX_OFFERS_PER_PEER: usize = 64;
/// An offer whose file has not been taken this long after it came is forgotten.
pub(crate) const OFFER_TTL: Duration = Duration::from_secs(120);
/// The spool is synced to disk after each this many bytes, so that a transfer resumed after a
/// power loss starts from bytes that are really there (a resumed envelope that does not open is
/// fetched again from the start anyway; this keeps that rare).
pub(crate) const SPOOL_SYNC_EVERY: u64 = 4 * 1024 * 1024;

/// Which per-peer bound a new offer would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerBound {
    /// `MAX_OFFERS_PER_PEER` offers outstanding or files in transfer.
    Count,
    /// `max_peer_bytes` offered or in transfer.
    Bytes,
}

impl PeerBound {
    pub(crate) fn detail(self) -> &'static str {
        match self {
            PeerBound::Count => "too many offers outstanding",
            PeerBound::Bytes => "too many bytes outstanding",
        }
    }
}

/// An offer (or deposit) whose file may follow.
pub(crate) struct OfferState {
    pub(crate) size: u64,
    /// `Some`: a deposit for us as a relay rather than mail for us.
    pub(crate) deposit: Option<Deposit>,
    /// The inbox said it does not have this message yet.
    pub(crate) checked: bool,
    /// A file that arrived before the check finished.
    pub(crate) parked: Option<FileKey>,
    pub(crate) since: Instant,
}

/// A file that arrived before its offer.
pub(crate) struct Orphan {
    pub(crate) key: FileKey,
    kind: u32,
    size: u64,
    pub(crate) since: Instant,
}

/// A file being received into the spool.
pub(crate) struct Transfer {
    pub(crate) from: PublicKey,
    pub(crate) id: MessageId,
    pub(crate) size: u64,
    pub(crate) deposit: Option<Deposit>,
    /// `None` until the shell reported the accept (and the offset it resumed from).
    pub(crate) received: Option<u64>,
    /// Taken up from a spool file left by an earlier, broken-off transfer.
    pub(crate) resumed: bool,
    /// Bytes received when the spool was last synced to disk.
    pub(crate) synced: u64,
}

#[derive(Default)]
pub(crate) struct Receiving {
    pub(crate) offers: HashMap<(PublicKey, MessageId), OfferState>,
    pub(crate) files: HashMap<FileKey, Transfer>,
    /// Envelopes handed to the inbox and not yet answered: a repeated offer waits for that answer.
    pub(crate) storing: HashSet<(PublicKey, MessageId)>,
    pub(crate) orphans: HashMap<(PublicKey, MessageId), Orphan>,
}

impl Receiving {
    pub(super) fn active(&self) -> Vec<(PublicKey, MessageId)> {
        let files = self.files.values().map(|t| (t.from, t.id));
        files.chain(self.storing.iter().copied()).collect()
    }
}

impl Core {
    pub(super) fn refuse(&mut self, to: PublicKey, id: MessageId, refusal: Refusal) {
        self.count(|s| &s.offers_refused);
        tracing::info!(peer = %to, %id, code = ?refusal.code, detail = %refusal.detail, "envelope refused");
        self.send(to, Frame::Nack(refusal.into_nack(id)));
    }

    pub(super) fn cancel_file(&mut self, key: FileKey) {
        self.count(|s| &s.files_cancelled);
        self.act(Action::Cancel(key));
    }

    pub(super) fn on_offer(&mut self, from: PublicKey, offer: Offer) {
        let Offer {
            message_id: id,
            size,
        } = offer;
        if size > self.config.max_envelope {
            let limit = self.config.max_envelope;
            let detail = format!("{size} bytes exceed this node's limit of {limit}");
            return self.refuse(from, id, Refusal::new(NackCode::TooLarge, detail));
        }
        if size == 0 {
            return self.refuse(
                from,
                id,
                Refusal::new(NackCode::Malformed, "empty envelope"),
            );
        }
        if let Some(bound) = self.over_peer_bounds(from, id, size) {
            return self.refuse(from, id, Refusal::new(NackCode::Busy, bound.detail()));
        }
        if self.expect_file(from, id, size, None) {
            self.act(Action::Check { from, id });
        }
    }

    /// Why a new offer of `size` bytes from `from` must wait, if it must: the peer already has
    /// as many offers outstanding or files in transfer as one peer may, or as many bytes (a
    /// repeated offer replaces its own and is not counted twice).
    pub(super) fn over_peer_bounds(
        &self,
        from: PublicKey,
        id: MessageId,
        size: u64,
    ) -> Option<PeerBound> {
        let r = &self.receiving;
        if r.offers.contains_key(&(from, id)) {
            return None;
        }
        let offers = r.offers.iter().filter(|(k, _)| k.0 == from);
        let files = r.files.values().filter(|t| t.from == from);
        let outstanding = offers.clone().count() + files.clone().count();
        if outstanding >= MAX_OFFERS_PER_PEER {
            tracing::warn!(peer = %from, outstanding, "offer refused for now: too many outstanding");
            return Some(PeerBound::Count);
        }
        let bytes: u64 =
            offers.map(|(_, o)| o.size).sum::<u64>() + files.map(|t| t.size).sum::<u64>();
        let cap = self.config.max_peer_bytes.max(self.config.max_envelope);
        if bytes.saturating_add(size) > cap {
            tracing::warn!(peer = %from, bytes, size, cap, "offer refused for now: too many bytes outstanding");
            return Some(PeerBound::Bytes);
        }
        None
    }

    /// Records an offer (or deposit) whose file may follow; false when a store of the same
    /// envelope is in progress, whose verdict will answer this offer too.
    pub(super) fn expect_file(
        &mut self,
        from: PublicKey,
        id: MessageId,
        size: u64,
        deposit: Option<Deposit>,
    ) -> bool {
        if self.receiving.storing.contains(&(from, id)) {
            return false;
        }
        let state = OfferState {
            size,
            deposit,
            checked: false,
            parked: None,
            since: self.now,
        };
        // An offer made again replaces the earlier one: a file parked for that is the sender's
        // earlier attempt, and would stay paused in c-toxcore if it were only forgotten.
        let earlier = self.receiving.offers.insert((from, id), state);
        if let Some(parked) = earlier.and_then(|o| o.parked) {
            self.cancel_file(parked);
        }
        if let Some(o) = self.receiving.orphans.remove(&(from, id)) {
            // The file came first; judge it now that its offer is here.
            self.on_file_recv(o.key.0, from, o.key.1, o.kind, o.size, id);
        }
        true
    }

    pub(super) fn offer_checked(&mut self, from: PublicKey, id: MessageId, already: bool) {
        let Some(state) = self.receiving.offers.get_mut(&(from, id)) else {
            return;
        };
        if already {
            let parked = state.parked;
            self.receiving.offers.remove(&(from, id));
            if let Some(key) = parked {
                self.cancel_file(key);
            }
            self.count(|s| &s.duplicates_acked);
            tracing::info!(peer = %from, %id, "duplicate envelope acknowledged again");
            self.send(from, Frame::Ack(id));
            return;
        }
        state.checked = true;
        if let Some(key) = state.parked.take() {
            let size = state.size;
            self.accept_file(key, from, id, size);
        }
    }

    pub(super) fn on_file_recv(
        &mut self,
        friend: FriendNumber,
        from: PublicKey,
        file: FileNumber,
        kind: u32,
        size: u64,
        id: MessageId,
    ) {
        tracing::debug!(friend, file, %id, size, "incoming file");
        // A new transfer under this number means any earlier one with it is over.
        self.forget_file_number((friend, file));
        let Some(offer) = self.receiving.offers.get_mut(&(from, id)) else {
            let orphan = Orphan {
                key: (friend, file),
                kind,
                size,
                since: self.now,
            };
            if let Some(earlier) = self.receiving.orphans.insert((from, id), orphan) {
                self.cancel_file(earlier.key);
            }
            return;
        };
        if offer.size != size || kind != FILE_KIND_DATA {
            tracing::info!(peer = %from, %id, size, kind, "file does not match its offer; cancelled");
            return self.cancel_file((friend, file));
        }
        if offer.checked {
            self.accept_file((friend, file), from, id, size);
        } else if let Some(earlier) = offer.parked.replace((friend, file)) {
            self.cancel_file(earlier);
        }
    }

    pub(super) fn tick_receiving(&mut self) {
        let now = self.now;
        // Files whose offer never came, and offers whose file never came (or was never taken).
        let mut stale: Vec<_> = self
            .receiving
            .orphans
            .iter()
            .filter(|(_, o)| now.duration_since(o.since) >= ORPHAN_WAIT)
            .map(|(k, _)| *k)
            .collect();
        stale.sort_unstable();
        for key in stale {
            let o = self.receiving.orphans.remove(&key).expect("listed above");
            tracing::info!(peer = %key.0, id = %key.1, "file without a matching offer; cancelled");
            self.cancel_file(o.key);
        }
        let mut stale: Vec<_> = self
            .receiving
            .offers
            .iter()
            .filter(|(_, o)| now.duration_since(o.since) >= OFFER_TTL)
            .map(|(k, _)| *k)
            .collect();
        stale.sort_unstable();
        for key in stale {
            let offer = self.receiving.offers.remove(&key).expect("listed above");
            tracing::debug!(peer = %key.0, id = %key.1, "offer without a file forgotten");
            if let Some(file) = offer.parked {
                self.cancel_file(file);
            }
        }
    }

    pub(super) fn incoming_cancelled(&mut self, key: FileKey) {
        tracing::debug!(
            friend = key.0,
            file = key.1,
            "incoming file cancelled by the sender"
        );
        self.forget_file_number(key);
    }

    /// c-toxcore reuses a file number once its transfer has ended: drop every reference to the
    /// old transfer, so a parked offer can never accept a different message's file.
    fn forget_file_number(&mut self, key: FileKey) {
        let r = &mut self.receiving;
        r.orphans.retain(|_, o| o.key != key);
        for offer in r.offers.values_mut() {
            if offer.parked == Some(key) {
                offer.parked = None;
            }
        }
        if r.files.remove(&key).is_some() {
            self.act(Action::Close(key));
        }
    }

    pub(super) fn receiving_friend_gone(&mut self, from: PublicKey, friend: FriendNumber) {
        let r = &mut self.receiving;
        let mut gone: Vec<FileKey> = r.files.keys().filter(|k| k.0 == friend).copied().collect();
        gone.sort_unstable();
        for key in gone {
            r.files.remove(&key);
            self.actions.push(Action::Close(key));
        }
        let r = &mut self.receiving;
        r.offers.retain(|(pk, _), _| *pk != from);
        r.orphans.retain(|(pk, _), _| *pk != from);
    }
}
