//! Relay frames: a sender deposits an envelope with a relay node for an offline recipient, the
//! relay takes custody or refuses, a recipient registers to have its mail held, and a bridge
//! tells its contacts which relays hold its mail. They travel as [`Frame::Relay`] in the packets
//! of `frame.rs` (same id, version byte and rules), with kinds in [`KINDS`].
//!
//! [`Frame::Relay`]: crate::Frame::Relay

use std::ops::RangeInclusive;

use crate::frame::{FrameError, NackClass, push_class, push_detail, read_class, read_detail};
use crate::id::{MessageId, PublicKey, TOX_ID_SIZE, ToxId};
use crate::reader::Reader;

/// Kind bytes reserved for relay frames; those not assigned below decode as `UnknownKind`.
pub const KINDS: RangeInclusive<u8> = 16..=31;
/// Most relays one `RelayList` names; the encoder keeps the first ones.
pub const MAX_RELAYS: usize = 8;
/// The message id a `Refuse` carries when it answers a `Register` rather than a `Deposit`.
/// A `Deposit` may not use it (`BadValue`), so the two never mix.
pub const REGISTER_SUBJECT: MessageId = MessageId([0; 32]);

const KIND_DEPOSIT: u8 = 16;
const KIND_CUSTODY: u8 = 17;
const KIND_REFUSE: u8 = 18;
const KIND_REGISTER: u8 = 19;
const KIND_HOLDING: u8 = 20;
const KIND_RELEASED: u8 = 21;
const KIND_RELAY_LIST: u8 = 22;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayFrame {
    Deposit(Deposit),
    Custody(Custody),
    Refuse(Refuse),
    Register(Register),
    Holding(Holding),
    Released(Released),
    RelayList(RelayList),
}

/// Sender → relay: please hold the envelope that follows as a Tox file transfer (file id =
/// `message_id`, exactly `size` bytes), sealed to `recipient`, until `expires` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    pub message_id: MessageId,
    pub recipient: PublicKey,
    pub size: u64,
    pub expires: u64,
}

/// Relay → sender: the envelope is durably stored and will be held until `expires`, which is
/// never later than the deposit asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Custody {
    pub message_id: MessageId,
    pub expires: u64,
}

/// Relay → sender: this relay will not hold the message (or, with [`REGISTER_SUBJECT`], will not
/// take the registration). The class says whether asking this relay again later can help; it is
/// never a bounce by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refuse {
    pub message_id: MessageId,
    pub class: NackClass,
    pub code: RelayRefusal,
    /// At most [`MAX_NACK_DETAIL`](crate::MAX_NACK_DETAIL) bytes on the wire.
    pub detail: String,
}

/// Recipient → relay: hold mail sealed to my public key (the friend's key) until `expires`.
/// An `expires` in the past ends the registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub expires: u64,
}

/// Relay → registered recipient: the registration runs until `expires`, and `count` envelopes
/// totalling `bytes` are waiting. Sent in answer to `Register` and whenever the holdings change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    pub expires: u64,
    pub count: u32,
    pub bytes: u64,
}

/// Relay → original sender: the relay no longer holds the message, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub message_id: MessageId,
    pub outcome: ReleaseOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The recipient acked it.
    Delivered,
    /// It reached its expiry undelivered and was deleted.
    Expired,
    /// The recipient refused it with a permanent `Nack`.
    Rejected,
}

/// Bridge → its contacts: the relays that hold mail for this bridge, best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayList {
    pub relays: Vec<ToxId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayRefusal {
    /// The relay holds as many messages as it will, overall or for this sender.
    QuotaCount,
    /// The relay holds as many bytes as it will, overall or for this sender.
    QuotaBytes,
    /// Larger than this relay holds.
    TooLarge,
    /// The recipient's mailbox on this relay is full.
    RecipientFull,
    /// This relay does not hold mail for this sender or recipient.
    NotAllowed,
    /// The requested expiry is later than this relay holds mail.
    ExpiryTooLong,
    /// The transferred envelope does not match the deposit (id, recipient, sender or size) or
    /// its header is unreadable.
    Malformed,
    /// The relay could not store it now.
    StorageFailure,
    /// A code this build does not name; `from_u16` never wraps a number listed above in it.
    Other(u16),
}

