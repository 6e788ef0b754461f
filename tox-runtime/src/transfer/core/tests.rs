//! Unit tests of our deliveries: offers, file numbers, verdicts, timeouts, abandonment, relays.
//! (Envelopes coming in are tested in `tests_receiving.rs`.)

use std::sync::Arc;
use std::time::Duration;

use toxmail_protocol::{
    Custody, Frame, MessageId, Nack, NackClass, NackCode, PublicKey, RelayFrame,
};

use super::sending::{ABORT_GRACE, OutState, stall_allowance, verdict_allowance};
use super::testkit::*;
use super::{Action, Input, OfferOutcome, OutKey};
use crate::event::{FileNumber, FriendNumber};
use crate::transfer::PeerEvent;

const A: PublicKey = PublicKey([1; 32]);
const FA: FriendNumber = 0;
const B: PublicKey = PublicKey([2; 32]);
const FB: FriendNumber = 1;
const SECOND: Duration = Duration::from_secs(1);
const MIB: usize = 1 << 20;

fn deliver(h: &mut Harness, to: PublicKey, id: MessageId, len: usize) -> Vec<Action> {
    let envelope = envelope(id, SELF_KEY, to, len);
    let input = Input::Deliver {
        to,
        id,
        envelope,
        deposit_until: None,
    };
    h.input(input)
}

fn started(h: &mut Harness, key: OutKey, file: FileNumber) -> Vec<Action> {
    let outcome = OfferOutcome::Started(file);
    h.input(Input::Offered { key, outcome })
}

/// Delivers `id` to `to` (online, said hello) and reports its file started as `file`.
fn sending(h: &mut Harness, to: PublicKey, id: MessageId, file: FileNumber) {
    assert_eq!(offers(&deliver(h, to, id, 4096)), [(to, id)]);
    assert!(started(h, (to, id), file).is_empty());
}

fn state(h: &Harness, key: OutKey) -> Option<OutState> {
    h.core.sending.out.get(&key).map(|o| o.state)
}

fn ack(from: PublicKey, friend: FriendNumber, id: MessageId) -> Input {
    packet(friend, from, &Frame::Ack(id))
}

fn nack(from: PublicKey, friend: FriendNumber, id: MessageId, code: NackCode) -> Input {
    let nack = Nack {
        message_id: id,
        class: code.default_class(),
        code,
        detail: String::new(),
    };
    packet(friend, from, &Frame::Nack(nack))
}

#[test]
fn a_delivery_whose_file_number_was_reused_never_cancels_the_new_file() {
    let mut h = Harness::new();
    h.connect(A, FA);
    let (first, second) = (msg(1), msg(2));
    sending(&mut h, A, first, 3);
    // The end of `first`'s file was missed: c-toxcore hands number 3 out again.
    sending(&mut h, A, second, 3);
    let retry = state(&h, (A, first));
    assert!(
        matches!(retry, Some(OutState::AwaitingVerdict { aborted: true, .. })),
        "{retry:?}"
    );
    // A refusal of the first does not cancel file 3, which now carries the second.
    let actions = h.input(nack(A, FA, first, NackCode::Forged));
    assert_eq!(completes(&actions), [((A, first), false)]);
    assert!(cancels(&actions).is_empty(), "{actions:?}");
    // Nor does giving up on such a delivery, or any timer before the new file stalls.
    let (third, fourth) = (msg(3), msg(4));
    sending(&mut h, A, third, 5);
    sending(&mut h, A, fourth, 5);
    assert!(cancels(&h.input(Input::Abandoned((A, third)))).is_empty());
    let actions = h.tick_after(ACK_TIMEOUT - SECOND);
    assert!(cancels(&actions).is_empty(), "{actions:?}");
    assert_eq!(state(&h, (A, second)).and_then(OutState::file), Some(3));
    assert_eq!(state(&h, (A, fourth)).and_then(OutState::file), Some(5));
}

#[test]
fn a_delivery_whose_file_number_was_reused_is_offered_again_after_the_grace() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 3);
    sending(&mut h, A, msg(2), 3);
    assert!(offers(&h.tick_after(ABORT_GRACE / 2)).is_empty());
    let actions = h.tick_after(ABORT_GRACE);
    assert_eq!(offers(&actions), [(A, msg(1))]);
    assert!(cancels(&actions).is_empty(), "{actions:?}");
}

#[test]
fn an_ack_before_the_file_is_done_completes_without_cancelling_the_file() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 4);
    let actions = h.input(ack(A, FA, msg(1)));
    assert_eq!(completes(&actions), [((A, msg(1)), true)]);
    assert!(cancels(&actions).is_empty(), "{actions:?}");
    // c-toxcore reports it done: nothing left to cancel, ever.
    h.input(Input::FileDone {
        key: (FA, 4),
        aborted: false,
    });
    assert!(cancels(&h.tick_after(ACK_TIMEOUT * 2)).is_empty());
}

