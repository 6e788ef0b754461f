//! Unit tests of envelopes coming in: offers and their files in either order, reused file
//! numbers, a peer going offline, resumed transfers, bounds. (Envelopes offered again and
//! deposits are tested in `tests_repeats.rs`.)

use std::time::Duration;

use toxmail_protocol::{Frame, MessageId, NackClass, NackCode, Offer, PublicKey};

use super::receiving::{MAX_OFFERS_PER_PEER, ORPHAN_WAIT};
use super::testkit::*;
use super::{AcceptOutcome, Action, FileKey, Input};
use crate::event::{FileNumber, FriendNumber};
use crate::transfer::PeerEvent;

pub(super) const A: PublicKey = PublicKey([1; 32]);
pub(super) const FA: FriendNumber = 0;
const B: PublicKey = PublicKey([2; 32]);
const FB: FriendNumber = 1;
pub(super) const SIZE: u64 = 1000;

pub(super) fn offer(h: &mut Harness, id: MessageId, size: u64) -> Vec<Action> {
    let frame = Frame::Offer(Offer {
        message_id: id,
        size,
    });
    h.input(packet(FA, A, &frame))
}

pub(super) fn file_recv(
    h: &mut Harness,
    file: FileNumber,
    id: MessageId,
    size: u64,
) -> Vec<Action> {
    h.input(Input::FileRecv {
        friend: FA,
        from: A,
        file,
        kind: 0,
        size,
        id,
    })
}

pub(super) fn checked(h: &mut Harness, id: MessageId, already_stored: bool) -> Vec<Action> {
    h.input(Input::Checked {
        from: A,
        id,
        already_stored,
    })
}

pub(super) fn chunk(h: &mut Harness, file: FileNumber, position: u64, len: usize) -> Vec<Action> {
    h.input(Input::FileChunk {
        key: (FA, file),
        position,
        data: vec![7; len],
    })
}

pub(super) fn checks(actions: &[Action]) -> Vec<MessageId> {
    let ids = actions.iter().filter_map(|a| match a {
        Action::Check { id, .. } => Some(*id),
        _ => None,
    });
    ids.collect()
}

pub(super) fn stores(actions: &[Action]) -> Vec<(FileKey, MessageId, bool)> {
    let ids = actions.iter().filter_map(|a| match a {
        Action::Store {
            key, id, resumed, ..
        } => Some((*key, *id, *resumed)),
        _ => None,
    });
    ids.collect()
}

/// A's offer of `id`, checked as new, and its file `file` accepted from `offset`.
pub(super) fn accepted(h: &mut Harness, file: FileNumber, id: MessageId, offset: u64) {
    assert_eq!(checks(&offer(h, id, SIZE)), [id]);
    assert!(checked(h, id, false).is_empty());
    assert_eq!(accepts(&file_recv(h, file, id, SIZE)), [((FA, file), id)]);
    let outcome = AcceptOutcome::Accepted { offset };
    assert!(
        h.input(Input::Accepted {
            key: (FA, file),
            outcome
        })
        .is_empty()
    );
}

pub(super) fn connected() -> Harness {
    let mut h = Harness::new();
    h.connect(A, FA);
    h
}

#[test]
fn a_reused_file_number_drops_the_parked_file_so_the_old_offer_never_accepts_the_new_file() {
    let mut h = connected();
    let (old, new, f) = (msg(1), msg(2), incoming(0));
    offer(&mut h, old, SIZE);
    assert!(file_recv(&mut h, f, old, SIZE).is_empty()); // parked until the inbox answers
    // The sender cancelled it (the cancel never reached us) and sends another message as `f`.
    assert!(file_recv(&mut h, f, new, 2 * SIZE).is_empty());
    assert!(checked(&mut h, old, false).is_empty(), "no file to accept");
    // The new message's offer takes its file.
    assert_eq!(checks(&offer(&mut h, new, 2 * SIZE)), [new]);
    assert_eq!(accepts(&checked(&mut h, new, false)), [((FA, f), new)]);
}

