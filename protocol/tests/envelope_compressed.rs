//! Envelope version 2: the message DEFLATE-compressed inside the sealed block. Round trips,
//! the fallback to version 1 for incompressible messages, and authentic envelopes whose
//! compressed field lies (a bomb, a wrong length, broken data) refused without inflating more
//! than the stated length.

mod common;

use common::{letter, noise, recipient_key, reseal, sender_key};
use toxmail_protocol::{
    ENVELOPE_VERSION, ENVELOPE_VERSION_COMPRESSED, MAX_ENVELOPE_SIZE, MessageId, OpenError, open,
    padded_len, peek_header, public_key_of, seal, seal_compressed,
};

/// Where the stored message length sits in the plaintext of `common::letter`'s envelopes:
/// header copy, three length-prefixed fields, two times.
const STORED_LEN_AT: usize = 104 + 6 + 17 + 15 + 9 + 16;
const ORIGINAL_LEN_AT: usize = STORED_LEN_AT + 4;
const DATA_AT: usize = ORIGINAL_LEN_AT + 4;

fn text(len: usize) -> Vec<u8> {
    let line = b"Subject: family news\r\nThe garden is doing well, the tomatoes are red.\r\n";
    line.iter().copied().cycle().take(len).collect()
}

fn compressed(message: &[u8]) -> Vec<u8> {
    let l = letter(MessageId([0x55; 32]), message);
    seal_compressed(&l, &sender_key(), &public_key_of(&recipient_key())).unwrap()
}

fn set_u32(plaintext: &mut [u8], at: usize, value: u32) {
    plaintext[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[test]
fn a_compressible_letter_is_sealed_as_version_2_smaller_and_opens_unchanged() {
    for size in [5_000, 10 * 1024, 300_000, 2 * 1024 * 1024] {
        let l = letter(MessageId::random(), &text(size));
        let recipient = public_key_of(&recipient_key());
        let small = seal_compressed(&l, &sender_key(), &recipient).unwrap();
        let plain = seal(&l, &sender_key(), &recipient).unwrap();
        assert_eq!(
            peek_header(&small).unwrap().version,
            ENVELOPE_VERSION_COMPRESSED
        );
        assert_eq!(peek_header(&plain).unwrap().version, ENVELOPE_VERSION);
        assert!(
            small.len() < plain.len(),
            "{size}: {} vs {}",
            small.len(),
            plain.len()
        );
        assert_eq!(padded_len(small.len()), small.len(), "still a size bucket");
        let opened = open(&small, &recipient_key()).unwrap();
        assert_eq!(opened.letter, l);
        assert_eq!(opened.sender, public_key_of(&sender_key()));
    }
}

#[test]
fn an_incompressible_letter_stays_version_1() {
    for size in [0, 1, 3_000, 100_000] {
        let l = letter(MessageId::random(), &noise(size as u64 + 7, size));
        let sealed = seal_compressed(&l, &sender_key(), &public_key_of(&recipient_key())).unwrap();
        assert_eq!(peek_header(&sealed).unwrap().version, ENVELOPE_VERSION);
        assert_eq!(open(&sealed, &recipient_key()).unwrap().letter, l);
    }
}

#[test]
fn a_bomb_stating_a_small_length_is_refused_without_inflating_it_all() {
    // 32 MiB of zeros compress to ~150 KiB (level 1 above 1 MiB); the envelope claims 1,000.
    let bomb = compressed(&vec![0; 32 * 1024 * 1024]);
    assert_eq!(
        peek_header(&bomb).unwrap().version,
        ENVELOPE_VERSION_COMPRESSED
    );
    assert!(bomb.len() < 256 * 1024, "{} bytes", bomb.len());
    let lying = reseal(&bomb, |p| set_u32(p, ORIGINAL_LEN_AT, 1_000));
    assert!(matches!(
        open(&lying, &recipient_key()),
        Err(OpenError::Malformed(_))
    ));
}

#[test]
fn a_wrong_or_oversized_stated_length_or_broken_data_is_malformed() {
    let good = compressed(&text(20_000));
    let too_long = reseal(&good, |p| set_u32(p, ORIGINAL_LEN_AT, 20_001));
    let over_limit = reseal(&good, |p| {
        set_u32(p, ORIGINAL_LEN_AT, MAX_ENVELOPE_SIZE as u32 + 1)
    });
    let broken = reseal(&good, |p| p[DATA_AT..DATA_AT + 16].fill(0xff));
    for (what, envelope) in [
        ("too long", too_long),
        ("over the limit", over_limit),
        ("broken", broken),
    ] {
        let err = open(&envelope, &recipient_key()).unwrap_err();
        assert!(matches!(err, OpenError::Malformed(_)), "{what}: {err:?}");
        assert!(err.is_forgery(), "{what}: no honest sealer writes this");
    }
    assert!(open(&good, &recipient_key()).is_ok());
}

#[test]
fn extensions_seal_as_versions_3_and_4_and_open_unchanged() {
    use toxmail_protocol::{
        BodyType, ENVELOPE_VERSION_EXTENDED, ENVELOPE_VERSION_EXTENDED_COMPRESSED, Extensions,
    };
    let recipient = public_key_of(&recipient_key());
    for body in [BodyType::EightBitMime, BodyType::BinaryMime] {
        let mut l = letter(MessageId::random(), &text(20_000));
        l.metadata.extensions = Extensions {
            smtputf8: body == BodyType::EightBitMime,
            body,
            ..Default::default()
        };
        let small = seal_compressed(&l, &sender_key(), &recipient).unwrap();
        let plain = seal(&l, &sender_key(), &recipient).unwrap();
        let version = |e: &[u8]| peek_header(e).unwrap().version;
        assert_eq!(version(&small), ENVELOPE_VERSION_EXTENDED_COMPRESSED);
        assert_eq!(version(&plain), ENVELOPE_VERSION_EXTENDED);
        for envelope in [small, plain] {
            assert_eq!(open(&envelope, &recipient_key()).unwrap().letter, l);
        }
        // Incompressible: the fallback keeps the extensions (version 3).
        l.message = noise(7, 5_000);
        let fallback = seal_compressed(&l, &sender_key(), &recipient).unwrap();
        assert_eq!(version(&fallback), ENVELOPE_VERSION_EXTENDED);
        assert_eq!(open(&fallback, &recipient_key()).unwrap().letter, l);
    }
}
