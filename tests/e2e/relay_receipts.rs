//! Relay receipts: A deposits bob's mail at a relay while site B is offline and goes offline
//! itself; B comes back, takes the mail from the relay and acks, and goes away again; when A
//! comes back the relay sends it `Released`, and A closes its copy as delivered with no failed
//! notice to alice, while the recipient holds exactly one copy.

use std::time::Duration;

use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::relay::RelayProcess;
use toxmail_tests::{smtp, wait_for};

use crate::postfix_flow::spec;
use crate::postfix_recovery::{poll, query_strings};
use crate::relay_sites::{contains, depositing_site_a, own_ports};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depositor_offline_at_delivery_closes_its_copy_on_the_relays_receipt() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let relay = RelayProcess::start(&root.path().join("relay"), &boot.node, "");
    let relay_id = relay.address();

    // B: bob registers with the relay, then B goes offline.
    let mut b_spec = spec("site-b", "b.test", &["bob"]);
    b_spec.extra_sections = format!("\n[relays]\nregister_with = [\"{relay_id}\"]\n");
    b_spec.tox_ports = own_ports();
    let mut b = toxmail_tests::site::Site::prepare(root.path(), b_spec, &boot.node);
    let bob = b.identities["bob@b.test"];
    b.start_bridge();
    // Bob's own registration (each identity registers on its own), not the default identity's.
    let registered = wait_for(Duration::from_secs(90), || b.relay_registrations(&bob) >= 1);
    assert!(registered.await, "B:\n{}\n{}", b.bridge_log(), relay.log());
    b.stop_bridge();

    // A deposits bob's mail at the relay after 2 s, then goes offline before B is back.
    let (_dns, a_spec) = depositing_site_a(bob, &[relay_id]);
    let mut a = toxmail_tests::site::Site::prepare(root.path(), a_spec, &boot.node);
    a.start_bridge();
    let to = ["bob@b.test"];
    let m = smtp::message("alice@a.test", &to, "receipt", "Bob, via the relay.\r\n");
    let out = smtp::send(a.postfix.smtp_addr(), "alice@a.test", &to, &m)
        .await
        .unwrap();
    assert!(out.accepted(), "{out:?}");
    let custody = poll(Duration::from_secs(120), || async {
        query_strings(
            &a,
            "SELECT relayed_to FROM outbound WHERE relayed_at IS NOT NULL",
        )
        .await
        .len()
            == 1
    });
    assert!(custody.await, "A:\n{}\n{}", a.bridge_log(), relay.log());
    a.stop_bridge();

    // B comes back, gets the mail from the relay and acks; the relay now owes A a receipt.
    b.start_bridge();
    let arrived = wait_for(Duration::from_secs(120), || {
        !b.postfix.maildir_messages("bob").is_empty()
    });
    assert!(arrived.await, "B:\n{}\n{}", b.bridge_log(), relay.log());
    let released = poll(Duration::from_secs(60), || async {
        relay.held().await == 0
    });
    assert!(
        released.await,
        "relay deletes it after B's ack\n{}",
        relay.log()
    );
    b.stop_bridge();

    // A comes back while B is away: only the relay's receipt can close A's copy.
    a.start_bridge();
    let closed = poll(Duration::from_secs(120), || async {
        query_strings(&a, "SELECT state FROM outbound").await == ["delivered"]
    });
    assert!(closed.await, "A:\n{}\n{}", a.bridge_log(), relay.log());
    assert!(
        a.bridge_log().contains("delivered via relay"),
        "closed by the receipt\n{}",
        a.bridge_log()
    );
    assert!(
        !a.postfix
            .maildir_messages("alice")
            .iter()
            .any(|m| contains(m, "Action: failed")),
        "no failed notice to alice"
    );
    assert_eq!(b.postfix.maildir_messages("bob").len(), 1, "one copy");
}
