//! The extension block of envelope versions 3 and 4: what the receiving site needs to hand the
//! message on the way the sending site received it (SMTPUTF8, the body type), as a bounded list
//! of TLV entries so that later fields (the RFC 3461 DSN parameters) are new types, not a new
//! version. Layout and rules: docs/protocol.md §2.4.
//!
//! `ext_len u16 | entry*`, each entry `type u8 | len u16 | value[len]`, big-endian:
//! - the block is at most [`MAX_EXTENSIONS_LEN`] bytes; entries fill it exactly;
//! - types appear in strictly ascending order (so each at most once, and one encoding per value);
//! - the high bit of a type marks it *critical*: a reader that does not know a critical type
//!   must not open the envelope (it could not hand the message on faithfully); an unknown type
//!   without the bit is skipped.

use super::OpenError;
use crate::reader::Reader;

/// Longest extension block, the entries only (without its own u16 length).
pub const MAX_EXTENSIONS_LEN: usize = 4096;
/// High bit of a type: a reader that does not know the type refuses the envelope.
pub const CRITICAL: u8 = 0x80;
/// SMTPUTF8 (RFC 6531): the envelope addresses or the header need it. Empty value. Critical.
pub const TYPE_SMTPUTF8: u8 = CRITICAL | 0x01;
/// BODY (RFC 6152, RFC 3030): one byte, 1 = 8BITMIME, 2 = BINARYMIME; 7BIT is the absence of
/// the entry. Critical.
pub const TYPE_BODY: u8 = CRITICAL | 0x02;

/// The MAIL FROM `BODY=` type of the message (7BIT when it was not given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

impl BodyType {
    /// The `BODY=` keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }
}

/// The SMTP service extensions a message was received with, carried to the receiving site.
/// The default (7BIT, no SMTPUTF8) is what every envelope of versions 1 and 2 means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The message needs SMTPUTF8: UTF-8 envelope addresses or UTF-8 header fields.
    pub smtputf8: bool,
    pub body: BodyType,
}

impl Extensions {
    /// True when an envelope of version 1 or 2 says the same (no block needed).
    pub fn is_default(&self) -> bool {
        *self == Extensions::default()
    }

    /// The entries, in ascending type order.
    fn entries(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        if self.smtputf8 {
            out.push((TYPE_SMTPUTF8, Vec::new()));
        }
        match self.body {
            BodyType::SevenBit => {}
            BodyType::EightBitMime => out.push((TYPE_BODY, vec![1])),
            BodyType::BinaryMime => out.push((TYPE_BODY, vec![2])),
        }
        out
    }

    /// Length of the encoded block, its u16 length included.
    pub(crate) fn encoded_len(&self) -> usize {
        2 + self
            .entries()
            .iter()
            .map(|(_, v)| 3 + v.len())
            .sum::<usize>()
    }

    /// Appends the block (its u16 length, then the entries).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let entries = self.entries();
        let len: usize = entries.iter().map(|(_, v)| 3 + v.len()).sum();
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        for (kind, value) in entries {
            out.push(kind);
            out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&value);
        }
    }

    /// Reads a block written by [`Extensions::write`] (or by a later sealer that adds types).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Extensions, OpenError> {
        let truncated = |_| OpenError::Malformed("extension block is truncated");
        let len = usize::from(r.u16().map_err(truncated)?);
        if len > MAX_EXTENSIONS_LEN {
            return Err(OpenError::Malformed("extension block over 4096 bytes"));
        }
        let mut block = Reader::new(r.take(len).map_err(truncated)?);
        let mut ext = Extensions::default();
        let mut last: Option<u8> = None;
        while block.remaining() > 0 {
            let kind = block.u8().map_err(truncated)?;
            let value_len = usize::from(block.u16().map_err(truncated)?);
            let value = block.take(value_len).map_err(truncated)?;
            if last.is_some_and(|l| kind <= l) {
                return Err(OpenError::Malformed(
                    "extension types out of order or repeated",
                ));
            }
            last = Some(kind);
            match (kind, value) {
                (TYPE_SMTPUTF8, []) => ext.smtputf8 = true,
                (TYPE_BODY, [1]) => ext.body = BodyType::EightBitMime,
                (TYPE_BODY, [2]) => ext.body = BodyType::BinaryMime,
                (TYPE_SMTPUTF8 | TYPE_BODY, _) => {
                    return Err(OpenError::Malformed("extension value is malformed"));
                }
                (kind, _) if kind & CRITICAL != 0 => {
                    return Err(OpenError::UnsupportedExtension(kind));
                }
                _ => {} // unknown and not critical: skipped
            }
        }
        Ok(ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Extensions, OpenError> {
        Extensions::read(&mut Reader::new(bytes))
    }

    #[test]
    fn every_combination_round_trips() {
        for smtputf8 in [false, true] {
            for body in [
                BodyType::SevenBit,
                BodyType::EightBitMime,
                BodyType::BinaryMime,
            ] {
                let ext = Extensions { smtputf8, body };
                let mut out = Vec::new();
                ext.write(&mut out);
                assert_eq!(out.len(), ext.encoded_len());
                assert_eq!(read(&out), Ok(ext));
            }
        }
        let both = Extensions {
            smtputf8: true,
            body: BodyType::EightBitMime,
        };
        let mut out = Vec::new();
        both.write(&mut out);
        assert_eq!(out, [0, 7, 0x81, 0, 0, 0x82, 0, 1, 1]);
    }

    #[test]
    fn unknown_types_are_skipped_unless_critical() {
        // A later non-critical type 0x03 (say, a DSN parameter) is skipped.
        let ext = read(&[0, 9, 0x03, 0, 3, b'a', b'b', b'c', 0x81, 0, 0]).unwrap();
        assert!(ext.smtputf8);
        assert_eq!(
            read(&[0, 3, 0x90, 0, 0]),
            Err(OpenError::UnsupportedExtension(0x90))
        );
        assert!(!OpenError::UnsupportedExtension(0x90).is_forgery());
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for bad in [
            &[0u8][..],                         // no length
            &[0, 4, 0x81, 0, 0],                // length beyond the data
            &[0, 2, 0x81, 0],                   // entry cut short
            &[0, 6, 0x81, 0, 0, 0x81, 0, 0],    // repeated
            &[0, 7, 0x82, 0, 1, 1, 0x81, 0, 0], // out of order
            &[0, 4, 0x81, 0, 1, 0],             // SMTPUTF8 with a value
            &[0, 4, 0x82, 0, 1, 0],             // BODY=7BIT is written as no entry
            &[0, 4, 0x82, 0, 1, 3],             // unknown body type
            &[0, 5, 0x82, 0, 2, 1, 1],          // BODY value too long
        ] {
            assert!(matches!(read(bad), Err(OpenError::Malformed(_))), "{bad:?}");
        }
        let mut huge = vec![0x10, 0x01];
        huge.resize(2 + 4097, 0);
        assert!(matches!(read(&huge), Err(OpenError::Malformed(_))));
    }
}
