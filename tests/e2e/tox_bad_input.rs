//! Bad input from a peer is refused with a clear nack or a counted rejection, nothing is stored
//! twice or delivered, and the receiver keeps working: tampered ciphertext, wrong recipient key,
//! forged sender, replayed message id, oversized offer, truncated and garbage frames, a file
//! without an offer, and friend requests that policy refuses.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tox_runtime::transfer::{DeliveryError, FriendPolicy, TransferStats};
use tox_runtime::{Node, Options, swarm};
use toxmail_protocol::{
    Frame, MessageId, NackClass, NackCode, Offer, PublicKey, SecretKey, friend_request_message,
};
use toxmail_tests::peers::{Peer, sealed_mail};
use toxmail_tests::wait_for;

use crate::CONNECT;

fn refused(result: Result<(), DeliveryError>) -> (NackClass, NackCode) {
    match result {
        Err(DeliveryError::Refused(n)) => (n.class, n.code),
        other => panic!("expected a nack, got {other:?}"),
    }
}

fn other_key() -> SecretKey {
    SecretKey::from([7u8; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_and_frames_are_refused_and_nothing_is_stored_twice() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let r = Peer::simple(&dir.path().join("r")).await;
    let b = Peer::simple(&dir.path().join("b")).await;
    swarm::link(&[(r.courier.node(), &r.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();
    let to = b.info.address;

    // A good mail first: it also establishes the friendship.
    let (good, envelope) = sealed_mail(&r.secret, &b.public_key(), 10 * 1024);
    let first = tokio::time::timeout(
        CONNECT,
        r.courier.deliver(to, good.message_id, envelope.clone()),
    );
    first.await.expect("in time").expect("acked");

    // Replayed message id: same bytes, and other bytes under the same id. Acked, stored once.
    r.courier
        .deliver(to, good.message_id, envelope)
        .await
        .expect("replay acked");
    let (_, other) = sealed_mail(&r.secret, &b.public_key(), 2048);
    let mut other = other.to_vec();
    other[8..40].copy_from_slice(&good.message_id.0); // claims the id in its header too
    let replay = r.courier.deliver(to, good.message_id, other.into()).await;
    replay.expect("an id already stored is acknowledged again");
    assert_eq!(b.inbox.count(), 1, "stored once");
    assert!(TransferStats::get(&b.courier.stats().duplicates_acked) >= 2);

    // An envelope offered under another id than its header's: refused for now (a transfer mix-up
    // looks the same), never stored, and never a bounce: the sender keeps offering it.
    let (_, envelope) = sealed_mail(&r.secret, &b.public_key(), 4096);
    let refused_before = TransferStats::get(&b.courier.stats().offers_refused);
    let under_other_id = r.courier.deliver(to, MessageId::random(), envelope);
    let outcome = tokio::time::timeout(Duration::from_secs(4), under_other_id).await;
    assert!(
        outcome.is_err(),
        "not a verdict for the caller: {outcome:?}"
    );
    let refusals = TransferStats::get(&b.courier.stats().offers_refused) - refused_before;
    assert!(
        refusals >= 2,
        "refused, offered again, refused again ({refusals})"
    );
    assert_eq!(b.inbox.count(), 1, "nothing stored");

    // Tampered ciphertext.
    let (letter, envelope) = sealed_mail(&r.secret, &b.public_key(), 10 * 1024);
    let mut tampered = envelope.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let res = r
        .courier
        .deliver(to, letter.message_id, tampered.into())
        .await;
    assert_eq!(refused(res), (NackClass::Permanent, NackCode::Forged));

    // Sealed to another recipient's key.
    let stranger = toxmail_protocol::public_key_of(&other_key());
    let (letter, envelope) = sealed_mail(&r.secret, &stranger, 10 * 1024);
    let res = r.courier.deliver(to, letter.message_id, envelope).await;
    assert_eq!(
        refused(res),
        (NackClass::Permanent, NackCode::WrongRecipient)
    );

    // Sealed by someone else's key but sent by r: a forgery of the sender.
    let (letter, envelope) = sealed_mail(&other_key(), &b.public_key(), 10 * 1024);
    let res = r.courier.deliver(to, letter.message_id, envelope).await;
    assert_eq!(refused(res), (NackClass::Permanent, NackCode::Forged));
    assert_eq!(b.inbox.count(), 1, "no bad envelope was stored");

    // Raw frames from r's node straight to b.
    let friend = r.friend_number(b.public_key()).await;
    let raw = r.courier.node().clone();
    let refused_before = TransferStats::get(&b.courier.stats().offers_refused);
    let huge = Frame::Offer(Offer {
        message_id: MessageId::random(),
        size: toxmail_protocol::MAX_ENVELOPE_SIZE as u64 + 1,
    });
    raw.send_packet(friend, huge.encode()).await.unwrap();
    let b_stats = b.courier.stats();
    let nacked = wait_for(Duration::from_secs(10), || {
        TransferStats::get(&b_stats.offers_refused) > refused_before
    });
    assert!(nacked.await, "oversized offer refused");

    let offer = Frame::Offer(Offer {
        message_id: MessageId::random(),
        size: 4096,
    })
    .encode();
    let mut bad_frames: Vec<Vec<u8>> = (1..offer.len()).map(|n| offer[..n].to_vec()).collect();
    let pid = toxmail_protocol::PACKET_ID;
    bad_frames.push(vec![pid, 0xff, 0xff, 0xff]); // unknown version
    bad_frames.push(vec![pid, toxmail_protocol::PROTOCOL_VERSION, 0xee, 1, 2, 3]); // unknown kind
    bad_frames.push([&offer[..], &[0u8; 7][..]].concat()); // trailing bytes
    let expected = bad_frames.len() as u64;
    for frame in bad_frames {
        raw.send_packet(friend, frame).await.unwrap();
    }
    let all_rejected = wait_for(Duration::from_secs(10), || {
        TransferStats::get(&b_stats.frames_rejected) == expected
    });
    assert!(
        all_rejected.await,
        "every malformed frame counted as rejected"
    );

    // A file nobody offered is cancelled.
    let blob: Arc<[u8]> = vec![0u8; 5000].into();
    raw.file_send(friend, [9; 32], blob, b"x".to_vec())
        .await
        .unwrap();
    let cancelled = wait_for(Duration::from_secs(10), || {
        TransferStats::get(&b_stats.files_cancelled) >= 1
    });
    assert!(cancelled.await, "unoffered file cancelled");

    // After all that, b still takes good mail.
    let (letter, envelope) = sealed_mail(&r.secret, &b.public_key(), 10 * 1024);
    r.courier
        .deliver(to, letter.message_id, envelope)
        .await
        .expect("still works");
    assert_eq!(b.inbox.count(), 2);
    r.task.shutdown().await;
    b.task.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_requests_without_hello_or_from_strangers_are_ignored() {
    toxmail_tests::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let known = PublicKey([1; 32]);
    let b = Peer::start_with(
        &dir.path().join("b"),
        Options::loopback(),
        Duration::ZERO,
        |c| {
            c.friend_policy = FriendPolicy::KnownContacts(HashSet::from([known]));
        },
    )
    .await;
    let plain = Node::start(Options::loopback()).await.unwrap(); // another Tox client
    let stranger = Node::start(Options::loopback()).await.unwrap(); // toxmail, not a contact
    swarm::link(&[
        (b.courier.node(), &b.info),
        (&plain.handle, &plain.info),
        (&stranger.handle, &stranger.info),
    ])
    .await
    .unwrap();
    plain
        .handle
        .friend_add(b.info.address, b"hi, it's me".to_vec())
        .await
        .unwrap();
    stranger
        .handle
        .friend_add(b.info.address, friend_request_message("let me in"))
        .await
        .unwrap();
    let stats = b.courier.stats();
    let both = wait_for(CONNECT, || {
        TransferStats::get(&stats.friend_requests_ignored) >= 2
    });
    assert!(both.await, "both requests reached b and were ignored");
    assert!(b.courier.node().friends().await.unwrap().is_empty());
    plain.shutdown().await;
    stranger.shutdown().await;
    b.task.shutdown().await;
}
