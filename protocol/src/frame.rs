//! Wire frames exchanged between two toxmail nodes in Tox lossless custom packets:
//! `PACKET_ID | version | kind | body`, one frame per packet, big-endian, no trailing bytes.
//! Kinds 1–4 are the transfer frames below; kinds 16–31 are the relay frames of [`crate::relay`].

use crate::id::MessageId;
use crate::reader::{Reader, Short};
use crate::relay::{self, RelayFrame};

/// First byte of every toxmail lossless packet (Tox reserves 160..=191 for custom lossless use).
pub const PACKET_ID: u8 = 181;
pub const PROTOCOL_VERSION: u8 = 1;
/// The highest protocol level this node speaks, announced as `Hello::version_max` (`version_min`
/// is [`PROTOCOL_VERSION`]): level 1 is the base protocol, level 2 adds compressed envelopes
/// (envelope version 2), level 3 envelopes with an extension block (versions 3 and 4: SMTPUTF8,
/// body type). Frames are the same at every level and keep version byte 1.
pub const PROTOCOL_LEVEL: u8 = 3;
/// Tox's `TOX_MAX_CUSTOM_PACKET_SIZE`, the packet id byte included.
pub const MAX_FRAME_SIZE: usize = 1373;
/// Longest `Nack::detail` (and `Refuse::detail`), in bytes; longer text is cut at a character
/// boundary when encoding.
pub const MAX_NACK_DETAIL: usize = 256;

const KIND_HELLO: u8 = 1;
const KIND_OFFER: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_NACK: u8 = 4;

const CLASS_TEMPORARY: u8 = 4;
const CLASS_PERMANENT: u8 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Offer(Offer),
    Ack(MessageId),
    Nack(Nack),
    /// Store-and-forward frames between bridges and relay nodes (kinds 16–31).
    Relay(RelayFrame),
}

/// Sent first by each side of a connection: the protocol versions it speaks and the largest
/// envelope it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version_min: u8,
    pub version_max: u8,
    pub max_envelope: u64,
}

/// Announces an envelope of `size` bytes that the sender is about to transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub message_id: MessageId,
    pub size: u64,
}

/// Refuses a message, with a class that tells the sender whether to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    pub message_id: MessageId,
    pub class: NackClass,
    pub code: NackCode,
    /// Human-readable detail for the sender's logs and DSN; at most [`MAX_NACK_DETAIL`] bytes
    /// on the wire.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackClass {
    /// Retry later (like an SMTP 4xx).
    Temporary,
    /// Do not retry; bounce (like an SMTP 5xx).
    Permanent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackCode {
    TooLarge,
    Malformed,
    Forged,
    WrongRecipient,
    UnknownMailbox,
    StorageFailure,
    Busy,
    UnsupportedVersion,
    /// A code this build does not name; `from_u16` never wraps a number listed above in it.
    Other(u16),
}

/// Wire numbers of the named codes; the table `as_u16` and `from_u16` both read.
const NACK_CODES: [(NackCode, u16); 8] = [
    (NackCode::TooLarge, 1),
    (NackCode::Malformed, 2),
    (NackCode::Forged, 3),
    (NackCode::WrongRecipient, 4),
    (NackCode::UnknownMailbox, 5),
    (NackCode::StorageFailure, 6),
    (NackCode::Busy, 7),
    (NackCode::UnsupportedVersion, 8),
];

impl NackCode {
    /// The class a receiver uses for this code unless it knows better.
    pub fn default_class(self) -> NackClass {
        match self {
            NackCode::StorageFailure | NackCode::Busy | NackCode::Other(_) => NackClass::Temporary,
            NackCode::TooLarge
            | NackCode::Malformed
            | NackCode::Forged
            | NackCode::WrongRecipient
            | NackCode::UnknownMailbox
            | NackCode::UnsupportedVersion => NackClass::Permanent,
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            NackCode::Other(n) => n,
            named => NACK_CODES
                .iter()
                .find(|(code, _)| *code == named)
                .map_or(0, |&(_, n)| n),
        }
    }

