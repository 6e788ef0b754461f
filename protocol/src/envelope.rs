//! The sealed envelope: one `Letter` boxed with XSalsa20-Poly1305 (`crypto_box`) from the
//! sender's key to the recipient's key, behind a small cleartext header and padded to a Padmé
//! size bucket. `layout` owns the byte layout, `padding` the bucket function.

mod deflate;
mod extensions;
mod layout;
mod padding;

use crypto_box::SalsaBox;
use crypto_box::aead::rand_core::RngCore;
use crypto_box::aead::{AeadInPlace, OsRng};

use crate::id::{MessageId, PublicKey};
use layout::{HEADER_COPY_SIZE, TAG_SIZE};

pub use crypto_box::SecretKey;
pub use extensions::{BodyType, DsnRequest, DsnRet, Extensions, MAX_EXTENSIONS_LEN, OrcptType};
pub use layout::{HEADER_SIZE, MAX_FIELD_LEN, NONCE_SIZE};
pub use padding::{MIN_ENVELOPE_SIZE, padded_len};

/// Largest envelope, padding included, that `seal` produces and `open` accepts (64 MiB).
pub const MAX_ENVELOPE_SIZE: usize = 64 * 1024 * 1024;
pub const ENVELOPE_VERSION: u8 = 1;
/// An envelope whose message is DEFLATE-compressed inside the sealed inner block; sealed by
/// [`seal_compressed`] for peers whose `Hello` announces protocol level 2.
pub const ENVELOPE_VERSION_COMPRESSED: u8 = 2;
/// Version 1 with an extension block ([`Extensions`]) after the metadata; sealed only when the
/// letter's extensions are not the default, for peers whose `Hello` announces protocol level 3
/// (or whose level is not known yet: a level-2 peer is then refused by the sending side).
pub const ENVELOPE_VERSION_EXTENDED: u8 = 3;
/// Version 2 (compressed) with an extension block.
pub const ENVELOPE_VERSION_EXTENDED_COMPRESSED: u8 = 4;
/// Messages up to this size are compressed at DEFLATE level 6, larger ones at level 1 (about ten
/// times faster, a little larger).
const COMPRESS_WELL_UP_TO: usize = 64 * 1024;

/// What the sending bridge knows about a message besides its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// SMTP `MAIL FROM` address (may be empty for bounces). At most [`MAX_FIELD_LEN`] bytes.
    pub envelope_sender: String,
    /// SMTP `RCPT TO` address this copy is for. At most [`MAX_FIELD_LEN`] bytes.
    pub recipient: String,
    /// The sending Postfix queue id, for tracing. At most [`MAX_FIELD_LEN`] bytes.
    pub queue_id: String,
    /// Unix seconds when the sender accepted the message.
    pub created: u64,
    /// Unix seconds after which the message must not be delivered any more.
    pub expires: u64,
    /// SMTPUTF8 and the body type; the default seals as version 1 or 2, anything else as
    /// version 3 or 4 with an extension block.
    pub extensions: Extensions,
}

/// The plaintext content of an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    pub message_id: MessageId,
    pub metadata: Metadata,
    /// The RFC 5322 message, headers and body, as received from Postfix.
    pub message: Vec<u8>,
}

/// The cleartext part of an envelope, readable without any key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeHeader {
    pub version: u8,
    pub message_id: MessageId,
    pub sender: PublicKey,
    pub recipient: PublicKey,
}

/// A successfully opened envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Proven by the Poly1305 tag: only the holder of this key (or the recipient) could have
    /// produced the envelope.
    pub sender: PublicKey,
    pub letter: Letter,
}

/// Why a letter could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// `size` is the unpadded envelope length the letter would need.
    #[error("envelope would be {size} bytes, over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("metadata field `{0}` is longer than 1024 bytes")]
    FieldTooLong(&'static str),
    #[error("encryption failed: the recipient key is unusable (small-order point)")]
    Crypto,
}

/// Why bytes could not be opened as an envelope for this key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("envelope is too short (a header is 128 bytes, a whole envelope at least 4096)")]
    TooShort,
    #[error("envelope is larger than the 64 MiB limit")]
    TooLarge,
    #[error("not a toxmail envelope (magic bytes are not \"TXM1\")")]
    BadMagic,
    #[error("unsupported envelope version {0} (this node reads versions 1 to 4)")]
    UnsupportedVersion(u8),
    /// An extension entry of a critical type this node does not know (docs/protocol.md §2.4).
    #[error("unsupported critical envelope extension type {0:#04x}")]
    UnsupportedExtension(u8),
    #[error("envelope is addressed to a different key")]
    WrongRecipient,
    #[error("envelope failed authentication: tampered with, or not sealed by its claimed sender")]
    Decrypt,
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("envelope header does not match the authenticated copy inside it (header swapped)")]
    IdMismatch,
}