#[test]
fn an_acked_file_never_reported_done_is_cancelled_after_the_ack_timeout() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 4);
    h.input(ack(A, FA, msg(1)));
    assert!(cancels(&h.tick_after(ACK_TIMEOUT - SECOND)).is_empty());
    assert_eq!(cancels(&h.tick_after(SECOND)), [(FA, 4)]);
    // Once.
    assert!(cancels(&h.tick_after(ACK_TIMEOUT)).is_empty());
}

#[test]
fn an_acked_file_whose_number_is_reused_is_not_cancelled_later() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 4);
    h.input(ack(A, FA, msg(1)));
    // Its end was missed, and number 4 now carries another delivery.
    sending(&mut h, A, msg(2), 4);
    let actions = h.tick_after(ACK_TIMEOUT - SECOND);
    assert!(cancels(&actions).is_empty(), "{actions:?}");
}

#[test]
fn a_refusal_after_a_fully_sent_file_cancels_nothing() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 4);
    let done = Input::FileDone {
        key: (FA, 4),
        aborted: false,
    };
    assert!(h.input(done).is_empty());
    let actions = h.input(nack(A, FA, msg(1), NackCode::Forged));
    assert_eq!(completes(&actions), [((A, msg(1)), false)]);
    assert!(cancels(&actions).is_empty(), "{actions:?}");
}

#[test]
fn a_sent_file_without_verdict_is_offered_again_after_the_ack_timeout_plus_a_second_per_mib() {
    let mut h = Harness::new();
    h.connect(A, FA);
    deliver(&mut h, A, msg(1), 2 * MIB + 10);
    started(&mut h, (A, msg(1)), 0);
    h.input(Input::FileDone {
        key: (FA, 0),
        aborted: false,
    });
    assert!(offers(&h.tick_after(ACK_TIMEOUT)).is_empty());
    assert!(offers(&h.tick_after(SECOND)).is_empty());
    assert_eq!(offers(&h.tick_after(SECOND)), [(A, msg(1))]);
}

#[test]
fn an_aborted_file_is_offered_again_after_the_abort_grace() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 0);
    h.input(Input::FileDone {
        key: (FA, 0),
        aborted: true,
    });
    assert!(offers(&h.tick_after(ABORT_GRACE / 2)).is_empty());
    assert_eq!(offers(&h.tick_after(ABORT_GRACE / 2)), [(A, msg(1))]);
}

#[test]
fn an_offer_never_answered_by_the_shell_is_made_again_after_the_ack_timeout() {
    let mut h = Harness::new();
    h.connect(A, FA);
    deliver(&mut h, A, msg(1), 4096);
    assert!(offers(&h.tick_after(ACK_TIMEOUT - SECOND)).is_empty());
    assert_eq!(offers(&h.tick_after(SECOND)), [(A, msg(1))]);
}

#[test]
fn a_stalled_file_is_cancelled_and_offered_again() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 2);
    assert!(cancels(&h.tick_after(ACK_TIMEOUT - SECOND)).is_empty());
    assert_eq!(cancels(&h.tick_after(SECOND)), [(FA, 2)]);
    assert_eq!(offers(&h.tick_after(ABORT_GRACE)), [(A, msg(1))]);
}

#[test]
fn a_peer_going_offline_mid_transfer_gets_the_delivery_again_after_it_is_back_and_said_hello() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 0);
    deliver(&mut h, A, msg(2), 4096); // still offering
    let offline = Input::Connection {
        pk: A,
        friend: FA,
        online: false,
    };
    let actions = h.input(offline);
    assert!(matches!(actions[..], [Action::Emit(PeerEvent::Offline(pk))] if pk == A));
    assert_eq!(state(&h, (A, msg(1))), Some(OutState::Waiting));
    assert_eq!(state(&h, (A, msg(2))), Some(OutState::Waiting));
    // Nothing is offered, nor cancelled, while it is away, however long.
    let actions = h.tick_after(ACK_TIMEOUT * 10);
    assert!(actions.is_empty(), "{actions:?}");
    // Back online: our hello, but no offer before its hello.
    let online = Input::Connection {
        pk: A,
        friend: FA,
        online: true,
    };
    let actions = h.input(online);
    assert!(matches!(frames_to(&actions, A)[..], [Frame::Hello(_)]));
    assert!(offers(&actions).is_empty());
    let actions = h.input(packet(FA, A, &hello(64 << 20)));
    assert_eq!(offers(&actions), [(A, msg(1)), (A, msg(2))]);
}

#[test]
fn a_delivery_too_large_for_the_peer_is_refused_at_its_hello() {
    let mut h = Harness::new();
    h.input(Input::Friend { pk: A, friend: FA });
    deliver(&mut h, A, msg(1), 8192);
    h.input(Input::Connection {
        pk: A,
        friend: FA,
        online: true,
    });
    let actions = h.input(packet(FA, A, &hello(4096)));
    assert_eq!(completes(&actions), [((A, msg(1)), false)]);
    assert!(h.core.sending.out.is_empty());
}

