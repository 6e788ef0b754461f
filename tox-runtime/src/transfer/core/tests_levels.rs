//! Unit tests of protocol levels: the Hello we send, peers of either level, and a compressed
//! envelope that a level-1 peer could not open.

use std::sync::Arc;

use toxmail_protocol::{
    ENVELOPE_VERSION_COMPRESSED, Frame, Hello, NackClass, NackCode, PROTOCOL_LEVEL,
};

use super::testkit::*;
use super::{Action, Input};
use crate::transfer::DeliveryError;

const PEER: u8 = 7;
const FRIEND: u32 = 3;

fn hello_at(level: u8) -> Frame {
    Frame::Hello(Hello {
        version_min: 1,
        version_max: level,
        max_envelope: 64 << 20,
    })
}

/// `PEER` online, having said hello at `level`; returns what the core sent it.
fn peer_at(h: &mut Harness, level: u8) -> Vec<Action> {
    let pk = key(PEER);
    h.input(Input::Friend { pk, friend: FRIEND });
    let mut actions = h.input(Input::Connection {
        pk,
        friend: FRIEND,
        online: true,
    });
    actions.extend(h.input(packet(FRIEND, pk, &hello_at(level))));
    actions
}

fn compressed(n: u8) -> Arc<[u8]> {
    let mut bytes = envelope(msg(n), SELF_KEY, key(PEER), 5_000).to_vec();
    bytes[4] = ENVELOPE_VERSION_COMPRESSED;
    bytes.into()
}

fn extended(n: u8) -> Arc<[u8]> {
    let mut bytes = envelope(msg(n), SELF_KEY, key(PEER), 5_000).to_vec();
    bytes[4] = toxmail_protocol::ENVELOPE_VERSION_EXTENDED;
    bytes.into()
}

fn deliver(h: &mut Harness, n: u8, envelope: Arc<[u8]>) -> Vec<Action> {
    h.input(Input::Deliver {
        to: key(PEER),
        id: msg(n),
        envelope,
        deposit_until: None,
    })
}

#[test]
fn our_hello_announces_versions_one_to_the_protocol_level() {
    let mut h = Harness::new();
    let sent = peer_at(&mut h, 1);
    let hellos: Vec<_> = frames_to(&sent, key(PEER))
        .into_iter()
        .filter_map(|f| match f {
            Frame::Hello(hello) => Some((hello.version_min, hello.version_max)),
            _ => None,
        })
        .collect();
    assert_eq!(hellos, [(1, PROTOCOL_LEVEL)]);
}

#[test]
fn a_compressed_envelope_goes_to_a_level_2_peer_and_fails_locally_for_a_level_1_peer() {
    let mut h = Harness::new();
    peer_at(&mut h, 2);
    assert_eq!(
        offers(&deliver(&mut h, 1, compressed(1))),
        [(key(PEER), msg(1))]
    );

    let mut h = Harness::new();
    peer_at(&mut h, 1);
    let actions = deliver(&mut h, 2, compressed(2));
    assert!(offers(&actions).is_empty(), "no byte moves");
    let refused = actions.iter().any(|a| {
        matches!(a, Action::Complete { result: Err(DeliveryError::Refused(n)), .. }
            if n.code == NackCode::UnsupportedVersion)
    });
    assert!(refused, "{actions:?}");
    // A version-1 envelope still goes to the level-1 peer.
    let plain = envelope(msg(3), SELF_KEY, key(PEER), 5_000);
    assert_eq!(offers(&deliver(&mut h, 3, plain)), [(key(PEER), msg(3))]);
}

#[test]
fn a_peer_whose_versions_start_above_ours_gets_nothing() {
    let mut h = Harness::new();
    let pk = key(PEER);
    h.input(Input::Friend { pk, friend: FRIEND });
    h.input(Input::Connection {
        pk,
        friend: FRIEND,
        online: true,
    });
    let plain = envelope(msg(4), SELF_KEY, pk, 5_000);
    assert!(
        offers(&deliver(&mut h, 4, plain)).is_empty(),
        "waits for hello"
    );
    let future = Frame::Hello(Hello {
        version_min: PROTOCOL_LEVEL + 1,
        version_max: PROTOCOL_LEVEL + 3,
        max_envelope: 64 << 20,
    });
    let actions = h.input(packet(FRIEND, pk, &future));
    assert!(offers(&actions).is_empty());
    assert_eq!(completes(&actions), [((pk, msg(4)), false)]);
}

#[test]
fn an_extended_envelope_goes_to_a_level_3_peer_and_fails_locally_below() {
    let mut h = Harness::new();
    peer_at(&mut h, 3);
    assert_eq!(
        offers(&deliver(&mut h, 1, extended(1))),
        [(key(PEER), msg(1))]
    );
    for level in [1, 2] {
        let mut h = Harness::new();
        peer_at(&mut h, level);
        let actions = deliver(&mut h, 2, extended(2));
        assert!(offers(&actions).is_empty(), "no byte moves");
        let refused = actions.iter().any(|a| {
            matches!(a, Action::Complete { result: Err(DeliveryError::Refused(n)), .. }
                if n.code == NackCode::UnsupportedVersion && n.class == NackClass::Permanent)
        });
        assert!(refused, "{actions:?}");
    }
}
