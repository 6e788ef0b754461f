//! Frame round trips for every kind, truncation at every length, and each `FrameError`.

mod common;

use common::noise;
use toxmail_protocol::{
    Frame, FrameError, Hello, MAX_FRAME_SIZE, MessageId, Nack, NackClass, NackCode, Offer,
    PACKET_ID,
};

fn sample_frames() -> Vec<Frame> {
    let id = MessageId([0x5c; 32]);
    vec![
        Frame::Hello(Hello {
            version_min: 1,
            version_max: 1,
            max_envelope: 64 << 20,
        }),
        Frame::Hello(Hello {
            version_min: 1,
            version_max: 255,
            max_envelope: u64::MAX,
        }),
        Frame::Offer(Offer {
            message_id: id,
            size: 0,
        }),
        Frame::Offer(Offer {
            message_id: MessageId::random(),
            size: u64::MAX,
        }),
        Frame::Ack(id),
        Frame::Nack(Nack {
            message_id: id,
            class: NackClass::Temporary,
            code: NackCode::Busy,
            detail: String::new(),
        }),
        Frame::Nack(Nack {
            message_id: id,
            class: NackClass::Permanent,
            code: NackCode::Other(4242),
            detail: "quota exceeded — try again never ✉".into(),
        }),
        Frame::Nack(Nack {
            message_id: id,
            class: NackClass::Permanent,
            code: NackCode::Forged,
            detail: "d".repeat(256),
        }),
    ]
}

#[test]
fn every_frame_kind_round_trips() {
    for frame in sample_frames() {
        let bytes = frame.encode();
        assert_eq!(bytes[0], PACKET_ID);
        assert_eq!(bytes[1], 1);
        assert!(bytes.len() <= 296 && bytes.len() <= MAX_FRAME_SIZE);
        assert_eq!(Frame::decode(&bytes), Ok(frame));
    }
}

#[test]
fn every_truncation_of_every_frame_is_an_error() {
    for frame in sample_frames() {
        let bytes = frame.encode();
        for len in 0..bytes.len() {
            let err = Frame::decode(&bytes[..len]).unwrap_err();
            let expected = if len == 0 {
                FrameError::Empty
            } else {
                FrameError::Truncated
            };
            assert_eq!(err, expected, "{frame:?} cut to {len}");
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    for frame in sample_frames() {
        let mut bytes = frame.encode();
        bytes.push(0);
        assert_eq!(Frame::decode(&bytes), Err(FrameError::TrailingBytes));
    }
}

#[test]
fn header_bytes_are_checked() {
    let ack = Frame::Ack(MessageId([1; 32])).encode();
    let with = |i: usize, v: u8| {
        let mut b = ack.clone();
        b[i] = v;
        Frame::decode(&b)
    };
    assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
    assert_eq!(with(0, 160), Err(FrameError::WrongPacketId(160)));
    assert_eq!(with(1, 0), Err(FrameError::UnsupportedVersion(0)));
    assert_eq!(with(1, 2), Err(FrameError::UnsupportedVersion(2)));
    assert_eq!(with(2, 0), Err(FrameError::UnknownKind(0)));
    assert_eq!(with(2, 5), Err(FrameError::UnknownKind(5)));
    assert_eq!(with(2, 255), Err(FrameError::UnknownKind(255)));
}

#[test]
fn oversized_packets_are_too_long() {
    let mut bytes = vec![PACKET_ID, 1, 3];
    bytes.resize(MAX_FRAME_SIZE, 0);
    assert_eq!(Frame::decode(&bytes), Err(FrameError::TrailingBytes));
    bytes.push(0);
    assert_eq!(Frame::decode(&bytes), Err(FrameError::TooLong));
}

#[test]
fn hello_version_range_must_be_sane() {
    let hello = |min, max| {
        Frame::Hello(Hello {
            version_min: min,
            version_max: max,
            max_envelope: 1,
        })
    };
    assert!(Frame::decode(&hello(1, 3).encode()).is_ok());
    assert!(Frame::decode(&hello(2, 2).encode()).is_ok());
    for (min, max) in [(0, 1), (0, 0), (2, 1)] {
        assert_eq!(
            Frame::decode(&hello(min, max).encode()),
            Err(FrameError::BadValue("Hello version range")),
        );
    }
}

fn nack_bytes(class: u8, detail: &[u8], declared_len: u16) -> Vec<u8> {
    let mut bytes = vec![PACKET_ID, 1, 4];
    bytes.extend_from_slice(&[7; 32]);
    bytes.push(class);
    bytes.extend_from_slice(&5u16.to_be_bytes());
    bytes.extend_from_slice(&declared_len.to_be_bytes());
    bytes.extend_from_slice(detail);
    bytes
}

#[test]
fn nack_fields_are_validated() {
    assert!(Frame::decode(&nack_bytes(4, b"ok", 2)).is_ok());
    assert!(Frame::decode(&nack_bytes(5, b"ok", 2)).is_ok());
    for class in [0, 1, 3, 6, 255] {
        assert_eq!(
            Frame::decode(&nack_bytes(class, b"ok", 2)),
            Err(FrameError::BadValue("Nack class"))
        );
    }
    assert_eq!(
        Frame::decode(&nack_bytes(5, b"\xff\xfe", 2)),
        Err(FrameError::BadUtf8)
    );
    assert_eq!(
        Frame::decode(&nack_bytes(5, b"ok", 3)),
        Err(FrameError::Truncated)
    );
    assert_eq!(
        Frame::decode(&nack_bytes(5, &[b'x'; 257], 257)),
        Err(FrameError::TooLong)
    );
    assert_eq!(
        Frame::decode(&nack_bytes(5, b"", u16::MAX)),
        Err(FrameError::TooLong)
    );
}

#[test]
fn nack_code_survives_the_wire_for_every_number() {
    for n in (0..=u16::MAX).step_by(97).chain(0..=16) {
        let frame = Frame::Nack(Nack {
            message_id: MessageId([0; 32]),
            class: NackClass::Temporary,
            code: NackCode::from_u16(n),
            detail: String::new(),
        });
        let Ok(Frame::Nack(nack)) = Frame::decode(&frame.encode()) else {
            panic!("code {n} did not round trip");
        };
        assert_eq!(nack.code.as_u16(), n);
    }
}

#[test]
fn garbage_never_panics_and_decoded_garbage_re_encodes_identically() {
    for seed in 0..2_000u64 {
        let len = (seed as usize * 31) % 400;
        let mut bytes = noise(seed, len);
        if seed % 2 == 0 && len >= 3 {
            // Give half the inputs a valid prefix so the body decoders get exercised.
            bytes[0] = PACKET_ID;
            bytes[1] = 1;
            bytes[2] = 1 + (seed % 4) as u8;
        }
        if let Ok(frame) = Frame::decode(&bytes) {
            assert_eq!(frame.encode(), bytes);
        }
    }
}