impl OpenError {
    /// True when the envelope cannot be an honest, intact envelope from its claimed sender:
    /// authentication failed (`Decrypt`), the cleartext header was altered or swapped
    /// (`IdMismatch`), or the bytes break a rule a conforming sealer never breaks (`Malformed`:
    /// non-zero reserved header bytes, a small-order sender key, or an authenticated plaintext
    /// with bad lengths, non-UTF-8 metadata, non-zero padding or a wrong size bucket).
    ///
    /// Not forgeries: truncation or excess size, foreign bytes (`BadMagic`), a version this node
    /// does not read, and an envelope meant for another key.
    pub fn is_forgery(&self) -> bool {
        matches!(
            self,
            OpenError::Decrypt | OpenError::IdMismatch | OpenError::Malformed(_)
        )
    }

    /// The code a receiver puts in its `Nack` for this failure; all of them are permanent.
    pub fn nack_code(&self) -> crate::frame::NackCode {
        use crate::frame::NackCode;
        match self {
            _ if self.is_forgery() => NackCode::Forged,
            OpenError::TooLarge => NackCode::TooLarge,
            OpenError::UnsupportedVersion(_) | OpenError::UnsupportedExtension(_) => {
                NackCode::UnsupportedVersion
            }
            OpenError::WrongRecipient => NackCode::WrongRecipient,
            _ => NackCode::Malformed,
        }
    }
}

/// The public key that belongs to `secret_key`.
pub fn public_key_of(secret_key: &SecretKey) -> PublicKey {
    PublicKey(secret_key.public_key().to_bytes())
}

/// Seals `letter` from `sender` to `recipient` under a fresh random nonce: version 1, or
/// version 3 when its extensions are not the default.
pub fn seal(
    letter: &Letter,
    sender: &SecretKey,
    recipient: &PublicKey,
) -> Result<Vec<u8>, SealError> {
    seal_with_nonce(letter, sender, recipient, fresh_nonce())
}