#[test]
fn a_reused_file_number_drops_the_orphan_so_its_late_offer_never_accepts_the_new_file() {
    let mut h = connected();
    let (old, new, f) = (msg(1), msg(2), incoming(0));
    file_recv(&mut h, f, old, SIZE);
    file_recv(&mut h, f, new, SIZE);
    offer(&mut h, old, SIZE);
    assert!(accepts(&checked(&mut h, old, false)).is_empty());
    // The new message's offer never came: its file is cancelled, once.
    assert_eq!(cancels(&h.tick_after(ORPHAN_WAIT)), [(FA, f)]);
    assert!(cancels(&h.tick_after(ORPHAN_WAIT)).is_empty());
}

#[test]
fn a_reused_file_number_closes_the_transfer_it_carried() {
    let mut h = connected();
    let f = incoming(0);
    accepted(&mut h, f, msg(1), 0);
    chunk(&mut h, f, 0, 100);
    let actions = file_recv(&mut h, f, msg(2), SIZE);
    assert_eq!(closes(&actions), [(FA, f)]);
    // Chunks under that number are no longer the old transfer's.
    assert!(chunk(&mut h, f, 100, 100).is_empty());
    assert!(h.core.active_spools().is_empty());
}

#[test]
fn an_offer_that_comes_after_its_file_accepts_it_once_the_inbox_says_it_is_new() {
    let mut h = connected();
    let (id, f) = (msg(1), incoming(2));
    assert!(file_recv(&mut h, f, id, SIZE).is_empty());
    let actions = offer(&mut h, id, SIZE);
    assert_eq!(checks(&actions), [id]);
    assert!(
        accepts(&actions).is_empty(),
        "not before the inbox answered"
    );
    let actions = checked(&mut h, id, false);
    assert!(matches!(
        actions[..],
        [Action::Accept { key, from, id: i, size }] if key == (FA, f) && from == A && i == id && size == SIZE
    ));
}

#[test]
fn a_file_whose_offer_never_comes_is_cancelled_after_the_orphan_wait() {
    let mut h = connected();
    let f = incoming(0);
    file_recv(&mut h, f, msg(1), SIZE);
    let actions = h.tick_after(ORPHAN_WAIT - Duration::from_millis(100));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(
        cancels(&h.tick_after(Duration::from_millis(100))),
        [(FA, f)]
    );
    // Its offer, coming now, finds no file to take.
    offer(&mut h, msg(1), SIZE);
    assert!(accepts(&checked(&mut h, msg(1), false)).is_empty());
}

#[test]
fn a_peer_going_offline_closes_its_files_and_forgets_its_offers() {
    let mut h = connected();
    let (f1, f2) = (incoming(0), incoming(1));
    accepted(&mut h, f1, msg(1), 0);
    offer(&mut h, msg(2), SIZE);
    file_recv(&mut h, f2, msg(3), SIZE); // an orphan
    let offline = Input::Connection {
        pk: A,
        friend: FA,
        online: false,
    };
    let actions = h.input(offline);
    assert_eq!(closes(&actions), [(FA, f1)]);
    let offline = |a: &Action| matches!(a, Action::Emit(PeerEvent::Offline(p)) if *p == A);
    assert!(actions.iter().any(offline));
    assert!(checked(&mut h, msg(2), false).is_empty());
    assert!(chunk(&mut h, f1, 0, 10).is_empty());
    // c-toxcore ended the orphan's transfer itself: nothing to cancel.
    assert!(cancels(&h.tick_after(ORPHAN_WAIT)).is_empty());
    assert!(h.core.active_spools().is_empty());
}

