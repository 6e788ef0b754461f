//! Golden vectors: fixed keys, nonce and ids must produce exactly the bytes in `tests/golden/`,
//! and decoding those bytes must give the values back. A change here is a wire format change.
//!
//! To regenerate after a deliberate format change: `UPDATE_GOLDEN=1 cargo test -p
//! toxmail-protocol --test golden`, then review the diff and update docs/protocol.md.

mod common;

use std::path::PathBuf;

use common::{
    GOLDEN_MESSAGE_ID, GOLDEN_NONCE, golden_extended_letter, golden_letter, recipient_key,
    sender_key,
};
use toxmail_protocol::{
    Custody, Deposit, Frame, Hello, Holding, MAX_ENVELOPE_SIZE, Nack, NackClass, NackCode, Offer,
    PublicKey, Refuse, Register, RelayFrame, RelayList, RelayRefusal, ReleaseOutcome, Released,
    ToxId, open, peek_header, public_key_of, seal_with_nonce,
};

/// Compares `bytes` with the hex file `name` (whitespace ignored), or rewrites the file when
/// `UPDATE_GOLDEN` is set.
fn check_golden(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let hex = hex::encode(bytes);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let lines: Vec<&str> = hex
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        return;
    }
    let stored: String = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split_whitespace()
        .collect();
    assert_eq!(hex, stored, "{name} differs from the golden vector");
}

fn read_golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text: String = std::fs::read_to_string(&path)
        .unwrap()
        .split_whitespace()
        .collect();
    hex::decode(text).unwrap()
}

#[test]
fn golden_envelope_seals_to_the_stored_bytes() {
    let sealed = seal_with_nonce(
        &golden_letter(),
        &sender_key(),
        &public_key_of(&recipient_key()),
        GOLDEN_NONCE,
    )
    .unwrap();
    assert_eq!(sealed.len(), 4096);
    check_golden("envelope.hex", &sealed);
}

#[test]
fn golden_envelope_opens_to_the_golden_letter() {
    let bytes = read_golden("envelope.hex");
    let header = peek_header(&bytes).unwrap();
    assert_eq!(header.message_id, GOLDEN_MESSAGE_ID);
    assert_eq!(header.sender, public_key_of(&sender_key()));
    assert_eq!(header.recipient, public_key_of(&recipient_key()));
    let opened = open(&bytes, &recipient_key()).unwrap();
    assert_eq!(opened.sender, public_key_of(&sender_key()));
    assert_eq!(opened.letter, golden_letter());
}

#[test]
fn golden_extended_envelope_seals_to_the_stored_bytes_and_opens() {
    let letter = golden_extended_letter();
    let sealed = seal_with_nonce(
        &letter,
        &sender_key(),
        &public_key_of(&recipient_key()),
        GOLDEN_NONCE,
    )
    .unwrap();
    assert_eq!(sealed.len(), 4096);
    assert_eq!(peek_header(&sealed).unwrap().version, 3);
    check_golden("envelope_extended.hex", &sealed);
    let opened = open(&read_golden("envelope_extended.hex"), &recipient_key()).unwrap();
    assert_eq!(opened.letter, letter);
}

/// The extended letter with a DSN request (RFC 3461) in non-critical entries; the two vectors
/// above (no DSN request) are unchanged by it.
#[test]
fn golden_dsn_envelope_seals_to_the_stored_bytes_and_opens() {
    use toxmail_protocol::{DsnRequest, DsnRet, OrcptType};
    let mut letter = golden_extended_letter();
    letter.metadata.extensions.dsn = DsnRequest {
        notify: Some(DsnRequest::FAILURE | DsnRequest::DELAY),
        orcpt: Some((OrcptType::Utf8, "j\\x{F6}rg@b\\x{FC}cher.example".into())),
        ret: Some(DsnRet::Hdrs),
        envid: Some("QQ314159".into()),
    };
    let sealed = seal_with_nonce(
        &letter,
        &sender_key(),
        &public_key_of(&recipient_key()),
        GOLDEN_NONCE,
    )
    .unwrap();
    assert_eq!(sealed.len(), 4096);
    assert_eq!(peek_header(&sealed).unwrap().version, 3);
    check_golden("envelope_dsn.hex", &sealed);
    let opened = open(&read_golden("envelope_dsn.hex"), &recipient_key()).unwrap();
    assert_eq!(opened.letter, letter);
}

/// The golden envelope's expiry, reused by the relay frames.
const GOLDEN_EXPIRES: u64 = 1_700_432_000;

fn golden_frames() -> Vec<(&'static str, Frame)> {
    let mut frames = transfer_golden_frames();
    frames.extend(
        relay_golden_frames()
            .into_iter()
            .map(|(name, frame)| (name, Frame::Relay(frame))),
    );
    frames
}

fn transfer_golden_frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "hello.hex",
            Frame::Hello(Hello {
                version_min: 1,
                version_max: 1,
                max_envelope: MAX_ENVELOPE_SIZE as u64,
            }),
        ),
        (
            "offer.hex",
            Frame::Offer(Offer {
                message_id: GOLDEN_MESSAGE_ID,
                size: 4096,
            }),
        ),
        ("ack.hex", Frame::Ack(GOLDEN_MESSAGE_ID)),
        (
            "nack.hex",
            Frame::Nack(Nack {
                message_id: GOLDEN_MESSAGE_ID,
                class: NackClass::Permanent,
                code: NackCode::UnknownMailbox,
                detail: "no such mailbox: bob@example.net".into(),
            }),
        ),
    ]
}

fn relay_golden_frames() -> Vec<(&'static str, RelayFrame)> {
    vec![
        (
            "deposit.hex",
            RelayFrame::Deposit(Deposit {
                message_id: GOLDEN_MESSAGE_ID,
                recipient: public_key_of(&recipient_key()),
                size: 4096,
                expires: GOLDEN_EXPIRES,
            }),
        ),
        (
            "custody.hex",
            RelayFrame::Custody(Custody {
                message_id: GOLDEN_MESSAGE_ID,
                expires: GOLDEN_EXPIRES,
            }),
        ),
        (
            "refuse.hex",
            RelayFrame::Refuse(Refuse {
                message_id: GOLDEN_MESSAGE_ID,
                class: NackClass::Temporary,
                code: RelayRefusal::RecipientFull,
                detail: "recipient mailbox full".into(),
            }),
        ),
        (
            "register.hex",
            RelayFrame::Register(Register {
                expires: GOLDEN_EXPIRES,
            }),
        ),
        (
            "holding.hex",
            RelayFrame::Holding(Holding {
                expires: GOLDEN_EXPIRES,
                count: 1,
                bytes: 4096,
            }),
        ),
        (
            "released.hex",
            RelayFrame::Released(Released {
                message_id: GOLDEN_MESSAGE_ID,
                outcome: ReleaseOutcome::Delivered,
            }),
        ),
        (
            "relay_list.hex",
            RelayFrame::RelayList(RelayList {
                relays: vec![
                    ToxId::new(PublicKey([0x11; 32]), 0x1234_5678),
                    ToxId::new(PublicKey([0x55; 32]), 0xCAFE_F00D),
                ],
            }),
        ),
    ]
}

#[test]
fn golden_frames_encode_to_the_stored_bytes() {
    for (name, frame) in golden_frames() {
        check_golden(name, &frame.encode());
    }
}

#[test]
fn golden_frames_decode_to_their_values() {
    for (name, frame) in golden_frames() {
        assert_eq!(Frame::decode(&read_golden(name)), Ok(frame), "{name}");
    }
}
