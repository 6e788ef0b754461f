//! Envelope round trips, size buckets and limits, truncation and garbage: everything except
//! deliberate tampering (see `envelope_tamper.rs`).

mod common;

use common::{letter, noise, recipient_key, sender_key};
use toxmail_protocol::{
    HEADER_SIZE, MAX_ENVELOPE_SIZE, MAX_FIELD_LEN, MIN_ENVELOPE_SIZE, MessageId, OpenError,
    PublicKey, SealError, SecretKey, open, padded_len, peek_header, public_key_of, seal,
};

/// Envelope bytes beyond the message when all three metadata strings are empty.
const OVERHEAD_EMPTY_FIELDS: usize = HEADER_SIZE + 16 + 104 + 6 + 16 + 4;

fn round_trip(letter: &toxmail_protocol::Letter) -> Vec<u8> {
    let sealed = seal(letter, &sender_key(), &public_key_of(&recipient_key())).unwrap();
    let opened = open(&sealed, &recipient_key()).unwrap();
    assert_eq!(&opened.letter, letter);
    assert_eq!(opened.sender, public_key_of(&sender_key()));
    sealed
}

#[test]
fn open_returns_what_seal_was_given() {
    for size in [0, 1, 100, 3_000, 4_000, 10 * 1024, 100_000] {
        let sealed = round_trip(&letter(MessageId::random(), &noise(size as u64, size)));
        assert!(sealed.len() >= MIN_ENVELOPE_SIZE);
        assert_eq!(
            padded_len(sealed.len()),
            sealed.len(),
            "size {size} is not a bucket"
        );
    }
}

#[test]
fn open_round_trips_unicode_and_longest_metadata() {
    let mut l = letter(MessageId::random(), b"body");
    l.metadata.envelope_sender = "ü".repeat(MAX_FIELD_LEN / 2);
    l.metadata.recipient = "r".repeat(MAX_FIELD_LEN);
    l.metadata.queue_id = String::new();
    l.metadata.created = u64::MAX;
    l.metadata.expires = 0;
    round_trip(&l);
}

#[test]
fn seal_uses_a_fresh_nonce_each_time() {
    let l = letter(MessageId::random(), b"same letter");
    let pk = public_key_of(&recipient_key());
    assert_ne!(seal(&l, &sender_key(), &pk), seal(&l, &sender_key(), &pk));
}

#[test]
fn sealed_length_is_the_bucket_of_the_unpadded_length() {
    let fields = "alice@example.org".len() + "bob@example.net".len() + "4ABCD1234".len();
    for size in [5_000, 20_000, 300_000] {
        let sealed = round_trip(&letter(MessageId::random(), &vec![7; size]));
        assert_eq!(
            sealed.len(),
            padded_len(OVERHEAD_EMPTY_FIELDS + fields + size)
        );
    }
}

#[test]
fn seal_rejects_each_overlong_metadata_field() {
    let long = "x".repeat(MAX_FIELD_LEN + 1);
    let pk = public_key_of(&recipient_key());
    let mut l = letter(MessageId::random(), b"");
    l.metadata.envelope_sender = long.clone();
    assert_eq!(
        seal(&l, &sender_key(), &pk),
        Err(SealError::FieldTooLong("envelope_sender"))
    );
    let mut l = letter(MessageId::random(), b"");
    l.metadata.recipient = long.clone();
    assert_eq!(
        seal(&l, &sender_key(), &pk),
        Err(SealError::FieldTooLong("recipient"))
    );
    let mut l = letter(MessageId::random(), b"");
    l.metadata.queue_id = long;
    assert_eq!(
        seal(&l, &sender_key(), &pk),
        Err(SealError::FieldTooLong("queue_id"))
    );
}

#[test]
fn seal_accepts_exactly_the_limit_and_rejects_one_byte_more() {
    let mut l = letter(MessageId::random(), b"");
    l.metadata.envelope_sender.clear();
    l.metadata.recipient.clear();
    l.metadata.queue_id.clear();
    l.message = vec![0x5a; MAX_ENVELOPE_SIZE - OVERHEAD_EMPTY_FIELDS];
    let sealed = round_trip(&l);
    assert_eq!(sealed.len(), MAX_ENVELOPE_SIZE);

    l.message.push(0);
    let err = seal(&l, &sender_key(), &public_key_of(&recipient_key())).unwrap_err();
    assert_eq!(
        err,
        SealError::TooLarge {
            size: MAX_ENVELOPE_SIZE + 1,
            max: MAX_ENVELOPE_SIZE
        }
    );
}

