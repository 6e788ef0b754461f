//! Relay frame round trips through `Frame::decode`, truncation at every length, trailing bytes,
//! each field check, and garbage behind a relay kind byte.

mod common;

use common::noise;
use toxmail_protocol::{
    Custody, Deposit, Frame, FrameError, Holding, MAX_FRAME_SIZE, MAX_RELAYS, MessageId, NackClass,
    PACKET_ID, PublicKey, REGISTER_SUBJECT, Refuse, Register, RelayFrame, RelayList, RelayRefusal,
    ReleaseOutcome, Released, ToxId,
};

fn tox_id(n: u8) -> ToxId {
    ToxId::new(PublicKey([n; 32]), u32::from(n) << 24 | 0x00ab_cdef)
}

fn sample_relay_frames() -> Vec<RelayFrame> {
    let id = MessageId([0x5c; 32]);
    vec![
        RelayFrame::Deposit(Deposit {
            message_id: id,
            recipient: PublicKey([0x7e; 32]),
            size: 4096,
            expires: 1_700_432_000,
        }),
        RelayFrame::Deposit(Deposit {
            message_id: MessageId::random(),
            recipient: PublicKey([0xff; 32]),
            size: u64::MAX,
            expires: 0,
        }),
        RelayFrame::Custody(Custody {
            message_id: id,
            expires: u64::MAX,
        }),
        RelayFrame::Refuse(Refuse {
            message_id: id,
            class: NackClass::Temporary,
            code: RelayRefusal::QuotaBytes,
            detail: String::new(),
        }),
        RelayFrame::Refuse(Refuse {
            message_id: REGISTER_SUBJECT,
            class: NackClass::Permanent,
            code: RelayRefusal::Other(4242),
            detail: "r".repeat(256),
        }),
        RelayFrame::Register(Register { expires: 0 }),
        RelayFrame::Holding(Holding {
            expires: 1,
            count: u32::MAX,
            bytes: u64::MAX,
        }),
        RelayFrame::Released(Released {
            message_id: id,
            outcome: ReleaseOutcome::Delivered,
        }),
        RelayFrame::Released(Released {
            message_id: id,
            outcome: ReleaseOutcome::Expired,
        }),
        RelayFrame::Released(Released {
            message_id: id,
            outcome: ReleaseOutcome::Rejected,
        }),
        RelayFrame::RelayList(RelayList { relays: vec![] }),
        RelayFrame::RelayList(RelayList {
            relays: vec![tox_id(1)],
        }),
        RelayFrame::RelayList(RelayList {
            relays: (1..=8).map(tox_id).collect(),
        }),
    ]
}

fn sample_frames() -> impl Iterator<Item = Frame> {
    sample_relay_frames().into_iter().map(Frame::Relay)
}

#[test]
fn every_relay_frame_round_trips_through_frame_decode() {
    for frame in sample_frames() {
        let bytes = frame.encode();
        assert_eq!(bytes[..2], [PACKET_ID, 1]);
        assert!((16..=22).contains(&bytes[2]), "{frame:?}");
        assert!(bytes.len() <= 308 && bytes.len() <= MAX_FRAME_SIZE);
        assert_eq!(Frame::decode(&bytes), Ok(frame));
    }
}

#[test]
fn every_truncation_of_every_relay_frame_is_an_error() {
    for frame in sample_frames() {
        let bytes = frame.encode();
        for len in 0..bytes.len() {
            let expected = if len == 0 {
                FrameError::Empty
            } else {
                FrameError::Truncated
            };
            assert_eq!(
                Frame::decode(&bytes[..len]),
                Err(expected),
                "{frame:?} cut to {len}"
            );
        }
    }
}

#[test]
fn relay_frame_trailing_bytes_are_rejected() {
    for frame in sample_frames() {
        let mut bytes = frame.encode();
        bytes.push(0);
        assert_eq!(Frame::decode(&bytes), Err(FrameError::TrailingBytes));
    }
}

#[test]
fn unassigned_kinds_around_the_relay_range_are_unknown() {
    for kind in (5..16).chain(23..=31).chain([32, 255]) {
        let bytes = [PACKET_ID, 1, kind, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Frame::decode(&bytes), Err(FrameError::UnknownKind(kind)));
    }
}

#[test]
fn relay_frames_with_another_version_byte_are_refused() {
    let mut bytes = Frame::Relay(RelayFrame::Register(Register { expires: 9 })).encode();
    bytes[1] = 2;
    assert_eq!(
        Frame::decode(&bytes),
        Err(FrameError::UnsupportedVersion(2))
    );
}

#[test]
fn deposit_with_the_register_subject_id_is_refused() {
    let deposit = Frame::Relay(RelayFrame::Deposit(Deposit {
        message_id: REGISTER_SUBJECT,
        recipient: PublicKey([1; 32]),
        size: 4096,
        expires: 1,
    }));
    assert_eq!(
        Frame::decode(&deposit.encode()),
        Err(FrameError::BadValue("Deposit message id"))
    );
}

fn refuse_bytes(class: u8, detail: &[u8], declared_len: u16) -> Vec<u8> {
    let mut bytes = vec![PACKET_ID, 1, 18];
    bytes.extend_from_slice(&[7; 32]);
    bytes.push(class);
    bytes.extend_from_slice(&2u16.to_be_bytes());
    bytes.extend_from_slice(&declared_len.to_be_bytes());
    bytes.extend_from_slice(detail);
    bytes
}

