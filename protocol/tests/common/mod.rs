//! Keys and letters shared by the integration tests; also the fixed inputs of the golden vectors.
#![allow(dead_code)] // each test crate uses its own subset

use crypto_box::SalsaBox;
use crypto_box::aead::Aead;
use toxmail_protocol::{
    BodyType, Extensions, HEADER_SIZE, Letter, MessageId, Metadata, SecretKey, public_key_of,
};

pub fn sender_key() -> SecretKey {
    SecretKey::from([0x11; 32])
}

pub fn recipient_key() -> SecretKey {
    SecretKey::from([0x22; 32])
}

pub const GOLDEN_NONCE: [u8; 24] = [0x33; 24];
pub const GOLDEN_MESSAGE_ID: MessageId = MessageId([0x44; 32]);

/// The letter of the golden envelope.
pub fn golden_letter() -> Letter {
    letter(
        GOLDEN_MESSAGE_ID,
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: golden\r\n\r\nHello, Bob.\r\n",
    )
}

/// The letter of the golden extended envelope (version 3): a UTF-8 recipient and Subject, sealed
/// with SMTPUTF8 and BODY=8BITMIME.
pub fn golden_extended_letter() -> Letter {
    let mut letter = letter(
        MessageId([0x55; 32]),
        "From: alice@example.org\r\nTo: jörg@bücher.example\r\nSubject: grüße\r\n\r\nHallo, Jörg.\r\n"
            .as_bytes(),
    );
    letter.metadata.recipient = "jörg@bücher.example".into();
    letter.metadata.extensions = Extensions {
        smtputf8: true,
        body: BodyType::EightBitMime,
        ..Default::default()
    };
    letter
}

pub fn letter(message_id: MessageId, message: &[u8]) -> Letter {
    Letter {
        message_id,
        metadata: Metadata {
            envelope_sender: "alice@example.org".into(),
            recipient: "bob@example.net".into(),
            queue_id: "4ABCD1234".into(),
            created: 1_700_000_000,
            expires: 1_700_432_000,
            extensions: Default::default(),
        },
        message: message.to_vec(),
    }
}

/// Deterministic pseudo-random bytes (xorshift64), so garbage tests are reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Decrypts `envelope` (sealed by `sender_key` to `recipient_key`) as the recipient, lets `edit`
/// change the plaintext, and encrypts it again under the same header and nonce: an authentic
/// envelope with chosen contents.
pub fn reseal(envelope: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let sender_pk = crypto_box::PublicKey::from(public_key_of(&sender_key()).0);
    let cipher = SalsaBox::new(&sender_pk, &recipient_key());
    let nonce = crypto_box::Nonce::from_slice(&envelope[104..HEADER_SIZE]);
    let mut plaintext = cipher.decrypt(nonce, &envelope[HEADER_SIZE..]).unwrap();
    edit(&mut plaintext);
    let ciphertext = cipher.encrypt(nonce, &plaintext[..]).unwrap();
    [&envelope[..HEADER_SIZE], &ciphertext[..]].concat()
}
