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
//!
//! The RFC 3461 DSN request of the copy (NOTIFY, ORCPT, RET, ENVID) travels in non-critical
//! types: a reader that does not know them hands the message on as before. A known type with a
//! bad value (a NEVER combined with other flags, a control character, an over-long ENVID) is a
//! malformed envelope like any other bad value: a conforming sealer never writes one.

use super::OpenError;
use crate::reader::Reader;

/// Longest extension block, the entries only (without its own u16 length).
pub const MAX_EXTENSIONS_LEN: usize = 4096;
/// High bit of a type: a reader that does not know the type refuses the envelope.
pub const CRITICAL: u8 = 0x80;
/// NOTIFY (RFC 3461 §4.1): one byte of [`DsnRequest`] flags, NEVER alone or a non-empty set of
/// SUCCESS, FAILURE, DELAY. Absent: NOTIFY was not given. Not critical.
pub const TYPE_NOTIFY: u8 = 0x01;
/// ORCPT (RFC 3461 §4.2): one byte address type (1 = rfc822, 2 = utf-8), then the decoded
/// address (rfc822) or its utf-8-addr-xtext (utf-8): printable ASCII, 1 to
/// [`MAX_ORCPT_ADDRESS`] bytes. Not critical.
pub const TYPE_ORCPT: u8 = 0x02;
/// RET (RFC 3461 §4.3): one byte, 1 = FULL, 2 = HDRS. Not critical.
pub const TYPE_RET: u8 = 0x03;
/// ENVID (RFC 3461 §4.4): the decoded identifier, printable ASCII, 1 to [`MAX_ENVID`] bytes.
/// Not critical.
pub const TYPE_ENVID: u8 = 0x04;
/// Longest ORCPT address (RFC 3461 bounds the whole `addr-type;xtext` to 500 characters).
pub const MAX_ORCPT_ADDRESS: usize = 500;
/// Longest ENVID (RFC 3461 §4.4).
pub const MAX_ENVID: usize = 100;
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

/// RET: what of the original a failure report returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsnRet {
    Full,
    Hdrs,
}

/// The ORCPT address type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrcptType {
    /// `rfc822;` and the decoded address.
    Rfc822,
    /// `utf-8;` and the utf-8-addr-xtext (RFC 6533).
    Utf8,
}

impl OrcptType {
    /// The `addr-type` as RFC 3464's Original-Recipient writes it.
    pub fn keyword(self) -> &'static str {
        match self {
            OrcptType::Rfc822 => "rfc822",
            OrcptType::Utf8 => "utf-8",
        }
    }
}

/// What the sender asked about delivery status notifications for this copy (RFC 3461). Every
/// field `None` is what an envelope without them means (no DSN request given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DsnRequest {
    /// NOTIFY flags ([`DsnRequest::SUCCESS`] …); valid values are checked by [`DsnRequest::valid_notify`].
    pub notify: Option<u8>,
    /// ORCPT: the address type and the address (printable ASCII).
    pub orcpt: Option<(OrcptType, String)>,
    pub ret: Option<DsnRet>,
    /// ENVID, decoded (printable ASCII).
    pub envid: Option<String>,
}

impl DsnRequest {
    pub const SUCCESS: u8 = 1;
    pub const FAILURE: u8 = 2;
    pub const DELAY: u8 = 4;
    pub const NEVER: u8 = 8;

    /// True when no DSN parameter was given.
    pub fn is_empty(&self) -> bool {
        *self == DsnRequest::default()
    }

    /// NEVER alone, or a non-empty set of SUCCESS, FAILURE, DELAY.
    pub fn valid_notify(bits: u8) -> bool {
        bits == DsnRequest::NEVER || (1..=7).contains(&bits)
    }

    /// An ORCPT address the block can carry.
    pub fn valid_orcpt_address(address: &str) -> bool {
        (1..=MAX_ORCPT_ADDRESS).contains(&address.len()) && printable(address.as_bytes())
    }

    /// An ENVID the block can carry.
    pub fn valid_envid(envid: &str) -> bool {
        (1..=MAX_ENVID).contains(&envid.len()) && printable(envid.as_bytes())
    }