#[test]
fn refuse_fields_are_validated() {
    assert!(Frame::decode(&refuse_bytes(4, b"ok", 2)).is_ok());
    assert!(Frame::decode(&refuse_bytes(5, b"ok", 2)).is_ok());
    for class in [0, 1, 3, 6, 255] {
        assert_eq!(
            Frame::decode(&refuse_bytes(class, b"ok", 2)),
            Err(FrameError::BadValue("Refuse class"))
        );
    }
    assert_eq!(
        Frame::decode(&refuse_bytes(5, b"\xff\xfe", 2)),
        Err(FrameError::BadUtf8)
    );
    assert_eq!(
        Frame::decode(&refuse_bytes(5, &[b'x'; 257], 257)),
        Err(FrameError::TooLong)
    );
    assert_eq!(
        Frame::decode(&refuse_bytes(5, b"", u16::MAX)),
        Err(FrameError::TooLong)
    );
}

#[test]
fn refuse_detail_is_cut_at_a_char_boundary() {
    let refuse = Frame::Relay(RelayFrame::Refuse(Refuse {
        message_id: MessageId([1; 32]),
        class: NackClass::Temporary,
        code: RelayRefusal::QuotaCount,
        detail: format!("{}é", "x".repeat(255)),
    }));
    let Ok(Frame::Relay(RelayFrame::Refuse(decoded))) = Frame::decode(&refuse.encode()) else {
        panic!("Refuse did not decode");
    };
    assert_eq!(decoded.detail, "x".repeat(255));
}

#[test]
fn refusal_code_survives_the_wire_for_every_number() {
    for n in (0..=u16::MAX).step_by(97).chain(0..=16) {
        let frame = Frame::Relay(RelayFrame::Refuse(Refuse {
            message_id: MessageId([3; 32]),
            class: NackClass::Permanent,
            code: RelayRefusal::from_u16(n),
            detail: String::new(),
        }));
        let Ok(Frame::Relay(RelayFrame::Refuse(refuse))) = Frame::decode(&frame.encode()) else {
            panic!("code {n} did not round trip");
        };
        assert_eq!(refuse.code.as_u16(), n);
    }
}

#[test]
fn released_outcome_must_be_known() {
    let mut bytes = vec![PACKET_ID, 1, 21];
    bytes.extend_from_slice(&[9; 32]);
    for outcome in [0, 4, 255] {
        bytes.push(outcome);
        assert_eq!(
            Frame::decode(&bytes),
            Err(FrameError::BadValue("Released outcome"))
        );
        bytes.pop();
    }
}

fn relay_list_bytes(count: u8, ids: &[ToxId]) -> Vec<u8> {
    let mut bytes = vec![PACKET_ID, 1, 22, count];
    for id in ids {
        bytes.extend_from_slice(id.as_bytes());
    }
    bytes
}

#[test]
fn relay_list_count_is_bounded_and_the_encoder_keeps_the_first_eight() {
    let nine: Vec<ToxId> = (1..=9).map(tox_id).collect();
    assert_eq!(
        Frame::decode(&relay_list_bytes(9, &nine)),
        Err(FrameError::TooLong)
    );
    assert_eq!(
        Frame::decode(&relay_list_bytes(255, &[])),
        Err(FrameError::TooLong)
    );
    let long = Frame::Relay(RelayFrame::RelayList(RelayList {
        relays: nine.clone(),
    }));
    let Ok(Frame::Relay(RelayFrame::RelayList(list))) = Frame::decode(&long.encode()) else {
        panic!("RelayList did not decode");
    };
    assert_eq!(list.relays, nine[..MAX_RELAYS]);
}

#[test]
fn relay_list_checksums_are_verified() {
    let mut bytes = relay_list_bytes(2, &[tox_id(1), tox_id(2)]);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        Frame::decode(&bytes),
        Err(FrameError::BadValue("RelayList Tox ID"))
    );
}

#[test]
fn garbage_behind_relay_kinds_never_panics_and_re_encodes_identically() {
    let mut decoded = 0;
    for seed in 0..4_000u64 {
        let len = 3 + (seed as usize * 37) % 340;
        let mut bytes = noise(seed, len);
        bytes[0] = PACKET_ID;
        bytes[1] = 1;
        bytes[2] = 16 + (seed % 16) as u8;
        if seed % 3 == 0 {
            // Exact body lengths for the fixed-size kinds, so some garbage decodes.
            let body = [80, 40, 0, 8, 20, 33, 0][(seed / 3 % 7) as usize];
            if body != 0 {
                bytes[2] = 16 + (seed / 3 % 7) as u8;
                bytes.resize(3 + body, 1);
                bytes[3] = 1; // never the all-zero Deposit id, never an invalid outcome
                bytes[3 + body - 1] = 1;
            }
        }
        if let Ok(frame) = Frame::decode(&bytes) {
            decoded += 1;
            assert_eq!(frame.encode(), bytes);
        }
    }
    assert!(decoded > 100, "only {decoded} garbage inputs decoded");
}
