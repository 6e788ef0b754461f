//! Byte layout of the envelope: the 128-byte cleartext header and the plaintext inner block
//! (header copy, metadata, message, zero padding). Big-endian throughout; see docs/protocol.md.

use super::{
    ENVELOPE_VERSION, ENVELOPE_VERSION_EXTENDED_COMPRESSED, MAX_ENVELOPE_SIZE, padded_len,
};
use super::{ENVELOPE_VERSION_COMPRESSED, ENVELOPE_VERSION_EXTENDED};
use super::{EnvelopeHeader, Extensions, Letter, Metadata, OpenError, SealError};
use crate::id::{MessageId, PublicKey};
use crate::reader::Reader;

pub const MAGIC: [u8; 4] = *b"TXM1";
pub const NONCE_SIZE: usize = 24;
/// Magic 4 | version 1 | reserved 1 | reserved 2 | message id 32 | sender 32 | recipient 32.
pub const HEADER_COPY_SIZE: usize = 104;
/// The header copy followed by the nonce.
pub const HEADER_SIZE: usize = HEADER_COPY_SIZE + NONCE_SIZE;
/// Poly1305 tag, stored right after the header (NaCl `crypto_box_easy` order: tag, ciphertext).
pub const TAG_SIZE: usize = 16;
/// Longest metadata string, in bytes.
pub const MAX_FIELD_LEN: usize = 1024;

/// Fixed part of the inner block: header copy, three u16 string lengths, two u64 times and the
/// u32 message length.
const INNER_FIXED_SIZE: usize = HEADER_COPY_SIZE + 3 * 2 + 2 * 8 + 4;

const MESSAGE_ID_AT: usize = 8;
const SENDER_AT: usize = MESSAGE_ID_AT + 32;
const RECIPIENT_AT: usize = SENDER_AT + 32;

pub fn write_header(out: &mut Vec<u8>, header: &EnvelopeHeader, nonce: &[u8; NONCE_SIZE]) {
    out.extend_from_slice(&header_copy(header));
    out.extend_from_slice(nonce);
}

fn header_copy(header: &EnvelopeHeader) -> [u8; HEADER_COPY_SIZE] {
    let mut copy = [0u8; HEADER_COPY_SIZE];
    copy[..4].copy_from_slice(&MAGIC);
    copy[4] = header.version;
    // Bytes 5..8 are reserved and stay zero.
    copy[MESSAGE_ID_AT..SENDER_AT].copy_from_slice(&header.message_id.0);
    copy[SENDER_AT..RECIPIENT_AT].copy_from_slice(&header.sender.0);
    copy[RECIPIENT_AT..].copy_from_slice(&header.recipient.0);
    copy
}

pub fn parse_header(head: &[u8; HEADER_SIZE]) -> Result<EnvelopeHeader, OpenError> {
    let mut r = Reader::new(head);
    let short = |_| OpenError::TooShort; // unreachable: `head` has exactly HEADER_SIZE bytes
    if r.array::<4>().map_err(short)? != MAGIC {
        return Err(OpenError::BadMagic);
    }
    let version = r.u8().map_err(short)?;
    if !(ENVELOPE_VERSION..=ENVELOPE_VERSION_EXTENDED_COMPRESSED).contains(&version) {
        return Err(OpenError::UnsupportedVersion(version));
    }
    if r.array::<3>().map_err(short)? != [0; 3] {
        return Err(OpenError::Malformed("reserved header bytes are not zero"));
    }
    Ok(EnvelopeHeader {
        version,
        message_id: MessageId(r.array().map_err(short)?),
        sender: PublicKey(r.array().map_err(short)?),
        recipient: PublicKey(r.array().map_err(short)?),
    })
}

/// The message as it goes into the inner block: as is (versions 1 and 3), or DEFLATE-compressed
/// with its original length in front (versions 2 and 4).
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    Plain(&'a [u8]),
    Compressed { original_len: usize, data: &'a [u8] },
}

impl Body<'_> {
    fn stored_len(&self) -> usize {
        match self {
            Body::Plain(m) => m.len(),
            Body::Compressed { data, .. } => 4 + data.len(),
        }
    }
}

/// Whether envelopes of this version carry the extension block.
fn extended(version: u8) -> bool {
    version == ENVELOPE_VERSION_EXTENDED || version == ENVELOPE_VERSION_EXTENDED_COMPRESSED
}

/// Whether envelopes of this version carry a compressed message.
fn compressed(version: u8) -> bool {
    version == ENVELOPE_VERSION_COMPRESSED || version == ENVELOPE_VERSION_EXTENDED_COMPRESSED
}

/// Length of the unpadded inner block, after checking every metadata field's length. The
/// extension block counts when the letter has one (versions 3 and 4).
pub fn inner_len(letter: &Letter, body: Body<'_>) -> Result<usize, SealError> {
    let m = &letter.metadata;
    let mut len = INNER_FIXED_SIZE;
    if !m.extensions.is_default() {
        len += m.extensions.encoded_len();
    }
    for (name, value) in [
        ("envelope_sender", &m.envelope_sender),
        ("recipient", &m.recipient),
        ("queue_id", &m.queue_id),
    ] {
        if value.len() > MAX_FIELD_LEN {
            return Err(SealError::FieldTooLong(name));
        }
        len += value.len();
    }
    Ok(len.saturating_add(body.stored_len()))
}