    pub fn from_u16(n: u16) -> Self {
        NACK_CODES
            .iter()
            .find(|&&(_, wire)| wire == n)
            .map_or(NackCode::Other(n), |&(code, _)| code)
    }
}

/// Why a packet is not a valid toxmail frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty packet")]
    Empty,
    #[error("packet id {0} is not the toxmail packet id 181")]
    WrongPacketId(u8),
    #[error("unsupported frame version {0} (this node speaks version 1)")]
    UnsupportedVersion(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame is truncated")]
    Truncated,
    #[error("frame has bytes after its body")]
    TrailingBytes,
    #[error("frame, detail or relay list exceeds its size limit")]
    TooLong,
    #[error("Nack or Refuse detail is not valid UTF-8")]
    BadUtf8,
    #[error("invalid {0}")]
    BadValue(&'static str),
}

impl From<Short> for FrameError {
    fn from(_: Short) -> Self {
        FrameError::Truncated
    }
}

impl Frame {
    /// The packet bytes, starting with [`PACKET_ID`]; at most 308 bytes (a full `RelayList`),
    /// well under [`MAX_FRAME_SIZE`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[PACKET_ID, PROTOCOL_VERSION, self.kind()]);
        match self {
            Frame::Hello(hello) => {
                out.extend_from_slice(&[hello.version_min, hello.version_max]);
                out.extend_from_slice(&hello.max_envelope.to_be_bytes());
            }
            Frame::Offer(offer) => {
                out.extend_from_slice(&offer.message_id.0);
                out.extend_from_slice(&offer.size.to_be_bytes());
            }
            Frame::Ack(message_id) => out.extend_from_slice(&message_id.0),
            Frame::Nack(nack) => {
                out.extend_from_slice(&nack.message_id.0);
                push_class(&mut out, nack.class);
                out.extend_from_slice(&nack.code.as_u16().to_be_bytes());
                push_detail(&mut out, &nack.detail);
            }
            Frame::Relay(frame) => frame.encode_body(&mut out),
        }
        out
    }

    /// Parses one packet. Checks the size limit first, then each field against what remains.
    pub fn decode(packet: &[u8]) -> Result<Frame, FrameError> {
        if packet.len() > MAX_FRAME_SIZE {
            return Err(FrameError::TooLong);
        }
        let mut r = Reader::new(packet);
        let packet_id = r.u8().map_err(|_| FrameError::Empty)?;
        if packet_id != PACKET_ID {
            return Err(FrameError::WrongPacketId(packet_id));
        }
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let frame = match r.u8()? {
            KIND_HELLO => Frame::Hello(decode_hello(&mut r)?),
            KIND_OFFER => Frame::Offer(Offer {
                message_id: MessageId(r.array()?),
                size: r.u64()?,
            }),
            KIND_ACK => Frame::Ack(MessageId(r.array()?)),
            KIND_NACK => Frame::Nack(decode_nack(&mut r)?),
            kind if relay::KINDS.contains(&kind) => {
                Frame::Relay(RelayFrame::decode_body(kind, &mut r)?)
            }
            kind => return Err(FrameError::UnknownKind(kind)),
        };
        if r.remaining() != 0 {
            return Err(FrameError::TrailingBytes);
        }
        Ok(frame)
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => KIND_HELLO,
            Frame::Offer(_) => KIND_OFFER,
            Frame::Ack(_) => KIND_ACK,
            Frame::Nack(_) => KIND_NACK,
            Frame::Relay(frame) => frame.kind(),
        }
    }
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Hello, FrameError> {
    let hello = Hello {
        version_min: r.u8()?,
        version_max: r.u8()?,
        max_envelope: r.u64()?,
    };
    if hello.version_min == 0 || hello.version_min > hello.version_max {
        return Err(FrameError::BadValue("Hello version range"));
    }
    Ok(hello)
}

