//! Unit tests of envelopes offered (or deposited) again: duplicates the inbox holds, offers
//! repeated while their file is in transfer or being stored, each file kept apart.

use toxmail_protocol::{Deposit, Frame, MessageId, RelayFrame, RelayRefusal};

use super::receiving::ORPHAN_WAIT;
use super::testkit::*;
use super::tests_receiving::{
    A, FA, SIZE, accepted, checked, checks, chunk, connected, file_recv, offer, stores,
};
use super::{AcceptOutcome, Action, Input};
use crate::transfer::DepositRefusal;

fn stored(h: &mut Harness, id: MessageId) -> Vec<Action> {
    h.input(Input::Stored {
        from: A,
        origin: A,
        id,
        result: Ok(()),
    })
}

fn deposit(id: MessageId) -> Deposit {
    Deposit {
        message_id: id,
        recipient: key(2),
        size: SIZE,
        expires: 5000,
    }
}

fn deposit_frame(h: &mut Harness, id: MessageId) -> Vec<Action> {
    let frame = Frame::Relay(RelayFrame::Deposit(deposit(id)));
    h.input(packet(FA, A, &frame))
}

#[test]
fn an_offer_the_inbox_already_holds_is_acked_again_and_its_parked_file_cancelled() {
    let mut h = connected();
    let (id, f) = (msg(1), incoming(0));
    offer(&mut h, id, SIZE);
    file_recv(&mut h, f, id, SIZE);
    let actions = checked(&mut h, id, true);
    assert_eq!(cancels(&actions), [(FA, f)]);
    assert!(accepts(&actions).is_empty());
    assert!(matches!(frames_to(&actions, A)[..], [Frame::Ack(i)] if *i == id));
}

#[test]
fn an_offer_repeated_while_its_envelope_is_stored_gets_no_second_store() {
    let mut h = connected();
    let (id, f, f2) = (msg(1), incoming(0), incoming(1));
    accepted(&mut h, f, id, 0);
    chunk(&mut h, f, 0, SIZE as usize);
    assert_eq!(stores(&chunk(&mut h, f, SIZE, 0)).len(), 1);
    // The sender timed out and offers again, file and all: the store under way answers it.
    assert!(offer(&mut h, id, SIZE).is_empty());
    assert!(file_recv(&mut h, f2, id, SIZE).is_empty());
    let stored = Input::Stored {
        from: A,
        origin: A,
        id,
        result: Ok(()),
    };
    let actions = h.input(stored);
    assert_eq!(frames_to(&actions, A).len(), 1);
    assert!(stores(&actions).is_empty() && accepts(&actions).is_empty());
    // The second file is not taken; an offer now is a duplicate for the inbox to confirm.
    assert_eq!(cancels(&h.tick_after(ORPHAN_WAIT)), [(FA, f2)]);
    assert_eq!(checks(&offer(&mut h, id, SIZE)), [id]);
}

#[test]
fn a_deposit_is_taken_into_custody_once_stored() {
    let mut h = connected();
    let (id, f) = (msg(1), incoming(0));
    let deposit = deposit(id);
    let actions = deposit_frame(&mut h, id);
    assert!(
        matches!(&actions[..], [Action::CheckDeposit { from, deposit: d }] if *from == A && *d == deposit)
    );
    assert!(file_recv(&mut h, f, id, SIZE).is_empty());
    let ok = Input::DepositChecked {
        from: A,
        id,
        result: Ok(None),
    };
    assert_eq!(accepts(&h.input(ok)), [((FA, f), id)]);
    let outcome = AcceptOutcome::Accepted { offset: 0 };
    h.input(Input::Accepted {
        key: (FA, f),
        outcome,
    });
    chunk(&mut h, f, 0, SIZE as usize);
    let actions = chunk(&mut h, f, SIZE, 0);
    assert!(matches!(&actions[..], [Action::Store { deposit: Some(d), .. }] if *d == deposit));
    let actions = h.input(Input::Deposited {
        from: A,
        id,
        result: Ok(4000),
    });
    assert!(matches!(actions[0], Action::RemoveSpool { .. }));
    assert!(matches!(
        frames_to(&actions, A)[..],
        [Frame::Relay(RelayFrame::Custody(c))] if c.message_id == id && c.expires == 4000
    ));
}

