//! Identifiers: Tox public keys, 38-byte Tox IDs (key ‖ nospam ‖ checksum, as c-toxcore's
//! `tox_self_get_address`), and the random 32-byte id that names one message end to end.

use std::fmt;
use std::str::FromStr;

use crypto_box::aead::OsRng;
use crypto_box::aead::rand_core::RngCore;
use curve25519_dalek::montgomery::MontgomeryPoint;

pub const PUBLIC_KEY_SIZE: usize = 32;
pub const TOX_ID_SIZE: usize = 38;
pub const MESSAGE_ID_SIZE: usize = 32;

/// Bytes covered by the Tox ID checksum: public key and nospam.
const CHECKED_SIZE: usize = PUBLIC_KEY_SIZE + 4;

/// Why bytes or text are not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// `expected`/`got` count bytes for binary input and hex digits for text.
    #[error("wrong length: expected {expected} bytes/hex digits, got {got}")]
    Length { expected: usize, got: usize },
    #[error("not hexadecimal: only 0-9, a-f and A-F are allowed")]
    NotHex,
    #[error("Tox ID checksum mismatch: the ID was mistyped or altered")]
    Checksum,
}

/// A Tox (Curve25519) public key: the long-term identity of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_SIZE]);

impl PublicKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        array_from_slice(bytes).map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_SIZE] {
        &self.0
    }

    /// True for the keys whose Diffie-Hellman result is known to everyone (points of order
    /// dividing 8, on the curve or its twist, in any encoding). Such a key has no owner, so an
    /// envelope claiming one as sender or recipient is refused.
    pub(crate) fn has_small_order(&self) -> bool {
        // u([8]P) is 0 exactly when [8]P is the identity or the 2-torsion point (0, 0).
        let times_eight =
            MontgomeryPoint(self.0).mul_bits_be([true, false, false, false].into_iter());
        times_eight.to_bytes() == [0u8; 32]
    }

    pub(crate) fn to_crypto(self) -> crypto_box::PublicKey {
        crypto_box::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0, true)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex(s).map(Self)
    }
}

/// A Tox address as users exchange it: public key (32) ‖ nospam (4, big-endian) ‖ checksum (2).
/// Construction always checks or computes the checksum, so a `ToxId` is always consistent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ToxId([u8; TOX_ID_SIZE]);

impl ToxId {
    pub fn new(public_key: PublicKey, nospam: u32) -> Self {
        let mut bytes = [0u8; TOX_ID_SIZE];
        bytes[..PUBLIC_KEY_SIZE].copy_from_slice(&public_key.0);
        bytes[PUBLIC_KEY_SIZE..CHECKED_SIZE].copy_from_slice(&nospam.to_be_bytes());
        let sum = checksum(&bytes);
        bytes[CHECKED_SIZE..].copy_from_slice(&sum);
        Self(bytes)
    }

    /// Exactly 38 bytes whose last two are the checksum of the first 36.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let bytes: [u8; TOX_ID_SIZE] = array_from_slice(bytes)?;
        if bytes[CHECKED_SIZE..] != checksum(&bytes) {
            return Err(IdError::Checksum);
        }
        Ok(Self(bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; PUBLIC_KEY_SIZE];
        key.copy_from_slice(&self.0[..PUBLIC_KEY_SIZE]);
        PublicKey(key)
    }

    pub fn nospam(&self) -> u32 {
        let mut nospam = [0u8; 4];
        nospam.copy_from_slice(&self.0[PUBLIC_KEY_SIZE..CHECKED_SIZE]);
        u32::from_be_bytes(nospam)
    }

    pub fn as_bytes(&self) -> &[u8; TOX_ID_SIZE] {
        &self.0
    }
}

impl fmt::Display for ToxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0, true)
    }
}

impl fmt::Debug for ToxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ToxId {
    type Err = IdError;

    /// Exactly 76 hex digits, either case; surrounding whitespace is an error, not trimmed.
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bytes: [u8; TOX_ID_SIZE] = parse_hex(s)?;
        Self::from_bytes(&bytes)
    }
}

/// Names one message across both bridges, the relay, Acks and Nacks; chosen at random.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; MESSAGE_ID_SIZE]);

impl MessageId {
    /// A fresh id from the operating system's RNG.
    pub fn random() -> Self {
        let mut bytes = [0u8; MESSAGE_ID_SIZE];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        array_from_slice(bytes).map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; MESSAGE_ID_SIZE] {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0, false)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MessageId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex(s).map(Self)
    }
}

/// c-toxcore's `data_checksum`: byte 0 XORs the even-indexed bytes 0..36, byte 1 the odd ones.
fn checksum(id: &[u8; TOX_ID_SIZE]) -> [u8; 2] {
    let mut sum = [0u8; 2];
    for (i, byte) in id[..CHECKED_SIZE].iter().enumerate() {
        sum[i % 2] ^= byte;
    }
    sum
}

