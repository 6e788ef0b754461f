//! Envelopes under fuzzing, chosen by the first input byte:
//! 0: arbitrary bytes into `peek_header` and `open` with a fixed key;
//! 1: an arbitrary letter built from the input, sealed and opened back, must be unchanged;
//! 2: an arbitrary plaintext, encrypted under a valid header with the fixed keys, so the inner
//!    parser behind the MAC sees hostile input too; the input follows a correct header copy;
//! 3: as 2, but the input is the whole plaintext, header copy included;
//! 4, 5: as 2 and 3 under an envelope version 3 header, so the extension block parser sees
//!    hostile input.
#![no_main]

use std::sync::LazyLock;

use crypto_box::SalsaBox;
use crypto_box::aead::AeadInPlace;
use libfuzzer_sys::fuzz_target;
use toxmail_protocol::{
    BodyType, ENVELOPE_VERSION, ENVELOPE_VERSION_EXTENDED, Extensions, HEADER_SIZE, Letter,
    MIN_ENVELOPE_SIZE, MessageId, Metadata, SecretKey, open, peek_header, public_key_of, seal,
};

static SENDER: LazyLock<SecretKey> = LazyLock::new(|| SecretKey::from([0x11; 32]));
static RECIPIENT: LazyLock<SecretKey> = LazyLock::new(|| SecretKey::from([0x22; 32]));
static CIPHER: LazyLock<SalsaBox> =
    LazyLock::new(|| SalsaBox::new(&RECIPIENT.public_key(), &SENDER));

/// Header bytes 0..104 (everything but the nonce) for the fixed keys and message id 0x44...
fn header_copy(version: u8) -> Vec<u8> {
    let mut copy = b"TXM1".to_vec();
    copy.extend_from_slice(&[version, 0, 0, 0]);
    copy.extend_from_slice(&[0x44; 32]);
    copy.extend_from_slice(public_key_of(&SENDER).as_bytes());
    copy.extend_from_slice(public_key_of(&RECIPIENT).as_bytes());
    copy
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 6 {
        0 => raw_bytes(rest),
        1 => seal_and_open(rest),
        2 => hostile_plaintext(rest, true, ENVELOPE_VERSION),
        3 => hostile_plaintext(rest, false, ENVELOPE_VERSION),
        4 => hostile_plaintext(rest, true, ENVELOPE_VERSION_EXTENDED),
        _ => hostile_plaintext(rest, false, ENVELOPE_VERSION_EXTENDED),
    }
});

fn raw_bytes(bytes: &[u8]) {
    let header = peek_header(bytes);
    // Only authentic envelopes (the golden seed and its padding-free mutations) open, and then
    // the cleartext header must agree with what was authenticated.
    if let Ok(opened) = open(bytes, &RECIPIENT) {
        let header = header.expect("an envelope that opens has a readable header");
        assert_eq!(opened.letter.message_id, header.message_id);
        assert_eq!(opened.sender, header.sender);
    }
}

/// Splits the input into three short strings and a message.
fn seal_and_open(bytes: &[u8]) {
    let mut fields = bytes.splitn(4, |&b| b == 0xff);
    let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let metadata = Metadata {
        envelope_sender: text(),
        recipient: text(),
        queue_id: text(),
        created: bytes.len() as u64,
        expires: u64::MAX - bytes.len() as u64,
        // Every extension combination, extension blocks (versions 3 and 4) included.
        extensions: Extensions {
            smtputf8: bytes.len() % 2 == 1,
            body: [BodyType::SevenBit, BodyType::EightBitMime, BodyType::BinaryMime]
                [bytes.len() % 3],
            ..Default::default()
        },
    };
    let letter = Letter {
        message_id: MessageId([bytes.len() as u8; 32]),
        metadata,
        message: fields.next().unwrap_or_default().to_vec(),
    };
    let Ok(sealed) = seal(&letter, &SENDER, &public_key_of(&RECIPIENT)) else {
        return; // a field over 1024 bytes
    };
    let opened = open(&sealed, &RECIPIENT).expect("a sealed letter opens");
    assert_eq!(opened.letter, letter);
    assert_eq!(opened.sender, public_key_of(&SENDER));
}

fn hostile_plaintext(plaintext: &[u8], with_header_copy: bool, version: u8) {
    let copy = header_copy(version);
    let mut envelope = Vec::with_capacity(MIN_ENVELOPE_SIZE + plaintext.len());
    envelope.extend_from_slice(&copy);
    envelope.extend_from_slice(&[0x33; 24]);
    envelope.extend_from_slice(&[0; 16]);
    if with_header_copy {
        envelope.extend_from_slice(&copy);
    }
    envelope.extend_from_slice(plaintext);
    // Short inputs are zero-extended to the smallest envelope, as padding would be.
    if envelope.len() < MIN_ENVELOPE_SIZE {
        envelope.resize(MIN_ENVELOPE_SIZE, 0);
    }
    let (head, body) = envelope.split_at_mut(HEADER_SIZE + 16);
    let tag = CIPHER
        .encrypt_in_place_detached(&[0x33; 24].into(), b"", body)
        .expect("encryption");
    head[HEADER_SIZE..].copy_from_slice(&tag);
    if let Ok(opened) = open(&envelope, &RECIPIENT) {
        assert_eq!(opened.letter.message_id, MessageId([0x44; 32]));
        assert!(opened.letter.message.len() < envelope.len());
    }
}
