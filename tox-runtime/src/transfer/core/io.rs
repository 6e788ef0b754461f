//! The core's vocabulary: what happens to it ([`Input`]) and what it asks for ([`Action`]).

use std::sync::Arc;

use toxmail_protocol::{Deposit, Frame, MessageId, PublicKey};

use super::{FileKey, OutKey};
use crate::event::{FileNumber, FriendNumber};
use crate::transfer::{DeliveryError, DepositRefusal, PeerEvent, Refusal};

/// Everything that happens to the core.
#[derive(Debug)]
pub(crate) enum Input {
    /// `pk` is a friend under `friend` (loaded at start, accepted, or befriended by us).
    Friend {
        pk: PublicKey,
        friend: FriendNumber,
    },
    /// The friendship with `pk` ended (revoked by the operator, or a stranger dropped).
    Unfriended(PublicKey),
    Connection {
        pk: PublicKey,
        friend: FriendNumber,
        online: bool,
    },
    /// A lossless packet from a friend, still undecoded.
    Packet {
        friend: FriendNumber,
        from: PublicKey,
        data: Vec<u8>,
    },
    FileRecv {
        friend: FriendNumber,
        from: PublicKey,
        file: FileNumber,
        kind: u32,
        size: u64,
        id: MessageId,
    },
    FileChunk {
        key: FileKey,
        position: u64,
        data: Vec<u8>,
    },
    /// The sender cancelled a file coming to us.
    IncomingCancelled(FileKey),
    /// c-toxcore handed every byte of our file over (`aborted`: it stopped before the end).
    FileDone {
        key: FileKey,
        aborted: bool,
    },
    Deliver {
        to: PublicKey,
        id: MessageId,
        envelope: Arc<[u8]>,
        /// `Some(expires)`: deposit with the relay `to` instead of delivering to it.
        deposit_until: Option<u64>,
    },
    /// The caller of a delivery gave up on it (the mail expired, the bridge stops).
    Abandoned(OutKey),
    TrustRelay(PublicKey),
    /// Result of [`Action::Offer`].
    Offered {
        key: OutKey,
        outcome: OfferOutcome,
    },
    /// Result of [`Action::Accept`].
    Accepted {
        key: FileKey,
        outcome: AcceptOutcome,
    },
    /// A chunk of `key` could not be written to the spool.
    WriteFailed(FileKey),
    /// Result of [`Action::Check`].
    Checked {
        from: PublicKey,
        id: MessageId,
        already_stored: bool,
    },
    /// Result of [`Action::Store`] without a deposit.
    Stored {
        from: PublicKey,
        /// Who sealed the envelope: `from` itself, or someone else when `from` is a relay.
        origin: PublicKey,
        id: MessageId,
        result: Result<(), Refusal>,
    },
    /// Result of [`Action::CheckDeposit`].
    DepositChecked {
        from: PublicKey,
        id: MessageId,
        result: Result<Option<u64>, DepositRefusal>,
    },
    /// Result of [`Action::Store`] with a deposit.
    Deposited {
        from: PublicKey,
        id: MessageId,
        result: Result<u64, DepositRefusal>,
    },
    /// Time passed: timeouts are checked against `now`.
    Tick,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OfferOutcome {
    /// The offer frame could not be sent (packet queue full, friend gone): wait for a chance.
    FrameNotSent,
    Started(FileNumber),
    /// The frame went out, the file did not start.
    FileNotStarted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptOutcome {
    /// Accepted from `offset` (the bytes the spool already held).
    Accepted { offset: u64 },
    /// The spool file could not be opened.
    SpoolUnavailable,
    /// c-toxcore refused the accept (the transfer is gone).
    NotAccepted,
}

/// What the core asks its shell to do, in this order.
#[derive(Debug)]
pub(crate) enum Action {
    /// A frame to an online friend; a failure to send is ignored (timeouts cover it).
    Send {
        to: PublicKey,
        friend: FriendNumber,
        frame: Frame,
    },
    /// Sends the offer frame, then starts the file; answer with [`Input::Offered`].
    Offer {
        key: OutKey,
        friend: FriendNumber,
        frame: Frame,
        envelope: Arc<[u8]>,
    },
    /// Cancels a file (either direction) before any later `Offer` or `Accept` reaches the node.
    Cancel(FileKey),
    /// Opens the spool of (`from`, `id`), resumes from its length (from 0 when it is over `size`;
    /// from `size - 1` when it is `size`: c-toxcore seeks only before the end), accepts the
    /// file; answer with [`Input::Accepted`].
    Accept {
        key: FileKey,
        from: PublicKey,
        id: MessageId,
        size: u64,
    },
    /// Writes a chunk to the spool opened for `key` (`sync`: to disk, a checkpoint); answer
    /// only a failure ([`Input::WriteFailed`]).
    Write {
        key: FileKey,
        position: u64,
        data: Vec<u8>,
        sync: bool,
    },
    /// The transfer ended without a complete envelope: close its spool (the bytes stay there).
    Close(FileKey),
    /// Does the inbox hold (`from`, `id`) already? Answer with [`Input::Checked`].
    Check {
        from: PublicKey,
        id: MessageId,
    },
    /// May `from` deposit this? Answer with [`Input::DepositChecked`].
    CheckDeposit {
        from: PublicKey,
        deposit: Deposit,
    },
    /// The complete envelope of `key` is in the spool: close it, read it, check the header
    /// (`checks.rs`) and hand it to the inbox; answer with [`Input::Stored`] or
    /// [`Input::Deposited`].
    Store {
        key: FileKey,
        from: PublicKey,
        id: MessageId,
        resumed: bool,
        /// Our key when `from` is a relay we trust (the envelope may be sealed by others).
        relayed_to: Option<PublicKey>,
        deposit: Option<Deposit>,
    },
    /// Deletes the spool of (`from`, `id`).
    RemoveSpool {
        from: PublicKey,
        id: MessageId,
    },
    Emit(PeerEvent),
    /// The delivery `key` is over: stored (acked / custody), or refused.
    Complete {
        key: OutKey,
        result: Result<(), DeliveryError>,
    },
}
