//! Tampering with every region of an envelope, on the wire and inside a re-sealed plaintext,
//! must give the matching `OpenError`, and header swaps or impersonation must be caught.

mod common;

use common::{letter, recipient_key, reseal, sender_key};
use toxmail_protocol::{
    HEADER_SIZE, MessageId, OpenError, PublicKey, SecretKey, open, public_key_of, seal,
};

fn sealed(message: &[u8]) -> Vec<u8> {
    let l = letter(MessageId([0x44; 32]), message);
    seal(&l, &sender_key(), &public_key_of(&recipient_key())).unwrap()
}

fn open_err(bytes: &[u8]) -> OpenError {
    open(bytes, &recipient_key()).unwrap_err()
}

/// What flipping the low bit of byte `i` must produce.
fn expected_for_byte(i: usize) -> OpenError {
    match i {
        0..4 => OpenError::BadMagic,
        4 => OpenError::UnsupportedVersion(0),
        5..8 => OpenError::Malformed("reserved header bytes are not zero"),
        8..40 => OpenError::IdMismatch,
        72..104 => OpenError::WrongRecipient,
        // Sender key (a different key agreement), nonce, tag, ciphertext and padding.
        _ => OpenError::Decrypt,
    }
}

#[test]
fn flipping_any_byte_gives_the_error_of_its_region() {
    let envelope = sealed(b"tamper me");
    assert_eq!(envelope.len(), 4096);
    for i in 0..envelope.len() {
        let mut bad = envelope.clone();
        bad[i] ^= 0x01;
        let err = open_err(&bad);
        assert_eq!(err, expected_for_byte(i), "byte {i}");
        assert_eq!(err.is_forgery(), !matches!(i, 0..5 | 72..104), "byte {i}");
    }
}

#[test]
fn equivalent_encoding_of_the_sender_key_is_caught_by_the_header_copy() {
    // X25519 ignores the top bit of a public key, so this decrypts fine; only the
    // authenticated copy of the header shows the cleartext sender was altered.
    let mut bad = sealed(b"same key, other bytes");
    bad[71] ^= 0x80;
    assert_eq!(open_err(&bad), OpenError::IdMismatch);
}

#[test]
fn small_order_sender_key_is_refused_before_decrypting() {
    let mut bad = sealed(b"x");
    bad[40..72].fill(0);
    assert_eq!(
        open_err(&bad),
        OpenError::Malformed("sender key is a small-order point")
    );
}

#[test]
fn header_swapped_between_two_envelopes_is_id_mismatch() {
    let a = seal(
        &letter(MessageId([0xaa; 32]), b"first"),
        &sender_key(),
        &public_key_of(&recipient_key()),
    )
    .unwrap();
    let b = seal(
        &letter(MessageId([0xbb; 32]), b"second"),
        &sender_key(),
        &public_key_of(&recipient_key()),
    )
    .unwrap();
    // Header fields without the nonce: the ciphertext still decrypts, the copy disagrees.
    let swapped = [&a[..104], &b[104..]].concat();
    assert_eq!(open_err(&swapped), OpenError::IdMismatch);
    // The whole header, nonce included: authentication fails.
    let swapped = [&a[..HEADER_SIZE], &b[HEADER_SIZE..]].concat();
    assert_eq!(open_err(&swapped), OpenError::Decrypt);
}

#[test]
fn impersonating_another_sender_fails_authentication() {
    let eve = SecretKey::from([0x66; 32]);
    let l = letter(MessageId::random(), b"I am Alice, honest");
    let mut forged = seal(&l, &eve, &public_key_of(&recipient_key())).unwrap();
    forged[40..72].copy_from_slice(public_key_of(&sender_key()).as_bytes());
    assert_eq!(open_err(&forged), OpenError::Decrypt);
}

#[test]
fn reseal_without_change_still_opens() {
    let envelope = sealed(b"control");
    let again = reseal(&envelope, |_| {});
    assert_eq!(
        open(&again, &recipient_key()).unwrap().letter.message,
        b"control"
    );
}

#[test]
fn resealed_nonzero_padding_is_malformed() {
    let bad = reseal(&sealed(b"pad"), |p| *p.last_mut().unwrap() = 1);
    assert_eq!(open_err(&bad), OpenError::Malformed("padding is not zero"));
}

#[test]
fn resealed_inner_header_copy_change_is_id_mismatch() {
    for offset in [0, 4, 5, 8, 39, 40, 103] {
        let bad = reseal(&sealed(b"copy"), |p| p[offset] ^= 1);
        assert_eq!(open_err(&bad), OpenError::IdMismatch, "offset {offset}");
    }
}

#[test]
fn resealed_envelope_grown_past_its_bucket_is_malformed() {
    let bad = reseal(&sealed(b"grow"), |p| p.extend_from_slice(&[0; 4096]));
    assert_eq!(
        open_err(&bad),
        OpenError::Malformed("envelope length is not its content's size bucket")
    );
}

#[test]
fn resealed_envelope_one_byte_short_of_its_bucket_is_malformed() {
    let envelope = sealed(&[9; 9_000]);
    assert!(envelope.len() > 4096);
    let bad = reseal(&envelope, |p| {
        p.pop();
    });
    assert_eq!(
        open_err(&bad),
        OpenError::Malformed("envelope length is not its content's size bucket")
    );
}

#[test]
fn resealed_bad_lengths_and_text_are_malformed() {
    // Plaintext offsets: 104 = envelope_sender length, then its 17 bytes, recipient (2 + 15),
    // queue_id (2 + 9), two u64 times, then the u32 message length.
    let at = 104 + 2 + 17 + 2 + 15 + 2 + 9 + 16;
    let bad = reseal(&sealed(b"len"), |p| {
        p[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes())
    });
    assert_eq!(
        open_err(&bad),
        OpenError::Malformed("message length exceeds the envelope")
    );
    let bad = reseal(&sealed(b"len"), |p| {
        p[104..106].copy_from_slice(&1025u16.to_be_bytes())
    });
    assert_eq!(
        open_err(&bad),
        OpenError::Malformed("metadata field longer than 1024 bytes")
    );
    let bad = reseal(&sealed(b"len"), |p| p[106] = 0xff);
    assert_eq!(
        open_err(&bad),
        OpenError::Malformed("metadata is not UTF-8")
    );
}

#[test]
fn wrong_recipient_is_checked_before_any_decryption() {
    // A corrupted ciphertext addressed to someone else is still WrongRecipient, not Decrypt.
    let mut bad = sealed(b"x");
    bad[72..104].copy_from_slice(&PublicKey([0x77; 32]).0);
    bad[2000] ^= 1;
    assert_eq!(open_err(&bad), OpenError::WrongRecipient);
}