#[test]
fn a_resumed_transfer_completes_from_its_offset_and_is_stored_as_resumed() {
    let mut h = connected();
    let (id, f) = (msg(1), incoming(0));
    accepted(&mut h, f, id, 600);
    let actions = chunk(&mut h, f, 600, 400);
    assert!(matches!(
        actions[..],
        [Action::Write { key, position: 600, ref data, .. }] if key == (FA, f) && data.len() == 400
    ));
    let actions = chunk(&mut h, f, SIZE, 0);
    assert_eq!(stores(&actions), [((FA, f), id, true)]);
    assert_eq!(h.core.active_spools(), [(A, id)]);
    let stored = Input::Stored {
        from: A,
        origin: A,
        id,
        result: Ok(()),
    };
    let actions = h.input(stored);
    assert!(matches!(actions[0], Action::RemoveSpool { from, id: i } if from == A && i == id));
    assert!(matches!(frames_to(&actions, A)[..], [Frame::Ack(i)] if *i == id));
}

#[test]
fn a_transfer_ending_short_of_its_size_is_closed_not_stored() {
    let mut h = connected();
    let f = incoming(0);
    accepted(&mut h, f, msg(1), 0);
    chunk(&mut h, f, 0, 500);
    let actions = chunk(&mut h, f, 500, 0);
    assert_eq!(closes(&actions), [(FA, f)]);
    assert!(stores(&actions).is_empty());
}

#[test]
fn a_chunk_past_the_offered_size_is_refused_as_malformed_and_cancelled() {
    let mut h = connected();
    let (id, f) = (msg(1), incoming(0));
    accepted(&mut h, f, id, 0);
    let actions = chunk(&mut h, f, 900, 200);
    assert_eq!(cancels(&actions), [(FA, f)]);
    assert_eq!(closes(&actions), [(FA, f)]);
    assert!(
        matches!(frames_to(&actions, A)[..], [Frame::Nack(n)] if n.message_id == id && n.code == NackCode::Malformed),
        "{actions:?}"
    );
    assert!(chunk(&mut h, f, 0, 0).is_empty());
}

#[test]
fn the_65th_offer_outstanding_from_one_peer_is_refused_for_now() {
    let mut h = connected();
    h.connect(B, FB);
    for n in 0..MAX_OFFERS_PER_PEER as u8 {
        assert_eq!(checks(&offer(&mut h, msg(n), 100)), [msg(n)]);
    }
    let over = msg(MAX_OFFERS_PER_PEER as u8);
    let actions = offer(&mut h, over, 100);
    assert!(
        matches!(frames_to(&actions, A)[..], [Frame::Nack(n)] if n.message_id == over && n.code == NackCode::Busy && n.class == NackClass::Temporary),
        "{actions:?}"
    );
    // An offer repeated is not counted twice, and other peers have their own bound.
    assert_eq!(checks(&offer(&mut h, msg(0), 100)), [msg(0)]);
    let frame = Frame::Offer(Offer {
        message_id: over,
        size: 100,
    });
    assert_eq!(checks(&h.input(packet(FB, B, &frame))), [over]);
}

#[test]
fn offers_beyond_the_peers_byte_bound_are_refused_for_now() {
    let mut h = connected();
    assert_eq!(checks(&offer(&mut h, msg(1), MAX_ENVELOPE)), [msg(1)]);
    assert!(checked(&mut h, msg(1), false).is_empty());
    // In transfer, its bytes still count.
    file_recv(&mut h, incoming(0), msg(1), MAX_ENVELOPE);
    assert_eq!(checks(&offer(&mut h, msg(2), MAX_ENVELOPE)), [msg(2)]);
    let actions = offer(&mut h, msg(3), 1);
    assert!(
        matches!(frames_to(&actions, A)[..], [Frame::Nack(n)] if n.code == NackCode::Busy),
        "{actions:?}"
    );
    // One envelope larger than we take at all is refused for good.
    let actions = offer(&mut h, msg(4), MAX_ENVELOPE + 1);
    assert!(
        matches!(frames_to(&actions, A)[..], [Frame::Nack(n)] if n.code == NackCode::TooLarge && n.class == NackClass::Permanent)
    );
}