/// Appends the unpadded inner block. The caller has checked lengths with [`inner_len`] and the
/// total against the envelope limit, so every length fits its prefix.
pub fn write_inner(out: &mut Vec<u8>, header: &EnvelopeHeader, letter: &Letter, body: Body<'_>) {
    let m = &letter.metadata;
    out.extend_from_slice(&header_copy(header));
    for value in [&m.envelope_sender, &m.recipient, &m.queue_id] {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&m.created.to_be_bytes());
    out.extend_from_slice(&m.expires.to_be_bytes());
    if extended(header.version) {
        m.extensions.write(out);
    }
    let len = u32::try_from(body.stored_len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    match body {
        Body::Plain(message) => out.extend_from_slice(message),
        Body::Compressed { original_len, data } => {
            let original = u32::try_from(original_len).unwrap_or(u32::MAX);
            out.extend_from_slice(&original.to_be_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// Parses an authenticated plaintext. `header_copy` is the cleartext header without the nonce,
/// `envelope_len` the length of the whole envelope it came from.
pub fn read_inner(
    mut plaintext: Vec<u8>,
    header_copy: &[u8],
    envelope_len: usize,
    version: u8,
) -> Result<Letter, OpenError> {
    let truncated = |_| OpenError::Malformed("inner block is truncated");
    let mut r = Reader::new(&plaintext);
    let copy = r.take(HEADER_COPY_SIZE).map_err(truncated)?;
    if copy != header_copy {
        return Err(OpenError::IdMismatch);
    }
    let message_id = MessageId::from_slice(&copy[MESSAGE_ID_AT..SENDER_AT])
        .map_err(|_| OpenError::Malformed("message id"))?;
    let envelope_sender = read_field(&mut r)?;
    let recipient = read_field(&mut r)?;
    let queue_id = read_field(&mut r)?;
    let created = r.u64().map_err(truncated)?;
    let expires = r.u64().map_err(truncated)?;
    let extensions = if extended(version) {
        Extensions::read(&mut r)?
    } else {
        Extensions::default()
    };
    let message_len = r.u32().map_err(truncated)? as usize;
    let message_start = plaintext.len() - r.remaining();
    r.take(message_len)
        .map_err(|_| OpenError::Malformed("message length exceeds the envelope"))?;
    if r.into_rest().iter().any(|&b| b != 0) {
        return Err(OpenError::Malformed("padding is not zero"));
    }
    let message_end = message_start + message_len;
    if padded_len(HEADER_SIZE + TAG_SIZE + message_end) != envelope_len {
        return Err(OpenError::Malformed(
            "envelope length is not its content's size bucket",
        ));
    }

    let message = if compressed(version) {
        inflate(&plaintext[message_start..message_end])?
    } else {
        // Reuse the plaintext buffer for the message instead of copying it again.
        plaintext.truncate(message_end);
        plaintext.drain(..message_start);
        plaintext
    };
    Ok(Letter {
        message_id,
        metadata: Metadata {
            envelope_sender,
            recipient,
            queue_id,
            created,
            expires,
            extensions,
        },
        message,
    })
}

/// A version-2 message field: the original length (u32), then raw DEFLATE data that must
/// inflate to exactly that many bytes. The output is bounded by the stated length, itself at
/// most [`MAX_ENVELOPE_SIZE`]: a small envelope cannot make the receiver allocate more.
fn inflate(field: &[u8]) -> Result<Vec<u8>, OpenError> {
    let (len, data) = field.split_first_chunk::<4>().ok_or(OpenError::Malformed(
        "compressed message without its length",
    ))?;
    let original_len = u32::from_be_bytes(*len) as usize;
    if original_len > MAX_ENVELOPE_SIZE {
        return Err(OpenError::Malformed(
            "compressed message states a length over the limit",
        ));
    }
    match miniz_oxide::inflate::decompress_to_vec_with_limit(data, original_len) {
        Ok(message) if message.len() == original_len => Ok(message),
        _ => Err(OpenError::Malformed(
            "compressed message does not inflate to its stated length",
        )),
    }
}

fn read_field(r: &mut Reader<'_>) -> Result<String, OpenError> {
    let len = usize::from(
        r.u16()
            .map_err(|_| OpenError::Malformed("inner block is truncated"))?,
    );
    if len > MAX_FIELD_LEN {
        return Err(OpenError::Malformed(
            "metadata field longer than 1024 bytes",
        ));
    }
    let bytes = r
        .take(len)
        .map_err(|_| OpenError::Malformed("metadata field exceeds the envelope"))?;
    let text =
        std::str::from_utf8(bytes).map_err(|_| OpenError::Malformed("metadata is not UTF-8"))?;
    Ok(text.to_owned())
}
