//! A peer that ended the friendship looks exactly like one that is offline. Here site B's operator
//! removes alice as a contact (B unfriends her, and under the `contacts` policy ignores her
//! requests) and adds her back later: alice's bridge, with mail waiting for bob, asks again after
//! `refriend_after_secs`, B's bridge hears the request again once alice is a contact, and the
//! mail arrives once. Without either half the mail would wait out its lifetime and bounce.

use std::time::Duration;

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;
use toxmail_tests::wait_for;

use crate::CONNECT;
use crate::postfix_flow::spec;
use crate::postfix_recovery::{poll, query_strings, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waiting_for_a_peer_that_dropped_us_arrives_after_it_takes_us_back() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b_spec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_tox = "friend_policy = \"contacts\"".into();
    let mut b = Site::prepare(root.path(), b_spec, &boot.node);
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.extra_tox = "refriend_after_secs = 10".into();
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    let alice_id = a.identities["alice@a.test"].to_string();
    let bob_id = b.identities["bob@b.test"].to_string();
    b.admin(&["contact", "add", "alice@a.test", &alice_id])
        .unwrap();
    a.admin(&["contact", "add", "bob@b.test", &bob_id]).unwrap();
    b.start_bridge();
    a.start_bridge();

    send(&a, "bob@b.test", "first").await;
    let first = wait_for(CONNECT, || b.postfix.maildir_messages("bob").len() == 1);
    assert!(
        first.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );

    // B's operator takes alice off the contacts: B ends the friendship; A only sees bob offline.
    b.admin(&["contact", "remove", "alice@a.test"]).unwrap();
    let ended = wait_for(Duration::from_secs(30), || {
        b.bridge_log().contains("friendship ended by the operator")
    });
    assert!(ended.await, "B:\n{}", b.bridge_log());
    send(&a, "bob@b.test", "second").await;

    // A asks again; B, not counting alice as a contact now, ignores the request.
    let ignored = wait_for(CONNECT, || {
        a.bridge_log().contains("friend request sent again")
            && b.bridge_log().contains("friend request ignored")
    });
    assert!(
        ignored.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );

    // The operator adds alice back: her next request must be heard, and the mail arrive once.
    b.admin(&["contact", "add", "alice@a.test", &alice_id])
        .unwrap();
    let second = wait_for(CONNECT * 2, || b.postfix.maildir_messages("bob").len() == 2);
    assert!(
        second.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    assert!(
        b.bridge_log()
            .contains("its next friend request will be heard"),
        "{}",
        b.bridge_log()
    );
    // A recorded both copies delivered, and each arrived once.
    let delivered = poll(Duration::from_secs(30), || async {
        query_strings(&a, "SELECT state FROM outbound").await == ["delivered", "delivered"]
    });
    assert!(delivered.await, "A:\n{}", a.bridge_log());
    assert_eq!(b.postfix.maildir_messages("bob").len(), 2);
}