/// Wire numbers of the named refusals; the table `as_u16` and `from_u16` both read.
const REFUSALS: [(RelayRefusal, u16); 8] = [
    (RelayRefusal::QuotaCount, 1),
    (RelayRefusal::QuotaBytes, 2),
    (RelayRefusal::TooLarge, 3),
    (RelayRefusal::RecipientFull, 4),
    (RelayRefusal::NotAllowed, 5),
    (RelayRefusal::ExpiryTooLong, 6),
    (RelayRefusal::Malformed, 7),
    (RelayRefusal::StorageFailure, 8),
];

impl RelayRefusal {
    /// The class a relay uses for this code unless it knows better.
    pub fn default_class(self) -> NackClass {
        match self {
            RelayRefusal::QuotaCount
            | RelayRefusal::QuotaBytes
            | RelayRefusal::RecipientFull
            | RelayRefusal::StorageFailure
            | RelayRefusal::Other(_) => NackClass::Temporary,
            RelayRefusal::TooLarge
            | RelayRefusal::NotAllowed
            | RelayRefusal::ExpiryTooLong
            | RelayRefusal::Malformed => NackClass::Permanent,
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            RelayRefusal::Other(n) => n,
            named => REFUSALS
                .iter()
                .find(|(code, _)| *code == named)
                .map_or(0, |&(_, n)| n),
        }
    }

    pub fn from_u16(n: u16) -> Self {
        REFUSALS
            .iter()
            .find(|&&(_, wire)| wire == n)
            .map_or(RelayRefusal::Other(n), |&(code, _)| code)
    }
}

impl ReleaseOutcome {
    fn as_u8(self) -> u8 {
        match self {
            ReleaseOutcome::Delivered => 1,
            ReleaseOutcome::Expired => 2,
            ReleaseOutcome::Rejected => 3,
        }
    }

    fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(ReleaseOutcome::Delivered),
            2 => Some(ReleaseOutcome::Expired),
            3 => Some(ReleaseOutcome::Rejected),
            _ => None,
        }
    }
}

impl RelayFrame {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            RelayFrame::Deposit(_) => KIND_DEPOSIT,
            RelayFrame::Custody(_) => KIND_CUSTODY,
            RelayFrame::Refuse(_) => KIND_REFUSE,
            RelayFrame::Register(_) => KIND_REGISTER,
            RelayFrame::Holding(_) => KIND_HOLDING,
            RelayFrame::Released(_) => KIND_RELEASED,
            RelayFrame::RelayList(_) => KIND_RELAY_LIST,
        }
    }

    /// Appends the body (everything after the kind byte).
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            RelayFrame::Deposit(d) => {
                out.extend_from_slice(&d.message_id.0);
                out.extend_from_slice(&d.recipient.0);
                out.extend_from_slice(&d.size.to_be_bytes());
                out.extend_from_slice(&d.expires.to_be_bytes());
            }
            RelayFrame::Custody(c) => {
                out.extend_from_slice(&c.message_id.0);
                out.extend_from_slice(&c.expires.to_be_bytes());
            }
            RelayFrame::Refuse(refuse) => {
                out.extend_from_slice(&refuse.message_id.0);
                push_class(out, refuse.class);
                out.extend_from_slice(&refuse.code.as_u16().to_be_bytes());
                push_detail(out, &refuse.detail);
            }
            RelayFrame::Register(reg) => out.extend_from_slice(&reg.expires.to_be_bytes()),
            RelayFrame::Holding(h) => {
                out.extend_from_slice(&h.expires.to_be_bytes());
                out.extend_from_slice(&h.count.to_be_bytes());
                out.extend_from_slice(&h.bytes.to_be_bytes());
            }
            RelayFrame::Released(rel) => {
                out.extend_from_slice(&rel.message_id.0);
                out.push(rel.outcome.as_u8());
            }
            RelayFrame::RelayList(list) => {
                let relays = &list.relays[..list.relays.len().min(MAX_RELAYS)];
                out.push(u8::try_from(relays.len()).unwrap_or(0));
                for relay in relays {
                    out.extend_from_slice(relay.as_bytes());
                }
            }
        }
    }

    /// Parses the body of a frame whose kind is in [`KINDS`]; the caller checks trailing bytes.
    pub(crate) fn decode_body(kind: u8, r: &mut Reader<'_>) -> Result<RelayFrame, FrameError> {
        Ok(match kind {
            KIND_DEPOSIT => RelayFrame::Deposit(decode_deposit(r)?),
            KIND_CUSTODY => RelayFrame::Custody(Custody {
                message_id: MessageId(r.array()?),
                expires: r.u64()?,
            }),
            KIND_REFUSE => RelayFrame::Refuse(Refuse {
                message_id: MessageId(r.array()?),
                class: read_class(r, "Refuse class")?,
                code: RelayRefusal::from_u16(r.u16()?),
                detail: read_detail(r)?,
            }),
            KIND_REGISTER => RelayFrame::Register(Register { expires: r.u64()? }),
            KIND_HOLDING => RelayFrame::Holding(Holding {
                expires: r.u64()?,
                count: r.u32()?,
                bytes: r.u64()?,
            }),
            KIND_RELEASED => RelayFrame::Released(Released {
                message_id: MessageId(r.array()?),
                outcome: ReleaseOutcome::from_u8(r.u8()?)
                    .ok_or(FrameError::BadValue("Released outcome"))?,
            }),
            KIND_RELAY_LIST => RelayFrame::RelayList(decode_relay_list(r)?),
            _ => return Err(FrameError::UnknownKind(kind)),
        })
    }
}