    /// The entries, in ascending type order; a value that breaks the rules is left out (the
    /// bridge only hands validated values, so this never drops one in practice).
    fn entries(&self, out: &mut Vec<(u8, Vec<u8>)>) {
        if let Some(bits) = self.notify.filter(|&b| DsnRequest::valid_notify(b)) {
            out.push((TYPE_NOTIFY, vec![bits]));
        }
        if let Some((kind, address)) = &self.orcpt
            && DsnRequest::valid_orcpt_address(address)
        {
            let mut value = vec![match kind {
                OrcptType::Rfc822 => 1,
                OrcptType::Utf8 => 2,
            }];
            value.extend_from_slice(address.as_bytes());
            out.push((TYPE_ORCPT, value));
        }
        match self.ret {
            None => {}
            Some(DsnRet::Full) => out.push((TYPE_RET, vec![1])),
            Some(DsnRet::Hdrs) => out.push((TYPE_RET, vec![2])),
        }
        if let Some(envid) = self.envid.as_deref().filter(|e| DsnRequest::valid_envid(e)) {
            out.push((TYPE_ENVID, envid.as_bytes().to_vec()));
        }
    }

    /// Reads the value of a DSN type; `None` when it breaks the rules.
    fn read(&mut self, kind: u8, value: &[u8]) -> Option<()> {
        match (kind, value) {
            (TYPE_NOTIFY, &[bits]) if DsnRequest::valid_notify(bits) => self.notify = Some(bits),
            (TYPE_ORCPT, [kind, address @ ..]) => {
                let kind = match kind {
                    1 => OrcptType::Rfc822,
                    2 => OrcptType::Utf8,
                    _ => return None,
                };
                let address = std::str::from_utf8(address).ok()?;
                DsnRequest::valid_orcpt_address(address).then_some(())?;
                self.orcpt = Some((kind, address.to_string()));
            }
            (TYPE_RET, [1]) => self.ret = Some(DsnRet::Full),
            (TYPE_RET, [2]) => self.ret = Some(DsnRet::Hdrs),
            (TYPE_ENVID, envid) => {
                let envid = std::str::from_utf8(envid).ok()?;
                DsnRequest::valid_envid(envid).then_some(())?;
                self.envid = Some(envid.to_string());
            }
            _ => return None,
        }
        Some(())
    }
}

/// Printable ASCII: no controls, no 8-bit bytes.
fn printable(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (0x20..0x7f).contains(b))
}

/// The SMTP service extensions a message was received with, carried to the receiving site.
/// The default (7BIT, no SMTPUTF8) is what every envelope of versions 1 and 2 means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The message needs SMTPUTF8: UTF-8 envelope addresses or UTF-8 header fields.
    pub smtputf8: bool,
    pub body: BodyType,
    /// The DSN request of this copy (non-critical types).
    pub dsn: DsnRequest,
}

impl Extensions {
    /// True when an envelope of version 1 or 2 says the same (no entry to write).
    pub fn is_default(&self) -> bool {
        self.entries().is_empty()
    }