#[test]
fn an_offer_made_again_cancels_the_file_parked_for_the_earlier_one() {
    let mut h = connected();
    let (id, f) = (msg(1), incoming(0));
    offer(&mut h, id, SIZE);
    file_recv(&mut h, f, id, SIZE);
    // Had it only been forgotten, it would stay paused in c-toxcore, never cancelled.
    let actions = offer(&mut h, id, SIZE);
    assert_eq!(cancels(&actions), [(FA, f)]);
    assert_eq!(checks(&actions), [id]);
    assert!(accepts(&checked(&mut h, id, false)).is_empty());
}

#[test]
fn a_second_file_for_an_envelope_in_transfer_replaces_the_first() {
    let mut h = connected();
    let (id, f1, f2) = (msg(1), incoming(0), incoming(1));
    accepted(&mut h, f1, id, 0);
    chunk(&mut h, f1, 0, 400);
    // The sender offers it again and sends it as another file: two transfers must never write
    // into the one spool of (A, id) at once.
    assert_eq!(checks(&offer(&mut h, id, SIZE)), [id]);
    checked(&mut h, id, false);
    let actions = file_recv(&mut h, f2, id, SIZE);
    assert!(
        matches!(
            actions[..],
            [Action::Cancel(c), Action::Close(d), Action::Accept { key, .. }]
                if c == (FA, f1) && d == (FA, f1) && key == (FA, f2)
        ),
        "{actions:?}"
    );
    assert!(chunk(&mut h, f1, 400, 100).is_empty());
    assert_eq!(h.core.active_spools(), [(A, id)]);
}

#[test]
fn a_file_for_an_envelope_being_stored_is_cancelled_not_accepted() {
    let mut h = connected();
    let (id, f1, f2) = (msg(1), incoming(0), incoming(1));
    accepted(&mut h, f1, id, 0);
    assert_eq!(checks(&offer(&mut h, id, SIZE)), [id]); // made again while f1 is under way
    chunk(&mut h, f1, 0, SIZE as usize);
    assert_eq!(stores(&chunk(&mut h, f1, SIZE, 0)).len(), 1);
    checked(&mut h, id, false);
    let actions = file_recv(&mut h, f2, id, SIZE);
    assert_eq!(cancels(&actions), [(FA, f2)]);
    assert!(accepts(&actions).is_empty(), "{actions:?}");
    assert!(matches!(
        frames_to(&stored(&mut h, id), A)[..],
        [Frame::Ack(_)]
    ));
}

#[test]
fn a_deposit_checked_again_while_it_is_stored_leaves_that_store_alone() {
    let mut h = connected();
    let (id, f) = (msg(1), incoming(0));
    deposit_frame(&mut h, id);
    let ok = |result| Input::DepositChecked {
        from: A,
        id,
        result,
    };
    h.input(ok(Ok(None)));
    assert_eq!(accepts(&file_recv(&mut h, f, id, SIZE)), [((FA, f), id)]);
    let outcome = AcceptOutcome::Accepted { offset: 0 };
    h.input(Input::Accepted {
        key: (FA, f),
        outcome,
    });
    // Deposited again while its file comes in; the check of that comes after the store began.
    assert!(matches!(
        deposit_frame(&mut h, id)[..],
        [Action::CheckDeposit { .. }]
    ));
    chunk(&mut h, f, 0, SIZE as usize);
    assert_eq!(stores(&chunk(&mut h, f, SIZE, 0)).len(), 1);
    let full = DepositRefusal::new(RelayRefusal::QuotaCount, "full");
    let actions = h.input(ok(Err(full)));
    assert!(actions.is_empty(), "{actions:?}");
    assert!(h.input(ok(Ok(Some(4000)))).is_empty());
    // The store's own verdict: its spool removed, custody confirmed.
    let actions = h.input(Input::Deposited {
        from: A,
        id,
        result: Ok(4000),
    });
    assert!(matches!(actions[0], Action::RemoveSpool { .. }));
    assert!(matches!(
        frames_to(&actions, A)[..],
        [Frame::Relay(RelayFrame::Custody(_))]
    ));
    assert_eq!(cancels(&h.tick_after(ORPHAN_WAIT)), []);
}