fn decode_nack(r: &mut Reader<'_>) -> Result<Nack, FrameError> {
    Ok(Nack {
        message_id: MessageId(r.array()?),
        class: read_class(r, "Nack class")?,
        code: NackCode::from_u16(r.u16()?),
        detail: read_detail(r)?,
    })
}

/// The class byte shared by `Nack` and `Refuse`: 4 temporary, 5 permanent.
pub(crate) fn push_class(out: &mut Vec<u8>, class: NackClass) {
    out.push(match class {
        NackClass::Temporary => CLASS_TEMPORARY,
        NackClass::Permanent => CLASS_PERMANENT,
    });
}

pub(crate) fn read_class(r: &mut Reader<'_>, what: &'static str) -> Result<NackClass, FrameError> {
    match r.u8()? {
        CLASS_TEMPORARY => Ok(NackClass::Temporary),
        CLASS_PERMANENT => Ok(NackClass::Permanent),
        _ => Err(FrameError::BadValue(what)),
    }
}

/// A u16 length and at most [`MAX_NACK_DETAIL`] bytes of UTF-8, cut at a character boundary.
pub(crate) fn push_detail(out: &mut Vec<u8>, detail: &str) {
    let detail = &detail[..detail.floor_char_boundary(MAX_NACK_DETAIL)];
    let len = u16::try_from(detail.len()).unwrap_or(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(detail.as_bytes());
}

/// Checks the declared length against the limit before reading, so nothing over 256 bytes is
/// ever allocated.
pub(crate) fn read_detail(r: &mut Reader<'_>) -> Result<String, FrameError> {
    let len = usize::from(r.u16()?);
    if len > MAX_NACK_DETAIL {
        return Err(FrameError::TooLong);
    }
    let detail = std::str::from_utf8(r.take(len)?).map_err(|_| FrameError::BadUtf8)?;
    Ok(detail.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_code_numbers_round_trip_and_unknown_numbers_are_other() {
        for (code, n) in NACK_CODES {
            assert_eq!(code.as_u16(), n);
            assert_eq!(NackCode::from_u16(n), code);
        }
        for n in [0, 9, 1000, u16::MAX] {
            assert_eq!(NackCode::from_u16(n), NackCode::Other(n));
            assert_eq!(NackCode::Other(n).as_u16(), n);
        }
        // A named number wrapped in Other is normalised by the wire.
        assert_eq!(
            NackCode::from_u16(NackCode::Other(5).as_u16()),
            NackCode::UnknownMailbox
        );
    }

    #[test]
    fn nack_code_default_classes() {
        use NackClass::{Permanent, Temporary};
        let table = [
            (NackCode::TooLarge, Permanent),
            (NackCode::Malformed, Permanent),
            (NackCode::Forged, Permanent),
            (NackCode::WrongRecipient, Permanent),
            (NackCode::UnknownMailbox, Permanent),
            (NackCode::StorageFailure, Temporary),
            (NackCode::Busy, Temporary),
            (NackCode::UnsupportedVersion, Permanent),
            (NackCode::Other(999), Temporary),
        ];
        for (code, class) in table {
            assert_eq!(code.default_class(), class, "{code:?}");
        }
    }

    #[test]
    fn nack_detail_is_cut_at_a_char_boundary() {
        // 255 ASCII bytes then a 2-byte character: the character would end at byte 257.
        let detail = format!("{}é", "x".repeat(255));
        let nack = Frame::Nack(Nack {
            message_id: MessageId([1; 32]),
            class: NackClass::Temporary,
            code: NackCode::Busy,
            detail,
        });
        let Ok(Frame::Nack(decoded)) = Frame::decode(&nack.encode()) else {
            panic!("Nack did not decode");
        };
        assert_eq!(decoded.detail, "x".repeat(255));
    }
}