fn array_from_slice<const N: usize>(bytes: &[u8]) -> Result<[u8; N], IdError> {
    bytes.try_into().map_err(|_| IdError::Length {
        expected: N,
        got: bytes.len(),
    })
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], IdError> {
    if s.len() != 2 * N {
        return Err(IdError::Length {
            expected: 2 * N,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| IdError::NotHex)?;
    Ok(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8], upper: bool) -> fmt::Result {
    for byte in bytes {
        if upper {
            write!(f, "{byte:02X}")?;
        } else {
            write!(f, "{byte:02x}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand: 32 × 0x11 cancels out of both checksum bytes, leaving
    /// 0x12 ^ 0x56 = 0x44 (even) and 0x34 ^ 0x78 = 0x4C (odd).
    fn known_id() -> String {
        format!("{}12345678444C", "11".repeat(32))
    }

    #[test]
    fn tox_id_new_matches_hand_computed_checksum() {
        let id = ToxId::new(PublicKey([0x11; 32]), 0x1234_5678);
        assert_eq!(id.to_string(), known_id());
        assert_eq!(&id.as_bytes()[32..], &[0x12, 0x34, 0x56, 0x78, 0x44, 0x4C]);
    }

    #[test]
    fn tox_id_sequential_key_checksum() {
        // Bytes 0x00..=0x1F cancel out; 0xDE ^ 0xBE = 0x60, 0xAD ^ 0xEF = 0x42.
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let id = ToxId::new(PublicKey(key), 0xDEAD_BEEF);
        assert_eq!(&id.as_bytes()[36..], &[0x60, 0x42]);
        assert_eq!(id.public_key(), PublicKey(key));
        assert_eq!(id.nospam(), 0xDEAD_BEEF);
    }

    #[test]
    fn tox_id_parse_is_case_insensitive_and_round_trips() {
        let id: ToxId = known_id().to_lowercase().parse().unwrap();
        assert_eq!(id.to_string(), known_id());
        assert_eq!(format!("{id:?}"), known_id());
        assert_eq!(ToxId::from_bytes(id.as_bytes()), Ok(id));
    }

    #[test]
    fn tox_id_any_changed_digit_fails_checksum() {
        let known = known_id();
        for pos in 0..known.len() {
            let mut text = known.as_bytes().to_vec();
            text[pos] = if text[pos] == b'0' { b'1' } else { b'0' };
            let text = String::from_utf8(text).unwrap();
            assert_eq!(text.parse::<ToxId>(), Err(IdError::Checksum), "digit {pos}");
        }
    }

    #[test]
    fn tox_id_rejects_bad_length_whitespace_and_non_hex() {
        let known = known_id();
        let short = &known[..74];
        assert_eq!(
            short.parse::<ToxId>(),
            Err(IdError::Length {
                expected: 76,
                got: 74
            })
        );
        let padded = format!(" {known}");
        assert_eq!(
            padded.parse::<ToxId>(),
            Err(IdError::Length {
                expected: 76,
                got: 77
            })
        );
        let trailing = format!("{}\n", &known[..75]);
        assert_eq!(trailing.parse::<ToxId>(), Err(IdError::NotHex));
        let non_hex = format!("{}G", &known[..75]);
        assert_eq!(non_hex.parse::<ToxId>(), Err(IdError::NotHex));
        // Multi-byte characters count as bytes and are never hex.
        let accented = format!("{}é", &known[..74]);
        assert_eq!(accented.parse::<ToxId>(), Err(IdError::NotHex));
        assert_eq!(
            ToxId::from_bytes(&[0; 37]),
            Err(IdError::Length {
                expected: 38,
                got: 37
            })
        );
    }

    #[test]
    fn public_key_hex_is_uppercase_and_parses_either_case() {
        let key = PublicKey([0xab; 32]);
        assert_eq!(key.to_string(), "AB".repeat(32));
        assert_eq!(format!("{key:?}"), "AB".repeat(32));
        assert_eq!("ab".repeat(32).parse::<PublicKey>(), Ok(key));
        assert_eq!(PublicKey::from_slice(&[0xab; 32]), Ok(key));
        assert_eq!(
            PublicKey::from_slice(&[0; 31]),
            Err(IdError::Length {
                expected: 32,
                got: 31
            })
        );
    }

    #[test]
    fn message_id_hex_is_lowercase_and_random_ids_differ() {
        let id = MessageId([0xcd; 32]);
        assert_eq!(id.to_string(), "cd".repeat(32));
        assert_eq!(format!("{id:?}"), "cd".repeat(32));
        assert_eq!("CD".repeat(32).parse::<MessageId>(), Ok(id));
        assert_eq!(MessageId::from_slice(id.as_bytes()), Ok(id));
        assert_ne!(MessageId::random(), MessageId::random());
    }

    #[test]
    fn small_order_keys_are_detected_and_real_keys_are_not() {
        let mut p_minus_one = [0xff; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        let mut one_high_bit = [0; 32];
        one_high_bit[0] = 1;
        one_high_bit[31] = 0x80;
        for weak in [[0; 32], one_high_bit, p_minus_one] {
            assert!(PublicKey(weak).has_small_order(), "{}", PublicKey(weak));
        }
        let real = crypto_box::SecretKey::from([0x11; 32]).public_key();
        assert!(!PublicKey(real.to_bytes()).has_small_order());
        let mut nine = [0; 32];
        nine[0] = 9; // the base point
        assert!(!PublicKey(nine).has_small_order());
    }
}