    /// The entries, in ascending type order.
    fn entries(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        self.dsn.entries(&mut out);
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
                (TYPE_NOTIFY | TYPE_ORCPT | TYPE_RET | TYPE_ENVID, value) => {
                    ext.dsn
                        .read(kind, value)
                        .ok_or(OpenError::Malformed("DSN extension value is malformed"))?;
                }
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
                let ext = Extensions {
                    smtputf8,
                    body,
                    ..Default::default()
                };
                let mut out = Vec::new();
                ext.write(&mut out);
                assert_eq!(out.len(), ext.encoded_len());
                assert_eq!(read(&out), Ok(ext));
            }
        }
        let both = Extensions {
            smtputf8: true,
            body: BodyType::EightBitMime,
            ..Default::default()
        };
        let mut out = Vec::new();
        both.write(&mut out);
        assert_eq!(out, [0, 7, 0x81, 0, 0, 0x82, 0, 1, 1]);
    }

    #[test]
    fn unknown_types_are_skipped_unless_critical() {
        // A later non-critical type 0x7f is skipped.
        let ext = read(&[0, 9, 0x7f, 0, 3, b'a', b'b', b'c', 0x81, 0, 0]).unwrap();
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

    fn dsn() -> DsnRequest {
        DsnRequest {
            notify: Some(DsnRequest::SUCCESS | DsnRequest::FAILURE),
            orcpt: Some((OrcptType::Rfc822, "bob@b.test".into())),
            ret: Some(DsnRet::Hdrs),
            envid: Some("QQ 1".into()),
        }
    }

    #[test]
    fn the_dsn_request_is_written_as_non_critical_entries_and_round_trips() {
        let ext = Extensions {
            smtputf8: true,
            dsn: dsn(),
            ..Default::default()
        };
        let mut out = Vec::new();
        ext.write(&mut out);
        assert_eq!(
            out,
            [
                [0, 32].as_slice(),
                &[0x01, 0, 1, 3],                      // NOTIFY=SUCCESS,FAILURE
                &[0x02, 0, 11, 1],                     // ORCPT, rfc822
                b"bob@b.test",                         //
                &[0x03, 0, 1, 2],                      // RET=HDRS
                &[0x04, 0, 4, b'Q', b'Q', b' ', b'1'], // ENVID
                &[0x81, 0, 0],                         // SMTPUTF8
            ]
            .concat()
        );
        assert_eq!(out.len(), ext.encoded_len());
        assert_eq!(read(&out), Ok(ext));
        // Every field alone, NEVER, utf-8 ORCPT, RET=FULL, the longest values.
        for request in [
            DsnRequest {
                notify: Some(DsnRequest::NEVER),
                ..Default::default()
            },
            DsnRequest {
                orcpt: Some((OrcptType::Utf8, "j\\x{F6}rg@b.test".into())),
                ..Default::default()
            },
            DsnRequest {
                ret: Some(DsnRet::Full),
                ..Default::default()
            },
            DsnRequest {
                envid: Some("e".repeat(MAX_ENVID)),
                orcpt: Some((OrcptType::Rfc822, "a".repeat(MAX_ORCPT_ADDRESS))),
                ..Default::default()
            },
        ] {
            let ext = Extensions {
                dsn: request,
                ..Default::default()
            };
            assert!(!ext.is_default());
            let mut out = Vec::new();
            ext.write(&mut out);
            assert_eq!(read(&out), Ok(ext));
        }
    }

    #[test]
    fn without_a_dsn_request_the_block_is_unchanged() {
        let ext = Extensions {
            body: BodyType::EightBitMime,
            ..Default::default()
        };
        let mut out = Vec::new();
        ext.write(&mut out);
        assert_eq!(out, [0, 4, 0x82, 0, 1, 1]);
        assert!(Extensions::default().is_default());
    }

    #[test]
    fn a_reader_of_an_older_release_skips_the_dsn_entries() {
        // The rule a level-3 reader without DSN support applies: non-critical, so skipped.
        for kind in [TYPE_NOTIFY, TYPE_ORCPT, TYPE_RET, TYPE_ENVID] {
            assert_eq!(kind & CRITICAL, 0);
        }
    }

    #[test]
    fn bad_dsn_values_are_a_malformed_envelope() {
        let long_envid = [[0x04, 0, 101].as_slice(), &[b'e'; 101]].concat();
        let long_orcpt = [[0x02, 1, 246, 1].as_slice(), &[b'a'; 501]].concat();
        for entry in [
            vec![0x01, 0, 1, 0],                    // NOTIFY without a flag
            vec![0x01, 0, 1, 8 | 2],                // NEVER with FAILURE
            vec![0x01, 0, 1, 16],                   // unknown flag
            vec![0x01, 0, 2, 2, 2],                 // NOTIFY too long
            vec![0x02, 0, 1, 1],                    // ORCPT without an address
            vec![0x02, 0, 3, 3, b'a', b'b'],        // unknown address type
            vec![0x02, 0, 4, 1, b'a', b'\r', b'b'], // control character
            vec![0x02, 0, 3, 1, 0xc3, 0xb6],        // 8-bit (UTF-8) address
            vec![0x02, 0, 3, 1, 0xff, 0xfe],        // not even UTF-8
            vec![0x03, 0, 1, 0],                    // RET of no kind
            vec![0x03, 0, 1, 3],                    // unknown RET
            vec![0x03, 0, 0],                       // RET without a value
            vec![0x04, 0, 0],                       // empty ENVID
            vec![0x04, 0, 3, b'a', b'\n', b'b'],    // LF in ENVID
            vec![0x04, 0, 2, b'a', 0x7f],           // DEL in ENVID
            long_envid,
            long_orcpt,
        ] {
            let block = [
                u16::try_from(entry.len()).unwrap().to_be_bytes().as_slice(),
                &entry,
            ]
            .concat();
            assert!(
                matches!(read(&block), Err(OpenError::Malformed(_))),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn invalid_dsn_values_are_never_written() {
        let ext = Extensions {
            dsn: DsnRequest {
                notify: Some(DsnRequest::NEVER | DsnRequest::FAILURE),
                orcpt: Some((OrcptType::Rfc822, "a\r\nb".into())),
                ret: None,
                envid: Some(String::new()),
            },
            ..Default::default()
        };
        assert!(ext.is_default(), "sealed as version 1 or 2");
        let mut out = Vec::new();
        ext.write(&mut out);
        assert_eq!(out, [0, 0]);
    }
}