fn decode_deposit(r: &mut Reader<'_>) -> Result<Deposit, FrameError> {
    let deposit = Deposit {
        message_id: MessageId(r.array()?),
        recipient: PublicKey(r.array()?),
        size: r.u64()?,
        expires: r.u64()?,
    };
    if deposit.message_id == REGISTER_SUBJECT {
        return Err(FrameError::BadValue("Deposit message id"));
    }
    Ok(deposit)
}

/// Checks the count against [`MAX_RELAYS`] before reading any id, so at most 8 are allocated.
fn decode_relay_list(r: &mut Reader<'_>) -> Result<RelayList, FrameError> {
    let count = usize::from(r.u8()?);
    if count > MAX_RELAYS {
        return Err(FrameError::TooLong);
    }
    let mut relays = Vec::with_capacity(count);
    for _ in 0..count {
        let bytes: [u8; TOX_ID_SIZE] = r.array()?;
        let id = ToxId::from_bytes(&bytes).map_err(|_| FrameError::BadValue("RelayList Tox ID"))?;
        relays.push(id);
    }
    Ok(RelayList { relays })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_numbers_round_trip_and_unknown_numbers_are_other() {
        for (code, n) in REFUSALS {
            assert_eq!(code.as_u16(), n);
            assert_eq!(RelayRefusal::from_u16(n), code);
        }
        for n in [0, 9, 1000, u16::MAX] {
            assert_eq!(RelayRefusal::from_u16(n), RelayRefusal::Other(n));
            assert_eq!(RelayRefusal::Other(n).as_u16(), n);
        }
    }

    #[test]
    fn refusal_default_classes() {
        use NackClass::{Permanent, Temporary};
        let table = [
            (RelayRefusal::QuotaCount, Temporary),
            (RelayRefusal::QuotaBytes, Temporary),
            (RelayRefusal::TooLarge, Permanent),
            (RelayRefusal::RecipientFull, Temporary),
            (RelayRefusal::NotAllowed, Permanent),
            (RelayRefusal::ExpiryTooLong, Permanent),
            (RelayRefusal::Malformed, Permanent),
            (RelayRefusal::StorageFailure, Temporary),
            (RelayRefusal::Other(999), Temporary),
        ];
        for (code, class) in table {
            assert_eq!(code.default_class(), class, "{code:?}");
        }
    }

    #[test]
    fn release_outcomes_round_trip_and_others_are_none() {
        for outcome in [
            ReleaseOutcome::Delivered,
            ReleaseOutcome::Expired,
            ReleaseOutcome::Rejected,
        ] {
            assert_eq!(ReleaseOutcome::from_u8(outcome.as_u8()), Some(outcome));
        }
        for n in [0, 4, 255] {
            assert_eq!(ReleaseOutcome::from_u8(n), None);
        }
    }

    #[test]
    fn assigned_kinds_are_inside_the_relay_range_and_clear_of_transfer_kinds() {
        let kinds = [
            KIND_DEPOSIT,
            KIND_CUSTODY,
            KIND_REFUSE,
            KIND_REGISTER,
            KIND_HOLDING,
            KIND_RELEASED,
            KIND_RELAY_LIST,
        ];
        for kind in kinds {
            assert!(KINDS.contains(&kind) && kind > 4, "{kind}");
        }
    }
}
