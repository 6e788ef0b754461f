//! The work loops are woken, not polling: a copy queued while the peer is online, and a copy
//! deferred by the peer's temporary refusal, both go out well inside the safety poll
//! (`toxmail_bridge::delivery::SAFETY_POLL`, 60 s), which only a missed wake-up would wait for.

use std::time::Duration;

use toxmail_bridge::delivery::SAFETY_POLL;
use toxmail_tests::wait_for;

use crate::postfix_flow::alice_and_bob;
use crate::postfix_recovery::send;

/// Well under the safety poll, and generous for a loaded machine: a delivery between
/// connected peers takes about a second.
const WOKEN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_deferred_copies_go_out_without_waiting_for_the_safety_poll() {
    assert!(WOKEN < SAFETY_POLL);
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let (_boot, a, b) = alice_and_bob(root.path());
    let bob = || b.postfix.maildir_messages("bob").len();

    // The first mail waits for the friendship; it only brings the peers online.
    send(&a, "bob@b.test", "first").await;
    let first = wait_for(crate::CONNECT, || bob() == 1);
    assert!(first.await, "{}\n{}", a.bridge_log(), b.bridge_log());

    // Queued while the peer is online: the intake's commit wakes the dispatcher.
    send(&a, "bob@b.test", "second").await;
    let second = wait_for(WOKEN, || bob() == 2);
    assert!(second.await, "{}", a.bridge_log());

    // B cannot store (its database is down): A's copy is deferred with a 1-5 s backoff, and
    // the dispatcher sleeps until that retry falls due, not until the next poll.
    b.pg.stop();
    send(&a, "bob@b.test", "third").await;
    let deferred = wait_for(WOKEN, || a.bridge_log().contains("delivery deferred"));
    assert!(deferred.await, "{}", a.bridge_log());
    b.pg.restart();
    let third = wait_for(WOKEN, || bob() == 3);
    assert!(third.await, "{}\n{}", a.bridge_log(), b.bridge_log());
}