#[test]
fn a_deposit_with_a_relay_and_a_delivery_to_the_recipient_run_independently() {
    let mut h = Harness::new();
    let (relay, fr, id) = (B, FB, msg(7));
    h.connect(A, FA);
    h.connect(relay, fr);
    let envelope = envelope(id, SELF_KEY, A, 4096);
    let deposit = Input::Deliver {
        to: relay,
        id,
        envelope: envelope.clone(),
        deposit_until: Some(1_000_000),
    };
    let actions = h.input(deposit);
    let frame = actions.iter().find_map(|a| match a {
        Action::Offer { frame, .. } => Some(frame),
        _ => None,
    });
    assert!(
        matches!(frame, Some(Frame::Relay(RelayFrame::Deposit(d))) if d.recipient == A && d.message_id == id),
        "{actions:?}"
    );
    let direct = Input::Deliver {
        to: A,
        id,
        envelope: Arc::clone(&envelope),
        deposit_until: None,
    };
    assert_eq!(offers(&h.input(direct)), [(A, id)]);
    // The same file number on both friends, one done before the other.
    started(&mut h, (relay, id), 0);
    started(&mut h, (A, id), 0);
    h.input(Input::FileDone {
        key: (fr, 0),
        aborted: false,
    });
    assert!(matches!(
        state(&h, (A, id)),
        Some(OutState::Sending { file: 0, .. })
    ));
    let custody = Frame::Relay(RelayFrame::Custody(Custody {
        message_id: id,
        expires: 1_000_000,
    }));
    assert_eq!(
        completes(&h.input(packet(fr, relay, &custody))),
        [((relay, id), true)]
    );
    let actions = h.input(ack(A, FA, id));
    assert_eq!(completes(&actions), [((A, id), true)]);
    assert!(cancels(&actions).is_empty());
    assert!(h.core.sending.out.is_empty());
}

#[test]
fn an_ack_from_a_peer_we_deliver_nothing_to_is_a_receipt() {
    let mut h = Harness::new();
    h.connect(A, FA);
    h.connect(B, FB);
    sending(&mut h, B, msg(5), 0); // to the relay, say
    let actions = h.input(ack(A, FA, msg(5)));
    assert!(
        matches!(&actions[..], [Action::Emit(PeerEvent::Receipt { from, id })] if *from == A && *id == msg(5)),
        "{actions:?}"
    );
    assert!(state(&h, (B, msg(5))).is_some());
}

#[test]
fn giving_up_on_a_delivery_while_it_sends_cancels_its_file() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 6);
    let actions = h.input(Input::Abandoned((A, msg(1))));
    assert_eq!(cancels(&actions), [(FA, 6)]);
    assert!(completes(&actions).is_empty());
    // Its verdict, should one still come, is no delivery's any more.
    let actions = h.input(ack(A, FA, msg(1)));
    assert!(matches!(
        actions[..],
        [Action::Emit(PeerEvent::Receipt { .. })]
    ));
}

#[test]
fn a_file_started_for_a_delivery_given_up_while_it_was_offered_is_cancelled() {
    let mut h = Harness::new();
    h.connect(A, FA);
    deliver(&mut h, A, msg(1), 4096);
    assert!(h.input(Input::Abandoned((A, msg(1)))).is_empty());
    assert_eq!(cancels(&started(&mut h, (A, msg(1)), 7)), [(FA, 7)]);
}

#[test]
fn a_mixed_up_transfer_is_offered_again_after_the_grace_not_bounced() {
    let mut h = Harness::new();
    h.connect(A, FA);
    sending(&mut h, A, msg(1), 0);
    let mixed_up = Nack {
        message_id: msg(1),
        class: NackClass::Temporary,
        code: NackCode::Malformed,
        detail: String::new(),
    };
    let actions = h.input(packet(FA, A, &Frame::Nack(mixed_up)));
    assert!(completes(&actions).is_empty(), "{actions:?}");
    assert_eq!(offers(&h.tick_after(ABORT_GRACE)), [(A, msg(1))]);
}

#[test]
fn the_allowances_grow_with_the_envelope() {
    const KIB: usize = 1024;
    assert_eq!(stall_allowance(10 * KIB), Duration::ZERO);
    assert_eq!(verdict_allowance(10 * KIB), Duration::ZERO);
    assert_eq!(stall_allowance(64 * KIB), SECOND);
    assert_eq!(verdict_allowance(64 * KIB), Duration::ZERO);
    assert_eq!(verdict_allowance(64 * MIB), 64 * SECOND);
    assert_eq!(stall_allowance(64 * MIB), 1024 * SECOND);
}

impl OutState {
    /// The file number, while sending.
    fn file(self) -> Option<FileNumber> {
        match self {
            OutState::Sending { file, .. } => Some(file),
            _ => None,
        }
    }
}
