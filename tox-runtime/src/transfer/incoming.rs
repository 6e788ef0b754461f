//! The receiving side of the engine: offers, incoming files written to the spool, the header check,
//! the inbox call, and the verdict sent back. Acks go out only after the inbox returned success.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use toxmail_protocol::{Deposit, Frame, MessageId, NackCode, Offer, PublicKey, peek_header};

use super::engine::{Engine, Internal};
use super::{Inbox, PeerEvent, Refusal};
use crate::event::{FileNumber, FriendNumber};

/// Tox's file kind for data (as opposed to avatars).
const FILE_KIND_DATA: u32 = 0;

/// A file may overtake its Offer (the sender's packet queue was full while the file started):
/// it waits this long, paused, for the Offer before it is cancelled.
const ORPHAN_WAIT: Duration = Duration::from_secs(3);
/// Offers one peer may have outstanding or in transfer at once; more are refused for now. A
/// sender offers one message at a time per file; this leaves room for bursts and relays.
pub(super) const MAX_OFFERS_PER_PEER: usize = 64;
/// An offer whose file has not been taken this long after it came is forgotten.
const OFFER_TTL: Duration = Duration::from_secs(120);

/// Which per-peer bound a new offer would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerBound {
    /// `MAX_OFFERS_PER_PEER` offers outstanding or files in transfer.
    Count,
    /// `max_peer_bytes` offered or in transfer.
    Bytes,
}

impl PeerBound {
    pub(super) fn detail(self) -> &'static str {
        match self {
            PeerBound::Count => "too many offers outstanding",
            PeerBound::Bytes => "too many bytes outstanding",
        }
    }
}

pub(super) struct Orphan {
    friend: FriendNumber,
    file: FileNumber,
    kind: u32,
    size: u64,
    since: Instant,
}

pub(super) struct OfferState {
    pub(super) size: u64,
    /// `Some`: a deposit for us as a relay rather than mail for us.
    pub(super) deposit: Option<Deposit>,
    /// The inbox said it does not have this message yet.
    pub(super) checked: bool,
    /// A file that arrived before the check finished.
    pub(super) parked: Option<(FriendNumber, FileNumber)>,
    pub(super) since: Instant,
}

struct Receiving {
    from: PublicKey,
    id: MessageId,
    size: u64,
    deposit: Option<Deposit>,
    spool: File,
    received: u64,
    /// Taken up from a spool file left by an earlier, broken-off transfer.
    resumed: bool,
    /// Bytes received when the spool was last synced to disk.
    synced: u64,
}

/// The spool is synced to disk after each this many bytes, so that a transfer resumed after a
/// power loss starts from bytes that are really there (a resumed envelope that does not open is
/// fetched again from the start anyway; this keeps that rare).
const SPOOL_SYNC_EVERY: u64 = 4 * 1024 * 1024;

#[derive(Default)]
pub(super) struct Incoming {
    pub(super) offers: HashMap<(PublicKey, MessageId), OfferState>,
    files: HashMap<(FriendNumber, FileNumber), Receiving>,
    /// Envelopes handed to the inbox and not yet answered: a repeated offer waits for that answer.
    pub(super) storing: HashSet<(PublicKey, MessageId)>,
    /// Files that arrived before their Offer.
    pub(super) orphans: HashMap<(PublicKey, MessageId), Orphan>,
}

impl<I: Inbox> Engine<I> {
    pub(super) fn spool_path(&self, from: &PublicKey, id: &MessageId) -> PathBuf {
        self.config.spool_dir.join(format!("{from}-{id}.part"))
    }

    async fn refuse(&self, to: PublicKey, id: MessageId, refusal: Refusal) {
        self.stats.offers_refused.fetch_add(1, Ordering::Relaxed);
        tracing::info!(peer = %to, %id, code = ?refusal.code, detail = %refusal.detail, "envelope refused");
        self.send_frame(to, &Frame::Nack(refusal.into_nack(id)))
            .await;
    }