fn fresh_nonce() -> [u8; NONCE_SIZE] {
    let mut nonce = [0u8; NONCE_SIZE];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Seals `letter` like [`seal`], with its message DEFLATE-compressed (envelope version 2) when
/// that makes it smaller; an incompressible message is sealed as version 1. Only for a
/// recipient known to open version 2 (its `Hello` announced protocol level 2 or more).
///
/// The message is compressed straight into the envelope's buffer and given up on as soon as it
/// would not come out smaller, so sealing holds no buffer beside the envelope.
///
/// The compressed size is still padded to its Padmé bucket; what the size of a sealed envelope
/// tells an observer changes from "how long" to "how long once compressed" (docs/security.md).
pub fn seal_compressed(
    letter: &Letter,
    sender: &SecretKey,
    recipient: &PublicKey,
) -> Result<Vec<u8>, SealError> {
    let nonce = fresh_nonce();
    match seal_deflated(letter, sender, recipient, nonce)? {
        Some(envelope) => Ok(envelope),
        None => seal_with_nonce(letter, sender, recipient, nonce),
    }
}

/// The version 2 envelope, or `None` when the message does not compress by more than the 4
/// bytes of its length prefix (or is over the limit: the plain seal reports that).
fn seal_deflated(
    letter: &Letter,
    sender: &SecretKey,
    recipient: &PublicKey,
    nonce: [u8; NONCE_SIZE],
) -> Result<Option<Vec<u8>>, SealError> {
    let message = &letter.message;
    if message.len() > MAX_ENVELOPE_SIZE || recipient.has_small_order() {
        return Ok(None);
    }
    let empty = layout::Body::Compressed {
        original_len: message.len(),
        data: &[],
    };
    let prefix = HEADER_SIZE + TAG_SIZE + layout::inner_len(letter, empty)?;
    let header = EnvelopeHeader {
        version: if letter.metadata.extensions.is_default() {
            ENVELOPE_VERSION_COMPRESSED
        } else {
            ENVELOPE_VERSION_EXTENDED_COMPRESSED
        },
        message_id: letter.message_id,
        sender: public_key_of(sender),
        recipient: *recipient,
    };
    let mut out = Vec::with_capacity(prefix + message.len());
    layout::write_header(&mut out, &header, &nonce);
    out.extend_from_slice(&[0u8; TAG_SIZE]); // filled in once the tag is known
    layout::write_inner(&mut out, &header, letter, empty);
    let level = if message.len() <= COMPRESS_WELL_UP_TO {
        6
    } else {
        1
    };
    // Smaller means: compressed data plus its 4-byte original length under the message's size.
    let Some(compressed) =
        deflate::append(&mut out, message, level, message.len().saturating_sub(5))
    else {
        return Ok(None);
    };
    // The stored length (original length prefix and data) sits 8 bytes before the data.
    let stored = u32::try_from(4 + compressed).unwrap_or(u32::MAX);
    out[prefix - 8..prefix - 4].copy_from_slice(&stored.to_be_bytes());
    if out.len() > MAX_ENVELOPE_SIZE {
        return Ok(None);
    }
    let total = padded_len(out.len());
    out.resize(total, 0);
    encrypt(&mut out, sender, recipient, nonce)?;
    Ok(Some(out))
}

/// `seal` with a caller-chosen nonce. Reusing a nonce for the same key pair breaks the
/// encryption; this exists only so golden vectors are reproducible.
#[doc(hidden)]
pub fn seal_with_nonce(
    letter: &Letter,
    sender: &SecretKey,
    recipient: &PublicKey,
    nonce: [u8; NONCE_SIZE],
) -> Result<Vec<u8>, SealError> {
    let body = layout::Body::Plain(&letter.message);
    let version = if letter.metadata.extensions.is_default() {
        ENVELOPE_VERSION
    } else {
        ENVELOPE_VERSION_EXTENDED
    };
    seal_body(letter, body, version, sender, recipient, nonce)
}

fn seal_body(
    letter: &Letter,
    body: layout::Body<'_>,
    version: u8,
    sender: &SecretKey,
    recipient: &PublicKey,
    nonce: [u8; NONCE_SIZE],
) -> Result<Vec<u8>, SealError> {
    if letter.message.len() > MAX_ENVELOPE_SIZE {
        return Err(SealError::TooLarge {
            size: letter.message.len(),
            max: MAX_ENVELOPE_SIZE,
        });
    }
    let inner_len = layout::inner_len(letter, body)?;
    let unpadded = (HEADER_SIZE + TAG_SIZE).saturating_add(inner_len);
    if unpadded > MAX_ENVELOPE_SIZE {
        return Err(SealError::TooLarge {
            size: unpadded,
            max: MAX_ENVELOPE_SIZE,
        });
    }
    if recipient.has_small_order() {
        return Err(SealError::Crypto);
    }
    let header = EnvelopeHeader {
        version,
        message_id: letter.message_id,
        sender: public_key_of(sender),
        recipient: *recipient,
    };
    let total = padded_len(unpadded);
    let mut out = Vec::with_capacity(total);
    layout::write_header(&mut out, &header, &nonce);
    out.extend_from_slice(&[0u8; TAG_SIZE]); // filled in once the tag is known
    layout::write_inner(&mut out, &header, letter, body);
    out.resize(total, 0);
    encrypt(&mut out, sender, recipient, nonce)?;
    Ok(out)
}

/// Encrypts the padded inner block of `out` in place and writes the tag after the header.
fn encrypt(
    out: &mut [u8],
    sender: &SecretKey,
    recipient: &PublicKey,
    nonce: [u8; NONCE_SIZE],
) -> Result<(), SealError> {
    let (head, body) = out.split_at_mut(HEADER_SIZE + TAG_SIZE);
    let tag = SalsaBox::new(&recipient.to_crypto(), sender)
        .encrypt_in_place_detached(&nonce.into(), b"", body)
        .map_err(|_| SealError::Crypto)?;
    head[HEADER_SIZE..].copy_from_slice(&tag);
    Ok(())
}

/// Reads the cleartext header without any cryptography. Only the first [`HEADER_SIZE`] bytes
/// are looked at, so a receiver may call it on the first chunk of a transfer. The result is
/// unauthenticated until `open` succeeds.
pub fn peek_header(bytes: &[u8]) -> Result<EnvelopeHeader, OpenError> {
    if bytes.len() > MAX_ENVELOPE_SIZE {
        return Err(OpenError::TooLarge);
    }
    let head = bytes.first_chunk().ok_or(OpenError::TooShort)?;
    layout::parse_header(head)
}

/// Verifies and decrypts an envelope addressed to `recipient`'s public key.
///
/// Checks, in order: size limits, header (magic, version, reserved bytes), that the header
/// names our key, that the sender key is not a small-order point, the Poly1305 tag, then the
/// authenticated plaintext (header copy, field lengths, UTF-8, zero padding, size bucket).
pub fn open(bytes: &[u8], recipient: &SecretKey) -> Result<Opened, OpenError> {
    let header = peek_header(bytes)?;
    if bytes.len() < MIN_ENVELOPE_SIZE {
        return Err(OpenError::TooShort);
    }
    if header.recipient != public_key_of(recipient) {
        return Err(OpenError::WrongRecipient);
    }
    if header.sender.has_small_order() {
        return Err(OpenError::Malformed("sender key is a small-order point"));
    }
    let (head, ciphertext) = bytes.split_at(HEADER_SIZE + TAG_SIZE);
    let nonce = &head[HEADER_COPY_SIZE..HEADER_SIZE];
    let tag = &head[HEADER_SIZE..];
    let mut plaintext = ciphertext.to_vec();
    SalsaBox::new(&header.sender.to_crypto(), recipient)
        .decrypt_in_place_detached(nonce.into(), b"", &mut plaintext, tag.into())
        .map_err(|_| OpenError::Decrypt)?;

    let header_copy = &head[..HEADER_COPY_SIZE];
    let letter = layout::read_inner(plaintext, header_copy, bytes.len(), header.version)?;
    Ok(Opened {
        sender: header.sender,
        letter,
    })
}
