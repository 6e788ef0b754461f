//! Reliable transfer of sealed envelopes between friends, written once for the bridge and the relay.
//!
//! Sender: `Offer{id,size}` as a lossless packet, then the envelope as a Tox file whose file id is
//! the message id; then it waits for `Ack` ("stored") or `Nack`. When the friend goes offline (or
//! either side restarts) the offer is repeated on reconnection with the same file id, and the
//! receiver resumes from the bytes it already has in its spool.
//! Receiver: checks the offer, writes chunks to `<spool>/<sender>-<id>.part`, checks the envelope
//! header against the offer and the friend's key, hands the envelope to the [`Inbox`], and acks only
//! after the inbox returned success. Message ids already stored are acked again, never stored twice.
//! Relay roles (`relay.rs`): a sender deposits an envelope with a relay (`Deposit` instead of
//! `Offer`, `Custody`/`Refuse` instead of `Ack`/`Nack`); a relay hands it on with an ordinary
//! offer; a recipient accepts envelopes sealed by others only from relays it trusts.

mod core;
mod courier;
mod engine;
mod friends;
mod lanes;
mod policy;
mod receive;
mod spool;
mod strangers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use toxmail_protocol::{
    Deposit, MessageId, Nack, NackClass, NackCode, PublicKey, Refuse, RelayFrame, RelayRefusal,
    ToxId,
};

use crate::error::RuntimeError;

pub(crate) use courier::{Command, PeerLevels};
pub use courier::{Courier, CourierTask};
pub use lanes::MAX_IN_FLIGHT_PER_PEER;
pub use policy::FriendPolicy;
pub use strangers::StrangerLimits;

/// What the receiving side does with a complete envelope. `store` must have committed the envelope
/// durably when it returns `Ok`: the sender is told "stored" right after.
pub trait Inbox: Send + Sync + 'static {
    /// True if this message id from this sender is already stored (a duplicate is acked again).
    fn contains(&self, from: PublicKey, id: MessageId) -> impl Future<Output = bool> + Send;
    /// Stores one complete envelope from a friend whose key the engine has checked against the
    /// envelope header. The inbox opens or keeps it as its role requires.
    fn store(
        &self,
        from: PublicKey,
        id: MessageId,
        envelope: Vec<u8>,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// Relay role: may `from` deposit this envelope? `Ok(Some(expires))` when it is already held
    /// (custody is confirmed again), `Ok(None)` to take the transfer. A node that is no relay
    /// refuses, which is the default.
    fn check_deposit(
        &self,
        from: PublicKey,
        deposit: Deposit,
    ) -> impl Future<Output = Result<Option<u64>, DepositRefusal>> + Send {
        let _ = (from, deposit);
        async { Err(DepositRefusal::not_a_relay()) }
    }

    /// Relay role: stores a deposited envelope (header checked by the engine) durably and returns
    /// until when it is held; custody is confirmed to the depositor right after.
    fn store_deposit(
        &self,
        from: PublicKey,
        deposit: Deposit,
        envelope: Vec<u8>,
    ) -> impl Future<Output = Result<u64, DepositRefusal>> + Send {
        let _ = (from, deposit, envelope);
        async { Err(DepositRefusal::not_a_relay()) }
    }
}

/// Why a relay will not hold a deposit; sent to the depositor as a `Refuse` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRefusal {
    pub class: NackClass,
    pub code: RelayRefusal,
    pub detail: String,
}

impl DepositRefusal {
    pub fn new(code: RelayRefusal, detail: impl Into<String>) -> Self {
        DepositRefusal {
            class: code.default_class(),
            code,
            detail: detail.into(),
        }
    }

    fn not_a_relay() -> Self {
        DepositRefusal::new(RelayRefusal::NotAllowed, "this node is not a relay")
    }

    pub(crate) fn into_frame(self, message_id: MessageId) -> toxmail_protocol::Frame {
        toxmail_protocol::Frame::Relay(RelayFrame::Refuse(Refuse {
            message_id,
            class: self.class,
            code: self.code,
            detail: self.detail,
        }))
    }
}

/// What the engine tells its subscribers (see [`Courier::subscribe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A friend is online and has said hello.
    Online(PublicKey),
    Offline(PublicKey),
    /// A relay frame the engine does not answer itself (`Register`, `Holding`, `Released`,
    /// `RelayList`, and a `Refuse` of a registration).
    Relay {
        from: PublicKey,
        frame: RelayFrame,
    },
    /// An envelope sealed by `origin` arrived through the relay `via` and was stored.
    Relayed {
        origin: PublicKey,
        via: PublicKey,
        id: MessageId,
    },
    /// `from` acknowledged a message this engine is not delivering to it: the recipient's
    /// end-to-end receipt for a message handed to a relay.
    Receipt {
        from: PublicKey,
        id: MessageId,
    },
}

/// Why an inbox refused an envelope; sent to the sender as a `Nack`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub class: NackClass,
    pub code: NackCode,
    pub detail: String,
}