    pub(super) async fn cancel_file(&self, friend: FriendNumber, file: FileNumber) {
        self.stats.files_cancelled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.handle.file_cancel(friend, file).await {
            tracing::debug!(friend, file, error = %e, "cancel failed");
        }
    }

    pub(super) async fn on_offer(&mut self, _friend: FriendNumber, from: PublicKey, offer: Offer) {
        let Offer {
            message_id: id,
            size,
        } = offer;
        if size > self.config.max_envelope {
            let detail = format!(
                "{size} bytes exceed this node's limit of {}",
                self.config.max_envelope
            );
            return self
                .refuse(from, id, Refusal::new(NackCode::TooLarge, detail))
                .await;
        }
        if size == 0 {
            return self
                .refuse(
                    from,
                    id,
                    Refusal::new(NackCode::Malformed, "empty envelope"),
                )
                .await;
        }
        if let Some(bound) = self.over_peer_bounds(from, id, size) {
            let refusal = Refusal::new(NackCode::Busy, bound.detail());
            return self.refuse(from, id, refusal).await;
        }
        if !self.expect_file(from, id, size, None).await {
            return;
        }
        let (inbox, internal) = (self.inbox.clone(), self.internal.clone());
        tokio::spawn(async move {
            let already_stored = inbox.contains(from, id).await;
            let _ = internal.send(Internal::OfferChecked {
                from,
                id,
                already_stored,
            });
        });
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
        if self.incoming.offers.contains_key(&(from, id)) {
            return None;
        }
        let offers = self.incoming.offers.iter().filter(|(k, _)| k.0 == from);
        let files = self.incoming.files.values().filter(|r| r.from == from);
        let outstanding = offers.clone().count() + files.clone().count();
        if outstanding >= MAX_OFFERS_PER_PEER {
            tracing::warn!(peer = %from, outstanding, "offer refused for now: too many outstanding");
            return Some(PeerBound::Count);
        }
        let bytes: u64 =
            offers.map(|(_, o)| o.size).sum::<u64>() + files.map(|r| r.size).sum::<u64>();
        let cap = self.config.max_peer_bytes.max(self.config.max_envelope);
        if bytes.saturating_add(size) > cap {
            tracing::warn!(peer = %from, bytes, size, cap, "offer refused for now: too many bytes outstanding");
            return Some(PeerBound::Bytes);
        }
        None
    }