#[test]
fn seal_refuses_a_small_order_recipient() {
    let l = letter(MessageId::random(), b"to nobody");
    assert_eq!(
        seal(&l, &sender_key(), &PublicKey([0; 32])),
        Err(SealError::Crypto)
    );
}

#[test]
fn open_and_peek_refuse_oversized_input() {
    let huge = vec![0u8; MAX_ENVELOPE_SIZE + 1];
    assert_eq!(peek_header(&huge), Err(OpenError::TooLarge));
    assert_eq!(
        open(&huge, &recipient_key()).unwrap_err(),
        OpenError::TooLarge
    );
}

#[test]
fn open_with_another_key_is_wrong_recipient() {
    let sealed = round_trip(&letter(MessageId::random(), b"for bob only"));
    let eve = SecretKey::from([0x55; 32]);
    assert_eq!(open(&sealed, &eve).unwrap_err(), OpenError::WrongRecipient);
    // The sender cannot open what it sealed either: the header names the recipient.
    assert_eq!(
        open(&sealed, &sender_key()).unwrap_err(),
        OpenError::WrongRecipient
    );
}

#[test]
fn peek_header_reads_ids_without_a_key() {
    let id = MessageId::random();
    let sealed = round_trip(&letter(id, b"peek"));
    let header = peek_header(&sealed[..HEADER_SIZE]).unwrap();
    assert_eq!(header.version, 1);
    assert_eq!(header.message_id, id);
    assert_eq!(header.sender, public_key_of(&sender_key()));
    assert_eq!(header.recipient, public_key_of(&recipient_key()));
}

#[test]
fn every_truncation_of_a_minimal_envelope_fails() {
    let sealed = round_trip(&letter(MessageId::random(), b"short"));
    assert_eq!(sealed.len(), MIN_ENVELOPE_SIZE);
    for len in 0..sealed.len() {
        let prefix = &sealed[..len];
        assert_eq!(
            open(prefix, &recipient_key()).unwrap_err(),
            OpenError::TooShort,
            "len {len}"
        );
        match peek_header(prefix) {
            Ok(_) => assert!(len >= HEADER_SIZE),
            Err(e) => assert!(len < HEADER_SIZE && e == OpenError::TooShort, "len {len}"),
        }
    }
}

#[test]
fn every_truncation_of_a_larger_envelope_fails() {
    let sealed = round_trip(&letter(MessageId::random(), &noise(3, 9_000)));
    assert!(sealed.len() > MIN_ENVELOPE_SIZE);
    for len in MIN_ENVELOPE_SIZE..sealed.len() {
        assert_eq!(
            open(&sealed[..len], &recipient_key()).unwrap_err(),
            OpenError::Decrypt,
            "len {len}"
        );
    }
}

#[test]
fn garbage_is_rejected_without_panicking() {
    for (seed, len) in (0..200u64).map(|s| (s, (s as usize * 397) % 9_000)) {
        let bytes = noise(seed, len);
        assert!(open(&bytes, &recipient_key()).is_err());
        let _ = peek_header(&bytes);
    }
    // Garbage behind a valid-looking header reaches the MAC check and fails there.
    let mut bytes = noise(99, 5_000);
    bytes[..4].copy_from_slice(b"TXM1");
    bytes[4..8].copy_from_slice(&[1, 0, 0, 0]);
    bytes[72..104].copy_from_slice(public_key_of(&recipient_key()).as_bytes());
    assert_eq!(
        open(&bytes, &recipient_key()).unwrap_err(),
        OpenError::Decrypt
    );
}

#[test]
fn open_error_classification() {
    use toxmail_protocol::NackCode;
    let table = [
        (OpenError::TooShort, false, NackCode::Malformed),
        (OpenError::TooLarge, false, NackCode::TooLarge),
        (OpenError::BadMagic, false, NackCode::Malformed),
        (
            OpenError::UnsupportedVersion(2),
            false,
            NackCode::UnsupportedVersion,
        ),
        (OpenError::WrongRecipient, false, NackCode::WrongRecipient),
        (OpenError::Decrypt, true, NackCode::Forged),
        (OpenError::Malformed("x"), true, NackCode::Forged),
        (OpenError::IdMismatch, true, NackCode::Forged),
    ];
    for (err, forgery, code) in table {
        assert_eq!(err.is_forgery(), forgery, "{err:?}");
        assert_eq!(err.nack_code(), code, "{err:?}");
        assert!(!err.to_string().is_empty());
    }
}