impl Refusal {
    pub fn new(code: NackCode, detail: impl Into<String>) -> Self {
        Refusal {
            class: code.default_class(),
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn into_nack(self, message_id: MessageId) -> Nack {
        Nack {
            message_id,
            class: self.class,
            code: self.code,
            detail: self.detail,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TransferConfig {
    /// Largest envelope this node accepts (announced in `Hello`).
    pub max_envelope: u64,
    /// Directory for partially received envelopes (kept across restarts for resumption).
    pub spool_dir: PathBuf,
    pub friend_policy: FriendPolicy,
    /// Text after "toxmail/1" in our friend requests.
    pub request_note: String,
    /// Re-offer when neither ack nor nack arrived this long after the last byte was sent.
    pub ack_timeout: Duration,
    /// Relays whose envelopes may be sealed by someone else (then they must be sealed to us).
    pub trusted_relays: std::collections::HashSet<PublicKey>,
    /// Bounds on friends accepted from strangers (see `strangers.rs`).
    pub strangers: StrangerLimits,
    /// Partial envelopes older than this are deleted (at start and periodically)...
    pub spool_max_age: Duration,
    /// ...and the oldest ones while the spool holds more than this many bytes.
    pub spool_max_bytes: u64,
    /// Bytes one peer may have offered and in transfer to us at once (never less than one
    /// `max_envelope`); further offers are refused for now (`Busy`).
    pub max_peer_bytes: u64,
    /// A friend we have mail for that stayed offline this long, with no friend request from us
    /// in that time, is asked again (deleted and added with a new request): it may have ended
    /// the friendship (contact removed, blocked, its friend list lost), which looks exactly like
    /// being offline. A peer that still has us takes the request as coming online.
    pub refriend_after: Duration,
}

impl TransferConfig {
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        TransferConfig {
            max_envelope: toxmail_protocol::MAX_ENVELOPE_SIZE as u64,
            spool_dir: spool_dir.into(),
            friend_policy: FriendPolicy::AnyoneWithAddress,
            request_note: String::new(),
            // Storing takes a database commit at the receiver: far less than this.
            ack_timeout: Duration::from_secs(30),
            trusted_relays: Default::default(),
            strangers: StrangerLimits::default(),
            // A sender retries for days; a break-off resumes from the spool within that time.
            spool_max_age: Duration::from_secs(2 * 86_400),
            spool_max_bytes: 4 * 1024 * 1024 * 1024,
            max_peer_bytes: 256 * 1024 * 1024,
            refriend_after: Duration::from_secs(900),
        }
    }
}

/// Where a delivery goes: a full address (first contact sends a friend request) or a friend's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Address(ToxId),
    Friend(PublicKey),
}

impl Destination {
    pub fn public_key(&self) -> PublicKey {
        match self {
            Destination::Address(id) => id.public_key(),
            Destination::Friend(pk) => *pk,
        }
    }
}

impl From<ToxId> for Destination {
    fn from(id: ToxId) -> Self {
        Destination::Address(id)
    }
}

impl From<PublicKey> for Destination {
    fn from(pk: PublicKey) -> Self {
        Destination::Friend(pk)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the peer refused the envelope ({class:?} {code:?}): {detail}", class = .0.class, code = .0.code, detail = .0.detail)]
    Refused(Nack),
    #[error("the relay refused the deposit ({class:?} {code:?}): {detail}", class = .0.class, code = .0.code, detail = .0.detail)]
    RelayRefused(Refuse),
    #[error("envelope of {size} bytes exceeds the peer's limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("{0} is not a friend and no full Tox ID was given")]
    UnknownFriend(PublicKey),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the transfer engine has stopped")]
    Stopped,
}

impl DeliveryError {
    /// Worth retrying later (as opposed to bouncing).
    pub fn is_temporary(&self) -> bool {
        match self {
            DeliveryError::Refused(n) => n.class == NackClass::Temporary,
            DeliveryError::RelayRefused(r) => r.class == NackClass::Temporary,
            DeliveryError::TooLarge { .. } | DeliveryError::UnknownFriend(_) => false,
            DeliveryError::Runtime(_) | DeliveryError::Stopped => true,
        }
    }
}

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct TransferStats {
    pub frames_rejected: AtomicU64,
    pub offers_refused: AtomicU64,
    pub envelopes_stored: AtomicU64,
    pub duplicates_acked: AtomicU64,
    pub files_cancelled: AtomicU64,
    /// Friend requests taken (the friendship now exists).
    pub friend_requests_accepted: AtomicU64,
    pub friend_requests_ignored: AtomicU64,
    /// Strangers' friend requests not taken because a bound bit (pending cap or rate).
    pub friend_requests_bounded: AtomicU64,
    /// Strangers unfriended because they delivered nothing valid within the grace period.
    pub strangers_dropped: AtomicU64,
    /// Partial envelopes the spool sweeper deleted.
    pub spool_files_swept: AtomicU64,
    /// Friend requests sent again to friends we have mail for that stayed offline
    /// ([`TransferConfig::refriend_after`]).
    pub friend_requests_resent: AtomicU64,
}

impl TransferStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Refusal {
    /// The refusal an inbox sends when an envelope does not open: forgeries and tampering are
    /// permanent (re-sending the same bytes cannot help).
    pub fn for_open_error(e: &toxmail_protocol::OpenError) -> Self {
        Refusal {
            class: NackClass::Permanent,
            code: e.nack_code(),
            detail: e.to_string(),
        }
    }
}