    /// Forgets offers whose file never came (or was never taken) within `OFFER_TTL`.
    pub(super) async fn expire_offers(&mut self) {
        let stale: Vec<_> = self
            .incoming
            .offers
            .iter()
            .filter(|(_, o)| o.since.elapsed() >= OFFER_TTL)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            let offer = self.incoming.offers.remove(&key).expect("listed above");
            tracing::debug!(peer = %key.0, id = %key.1, "offer without a file forgotten");
            if let Some((friend, file)) = offer.parked {
                self.cancel_file(friend, file).await;
            }
        }
    }

    /// Spool files of transfers in progress: the sweeper keeps them.
    pub(super) fn active_spool_paths(&self) -> HashSet<PathBuf> {
        let receiving = self.incoming.files.values().map(|r| (r.from, r.id));
        let storing = self.incoming.storing.iter().copied();
        receiving
            .chain(storing)
            .map(|(from, id)| self.spool_path(&from, &id))
            .collect()
    }

    /// Records an offer (or deposit) whose file may follow; false when a store of the same
    /// envelope is in progress, whose verdict will answer this offer too.
    pub(super) async fn expect_file(
        &mut self,
        from: PublicKey,
        id: MessageId,
        size: u64,
        deposit: Option<Deposit>,
    ) -> bool {
        if self.incoming.storing.contains(&(from, id)) {
            return false;
        }
        let state = OfferState {
            size,
            deposit,
            checked: false,
            parked: None,
            since: Instant::now(),
        };
        self.incoming.offers.insert((from, id), state);
        if let Some(o) = self.incoming.orphans.remove(&(from, id)) {
            // The file came first; judge it now that its offer is here.
            self.on_file_recv(o.friend, from, o.file, o.kind, o.size, id)
                .await;
        }
        true
    }

    pub(super) async fn offer_checked(&mut self, from: PublicKey, id: MessageId, already: bool) {
        let Some(state) = self.incoming.offers.get_mut(&(from, id)) else {
            return;
        };
        if already {
            let parked = state.parked;
            self.incoming.offers.remove(&(from, id));
            if let Some((friend, file)) = parked {
                self.cancel_file(friend, file).await;
            }
            self.stats.duplicates_acked.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %from, %id, "duplicate envelope acknowledged again");
            self.send_frame(from, &Frame::Ack(id)).await;
            return;
        }
        state.checked = true;
        if let Some((friend, file)) = state.parked.take() {
            let size = state.size;
            self.accept_file(friend, file, from, id, size).await;
        }
    }

    pub(super) async fn on_file_recv(
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
        self.forget_file_number(friend, file);
        let Some(offer) = self.incoming.offers.get_mut(&(from, id)) else {
            let since = Instant::now();
            let orphan = Orphan {
                friend,
                file,
                kind,
                size,
                since,
            };
            self.incoming.orphans.insert((from, id), orphan);
            return;
        };
        let Some(state) = Some(offer).filter(|s| s.size == size && kind == FILE_KIND_DATA) else {
            tracing::info!(peer = %from, %id, size, kind, "file does not match its offer; cancelled");
            return self.cancel_file(friend, file).await;
        };
        if state.checked {
            self.accept_file(friend, file, from, id, size).await;
        } else {
            state.parked = Some((friend, file));
        }
    }

    pub(super) async fn accept_file(
        &mut self,
        friend: FriendNumber,
        file: FileNumber,
        from: PublicKey,
        id: MessageId,
        size: u64,
    ) {
        let deposit = self
            .incoming
            .offers
            .remove(&(from, id))
            .and_then(|o| o.deposit);
        let path = self.spool_path(&from, &id);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let spool = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open spool file");
                self.cancel_file(friend, file).await;
                let refusal = Refusal::new(NackCode::StorageFailure, "receiver spool unavailable");
                return self.refuse(from, id, refusal).await;
            }
        };
        let mut offset = spool.metadata().map(|m| m.len()).unwrap_or(0);
        if offset > size {
            offset = 0;
            let _ = spool.set_len(0);
        }
        if offset > 0 {
            tracing::info!(peer = %from, %id, offset, size, "resuming transfer");
        }
        tracing::debug!(friend, file, %id, offset, "accepting file");
        if let Err(e) = self.handle.file_accept(friend, file, offset).await {
            tracing::debug!(peer = %from, %id, error = %e, "could not accept file");
            return;
        }
        let receiving = Receiving {
            from,
            id,
            size,
            deposit,
            spool,
            received: offset,
            resumed: offset > 0,
            synced: offset,
        };
        self.incoming.files.insert((friend, file), receiving);
    }

    pub(super) async fn on_file_chunk(
        &mut self,
        friend: FriendNumber,
        file: FileNumber,
        position: u64,
        data: &[u8],
    ) {
        let Some(r) = self.incoming.files.get_mut(&(friend, file)) else {
            return;
        };
        if data.is_empty() {
            let r = self
                .incoming
                .files
                .remove(&(friend, file))
                .expect("present");
            return self.file_complete(r).await;
        }
        let end = position.saturating_add(data.len() as u64);
        if end > r.size {
            let (from, id) = (r.from, r.id);
            self.incoming.files.remove(&(friend, file));
            self.cancel_file(friend, file).await;
            let refusal = Refusal::new(NackCode::Malformed, "file data past the offered size");
            return self.refuse(from, id, refusal).await;
        }
        if let Err(e) = r.spool.write_all_at(data, position) {
            tracing::error!(error = %e, "spool write failed; transfer cancelled");
            self.incoming.files.remove(&(friend, file));
            return self.cancel_file(friend, file).await;
        }
        r.received = r.received.max(end);
        if r.received - r.synced >= SPOOL_SYNC_EVERY {
            if let Err(e) = r.spool.sync_data() {
                tracing::warn!(error = %e, "spool sync failed");
            }
            r.synced = r.received;
        }
    }

    async fn file_complete(&mut self, r: Receiving) {
        if r.received < r.size {
            return; // ended early; the spool keeps what arrived for the next offer
        }
        let path = self.spool_path(&r.from, &r.id);
        let (from, id, resumed) = (r.from, r.id, r.resumed);
        drop(r.spool);
        self.incoming.storing.insert((from, id));
        if let Some(deposit) = r.deposit {
            return self.store_deposit(from, deposit, path);
        }
        // Through a relay we trust, an envelope may be sealed by anyone, but only to us.
        let relayed_to = self
            .config
            .trusted_relays
            .contains(&from)
            .then_some(self.self_key)
            .flatten();
        let (inbox, internal) = (self.inbox.clone(), self.internal.clone());
        tokio::spawn(async move {
            let (origin, result) = match tokio::fs::read(&path).await {
                Ok(bytes) => match check_header(&bytes, from, id, relayed_to) {
                    Ok(origin) => (origin, inbox.store(origin, id, bytes).await),
                    Err(refusal) => (from, Err(refusal)),
                },
                Err(e) => {
                    let detail = format!("spool read: {e}");
                    (from, Err(Refusal::new(NackCode::StorageFailure, detail)))
                }
            };
            let result = result.map_err(|refusal| resumed_refusal(refusal, resumed));
            let stored = Internal::Stored {
                from,
                origin,
                id,
                result,
            };
            let _ = internal.send(stored);
        });
    }

    pub(super) async fn stored(
        &mut self,
        from: PublicKey,
        origin: PublicKey,
        id: MessageId,
        result: Result<(), Refusal>,
    ) {
        self.incoming.storing.remove(&(from, id));
        let path = self.spool_path(&from, &id);
        // A seal that verified proves a correspondent, even when the mail is refused.
        if !matches!(&result, Err(r) if r.code == NackCode::Forged) {
            self.strangers.proven(&from);
            self.strangers.proven(&origin);
        }
        match result {
            Ok(()) => {
                let _ = fs::remove_file(&path);
                self.stats.envelopes_stored.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %from, %id, "envelope stored; acknowledging");
                self.send_frame(from, &Frame::Ack(id)).await;
                if origin != from {
                    let via = from;
                    self.emit(PeerEvent::Relayed { origin, via, id });
                }
            }
            Err(refusal) => {
                let mixed_up = refusal.code == NackCode::Malformed;
                if refusal.class == toxmail_protocol::NackClass::Permanent || mixed_up {
                    let _ = fs::remove_file(&path);
                }
                self.refuse(from, id, refusal).await;
            }
        }
    }

    /// Cancels files whose Offer never came.
    pub(super) async fn expire_orphans(&mut self) {
        let stale: Vec<_> = self
            .incoming
            .orphans
            .iter()
            .filter(|(_, o)| o.since.elapsed() >= ORPHAN_WAIT)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            let o = self.incoming.orphans.remove(&key).expect("listed above");
            tracing::info!(peer = %key.0, id = %key.1, "file without a matching offer; cancelled");
            self.cancel_file(o.friend, o.file).await;
        }
    }

    pub(super) fn incoming_cancelled(&mut self, friend: FriendNumber, file: FileNumber) {
        tracing::debug!(friend, file, "incoming file cancelled by the sender");
        self.forget_file_number(friend, file);
        self.incoming.files.remove(&(friend, file));
    }

    /// c-toxcore reuses a file number once its transfer has ended: drop every reference to the
    /// old transfer, so a parked offer can never accept a different message's file.
    fn forget_file_number(&mut self, friend: FriendNumber, file: FileNumber) {
        let key = (friend, file);
        self.incoming
            .orphans
            .retain(|_, o| (o.friend, o.file) != key);
        for offer in self.incoming.offers.values_mut() {
            if offer.parked == Some(key) {
                offer.parked = None;
            }
        }
    }

    pub(super) fn incoming_friend_gone(&mut self, from: PublicKey, friend: FriendNumber) {
        self.incoming.files.retain(|(f, _), _| *f != friend);
        self.incoming.offers.retain(|(pk, _), _| *pk != from);
        self.incoming.orphans.retain(|(pk, _), _| *pk != from);
    }
}

/// A permanent refusal of a *resumed* transfer may come from the part kept before the break
/// (a power loss after bytes were reported written, a spool damaged on disk) rather than from
/// the sender: it becomes a temporary one that makes the sender offer again, and the spool is
/// discarded (`Malformed` + temporary, as for a mixed-up transfer), so the next attempt starts
/// from byte 0 and gets the real verdict. The price is one more transfer at worst.
fn resumed_refusal(refusal: Refusal, resumed: bool) -> Refusal {
    if !resumed || refusal.class != toxmail_protocol::NackClass::Permanent {
        return refusal;
    }
    tracing::info!(code = ?refusal.code, detail = %refusal.detail, "resumed envelope refused; fetching it again from the start");
    Refusal {
        class: toxmail_protocol::NackClass::Temporary,
        code: NackCode::Malformed,
        detail: "the resumed transfer did not give a valid envelope; offer it again".into(),
    }
}

/// The envelope must be the one offered (same id) and sealed by the friend who sent it, or, when
/// that friend is a relay we trust (`relayed_to` = our key), sealed to us. Returns the sealer.
pub(super) fn check_header(
    bytes: &[u8],
    from: PublicKey,
    id: MessageId,
    relayed_to: Option<PublicKey>,
) -> Result<PublicKey, Refusal> {
    let header = peek_header(bytes)
        .map_err(|e| Refusal::new(NackCode::Malformed, format!("envelope header: {e}")))?;
    if header.message_id != id {
        // Another envelope's bytes under this offer: a transfer mixed up on the way (file
        // numbers reused under load), not a forgery, which `open` would catch. The sender
        // offers it again; the spool is discarded.
        tracing::info!(offered = %id, found = %header.message_id, "envelope id differs from the offer");
        return Err(Refusal {
            class: toxmail_protocol::NackClass::Temporary,
            code: NackCode::Malformed,
            detail: "the transfer carried another envelope; offer it again".into(),
        });
    }
    match relayed_to {
        _ if header.sender == from => Ok(from),
        Some(us) if header.recipient == us => Ok(header.sender),
        Some(_) => Err(Refusal::new(
            NackCode::WrongRecipient,
            "relayed envelope not sealed to us",
        )),
        None => Err(Refusal::new(
            NackCode::Forged,
            "envelope not sealed by the sending friend",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toxmail_protocol::NackClass;

    #[test]
    fn a_resumed_transfer_is_never_refused_for_good_only_fetched_again() {
        let forged = Refusal::new(NackCode::Forged, "does not open");
        assert_eq!(forged.class, NackClass::Permanent);
        let again = resumed_refusal(forged.clone(), true);
        assert_eq!(
            (again.class, again.code),
            (NackClass::Temporary, NackCode::Malformed)
        );
        // A transfer from byte 0 gets the verdict as it is.
        assert_eq!(resumed_refusal(forged, false).class, NackClass::Permanent);
        // Temporary refusals pass unchanged.
        let busy = Refusal {
            class: NackClass::Temporary,
            code: NackCode::Busy,
            detail: "busy".into(),
        };
        assert_eq!(resumed_refusal(busy, true).code, NackCode::Busy);
    }
}
